"""A simulation scenario: hardware profile, workload (lengths and arrivals), SLO rule, run length.

`Scenario.run(system, rate, seed)` builds the workload at that rate and seed and simulates it;
`Scenario.score` reduces a run to what a capacity search needs. The workload is one of:

- fitted lengths (`conv`, `code`, ...; see ascendra.workload.lengths) with Poisson or gamma
  arrivals at `rate`;
- a trace CSV, `arrival="replay"`: a window of the trace with its own timestamps, sped up so its
  whole-trace mean would be `rate` (see ascendra.workload.replay; the seed picks the window);
- a trace CSV with any other arrival: its first rows, rescaled to the mean `rate` (make_workload).

Randomness: one seed feeds independent streams for arrivals, lengths (see workload.builder) and the
SLO rule's draws (a request's class), so the same seed gives the same requests at every rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ascendra.cluster.system import SystemConfig
from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request
from ascendra.metrics.capacity import RunScore
from ascendra.metrics.summary import Summary, summarize
from ascendra.metrics.sustained import served_share
from ascendra.profiles import Profile, load_profile
from ascendra.runtime.sim import SimResult, simulate
from ascendra.runtime.slo_rules import SLORule, slo_rule
from ascendra.workload import Trace, WorkItem, fit_to_model_len, make_workload, read_trace, to_requests
from ascendra.workload.replay import mean_rate, replay

# The SLO rule's stream: after the builder's two (arrivals, lengths) children of SeedSequence(seed).
_SLO_STREAM = 2


@dataclass
class Scenario:
    profile: str = "a100-llama-3-8b"
    workload: str = "conv"  # fitted lengths, or the path of a trace CSV
    slo: str | SLORule = "strict"  # a name in slo_rules.SLO_RULES, or a rule
    num_requests: int = 2000
    arrival: str = "poisson"  # poisson, gamma (with cv), or replay (a trace's own timing)
    cv: float = 1.0

    def __post_init__(self) -> None:
        if self.num_requests < 8:
            raise ValueError("a scenario needs at least 8 requests per run")
        if self.arrival == "replay" and not self.workload.endswith(".csv"):
            raise ValueError(f"arrival 'replay' needs a trace CSV as the workload, got {self.workload!r}")
        self.slo_rule  # an unknown SLO name fails here, not in a worker process  # noqa: B018

    @cached_property
    def loaded(self) -> Profile:
        return load_profile(self.profile)

    @property
    def perf(self) -> PerfModel:
        return self.loaded.perf_model

    @property
    def capacity(self) -> KVCapacity:
        return self.loaded.capacity

    @cached_property
    def slo_rule(self) -> SLORule:
        return slo_rule(self.slo)

    @cached_property
    def trace(self) -> Trace:
        """The whole trace a replay draws its windows from (read once per process)."""
        return read_trace(self.workload)

    def speedup(self, rate: float) -> float | None:
        """A replay's speed-up factor at `rate` (None for other workloads)."""
        return rate / mean_rate(self.trace) if self.arrival == "replay" else None

    def items(self, rate: float, seed: int) -> list[WorkItem]:
        mml = self.capacity.max_model_len
        if self.arrival == "replay":
            window = replay(self.trace, num_requests=self.num_requests, seed=seed, rate=rate)
            return [fit_to_model_len(it, mml) for it in window]
        return make_workload(
            self.workload, rate=rate, num_requests=self.num_requests, seed=seed, arrival=self.arrival,
            cv=self.cv, max_model_len=mml,
        )

    def requests(self, rate: float, seed: int) -> list[Request]:
        items = self.items(rate, seed)
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(_SLO_STREAM + 1)[_SLO_STREAM])
        slos = iter(self.slo_rule.slos([it.prompt_len for it in items], self.perf, rng))
        return to_requests(items, lambda _: next(slos))

    def run(self, system: SystemConfig, rate: float, seed: int, progress=None) -> tuple[Summary, SimResult]:
        result = simulate(system, self.perf, self.requests(rate, seed), progress, seed=seed,
                          capacity=self.capacity)
        return summarize(result.requests), result

    def score(self, system: SystemConfig, rate: float, seed: int) -> RunScore:
        summary, result = self.run(system, rate, seed)
        return RunScore(summary.attainment, served_share(result.requests))

    def describe(self, slos: bool = True) -> str:
        """The workload and (unless `slos` is False) the SLOs in one line."""
        if self.arrival == "replay":
            load = (f"trace {self.workload} replayed with its own timing, {self.num_requests}-request "
                    f"windows (a seed is a window), mean {mean_rate(self.trace):.3g} req/s at speed-up 1")
        else:
            arrivals = "Poisson" if self.arrival == "poisson" else f"{self.arrival} arrivals, CV {self.cv:g}"
            load = f"{self.workload} lengths, {arrivals}, {self.num_requests} requests per run"
        return f"{load}; SLOs {self.slo_rule.describe(self.perf)}" if slos else load
