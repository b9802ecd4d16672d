"""`ascendra capacity`: systems side by side, each at its best configuration."""

from __future__ import annotations

import argparse
import os
import textwrap
import time
from dataclasses import dataclass

from tqdm import tqdm

from ascendra.cli.common import add_scenario_args, scenario_from, setting_from
from ascendra.metrics import format_table, write_json
from ascendra.metrics.capacity import SUSTAINED_MIN
from ascendra.metrics.plot import plot_attainment
from ascendra.runtime import recorded
from ascendra.runtime.candidates import CANDIDATES, DEFAULT_COLUMNS, candidate_configs
from ascendra.runtime.compare import SystemResult, compare, rows, summary_rows, tried_rows
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.search import Plan
from ascendra.workload import mean_rate


@dataclass(frozen=True)
class Size:
    """How much of the experiment a run does; a flag given on the command line wins."""

    num_requests: int
    seeds: int
    targets: str
    rel_tol: float
    saturation: bool  # search each column's no-SLO saturation rate


# The full run is what docs/benchmarks.md §1 records (the headline: 673 s on the 2-core VM).
FULL = Size(num_requests=4000, seeds=3, targets="0.99,0.9", rel_tol=0.03, saturation=True)
# --quick is the same experiment made smaller, not another one: the same scenario, candidates,
# requests per run and bisection, on seed 0 alone, at the 99% target alone, with no saturation
# search. A seed's own capacity in the full run is the same search on that seed, so --quick gives
# the full run's seed-0 capacities. Measured on the 2-core VM: the earlier --quick (600 requests,
# bisection to 10%) put Ascendra at 0.84x the best baseline, because 600 requests are too few for
# the backlog gate (capacity = saturation = 15-18 req/s for every column, against 25-35 at 4,000
# requests), so every column was cut at a rate it was still filling its backlog at, not at its SLOs;
# one seed at 4,000 requests and 99% takes 92 s of CPU over the 9 configurations (a run at the
# lowest rate, 1 req/s, 3-5 s; the rest 0.5-2 s); the saturation search of one Ascendra split alone
# took 115 s (overloaded runs at 40-64 req/s), so --quick leaves it out.
QUICK = Size(num_requests=4000, seeds=1, targets="0.99", rel_tol=0.03, saturation=False)
# Below this many requests per run the backlog's first filling looks like growth, so systems are
# judged as falling behind below their saturation (measured: 500-request Poisson runs at 25 req/s
# served 0.81-0.92 against 0.97-1.01 at 2,000, with saturation near 31).
MIN_JUDGED = 2000


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "capacity",
        help="capacity of systems side by side (simulated)",
        description="Highest request rate at which a target share of requests meets both SLOs while "
        "the system keeps up, per system, by bisection over rate with several seeds. Baselines are "
        "tried over their own knobs and compared at their best; --setting S1..S5 reproduces a "
        "documented setting.",
    )
    p.add_argument("--systems", default=",".join(DEFAULT_COLUMNS), help="columns, comma-separated, "
                   f"of {', '.join(CANDIDATES)} (default: %(default)s)")
    p.add_argument("--targets", help=f"attainment targets, comma-separated (default: {FULL.targets}; "
                   f"with --quick, {QUICK.targets})")
    p.add_argument("--seeds", type=int, help=f"how many seeds per rate, 0, 1, ... (default: "
                   f"{FULL.seeds}; with --quick, {QUICK.seeds})")
    p.add_argument("--sweep", action="store_true",
                   help="sweep the baselines wider (Sarathi budget 256-4096; vLLM batched tokens and seqs)")
    p.add_argument("--lo", type=float, help="lowest rate tried, req/s (default: the setting's, else 1)")
    p.add_argument("--hi", type=float, default=16.0,
                   help="first upper rate tried, req/s, doubled while met (default: %(default)s)")
    p.add_argument("--rel-tol", type=float,
                   help=f"bisection stops at this relative width (default: {FULL.rel_tol})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="simulation processes (default: the machine's CPUs, %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="the same experiment on seed 0 alone, at 99%% alone, without the saturation "
                   "search (about a minute on 2 cores); prints the recorded full run's figure beside its own")
    p.add_argument("--plot", metavar="PNG", help="write attainment against rate here (default: no plot)")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON (default: not written)")
    add_scenario_args(p, num_requests=None,
                      default_text=f"{FULL.num_requests}, with --quick too")
    return p


def _plan(args: argparse.Namespace, size: Size) -> Plan:
    targets = tuple(sorted((float(t) for t in args.targets.split(",")), reverse=True))
    if not targets or any(not 0 < t <= 1 for t in targets):
        raise ValueError("--targets must be shares in (0, 1]")
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    lo = args.lo if args.lo is not None else setting_from(args).lo
    return Plan(targets, tuple(range(args.seeds)), lo, args.hi, args.rel_tol, size.saturation)


def run(args: argparse.Namespace) -> int:
    size = QUICK if args.quick else FULL
    for k in ("num_requests", "seeds", "targets", "rel_tol"):
        if getattr(args, k) is None:
            setattr(args, k, getattr(size, k))
    sc, plan = scenario_from(args), _plan(args, size)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    mml = sc.capacity.max_model_len
    configs = {n: candidate_configs(n, instances=args.instances, sweep=args.sweep, max_model_len=mml)
               for n in names}
    for n in [n for n, cs in configs.items() if not cs]:
        print(f"{n}: no configuration of it fits {args.instances} instances; left out")
        del configs[n]
    title = setting_from(args).title if args.setting else None
    if args.quick:
        _say("--quick: the full run's experiment on fewer seeds and targets (below), without the "
             "saturation search; drop --quick for all three seeds, both targets and the saturation rates.")
    _say(f"{f'{args.setting}: {title}. ' if title else ''}{sc.perf.name}, {args.instances} instances; "
         f"{sc.describe()}")
    n_configs = sum(map(len, configs.values()))
    _say(f"{n_configs} configurations, targets {list(plan.targets)}, seeds {list(plan.seeds)}, rates "
         f"from {plan.lo:g} req/s, bisection to {plan.rel_tol:.0%}, {args.workers} processes")
    t0 = time.perf_counter()
    with tqdm(total=plan.searches(n_configs, len(configs)), unit="search", desc="capacity searches",
              dynamic_ncols=True) as bar:
        results = compare(sc, configs, plan, workers=args.workers, tick=bar.update)
    print(format_table(summary_rows(results, plan), markdown=False))
    print("\nevery configuration tried (capacity at each target, req/s; * the column's best):")
    print(format_table(tried_rows(results, plan), floatfmt=".3g", markdown=False))
    print()
    for note in _notes(sc, plan):
        _say(note)
    found = recorded.find(recorded.Experiment.of_run(sc, args.profile, args.instances, plan, configs),
                          plan.seeds)
    if found is not None:
        print()
        for line in recorded.beside(results, plan, found):
            _say(line)
    elif args.quick:
        print()
        _say(f"no recorded full run of this experiment in {recorded.RECORDS} to set beside this one")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.plot:
        _plot(args.plot, results, sc, plan, title or sc.describe(slos=False))
        print(f"plot: {args.plot}")
    if args.json:
        write_json(args.json, {
            "setting": args.setting, "title": title, "scenario": sc.describe(), "profile": args.profile,
            "instances": args.instances, "plan": plan, "quick": bool(args.quick),
            "rows": rows(results, sc, plan), "results": [_record(r) for r in results],
            "wall_seconds": time.perf_counter() - t0,
        })
        print(f"json: {args.json}")
    return 0


def _say(text: str) -> None:
    """Prose, wrapped to the 100 columns the tables fit in."""
    print(textwrap.fill(text, width=100, subsequent_indent="  "), flush=True)


def _notes(sc: Scenario, plan: Plan) -> list[str]:
    notes = [
        f"@T: capacity at attainment target T, the highest rate at which every seed's run keeps up "
        f"(serves >= {SUSTAINED_MIN:.0%} of the offered output tokens: its backlog does not grow) and "
        "the mean share of requests meeting both SLOs over the seeds is >= T; in brackets the range "
        "of the seeds' own. '<x': misses T already at x req/s, the lowest rate tried. vs columns: "
        "the ratio at each target in turn.",
    ]
    if plan.saturation:
        notes.append("saturation: the highest rate every seed keeps up with, SLOs aside; searched over "
                     "the same rates, it is never below the capacity.")
    if sc.arrival == "replay":
        notes.append(f"req/s = F x the trace's mean rate, {mean_rate(sc.trace):.3g} req/s, at speed-up F "
                     "(each capacity's F is in --json).")
    if sc.num_requests < MIN_JUDGED:
        notes.append(
            f"{sc.num_requests} requests per run is too short to judge whether a system keeps up near "
            f"its saturation (its backlog is still filling): capacities here err low. Use at least "
            f"{MIN_JUDGED} requests per run for figures to compare."
        )
    return notes


def _plot(path: str, results: list[SystemResult], sc: Scenario, plan: Plan, title: str) -> None:
    replay = sc.arrival == "replay"
    xlabel = "request rate (req/s)" + (" = speed-up x the trace's mean rate" if replay else "")
    plot_attainment(
        {f"{r.system}: {r.best.label()}": r.curve for r in results}, path, targets=plan.targets,
        capacities={f"{r.system}: {r.best.label()}": r.rate(plan.targets[0]) for r in results},
        title=f"{sc.perf.name}: {title}", xlabel=xlabel,
    )


def _record(r: SystemResult) -> dict:
    return {
        "system": r.system, "best": r.best.label(), "config": r.best,
        "capacity": {t: res.capacity for t, res in r.capacity.items()},
        "below_lo": {t: res.below_lo for t, res in r.capacity.items()},
        "seed_capacity": {t: [f.capacity for f in fs] for t, fs in r.detail.seed_capacity.items()},
        "saturation": r.saturation, "seed_saturation": [f.capacity for f in r.detail.seed_saturation],
        "tried": [{"configuration": label, "capacity": {t: f.capacity for t, f in c.items()}}
                  for label, c in r.tried],
        "curve": r.curve,
    }
