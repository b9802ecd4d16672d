"""Systems side by side: each column's best configuration (see runtime.candidates), its capacity at
the attainment targets with the spread across seeds, its no-SLO saturation rate, and its ratios
to the better baseline and to LP-only. Used by `ascendra capacity` and benchmarks/capacity.py, so
the command and the recorded figures are the same code.

Three tables: `rows`, every figure (the JSON's); `summary_rows`, one short row per column for a
terminal of 100 columns; `tried_rows`, every configuration tried, the column's best marked."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ascendra.cluster.system import SystemConfig
from ascendra.metrics.capacity import CapacityResult
from ascendra.runtime.candidates import BASELINES, LP_ONLY
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.search import Detail, Plan, Runs, Tick, capacity_job, detail_job, parallel_map


@dataclass
class SystemResult:
    system: str  # the column's name
    best: SystemConfig
    capacity: dict[float, CapacityResult]  # target -> the best configuration's search
    detail: Detail  # its saturation and spread across seeds
    tried: list[tuple[str, dict[float, CapacityResult]]] = field(default_factory=list)  # every config
    curve: list[tuple[float, float]] = field(default_factory=list)  # (rate, mean attainment) run

    @property
    def saturation(self) -> float | None:
        """The no-SLO saturation rate, None when the plan did not search it."""
        return None if self.detail.saturation is None else self.detail.saturation.capacity

    def rate(self, target: float) -> float:
        return self.capacity[target].capacity


def compare(
    scenario: Scenario, configs: dict[str, list[SystemConfig]], plan: Plan, *, workers: int = 2,
    tick: Tick | None = None,
) -> list[SystemResult]:
    """Capacity of every candidate configuration at every target; per column, the configuration
    with the highest capacity at the strictest target (then the next) is its best, and for it the
    per-seed spread (and, if the plan says so, the saturation rate) are searched too. `tick(1)`
    after each search: `plan.searches(configurations, columns with one)` in all."""
    flat = [(name, c) for name, cs in configs.items() for c in cs]
    found = parallel_map(capacity_job, [(scenario, c, plan) for _, c in flat], workers, tick)
    tried: dict[str, list[tuple[SystemConfig, dict[float, CapacityResult], Runs]]] = {n: [] for n in configs}
    for (name, c), (caps, runs) in zip(flat, found, strict=True):
        tried[name].append((c, caps, runs))
    # Ties go to the earlier candidate of its list.
    best = {n: max(ts, key=lambda x: tuple(x[1][t].capacity for t in plan.targets))
            for n, ts in tried.items() if ts}
    names = list(best)
    details = parallel_map(
        detail_job, [(scenario, best[n][0], plan, best[n][2]) for n in names], workers, tick
    )
    return [
        SystemResult(n, best[n][0], best[n][1], detail, [(c.label(), caps) for c, caps, _ in tried[n]],
                     curve(runs, plan.seeds))
        for n, (detail, runs) in zip(names, details, strict=True)
    ]


def curve(runs: Runs, seeds: tuple[int, ...]) -> list[tuple[float, float]]:
    """(rate, mean attainment over the seeds) at every rate run with all of them."""
    rates = sorted({r for r, _ in runs})
    return [
        (r, sum(runs[r, s].attainment for s in seeds) / len(seeds))
        for r in rates
        if all((r, s) in runs for s in seeds)
    ]


def best_of(results: list[SystemResult], names: tuple[str, ...]) -> dict[float, float]:
    """Per target, the highest capacity among the named columns."""
    out: dict[float, float] = {}
    for r in results:
        if r.system in names:
            for t in r.capacity:
                out[t] = max(out.get(t, 0.0), r.rate(t))
    return out


def _rate(res: CapacityResult, lo: float) -> float | str:
    """The rate found, or '<lo' when even the lowest rate tried missed."""
    return f"<{lo:g}" if res.below_lo else res.capacity


def _text(res: CapacityResult, lo: float) -> str:
    rate = _rate(res, lo)
    return rate if isinstance(rate, str) else f"{rate:.3g}"


def _spread(found: list[CapacityResult], lo: float) -> str:
    """One rate per seed, as 'a/b/c'."""
    return "/".join(_text(f, lo) for f in found)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def rows(results: list[SystemResult], scenario: Scenario, plan: Plan) -> list[dict]:
    """The comparison table: one row per column (see the module doc for the columns)."""
    base, lp = best_of(results, BASELINES), best_of(results, (LP_ONLY,))
    out = []
    for r in results:
        row: dict = {"system": r.system, "best configuration": r.best.label()}
        for t in plan.targets:
            row[f"capacity@{t:.0%}"] = _rate(r.capacity[t], plan.lo)
            if scenario.arrival == "replay" and not r.capacity[t].below_lo:
                row[f"capacity@{t:.0%}"] = f"{r.rate(t):.3g} (x{scenario.speedup(r.rate(t)):.3g})"
            row[f"seeds@{t:.0%}"] = _spread(r.detail.seed_capacity[t], plan.lo)
            row[f"vs best baseline@{t:.0%}"] = _ratio(r.rate(t), base.get(t, 0.0))
            if lp and r.system != LP_ONLY:
                row[f"vs LP-only@{t:.0%}"] = _ratio(r.rate(t), lp[t])
        if r.detail.saturation is not None:
            row["saturation (no SLO)"] = _rate(r.detail.saturation, plan.lo)
            row["saturation seeds"] = _spread(r.detail.seed_saturation, plan.lo)
            # Never above 1: a capacity's verdict implies saturation's on the same bracket (metrics.capacity).
            row[f"capacity@{plan.targets[0]:.0%} / saturation"] = _ratio(r.rate(plan.targets[0]),
                                                                         r.saturation)
        out.append(row)
    return out


def _with_range(res: CapacityResult, found: list[CapacityResult], lo: float) -> str:
    """'25 (24.5-25.5)': the rate and, when the seeds' own differ, their range."""
    own = sorted(found, key=lambda f: f.capacity)
    text = _text(res, lo)
    if len({_text(f, lo) for f in own}) > 1:
        text += f" ({_text(own[0], lo)}-{_text(own[-1], lo)})"
    return text


def summary_rows(results: list[SystemResult], plan: Plan) -> list[dict]:
    """One short row per column: its capacity at each target with the seeds' range, its ratios to the
    best baseline and to LP-only (at each target in turn), its saturation; the best configurations
    are in tried_rows, every figure in rows."""
    base, lp = best_of(results, BASELINES), best_of(results, (LP_ONLY,))
    ratios = lambda r, den: " / ".join(f"{_ratio(r.rate(t), den.get(t, 0.0)):.2f}x" for t in plan.targets)
    out = []
    for r in results:
        row: dict = {"system": r.system}
        for t in plan.targets:
            row[f"@{t:.0%} req/s"] = _with_range(r.capacity[t], r.detail.seed_capacity[t], plan.lo)
        row["vs best baseline"] = ratios(r, base) if base else "-"
        row["vs LP-only"] = ratios(r, lp) if lp and r.system != LP_ONLY else "-"
        if r.detail.saturation is not None:
            row["saturation"] = _with_range(r.detail.saturation, r.detail.seed_saturation, plan.lo)
        out.append(row)
    return out


def tried_rows(results: list[SystemResult], plan: Plan) -> list[dict]:
    """Every configuration tried, with its capacity at each target; '*' marks each column's best."""
    return [
        {"system": r.system, "configuration": label + (" *" if label == r.best.label() else ""),
         **{f"@{t:.0%}": _rate(c[t], plan.lo) for t in plan.targets}}
        for r in results
        for label, c in r.tried
    ]
