"""What the router reads of an instance to project first-token times: a view of its queues and a
pure `Projection` of its policy's budget rule.

The scheduler owns both and hands them out (`Scheduler.snapshot`); the live server rebuilds them
from a worker's report. The router never builds or pokes a scheduler of its own: what it projects
with is exactly the rule the instance schedules by, fed the same state (config, performance
model, learnt slowdown, and the tightest TTFT SLO still waiting for a first token).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ascendra.core.config import SchedulerConfig
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request

if TYPE_CHECKING:
    from ascendra.core.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class PrefillRate:
    """How fast an instance works through prompt tokens under its current decode load: full
    iterations carry `tokens_per_iteration` prompt tokens in `iteration_time`; a last, partial one
    costs in between `base_time` (the decodes alone) and a full one."""

    tokens_per_iteration: int
    iteration_time: float
    base_time: float

    def time_for(self, tokens: int) -> float:
        per = self.tokens_per_iteration
        if per <= 0:
            return math.inf
        full, part = divmod(tokens, per)
        t = full * self.iteration_time
        if part:
            t += self.base_time + (self.iteration_time - self.base_time) * part / per
        return t


@dataclass(frozen=True, slots=True)
class Projection:
    """An instance's budget rule with the state it reads, and nothing else."""

    policy: type[Scheduler]  # whose static rules (`prefill_rate`, `waiting_key`) apply
    config: SchedulerConfig
    perf_model: PerfModel
    slowdown: float = 1.0  # measured over predicted iteration time, as the instance learnt it
    min_ttft_slo: float | None = None  # tightest TTFT SLO among requests without a first token

    def prefill_rate(self, num_decodes: int, decode_context: int, min_tbt: float | None) -> PrefillRate:
        return self.policy.prefill_rate(self, num_decodes, decode_context, min_tbt)

    @property
    def ttft_floor(self) -> float:
        """TTFT SLOs below this cannot shape the budget (see `Scheduler.ttft_floor`)."""
        return self.policy.ttft_floor(self.config, self.perf_model)

    @property
    def waiting_key(self) -> Callable[[Request], float]:
        return self.policy.waiting_key

    def with_ttft_slo(self, ttft: float) -> Projection:
        """The same rule once a request with TTFT SLO `ttft` has joined the instance."""
        if (self.min_ttft_slo is not None and self.min_ttft_slo <= ttft) or ttft < self.ttft_floor:
            return self
        return replace(self, min_ttft_slo=ttft)


@dataclass(slots=True)
class QueueView:
    """An instance's queues as the router reads them. `waiting` is the scheduler's live list (read
    at once, never kept: copying a 4k-request queue on every iteration would cost more than the
    projection itself); the rest are figures taken when the view was made."""

    waiting: list[Request]  # not started, in the order the policy serves them
    prefilling: list[Request]  # admitted, prompt partly computed
    num_decodes: int
    decode_context: int
    min_tbt: float | None
    projection: Projection | None  # None when the instance has no performance model

    def prefill_rate(self) -> PrefillRate:
        if self.projection is None:
            raise ValueError("projections need a performance model")
        return self.projection.prefill_rate(self.num_decodes, self.decode_context, self.min_tbt)
