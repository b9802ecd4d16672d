"""Scheduler and router overhead per iteration at 256 running and 4,096 waiting requests.

Each policy's `schedule` + `update` on an instance holding 256 decoding requests (contexts
500-3000) and 4,096 waiting prompts, plus for Ascendra the router's offload check of that LP
instance (which projects every waiting request) and one `dispatch`. The state stays put from one
iteration to the next (the running set is at max_num_seqs, so nothing is admitted), so every
iteration measured is the loaded one. Target: the router under 0.3 ms.

    python benchmarks/sched_overhead.py [--iterations 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from ascendra.cluster.router import Role, Router, RouterConfig
from ascendra.core.block_manager import BlockManager
from ascendra.core.perf_model import PerfModel
from ascendra.core.policies import make_scheduler
from ascendra.core.request import SLO, Request
from ascendra.core.scheduler import Scheduler, SchedulerConfig
from ascendra.metrics import format_table
from ascendra.profiles import load_profile


def loaded(policy: str, perf: PerfModel, rng: random.Random, ttft_slo: float = 3600.0) -> Scheduler:
    s = make_scheduler(
        policy, SchedulerConfig(max_num_batched_tokens=8192, max_num_seqs=256), BlockManager(60_000, 16), perf
    )
    for i in range(256):  # decoding: prompt computed, one token out
        r = Request(f"r{i}", 0.0, rng.randint(500, 3000), 100_000, SLO(3600.0, 1.0))
        s.add_request(r)
    t = 0.0
    while any(not r.output_token_ids for r in s.running) or s.waiting:  # prefill them: all decoding
        b = s.schedule(t)
        t += 0.01
        s.update(b, None, t)
    for i in range(4096):  # generous TTFT SLOs: nothing moves (with --ttft-slo 1300, not even the
        # router's cheap bound clears the queue, so every check projects all 4,096)
        s.add_request(Request(f"w{i}", 0.0, rng.randint(10, 4000), 100, SLO(ttft_slo, 1.0)))
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--profile", default="a100-llama-3-8b")
    ap.add_argument("--ttft-slo", type=float, default=3600.0, help="seconds, of every waiting request")
    args = ap.parse_args()
    perf = load_profile(args.profile).perf_model
    rows = []
    for policy in ("vllm", "sarathi", "ascendra-lp"):
        rng = random.Random(0)
        s = loaded(policy, perf, rng, args.ttft_slo)
        hp = loaded("ascendra-hp", perf, rng)
        router = Router([s, hp], [Role.LP, Role.HP], RouterConfig(offload=policy == "ascendra-lp"))
        t_sched, t_upd, t_route, now = [], [], [], 1000.0
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            batch = s.schedule(now)
            t1 = time.perf_counter()
            s.update(batch, None, now + 0.05)
            t2 = time.perf_counter()
            router.offload(0, now + 0.05)
            t3 = time.perf_counter()
            t_sched.append(t1 - t0)
            t_upd.append(t2 - t1)
            t_route.append(t3 - t2)
            now += 0.05
        t_disp = []
        for i in range(50):
            r = Request(f"n{i}", now, 500, 10, SLO(3600.0, 1.0))
            t0 = time.perf_counter()
            router.dispatch(r, now)
            t_disp.append(time.perf_counter() - t0)
        med = statistics.median
        total = med(t_sched) + med(t_upd) + med(t_route)
        rows.append(
            {
                "policy": policy,
                "running": s.num_running,
                "waiting": s.num_waiting,
                "batch seqs": len(batch),
                "schedule ms": 1e3 * med(t_sched),
                "update ms": 1e3 * med(t_upd),
                "router check ms": 1e3 * med(t_route),
                "per iteration ms": 1e3 * total,
                "dispatch ms": 1e3 * med(t_disp),
                "offloads": router.num_offloads,
            }
        )
    print(format_table(rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
