"""Measures for benchmarks/gpu_engine.py: roofline of an iteration, GPU-busy share, timing.

Imports only torch and the engine (the GPU machine has no network and no server packages).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from ascendra.model.config import ModelConfig


@dataclass
class Roofline:
    flops: float
    bytes: float
    ms: float  # max(compute time at peak, memory time at full bandwidth)
    bound: str  # "compute" or "memory"


def roofline(
    cfg: ModelConfig, seqs: list[tuple[int, int]], elem: int, peak_flops: float, bandwidth: float
) -> Roofline:
    """One iteration of `seqs` ((num_computed, num_new) each; every sequence samples): matmul and
    attention FLOPs, and the bytes of the weights (read once), the LM head and the K/V read and
    written. Activations are left out (small next to weights and K/V at these shapes)."""
    embed = cfg.vocab_size * cfg.hidden_size
    layer_params = cfg.num_params - embed * (1 if cfg.tie_word_embeddings else 2) - cfg.hidden_size
    tokens = sum(n for _, n in seqs)
    pairs = sum(n * c + n * (n + 1) // 2 for c, n in seqs)  # causal query-key pairs
    flops = 2 * layer_params * tokens + 2 * embed * len(seqs)
    flops += 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * pairs
    kv = cfg.kv_bytes_per_token(elem) * sum(c + n for c, n in seqs)
    nbytes = (layer_params + embed) * elem + kv
    compute, memory = flops / peak_flops, nbytes / bandwidth
    return Roofline(flops, nbytes, 1e3 * max(compute, memory), "compute" if compute > memory else "memory")


def median_ms(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def busy_share(fn, iterations: int, device: torch.device) -> dict:
    """Share of wall time the GPU ran kernels (the union of kernel intervals, by torch.profiler)
    over `iterations` calls, and kernels per call. The profiler's own overhead lengthens the wall
    time a little, so the share is a lower bound."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize(device)
        wall_us = 1e6 * (time.perf_counter() - t0)
    spans = sorted(
        (e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA
    )
    busy, end = 0.0, -1.0
    for s, e in spans:
        if e <= end:
            continue
        busy += e - max(s, end)
        end = e
    return {
        "busy_share": busy / wall_us if wall_us else 0.0,
        "kernels_per_iteration": len(spans) / iterations,
        "wall_ms_per_iteration": wall_us / iterations / 1e3,
    }


def as_dict(r: Roofline) -> dict:
    return asdict(r)
