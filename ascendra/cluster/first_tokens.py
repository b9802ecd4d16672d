"""When each waiting request of an instance will get its first token, played forward with the
instance's own policy: the router's projection, for whole queues at once.

The order is the policy's: partly prefilled requests merged with the waiting ones by key (ties:
the partial first), and, for the policies that defer them (`Scheduler.defers_late`), requests that
will no longer make their deadline when their turn comes served after all the others. The speed is
the policy's `prefill_rate` under the current decodes, and for the Ascendra policies it changes
along the queue: their budget reads the tightest TTFT SLO still waiting, which loosens as the tight
requests are served. Attention is charged per request (its prompt's query-key pairs), since it does
not depend on how a prompt is chunked. Every step is a vectorised pass over the queue's columns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ascendra.core.projection import PrefillRate, QueueView, misses_deadline
from ascendra.core.queue import KEY, figures
from ascendra.core.request import Request

MAX_LATE_STEPS = 64  # requests found late one by one (each step a pass over the rest of the queue)
MAX_RATES = 32  # distinct budgets along one queue (beyond this, TTFT SLOs are bucketed by 2%)


@dataclass(slots=True)
class FirstTokens:
    """Per waiting request, in queue order."""

    times: np.ndarray  # projected first-token time
    late: np.ndarray  # served after all the others: it cannot make its deadline any more
    cost: np.ndarray  # seconds its own prompt takes at its turn (what others gain if it leaves)
    slack: np.ndarray  # its latest start (to make its deadline) minus its turn; inf if none


def attention_left(r: Request) -> int:
    """Causal query-key pairs of the prompt tokens `r` has still to compute."""
    q, c = r.num_remaining_prefill, r.num_computed_tokens
    return q * c + q * (q + 1) // 2


def project(snap: QueueView, now: float, joining: Request | None = None) -> tuple[FirstTokens, int]:
    """The projection of the queue, with `joining` inserted where the policy would serve it (after
    the equal keys) if given; and that position (-1 without it)."""
    proj = snap.projection
    columns, at = snap.columns, -1
    if joining is not None:
        key = proj.waiting_key(joining)
        at = int(np.searchsorted(columns[KEY], key, side="right"))
        columns = np.insert(columns, at, figures(joining, key, proj.perf_model.prefill_time), axis=1)
    keys, rem, deadline, slo, alone = columns
    defers = proj.policy.defers_late
    # Late from the start: those that cannot make their deadline even served now.
    late = misses_deadline(now, alone, deadline, proj.slowdown) if defers else np.zeros(len(rem), bool)
    latest = deadline - alone * proj.slowdown if defers else np.full(len(rem), np.inf)
    partial = sorted((proj.waiting_key(r), r.num_remaining_prefill, attention_left(r))
                     for r in snap.prefilling)
    before = np.searchsorted(np.array([p[0] for p in partial]), keys, side="right")
    cost, start, p_cost = _schedule(snap, now, slo, late, rem, partial, before)
    if defers:
        # A request whose turn comes after its latest start is deferred at its turn, and the ones
        # behind it move up: in order, the first such request first.
        found = 0
        for _ in range(MAX_LATE_STEPS):
            behind = (start > latest) & ~late
            if not behind.any():  # (an empty queue included)
                break
            j = int(behind.argmax())
            late[j] = True
            if np.isfinite(cost[j]):
                start[j + 1 :] -= cost[j]
            else:  # the ones behind it started at infinity: their starts anew, without it
                start = _schedule(snap, now, slo, late, rem, partial, before)[1]
            found += 1
        else:  # a queue far past saturation: the rest that are behind at this point, at once
            late |= start > latest
            found += 1
        if found:  # the late ones' SLOs now count to the end of the queue: the rates again
            cost, start, p_cost = _schedule(snap, now, slo, late, rem, partial, before)
    everyone = now + np.where(late, 0.0, cost).sum() + p_cost[-1]
    times = np.where(late, everyone + np.cumsum(np.where(late, cost, 0.0)), start + cost)
    return FirstTokens(times + _base(snap), late, cost, latest - start), at


def _schedule(snap: QueueView, now: float, slo: np.ndarray, late: np.ndarray, rem: np.ndarray,
              partial: list, before: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each waiting request's own cost, and when its prefill starts with `late` ones deferred;
    the partly prefilled requests' cumulative cost."""
    rates, where = _rates_along(snap, slo, late)
    cost = np.empty(len(rem))
    for i, rate in enumerate(rates):  # a few distinct budgets along the queue
        at = where == i
        cost[at] = rate.cost(rem[at], rem[at] * (rem[at] + 1) / 2)  # waiting: all their pairs to come
    first = rates[where[0]] if len(rem) else snap.prefill_rate()
    p_cost = np.zeros(len(partial) + 1)
    if partial:
        p_cost[1:] = np.cumsum([first.cost(n, w) for _, n, w in partial])
    # Each one starts after the on-time ones ahead of it: an exclusive prefix sum, taken without
    # subtracting (a cost that is infinite, an iteration no budget fits, would make inf - inf).
    ahead = np.zeros(len(rem))
    np.cumsum(np.where(late, 0.0, cost)[:-1], out=ahead[1:])
    return cost, now + ahead + p_cost[before], p_cost


def _base(snap: QueueView) -> float:
    """The decodes beside the chunk that gives the first token (measured: this puts the fluid
    projection closest to the schedule played forward)."""
    return snap.prefill_rate().base_time


def _rates_along(snap: QueueView, slo: np.ndarray, late: np.ndarray) -> tuple[list[PrefillRate], np.ndarray]:
    """The distinct rates along the queue, and which one each position has. The Ascendra budget
    reads the tightest TTFT SLO among the requests still to be served at a position, in serving
    order (on-time ones, then the late ones); other policies' rate is the same all along."""
    proj = snap.projection
    same = np.zeros(len(slo), dtype=np.intp)
    counted = np.where(slo >= proj.ttft_floor, slo, np.inf)
    if not proj.policy.defers_late or not len(slo) or counted.min() == counted.max():
        one = _or_none(counted.min()) if proj.policy.defers_late and len(slo) else proj.min_ttft_slo
        return [snap.prefill_rate() if one == proj.min_ttft_slo else _rate(snap, one)], same
    order = np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])  # serving order
    still = np.empty_like(counted)
    still[order] = np.minimum.accumulate(counted[order][::-1])[::-1]  # suffix minimum
    values, where = np.unique(still, return_inverse=True)
    if len(values) > MAX_RATES:  # bucket by 2% (down, so never looser than the truth)
        still = np.exp(np.floor(np.log(still) / np.log(1.02)) * np.log(1.02))
        values, where = np.unique(still, return_inverse=True)
    return [_rate(snap, _or_none(v)) for v in values.tolist()], where


def _rate(snap: QueueView, min_ttft_slo: float | None) -> PrefillRate:
    proj = replace(snap.projection, min_ttft_slo=min_ttft_slo)
    return proj.policy.prefill_rate(proj, snap.num_decodes, snap.decode_context, snap.min_tbt)


def _or_none(slo: float) -> float | None:
    return None if np.isinf(slo) else float(slo)
