"""How many KV blocks fit on a GPU once the weights, the activations and the decode graphs have theirs.

The KV pool takes what is left, so what else lives on the device must be measured first, as vLLM's
profile run does: a forward of the largest prompt chunk (its activation peak) and one of the largest
graph bucket (what its captured graph keeps in its private pool, which eager iterations cannot
reuse), both on a throw-away pool of a few blocks. Run on an H200 (docs/benchmarks.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascendra.core.batch import ScheduledBatch
from ascendra.core.request import SLO, Request
from ascendra.model.llama import LlamaForCausalLM


@dataclass
class DeviceBudget:
    free_bytes: int  # free device memory with the weights loaded
    activation_bytes: int  # peak of an eager forward of the largest prompt chunk
    graph_bytes: int  # peak of a forward of the largest graph bucket (its graph pool)
    block_bytes: int
    num_blocks: int


def kv_blocks_for_device(
    model: LlamaForCausalLM,
    block_size: int = 16,
    fraction: float = 0.9,
    max_tokens: int = 8192,
    graph_batch: int = 256,
    attention: str | None = None,
) -> DeviceBudget:
    from ascendra.engine.torch_executor import TorchExecutor

    dev = model.device
    if dev.type != "cuda":
        raise ValueError("kv_blocks_for_device measures a CUDA device; on CPU give --kv-cache-memory")
    probe = TorchExecutor(model, -(-max_tokens // block_size) + 1, block_size, attention=attention,
                          cuda_graphs=False)
    activation = _peak(probe, [(0, max_tokens)], model.config.vocab_size)
    graphs = _peak(probe, [(0, 1)] * graph_batch, model.config.vocab_size)
    del probe
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(dev)
    elem = torch.empty((), dtype=model.dtype).element_size()
    block_bytes = model.config.kv_bytes_per_token(elem) * block_size
    usable = int(free * fraction) - activation - graphs
    return DeviceBudget(free, activation, graphs, block_bytes, max(usable // block_bytes, 0))


def _peak(executor, seqs: list[tuple[int, int]], vocab: int) -> int:
    """Memory a forward of `seqs` ((num_computed, num_new) each, from 0) needs above what is
    allocated before it; every sequence shares the probe's blocks (their contents do not matter)."""
    batch = ScheduledBatch()
    blocks = list(range(executor.num_blocks))
    for i, (_, n) in enumerate(seqs):
        r = Request(f"probe{i}", 0.0, n, 1, SLO(1.0, 1.0), prompt_token_ids=[i % vocab] * n)
        r.block_ids = blocks[: -(-n // executor.block_size)]
        batch.add(r, n)
    dev = executor.device
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    executor.execute(batch)
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) - base
