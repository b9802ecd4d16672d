"""What runs an iteration: the protocol both executors follow, and what they hand back.

`TorchExecutor` runs the model and returns sampled tokens; `SimExecutor` runs nothing and returns
how long the iteration would take. They are the only difference between a live instance and a
simulated one: both feed the same `Instance.complete_iteration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ascendra.core.batch import ScheduledBatch


@dataclass(slots=True)
class ExecuteOutput:
    """One iteration's result, one entry per sequence of the batch where a list is given."""

    token_ids: list[int | None] | None  # the sampled token, None for an unfinished prompt chunk;
    # the whole list None in simulation (placeholder tokens, the trace decides the length)
    logprobs: list[float | None] | None = None
    # A row that could not be run (e.g. its sampling failed) fails that request alone.
    errors: list[str | None] | None = None
    duration: float | None = None  # simulated seconds; None when the clock measured it


class Executor(Protocol):
    def execute(self, batch: ScheduledBatch) -> ExecuteOutput: ...
    def release(self, request_id: str) -> None: ...  # forget a finished request's state
