"""The plugin's record of its steps: what each step was when it was scheduled (shape, predicted
duration, budget), its tokens while it is in flight, and, once its output is in, how long it took.
The measured durations teach the slowdowns that size the next budgets and that the router projects
with; the optional step log (`ASCENDRA_STEP_LOG`) is what `ascendra profile --from-steps` fits from.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass

from ascendra.core.batch import BatchShape
from ascendra.core.iteration_stats import IterationStats
from ascendra.core.slowdown import learnt_slowdown, learnt_step_slowdown


@dataclass(slots=True)
class Step:
    scheduled_at: float
    shape: BatchShape
    predicted: float
    plugin_seconds: float  # this step's scheduling work in our code, outside vLLM's schedule()
    vllm_schedule_seconds: float  # vLLM's schedule(), our waiting queue's methods included
    num_waiting: int
    budget: int  # the step's token budget (the policy's, or vLLM's own for the stock scheduler)
    slowdown: float  # the typical iteration's learnt slowdown that budget was sized with
    tokens: dict[str, int]  # vLLM's request id -> tokens this step computes (vLLM's own dict)
    # For the step log only: (router's id, tokens computed before, tokens now, prompt tokens) per
    # request, so that each token a client received can be traced to the step that made it.
    requests: list[tuple[str, int, int, int]] | None = None


class StepBook:
    def __init__(self, step_log: str | None = None) -> None:
        self.slowdown = 1.0  # the typical iteration's, learnt (`learnt_slowdown`)
        self.step_slowdown = 1.0  # the last steps', learnt fast
        self.iterations = IterationStats()
        self.num_steps = 0
        self._in_flight: deque[Step] = deque()
        self._last_end = 0.0
        self._log = open(step_log, "a") if step_log else None  # noqa: SIM115 - the engine's lifetime
        self._received: list[tuple[str, float, float]] = []  # for the log: since the last row

    @property
    def logging(self) -> bool:
        return self._log is not None

    def received(self, request_id: str, at_door: float, at_engine: float) -> None:
        """A request reached the scheduler: the log's next row says when, beside when our door
        took it in, so that a wait before the engine shows apart from one in its queue."""
        if self._log is not None:
            self._received.append((request_id, at_door, at_engine))

    def scheduled(self, step: Step) -> None:
        self._in_flight.append(step)

    def in_flight(self) -> dict[str, int]:
        """Per vLLM request id, the tokens of the steps scheduled but not yet done (async
        scheduling keeps one ahead)."""
        tokens: dict[str, int] = {}
        for step in self._in_flight:
            for rid, n in step.tokens.items():
                tokens[rid] = tokens.get(rid, 0) + n
        return tokens

    def done(self, now: float) -> tuple[Step, float] | None:
        """The oldest step in flight has its output: it and its measured duration, learnt from."""
        if not self._in_flight:
            return None
        step = self._in_flight.popleft()
        # Steps run back to back: one ends when the output of the one before it was taken in.
        elapsed = now - max(step.scheduled_at, self._last_end)
        self._last_end = now
        self.num_steps += 1
        if step.predicted > 0 and elapsed > 0:
            self.slowdown = learnt_slowdown(self.slowdown, elapsed, step.predicted)
            self.step_slowdown = learnt_step_slowdown(self.step_slowdown, elapsed, step.predicted)
            self.iterations.record(elapsed, step.predicted)
        return step, elapsed

    def log(self, step: Step, end: float, elapsed: float, plugin_seconds: float) -> None:
        if self._log is None:
            return
        row = {"at": step.scheduled_at, "end": end, "shape": asdict(step.shape), "seconds": elapsed,
               "waiting": step.num_waiting, "plugin_seconds": plugin_seconds,
               "vllm_schedule_seconds": step.vllm_schedule_seconds,
               # Why a budget was what it was: the slowdown learnt when it was sized.
               "budget": step.budget, "slowdown": step.slowdown, "requests": step.requests,
               "received": self._received}
        self._received = []
        self._log.write(json.dumps(row) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
