"""Ascendra vs the real vLLM (CPU build) on this machine: same model, same arrivals, same SLOs, same client.

Steps: (1) make the vLLM venv if missing (`benchmarks/vllm_env.py`), (2) export SmolLM2 to a HF folder
(`benchmarks/export_smollm2_hf.py`), (3) start every system's server on loopback, wait until each
answers and warm each up, (4) run `ascendra bench` in SLO mode (open loop, fixed seed) at each of
--rates and in raw mode (32 x 64 tokens, concurrency 16, --raw-repeats times), the systems taking
turns run by run (the order alternating), so load from other jobs on the shared machine drifts over
both alike, (5) stop the servers (each one's whole process group) and print one table with the
median raw throughput of each system. An idle server waits on its socket and takes no CPU.
`--one-at-a-time` starts, runs and stops the systems one after the other instead.

    python3 benchmarks/vs_vllm.py                       # both systems, both modes, rates 0.5, 1, 2
    python3 benchmarks/vs_vllm.py --systems vllm --modes raw

Ascendra runs on its default dtype ("auto": bfloat16 on this CPU) with the shipped CPU profile of
this CPU's kind (`--profile`), which the export's folder name would otherwise not select, and
iterations capped at --ascendra-token-budget tokens (0: uncapped). On this shared 2-core machine,
contention slows prompt-heavy iterations (1.5x the profile) more than decode-heavy ones (1.1x); the
schedulers' one learnt slowdown follows the many small iterations, so uncapped LP iterations sized to
the TBT SLO overran it (docs/benchmarks.md section 7).

Results (bench JSON per run, server logs, the table as markdown) go to --out. On a 2-core machine shared
with other jobs the absolute figures move with the load; the 1-minute load average is printed per run.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without pip install
sys.path.insert(0, str(ROOT / "benchmarks"))

from export_smollm2_hf import export  # noqa: E402
from vllm_env import ensure_vllm_venv, vllm_env  # noqa: E402

from ascendra.bench.report import BenchReport, compare_table  # noqa: E402
from ascendra.cli import main as ascendra_main  # noqa: E402
from ascendra.profiles import for_this_cpu  # noqa: E402

SERVED_NAME = "smollm2"


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_vllm(a: argparse.Namespace, model_dir: Path, out: Path) -> Server:
    cli = ensure_vllm_venv(Path(a.venv), out / "vllm_install.log")
    cmd = [str(cli), "serve", str(model_dir), "--served-model-name", SERVED_NAME, "--host", "127.0.0.1",
           "--port", str(a.vllm_port), "--dtype", "bfloat16", "--max-model-len", str(a.max_model_len)]
    return _launch("vllm", cmd, a.vllm_port, out, vllm_env(a.kv_gib, a.threads))


def start_ascendra(a: argparse.Namespace, model_dir: Path, out: Path) -> Server:
    budget = ["--token-budget", str(a.ascendra_token_budget)] if a.ascendra_token_budget else []
    cmd = [sys.executable, "-m", "ascendra.cli.serve", *budget, "--model", str(model_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(a.ascendra_port),
           "--profile", a.profile,
           "--system", "ascendra", "--instances", str(a.instances),
           "--threads-per-instance", str(max(1, a.threads // a.instances)),
           "--ttft-slo-ms", str(a.ttft_slo_ms), "--tbt-slo-ms", str(a.tbt_slo_ms), "--log-level", "warning"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return _launch("ascendra", cmd, a.ascendra_port, out, env)


def _launch(name: str, cmd: list[str], port: int, out: Path, env: dict[str, str]) -> Server:
    log = out / f"{name}_server.log"
    print(f"[{name}] starting: {' '.join(cmd)}", flush=True)
    f = open(log, "w")  # noqa: SIM115 - the child owns it until stop()
    # A new session makes the server and every worker it forks one process group: stop() ends them all.
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    f.close()
    return Server(name, port, proc, log)


def wait_ready(s: Server, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if s.proc.poll() is not None:
            tail = s.log.read_text()[-3000:]
            raise RuntimeError(f"{s.name} server exited with {s.proc.returncode}; log tail:\n{tail}")
        try:
            if httpx.get(s.base_url + "/models", timeout=2.0, trust_env=False).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(2.0)
    raise RuntimeError(f"{s.name} server not ready after {timeout:.0f} s (see {s.log})")


def stop(s: Server) -> None:
    if s.proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(s.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                s.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    try:  # stragglers of the group (workers that outlived the leader)
        os.killpg(s.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    print(f"[{s.name}] stopped", flush=True)


def bench(
    s: Server, a: argparse.Namespace, model_dir: Path, out: Path, mode: str, rate: float = 0.0, rep: int = 0
) -> BenchReport:
    common = ["bench", "--base-url", s.base_url, "--model", SERVED_NAME, "--tokenizer", str(model_dir),
              "--seed", str(a.seed), "--ttft-slo-ms", str(a.ttft_slo_ms), "--tbt-slo-ms", str(a.tbt_slo_ms),
              "--send-slo", "--no-progress", "--timeout", "600", "--max-duration", str(a.max_duration)]
    if mode == "warmup":
        args = ["--num-requests", "8", "--max-concurrency", "8", "--prompt-len", "200", "--output-len", "8"]
    elif mode == "raw":
        args = ["--num-requests", str(a.raw_requests), "--max-concurrency", str(a.raw_concurrency),
                "--prompt-len", str(a.raw_prompt_len), "--output-len", str(a.raw_output_len)]
    else:
        args = ["--workload", a.workload, "--rate", str(rate), "--arrival", a.arrival, "--cv", str(a.cv),
                "--num-requests", str(a.num_requests), "--max-model-len", str(a.max_model_len)]
    tag = f"{mode}{rate:g}" if mode == "slo" else mode
    if mode == "raw" and a.raw_repeats > 1:
        tag = f"raw{rep + 1}"
    path = out / f"{s.name}_{tag}.json"
    load = os.getloadavg()[0]
    print(f"[{s.name}] bench {tag} (load avg {load:.1f})", flush=True)
    rc = ascendra_main([*common, *args, "--label", f"{s.name} {tag}", "--json", str(path)])
    if rc != 0:
        raise RuntimeError(f"bench {mode} against {s.name} failed with {rc}")
    rep = BenchReport.from_json(path)
    rep.meta["load_avg_1m"] = load
    return rep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default="vllm,ascendra")
    ap.add_argument("--modes", default="slo,raw", help="slo (open-loop workload) and/or raw (throughput)")
    ap.add_argument("--out", default="/work/h5-runs")
    ap.add_argument("--venv", default="/work/vllm-venv")
    ap.add_argument("--model-dir", default="/work/smollm2-hf")
    ap.add_argument("--workload", default="cpu-small")
    ap.add_argument("--rates", default="0.5,1,2", help="request rates of the SLO runs (req/s)")
    ap.add_argument("--arrival", default="poisson")
    ap.add_argument("--cv", type=float, default=1.0)
    ap.add_argument("--num-requests", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ttft-slo-ms", type=float, default=3000.0)
    ap.add_argument("--tbt-slo-ms", type=float, default=500.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-duration", type=float, default=300.0)
    ap.add_argument("--raw-requests", type=int, default=32)
    ap.add_argument("--raw-concurrency", type=int, default=16)
    ap.add_argument("--raw-prompt-len", type=int, default=128)
    ap.add_argument("--raw-output-len", type=int, default=64)
    ap.add_argument("--raw-repeats", type=int, default=3, help="raw runs per system (median reported)")
    ap.add_argument("--one-at-a-time", action="store_true", help="one server up at a time (the old flow)")
    ap.add_argument("--instances", type=int, default=2, help="Ascendra instances (1 HP + the rest LP)")
    ap.add_argument("--profile", default=None,
                    help="Ascendra's performance profile (default: the shipped one of this CPU's kind)")
    ap.add_argument("--ascendra-token-budget", type=int, default=64,
                    help="Ascendra's cap on tokens per iteration (0: none)")
    # vLLM's OMP workers spin-wait: with 2 threads on 2 cores shared with other jobs it ran 4-8x slower
    # than with 1 (h5_results.md), so 1 is the default; Ascendra gets max(1, threads // instances) each.
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per system (vLLM: OMP)")
    ap.add_argument("--kv-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE (GiB)")
    ap.add_argument("--vllm-port", type=int, default=8100)
    ap.add_argument("--ascendra-port", type=int, default=8200)
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    a = ap.parse_args()
    a.profile = a.profile or for_this_cpu("cpu-smollm2")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = export(Path(a.model_dir))
    starters = {"vllm": start_vllm, "ascendra": start_ascendra}
    modes = [m for m in a.modes.split(",") if m]
    names = [s for s in a.systems.split(",") if s]
    runs = [(m, float(r), 0) for m in modes if m == "slo" for r in a.rates.split(",")]
    runs += [("raw", 0.0, k) for k in range(a.raw_repeats) if "raw" in modes]
    reports: list[BenchReport] = []
    for group in ([[n] for n in names] if a.one_at_a_time else [names]):
        servers: dict[str, Server] = {}
        try:
            for name in group:
                servers[name] = starters[name](a, model_dir, out)
                print(f"[{name}] ready after {wait_ready(servers[name], a.ready_timeout):.0f} s", flush=True)
                bench(servers[name], a, model_dir, out, "warmup")
            for i, (m, r, k) in enumerate(runs):
                for name in group if i % 2 == 0 else group[::-1]:
                    reports.append(bench(servers[name], a, model_dir, out, m, r, k))
        finally:
            for server in servers.values():
                stop(server)
    table = compare_table(reports)
    raw = {n: [r.summary().token_throughput for r in reports if r.label.startswith(f"{n} raw")]
           for n in names}
    med = {n: statistics.median(v) for n, v in raw.items() if v}
    table += "\nraw output tok/s, median of the runs: " + ", ".join(f"{n} {v:.1f}" for n, v in med.items())
    if len(med) == 2 and "vllm" in med:
        other = next(n for n in med if n != "vllm")
        table += f"; {other} / vllm = {med[other] / med['vllm']:.2f}x"
    loads = ", ".join(f"{r.label}: {r.meta['load_avg_1m']:.1f}" for r in reports)
    text = (f"command: {' '.join(sys.argv)}\n"
            f"workload {a.workload} at {a.rates} req/s ({a.arrival}, cv {a.cv}), {a.num_requests} requests, "
            f"seed {a.seed}; SLOs TTFT {a.ttft_slo_ms:g} ms, TBT {a.tbt_slo_ms:g} ms; "
            f"raw: {a.raw_requests} x {a.raw_output_len} tokens (prompt {a.raw_prompt_len}), concurrency "
            f"{a.raw_concurrency}\n1-min load average at start of each run: {loads}\n\n{table}\n")
    (out / "table.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
