"""Capacity benchmark: the settings S1-S5, each exactly as `ascendra capacity --setting S --sweep`
runs it (this script calls that command), then a summary across them; optionally Ascendra's
LP:HP split x offload margin on one setting.

    python benchmarks/capacity.py                          # S1-S5, 3 seeds, 4000 requests per run
    python benchmarks/capacity.py --settings S2,S3 --quick # smoke run
    python benchmarks/capacity.py --settings S3 --split-sweep S3

S1 replays the Azure conv trace, which the project does not ship: pass --trace PATH (by default the
workspace's ../shared/data/traces/splitwise_conv.csv when it is there; S1 is skipped, saying where
to get the file, when no trace is found). Writes docs/capacity/<setting>.json and .png,
docs/capacity/ascendra_sweep.png and docs/capacity/summary.json (override with --out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from matplotlib.figure import Figure

from ascendra.cli import main as ascendra
from ascendra.cluster.system import SystemConfig
from ascendra.metrics import format_table, write_json
from ascendra.metrics.plot import save_figure
from ascendra.runtime.search import Plan, capacity_job, parallel_map
from ascendra.runtime.settings import SETTINGS, TRACE_HELP, setting

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "capacity"
SHARED_TRACE = ROOT.parent / "shared" / "data" / "traces" / "splitwise_conv.csv"
INSTANCES = 4


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--trace", type=Path, default=SHARED_TRACE if SHARED_TRACE.is_file() else None,
                    help="the Azure conv trace for S1 (default: the workspace's copy, if any)")
    ap.add_argument("--quick", action="store_true", help="smoke run (ascendra capacity --quick)")
    ap.add_argument("--workers", type=int, default=2, help="simulation processes (default: %(default)s)")
    ap.add_argument("--split-sweep", metavar="SETTING",
                    help="also sweep Ascendra's LP:HP x offload margin on this setting")
    ap.add_argument("--margins", default="0,0.1,0.2,0.4,0.8", help="offload margins of the split sweep")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for PNGs and JSON (default: docs/capacity)")
    args = ap.parse_args()
    args.settings = [setting(s).name for s in args.settings.split(",")]
    return args


def log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)


def command(name: str, args: argparse.Namespace) -> list[str]:
    """The `ascendra capacity` command line of a setting, as the doc quotes it."""
    cmd = ["capacity", "--setting", name, "--sweep", "--workers", str(args.workers)]
    if name == "S1":
        cmd += ["--trace", str(args.trace)]
    return cmd + (["--quick"] if args.quick else [])


def run_split_sweep(name: str, args: argparse.Namespace, t0: float) -> list[dict]:
    """Ascendra's capacity at 99% over LP:HP split x offload margin. With no HP instance nothing is
    offloaded, so the margin does not matter there and it runs once."""
    trace = str(args.trace) if name == "S1" and args.trace else None
    sc = setting(name).scenario(trace=trace, num_requests=600 if args.quick else 4000)
    seeds, rel_tol = ((0,), 0.1) if args.quick else ((0, 1, 2), 0.03)
    plan = Plan((0.99,), seeds, setting(name).lo, 16.0, rel_tol)
    margins = [float(m) for m in args.margins.split(",")]
    keys = sorted({(h, 0.0 if h == 0 else m) for h in range(INSTANCES // 2 + 1) for m in margins})
    systems = [SystemConfig("ascendra", INSTANCES, num_hp=h, offload_margin=m) for h, m in keys]
    log(t0, f"Ascendra split sweep on {name}: {len(systems)} configurations")
    found = parallel_map(capacity_job, [(sc, s, plan) for s in systems], args.workers)
    caps = {k: f[0][0.99].capacity for k, f in zip(keys, found, strict=True)}
    hps = sorted({h for h, _ in keys})
    cap = lambda h, m: caps[h, 0.0 if h == 0 else m]
    rows = [{"LP:HP": f"{INSTANCES - h}:{h}", **{f"margin {m:g}": cap(h, m) for m in margins}} for h in hps]
    print(f"\n## Ascendra capacity at 99% (req/s) on {name}: LP:HP split x offload margin\n")
    print(format_table(rows, floatfmt=".3g"))
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for h in hps:
        ax.plot(margins, [cap(h, m) for m in margins], marker="o", ls="--" if h == 0 else "-",
                label=f"{INSTANCES - h} LP : {h} HP" + (" (no offload)" if h == 0 else ""))
    ax.set(xlabel="offload margin (share of the TTFT SLO)", ylabel="capacity at 99% (req/s)",
           title=f"Ascendra on {name}: {setting(name).title}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, args.out / "ascendra_sweep.png")
    return [{"num_hp": h, "offload_margin": m, "capacity@99%": c} for (h, m), c in sorted(caps.items())]


def summary(records: dict[str, dict]) -> list[dict]:
    out = []
    for name, rec in records.items():
        by = {r["system"]: r for r in rec["results"]}
        base = max((by[b] for b in ("vllm", "sarathi") if b in by), key=lambda r: r["capacity"]["0.99"])
        row = {"setting": name, "best baseline": base["best"], "baseline @99%": base["capacity"]["0.99"]}
        for col in by:
            if col not in ("vllm", "sarathi"):
                row[f"{col} @99%"] = by[col]["capacity"]["0.99"]
        asc, lp = by.get("ascendra"), by.get("lp-only")
        if asc and base["capacity"]["0.99"] > 0:
            row["ascendra / baseline"] = asc["capacity"]["0.99"] / base["capacity"]["0.99"]
        if asc and lp and lp["capacity"]["0.99"] > 0:
            row["ascendra / lp-only"] = asc["capacity"]["0.99"] / lp["capacity"]["0.99"]
        out.append(row)
    return out


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    records: dict[str, dict] = {}
    for name in args.settings:
        if name == "S1" and args.trace is None:
            log(t0, f"S1 skipped: {TRACE_HELP}")
            continue
        cmd = command(name, args)
        log(t0, f"{name}: ascendra {' '.join(cmd)}")
        path = args.out / f"{name}.json"
        rc = ascendra([*cmd, "--json", str(path), "--plot", str(args.out / f"{name}.png")])
        if rc != 0:
            raise SystemExit(f"{name} failed (exit {rc})")
        records[name] = json.loads(path.read_text()) | {"command": f"ascendra {' '.join(cmd)}"}
        log(t0, f"{name} done in {records[name]['wall_seconds']:.0f} s\n")
    sweep = run_split_sweep(args.split_sweep, args, t0) if args.split_sweep else []
    rows = summary(records)
    print("\n## Summary: capacity at 99% (req/s)\n")
    print(format_table(rows, floatfmt=".3g"))
    commands = {n: r["command"] for n, r in records.items()}
    write_json(args.out / "summary.json", {"summary": rows, "commands": commands, "split_sweep": sweep})
    log(t0, f"total {time.perf_counter() - t0:.0f} s; json {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
