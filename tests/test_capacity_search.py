"""The capacity search and the sustained gate: bisection, the rule that a capacity is a rate every
seed keeps up with and never exceeds the saturation rate, and the backlog test behind "keeps up"."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ascendra.core.request import SLO, Request, RequestStatus
from ascendra.metrics import RunScore, find_capacity, find_saturation
from ascendra.metrics.capacity import SUSTAINED_MIN, capacity_score
from ascendra.metrics.sustained import backlog, served_share
from ascendra.workload import gamma_arrivals

# --- bisection ---------------------------------------------------------------------------------


def cliff(threshold: float, served: float = 1.0):
    """Attainment that drops from ~1 to ~0 around `threshold`, with a small per-seed offset."""
    return lambda rate, seed: RunScore(1.0 / (1.0 + math.exp((rate - threshold - 0.01 * seed) * 20)), served)


def test_capacity_bisection_finds_a_known_threshold() -> None:
    # mean over seeds 0..2 crosses 0.99 where rate ~= 7.3 + 0.01 - ln(99)/20 (about 7.08)
    want = 7.31 - math.log(99) / 20
    res = find_capacity(cliff(7.3), target=0.99, seeds=[0, 1, 2], lo=1.0, hi=20.0, rel_tol=0.01)
    assert res.converged and not res.below_lo and not res.above_hi
    assert res.capacity <= want + 0.02 and res.capacity == pytest.approx(want, rel=0.02)
    assert all(a >= 0.99 for r, a in res.points if r <= res.capacity)
    assert res.num_steps == len(res.points) <= 20


def test_capacity_expands_hi_and_reports_lo_failure() -> None:
    res = find_capacity(cliff(40.0), target=0.9, seeds=[0], lo=1.0, hi=5.0)
    assert res.capacity == pytest.approx(40.0 - math.log(9) / 20, rel=0.02)
    assert max(r for r, _ in res.points) >= 40.0  # hi doubled past the cliff
    none = find_capacity(cliff(0.5), target=0.99, seeds=[0, 1], lo=2.0, hi=10.0)
    assert none.below_lo and none.capacity == 0.0 and [r for r, _ in none.points] == [10.0, 2.0]
    flat = lambda r, s: RunScore(1.0, 1.0)
    budget = find_capacity(flat, target=0.99, seeds=[0], lo=1.0, hi=2.0, max_steps=4)
    assert budget.above_hi and budget.capacity == 16.0 and [r for r, _ in budget.points] == [2, 4, 8, 16]


def test_lo_is_run_only_when_hi_misses() -> None:
    """A hi that meets the target implies lo does (the score falls with rate); lo's runs, the
    slowest, are left out, and the rates bisected are the same as with lo run first."""
    res = find_capacity(cliff(25.0), target=0.99, seeds=[0], lo=1.0, hi=16.0, rel_tol=0.03)
    assert res.points[0][0] == 16.0 and 1.0 not in [r for r, _ in res.points]
    assert [r for r, _ in res.points][:4] == [16.0, 32.0, 24.0, 28.0]
    low = find_capacity(cliff(10.0), target=0.99, seeds=[0], lo=1.0, hi=16.0, rel_tol=0.03)
    assert [r for r, _ in low.points][:3] == [16.0, 1.0, 8.5]


def test_saturation_of_a_system_that_serves_five_per_second() -> None:
    res = find_saturation(lambda rate, seed: RunScore(1.0, min(1.0, 5.0 / rate)), seeds=[0], lo=0.5, hi=2.0,
                          rel_tol=0.005)
    assert res.capacity == pytest.approx(5.0 / SUSTAINED_MIN, rel=0.01)


def test_a_rate_one_seed_falls_behind_at_is_no_capacity() -> None:
    """Perfect attainment everywhere, but seed 1 stops keeping up above 6 req/s: the capacity is 6,
    however good the mean attainment looks past it."""
    def run_at(rate: float, seed: int) -> RunScore:
        return RunScore(1.0, 0.5 if seed == 1 and rate > 6.0 else 1.0)

    res = find_capacity(run_at, target=0.5, seeds=[0, 1, 2], lo=1.0, hi=16.0, rel_tol=0.01)
    assert 6.0 * 0.99 <= res.capacity <= 6.0
    assert capacity_score([RunScore(1.0, 1.0), RunScore(1.0, SUSTAINED_MIN - 1e-9)]) == 0.0


def noisy_system(rng: np.random.Generator):
    """run_at of a system with random edges of attainment and of keeping up, each run jittered
    (the same jitter when the same run is asked for again, as a seeded simulation gives)."""
    edge_att, edge_sat, noise = rng.uniform(2, 30), rng.uniform(2, 30), rng.uniform(0.0, 0.3)
    jitter: dict[tuple[float, int], tuple[float, float]] = {}

    def run_at(rate: float, seed: int) -> RunScore:
        if (rate, seed) not in jitter:
            jitter[rate, seed] = tuple(rng.normal(0, noise, 2))
        ja, js = jitter[rate, seed]
        attainment = 1.0 / (1.0 + math.exp((rate - edge_att) * (1 + ja * 10)))
        return RunScore(attainment, min(1.2, edge_sat / rate) + js)

    return run_at


def test_capacity_never_exceeds_saturation_nor_reports_a_rate_it_does_not_sustain() -> None:
    """Noisy, non-monotone runs (attainment and served share both jitter near their edges, as
    short runs do): over many draws, every capacity is a rate each seed kept up with, and never
    above the saturation rate found over the same seeds and bracket, nor a seed's own capacity
    above that seed's own saturation."""
    rng = np.random.default_rng(5)
    for trial in range(300):
        run_at = noisy_system(rng)
        seeds = tuple(range(int(rng.integers(1, 4))))
        bracket = {"lo": float(rng.uniform(0.5, 4)), "hi": float(rng.uniform(5, 20)),
                   "rel_tol": float(rng.choice([0.01, 0.03, 0.1]))}
        sat = find_saturation(run_at, seeds=seeds, **bracket)
        for target in (0.99, 0.9, 0.5):
            cap = find_capacity(run_at, target=target, seeds=seeds, **bracket)
            assert cap.capacity <= sat.capacity, (trial, target)
            if cap.capacity > 0:
                assert all(run_at(cap.capacity, s).keeps_up for s in seeds), trial
            for s in seeds:
                own = find_capacity(run_at, target=target, seeds=(s,), **bracket).capacity
                assert own <= find_saturation(run_at, seeds=(s,), **bracket).capacity, (trial, s)


