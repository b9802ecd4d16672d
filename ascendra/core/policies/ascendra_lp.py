"""Ascendra low-priority instances: throughput first, out of arrival order.

Shortest remaining prompt first: among prompts, the one closest to its first token goes first,
which maximises completed prefills per second and so the share of requests that see a quick first
token. Long prompts can starve; the router watches for that and offloads them to a high-priority
instance before they start (see cluster/router.py).

Batches are stall-free hybrids (decodes first), and the token budget is not fixed: each iteration
takes as many prompt tokens as the performance model says fit in its time limit (core/budget.py):
the tighter of `tbt_target` x the tightest TBT SLO among the running decodes and `ttft_target` x
the tightest TTFT SLO still waiting for a first token (a request that arrives as an iteration
starts waits for it and then needs one of its own), where SLOs tighter than the protected ones
shape it only while prompts keep the protected share of its time. Only requests present count:
once a request has its first token or is gone, its SLO no longer shapes anyone's iterations. A TTFT
SLO so tight that not even a one-token iteration fits its share of it shapes nothing at all: no
budget can meet it, so its request is served and counted as a miss rather than throttling every
other request. And an iteration with nothing else in it always takes at least `min_prefill_chunk`
prompt tokens, so no SLO, however tight, can stop the instance. A fixed Sarathi budget must be
small enough for the worst batch; this one grows when few decodes run and shrinks when many do.
"""

from __future__ import annotations

from collections.abc import Callable

from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.budget import budget_limit, time_limit
from ascendra.core.config import SchedulerConfig
from ascendra.core.perf_model import PerfModel
from ascendra.core.projection import PrefillRate, Projection, misses_deadline
from ascendra.core.queue import ALONE, DEADLINE
from ascendra.core.request import Request, tightest_gap
from ascendra.core.scheduler import Scheduler, decode_shape


class AscendraLPScheduler(Scheduler):
    name = "ascendra-lp"
    defers_late = True
    waiting_key = staticmethod(lambda r: r.num_remaining_prefill)  # shortest remaining prompt first

    @staticmethod
    def ttft_floor(config: SchedulerConfig, perf_model: PerfModel) -> float:
        if config.ttft_target <= 0:
            return 0.0
        return perf_model.predict(BatchShape.of([(0, 1)])) / config.ttft_target

    @staticmethod
    def prefill_rate(p: Projection, num_decodes: int, decode_context: int, min_tbt: float | None
                     ) -> PrefillRate:
        cfg = p.config
        base = decode_shape(num_decodes, decode_context)
        limit = budget_limit(cfg, p.perf_model, p.step_slowdown, base, min_tbt if num_decodes else None,
                             p.min_ttft_slo)
        if limit is None:
            return PrefillRate.of(p, cfg.max_idle_budget, num_decodes, decode_context)
        cap = cfg.max_num_batched_tokens - num_decodes
        # What the time budget alone fits (up to a few times the token cap: past that it never binds).
        fits = p.perf_model.max_prefill_tokens(base, limit / p.step_slowdown, 0, 4 * cap)
        tokens = min(fits, cap)
        if not num_decodes and tokens < cfg.min_prefill_chunk:  # the progress guarantee (_chunk_limit)
            return PrefillRate.of(p, cfg.min_prefill_chunk, num_decodes, decode_context)
        if fits >= 4 * cap:
            return PrefillRate.of(p, tokens, num_decodes, decode_context)
        return PrefillRate.of(p, tokens, num_decodes, decode_context, limit, fits)

    def _schedule(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        prefilling = self._schedule_decodes(batch)
        self._fill_prefills(batch, prefilling, self._chunk_limit(batch, now), defer=self._hopeless(now))
        return batch

    def _hopeless(self, now: float) -> Callable[[int], bool] | None:
        """A request that would miss its TTFT deadline even if its prefill ran alone from now on
        is deferred behind those that still can make theirs (`misses_deadline`). It is still
        served, only later. Reads the queue's stored figures, position by position."""
        if self.perf_model is None:
            return None
        cols, k = self.waiting.raw_columns, self.slowdown
        return lambda i: misses_deadline(now, cols[ALONE, i], cols[DEADLINE, i], k)

    def _chunk_limit(self, batch: ScheduledBatch, now: float) -> Callable[[Request], int]:
        cfg = self.config
        min_tbt = tightest_gap(batch.requests, now)  # the decodes: nothing else is in it yet
        perf = self.perf_model
        limit = (time_limit(cfg, min_tbt, self.min_ttft_slo) if perf is None else
                 budget_limit(cfg, perf, self.step_slowdown, batch.shape, min_tbt, self.min_ttft_slo))
        if limit is None or perf is None:
            cap = cfg.max_idle_budget if limit is None else cfg.max_num_batched_tokens
            return lambda req: min(req.num_remaining_prefill, cap - batch.shape.num_tokens)
        limit /= self.step_slowdown  # in the model's seconds, for the typical iteration

        def chunk_limit(req: Request) -> int:
            cap = min(req.num_remaining_prefill, cfg.max_num_batched_tokens - batch.shape.num_tokens)
            n = perf.max_prefill_tokens(batch.shape, limit, req.num_computed_tokens, cap)
            if not batch.requests:  # the progress guarantee: an iteration never runs empty
                n = max(n, min(cap, cfg.min_prefill_chunk))
            return n

        return chunk_limit
