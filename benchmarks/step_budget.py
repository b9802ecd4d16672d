"""Where a vLLM engine's steps went, from the plugin's step logs (`steps-*.jsonl`, one row per step).

For each log: how many steps carried prompt tokens, how many prompt tokens they carried against the
step's token budget (budget-bound: the chunk filled the budget), the learnt slowdown the budgets were
sized with, what the same rule gives at slowdown 1 and at the log's own time-weighted ratio of measured
to predicted seconds, and that ratio by step size (the profile's misprediction).

    python benchmarks/step_budget.py out/raw1/engines_A/steps-*.jsonl --profile vllm-cpu-smollm2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ascendra.core.batch import BatchShape
from ascendra.core.scheduler import decode_shape
from ascendra.profiles import load_profile

BINS = ((0, 0), (1, 64), (65, 160), (161, 320), (321, 1 << 30))


def q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def report(path: Path, perf, limit: float) -> None:
    rows = [json.loads(line) for line in path.open()]
    pred = [perf.predict(BatchShape(**r["shape"])) for r in rows]
    secs = [r["seconds"] for r in rows]
    print(f"\n{path}: {len(rows)} steps, {sum(secs):.1f} s measured, {sum(pred):.1f} s predicted "
          f"(time-weighted ratio {sum(secs) / sum(pred):.2f}, median per step "
          f"{statistics.median(s / p for s, p in zip(secs, pred, strict=True)):.2f})")
    for lo, hi in BINS:
        idx = [i for i, r in enumerate(rows) if lo <= r["shape"]["num_prefill_tokens"] <= hi]
        if idx:
            s, p = sum(secs[i] for i in idx), sum(pred[i] for i in idx)
            print(f"  prompt tokens {lo}-{hi if hi < 1 << 30 else 'max'}: {len(idx)} steps, "
                  f"median {statistics.median(secs[i] for i in idx) * 1e3:.0f} ms, {s:.1f} s, "
                  f"measured/predicted {s / p:.2f}")
    logged = [r for r in rows if "budget" in r]
    if not logged:
        return
    slow = [r["slowdown"] for r in logged]
    print(f"  slowdown the budgets were sized with: p10 {q(slow, .1):.2f}  p50 {q(slow, .5):.2f}  "
          f"p90 {q(slow, .9):.2f}  max {max(slow):.2f}")
    pre = [r for r in logged if r["shape"]["num_prefill_tokens"]]
    if not pre:
        return
    room = [r["budget"] - r["shape"]["num_decodes"] for r in pre]
    took = [r["shape"]["num_prefill_tokens"] for r in pre]
    full = sum(t >= b for t, b in zip(took, room, strict=True))
    print(f"  prefilling steps: prompt tokens median {statistics.median(took):.0f}, budget for prompts "
          f"median {statistics.median(room):.0f}; {full} of {len(pre)} filled their budget")
    # The TBT term alone (`limit` seconds) at three slowdowns, for the prefilling steps' decodes.
    ratio = sum(secs) / sum(pred)
    bases = [decode_shape(r["shape"]["num_decodes"], r["shape"]["decode_context"]) for r in pre]
    for name, k in (("the learnt slowdown", None), ("slowdown 1", 1.0), (f"slowdown {ratio:.2f}", ratio)):
        fits = [perf.max_prefill_tokens(b, limit / (r["slowdown"] if k is None else k), 0, 4096)
                for b, r in zip(bases, pre, strict=True)]
        print(f"  TBT term ({limit * 1e3:.0f} ms) at {name}: median {statistics.median(fits):.0f} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--profile", default="vllm-cpu-smollm2")
    ap.add_argument("--tbt-limit-ms", type=float, default=225.0, help="tbt_target x TBT SLO (LP: 0.9 x 250)")
    a = ap.parse_args()
    perf = load_profile(a.profile).perf_model
    for path in a.logs:
        report(path, perf, a.tbt_limit_ms / 1e3)


if __name__ == "__main__":
    main()
