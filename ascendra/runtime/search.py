"""Capacity searches of one system configuration, memoised, and run side by side in processes.

Two jobs per configuration, sharing runs through a memo keyed by (rate, seed):
- `capacity_job`: its capacity at every target (all configurations of every column);
- `detail_job`: for a column's best configuration, the spread across seeds (each seed's own
  capacity at every target) and, when the plan asks for it, its saturation rate (all seeds', and
  each seed's own), over the same bracket as the capacity search so that no capacity exceeds its
  saturation (see metrics.capacity), reusing the first job's runs.

Each finished search calls `tick(1)`, in whichever process runs it, for a progress bar. It counts
searches, not simulations: how many simulations a bisection takes depends on what it finds, how
many searches a comparison runs does not (`Plan.searches`), so the bar's total is right from the
start.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import Manager

from ascendra.cluster.system import SystemConfig
from ascendra.metrics.capacity import CapacityResult, RunScore, find_capacity, find_saturation
from ascendra.runtime.experiment import Scenario

Tick = Callable[[int], None]
Runs = dict[tuple[float, int], RunScore]


@dataclass(frozen=True)
class Plan:
    """How every configuration is searched."""

    targets: tuple[float, ...]  # attainment targets, strictest first
    seeds: tuple[int, ...]
    lo: float
    hi: float
    rel_tol: float = 0.03
    saturation: bool = True  # also search each column's no-SLO saturation rate (the costliest runs)

    def bracket(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "rel_tol": self.rel_tol}

    def searches(self, configs: int, columns: int) -> int:
        """How many searches a comparison of `configs` configurations in `columns` columns runs:
        capacity_job's per configuration, then detail_job's per column (as those two count them)."""
        per_column = len(self.targets) * len(self.seeds) + (1 + len(self.seeds) if self.saturation else 0)
        return configs * len(self.targets) + columns * per_column


@dataclass
class Probe:
    """One configuration's runs, memoised by (rate, seed)."""

    scenario: Scenario
    system: SystemConfig
    runs: Runs = field(default_factory=dict)

    def __call__(self, rate: float, seed: int) -> RunScore:
        if (rate, seed) not in self.runs:
            self.runs[rate, seed] = self.scenario.score(self.system, rate, seed)
        return self.runs[rate, seed]


@dataclass
class Detail:
    seed_capacity: dict[float, list[CapacityResult]]  # target -> each seed's own capacity search
    saturation: CapacityResult | None = None  # every seed keeps up; None when not searched
    seed_saturation: list[CapacityResult] = field(default_factory=list)  # each seed's own saturation


def _ticked(tick: Tick | None, result: CapacityResult) -> CapacityResult:
    if tick is not None:
        tick(1)
    return result


def capacity_job(args: tuple, tick: Tick | None = None) -> tuple[dict[float, CapacityResult], Runs]:
    scenario, system, plan = args
    probe = Probe(scenario, system)
    found = {
        t: _ticked(tick, find_capacity(probe, target=t, seeds=plan.seeds, **plan.bracket()))
        for t in plan.targets
    }
    return found, probe.runs


def detail_job(args: tuple, tick: Tick | None = None) -> tuple[Detail, Runs]:
    scenario, system, plan, runs = args
    probe = Probe(scenario, system, dict(runs))
    per_seed = {
        t: [_ticked(tick, find_capacity(probe, target=t, seeds=(s,), **plan.bracket())) for s in plan.seeds]
        for t in plan.targets
    }
    detail = Detail(per_seed)
    if plan.saturation:
        detail.saturation = _ticked(tick, find_saturation(probe, seeds=plan.seeds, **plan.bracket()))
        detail.seed_saturation = [_ticked(tick, find_saturation(probe, seeds=(s,), **plan.bracket()))
                                  for s in plan.seeds]
    return detail, probe.runs


def parallel_map(fn: Callable, jobs: list, workers: int, tick: Tick | None = None) -> list:
    """`fn(job, tick)` over `jobs`, in `workers` processes when there are several jobs (simulations
    are CPU-bound and independent); `tick` is called here as the workers report their runs."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j, tick) for j in jobs]
    with Manager() as manager, ProcessPoolExecutor(max_workers=workers) as pool:
        ticks = manager.Queue()
        futures = [pool.submit(fn, j, ticks.put) for j in jobs]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.25)
            _drain(ticks, tick)
        _drain(ticks, tick)
        return [f.result() for f in futures]


def _drain(ticks, tick: Tick | None) -> None:
    while True:
        try:
            n = ticks.get_nowait()
        except queue.Empty:
            return
        if tick is not None:
            tick(n)
