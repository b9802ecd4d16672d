"""The capacity runs recorded under docs/capacity (benchmarks/capacity.py writes them through
`ascendra capacity --json`), found by the experiment they ran, so that a smaller run of the same
experiment (`--quick`: one seed, one target) prints the recorded full-run figure beside its own.

Two runs are the same experiment when their hardware profile, instances, scenario (workload, SLOs,
requests per run), candidates (every configuration of every column) and bisection (lo, hi,
rel_tol) are the same; seeds, targets and the saturation search may differ. A seed's own capacity
is then the same search in both (search.detail_job), so on a seed the full run ran, the smaller
run's capacities are the recorded ones of that seed.

A clone has docs/; an installed package does not, and then nothing is found.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ascendra.cluster.system import SystemConfig
from ascendra.runtime.candidates import BASELINES
from ascendra.runtime.compare import SystemResult, best_of
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.search import Plan

RECORDS = Path(__file__).resolve().parents[2] / "docs" / "capacity"


@dataclass(frozen=True)
class Experiment:
    profile: str
    instances: int
    scenario: str  # Scenario.describe()
    bracket: tuple[float, float, float]  # lo, hi, rel_tol
    configurations: tuple[tuple[str, tuple[str, ...]], ...]  # (column, its configurations' labels)

    @classmethod
    def of_run(cls, sc: Scenario, profile: str, instances: int, plan: Plan,
               configs: dict[str, list[SystemConfig]]) -> Experiment:
        return cls(profile, instances, sc.describe(), (plan.lo, plan.hi, plan.rel_tol),
                   tuple((n, tuple(c.label() for c in cs)) for n, cs in configs.items()))

    @classmethod
    def of_record(cls, d: dict) -> Experiment:
        p = d["plan"]
        return cls(d["profile"], d["instances"], d["scenario"], (p["lo"], p["hi"], p["rel_tol"]),
                   tuple((r["system"], tuple(t["configuration"] for t in r["tried"])) for r in d["results"]))


@dataclass(frozen=True)
class Recorded:
    path: Path
    seeds: tuple[int, ...]
    capacity: dict[str, dict[float, float]]  # column -> target -> capacity over the seeds
    seed_capacity: dict[str, dict[float, list[float]]]  # column -> target -> each seed's own

    def vs_best_baseline(self, column: str, target: float) -> tuple[float, list[float]]:
        """The column's capacity over the best baseline's, over the seeds and seed by seed."""
        base = [c for c in BASELINES if c in self.capacity]
        overall = _ratio(self.capacity[column][target], max(self.capacity[b][target] for b in base))
        per_seed = [_ratio(own, max(self.seed_capacity[b][target][i] for b in base))
                    for i, own in enumerate(self.seed_capacity[column][target])]
        return overall, per_seed


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def find(experiment: Experiment, seeds: tuple[int, ...], folder: Path = RECORDS) -> Recorded | None:
    """The recorded run of this experiment over these seeds and more, if there is one."""
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            d = json.loads(path.read_text())
            same = Experiment.of_record(d) == experiment and set(seeds) <= set(d["plan"]["seeds"])
        except (ValueError, KeyError, TypeError):
            continue  # not a capacity record (summary.json, fidelity runs)
        if same:
            return Recorded(
                path, tuple(d["plan"]["seeds"]),
                {r["system"]: {float(t): c for t, c in r["capacity"].items()} for r in d["results"]},
                {r["system"]: {float(t): cs for t, cs in r["seed_capacity"].items()} for r in d["results"]},
            )
    return None


def beside(results: list[SystemResult], plan: Plan, rec: Recorded) -> list[str]:
    """For each column that is not a baseline, its ratio to the best baseline in this run beside the
    recorded run's, at every target both have."""
    base = best_of(results, BASELINES)
    root = RECORDS.parents[1]
    where = rec.path.relative_to(root) if rec.path.is_relative_to(root) else rec.path
    lines = []
    for r in results:
        if r.system in BASELINES or r.system not in rec.capacity:
            continue
        for t in plan.targets:
            if t not in rec.capacity[r.system] or not base.get(t):
                continue
            overall, per_seed = rec.vs_best_baseline(r.system, t)
            lines.append(
                f"{r.system} / best baseline @{t:.0%}: {r.rate(t) / base[t]:.2f}x in this run "
                f"({_seeds(plan.seeds)}); the recorded full run ({where}, {_seeds(rec.seeds)}): "
                f"{overall:.2f}x, seed by seed {' / '.join(f'{x:.2f}x' for x in per_seed)}"
            )
    return lines


def _seeds(seeds: tuple[int, ...]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
