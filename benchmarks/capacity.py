"""Capacity benchmark: Ascendra against vLLM and Sarathi-Serve at their best, simulated.

For each setting (4 instances, Azure conv lengths, Poisson arrivals): every system's capacity at
99% and 90% SLO attainment, the best configuration of each baseline over its full sweep
(`candidate_configs(..., sweep=True)`), Ascendra's ratio to the better baseline, and each system's
no-SLO saturation rate. For the headline setting, Ascendra is also swept over its LP:HP split and
its offload margin. Everything reuses ascendra.runtime.compare / experiment, the code behind
`ascendra capacity`, so these figures are what the command prints.

    python benchmarks/capacity.py                       # full run: 4 settings + the Ascendra sweep
    python benchmarks/capacity.py --quick               # smoke run (few requests, one seed)
    python benchmarks/capacity.py --settings a100-l3-strict --no-sweep

Writes docs/capacity/attainment_<setting>.png, docs/capacity/ascendra_sweep.png and
docs/capacity/results.json (override with --out).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ascendra.cluster.system import SystemConfig
from ascendra.metrics import format_table, write_json
from ascendra.metrics.plot import plot_attainment
from ascendra.runtime.compare import SystemResult, baseline_best, candidate_configs, compare
from ascendra.runtime.experiment import Scenario, capacities, slo_spec

OUT = Path(__file__).resolve().parents[1] / "docs" / "capacity"
INSTANCES = 4
HP_INSTANCES = 1  # Ascendra's default split in the capacity table (3 LP : 1 HP)
TARGETS = (0.99, 0.9)


@dataclass(frozen=True)
class Setting:
    name: str
    profile: str
    slo: str
    title: str


SETTINGS = {
    s.name: s
    for s in (
        Setting("a100-l3-strict", "a100-llama-3-8b", "strict", "4 x Llama-3-8B, A100, strict (headline)"),
        Setting("a100-l3-relaxed", "a100-llama-3-8b", "relaxed", "4 x Llama-3-8B, A100, relaxed"),
        Setting("h100-l2-strict", "h100-llama-2-7b", "strict", "4 x Llama-2-7B, H100, strict"),
        Setting("h100-l2-relaxed", "h100-llama-2-7b", "relaxed", "4 x Llama-2-7B, H100, relaxed"),
    )
}
HEADLINE = "a100-l3-strict"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 600 requests, 1 seed, 2 margins")
    ap.add_argument("--workers", type=int, default=2, help="simulation processes (default: %(default)s)")
    ap.add_argument(
        "--num-requests",
        type=int,
        default=None,
        help="requests per run (default 4000; shorter runs overstate capacity above saturation "
        "because queues have no time to build)",
    )
    ap.add_argument("--seeds", type=int, default=None, help="seeds per rate (default 2)")
    ap.add_argument("--lo", type=float, default=0.5, help="lowest rate tried, req/s (default: %(default)s)")
    ap.add_argument("--hi", type=float, default=16.0, help="first upper rate, doubled while met")
    ap.add_argument("--rel-tol", type=float, default=0.03, help="bisection stops at this relative width")
    ap.add_argument("--margins", default=None, help="offload margins swept (default 0,0.1,0.2,0.4,0.8)")
    ap.add_argument("--hp", default="0,1,2", help="HP instances swept, of 4 (default: %(default)s)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the Ascendra LP:HP x margin sweep")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for PNGs and JSON (default: docs/capacity)")
    args = ap.parse_args()
    args.num_requests = args.num_requests or (600 if args.quick else 4000)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.margins = args.margins or ("0,0.4" if args.quick else "0,0.1,0.2,0.4,0.8")
    unknown = [s for s in args.settings.split(",") if s not in SETTINGS]
    if unknown:
        ap.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    return args


def log(t0: float, msg: str) -> None:
    print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)


def run_setting(st: Setting, args: argparse.Namespace, t0: float) -> tuple[dict, list[SystemResult]]:
    sc = Scenario(profile=st.profile, workload="conv", slo=st.slo, num_requests=args.num_requests)
    configs = {
        s: candidate_configs(
            s, instances=INSTANCES, hp_instances=HP_INSTANCES, sweep=True,
            max_model_len=sc.capacity.max_model_len,
        )
        for s in ("vllm", "sarathi", "ascendra")
    }
    slo_text = slo_spec(st.slo).describe(sc.perf)
    log(t0, f"{st.name}: {sc.perf.name}; {slo_text}; {sum(map(len, configs.values()))} configurations")
    results = compare(
        sc, configs, targets=TARGETS, seeds=tuple(range(args.seeds)), lo=args.lo, hi=args.hi,
        rel_tol=args.rel_tol, workers=args.workers,
    )
    base = baseline_best(results)
    rows = [r.row(base) for r in results]
    tried = [
        {"system": r.system, "configuration": label, **{f"@{t:.0%}": c[t] for t in TARGETS}}
        for r in results
        for label, c in r.tried
    ]
    print(f"\n## {st.title}\n{slo_text}\n")
    print(format_table(rows, floatfmt=".3g"))
    print("\nevery configuration tried (capacity, req/s):")
    print(format_table(tried, floatfmt=".3g"))
    png = plot_attainment(
        {r.best.label(): r.curve for r in results},
        args.out / f"attainment_{st.name}.png",
        targets=TARGETS,
        capacities={r.best.label(): r.capacity[TARGETS[0]] for r in results},
        title=f"{st.title}, conv, Poisson",
    )
    log(t0, f"{st.name} done; plot {png}\n")
    record = {
        "setting": st.name, "title": st.title, "profile": st.profile, "slo": st.slo, "slo_text": slo_text,
        "results": rows, "tried": tried, "curves": {r.best.label(): r.curve for r in results},
    }
    return record, results


def run_sweep(
    args: argparse.Namespace, t0: float, known: dict[tuple[int, float], float]
) -> list[dict]:
    """Ascendra's capacity at 99% over LP:HP split x offload margin on the headline setting. With no
    HP instance nothing is offloaded, so the margin does not matter there and it runs once."""
    st = SETTINGS[HEADLINE]
    sc = Scenario(profile=st.profile, workload="conv", slo=st.slo, num_requests=args.num_requests)
    margins = [float(m) for m in args.margins.split(",")]
    keys = sorted({(h, 0.0 if h == 0 else m) for h in map(int, args.hp.split(",")) for m in margins})
    todo = [k for k in keys if k not in known]
    systems = [SystemConfig("ascendra", INSTANCES, num_hp=h, offload_margin=m) for h, m in todo]
    log(t0, f"Ascendra sweep on {st.name}: {len(todo)} configurations ({len(keys) - len(todo)} reused)")
    found = capacities(
        sc, systems, targets=(TARGETS[0],), seeds=tuple(range(args.seeds)), lo=args.lo, hi=args.hi,
        rel_tol=args.rel_tol, workers=args.workers,
    )
    caps = dict(known)
    caps.update({k: f[TARGETS[0]].capacity for k, f in zip(todo, found, strict=True)})
    hps = sorted({h for h, _ in keys})
    rows = []
    for h in hps:
        row: dict = {"LP:HP": f"{INSTANCES - h}:{h}"}
        for m in margins:
            row[f"margin {m:g}"] = caps[h, 0.0 if h == 0 else m]
        rows.append(row)
    print(f"\n## Ascendra capacity at 99% (req/s), {st.title}: LP:HP split x offload margin\n")
    print(format_table(rows, floatfmt=".3g"))
    plot_sweep(caps, hps, margins, args.out / "ascendra_sweep.png", st.title)
    log(t0, f"sweep done; plot {args.out / 'ascendra_sweep.png'}\n")
    return [{"num_hp": h, "offload_margin": m, "capacity@99%": c} for (h, m), c in sorted(caps.items())]


def plot_sweep(
    caps: dict[tuple[int, float], float], hps: list[int], margins: list[float], path: Path, title: str
) -> None:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for h in hps:
        ys = [caps[h, 0.0 if h == 0 else m] for m in margins]
        label = f"{INSTANCES - h} LP : {h} HP" + (" (no offload)" if h == 0 else "")
        ax.plot(margins, ys, marker="o", ls="--" if h == 0 else "-", label=label)
    ax.set(xlabel="offload margin (share of the TTFT SLO)", ylabel="capacity at 99% (req/s)",
           title=f"Ascendra, {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def summary(records: list[dict]) -> None:
    rows = []
    for rec in records:
        by = {r["system"]: r for r in rec["results"]}
        a = by["ascendra"]
        rows.append({
            "setting": rec["title"],
            "vllm @99%": by["vllm"]["capacity@99%"], "sarathi @99%": by["sarathi"]["capacity@99%"],
            "ascendra @99%": a["capacity@99%"], "ratio @99%": a["vs best baseline@99%"],
            "ratio @90%": a["vs best baseline@90%"], "ascendra saturation": a["saturation (no SLO)"],
            "saturation / best baseline @99%": a["saturation (no SLO)"] / max(
                by["vllm"]["capacity@99%"], by["sarathi"]["capacity@99%"], 1e-9
            ),
        })
    print("\n## Summary (req/s; ratio = Ascendra / the better baseline)\n")
    print(format_table(rows, floatfmt=".3g"))


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    print(
        f"{INSTANCES} instances, workload conv, Poisson, {args.num_requests} requests per run, {args.seeds} "
        f"seed(s), targets {TARGETS}, search lo={args.lo} hi={args.hi} rel_tol={args.rel_tol}, "
        f"{args.workers} workers",
        flush=True,
    )
    names = args.settings.split(",")
    # The headline and its sweep first, and the JSON rewritten after every phase: a run cut short
    # still leaves what it finished.
    names.sort(key=lambda n: n != HEADLINE)
    out: dict = {
        "run": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "defaults": {"ascendra": SystemConfig("ascendra", INSTANCES, num_hp=HP_INSTANCES)},
        "settings": [],
        "ascendra_sweep": [],
    }
    for name in names:
        rec, results = run_setting(SETTINGS[name], args, t0)
        out["settings"].append(rec)
        if name == HEADLINE and not args.no_sweep:
            asc = next(r for r in results if r.system == "ascendra")
            known = {(asc.best.num_hp, asc.best.offload_margin): asc.capacity[TARGETS[0]]}
            out["ascendra_sweep"] = run_sweep(args, t0, known)
        out["wall_seconds"] = time.perf_counter() - t0
        write_json(args.out / "results.json", out)
    summary(out["settings"])
    log(t0, f"json {args.out / 'results.json'}; total {out['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
