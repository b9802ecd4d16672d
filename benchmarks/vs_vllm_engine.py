"""Ascendra on vLLM against vLLM, on this machine, with vLLM's own `vllm bench serve` as the client.

The systems (issue 17):
- A: `ascendra serve --engine vllm --adaptive-roles`: 1 LP + 1 HP vLLM-CPU engine at rest with our
  scheduler plugins, our door and router in front, roles following the load (issue 18);
- S: the same with the static split (no --adaptive-roles);
- B: the same two vLLM engines with vLLM's stock scheduler, behind our door and load-balancing
  dispatch (`--system vllm`: each request to the engine whose queue is projected to clear first,
  at least as good as round robin);
- C: one stock vLLM engine on both cores (OMP_NUM_THREADS=2);
- L: Ascendra's LP policy on both engines, no HP engine and no offload (the partition's share);
- P: L with no SLO to budget or defer by (the servers' default SLOs one day): shortest remaining
  prompt first alone, at vLLM's own token budget (the budget's share);
- N: A with no TBT SLO to budget by (the servers' default TBT SLO one day), deadlines as A's;
- D, E: A and B with two model threads per engine (`--threads-per-instance 2`, OpenMP's passive
  wait), so that an engine alone at work has both cores, as C's one engine does;
- K: B with vLLM's own chunked prefill at a 128-token step budget (at most 128 requests), the size
  of A's prompt chunks on this CPU: what chunking alone costs vLLM's stock scheduler.

Every system gets the same prompts, arrivals and goodput SLOs: Azure conv (or, with --workload code,
code) lengths (our fitted distributions) divided by --length-scale, as a `custom` dataset with random
words per prompt and a fresh seed per run (vLLM's prefix cache must find nothing; each system has
engines of its own, so the systems share each run's dataset), Poisson arrivals at each --rate. The
systems take turns run by run, the order alternating, so load from other jobs drifts over all
alike. Per run: vLLM bench's goodput (TTFT and TPOT SLOs) and our attainment from its per-request
TTFTs and ITLs. `--raw` adds a throughput run (no SLOs, --raw-concurrency at once).

A raw run's requests carry no SLOs, and a request that states none is served with our door's defaults
(--ttft-slo-ms / --tpot-slo-ms here): A's and S's plugins would then keep every step within 0.9 x the
250 ms TBT SLO (~61-75 prompt tokens per step on this CPU) while B's stock scheduler takes whole
prompts, so the run would measure the default SLOs' cost, not raw throughput (docs/benchmarks.md
section 10). So every raw request asks for no deadline: `ttft_slo_ms` and `tbt_slo_ms` at the largest
value the door accepts (one day, `SLO_MS_RANGE` in ascendra/server/protocol.py), through vLLM bench's
`--extra-body`. B's and C's schedulers ignore SLOs (C's vLLM server accepts and ignores unknown
fields), so all systems get the same bodies. `--raw-server-slos` sends none: the old measurement.

    python3 benchmarks/vs_vllm_engine.py --rates 1,2,3 --num-prompts 80 --out out/vs_vllm_engine

Every system's engines stay up for the whole run, about 2.6 GB each: on this machine's 24 GiB at most
three systems of two engines run at once (four were killed by the kernel's OOM killer mid-run).

Needs vLLM installed in this Python (`pip install -e ".[vllm]"`, see the README) and pandas (vLLM's
`custom` dataset reads the prompts with it: `pip install pandas`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vllm_bench_client import NAME, bench, workload_name, write_dataset  # noqa: E402
from vs_vllm import Server, _launch, stop, wait_ready  # noqa: E402

from ascendra.cli.serve_vllm import VLLM_MAX_MODEL_LEN  # noqa: E402
from ascendra.model.hf_export import default_export_dir, export  # noqa: E402
from ascendra.server.protocol import SLO_MS_RANGE  # noqa: E402

PORTS = {"A": 8301, "B": 8302, "C": 8303, "S": 8304, "K": 8305, "L": 8306, "P": 8307, "N": 8308,
         "D": 8309, "E": 8310}
DAY_MS = str(SLO_MS_RANGE[1])
SYSTEM_ARGS = {"A": ["--hp-instances", "1", "--adaptive-roles"], "S": ["--hp-instances", "1"],
               "L": ["--hp-instances", "0"],
               "P": ["--hp-instances", "0", "--ttft-slo-ms", DAY_MS, "--tbt-slo-ms", DAY_MS],
               "N": ["--hp-instances", "1", "--adaptive-roles", "--tbt-slo-ms", DAY_MS],
               "B": ["--system", "vllm"],
               "K": ["--system", "vllm", "--max-num-seqs", "128", "--vllm-arg=--max-num-batched-tokens=128"]}
TWO_THREADS = {"D": "A", "E": "B"}  # the system, and the one it is with one model thread per engine
SYSTEM_ARGS |= {d: [*SYSTEM_ARGS[one], "--threads-per-instance", "2"] for d, one in TWO_THREADS.items()}
# Two OpenMP threads per engine on two cores: a thread that waits at a barrier sleeps rather than
# spins, or two busy engines' spinning threads take each other's cores.
SYSTEM_ENV = {d: {"OMP_WAIT_POLICY": "PASSIVE"} for d in TWO_THREADS}


def engine_ports(system: str) -> tuple[int, ...]:
    """The two vLLM engines behind our front for `system` (none for C, one engine of vLLM's own):
    front port 83XY -> engines 83Y0 and 83Y1."""
    if system not in SYSTEM_ARGS:
        return ()
    first = 8300 + 10 * (PORTS[system] - 8300)
    return first, first + 1


def start(system: str, a: argparse.Namespace, model: Path, out: Path) -> Server:
    port = PORTS[system]
    env = dict(os.environ, PYTHONPATH=str(ROOT), VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
    env |= SYSTEM_ENV.get(system, {})
    if system == "C":
        env |= {
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_CPU_KVCACHE_SPACE": "2",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": "2",
        }
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            NAME,
            "--port",
            str(port),
            "--dtype",
            a.dtype,
            "--max-model-len",  # as `ascendra serve --engine vllm` starts its engines
            str(VLLM_MAX_MODEL_LEN),
            "--disable-uvicorn-access-log",
        ]
    else:
        system_args = SYSTEM_ARGS[system]
        cmd = [
            sys.executable,
            "-m",
            "ascendra.cli.serve",
            "--engine",
            "vllm",
            "--model",
            "default",
            "--served-model-name",
            NAME,
            "--port",
            str(port),
            "--dtype",
            a.dtype,
            "--instances",
            "2",
            "--vllm-first-port",
            str(engine_ports(system)[0]),
            "--vllm-log-dir",
            str(out / f"engines_{system}"),
            "--ttft-slo-ms",
            str(a.ttft_slo_ms),
            "--tbt-slo-ms",
            str(a.tpot_slo_ms if a.server_tbt_slo_ms is None else a.server_tbt_slo_ms),
            *([] if a.server_tbt_per_gap else ["--tbt-slo-mean"]),
            "--log-level",
            "warning",
            *(["--profile", a.profile] if a.profile else []),
            *system_args,  # last: a system's own SLOs (P) override the shared ones
        ]
    return _launch(system, cmd, port, out, env)


def router_counters(s: Server) -> dict[str, float]:
    """Our router's decisions so far (offloads, role changes, migrations), from its /metrics; none
    for C, whose front is vLLM's."""
    if not engine_ports(s.name):
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    wanted = {"ascendra_offloads": "offloads", "ascendra_role_changes": "role_changes",
              "ascendra_migrations": "migrations"}
    found = {v: 0.0 for v in wanted.values()}
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            found[wanted[family.name]] = sum(x.value for x in family.samples if x.name.endswith("_total"))
    return found


def plugin_cost(a: argparse.Namespace, out: Path, model: Path, tok, seed: int) -> dict:
    """The plugin's own work per step with a long waiting queue: --plugin-cost short requests sent at
    once straight to A's LP engine, then its step log read for the steps that had 256 or more waiting."""
    data = out / "data_plugin_cost.jsonl"
    rng = np.random.default_rng(seed)
    with data.open("w") as f:
        for _ in range(a.plugin_cost):
            ids = rng.integers(1000, 40000, size=64).tolist()
            f.write(json.dumps({"prompt": tok.decode(ids), "output_tokens": 4}) + "\n")
    log = out / "engines_A" / "steps-0.jsonl"
    start = len(log.read_text().splitlines())
    lp = Server("A-LP", engine_ports("A")[0], None, out / "A_server.log")
    bench(lp, a, data, None, a.plugin_cost, seed, out, "plugin_cost", model)
    rows = [json.loads(x) for x in log.read_text().splitlines()[start:]]
    deep = [r for r in rows if r.get("waiting", 0) >= 256]
    own = np.array([r["plugin_seconds"] for r in deep]) * 1e3
    sched = np.array([r["vllm_schedule_seconds"] for r in deep]) * 1e3
    step = np.array([r["seconds"] for r in deep]) * 1e3
    res = {"steps_with_256_waiting": len(deep)}
    if len(deep):
        res |= {"plugin_ms_p50": float(np.median(own)), "plugin_ms_p99": float(np.percentile(own, 99)),
                "vllm_schedule_ms_p50": float(np.median(sched)), "step_ms_p50": float(np.median(step))}
    print(f"plugin cost: {json.dumps(res)}", flush=True)
    return res


def greedy(a: argparse.Namespace, servers: list[Server], out: Path, model: Path, tok, seed: int) -> dict:
    """Greedy identity: one dataset of --greedy prompts sent at once (4 in flight) to A and to C, and the
    texts compared request by request. vLLM bench lists its results in its dataset order, the file
    shuffled by --seed, the same for both; their input lengths must agree to show it."""
    data = out / "data_greedy.jsonl"
    write_dataset(data, a.greedy, seed, workload_name(a), a.max_model_len, tok)
    runs = {}
    for s in servers:
        if s.name in ("A", "C"):
            bench(s, a, data, None, a.greedy, seed, out, f"{s.name}_greedy", model, 4)
            runs[s.name] = json.loads((out / f"{s.name}_greedy.json").read_text())
    if runs["A"]["input_lens"] != runs["C"]["input_lens"]:
        raise RuntimeError("greedy: A and C list their requests in different orders")
    pairs = list(zip(runs["A"]["generated_texts"], runs["C"]["generated_texts"], strict=True))
    errors = [i for i in range(len(pairs)) if runs["A"]["errors"][i] or runs["C"]["errors"][i]]
    mismatches = []
    for i, (x, y) in enumerate(pairs):
        if i not in errors and x != y:
            pos = len(os.path.commonprefix([x, y]))
            mismatches.append({"index": i, "char": pos, "token": len(tok.encode(x[:pos], False)),
                               "len_A": len(x), "len_C": len(y), "A": x[pos:pos + 20], "C": y[pos:pos + 20]})
    res = {"compared": len(pairs) - len(errors), "identical": len(pairs) - len(errors) - len(mismatches),
           "errors": errors, "mismatches": mismatches[:5]}
    print(f"greedy: {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default="A,B,C")
    ap.add_argument("--rates", default="1,2,3", help="Poisson request rates, req/s (default: %(default)s)")
    ap.add_argument("--num-prompts", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per rate and system, and raw runs with --raw (default: %(default)s)")
    ap.add_argument("--ttft-slo-ms", type=float, default=2500)
    ap.add_argument("--tpot-slo-ms", type=float, default=250)
    ap.add_argument("--server-tbt-slo-ms", type=float, default=None,
                    help="the TBT SLO A's and S's servers budget with (default: --tpot-slo-ms)")
    ap.add_argument("--server-tbt-per-gap", action="store_true",
                    help="A's and S's servers hold that SLO to every gap between tokens; by default to their "
                    "mean, as vLLM bench's TPOT judges it (`--tbt-slo-mean`)")
    ap.add_argument("--workload", default="conv", choices=("conv", "code"),
                    help="the Azure trace whose lengths are scaled by --length-scale (default: %(default)s)")
    ap.add_argument("--length-scale", type=float, default=4.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--raw", action="store_true", help="also a throughput run without SLOs")
    ap.add_argument("--raw-concurrency", type=int, default=16)
    ap.add_argument("--raw-server-slos", action="store_true",
                    help="raw runs' requests state no SLOs, so our door serves them with its defaults "
                    "(--ttft-slo-ms, --tpot-slo-ms); by default they ask for none (one day each)")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                    help="weights and activations of every system's engines; float32 makes exact bfloat16 "
                    "logit ties, which --greedy can meet, rare (default: %(default)s)")
    ap.add_argument("--out", default="out/vs_vllm_engine")
    ap.add_argument("--profile", default=None,
                    help="our systems' performance profile of the engines (default: the shipped vLLM-CPU "
                    "one); fit one on this host with `ascendra profile --from-steps` from a run's "
                    "engines_*/steps-*.jsonl")
    ap.add_argument("--plugin-cost", type=int, default=0,
                    help="after the runs, send this many requests at once to A's LP engine and report the "
                    "plugin's own cost per step with 256 or more waiting (default: skip)")
    ap.add_argument("--greedy", type=int, default=0,
                    help="after the runs, send this many prompts to A and to C at temperature 0 and compare "
                    "the texts request by request (default: skip)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = export(default_export_dir())
    from ascendra.model.tokenizer import Tokenizer

    tok = Tokenizer.from_hf_folder(model, [])
    systems = a.systems.split(",")
    servers = [start(s, a, model, out) for s in systems]
    results: dict[str, list] = {s: [] for s in systems}
    try:
        for s in servers:
            print(f"[{s.name}] ready after {wait_ready(s, 1200):.0f} s", flush=True)
            for port in engine_ports(s.name):  # our front answers before its engines do
                wait_ready(Server(f"{s.name} engine", port, s.proc, s.log), 1200)
        seed = int(time.time()) % 100_000
        no_slo = {"ttft_slo_ms": SLO_MS_RANGE[1], "tbt_slo_ms": SLO_MS_RANGE[1]}
        raw_body = None if a.raw_server_slos else no_slo
        plan = [(float(r), k) for r in a.rates.split(",") if r for k in range(a.repeats)]
        if a.raw:
            plan += [(0.0, k) for k in range(a.repeats)]
        for j, (rate, k) in enumerate(plan):
            order = servers if j % 2 == 0 else servers[::-1]
            # One dataset per run, the same for every system: a fresh seed for each system made the
            # systems' prompt and output lengths differ by 10-25% per run, as much as the effects
            # measured (docs/benchmarks.md section 10).
            seed += 1
            data = out / f"data_{seed}.jsonl"
            write_dataset(data, a.num_prompts, seed, workload_name(a), a.max_model_len, tok)
            for s in order:
                tag = f"{s.name}_r{rate:g}_{k}" if rate else f"{s.name}_raw" + (f"_{k}" if k else "")
                before = router_counters(s)
                try:
                    r = bench(s, a, data, rate or None, a.num_prompts, seed, out, tag, model,
                              None if rate else a.raw_concurrency, None if rate else raw_body)
                except subprocess.CalledProcessError as e:  # one failed run must not end the others
                    print(f"[{s.name}] rate {rate:g}: the client failed ({e})", flush=True)
                    continue
                r |= {"rate": rate, "repeat": k}
                r |= {name: v - before.get(name, 0.0) for name, v in router_counters(s).items()}
                if not rate:
                    r["server_slos"] = raw_body is None
                results[s.name].append(r)
                print(f"[{s.name}] rate {rate:g}: {json.dumps(r)}", flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=1))
        if a.greedy and {"A", "C"} <= set(systems):
            results["greedy"] = greedy(a, servers, out, model, tok, seed + 1)
            (out / "results.json").write_text(json.dumps(results, indent=1))
        if a.plugin_cost and "A" in systems:
            results["plugin_cost"] = plugin_cost(a, out, model, tok, seed + 2)
            (out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        for s in servers:
            stop(s)
    print(table(results))


def table(results: dict[str, list]) -> str:
    rows = [
        "| system | rate | attainment | goodput req/s | out tok/s | TTFT p50 ms | TTFT p90 ms"
        " | TPOT p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        if name in ("plugin_cost", "greedy"):
            continue
        by_rate: dict[float, list] = {}
        for r in runs:
            by_rate.setdefault(r["rate"], []).append(r)
        for rate, rs in sorted(by_rate.items()):
            med = {
                k: statistics.median(float(r[k] or 0) for r in rs)
                for k in ("attainment", "goodput", "throughput", "ttft_p50", "ttft_p90", "tpot_p50")
            }
            rows.append(
                f"| {name} | {'raw' if not rate else f'{rate:g}'} | {100 * med['attainment']:.1f}% | "
                f"{med['goodput']:.2f} | {med['throughput']:.1f} | {med['ttft_p50']:.0f} | "
                f"{med['ttft_p90']:.0f} | {med['tpot_p50']:.0f} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
