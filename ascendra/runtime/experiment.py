"""Simulation experiments: a scenario (hardware profile, workload, SLOs) run against systems.

SLOs scale with the hardware, as Sarathi-Serve sets them: the TBT SLO is a multiple of one
isolated decode iteration (one request decoding alone at a 1k context), and the TTFT SLO a multiple
of the request's own prompt prefilled alone, with a floor (a multiple of the same decode
iteration), so a long prompt is not asked for the impossible and a short one not given minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property

from ascendra.cluster.system import SystemConfig
from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import PerfModel, isolated_decode_time, isolated_prefill_time
from ascendra.core.request import SLO, Request
from ascendra.metrics.capacity import CapacityResult, find_capacity, saturation_rate
from ascendra.metrics.summary import Summary, summarize
from ascendra.profiles import Profile, load_profile
from ascendra.runtime.sim import SimResult, simulate
from ascendra.workload import make_workload, to_requests


@dataclass(frozen=True)
class SLOSpec:
    name: str
    tbt_scale: float  # x the isolated decode iteration
    ttft_scale: float  # x the request's isolated prefill
    ttft_floor_scale: float  # the TTFT floor, x the isolated decode iteration

    def tbt(self, perf: PerfModel) -> float:
        return self.tbt_scale * isolated_decode_time(perf)

    def ttft(self, perf: PerfModel, prompt_len: int) -> float:
        return max(
            self.ttft_floor_scale * isolated_decode_time(perf),
            self.ttft_scale * isolated_prefill_time(perf, prompt_len),
        )

    def describe(self, perf: PerfModel) -> str:
        d = isolated_decode_time(perf)
        return (
            f"{self.name}: TBT {self.tbt_scale:g}x decode = {1e3 * self.tbt(perf):.0f} ms; TTFT "
            f"max({self.ttft_floor_scale:g}x decode = {1e3 * self.ttft_floor_scale * d:.0f} ms, "
            f"{self.ttft_scale:g}x the prompt's own prefill)"
        )


# Strict: TBT 5x (Sarathi-Serve's strict SLO); TTFT 5x the prompt's isolated prefill, at least two
# TBT SLOs. Relaxed: 25x (Sarathi-Serve's relaxed), TTFT likewise scaled.
SLO_PRESETS = {
    "strict": SLOSpec("strict", tbt_scale=5.0, ttft_scale=5.0, ttft_floor_scale=10.0),
    "relaxed": SLOSpec("relaxed", tbt_scale=25.0, ttft_scale=25.0, ttft_floor_scale=50.0),
}


def slo_spec(name_or_spec: str | SLOSpec) -> SLOSpec:
    if isinstance(name_or_spec, SLOSpec):
        return name_or_spec
    try:
        return SLO_PRESETS[name_or_spec]
    except KeyError:
        raise ValueError(
            f"unknown SLO setting {name_or_spec!r}; choose one of {', '.join(SLO_PRESETS)}"
        ) from None


@dataclass
class Scenario:
    profile: str = "a100-llama-3-8b"
    workload: str = "conv"
    slo: str = "strict"
    num_requests: int = 2000
    arrival: str = "poisson"
    cv: float = 1.0

    @cached_property
    def loaded(self) -> Profile:
        return load_profile(self.profile)

    @property
    def perf(self) -> PerfModel:
        return self.loaded.perf_model

    @property
    def capacity(self) -> KVCapacity:
        return self.loaded.capacity

    def requests(self, rate: float, seed: int) -> list[Request]:
        perf, spec = self.perf, slo_spec(self.slo)
        tbt = spec.tbt(perf)
        items = make_workload(
            self.workload,
            rate=rate,
            num_requests=self.num_requests,
            seed=seed,
            arrival=self.arrival,
            cv=self.cv,
            max_model_len=self.capacity.max_model_len,
        )
        return to_requests(items, lambda it: SLO(spec.ttft(perf, it.prompt_len), tbt))

    def run(self, system: SystemConfig, rate: float, seed: int, progress=None) -> tuple[Summary, SimResult]:
        result = simulate(system, self.perf, self.requests(rate, seed), progress, seed=seed,
                          capacity=self.capacity)
        return summarize(result.requests), result


# A rate counts toward capacity only if the system also keeps up with it: a finite run above the
# saturation rate can show high attainment while its backlog is still building.
SUSTAINED_MIN = 0.95


def _capacity_job(args: tuple) -> dict[float, CapacityResult]:
    scenario, system, targets, seeds, lo, hi, rel_tol = args
    memo: dict[tuple[float, int], float] = {}  # the targets' searches share the runs they both need

    def attainment_at(rate: float, seed: int) -> float:
        if (rate, seed) not in memo:
            summary, result = scenario.run(system, rate, seed)
            sustained = sustained_share(result.requests) >= SUSTAINED_MIN
            memo[rate, seed] = summary.attainment if sustained else 0.0
        return memo[rate, seed]

    return {
        t: find_capacity(attainment_at, target=t, seeds=seeds, lo=lo, hi=hi, rel_tol=rel_tol) for t in targets
    }


def sustained_share(requests: list[Request]) -> float:
    """Output tokens produced during the middle half of the arrival window, over the output tokens
    offered in that time (the run's offered token rate times the window): about 1 while the system
    keeps up, below once its queue grows. Tokens rather than requests, so a policy that starves long
    prompts under overload is not credited for finishing more short ones; the whole run's offered
    rate rather than the window's own arrivals, so heavy-tailed output lengths do not make it noisy."""
    times = sorted(r.arrival_time for r in requests)
    if len(times) < 8:
        raise ValueError("need at least 8 requests to judge saturation")
    span = times[-1] - times[0]
    if span <= 0:
        return 1.0
    t0, t1 = times[0] + 0.25 * span, times[0] + 0.75 * span
    offered = sum(r.max_tokens for r in requests) * (t1 - t0) / span
    produced = sum(1 for r in requests for t in r.token_times if t0 <= t < t1)
    return produced / offered


def capacities(
    scenario: Scenario,
    systems: list[SystemConfig],
    *,
    targets: tuple[float, ...] = (0.99,),
    seeds: tuple[int, ...] = (0, 1, 2),
    lo: float = 0.5,
    hi: float = 8.0,
    rel_tol: float = 0.03,
    workers: int = 2,
) -> list[dict[float, CapacityResult]]:
    """Capacity of every system at every target attainment (at a rate it also sustains), systems
    searched in parallel."""
    jobs = [(scenario, s, tuple(targets), seeds, lo, hi, rel_tol) for s in systems]
    return parallel_map(_capacity_job, jobs, workers)


def saturation(
    scenario: Scenario,
    system: SystemConfig,
    *,
    seeds: tuple[int, ...] = (0,),
    lo: float = 0.5,
    hi: float = 8.0,
    rel_tol: float = 0.03,
) -> CapacityResult:
    """The no-SLO saturation rate: the highest offered rate the system keeps up with."""
    # saturation_rate divides by the rate: hand it the sustained share times the rate.
    return saturation_rate(
        lambda rate, seed: rate * sustained_share(scenario.run(system, rate, seed)[1].requests),
        seeds=seeds,
        lo=lo,
        hi=hi,
        rel_tol=rel_tol,
    )


def parallel_map(fn: Callable, jobs: list, workers: int) -> list:
    """`fn` over `jobs` in worker processes (simulations are CPU-bound and independent)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs))
