"""Systems side by side: each system's best configuration, its capacity at the attainment targets,
its no-SLO saturation rate, and its ratio to the better baseline. Used by `ascendra capacity` and
benchmarks/capacity.py, so the command and the recorded figures are the same code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ascendra.cluster.system import SystemConfig
from ascendra.runtime.experiment import Scenario, capacities, parallel_map, saturation

BASELINES = ("vllm", "sarathi")


def candidate_configs(
    system: str, *, instances: int, hp_instances: int, sweep: bool, max_model_len: int
) -> list[SystemConfig]:
    """The configurations tried for a system; its capacity is the best of them. Baselines are
    swept over their own knobs so the comparison is against them at their best."""
    if system == "vllm":
        budgets = [max_model_len, 2 * max_model_len] if sweep else [max_model_len]
        seqs = [64, 128, 256] if sweep else [256]
        return [
            SystemConfig("vllm", instances, token_budget=b, max_num_seqs=s) for b in budgets for s in seqs
        ]
    if system == "sarathi":
        budgets = [256, 384, 512, 768, 1024, 2048, 4096] if sweep else [256, 512, 1024, 2048]
        return [SystemConfig("sarathi", instances, token_budget=b) for b in budgets]
    if system == "ascendra":
        return [SystemConfig("ascendra", instances, num_hp=hp_instances)]
    raise ValueError(f"unknown system {system!r}")


@dataclass
class SystemResult:
    system: str
    best: SystemConfig
    capacity: dict[float, float]  # target -> requests/s
    saturation: float
    tried: list[tuple[str, dict[float, float]]] = field(default_factory=list)  # (label, capacities)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (rate, attainment) of the best

    def row(self, baseline_best: dict[float, float]) -> dict:
        r = {"system": self.system, "best configuration": self.best.label()}
        for t, c in sorted(self.capacity.items(), reverse=True):
            r[f"capacity@{t:.0%}"] = c
            base = baseline_best.get(t, 0.0)
            r[f"vs best baseline@{t:.0%}"] = c / base if base > 0 else float("nan")
        r["saturation (no SLO)"] = self.saturation
        top = max(self.capacity)
        r[f"capacity@{top:.0%} / saturation"] = (
            self.capacity[top] / self.saturation if self.saturation else 0.0
        )
        return r


def compare(
    scenario: Scenario,
    configs: dict[str, list[SystemConfig]],
    *,
    targets: Sequence[float] = (0.99, 0.9),
    seeds: tuple[int, ...] = (0, 1, 2),
    lo: float = 0.5,
    hi: float = 8.0,
    rel_tol: float = 0.03,
    workers: int = 2,
    curve_points: int = 8,
) -> list[SystemResult]:
    """Capacity of every candidate configuration at every target; per system, the configuration with
    the highest capacity at the first (strictest) target is its best, and for it the saturation
    rate and an attainment curve over rates are measured too."""
    flat = [c for cs in configs.values() for c in cs]
    found = capacities(
        scenario, flat, targets=tuple(targets), seeds=seeds, lo=lo, hi=hi, rel_tol=rel_tol, workers=workers
    )
    by_config = {id(c): {t: r.capacity for t, r in f.items()} for c, f in zip(flat, found, strict=True)}
    results = []
    for name, cs in configs.items():
        rows = [(c, by_config[id(c)]) for c in cs]
        best, caps = max(rows, key=lambda x: (x[1][targets[0]], x[1][targets[-1]]))
        results.append(SystemResult(name, best, caps, 0.0, [(c.label(), cap) for c, cap in rows]))
    sats = parallel_map(
        _saturation_job, [(scenario, r.best, seeds[:1], lo, hi * 2, rel_tol) for r in results], workers
    )
    top = max((max(r.capacity.values()) for r in results), default=0.0) or hi
    rates = [top * (0.3 + 1.0 * i / max(1, curve_points - 1)) for i in range(curve_points)]
    curves = parallel_map(_curve_job, [(scenario, r.best, rates, seeds[:1]) for r in results], workers)
    for r, sat, curve in zip(results, sats, curves, strict=True):
        r.saturation, r.curve = sat, curve
    return results


def baseline_best(results: list[SystemResult]) -> dict[float, float]:
    out: dict[float, float] = {}
    for r in results:
        if r.system in BASELINES:
            for t, c in r.capacity.items():
                out[t] = max(out.get(t, 0.0), c)
    return out


def _saturation_job(args: tuple) -> float:
    scenario, system, seeds, lo, hi, rel_tol = args
    return saturation(scenario, system, seeds=seeds, lo=lo, hi=hi, rel_tol=rel_tol).capacity


def _curve_job(args: tuple) -> list[tuple[float, float]]:
    scenario, system, rates, seeds = args
    return [
        (rate, sum(scenario.run(system, rate, s)[0].attainment for s in seeds) / len(seeds)) for rate in rates
    ]
