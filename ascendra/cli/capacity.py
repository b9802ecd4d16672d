"""`ascendra capacity`: systems side by side, each at its best configuration."""

from __future__ import annotations

import argparse
import os
import time

from tqdm import tqdm

from ascendra.cli.common import add_scenario_args, scenario_from, setting_from
from ascendra.metrics import format_table, write_json
from ascendra.metrics.capacity import SUSTAINED_MIN
from ascendra.metrics.plot import plot_attainment
from ascendra.runtime.candidates import CANDIDATES, candidate_configs
from ascendra.runtime.compare import SystemResult, compare, rows, tried_rows
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.search import Plan
from ascendra.workload import mean_rate

# The run's size, and --quick's: a smoke run that finishes in under a minute on a 2-core machine.
# A flag given on the command line wins over either.
FULL = {"num_requests": 4000, "seeds": 3, "rel_tol": 0.03}
QUICK = {"num_requests": 600, "seeds": 1, "rel_tol": 0.1}
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
    p.add_argument("--systems", default=",".join(CANDIDATES), help="columns, comma-separated "
                   "(default: %(default)s)")
    p.add_argument("--targets", default="0.99,0.9", help="attainment targets (default: %(default)s)")
    p.add_argument("--seeds", type=int, help=f"seeds per rate (default: {FULL['seeds']})")
    p.add_argument("--sweep", action="store_true",
                   help="sweep the baselines wider (Sarathi budget 256-4096; vLLM batched tokens and seqs)")
    p.add_argument("--lo", type=float, help="lowest rate tried, req/s (default: the setting's, else 1)")
    p.add_argument("--hi", type=float, default=16.0, help="first upper rate tried (doubled while met)")
    p.add_argument("--rel-tol", type=float,
                   help=f"bisection stops at this relative width (default: {FULL['rel_tol']})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="simulation processes (default: the machine's CPUs, %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run, under a minute: {QUICK['num_requests']} requests per run, 1 seed, "
                   f"{QUICK['rel_tol']:.0%}% bisection; rough figures, not for comparison")
    p.add_argument("--plot", metavar="PNG", default="capacity.png", help="attainment vs rate (default: "
                   "%(default)s; '' for none)")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    add_scenario_args(p, num_requests=None,
                      default_text=f"{FULL['num_requests']}; with --quick, {QUICK['num_requests']}")
    return p


class _Bar:
    """A tqdm bar over simulations whose total grows as the comparison announces more."""

    def __init__(self) -> None:
        self.bar = tqdm(total=0, unit="run", desc="simulations", dynamic_ncols=True)

    def expect(self, runs: int) -> None:
        self.bar.total = self.bar.n + runs
        self.bar.refresh()

    def close(self) -> None:
        self.bar.total = self.bar.n  # the estimate is done with: show what ran
        self.bar.refresh()
        self.bar.close()

    def update(self, runs: int) -> None:
        if self.bar.n + runs > self.bar.total:
            self.bar.total = self.bar.n + runs
        self.bar.update(runs)


def _plan(args: argparse.Namespace) -> Plan:
    targets = tuple(sorted((float(t) for t in args.targets.split(",")), reverse=True))
    if not targets or any(not 0 < t <= 1 for t in targets):
        raise ValueError("--targets must be shares in (0, 1]")
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    lo = args.lo if args.lo is not None else setting_from(args).lo
    return Plan(targets, tuple(range(args.seeds)), lo, args.hi, args.rel_tol)


def run(args: argparse.Namespace) -> int:
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    sc, plan = scenario_from(args), _plan(args)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    mml = sc.capacity.max_model_len
    configs = {n: candidate_configs(n, instances=args.instances, sweep=args.sweep, max_model_len=mml)
               for n in names}
    for n in [n for n, cs in configs.items() if not cs]:
        print(f"{n}: no configuration of it fits {args.instances} instances; left out")
        del configs[n]
    title = setting_from(args).title if args.setting else "custom scenario"
    if args.quick:
        print("SMOKE RUN (--quick): short runs, one seed, coarse bisection. The figures are rough and not "
              "for comparison; drop --quick for the real ones.")
    print(f"{args.setting or 'custom'}: {title}. {sc.perf.name}, {args.instances} instances; {sc.describe()}")
    print(f"{sum(map(len, configs.values()))} configurations, targets {list(plan.targets)}, seeds "
          f"{list(plan.seeds)}, rates from {plan.lo:g} req/s, bisection to {plan.rel_tol:.0%}, "
          f"{args.workers} processes", flush=True)
    t0 = time.perf_counter()
    bar = _Bar()
    try:
        results = compare(sc, configs, plan, workers=args.workers, progress=bar)
    finally:
        bar.close()
    table = rows(results, sc, plan)
    print(format_table(table, floatfmt=".3g"))
    print("\nevery configuration tried (capacity at each target, req/s):")
    print(format_table(tried_rows(results, plan), floatfmt=".3g"))
    print(_notes(sc, plan))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.plot:
        _plot(args.plot, results, sc, plan, title)
        print(f"plot: {args.plot}")
    if args.json:
        write_json(args.json, {
            "setting": args.setting, "title": title, "scenario": sc.describe(), "profile": args.profile,
            "instances": args.instances, "plan": plan, "smoke": bool(args.quick), "rows": table,
            "results": [_record(r) for r in results], "wall_seconds": time.perf_counter() - t0,
        })
        print(f"json: {args.json}")
    return 0


def _notes(sc: Scenario, plan: Plan) -> str:
    notes = [
        f"\ncapacity@T: the highest rate at which every seed's run keeps up (serves >= {SUSTAINED_MIN:.0%} "
        "of the offered output tokens: its backlog does not grow) and the mean share of requests "
        "meeting both SLOs over the seeds is >= T. '<x': misses T already at x req/s, the lowest "
        "rate tried. seeds@T: each seed's own capacity. saturation: the highest rate every seed "
        "keeps up with, SLOs aside; searched over the same rates, it is never below the capacity (nor a "
        "seed's own saturation below that seed's capacity).",
    ]
    if sc.arrival == "replay":
        rate = mean_rate(sc.trace)
        notes.append(f"(xF): the replay's speed-up F; req/s = F x the trace's mean rate, {rate:.3g} req/s.")
    if sc.num_requests < MIN_JUDGED:
        notes.append(
            f"{sc.num_requests} requests per run is too short to judge whether a system keeps up near "
            f"its saturation (its backlog is still filling): capacities here err low. Use at least "
            f"{MIN_JUDGED} requests per run for figures to compare."
        )
    return "\n".join(notes)


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
