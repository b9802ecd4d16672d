"""The sustained gate, old and new, on bursty (S3: gamma CV 3) and Poisson arrivals.

A capacity counts only at a rate the system keeps up with. The old gate compared the output tokens
produced in the middle half of the arrival window with the run's mean offered rate over that
window; the new one (ascendra.metrics.sustained) asks whether the output-token backlog grows over
the arrival window. Both are computed from the same runs here: per rate, each gate's served share
per seed; then each gate's saturation rate and capacities with the same search.

    python benchmarks/sustained_gate.py              # conv strict, Poisson and S3; 3 seeds; ~5 min
    python benchmarks/sustained_gate.py --num-requests 2000 --seeds 2
"""

from __future__ import annotations

import argparse
import time

from ascendra.cluster.system import SystemConfig
from ascendra.core.request import Request
from ascendra.metrics import RunScore, find_capacity, find_saturation, format_table
from ascendra.metrics.sustained import served_share
from ascendra.runtime.experiment import Scenario
from ascendra.runtime.search import parallel_map
from ascendra.runtime.settings import setting

SYSTEMS = {"sarathi(384)": SystemConfig("sarathi", token_budget=384),
           "lp-only": SystemConfig("ascendra", num_hp=0)}
RATES = (5.0, 10.0, 20.0, 25.0, 30.0, 35.0, 40.0)


def old_gate(requests: list[Request]) -> float:
    """The gate before this change, kept here only to compare: output tokens produced during the
    middle half of the arrival window over the run's mean offered token rate times that window."""
    times = sorted(r.arrival_time for r in requests)
    span = times[-1] - times[0]
    t0, t1 = times[0] + 0.25 * span, times[0] + 0.75 * span
    offered = sum(r.max_tokens for r in requests) * (t1 - t0) / span
    return sum(1 for r in requests for t in r.token_times if t0 <= t < t1) / offered


def job(args: tuple, tick=None) -> dict:
    name, sc, system_name, seeds = args
    runs: dict[tuple[float, int], tuple[float, float, float]] = {}

    def run(rate: float, seed: int) -> tuple[float, float, float]:
        if (rate, seed) not in runs:
            summary, res = sc.run(SYSTEMS[system_name], rate, seed)
            runs[rate, seed] = (summary.attainment, old_gate(res.requests), served_share(res.requests))
        return runs[rate, seed]

    gates = {"old": lambda r, s: RunScore(run(r, s)[0], run(r, s)[1]),
             "new": lambda r, s: RunScore(run(r, s)[0], run(r, s)[2])}
    found = {}
    b = {"seeds": seeds, "lo": 0.25, "hi": 16.0, "rel_tol": 0.03}
    for gate, run_at in gates.items():
        caps = {f"capacity@{t:.0%}": find_capacity(run_at, target=t, **b).capacity for t in (0.99, 0.9)}
        found[gate] = {"saturation": find_saturation(run_at, **b).capacity, **caps}
    per_rate = [{"rate": rate, **{f"{g} gate (seeds)": "/".join(f"{run(rate, s)[i]:.3f}" for s in seeds)
                                  for g, i in (("old", 1), ("new", 2))},
                 "attainment": sum(run(rate, s)[0] for s in seeds) / len(seeds)} for rate in RATES]
    return {"scenario": name, "system": system_name, "found": found, "per_rate": per_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-requests", type=int, default=4000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    scenarios = {"Poisson (conv, strict)": Scenario(num_requests=args.num_requests),
                 "S3 (gamma CV 3)": setting("S3").scenario(num_requests=args.num_requests)}
    seeds = tuple(range(args.seeds))
    jobs = [(n, sc, s, seeds) for n, sc in scenarios.items() for s in SYSTEMS]
    out = parallel_map(job, jobs, args.workers)
    for r in out:
        print(f"\n## {r['scenario']}, {r['system']}: served share per seed (>= 0.95 keeps up)\n")
        print(format_table(r["per_rate"], floatfmt=".3g"))
    rows = [{"scenario": r["scenario"], "system": r["system"], "gate": g, **f} for r in out
            for g, f in r["found"].items()]
    print("\n## Saturation and capacity (req/s) under each gate, same runs\n")
    print(format_table(rows, floatfmt=".3g"))
    print(f"\n{time.perf_counter() - t0:.0f} s, {args.num_requests} requests per run, seeds {list(seeds)}")


if __name__ == "__main__":
    main()
