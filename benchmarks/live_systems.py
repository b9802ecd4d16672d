"""The same Poisson arrivals, live, against `ascendra serve --system vllm | sarathi | ascendra`.

Each system is started in turn (2 instance processes, one torch thread each), loaded by
`ascendra bench` (open loop, streaming, ignore_eos), and stopped; the runs are then compared by
`ascendra bench --compare`. Run:
    PYTHONPATH=. python3 benchmarks/live_systems.py --rate 1.0 --num-requests 50 \\
        --ttft-slo-ms 3000 --tbt-slo-ms 400 --sarathi-budget 128 --out /tmp/live
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ascendra.server.launch import REPO_ROOT, ServerProcess

CLI = "import sys; from ascendra.cli import main; sys.exit(main())"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--num-requests", type=int, default=50)
    ap.add_argument("--workload", default="cpu-small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ttft-slo-ms", type=float, default=3000)
    ap.add_argument("--tbt-slo-ms", type=float, default=400)
    ap.add_argument("--sarathi-budget", type=int, default=128, help="Sarathi's token budget, scaled to CPU")
    ap.add_argument("--systems", nargs="+", default=["vllm", "sarathi", "ascendra"])
    ap.add_argument("--out", default="/tmp/ascendra-live")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    slo = ["--ttft-slo-ms", str(a.ttft_slo_ms), "--tbt-slo-ms", str(a.tbt_slo_ms)]
    runs = []
    for system in a.systems:
        extra = ["--token-budget", str(a.sarathi_budget)] if system == "sarathi" else []
        with ServerProcess(["--system", system, "--instances", "2", *slo, *extra]) as srv:
            path = out / f"{system}.json"
            subprocess.run([sys.executable, "-c", CLI, "bench", "--base-url", srv.url + "/v1",
                            "--workload", a.workload, "--rate", str(a.rate), "--num-requests",
                            str(a.num_requests), "--seed", str(a.seed), "--send-slo", "--label", system,
                            "--json", str(path), "--no-progress", *slo], check=True, env=env)
            health = srv.health()
            print(f"{system}: offloads {health['offloads']}, instances "
                  f"{[(i['role'], i['alive']) for i in health['instances']]}", flush=True)
            runs.append(str(path))
    subprocess.run([sys.executable, "-c", CLI, "bench", "--compare", *runs, *slo], check=True,
                   env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
