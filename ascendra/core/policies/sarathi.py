"""Sarathi-Serve: FCFS with stall-free hybrid batches under a fixed token budget.

Every iteration first gives each running decode its token, then fills the rest of the budget with
prompt chunks in arrival order (a partly prefilled request goes on before newer ones). Decodes
never stall, so TBT stays steady, but prompts queue in arrival order behind the budget and TTFT
grows under load.
"""

from __future__ import annotations

from ascendra.core.batch import ScheduledBatch
from ascendra.core.scheduler import Scheduler


class SarathiScheduler(Scheduler):
    name = "sarathi"

    def _schedule(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        prefilling = self._schedule_decodes(batch)
        budget = self.config.max_num_batched_tokens
        self._fill_prefills(batch, prefilling, lambda req: budget - batch.shape.num_tokens)
        return batch
