"""Which running requests the router moves to another instance with their KV (issue 18), and when
the move pays.

Offloading moves only requests that have not started. Two kinds of started request can also be
saved by moving, as Llumnix moves them on vLLM, once their KV goes with them:

- **a prompt partly prefilled that will miss its TTFT** on its LP instance (a long prompt chunked
  slowly beside many decodes): it moves with the KV computed so far to the instance where its first
  token comes soonest, if that is in time there after the transfer and sooner than staying;
- **a decode whose TBT is at risk on a full LP batch** (its decodes alone take longer than its TBT
  SLO): it moves to an instance where an iteration with it added stays within its SLO, if the
  gap the move itself makes (the transfer, then that iteration) is no longer than the gaps it would
  see staying, or within its SLO anyway.

Both read only the router's projections and the link's bandwidth model (`KVTransfer`), and take
`now` as an argument: the simulator and the live server move the same requests at the same points.
The runtime carries the moves out (the simulator charges `seconds` of transfer; the live server
sends the KV bytes between the instance processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ascendra.cluster.first_tokens import attention_left
from ascendra.core.kv_transfer import KVTransfer
from ascendra.core.projection import QueueView, misses_deadline
from ascendra.core.request import Request

if TYPE_CHECKING:
    from ascendra.cluster.router import Router

MAX_PER_CHECK = 2  # moves per LP instance per check: each target takes at most one per check


@dataclass(slots=True)
class Migration:
    request: Request
    source: int
    target: int
    seconds: float  # the modelled transfer time, which the projection charged


def plan_migrations(router: Router, index: int, now: float, link: KVTransfer) -> list[Migration]:
    """The moves that pay, out of LP instance `index`, at most MAX_PER_CHECK."""
    snap = router.instances[index].snapshot()
    if not snap.prefilling and not snap.decodes:
        return []
    # Each target takes at most one move per check: its projection does not see the ones on the way.
    targets = [j for j, ok in enumerate(router.alive) if ok and j != index]
    moves: list[Migration] = []
    rules = (_late_prefills(router, snap, now, link, targets), _slow_decodes(router, snap, link, targets))
    for rule in rules:
        for req, target, seconds in rule:
            moves.append(Migration(req, index, target, seconds))
            targets.remove(target)  # (each rule reads `targets` afresh for its next request)
            if len(moves) == MAX_PER_CHECK:
                return moves
    return moves


def _late_prefills(router: Router, snap: QueueView, now: float, link: KVTransfer, targets: list[int]):
    """Partly prefilled prompts projected past their deadline (less the offload margin) that an
    instance can still serve in time after the transfer, and sooner than staying."""
    proj = snap.projection
    rate = snap.prefill_rate()
    margin = router.config.offload_margin
    ahead = 0.0
    for req in sorted(snap.prefilling, key=proj.waiting_key):  # the order they are chunked in
        ahead += rate.cost(req.num_remaining_prefill, attention_left(req))
        if req.output_token_ids:
            continue  # a preempted request recomputing: its first token was sent long ago
        stay = now + ahead + rate.base_time
        if stay <= req.ttft_deadline - margin * req.slo.ttft:
            continue
        alone = proj.perf_model.prefill_time(req.num_remaining_prefill)
        if misses_deadline(now, alone, req.ttft_deadline, proj.slowdown):
            continue  # beyond any instance's help
        seconds = link.seconds(req.num_computed_tokens)
        best, best_t = None, min(stay, req.ttft_deadline)
        for j in targets:
            if not _fits(router, j, req):
                continue
            t = router.admits(j, req, now)
            if t is not None and t + seconds < best_t:
                best, best_t = j, t + seconds
        if best is not None:
            yield req, best, seconds


def _slow_decodes(router: Router, snap: QueueView, link: KVTransfer, targets: list[int]):
    """Decodes whose SLO the instance's decodes alone already exceed, tightest SLO first, to an
    instance whose iteration with it added meets that SLO."""
    gap = snap.prefill_rate().base_time  # real seconds of an iteration of the decodes alone
    for req in sorted((r for r in snap.decodes if r.slo.tbt < gap), key=lambda r: r.slo.tbt):
        if req.max_tokens - req.num_output_tokens <= 1:
            continue  # its last token: no gap left to save
        seconds = link.seconds(req.num_computed_tokens)
        target = None
        for j in targets:
            if not _fits(router, j, req):
                continue
            there = router.instances[j].snapshot()
            cfg = there.projection.config
            tbt = req.slo.tbt if there.min_tbt is None else min(req.slo.tbt, there.min_tbt)
            after = there.projection.prefill_rate(there.num_decodes + 1,
                                                  there.decode_context + req.num_computed_tokens + 1, tbt)
            # Its gaps there: the budget keeps an iteration within tbt_target x its SLO, as long as
            # the decodes alone fit in it.
            if after.base_time > cfg.tbt_target * req.slo.tbt:
                continue
            if seconds + after.base_time <= max(gap, req.slo.tbt):
                target = j
                break
        if target is not None:
            yield req, target, seconds


def _fits(router: Router, j: int, req: Request) -> bool:
    """Instance j has room for the request's computed tokens and its next one."""
    return router.instances[j].kv_room >= req.num_computed_tokens + 1
