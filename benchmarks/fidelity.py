"""Does the simulator predict the live system? The same requests, live and simulated, side by side.

1. The CPU profile the simulator (and the live router) use: `--profile` or a fresh `ascendra profile`.
2. One workload: Poisson arrivals, lengths from the `cpu-small` distribution, a fixed seed.
3. Live: for each system, `ascendra serve` on loopback (2 instances; Ascendra 1 LP + 1 HP), the
   requests replayed open-loop from the client with exact prompt lengths (token ids) and output
   lengths (ignore_eos), every token's time recorded.
4. Simulated: exactly the same requests (arrivals, lengths, SLOs, instances) on the simulator.
5. Per system, live beside simulated: TTFT and TBT P50/P90/P99, attainment of each SLO and both,
   offloads and preemptions, with relative errors; a PNG of the TTFT CDFs.

    python benchmarks/fidelity.py [--rate 1.5] [--num-requests 120] [--profile PATH] [--out out/fidelity]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

from ascendra.bench.client import ClientOptions
from ascendra.bench.prompts import PromptBuilder
from ascendra.bench.report import to_record
from ascendra.bench.runner import RunOptions, build_requests, run_requests
from ascendra.cluster.system import SystemConfig
from ascendra.core.perf_model import PerfModel, isolated_decode_time
from ascendra.core.request import SLO
from ascendra.metrics import format_table, summarize, write_json
from ascendra.metrics.plot import plot_cdf
from ascendra.runtime.sim import simulate
from ascendra.workload import make_workload, to_requests

SYSTEMS = ("vllm", "sarathi", "ascendra")
NUM_BLOCKS = 512  # KV blocks per instance, live and simulated alike


def ascendra_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ascendra.cli import main; raise SystemExit(main())", *args]


def profile(path: Path) -> PerfModel:
    if not path.exists():
        subprocess.run(ascendra_cmd("profile", "--threads", "1", "--out", str(path)), check=True)
    return PerfModel.load(path)


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus counter over its labels."""
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def run_live(system: str, items, slo: SLO, profile_path: Path, port: int, budget: int) -> tuple[list, dict]:
    args = [
        "serve",
        "--port",
        str(port),
        "--system",
        system,
        "--instances",
        "2",
        "--profile",
        str(profile_path),
        "--num-blocks",
        str(NUM_BLOCKS),
        "--ttft-slo-ms",
        str(1e3 * slo.ttft),
        "--tbt-slo-ms",
        str(1e3 * slo.tbt),
        "--threads-per-instance",
        "1",
    ]
    if system == "ascendra":
        args += ["--hp-instances", "1"]
    if system == "sarathi":  # vllm runs unchunked (budget = context); ascendra sizes its own
        args += ["--token-budget", str(budget)]
    proc = subprocess.Popen(ascendra_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ascendra serve exited: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("ascendra serve did not become healthy in 300 s")
            time.sleep(1)
        model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]
        reqs = build_requests(items, PromptBuilder.token_ids(), seed=0, chat=False)
        opts = ClientOptions(base_url=f"{base}/v1", model=model, timeout=600.0)
        results, _ = asyncio.run(run_requests(reqs, opts, RunOptions(progress=False, max_duration=600.0)))
        text = httpx.get(f"{base}/metrics").text
        counters = {
            "offloads": metric(text, "ascendra_offloads_total"),
            "preemptions": metric(text, "ascendra_preemptions_total"),
        }
        return [to_record(r, slo.ttft, slo.tbt) for r in results], counters
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rel(sim: float, live: float) -> float:
    return (sim - live) / live if live else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1.5)
    ap.add_argument("--num-requests", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", default="cpu-small")
    ap.add_argument("--profile", default=None, help="a CPU profile JSON (default: profile now)")
    ap.add_argument("--token-budget", type=int, default=256)
    ap.add_argument("--ttft-slo", type=float, default=None, help="seconds (default: 10x isolated decode)")
    ap.add_argument("--tbt-slo", type=float, default=None, help="seconds (default: 5x isolated decode)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default="out/fidelity")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prof_path = Path(args.profile) if args.profile else out / "cpu-profile.json"
    perf = replace(profile(prof_path), num_kv_blocks=NUM_BLOCKS)

    dec = isolated_decode_time(perf, 256)
    slo = SLO(args.ttft_slo or 10 * dec, args.tbt_slo or 5 * dec)
    items = make_workload(
        args.workload,
        rate=args.rate,
        num_requests=args.num_requests,
        seed=args.seed,
        max_model_len=perf.max_model_len,
    )
    rows, cdfs, figures = [], {}, {}
    for system in [s for s in args.systems.split(",") if s]:
        live, counters = run_live(system, items, slo, prof_path, args.port, args.token_budget)
        budget = args.token_budget if system == "sarathi" else None
        cfg = SystemConfig(system, 2, num_hp=1 if system == "ascendra" else 0, token_budget=budget)
        res = simulate(cfg, perf, to_requests(items, lambda it: slo))
        sl, ss = summarize(live), summarize(res.requests)
        cdfs[f"{system} live"] = [r.ttft for r in live if r.ttft is not None]
        cdfs[f"{system} sim"] = [r.ttft for r in res.requests if r.ttft is not None]
        sim_counts = {"offloads": res.num_offloads, "preemptions": res.num_preemptions}
        for name in (
            "ttft_p50",
            "ttft_p90",
            "ttft_p99",
            "tbt_p50",
            "tbt_p90",
            "tbt_p99",
            "ttft_attainment",
            "tbt_attainment",
            "attainment",
        ):
            lv, sv = getattr(sl, name), getattr(ss, name)
            err = sv - lv if "attainment" in name else rel(sv, lv)
            rows.append(
                {
                    "system": system,
                    "metric": name,
                    "live": lv,
                    "simulated": sv,
                    "error": f"{100 * err:+.1f} {'pts' if 'attainment' in name else '%'}",
                }
            )
        for name in ("offloads", "preemptions"):
            rows.append(
                {
                    "system": system,
                    "metric": name,
                    "live": counters[name],
                    "simulated": sim_counts[name],
                    "error": "",
                }
            )
        figures[system] = {
            "live": sl.as_dict(),
            "sim": ss.as_dict(),
            "live_counts": counters,
            "sim_counts": sim_counts,
        }
    order = {k: sorted(figures, key=lambda s: -figures[s][k]["attainment"]) for k in ("live", "sim")}
    print(
        f"{args.num_requests} requests, {args.workload}, Poisson {args.rate}/s, seed {args.seed}, "
        "2 instances, "
        f"SLO TTFT {1e3 * slo.ttft:.0f} ms / TBT {1e3 * slo.tbt:.0f} ms, profile {prof_path} "
        f"({os.cpu_count()} cores)"
    )
    print(format_table(rows, floatfmt=".4g"))
    print(f"ranking by attainment: live {order['live']}  simulated {order['sim']}")
    write_json(out / "fidelity.json", {"slo": [slo.ttft, slo.tbt], "figures": figures, "ranking": order})
    plot_cdf(
        {k: np.asarray(v) for k, v in cdfs.items()},
        out / "ttft_cdf.png",
        xlabel="TTFT (s)",
        title="TTFT: live vs simulated",
    )
    print(f"wrote {out}/fidelity.json and {out}/ttft_cdf.png")


if __name__ == "__main__":
    main()
