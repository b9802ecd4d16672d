"""Ascendra high-priority instances: latency first, earliest TTFT deadline first.

They receive the requests the router found at risk on a low-priority instance. Prompts go in
order of TTFT deadline, and the budget is the same predicted-time rule as the LP policy (with its
own, usually tighter, `tbt_target`) so the decodes the instance already runs keep their TBT.

A request that can no longer make its deadline even if started now is deferred behind those that
still can: serving it first would make others miss too (EDF's domino effect under overload), and
it is finished all the same, only later.
"""

from __future__ import annotations

from collections.abc import Callable

from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.policies.ascendra_lp import AscendraLPScheduler
from ascendra.core.request import Request


class AscendraHPScheduler(AscendraLPScheduler):
    name = "ascendra-hp"

    def waiting_key(self) -> Callable[[Request], float]:
        return _deadline

    def schedule(self, now: float) -> ScheduledBatch:
        batch = ScheduledBatch()
        prefilling = self._schedule_decodes(batch)
        perf = self.perf_model

        def hopeless(req: Request) -> bool:
            if req.output_token_ids or perf is None:
                return False  # a preempted request has had its first token: no deadline left
            return now + perf.predict(BatchShape.of([(0, req.num_remaining_prefill)])) > req.ttft_deadline

        self._fill_prefills(batch, prefilling, self._chunk_limit(batch), defer=hopeless)
        return batch


def _deadline(r: Request) -> float:
    return r.ttft_deadline
