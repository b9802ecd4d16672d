"""Capacity searches of one system configuration, memoised, and run side by side in processes.

Two jobs per configuration, sharing runs through a memo keyed by (rate, seed):
- `capacity_job`: its capacity at every target (all configurations of every column);
- `detail_job`: for a column's best configuration, its saturation rate and the spread across seeds
  (each seed's own capacity at every target and its own saturation rate), over the same bracket
  as the capacity search so that neither exceeds its saturation (see metrics.capacity), reusing
  the first job's runs.

Each simulation calls `tick(1)`, in whichever process runs it, for a progress bar.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import Manager
from typing import Protocol

from ascendra.cluster.system import SystemConfig
from ascendra.metrics.capacity import CapacityResult, RunScore, find_capacity, find_saturation
from ascendra.runtime.experiment import Scenario

Tick = Callable[[int], None]
Runs = dict[tuple[float, int], RunScore]


class Progress(Protocol):
    """Where a comparison reports its simulations (a progress bar)."""

    def expect(self, runs: int) -> None:
        """About this many more simulations are coming."""
        ...

    def update(self, runs: int) -> None:
        """This many simulations finished."""
        ...


@dataclass(frozen=True)
class Plan:
    """How every configuration is searched."""

    targets: tuple[float, ...]  # attainment targets, strictest first
    seeds: tuple[int, ...]
    lo: float
    hi: float
    rel_tol: float = 0.03

    def bracket(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "rel_tol": self.rel_tol}

    # Rough counts of simulations per job, for a progress estimate: a bisection to rel_tol
    # evaluates about log2(1 / rel_tol) + 4 rates (lo, hi, a doubling, the halvings), the targets'
    # searches share about half of theirs, and a detail job's searches mostly retrace runs already
    # made (measured on S2: 435 runs against 493 estimated).
    def capacity_runs(self) -> int:
        rates = math.log2(1.0 / self.rel_tol) + 4
        return round(rates * (1 + 0.5 * (len(self.targets) - 1)) * len(self.seeds))

    def detail_runs(self) -> int:
        rates = math.log2(1.0 / self.rel_tol) + 4
        return round((0.5 * rates + 2 * (len(self.targets) + 1)) * len(self.seeds))


@dataclass
class Probe:
    """One configuration's runs, memoised by (rate, seed)."""

    scenario: Scenario
    system: SystemConfig
    runs: Runs = field(default_factory=dict)
    tick: Tick | None = None

    def __call__(self, rate: float, seed: int) -> RunScore:
        if (rate, seed) not in self.runs:
            self.runs[rate, seed] = self.scenario.score(self.system, rate, seed)
            if self.tick is not None:
                self.tick(1)
        return self.runs[rate, seed]


@dataclass
class Detail:
    saturation: CapacityResult  # every seed keeps up
    seed_capacity: dict[float, list[CapacityResult]]  # target -> each seed's own capacity search
    seed_saturation: list[CapacityResult]  # each seed's own saturation search


def capacity_job(args: tuple, tick: Tick | None = None) -> tuple[dict[float, CapacityResult], Runs]:
    scenario, system, plan = args
    probe = Probe(scenario, system, tick=tick)
    found = {
        t: find_capacity(probe, target=t, seeds=plan.seeds, **plan.bracket()) for t in plan.targets
    }
    return found, probe.runs


def detail_job(args: tuple, tick: Tick | None = None) -> tuple[Detail, Runs]:
    scenario, system, plan, runs = args
    probe = Probe(scenario, system, dict(runs), tick)
    sat = find_saturation(probe, seeds=plan.seeds, **plan.bracket())
    per_seed = {
        t: [find_capacity(probe, target=t, seeds=(s,), **plan.bracket()) for s in plan.seeds]
        for t in plan.targets
    }
    seed_sat = [find_saturation(probe, seeds=(s,), **plan.bracket()) for s in plan.seeds]
    return Detail(sat, per_seed, seed_sat), probe.runs


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
