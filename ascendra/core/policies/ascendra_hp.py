"""Ascendra high-priority instances: latency first, earliest TTFT deadline first.

They receive the requests the router found at risk on a low-priority instance. Prompts go in
order of TTFT deadline, and the budget is the same predicted-time rule as the LP policy (with its
own, usually tighter, `tbt_target`) so the decodes the instance already runs keep their TBT.

As on LP instances, a request that can no longer make its deadline is deferred behind those that
still can; under EDF this matters most, since the missed requests have the earliest deadlines and
would otherwise go first and make the next ones miss too (EDF's domino effect under overload).
"""

from __future__ import annotations

from ascendra.core.policies.ascendra_lp import AscendraLPScheduler


class AscendraHPScheduler(AscendraLPScheduler):
    name = "ascendra-hp"
    waiting_key = staticmethod(lambda r: r.ttft_deadline)  # earliest deadline first
