"""Iteration time of the paged-KV model next to a contiguous-cache reference, on the SmolLM2-135M shape.

Both paths run the same weights and layer code; only attention differs. The reference keeps every
sequence's K/V in a preallocated contiguous [B, kv_heads, max_len, head_dim] cache and calls SDPA on a
slice of it with no mask (all sequences of equal length: its best case). The paged path scatters
blocks at random over a pool, builds its per-batch metadata every iteration (counted in its time),
gathers with one index_select per decode bucket and layer, and masks the block padding.

    PYTHONPATH=. python3 benchmarks/attention_paging.py [--repeats 7] [--load-blocks 1024]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ascendra.model.attention import SeqChunk, build_metadata
from ascendra.model.attn_backends import make_attention
from ascendra.model.config import named_config
from ascendra.model.kv_cache import KVCache
from ascendra.model.layers import rope_qk, silu_and_mul
from ascendra.model.llama import MATMULS, LlamaForCausalLM, rms_norm
from ascendra.model.loader import load_dummy
from ascendra.model.rope import cos_sin

BLOCK = 16
CONTEXT = 512


def contiguous_forward(model: LlamaForCausalLM, ids: torch.Tensor, start: int, cache: list) -> torch.Tensor:
    """ids [B, S] at positions start..start+S-1 (same for every row); logits of each row's last token."""
    c = model.config
    b, s = ids.shape
    t = b * s
    qs = c.num_heads * c.head_dim
    cos, sin = cos_sin(torch.arange(start, start + s).repeat(b), model.inv_freq, model.dtype)
    x = F.embedding(ids.reshape(-1), model.embed)
    mm = model._linear  # the same matmul kernels (packed or plain) as the paged forward
    for i, (layer, (ck, cv)) in enumerate(zip(model.layers, cache, strict=True)):
        w = model._weights[i] if model._weights is not None else {n: getattr(layer, n) for n in MATMULS}
        h = rms_norm(x, layer.input_norm, c.rms_norm_eps)
        qkv = mm(h, w["qkv"]).view(t, c.num_heads + 2 * c.num_kv_heads, c.head_dim)
        qk = rope_qk(qkv[:, : c.num_heads + c.num_kv_heads], cos, sin)
        q, k, v = qk[:, : c.num_heads], qk[:, c.num_heads :], qkv[:, c.num_heads + c.num_kv_heads :]
        ck[:, :, start:start + s] = k.view(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        cv[:, :, start:start + s] = v.view(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q.view(b, s, c.num_heads, c.head_dim).transpose(1, 2),
            ck[:, :, : start + s],
            cv[:, :, : start + s],
            is_causal=s > 1,
            enable_gqa=True,
        )
        x = x + mm(o.transpose(1, 2).reshape(t, qs), w["o"])
        h = rms_norm(x, layer.post_norm, c.rms_norm_eps)
        x = x + mm(silu_and_mul(mm(h, w["gate_up"])), w["down"])
    last = torch.arange(s - 1, t, s)
    head = model._lm_head if model._lm_head is not None else model.lm_head
    return mm(rms_norm(x[last], model.norm, c.rms_norm_eps), head).float()


def paired_median_ms(fns: list, repeats: int) -> list[float]:
    """Median time of each fn; the fns alternate within every repeat so load from other processes on
    the shared cores hits them alike."""
    for fn in fns:
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) * 1e3 for ts in times]


def scenario(
    model: LlamaForCausalLM, batch: int, new: int, computed: int, repeats: int
) -> tuple[float, float]:
    c = model.config
    ctx = computed + new
    per_seq = -(-ctx // BLOCK)
    layout = model.attention_backend().kv_layout
    pool = KVCache.allocate(c, batch * per_seq + 8, BLOCK, model.dtype, "cpu", layout)
    order = torch.randperm(pool.num_blocks, generator=torch.Generator().manual_seed(0)).tolist()
    tables = [order[i * per_seq:(i + 1) * per_seq] for i in range(batch)]
    ids = torch.randint(0, c.vocab_size, (batch, new))
    flat = ids.reshape(-1)
    last = torch.arange(new - 1, batch * new, new)
    cache = [
        tuple(torch.zeros(batch, c.num_kv_heads, ctx, c.head_dim, dtype=model.dtype) for _ in range(2))
        for _ in range(c.num_layers)
    ]

    def paged() -> None:
        meta = build_metadata([SeqChunk(tb, computed, new, new == 1) for tb in tables], BLOCK, "cpu")
        model(flat, meta, pool, last)

    def contiguous() -> None:
        contiguous_forward(model, ids, computed, cache)

    with torch.inference_mode():
        paged_ms, contig_ms = paired_median_ms([paged, contiguous], repeats)
    return paged_ms, contig_ms


def load_figures(blocks: int) -> None:
    from ascendra.engine.torch_executor import TorchExecutor
    from ascendra.model.loader import load_model

    t0 = time.perf_counter()
    lm = load_model()
    load_s = time.perf_counter() - t0
    ex = TorchExecutor(lm.model, num_blocks=blocks, block_size=BLOCK)
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(x for x in status if x.startswith("VmRSS")).split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pool_mib = ex.kv_cache.nbytes / 2**20
    print(f"GGUF load: {load_s:.2f} s; KV pool {blocks} blocks x {BLOCK} tokens = {pool_mib:.0f} MiB")
    print(f"RSS with model + pool: {rss / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--load-blocks", type=int, default=0, help="also GGUF load time, RSS (N blocks)")
    ap.add_argument("--cases", default="all", help="e.g. 'decode32,prefill512'")
    ap.add_argument("--attention", default="auto", help="paged attention backend (auto: the CPU's default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.load_blocks:
        load_figures(args.load_blocks)
    cases = [("decode", 1, 1, CONTEXT), ("decode", 8, 1, CONTEXT), ("decode", 32, 1, CONTEXT),
             ("prefill", 1, 128, 0), ("prefill", 1, 512, 0)]
    if args.cases != "all":
        wanted = args.cases.split(",")
        cases = [cs for cs in cases if f"{cs[0]}{cs[1] if cs[0] == 'decode' else cs[2]}" in wanted]
    print(f"SmolLM2-135M shape, dummy weights, block {BLOCK}, {args.threads} threads, "
          f"median of {args.repeats}, paged attention {args.attention}")
    print(f"{'case':<22}{'dtype':<10}{'paged ms':>10}{'contig ms':>11}{'paged/contig':>14}")
    for dtype_name in args.dtypes.split(","):
        model = load_dummy(named_config("smollm2-135m"), getattr(torch, dtype_name)).model
        model.use_attention(make_attention(args.attention, model.config, "cpu", model.dtype))
        model.pack_weights()
        for kind, batch, new, computed in cases:
            paged, contig = scenario(model, batch, new, computed, args.repeats)
            label = f"{kind} B={batch} ctx={computed + new}" if kind == "decode" else f"prefill {new}"
            print(f"{label:<22}{dtype_name:<10}{paged:>10.1f}{contig:>11.1f}{paged / contig:>14.2f}")


if __name__ == "__main__":
    main()
