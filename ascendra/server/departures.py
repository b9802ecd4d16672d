"""Clients that leave before their answer is done, or that the door drops at a deadline: one line
each at INFO and a count by stage in /metrics, never a traceback. A client that hangs up is an
everyday event on a public server, not an error of ours.

Stages: `headers` (its request head was incomplete), `body` (the body was still arriving),
`waiting` (its request was in flight, the answer to come as one body) and `streaming` (its stream
was open).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import Counter

STAGES = ("headers", "body", "waiting", "streaming")

log = logging.getLogger("ascendra.server")


@dataclass
class Departures:
    left_count: Counter  # labelled by stage
    timed_out_count: Counter  # labelled by stage

    def left(self, stage: str, client: str, detail: str) -> None:
        """The client closed its connection."""
        log.info("client %s left (stage %s): %s", client, stage, detail)
        self.left_count.labels(stage).inc()

    def timed_out(self, stage: str, client: str, detail: str) -> None:
        """The door dropped a client too slow to send its request."""
        log.info("client %s dropped (stage %s, too slow): %s", client, stage, detail)
        self.timed_out_count.labels(stage).inc()
