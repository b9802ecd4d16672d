"""The simulator: same seed, same simulation; every request served; systems behave as designed."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from ascendra.cluster.system import SystemConfig
from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.iteration_stats import IterationNoise, IterationStats
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import SLO, Request, RequestStatus
from ascendra.engine.sim_executor import SimExecutor
from ascendra.metrics import summarize
from ascendra.metrics.sustained import served_share
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.sim import simulate

SC = Scenario(profile="a100-llama-3-8b", workload="conv", slo="strict", num_requests=400)


def fingerprint(system: SystemConfig, rate: float, seed: int) -> list[tuple]:
    summary, res = SC.run(system, rate, seed)
    return [(r.request_id, tuple(r.token_times), r.offloaded) for r in res.requests]


@pytest.mark.parametrize("system", ["vllm", "sarathi", "ascendra"])
def test_same_seed_same_simulation(system: str):
    cfg = SystemConfig(system)
    assert fingerprint(cfg, 20.0, 7) == fingerprint(cfg, 20.0, 7)
    assert fingerprint(cfg, 20.0, 7) != fingerprint(cfg, 20.0, 8)


@pytest.mark.parametrize("system", ["vllm", "sarathi", "ascendra"])
def test_every_request_finishes_with_its_tokens(system: str):
    summary, res = SC.run(SystemConfig(system), 30.0, 1)
    assert all(r.status is RequestStatus.FINISHED_LENGTH for r in res.requests)
    assert all(r.num_output_tokens == r.max_tokens == len(r.token_times) for r in res.requests)
    assert all(r.token_times[0] >= r.arrival_time for r in res.requests)
    assert res.num_iterations > 0 and summary.num_ok == 400


def test_ascendra_offloads_under_load_and_vllm_stalls_decodes():
    _, asc = SC.run(SystemConfig("ascendra", num_hp=1), 30.0, 0)
    assert asc.num_offloads > 0
    offloaded = [i for r, i in zip(asc.requests, asc.instance_of, strict=True) if r.offloaded]
    assert offloaded and set(offloaded) == {3}  # they finished on the HP instance
    # Prefill-first: a long prompt stalls running decodes for its whole prefill, so vLLM's
    # largest token gaps exceed Sarathi's, whose every iteration is capped by the budget.
    v, _ = SC.run(SystemConfig("vllm"), 10.0, 0)
    s, _ = SC.run(SystemConfig("sarathi", token_budget=512), 10.0, 0)
    assert v.tbt_p99 > 2 * s.tbt_p99 and s.tbt_attainment > v.tbt_attainment


def test_queueing_shows_up_in_ttft_and_saturation():
    low, _ = SC.run(SystemConfig("sarathi", token_budget=512), 5.0, 0)
    high, res = SC.run(SystemConfig("sarathi", token_budget=512), 200.0, 0)
    assert high.ttft_p90 > 5 * low.ttft_p90
    assert served_share(res.requests) < 0.6  # far past saturation the queue only grows


def test_requests_too_long_for_the_model_fail_with_a_reason():
    perf = SC.perf
    ok = Request("ok", 0.0, 100, 10, SLO(1, 1))
    long = Request("long", 0.0, SC.capacity.max_model_len, 10, SLO(1, 1))
    res = simulate(SystemConfig("sarathi"), perf, [ok, long], capacity=SC.capacity)
    assert ok.status is RequestStatus.FINISHED_LENGTH
    assert long.status is RequestStatus.FINISHED_FAILED and "maximum context length" in long.error
    assert res.instance_of[1] == -1


def test_iteration_noise_has_the_profiles_spread_and_is_what_live_stats_measure():
    """The simulator scatters iterations as the profile's spread says, around the prediction, and
    the statistics a live instance exports read the same spread back from those durations."""
    perf = replace(SC.perf, spread=0.1, spread_correlation=0.5)
    batch = ScheduledBatch()
    batch.add(Request("r", 0.0, 512, 1, SLO(1, 1)), 512)
    predicted = perf.predict(batch.shape)
    draws = [SimExecutor(perf, seed=3).duration(batch) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]  # seeded
    executor, stats = SimExecutor(perf, seed=3), IterationStats()
    times = [executor.duration(batch) for _ in range(20_000)]
    for t in times:
        stats.record(t, predicted)
    assert sum(times) / len(times) == pytest.approx(predicted, rel=0.01)
    assert stats.spread == pytest.approx(0.1, rel=0.05)
    assert stats.spread_correlation == pytest.approx(0.5, abs=0.05)
    assert stats.slowdown == pytest.approx(1.0, rel=0.01)
    assert SimExecutor(SC.perf).duration(batch) == predicted  # no spread: exactly the prediction


def test_iteration_noise_costs_tbt_attainment_near_the_slo():
    """A request fails TBT on its worst gaps: with decodes just under the SLO, an exact simulator
    says all pass, a scattered one (as live iterations are) that some fail."""
    tbt = 1.3 * SC.perf.predict(BatchShape.of(decodes=[216] * 8))  # the last decode's context

    def attainment(perf: PerfModel) -> float:
        reqs = [Request(f"r{i}", 0.0, 16, 200, SLO(60.0, tbt)) for i in range(8)]
        res = simulate(SystemConfig("sarathi", 1), perf, reqs, seed=1, capacity=SC.capacity)
        return summarize(res.requests).tbt_attainment

    assert attainment(SC.perf) == 1.0
    assert attainment(replace(SC.perf, spread=0.15)) < 0.5


def test_live_noise_by_length_reaches_the_simulator():
    """Live, short iterations ran over the prediction and long ones under it; the noise built from
    those measurements draws each simulated iteration as live ones of its length ran."""
    stats = IterationStats()
    for k in range(400):
        wobble = 0.02 * (k % 3 - 1)
        stats.record(0.05 * (1.10 + wobble), 0.05)  # 50 ms decodes: 10% over
        stats.record(0.5 * (0.95 + wobble), 0.5)  # half-second chunks: 5% under
    noise = stats.noise()
    short, long = ScheduledBatch(), ScheduledBatch()
    short.add(Request("d", 0.0, 1, 1, SLO(1, 1)), 1)
    long.add(Request("p", 0.0, 4000, 1, SLO(1, 1)), 4000)
    for batch in (short, long):
        predicted = SC.perf.predict(batch.shape)
        mean, _ = noise.band(predicted)
        executor = SimExecutor(SC.perf, seed=1, noise=noise)
        ratio = sum(executor.duration(batch) for _ in range(2000)) / 2000 / predicted
        assert ratio == pytest.approx(math.exp(mean), rel=0.01)
    assert noise.band(0.05)[0] == pytest.approx(math.log(1.10), abs=0.005)
    assert noise.band(0.5)[0] == pytest.approx(math.log(0.95), abs=0.005)
    assert noise.band(3.0) == (stats.log_ratio.mean, stats.log_ratio.sd)  # no data there: all of it


def test_live_stalls_reach_the_simulator():
    """Live, 2% of 30 ms decodes stalled to 8x (the OS ran something else): the simulator draws
    them as often from the live histogram, where a log-normal of the same moments almost never
    does, and a request's TBT SLO fails on one such gap."""
    stats = IterationStats()
    for k in range(2000):
        ratio = 8.0 if k % 50 == 0 else 0.9 + 0.1 * (k % 3)
        stats.record(0.03 * ratio, 0.03)
    noise = stats.noise()
    assert noise.histograms

    def draws(noise: IterationNoise) -> list[float]:
        executor = SimExecutor(SC.perf, seed=2, noise=noise)
        return [executor.duration(ScheduledBatch(predicted=0.03)) / 0.03 for _ in range(20_000)]

    live = draws(noise)
    assert sum(r > 4 for r in live) / len(live) == pytest.approx(0.02, abs=0.004)
    assert sum(live) / len(live) == pytest.approx(stats.slowdown, rel=0.02)
    assert sum(r > 4 for r in draws(replace(noise, histograms=()))) < 40  # the moments alone: thin
