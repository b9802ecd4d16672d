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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ascendra.core.config import SchedulerConfig
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request

if TYPE_CHECKING:
    from ascendra.core.scheduler import Scheduler


@dataclass(slots=True)  # not frozen (treat as immutable): built several times per router decision
class PrefillRate:
    """How fast an instance works through prompts under its current decode load.

    Every iteration spends `base_time` on the decodes, and fills the rest under two budgets: at
    most `tokens_per_iteration` prompt tokens (the iteration then lasting `iteration_time` plus
    its chunks' attention), and, for the Ascendra policies, at most `time_limit` seconds. Attention
    is counted per prompt, in causal query-key pairs: the same however the prompt is chunked, so
    it adds up exactly."""

    tokens_per_iteration: int
    iteration_time: float  # a full iteration without its chunks' attention
    base_time: float
    attention_cost: float = 0.0  # seconds per query-key pair
    time_limit: float | None = None
    time_tokens: float = 0.0  # time budget: prompt tokens one iteration fits without attention
    marginal_cost: float = 0.0  # time budget: seconds of one more token at that batch size

    @classmethod
    def of(cls, p: Projection, tokens: int, num_decodes: int, decode_context: int,
           time_limit: float | None = None, time_tokens: int = 0) -> PrefillRate:
        """`tokens` prompt tokens per iteration beside `num_decodes` decodes, timed by the model;
        with a time limit, `time_tokens` is what fits it (its own attention included) when no
        token cap applies."""
        perf, k = p.perf_model, p.slowdown
        # predict_parts: the shapes of the decodes alone and with one chunk (its attention apart).
        base = perf.predict_parts(num_decodes, num_decodes, 0, decode_context) * k
        full = perf.predict_parts(num_decodes + tokens, num_decodes + 1, 0, decode_context) * k
        attention = perf.attention_cost * k
        if time_limit is None or time_tokens <= 0:
            return cls(tokens, full, base, attention)
        marginal = perf.token_slope(num_decodes + time_tokens) * k
        if marginal <= 0:
            return cls(tokens, full, base, attention)
        # That chunk filled the limit with its own attention; without it, that much more.
        linear = time_tokens + attention * time_tokens * (time_tokens + 1) / 2 / marginal
        return cls(tokens, full, base, attention, time_limit, linear, marginal)

    def cost(self, tokens, pairs):  # numbers, or numpy arrays of them: one formula for both
        """Seconds the instance spends on `tokens` prompt tokens carrying `pairs` query-key pairs.
        Under the token budget: its share of iterations of `tokens_per_iteration` tokens, plus its
        attention. Under the time budget: iterations of `time_limit` seconds each fitting
        `time_tokens` tokens, attention displacing tokens at the linear layers' marginal cost.
        Which budget binds can change as a long prompt's chunks reach deeper contexts: the larger
        total stands."""
        per = self.tokens_per_iteration
        if per <= 0:
            return tokens * math.inf
        by_tokens = tokens * (self.iteration_time / per) + pairs * self.attention_cost
        if self.time_limit is None:
            return by_tokens
        per_token = self.time_limit / self.time_tokens
        by_time = (tokens + pairs * self.attention_cost / self.marginal_cost) * per_token
        return np.maximum(by_tokens, by_time)

    def time_for(self, tokens, pairs=0.0):
        """Seconds until a first token that needs `tokens` prompt tokens carrying `pairs`
        query-key pairs computed first (fluid, plus the decodes beside the last chunk: within about
        one iteration of playing the policy forward)."""
        return self.cost(tokens, pairs) + self.base_time


def misses_deadline(now, alone, deadline, slowdown: float):  # floats, or numpy arrays of them
    """Whether a prompt that takes `alone` model-seconds when prefilled on its own can no longer
    make its TTFT deadline: the Ascendra policies serve such a request after the others (it misses
    either way, and going first would make others miss too), and no offload can save it. One
    rule, read by the scheduler one request at a time and by the router for whole queues."""
    return now + alone * slowdown > deadline


@dataclass(slots=True)  # not frozen (treat as immutable): one per snapshot, on the router's hot path
class Projection:
    """An instance's budget rule with the state it reads, and nothing else."""

    policy: type[Scheduler]  # whose static rules (`prefill_rate`, `waiting_key`) apply
    config: SchedulerConfig
    perf_model: PerfModel
    slowdown: float = 1.0  # measured over predicted iteration time, as the instance learnt it
    min_ttft_slo: float | None = None  # tightest TTFT SLO among requests without a first token
    step_slowdown: float = 1.0  # the typical iteration's (its median): what budgets are sized by

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
    columns: np.ndarray  # the waiting requests' figures (see RequestQueue.columns), same order
    prefilling: list[Request]  # admitted, prompt partly computed
    num_decodes: int
    decode_context: int
    min_tbt: float | None
    projection: Projection | None  # None when the instance has no performance model
    decodes: list[Request] = field(default_factory=list)  # the running decodes (for migration)
    _rate: PrefillRate | None = None

    def prefill_rate(self) -> PrefillRate:
        """The rate at the head of the queue (computed once per view)."""
        if self._rate is None:
            if self.projection is None:
                raise ValueError("projections need a performance model")
            self._rate = self.projection.prefill_rate(self.num_decodes, self.decode_context, self.min_tbt)
        return self._rate
