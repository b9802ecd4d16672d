"""`ascendra simulate`: one system, one rate, a summary table."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from ascendra.cli.common import add_ascendra_modes, add_scenario_args, scenario_from
from ascendra.cluster.router import RouterConfig
from ascendra.cluster.system import SARATHI_BUDGET, SYSTEMS, SystemConfig
from ascendra.core.request import Request
from ascendra.metrics import format_table, to_record, write_csv, write_json
from ascendra.metrics.summary import summarize
from ascendra.runtime.sim import simulate


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "simulate",
        help="simulate one system at one request rate",
        description="Run the real schedulers and router on the discrete-event simulator.",
    )
    p.add_argument("--system", default="ascendra", choices=SYSTEMS,
                   help="ascendra: LP and HP pools with offloading; vllm or sarathi: every instance runs "
                   "that policy behind a load balancer (default: %(default)s)")
    p.add_argument("--rate", type=float, default=20.0, help="arrivals per second (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the arrivals, lengths and SLO draws (default: %(default)s)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="vllm: max_num_batched_tokens; sarathi: token budget; ascendra: cap (default: "
                   f"vllm the context, sarathi {SARATHI_BUDGET}, ascendra 1024)")
    p.add_argument("--max-num-seqs", type=int, default=256,
                   help="most requests an instance runs at once (default: %(default)s)")
    p.add_argument("--offload-margin", type=float, default=RouterConfig.offload_margin,
                   help="ascendra: offload a waiting request whose projected first token comes later "
                   "than its deadline minus this share of its TTFT SLO (default: %(default)s)")
    p.add_argument("--hp-dispatch-weight", type=float, default=RouterConfig.hp_dispatch_weight,
                   help="ascendra: a new request's projected wait on an HP instance counts this many "
                   "times, which keeps the HP pool light for offloads (default: %(default)s)")
    p.add_argument("--hp-instances", type=int, default=1,
                   help="ascendra: HP instances (default: %(default)s)")
    add_ascendra_modes(p)
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON (default: not written)")
    p.add_argument("--csv", metavar="PATH", help="write one row per request as CSV (default: not written)")
    add_scenario_args(p, num_requests=5000)
    return p


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise ValueError("--rate must be positive")
    sc = scenario_from(args)
    system = SystemConfig(
        args.system,
        args.instances,
        num_hp=args.hp_instances if args.system == "ascendra" else 0,
        token_budget=args.token_budget,
        max_num_seqs=args.max_num_seqs,
        offload_margin=args.offload_margin,
        hp_dispatch_weight=args.hp_dispatch_weight,
        adaptive_roles=args.adaptive_roles and args.system == "ascendra",
        kv_link=args.migration if args.system == "ascendra" else None,
    )
    requests = sc.requests(args.rate, args.seed)
    with tqdm(total=len(requests), desc=system.label(), unit="req") as bar:
        result = simulate(system, sc.perf, requests, progress=bar.update, seed=args.seed,
                          capacity=sc.capacity)
    s = summarize(result.requests)
    print(sc.describe())
    row = {
        "system": system.label(),
        "rate": args.rate,
        **s.as_dict(),
        "offloads": result.num_offloads,
        "role_changes": result.num_role_changes,
        "migrations": result.num_migrations,
        "preemptions": result.num_preemptions,
        "iterations": result.num_iterations,
        "wall_s": result.wall_seconds,
    }
    keys = [
        "attainment",
        "ttft_attainment",
        "tbt_attainment",
        "goodput",
        "request_throughput",
        "token_throughput",
        "ttft_p50",
        "ttft_p99",
        "tbt_p50",
        "tbt_p99",
        "offloads",
        "migrations",
        "role_changes",
        "preemptions",
        "iterations",
        "wall_s",
    ]
    print(format_table([{"metric": k, "value": row[k]} for k in keys]))
    if args.json:
        write_json(args.json, {"profile": args.profile, "scenario": sc.describe(), **row})
    if args.csv:
        write_csv(
            args.csv,
            [_csv_row(r) for r in result.requests],
        )
    return 0


def _csv_row(req: Request) -> dict:
    """One request's outcome as plain columns (its token times summarised, not listed)."""
    rec = to_record(req)
    return {
        "request_id": req.request_id,
        "arrival_time": rec.arrival_time,
        "prompt_len": rec.prompt_len,
        "output_tokens": len(rec.token_times),
        "ttft": rec.ttft,
        "tbt_p99": rec.tbt_p99,
        "ttft_slo": rec.ttft_slo,
        "tbt_slo": rec.tbt_slo,
        "meets_ttft": rec.meets_ttft,
        "meets_tbt": rec.meets_tbt,
        "offloaded": req.offloaded,
    }
