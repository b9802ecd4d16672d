"""Capacity search: the highest arrival rate at which SLO attainment stays at or above a target.

The caller passes `attainment_at(rate, seed) -> share in [0, 1]` (typically: build a workload at
that rate and seed, simulate it, `summarize(...).attainment`). The attainment at a rate is the MEAN
over the given seeds, one run each: averaging smooths the noise of single runs and makes the
search's verdict at a rate one number, so bisection stays well defined.

Search:
1. Evaluate `lo`. If it misses the target, the capacity is reported as 0.0 with `below_lo=True`:
   the system has no capacity at or above `lo` (a lower `lo` may find some).
2. Evaluate `hi`; while it still meets the target, move `lo` to it and double `hi` (at most
   `max_steps` evaluations in all; if the budget runs out first, `above_hi=True` and the capacity is
   the highest rate tried).
3. Bisect [lo, hi] until hi - lo <= rel_tol * lo. The capacity is `lo`: the highest rate evaluated
   that met the target with every evaluated higher rate missing it. Attainment is assumed to fall
   with rate; with noise, a higher rate above a failing one is not explored.

`saturation_rate` is the same search on a different score: the highest offered rate the system
sustains without SLOs, i.e. whose achieved request throughput stays >= `min_ratio` (0.95) of the
offered rate. Pass `throughput_at(rate, seed)` = `summarize(...).request_throughput` of a run of a
fixed number of requests: when the queue grows, completions lag arrivals, the run's span stretches
past the arrival window, and throughput / rate falls below 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class CapacityResult:
    capacity: float  # requests/s; 0.0 when even lo misses the target
    target: float
    points: list[tuple[float, float]] = field(default_factory=list)  # (rate, mean score), evaluation order
    below_lo: bool = False  # lo missed the target: capacity is below lo (reported as 0.0)
    above_hi: bool = False  # the step budget ran out while still meeting the target
    converged: bool = False  # the bracket shrank to rel_tol
    num_steps: int = 0  # rates evaluated (each one run per seed)

def _bisect(
    score_at: Callable[[float, int], float], *, target: float, seeds: Sequence[int], lo: float, hi: float,
    rel_tol: float, max_steps: int,
) -> CapacityResult:
    if not seeds:
        raise ValueError("need at least one seed")
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo} hi={hi}")
    if max_steps < 2:
        raise ValueError("max_steps must be at least 2 (lo and hi)")
    res = CapacityResult(capacity=0.0, target=target)

    def passes(rate: float) -> bool:
        score = sum(score_at(rate, s) for s in seeds) / len(seeds)
        res.points.append((rate, score))
        res.num_steps += 1
        return score >= target

    if not passes(lo):
        res.below_lo = True
        return res
    while passes(hi):
        lo = hi
        if res.num_steps >= max_steps:
            res.capacity, res.above_hi = lo, True
            return res
        hi *= 2.0
    while hi - lo > rel_tol * lo and res.num_steps < max_steps:
        mid = 0.5 * (lo + hi)
        if passes(mid):
            lo = mid
        else:
            hi = mid
    res.capacity = lo
    res.converged = hi - lo <= rel_tol * lo
    return res


def find_capacity(
    attainment_at: Callable[[float, int], float],
    *,
    target: float,
    seeds: Sequence[int],
    lo: float,
    hi: float,
    rel_tol: float = 0.02,
    max_steps: int = 20,
) -> CapacityResult:
    """Highest rate in requests/s whose mean attainment over `seeds` is >= target (see module doc)."""
    if not 0 < target <= 1:
        raise ValueError(f"target attainment must be in (0, 1], got {target}")
    return _bisect(
        attainment_at, target=target, seeds=seeds, lo=lo, hi=hi, rel_tol=rel_tol, max_steps=max_steps
    )


def saturation_rate(
    throughput_at: Callable[[float, int], float],
    *,
    seeds: Sequence[int],
    lo: float,
    hi: float,
    min_ratio: float = 0.95,
    rel_tol: float = 0.02,
    max_steps: int = 20,
) -> CapacityResult:
    """Highest offered rate whose achieved request throughput / rate is >= min_ratio (no SLOs).

    The result's points hold (rate, mean throughput / rate).
    """
    return _bisect(
        lambda rate, seed: throughput_at(rate, seed) / rate,
        target=min_ratio, seeds=seeds, lo=lo, hi=hi, rel_tol=rel_tol, max_steps=max_steps,
    )
