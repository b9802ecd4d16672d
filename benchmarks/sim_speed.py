"""Simulator speed: wall seconds to simulate 10,000 requests of the Azure conv trace on 4 instances.

Replays the trace with its own arrival times when ../shared/data is there (else the fitted conv
lengths at the trace's mean rate), on the 4 x Llama-3-8B A100 profile, for every system.
Vidur reports ~39 s for this run once its models are cached; the target here is under 4 s.

    python benchmarks/sim_speed.py [--num-requests 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ascendra.cluster.system import SystemConfig
from ascendra.metrics import format_table, summarize
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.sim import simulate

TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "splitwise_conv.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-requests", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=None, help="rescale the trace to this mean rate")
    args = ap.parse_args()
    workload = str(TRACE) if TRACE.exists() else "conv"
    sc = Scenario(workload=workload, num_requests=args.num_requests)
    rate = args.rate if args.rate or workload != "conv" else 5.4  # the trace's own mean rate
    rows = []
    for system in (SystemConfig("vllm"), SystemConfig("sarathi", token_budget=512), SystemConfig("ascendra")):
        walls = []
        for _ in range(args.repeats):
            reqs = sc.requests(rate, 0)
            res = simulate(system, sc.perf, reqs, capacity=sc.capacity)
            walls.append(res.wall_seconds)
        s = summarize(res.requests)
        rows.append(
            {
                "system": system.label(),
                "requests": len(reqs),
                "iterations": res.num_iterations,
                "simulated s": res.sim_seconds,
                "wall s (median)": statistics.median(walls),
                "wall s (min)": min(walls),
                "iterations/s": res.num_iterations / statistics.median(walls),
                "attainment": s.attainment,
            }
        )
    timing = "own arrival times" if args.rate is None else f"rescaled to {args.rate} req/s"
    name = workload if workload == "conv" else TRACE.name
    print(f"workload: {name} ({timing}), profile {sc.perf.name}, 4 instances")
    print(format_table(rows, floatfmt=".4g"))


if __name__ == "__main__":
    main()
