"""`ascendra capacity`: systems side by side, each at its best configuration."""

from __future__ import annotations

import argparse
import os
import time

from ascendra.cli.common import add_scenario_args, scenario_from
from ascendra.cluster.system import SYSTEMS
from ascendra.metrics import format_table, write_json
from ascendra.metrics.plot import plot_attainment
from ascendra.runtime.compare import baseline_best, candidate_configs, compare
from ascendra.runtime.experiment import slo_spec


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "capacity",
        help="capacity of systems side by side (simulated)",
        description="Highest request rate at which a target share of requests meets both "
        "SLOs, per system, by bisection over rate with several seeds. Baselines "
        "are tried over their own knobs and compared at their best.",
    )
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated (default: %(default)s)")
    p.add_argument("--targets", default="0.99,0.9", help="attainment targets (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per rate (default: %(default)s)")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="sweep the baselines wider (Sarathi budget 256-4096; vLLM batched tokens and seqs)",
    )
    p.add_argument("--lo", type=float, default=1.0, help="lowest rate tried (req/s)")
    p.add_argument("--hi", type=float, default=16.0, help="first upper rate tried (doubled while met)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="simulation processes")
    p.add_argument(
        "--plot", metavar="PNG", default="capacity.png", help="attainment vs rate (default: %(default)s)"
    )
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    add_scenario_args(p, num_requests=4000)
    return p


def run(args: argparse.Namespace) -> int:
    sc = scenario_from(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    targets = sorted((float(t) for t in args.targets.split(",")), reverse=True)
    if not targets or any(not 0 < t <= 1 for t in targets):
        raise ValueError("--targets must be shares in (0, 1]")
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    configs = {
        s: candidate_configs(
            s,
            instances=args.instances,
            hp_instances=args.hp_instances,
            sweep=args.sweep,
            max_model_len=sc.capacity.max_model_len,
        )
        for s in systems
    }
    n = sum(len(c) for c in configs.values())
    print(
        f"{sc.perf.name}: {args.instances} instances, workload {args.workload}, {args.num_requests} requests "
        f"per run, {args.seeds} seeds; {slo_spec(args.slo).describe(sc.perf)}"
    )
    print(f"searching {n} configurations at targets {targets} on {args.workers} processes ...", flush=True)
    t0 = time.perf_counter()
    results = compare(
        sc,
        configs,
        targets=targets,
        seeds=tuple(range(args.seeds)),
        lo=args.lo,
        hi=args.hi,
        workers=args.workers,
    )
    base = baseline_best(results)
    rows = [r.row(base) for r in results]
    print(format_table(rows, floatfmt=".3g"))
    print("\nevery configuration tried (capacity at each target):")
    print(
        format_table(
            [
                {"system": r.system, "configuration": label, **{f"@{t:.0%}": c[t] for t in targets}}
                for r in results
                for label, c in r.tried
            ],
            floatfmt=".3g",
        )
    )
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.plot:
        plot_attainment(
            {r.best.label(): r.curve for r in results},
            args.plot,
            targets=targets,
            capacities={r.best.label(): r.capacity[targets[0]] for r in results},
            title=f"{sc.perf.name}, {args.workload}, {args.slo} SLOs",
        )
        print(f"plot: {args.plot}")
    if args.json:
        write_json(
            args.json,
            {
                "scenario": {
                    "profile": args.profile,
                    "workload": args.workload,
                    "slo": args.slo,
                    "instances": args.instances,
                    "hp_instances": args.hp_instances,
                    "num_requests": args.num_requests,
                    "seeds": args.seeds,
                },
                "results": rows,
                "tried": [
                    {"system": r.system, "configuration": lbl, "capacity": c}
                    for r in results
                    for lbl, c in r.tried
                ],
                "curves": {r.best.label(): r.curve for r in results},
            },
        )
        print(f"json: {args.json}")
    return 0
