"""Iteration times of the engine on this machine, configurations side by side in one run.

Each configuration (dtype x attention backend x packed weights) gets its own executor over the same
SmolLM2 weights; every batch runs through `TorchExecutor.execute` (inputs, model, sampling), the
configurations alternating within each repeat so load from other processes hits them alike; the
median is reported with the 1-minute load average.

    python benchmarks/engine_steps.py --threads 1 --repeats 7
    python benchmarks/engine_steps.py --configs bfloat16/cpu,bfloat16/sdpa,float32/cpu,bfloat16/cpu/plain
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascendra.engine.profiler import SpreadBatch, build_batch  # noqa: E402
from ascendra.engine.torch_executor import TorchExecutor  # noqa: E402
from ascendra.model.loader import load_model  # noqa: E402

BATCHES = [
    SpreadBatch("decode 1 @ 256", decodes=(256,)),
    SpreadBatch("decode 16 @ 256", decodes=(256,) * 16),
    SpreadBatch("decode 64 @ 256", decodes=(256,) * 64),
    SpreadBatch("prefill 128", ((0, 128),)),
    SpreadBatch("prefill 512", ((0, 512),)),
    SpreadBatch("hybrid 8 @ 256 + 128", ((0, 128),), (256,) * 8),
]


def executor(config: str, blocks: int) -> TorchExecutor:
    dtype, attention, *rest = config.split("/")
    lm = load_model(dtype=getattr(torch, dtype))
    ex = TorchExecutor(lm.model, blocks, 16, attention=attention)
    if rest == ["plain"]:  # the matmuls without the packed weights
        lm.model.cast(lm.model.dtype, lm.model.device)
    return ex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="bfloat16/cpu,float32/cpu,bfloat16/sdpa,bfloat16/cpu/plain")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--blocks", type=int, default=1200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = args.configs.split(",")
    executors = [executor(c, args.blocks) for c in configs]
    vocab = executors[0].config.vocab_size
    print(f"SmolLM2-135M, {args.threads} thread(s), median of {args.repeats}, ms per iteration")
    print(f"| batch | {' | '.join(configs)} | load |")
    print(f"|---|{'---:|' * len(configs)}---:|")
    for sb in BATCHES:
        batches = [build_batch(ex, sb, vocab, 16, random.Random(0)) for ex in executors]
        for ex, b in zip(executors, batches, strict=True):
            ex.execute(b)  # warm-up
        times: list[list[float]] = [[] for _ in executors]
        for _ in range(args.repeats):
            for ex, b, ts in zip(executors, batches, times, strict=True):
                t0 = time.perf_counter()
                ex.execute(b)
                ts.append(1e3 * (time.perf_counter() - t0))
        for ex, b in zip(executors, batches, strict=True):
            for r in b.requests:
                ex.release(r.request_id)
        cells = " | ".join(f"{statistics.median(ts):.1f}" for ts in times)
        print(f"| {sb.label} | {cells} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
