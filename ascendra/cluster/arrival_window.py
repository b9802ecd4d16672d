"""The prompts recently dispatched to an out-of-order instance, as a pace of work per key.

A projection plays forward the queue an instance holds now. An instance that serves the shortest
remaining prompt first also serves, ahead of a waiting request, every shorter prompt that arrives
before its turn, which no projection of today's queue can see. Over the run this is what starves
long prompts on an LP instance (measured on S4, product SLOs: 39 of the 40 first tokens missed
under a 1 LP : 1 HP split were never flagged for offload; their projections had been in time).
Classic SRPT queueing charges it as a share of the server's time: if prompts with smaller keys
arrive taking a share `s` of the instance's time, a wait of `w` seconds stretches to about
`w / (1 - s)`. The router measures `s` per key from the recent arrivals, at the pace they came.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ascendra.core.projection import PrefillRate

WINDOW = 64  # arrivals remembered per instance: a few seconds of load at the capacity edge
MAX_SHARE = 0.8  # a queue can at most look 5x longer: bursts make the pace briefly look extreme


@dataclass(slots=True)
class ArrivalWindow:
    keys: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # the policy's waiting key
    tokens: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # prompt tokens to compute
    times: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # when each was dispatched

    def add(self, key: float, tokens: int, now: float) -> None:
        self.keys.append(key)
        self.tokens.append(tokens)
        self.times.append(now)

    def shares_ahead(self, keys: np.ndarray, rate: PrefillRate, now: float) -> np.ndarray:
        """For each waiting key, the share of the instance's time (at `rate`) taken by arrivals
        with a smaller key at the recent pace: those will be served ahead of it."""
        span = now - self.times[0] if self.times else 0.0
        if len(self.times) < 2 or span <= 0:
            return np.zeros(len(keys))
        k = np.fromiter(self.keys, float, len(self.keys))
        n = np.fromiter(self.tokens, float, len(self.tokens))
        order = np.argsort(k, kind="stable")
        k, n = k[order], n[order]
        work = np.concatenate(([0.0], np.cumsum(rate.cost(n, n * (n + 1) / 2))))
        return np.minimum(work[np.searchsorted(k, keys, side="left")] / span, MAX_SHARE)
