"""Capacity search: the highest arrival rate at which SLO attainment stays at or above a target at a
rate the system also keeps up with, and the no-SLO saturation rate, by one bisection.

The caller passes `run_at(rate, seed) -> RunScore`: one run's attainment (the share of requests
meeting both SLOs) and its served share (`metrics.sustained.served_share`: about 1 while the
system keeps up, the served fraction of the offered load once it does not). The two rates:

- **capacity** at a target: every seed's run keeps up (served share >= SUSTAINED_MIN) and the MEAN
  attainment over the seeds is at or above the target. Averaging smooths the noise of single runs
  and makes the verdict at a rate one number; requiring every seed to keep up means a reported
  capacity is a rate that was sustained, not one whose backlog was still building when the run
  ended. `seeds` of one gives a single seed's capacity (its spread across seeds).
- **saturation**: every seed's run keeps up, SLOs aside.

Search (`search`, for any score and target, assumed to fall as the rate grows):
1. Evaluate `hi`; while it still meets the target, move `lo` to it and double `hi` (at most
   `max_steps` evaluations in all; if the budget runs out first, `above_hi=True`).
2. If the first `hi` missed, evaluate `lo`. If that misses too, the result is 0.0 with
   `below_lo=True`. (A `hi` that meets the target implies `lo` does, so `lo` is run only when
   needed: the lowest rate's runs are a search's slowest, a 4,000-request run at 1 req/s taking
   3-5 s against 0.5-2 s near the headline's capacities, many small iterations.)
3. Bisect [lo, hi] until hi - lo <= rel_tol * lo. The result is `lo`: the highest rate evaluated
   that met the target with every evaluated higher rate missing it. The rates evaluated are
   those of evaluating `lo` first, less `lo` when `hi` met the target.

**A capacity never exceeds the saturation rate of the same seeds** searched over the same bracket:
the capacity verdict at a rate implies the saturation verdict there, so the two bisections take
the same steps until the first rate r where capacity fails and saturation passes; from then on
every capacity candidate is below r and every saturation candidate above it. (Searched separately,
with other brackets or seeds, noise let a short run print capacity / saturation = 1.03.) Callers
memoise `run_at`, so the shared steps cost one run each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# A run keeps up when it serves at least this share of the offered load (see metrics.sustained).
SUSTAINED_MIN = 0.95


@dataclass(frozen=True, slots=True)
class RunScore:
    """What a capacity search needs from one run at one rate and seed."""

    attainment: float  # share of requests meeting both SLOs
    served: float  # served share of the offered load (metrics.sustained.served_share)

    @property
    def keeps_up(self) -> bool:
        return self.served >= SUSTAINED_MIN


@dataclass(slots=True)
class CapacityResult:
    capacity: float  # requests/s; 0.0 when even lo misses the target
    target: float
    points: list[tuple[float, float]] = field(default_factory=list)  # (rate, score), evaluation order
    below_lo: bool = False  # lo missed the target: the rate is below lo (reported as 0.0)
    above_hi: bool = False  # the step budget ran out while still meeting the target
    converged: bool = False  # the bracket shrank to rel_tol
    num_steps: int = 0  # rates evaluated (each one run per seed)


def search(
    score_at: Callable[[float], float], *, target: float, lo: float, hi: float, rel_tol: float = 0.02,
    max_steps: int = 20,
) -> CapacityResult:
    """The highest rate whose score is >= target (see module doc), assuming the score falls with rate."""
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo} hi={hi}")
    if max_steps < 2:
        raise ValueError("max_steps must be at least 2 (lo and hi)")
    res = CapacityResult(capacity=0.0, target=target)

    def passes(rate: float) -> bool:
        score = score_at(rate)
        res.points.append((rate, score))
        res.num_steps += 1
        return score >= target

    if not passes(hi):
        if not passes(lo):
            res.below_lo = True
            return res
    else:
        while True:
            lo = hi
            if res.num_steps >= max_steps:
                res.capacity, res.above_hi = lo, True
                return res
            hi *= 2.0
            if not passes(hi):
                break
    while hi - lo > rel_tol * lo and res.num_steps < max_steps:
        mid = 0.5 * (lo + hi)
        if passes(mid):
            lo = mid
        else:
            hi = mid
    res.capacity = lo
    res.converged = hi - lo <= rel_tol * lo
    return res


def _runs(run_at: Callable[[float, int], RunScore], rate: float, seeds: Sequence[int]) -> list[RunScore]:
    if not seeds:
        raise ValueError("need at least one seed")
    return [run_at(rate, s) for s in seeds]


def capacity_score(runs: Sequence[RunScore]) -> float:
    """Mean attainment over the runs, or 0 when any of them fell behind."""
    if not all(r.keeps_up for r in runs):
        return 0.0
    return sum(r.attainment for r in runs) / len(runs)


def find_capacity(
    run_at: Callable[[float, int], RunScore], *, target: float, seeds: Sequence[int], lo: float, hi: float,
    rel_tol: float = 0.02, max_steps: int = 20,
) -> CapacityResult:
    """Highest rate at which every seed keeps up and the mean attainment is >= target."""
    if not 0 < target <= 1:
        raise ValueError(f"target attainment must be in (0, 1], got {target}")
    return search(
        lambda rate: capacity_score(_runs(run_at, rate, seeds)),
        target=target, lo=lo, hi=hi, rel_tol=rel_tol, max_steps=max_steps,
    )


def find_saturation(
    run_at: Callable[[float, int], RunScore], *, seeds: Sequence[int], lo: float, hi: float,
    rel_tol: float = 0.02, max_steps: int = 20,
) -> CapacityResult:
    """Highest rate every seed keeps up with, SLOs aside; its points hold the least served share."""
    return search(
        lambda rate: min(r.served for r in _runs(run_at, rate, seeds)),
        target=SUSTAINED_MIN, lo=lo, hi=hi, rel_tol=rel_tol, max_steps=max_steps,
    )
