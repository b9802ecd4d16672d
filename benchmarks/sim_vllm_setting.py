"""What the simulator says about `vs_vllm_engine.py`'s setting: the same lengths, arrivals and SLOs,
on a vLLM engine's profile (fitted from its plugin's steps by `ascendra profile --from-steps`).

A is Ascendra, 1 LP + 1 HP at rest with roles following the load (--adaptive-roles), S the same
with the static split, LP both engines LP; B, vLLM's own scheduling on two engines, is played by
the Sarathi policy with vLLM's token budget (chunked prefill, first come first served, running
requests first);
C, one engine on both cores, has no counterpart here (the profile is of one-thread engines). Capacity
is judged by the share of requests meeting TTFT and TBT (our per-gap rule: stricter than vLLM
bench's mean TPOT; with --tbt-mean, vLLM bench's rule, which A's and S's budgets then follow too);
throughput is output tokens per second, mean over the seeds.

    python3 benchmarks/sim_vllm_setting.py --profile vllm-cpu-smollm2 --rates 1,2,3,6,12
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascendra.cluster.system import SystemConfig  # noqa: E402
from ascendra.core.perf_model import PerfModel  # noqa: E402
from ascendra.core.request import SLO  # noqa: E402
from ascendra.metrics import format_table  # noqa: E402
from ascendra.profiles import for_this_cpu  # noqa: E402
from ascendra.runtime.experiment import Scenario  # noqa: E402


@dataclass(frozen=True)
class FixedSLO:
    """One TTFT and one TBT for every request, as vLLM bench's goodput SLOs are."""

    ttft: float
    tbt: float
    mean: bool = False  # the TBT SLO bounds the mean gap (vLLM bench's TPOT)

    def slos(self, prompt_lens: Sequence[int], perf: PerfModel, rng: np.random.Generator) -> list[SLO]:
        return [SLO(self.ttft, self.tbt, self.mean)] * len(prompt_lens)

    def describe(self, perf: PerfModel) -> str:
        kind = "mean TBT (TPOT)" if self.mean else "TBT"
        return f"every request TTFT {1e3 * self.ttft:.0f} ms, {kind} {1e3 * self.tbt:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None,
                    help="a path or a shipped name (default: the vLLM-CPU one of this CPU's kind)")
    ap.add_argument("--rates", default="1,2,3,4")
    ap.add_argument("--num-requests", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ttft-slo-ms", type=float, default=2500)
    ap.add_argument("--tbt-slo-ms", type=float, default=250)
    ap.add_argument("--tbt-mean", action="store_true",
                    help="the TBT SLO bounds each request's mean gap, as vLLM bench's TPOT (default: each "
                    "gap)")
    ap.add_argument("--workload", default="conv", choices=("conv", "code"),
                    help="the Azure trace whose lengths are scaled (default: %(default)s)")
    ap.add_argument("--length-scale", type=float, default=4.0)
    ap.add_argument("--vllm-budget", type=int, default=2048, help="vLLM's max_num_batched_tokens")
    a = ap.parse_args()
    a.profile = a.profile or for_this_cpu("vllm-cpu-smollm2")
    sc = Scenario(profile=a.profile, workload=f"{a.workload}/{a.length_scale:g}",
                  slo=FixedSLO(a.ttft_slo_ms / 1e3, a.tbt_slo_ms / 1e3, a.tbt_mean),
                  num_requests=a.num_requests)
    systems = {"A": SystemConfig(system="ascendra", num_instances=2, num_hp=1, adaptive_roles=True),
               "S": SystemConfig(system="ascendra", num_instances=2, num_hp=1),
               "LP": SystemConfig(system="ascendra", num_instances=2, num_hp=0),
               "B": SystemConfig(system="sarathi", num_instances=2, token_budget=a.vllm_budget)}
    rows = []
    for rate in (float(r) for r in a.rates.split(",")):
        row = {"rate": rate}
        for name, system in systems.items():
            runs = [sc.run(system, rate, seed)[0] for seed in range(a.seeds)]
            row[f"{name} att %"] = 100 * float(np.mean([s.attainment for s in runs]))
            row[f"{name} tok/s"] = float(np.mean([s.token_throughput for s in runs]))
        for name in ("A", "S"):
            row[f"{name}/B goodput"] = row[f"{name} att %"] / max(row["B att %"], 1e-9)
            row[f"{name}/B tok/s"] = row[f"{name} tok/s"] / row["B tok/s"]
        rows.append(row)
    print(sc.describe())
    print(format_table(rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
