"""Does the simulator predict the live system? The same requests, live and simulated, side by side.

1. The CPU profile the simulator (and the live router) use: `--profile` or a fresh `ascendra profile`.
2. One workload: Poisson arrivals (or bursts: `--arrival gamma --cv 3`), lengths from the
   `cpu-small` distribution, a fixed seed.
3. Live: for each system, `ascendra serve` on loopback (2 instances; Ascendra 1 LP + 1 HP, lp-only
   2 LP), the
   requests replayed open-loop from the client, every token's time recorded.
4. Simulated: exactly the same requests (arrivals, lengths, SLOs, instances) on the simulator,
   pooled over 8 draws of its iteration noise, three ways: ahead of time (the profile and its own
   spread); calibrated on the other systems' live runs (a prediction of a run it has not seen);
   calibrated on this run. A calibration is what the live instances measured: their loop gap,
   and their iterations' mean and scatter against the prediction per band of predicted duration.
5. Per system, live beside simulated: TTFT and TBT P50/P90/P99, attainment of each SLO and both,
   offloads and preemptions, with relative errors; the profile's own error on the iterations the
   live instances ran; a PNG of the TTFT CDFs.

    python benchmarks/fidelity.py [--rate 1.0] [--num-requests 120] [--profile PATH] [--out out/fidelity]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from fidelity_harness import Calibration, Setup, compare_rows, run_live, run_sim, run_sim_calibrated

from ascendra.core.perf_model import isolated_decode_time
from ascendra.core.request import SLO
from ascendra.metrics import format_table, write_json
from ascendra.metrics.plot import plot_cdf
from ascendra.profiles import Profile, load_profile
from ascendra.workload import make_workload

SYSTEMS = ("vllm", "sarathi", "ascendra")  # also "lp-only": Ascendra with both instances LP


def profile(path: Path) -> Profile:
    if not path.exists():
        cmd = [sys.executable, "-m", "ascendra.cli", "profile", "--threads", "1", "--instances", "2",
               "--out", str(path)]
        subprocess.run(cmd, check=True)
    return load_profile(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--num-requests", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", default="cpu-small")
    ap.add_argument("--arrival", default="poisson", choices=("poisson", "gamma"))
    ap.add_argument("--cv", type=float, default=1.0, help="gamma arrivals' coefficient of variation")
    ap.add_argument("--profile", default=None, help="a CPU profile JSON (default: profile now, 2 instances)")
    ap.add_argument("--token-budget", type=int, default=128, help="Sarathi's chunk budget")
    ap.add_argument("--ttft-slo", type=float, default=None, help="seconds (default: 10x isolated decode)")
    ap.add_argument("--tbt-slo", type=float, default=None, help="seconds (default: 5x isolated decode)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--engine", default="ascendra", choices=("ascendra", "vllm"),
                    help="the live side's engine; vllm: vLLM engines with our scheduler plugin, profiled "
                    "by `ascendra profile --from-steps` (give it as --profile)")
    ap.add_argument("--out", default="out/fidelity")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prof_path = Path(args.profile) if args.profile else out / "cpu-profile.json"
    prof = profile(prof_path)
    perf = prof.perf_model
    dec = isolated_decode_time(perf, 256)
    setup = Setup(prof_path, SLO(args.ttft_slo or 10 * dec, args.tbt_slo or 5 * dec),
                  token_budget=args.token_budget, engine=args.engine, step_logs=out / "engines")
    items = make_workload(args.workload, rate=args.rate, num_requests=args.num_requests, seed=args.seed,
                          arrival=args.arrival, cv=args.cv, max_model_len=prof.capacity.max_model_len)
    systems = [s for s in args.systems.split(",") if s]
    lives = {system: run_live(system, items, setup) for system in systems}
    rows, cdfs, figures = [], {}, {}
    for system, live in lives.items():
        # Calibrated on the other systems' live runs: a prediction of a run the simulator has not
        # seen; calibrated on this run: its scheduling fidelity alone.
        others = [lives[o].calibration for o in systems if o != system]
        columns = {"ahead of time": run_sim(system, items, setup, prof)}
        if live.at_engine is not None:  # the tokens' times where the engine made them
            columns["live, at the engine"] = live.at_engine
        if others:
            columns["other runs' calibration"] = run_sim_calibrated(
                system, items, setup, prof, Calibration.pooled(others))
        columns["this run's calibration"] = run_sim_calibrated(system, items, setup, prof, live.calibration)
        rows += compare_rows(system, live, columns)
        cdfs[f"{system} live"] = live.ttfts
        figures[system] = {"live": live.summary.as_dict(), "live_counts": live.counts}
        for col, side in columns.items():
            cdfs[f"{system} sim, {col}"] = side.ttfts
            figures[system][col] = side.summary.as_dict() | side.counts
        if live.at_engine is not None:
            print(f"{system}: {live.at_engine.counts['untraced']:.0f} requests not traced to the engines' "
                  f"steps (left out of 'live, at the engine')", flush=True)
        c = live.counts
        print(f"{system}: live iterations ran {c['slowdown']:.3f}x the profile's prediction (spread "
              f"{c['spread']:.3f}, lag-1 correlation {c['spread_correlation']:.2f}; the profile's spread "
              f"{perf.spread:.3f}), {1e3 * c['gap']:.2f} ms between iterations; "
              f"{c['offloads_refused']:.0f} offloads refused (started before the steal came)", flush=True)
    order = {k: sorted(figures, key=lambda s: -figures[s][k]["attainment"])
             for k in ["live", *columns]}
    slo = setup.slo
    arrivals = "Poisson" if args.arrival == "poisson" else f"gamma (CV {args.cv:g})"
    print(f"\n{args.num_requests} requests, {args.workload}, {arrivals} {args.rate}/s, seed {args.seed}, "
          f"{setup.instances} instances x {setup.num_blocks} KV blocks, SLO TTFT {1e3 * slo.ttft:.0f} ms / "
          f"TBT {1e3 * slo.tbt:.0f} ms, profile {prof_path} ({os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f})")
    print(format_table(rows, floatfmt=".4g"))
    print("ranking by attainment: " + "; ".join(f"{k} {v}" for k, v in order.items()))
    write_json(out / "fidelity.json",
               {"slo": [slo.ttft, slo.tbt], "figures": figures, "ranking": order, "ttfts": cdfs})
    plot_cdf(cdfs, out / "ttft_cdf.png", xlabel="TTFT (s)", title="TTFT: live vs simulated", slo=slo.ttft)
    print(f"wrote {out}/fidelity.json and {out}/ttft_cdf.png")


if __name__ == "__main__":
    main()
