"""vLLM's own client for `vs_vllm_engine.py`: the prompts it sends (a `custom` dataset of a workload's
lengths, random words) and one `vllm bench serve` run against a server, judged by vLLM bench's
goodput and by each request's TTFT and mean TPOT."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from vs_vllm import Server

from ascendra.workload.lengths import load_length_model

NAME = "smollm2"
BENCH = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser as P; p = P(); add_cli_args(p); "
    "main(p.parse_args(sys.argv[1:]))"
)



def workload_name(a: argparse.Namespace) -> str:
    return f"{a.workload}/{a.length_scale:g}"


def write_dataset(path: Path, n: int, seed: int, workload: str, max_model_len: int, tokenizer) -> None:
    """n prompts with `workload`'s lengths (`conv/4`: conv lengths / 4); random vocabulary words, so
    no two runs share a prefix."""
    rng = np.random.default_rng(seed)
    lengths = load_length_model(workload)
    prompts, outputs = lengths.sample(n, rng)
    vocab = [t for t in range(1000, 40000)]
    with path.open("w") as f:
        for p, o in zip(prompts, outputs, strict=True):
            o = int(min(o, 256))
            p = int(min(p, max_model_len - o - 16))
            ids = rng.choice(vocab, size=p).tolist()
            text = tokenizer.decode(tokenizer.encode(tokenizer.decode(ids))[:p])
            f.write(json.dumps({"prompt": text, "output_tokens": o}) + "\n")


def bench(
    s: Server,
    a: argparse.Namespace,
    data: Path,
    rate: float | None,
    n: int,
    seed: int,
    out: Path,
    tag: str,
    model: Path,
    concurrency: int | None = None,
    extra_body: dict | None = None,
) -> dict:
    args = [
        "--backend",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{s.port}",
        "--endpoint",
        "/v1/completions",
        "--model",
        NAME,
        "--tokenizer",
        str(model),
        "--dataset-name",
        "custom",
        "--dataset-path",
        str(data),
        "--custom-output-len",
        "-1",
        "--skip-chat-template",
        "--num-prompts",
        str(n),
        "--seed",
        str(seed),
        "--ignore-eos",
        "--temperature",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--goodput",
        f"ttft:{a.ttft_slo_ms}",
        f"tpot:{a.tpot_slo_ms}",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(out),
        "--result-filename",
        f"{tag}.json",
        "--disable-tqdm",
        "--ready-check-timeout-sec",
        "0",
    ]
    args += ["--request-rate", str(rate)] if rate else ["--request-rate", "inf"]
    if concurrency:
        args += ["--max-concurrency", str(concurrency)]
    if extra_body:
        args += ["--extra-body", json.dumps(extra_body)]
    with open(out / f"{tag}.log", "w") as log:
        subprocess.run([sys.executable, "-c", BENCH, *args], check=True, stdout=log, stderr=subprocess.STDOUT)
    res = json.loads((out / f"{tag}.json").read_text())
    ttft = np.asarray(res["ttfts"], dtype=float)
    itls = res["itls"]
    tpot_ok = [(len(x) == 0 or np.mean(x) <= a.tpot_slo_ms / 1000) for x in itls]
    ok = (ttft <= a.ttft_slo_ms / 1000) & np.asarray(tpot_ok) & (ttft > 0)
    return {
        "attainment": float(ok.mean()),
        "goodput": res.get("request_goodput"),
        "throughput": res["output_throughput"],
        "total_throughput": res["total_token_throughput"],  # prompt and output tokens per second
        "ttft_p50": res["median_ttft_ms"],
        "ttft_p90": res.get("p90_ttft_ms"),
        "tpot_p50": res["median_tpot_ms"],
        "completed": res["completed"],
        "duration": res["duration"],
        "load": os.getloadavg()[0],
    }
