"""The tightest SLOs an instance can honour, from its performance model.

  - TTFT: the prompt alone on an idle instance, computed in chunks of the most prompt tokens that
    instance puts in one iteration. Nothing beats it: no queue, no decodes beside it. It grows with
    the prompt, so it is a function of the prompt's length.
  - TBT: the smallest decode step, one sequence of one cached token alone. No gap between two
    tokens can be shorter.

These are lower bounds (the model's seconds, before any learnt slowdown): an SLO below them can
never be met, whatever the load, so the door refuses it (or serves it best-effort) instead of
letting it chase an impossible target. An SLO at the floor is met only on an idle instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from ascendra.core.batch import BatchShape
from ascendra.core.perf_model import PerfModel


@dataclass(frozen=True)
class SLOFloors:
    perf_model: PerfModel
    chunk: int  # the most prompt tokens one iteration of an idle instance carries

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"an iteration must carry at least one prompt token, got {self.chunk}")

    def ttft(self, prompt_len: int) -> float:
        """Seconds from arrival to first token of a `prompt_len`-token prompt alone on an idle
        instance."""
        seconds, done = 0.0, 0
        while done < prompt_len:
            n = min(self.chunk, prompt_len - done)
            seconds += self.perf_model.predict(BatchShape.of([(done, n)]))
            done += n
        return seconds

    @property
    def tbt(self) -> float:
        """Seconds of the smallest decode step."""
        return self.perf_model.predict(BatchShape.of(decodes=[1]))
