"""Ascendra low-priority instances: throughput first, out of arrival order.

Shortest remaining prompt first: among prompts, the one closest to its first token goes first,
which maximises completed prefills per second and so the share of requests that see a quick first
token. Long prompts can starve; the router watches for that and offloads them to a high-priority
instance before they start (see cluster/router.py).

Batches are stall-free hybrids (decodes first), and the token budget is not fixed: each iteration
takes as many prompt tokens as the performance model says fit in its time limit, the tighter of
  - `tbt_target` x the tightest TBT SLO among the running decodes: the gap they see, and
  - `ttft_target` x the tightest TTFT SLO this instance has been given: a request arriving just as
    an iteration starts waits for it and then needs one of its own, so two iterations must fit in
    its TTFT (measured: without this, short prompts missed a tight TTFT floor at low load).
A fixed Sarathi budget must be small enough for the worst batch; this one grows when few decodes
run and shrinks when many do.
"""

from __future__ import annotations

from collections.abc import Callable

from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.request import Request
from ascendra.core.scheduler import PrefillRate, Scheduler, decode_shape


class AscendraLPScheduler(Scheduler):
    name = "ascendra-lp"
    min_ttft_slo: float | None = None

    def waiting_key(self) -> Callable[[Request], float]:
        return _remaining_prompt

    def add_request(self, request: Request) -> None:
        if self.min_ttft_slo is None or request.slo.ttft < self.min_ttft_slo:
            self.min_ttft_slo = request.slo.ttft
        super().add_request(request)

    def time_limit(self, min_tbt: float | None) -> float | None:
        """The longest an iteration may take, given the tightest TBT SLO among its decodes."""
        cfg = self.config
        limit = None if min_tbt is None else cfg.tbt_target * min_tbt
        if self.min_ttft_slo is not None and cfg.ttft_target > 0:
            ttft_limit = cfg.ttft_target * self.min_ttft_slo
            limit = ttft_limit if limit is None else min(limit, ttft_limit)
        return limit

    def prefill_rate(self, num_decodes: int, decode_context: int, min_tbt: float | None) -> PrefillRate:
        perf = self.perf_model
        assert perf is not None, "projections need a performance model"
        cfg = self.config
        k = self.slowdown
        base = decode_shape(num_decodes, decode_context)
        base_time = perf.predict(base) * k
        limit = self.time_limit(min_tbt if num_decodes else None)
        if limit is None:
            tokens = cfg.max_idle_budget
            return PrefillRate(tokens, perf.predict(BatchShape.of([(0, tokens)])) * k, base_time)
        tokens = perf.max_prefill_tokens(base, limit / k, 0, cfg.max_num_batched_tokens - num_decodes)
        return PrefillRate(tokens, max(limit, base_time), base_time)

    def _schedule(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        prefilling = self._schedule_decodes(batch)
        self._fill_prefills(batch, prefilling, self._chunk_limit(batch), defer=self._hopeless(now))
        return batch

    def _hopeless(self, now: float) -> Callable[[Request], bool] | None:
        """A request that would miss its TTFT deadline even if its prefill ran alone from now on
        is deferred behind those that still can make theirs: it counts as a miss either way, and
        serving it first would make others miss too. It is still served, only later."""
        perf, k = self.perf_model, self.slowdown
        if perf is None:
            return None

        def hopeless(req: Request) -> bool:
            if req.output_token_ids:
                return False  # preempted after its first token: no TTFT deadline left
            n = req.num_remaining_prefill
            return now + perf.predict_parts(n, 1, n * (n + 1) // 2, 0) * k > req.ttft_deadline

        return hopeless

    def _chunk_limit(self, batch: ScheduledBatch) -> Callable[[Request], int]:
        cfg = self.config
        decodes = batch.shape.num_decodes
        limit = self.time_limit(min(r.slo.tbt for r in batch.requests) if decodes else None)
        perf = self.perf_model
        if limit is None or perf is None:
            cap = cfg.max_idle_budget if limit is None else cfg.max_num_batched_tokens
            return lambda req: min(req.num_remaining_prefill, cap - batch.shape.num_tokens)
        limit /= self.slowdown  # in the model's seconds
        return lambda req: perf.max_prefill_tokens(
            batch.shape,
            limit,
            req.num_computed_tokens,
            min(req.num_remaining_prefill, cfg.max_num_batched_tokens - batch.shape.num_tokens),
        )


def _remaining_prompt(r: Request) -> float:
    return r.num_remaining_prefill
