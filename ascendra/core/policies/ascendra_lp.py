"""Ascendra low-priority instances: throughput first, out of arrival order.

Shortest remaining prompt first: among prompts, the one closest to its first token goes first,
which maximises completed prefills per second and so the share of requests that see a quick first
token. Long prompts can starve; the router watches for that and offloads them to a high-priority
instance before they start (see cluster/router.py).

Batches are stall-free hybrids (decodes first), and the token budget is not fixed: each iteration
takes as many prompt tokens as the performance model says fit in `tbt_target` times the tightest
TBT SLO among the running decodes. A fixed Sarathi budget must be small enough for the worst batch;
this one grows when few decodes run and shrinks when many do.
"""

from __future__ import annotations

from collections.abc import Callable

from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.request import Request
from ascendra.core.scheduler import PrefillRate, Scheduler, decode_shape


class AscendraLPScheduler(Scheduler):
    name = "ascendra-lp"

    def waiting_key(self) -> Callable[[Request], float]:
        return _remaining_prompt

    def iteration_time_limit(self, batch: ScheduledBatch) -> float | None:
        """The time one iteration may take without breaking a running decode's TBT SLO."""
        if not batch.shape.num_decodes:
            return None
        return self.config.tbt_target * min(r.slo.tbt for r in batch.requests)

    def prefill_rate(self, num_decodes: int, decode_context: int, min_tbt: float | None) -> PrefillRate:
        perf = self.perf_model
        assert perf is not None, "projections need a performance model"
        cfg = self.config
        base = decode_shape(num_decodes, decode_context)
        base_time = perf.predict(base)
        if not num_decodes or min_tbt is None:
            tokens = cfg.max_idle_budget
            return PrefillRate(tokens, perf.predict(BatchShape.of([(0, tokens)])), base_time)
        limit = cfg.tbt_target * min_tbt
        tokens = perf.max_prefill_tokens(base, limit, 0, cfg.max_num_batched_tokens - num_decodes)
        return PrefillRate(tokens, limit, base_time)

    def schedule(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        prefilling = self._schedule_decodes(batch)
        self._fill_prefills(batch, prefilling, self._chunk_limit(batch))
        return batch

    def _chunk_limit(self, batch: ScheduledBatch) -> Callable[[Request], int]:
        cfg = self.config
        limit = self.iteration_time_limit(batch)
        perf = self.perf_model
        if limit is None or perf is None:
            cap = cfg.max_idle_budget if limit is None else cfg.max_num_batched_tokens
            return lambda req: min(req.num_remaining_prefill, cap - batch.shape.num_tokens)
        return lambda req: perf.max_prefill_tokens(
            batch.shape,
            limit,
            req.num_computed_tokens,
            min(req.num_remaining_prefill, cfg.max_num_batched_tokens - batch.shape.num_tokens),
        )


def _remaining_prompt(r: Request) -> float:
    return r.num_remaining_prefill
