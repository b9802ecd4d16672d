"""Classic vLLM (v0) scheduling: FCFS, prefill-first, no chunking.

A step that can admit waiting prompts runs only prompts, whole; otherwise every running request
decodes one token. New prompts therefore start at once (low TTFT) but each prefill step stalls all
running decodes for its whole duration (TBT spikes).
"""

from __future__ import annotations

from ascendra.core.batch import ScheduledBatch
from ascendra.core.projection import PrefillRate, Projection
from ascendra.core.scheduler import Scheduler


class VLLMScheduler(Scheduler):
    name = "vllm"

    def _schedule(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        while self.waiting:
            req = self.waiting[0]
            n = req.num_remaining_prefill
            if n > budget:
                # vLLM v0 refuses prompts longer than max_num_batched_tokens up front; the cluster
                # sizes the budget to max_model_len, so here it is only the budget left this step.
                break
            if not self._try_chunk(batch, req, n):
                break
            budget -= n
        if batch.requests:
            return batch
        self._schedule_decodes(batch)
        return batch

    @staticmethod
    def prefill_rate(p: Projection, num_decodes: int, decode_context: int, min_tbt: float | None
                     ) -> PrefillRate:
        # Prefill-first: prompts run in steps of their own, at full budget, whatever is decoding.
        return PrefillRate.of(p, p.config.max_num_batched_tokens, 0, 0)
