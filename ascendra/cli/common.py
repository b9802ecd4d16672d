"""Arguments shared by the simulation subcommands."""

from __future__ import annotations

import argparse

from ascendra.runtime.experiment import SLO_PRESETS, Scenario


def add_scenario_args(p: argparse.ArgumentParser, *, num_requests: int) -> None:
    g = p.add_argument_group("scenario")
    g.add_argument(
        "--profile",
        default="a100-llama-3-8b",
        help="performance profile: a shipped name (a100-llama-3-8b, a100-llama-2-7b, "
        "h100-llama-2-7b, ...) or a JSON path (default: %(default)s)",
    )
    g.add_argument(
        "--workload",
        default="conv",
        help="fitted lengths (conv, code, arxiv, cpu-small) or a trace CSV (default: %(default)s)",
    )
    g.add_argument(
        "--slo", default="strict", choices=sorted(SLO_PRESETS), help="SLO setting (default: %(default)s)"
    )
    g.add_argument(
        "--num-requests", type=int, default=num_requests, help="requests per run (default: %(default)s)"
    )
    g.add_argument("--arrival", default="poisson", choices=["poisson", "gamma"])
    g.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of gamma arrivals")
    g.add_argument("--instances", type=int, default=4, help="instances in the cluster (default: %(default)s)")
    g.add_argument(
        "--hp-instances", type=int, default=1, help="ascendra: HP instances (default: %(default)s)"
    )


def scenario_from(args: argparse.Namespace) -> Scenario:
    if args.num_requests < 1:
        raise ValueError("--num-requests must be at least 1")
    sc = Scenario(
        profile=args.profile,
        workload=args.workload,
        slo=args.slo,
        num_requests=args.num_requests,
        arrival=args.arrival,
        cv=args.cv,
    )
    sc.loaded  # load now: a bad profile name fails before any work starts  # noqa: B018
    return sc
