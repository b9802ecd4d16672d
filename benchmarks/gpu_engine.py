"""The engine on a GPU (issue 10), in one run of under 8 minutes, written to JSON as it goes.

Parts, each surviving the failure of any other (its error and traceback go into the JSON):

1. `iterations`: the issue's table (decode 1/8/64/256 at a 1k context, prefill 512 and 4096, a
   hybrid of 64 decodes and a 512-token prompt), through `TorchExecutor.execute` (inputs, model,
   sampling; synchronised by the sampled ids), median of --repeats, per attention backend
   available, decode-only batches with and without CUDA graphs, each next to its roofline;
2. `busy`: the GPU-busy share and kernels per iteration (torch.profiler) at decode 1 and 64;
3. `logits`: a mixed paged batch at float32 on a 2-layer model of the same width: every backend
   against the SDPA reference on the device, the device reference against the CPU, graphs against
   eager;
4. `offline`: 256 x (512 -> 128) and 64 x (512 -> 128) through the engine's instance loop;
5. `hf_generate`: Hugging Face `generate` on the 64-request batch (same shape, random weights).

    python benchmarks/gpu_engine.py --out $OUT                       # H200, dummy Llama-3-8B, bf16
    python benchmarks/gpu_engine.py --device cpu --model dummy:tiny  # small shapes: proves it runs

Imports only torch, transformers and the engine (the GPU machine has no network, no fastapi, uvicorn,
pyzmq, ray or gguf). Results: docs/benchmarks.md §6; `benchmarks/gpu_session.sh` runs it with the
profile in one device call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_measure import as_dict, busy_share, median_ms, roofline  # noqa: E402
from gpu_parts import hf_generate, logits, offline  # noqa: E402

from ascendra.engine.profiler import SpreadBatch, build_batch  # noqa: E402
from ascendra.engine.torch_executor import TorchExecutor  # noqa: E402
from ascendra.model.config import named_config  # noqa: E402
from ascendra.model.loader import load_dummy, load_model  # noqa: E402

GPU = dict(
    context=1024,
    decodes=[1, 8, 64, 256],
    prefills=[512, 4096],
    hybrid=(64, 512),
    offline=[(256, 512, 128), (64, 512, 128)],
    kv_blocks=20480,
    buckets=(1, 8, 64, 256),
)
CPU = dict(
    context=48,
    decodes=[1, 4],
    prefills=[32, 64],
    hybrid=(4, 32),
    offline=[(8, 24, 6), (4, 24, 6)],
    kv_blocks=256,
    buckets=(1, 4),
)


class Run:
    """The state the parts share, and the JSON they fill."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.monotonic()
        self.device = torch.device(args.device)
        self.shapes = GPU if self.device.type == "cuda" else CPU
        self.dtype = getattr(torch, args.dtype)
        self.path = Path(args.out or os.environ.get("OUT") or "gpu_engine_out") / "gpu_engine.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.report: dict = {"meta": self.meta(), "parts": {}}
        self.model = None

    def meta(self) -> dict:
        m = {
            "argv": sys.argv,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(self.device),
            "dtype": self.args.dtype,
            "model": self.args.model,
        }
        if self.device.type == "cuda":
            m["gpu"] = torch.cuda.get_device_name(self.device)
        for mod in ("triton", "flashinfer", "transformers"):
            try:
                m[mod] = __import__(mod).__version__
            except Exception as e:  # absent or broken: recorded, the run goes on
                m[mod] = f"unavailable: {type(e).__name__}: {e}"
        return m

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def backends(self) -> list[str]:
        if self.args.attention:
            return self.args.attention.split(",")
        if self.device.type != "cuda":
            return ["cpu"]
        return ["flex"] + (
            ["flashinfer"] if not str(self.report["meta"]["flashinfer"]).startswith("unav") else []
        )

    def executor(self, backend: str, graphs: bool | None = None) -> TorchExecutor:
        if self.model is None:
            self.model = self.load(self.args.model)
        use = self.device.type == "cuda" if graphs is None else graphs
        return TorchExecutor(
            self.model,
            self.shapes["kv_blocks"],
            16,
            self.device,
            self.dtype,
            attention=backend,
            cuda_graphs=use,
            graph_buckets=self.shapes["buckets"],
        )

    def load(self, model: str, **overrides):
        if model.startswith("dummy:"):
            cfg = named_config(model.removeprefix("dummy:"), **overrides)
            return load_dummy(cfg, self.dtype if not overrides else torch.float32, self.device).model
        return load_model(model, self.dtype, self.device).model

    def part(self, name: str, fn, budget_s: float) -> None:
        left = self.args.time_limit - (time.monotonic() - self.t0)
        if left < budget_s:
            self.report["parts"][name] = {
                "ok": False,
                "error": f"skipped: {left:.0f} s left, needs ~{budget_s:.0f}",
            }
        else:
            t = time.monotonic()
            try:
                self.report["parts"][name] = {"ok": True, **fn(self)}
            except Exception as e:  # one part's failure must not cost the others
                self.report["parts"][name] = {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            self.report["parts"][name]["seconds"] = round(time.monotonic() - t, 1)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.path.write_text(json.dumps(self.report, indent=1, default=str))
        status = "ok" if self.report["parts"][name]["ok"] else "FAILED"
        print(f"[{time.monotonic() - self.t0:6.0f} s] {name}: {status}", flush=True)


def table_batches(s: dict) -> list[SpreadBatch]:
    c = s["context"]
    rows = [SpreadBatch(f"decode {b} @ {c}", decodes=(c,) * b) for b in s["decodes"]]
    rows += [SpreadBatch(f"prefill {n}", ((0, n),)) for n in s["prefills"]]
    b, n = s["hybrid"]
    return rows + [SpreadBatch(f"hybrid {b} decodes @ {c} + {n} prefill", ((0, n),), (c,) * b)]


def iterations(run: Run) -> dict:
    a = run.args
    out: dict = {"peak_tflops": a.peak_tflops, "bandwidth_tbs": a.bandwidth_tbs, "backends": {}}
    for backend in run.backends():
        try:  # one backend's failure keeps the others' rows
            ex = run.executor(backend)
            out["backends"][backend] = _table(run, ex)
            if ex.graphs is not None:
                out[f"graph_pool_bytes {backend}"] = ex.graphs.memory_bytes
            del ex  # its KV pool, before the next backend's
        except Exception as e:
            tb = traceback.format_exc()[-2000:]
            out["backends"][backend] = {"error": f"{type(e).__name__}: {e}", "traceback": tb}
    return out


def _table(run: Run, ex: TorchExecutor) -> list[dict]:
    a, cfg, rows = run.args, run.model.config, []
    elem = torch.empty((), dtype=run.dtype).element_size()
    for sb in table_batches(run.shapes):
        batch = build_batch(ex, sb, cfg.vocab_size, 16, random.Random(0))
        row = {"batch": sb.label, "ms": median_ms(lambda b=batch: ex.execute(b), a.repeats, run.sync)}
        if ex.graphs is not None and not sb.prefills:
            graphs, ex.graphs = ex.graphs, None  # the same batch, eagerly
            row["ms_eager"] = median_ms(lambda b=batch: ex.execute(b), a.repeats, run.sync)
            ex.graphs = graphs
        rl = roofline(cfg, sb.seqs(), elem, a.peak_tflops * 1e12, a.bandwidth_tbs * 1e12)
        rows.append(row | {"roofline": as_dict(rl), "x_roofline": row["ms"] / rl.ms})
        for r in batch.requests:
            ex.release(r.request_id)
    return rows


def kv_sizing(run: Run) -> dict:
    """What the KV pool could take on this device once activations and the decode graphs (their
    memory measured by a probe forward at the largest bucket) have theirs."""
    if run.device.type != "cuda":
        return {"note": "needs CUDA"}
    from dataclasses import asdict

    from ascendra.engine.gpu_memory import kv_blocks_for_device

    if run.model is None:
        run.model = run.load(run.args.model)
    largest = max(run.shapes["buckets"])
    budget = kv_blocks_for_device(run.model, 16, graph_batch=largest, attention=run.backends()[0])
    return asdict(budget) | {"graph_batch": largest}


def busy(run: Run) -> dict:
    if run.device.type != "cuda":
        return {"note": "needs CUDA"}
    ex, cfg, out = run.executor(run.backends()[0]), run.model.config, {}
    for b in (1, 64):
        sb = SpreadBatch(f"decode {b}", decodes=(run.shapes["context"],) * b)
        batch = build_batch(ex, sb, cfg.vocab_size, 16, random.Random(0))
        out[f"decode {b} graphs"] = busy_share(lambda bb=batch: ex.execute(bb), 5, run.device)
        graphs, ex.graphs = ex.graphs, None
        out[f"decode {b} eager"] = busy_share(lambda bb=batch: ex.execute(bb), 5, run.device)
        ex.graphs = graphs
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="dummy:llama-3-8b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument(
        "--attention",
        default=None,
        help="comma-separated backends (default: flex, and flashinfer when importable, on CUDA; cpu on CPU)",
    )
    ap.add_argument("--out", default=None, help="folder for gpu_engine.json (default: $OUT)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (one: the CPU is shared)")
    ap.add_argument("--token-budget", type=int, default=8192, help="offline: tokens per iteration")
    ap.add_argument(
        "--peak-tflops", type=float, default=790.0, help="bf16 dense peak for the roofline (H200)"
    )
    ap.add_argument(
        "--bandwidth-tbs", type=float, default=4.3, help="memory bandwidth for the roofline (H200)"
    )
    ap.add_argument("--time-limit", type=float, default=450.0, help="skip parts that would run past this")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run(args)
    for name, fn, budget in [
        ("iterations", iterations, 30),
        ("busy", busy, 10),
        ("kv_sizing", kv_sizing, 10),
        ("logits", logits, 10),
        ("offline", offline, 40),
        ("hf_generate", hf_generate, 40),
    ]:
        run.part(name, fn, budget if run.device.type == "cuda" else 0)
    print(f"results: {run.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
