"""One request of a workload, before it becomes a `Request`: when it arrives and how long it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkItem:
    arrival_time: float  # seconds from the workload's start
    prompt_len: int
    output_len: int  # tokens the request will produce (its max_tokens; a trace's decode length)