# --- the sustained gate ------------------------------------------------------------------------


def one_server(arrivals: np.ndarray, lengths: np.ndarray, token_gap: float) -> list[Request]:
    """Requests served one at a time in arrival order, one token every `token_gap` seconds."""
    out, free = [], 0.0
    for i, (a, n) in enumerate(zip(arrivals, lengths, strict=True)):
        r = Request(str(i), float(a), prompt_len=10, max_tokens=int(n), slo=SLO(1.0, 1.0))
        start = max(free, float(a))
        r.token_times = [start + token_gap * (k + 1) for k in range(int(n))]
        free = r.token_times[-1]
        r.status = RequestStatus.FINISHED_LENGTH
        out.append(r)
    return out


@pytest.mark.parametrize("cv", [1.0, 3.0])
def test_a_stable_server_keeps_up_however_bursty_its_arrivals(cv: float) -> None:
    """Offered 10 tokens/s to a server of 20: served about all of it, with gamma CV 3 bursts too
    (a gate on the output of a window against the run's mean rate failed such runs at random)."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        arrivals = gamma_arrivals(4000, 1.0, cv, rng)
        reqs = one_server(arrivals, rng.integers(1, 20, len(arrivals)), 0.05)
        assert served_share(reqs) == pytest.approx(1.0, abs=0.04), seed


def test_an_overloaded_server_serves_its_share() -> None:
    """Offered 10 tokens/s to a server of 5 (then 8): it serves about half (then 80%) of it."""
    rng = np.random.default_rng(1)
    arrivals = gamma_arrivals(3000, 1.0, 3.0, rng)
    lengths = np.full(len(arrivals), 10)
    assert served_share(one_server(arrivals, lengths, 0.2)) == pytest.approx(0.5, abs=0.05)
    assert served_share(one_server(arrivals, lengths, 0.125)) == pytest.approx(0.8, abs=0.05)


def test_backlog_counts_offered_minus_produced_and_skips_refused_requests() -> None:
    reqs = one_server(np.array([0.0, 1.0, 1.0]), np.array([4, 2, 3]), 1.0)
    refused = Request("x", 0.5, prompt_len=10, max_tokens=100, slo=SLO(1.0, 1.0))
    refused.status = RequestStatus.FINISHED_FAILED
    # tokens at 1,2,3,4 (first), 5,6 (second), 7,8,9 (third)
    got = backlog([*reqs, refused], np.array([0.0, 0.5, 1.0, 4.0, 9.0]))
    assert got.tolist() == [4.0, 4.0, 4 + 5 - 1.0, 9 - 4.0, 0.0]
    assert served_share(reqs * 3) == served_share(reqs * 3 + [refused])
