"""Why the CPU path is what it is: the alternatives for each of its parts, timed side by side.

At SmolLM2-135M's shape (9 query heads, 3 KV heads, head dim 64, 30 layers), bfloat16, one thread,
alternatives alternating within each repeat, median reported with the load average:

1. decode attention over a gathered context: PyTorch SDPA (its CPU flash kernel) against the grouped
   matmul + float32 softmax the `cpu` backend uses, and SDPA in float32;
2. the gather for each KV layout: NHD needs a strided transpose before the matmul, HND none;
3. compiled FlexAttention over the pool in place (no gather), batch of one-query rows, and a
   `torch.compile`d decode attention whose gather inductor may fuse into the score loop;
4. causal prompt attention: SDPA, compiled FlexAttention, a dense matmul;
5. the 30 layers' matmuls with plain weights against weights packed once for oneDNN;
6. the pointwise ops (add+RMSNorm, RoPE, SiLU-and-mul) eager against `torch.compile`d.

    python benchmarks/cpu_kernels.py [--repeats 30] [--skip-flex]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from ascendra.model import layers
from ascendra.model.attn_gather import _decode_matmul
from ascendra.model.linear import pack, packed_linear

H, KV, D, BS = 9, 3, 64, 16


def side_by_side(fns: dict, repeats: int) -> dict[str, float]:
    for f in fns.values():
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def show(title: str, res: dict[str, float]) -> None:
    cells = ", ".join(f"{k} {v:.3f}" for k, v in res.items())
    print(f"{title}: {cells} ms (load {os.getloadavg()[0]:.1f})", flush=True)


def attention(b: int, ctx: int, repeats: int, flex: bool) -> None:
    dt, nb = torch.bfloat16, ctx // BS
    pool = 4 * b * nb
    g = torch.Generator().manual_seed(0)
    blocks = torch.randperm(pool, generator=g)[: b * nb]
    nhd_k, nhd_v = (torch.randn(pool, BS, KV, D, dtype=dt, generator=g) for _ in range(2))
    hnd_k, hnd_v = nhd_k.transpose(1, 2).contiguous(), nhd_v.transpose(1, 2).contiguous()
    q = torch.randn(b, H, D, dtype=dt, generator=g)
    ctxs = torch.randint(ctx - BS + 1, ctx + 1, (b,), generator=g)
    allowed = torch.arange(ctx)[None, :] < ctxs[:, None]
    mask = torch.zeros(b, 1, 1, ctx, dtype=dt).masked_fill_(~allowed.view(b, 1, 1, ctx), float("-inf"))
    hnd_index = (blocks.view(b, 1, nb) * KV + torch.arange(KV).view(1, KV, 1)).reshape(-1)
    kb, vb = (torch.empty(b * KV * nb, BS, D, dtype=dt) for _ in range(2))

    def gather_hnd():
        torch.index_select(hnd_k.view(-1, BS, D), 0, hnd_index, out=kb)
        torch.index_select(hnd_v.view(-1, BS, D), 0, hnd_index, out=vb)
        return kb.view(b, KV, ctx, D), vb.view(b, KV, ctx, D)

    def gather_nhd():
        return (
            nhd_k.index_select(0, blocks).view(b, ctx, KV, D).transpose(1, 2),
            nhd_v.index_select(0, blocks).view(b, ctx, KV, D).transpose(1, 2),
        )

    k, v = gather_hnd()
    fns = {
        "sdpa bf16": lambda: F.scaled_dot_product_attention(
            q.unsqueeze(2), k, v, attn_mask=mask, enable_gqa=True
        ),
        "sdpa fp32": lambda: F.scaled_dot_product_attention(
            q.float().unsqueeze(2), k.float(), v.float(), attn_mask=mask.float(), enable_gqa=True
        ),
        "matmul (cpu backend)": lambda: _decode_matmul(q, k, v, mask),
        "gather HND + matmul": lambda: _decode_matmul(q, *gather_hnd(), mask),
        "gather NHD + matmul": lambda: _decode_matmul(q, *gather_nhd(), mask),
    }
    if flex:
        fns["flex compiled, in place"] = _flex(q, nhd_k, nhd_v, blocks.view(b, nb), ctxs)
        fused = torch.compile(_gather_fused, dynamic=True)
        index = hnd_index.view(b, KV, nb)
        fmask = mask.float()
        fns["compiled gather-fused"] = lambda: fused(
            q, hnd_k.view(-1, BS, D), hnd_v.view(-1, BS, D), index, fmask
        )
    show(f"decode attention, one layer, {b} x ctx {ctx}", side_by_side(fns, repeats))


def _gather_fused(q, k_rows, v_rows, index, mask):
    """Decode attention as elementwise products and sums over the pool rows `index` points at, so
    inductor can fold the gather into the loops instead of copying the context first."""
    b, nb = q.shape[0], index.shape[-1]
    k, v = k_rows[index], v_rows[index]  # [B, KV, nb, BS, D]
    s = (q.view(b, KV, H // KV, 1, 1, D).float() * k[:, :, None].float()).sum(-1)
    p = (s.view(b, KV, H // KV, nb * BS) * D**-0.5 + mask).softmax(-1)
    o = (p.view(b, KV, H // KV, nb, BS, 1) * v[:, :, None].float()).sum((3, 4))
    return o.to(q.dtype).view(b, H, D)


def prompt_attention(t: int, repeats: int, flex: bool) -> None:
    dt = torch.bfloat16
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, H, t, D, dtype=dt, generator=g)
    k, v = (torch.randn(1, KV, t, D, dtype=dt, generator=g) for _ in range(2))
    causal = torch.full((t, t), float("-inf")).triu(1)

    def dense():
        s = torch.matmul(q.view(KV, H // KV * t, D), k[0].transpose(-1, -2)).float().view(KV, H // KV, t, t)
        p = (s * D**-0.5 + causal).softmax(-1).to(dt)
        return torch.matmul(p.view(KV, -1, t), v[0])

    fns = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        "dense matmul": dense,
    }
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, t, t, device="cpu", BLOCK_SIZE=64)
        fa = torch.compile(flex_attention, dynamic=False)
        fns["flex compiled"] = lambda: fa(q, k, v, block_mask=bm, enable_gqa=True)
    show(f"causal prompt attention, one layer, {t} tokens", side_by_side(fns, max(3, repeats // 5)))


def _flex(q, k_pool, v_pool, table, ctxs):
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    b, nb = table.shape
    pool = k_pool.shape[0]
    owner = torch.full((pool,), -1)
    logical = torch.zeros(pool, dtype=torch.long)
    owner[table.reshape(-1)] = torch.arange(b).repeat_interleave(nb)
    logical[table.reshape(-1)] = torch.arange(nb).repeat(b)

    def mask_mod(bi, h, q_idx, kv_idx):
        blk = kv_idx // BS
        return (owner[blk] == bi) & (logical[blk] * BS + kv_idx % BS < ctxs[bi])

    idx = torch.zeros(b, 1, 1, pool, dtype=torch.int32)  # the CPU lowering wants pool-wide lists
    idx[:, 0, 0, :nb] = table.to(torch.int32)
    num = torch.full((b, 1, 1), nb, dtype=torch.int32)
    none = torch.zeros(b, 1, 1, dtype=torch.int32)  # torch 2.13's CPU decode template needs full blocks
    bm = BlockMask.from_kv_blocks(
        num,
        idx,
        none,
        torch.zeros_like(idx),
        BLOCK_SIZE=(16, BS),
        mask_mod=mask_mod,
        seq_lengths=(1, pool * BS),
        compute_q_blocks=False,
    )
    keys = k_pool.view(1, pool * BS, KV, D).transpose(1, 2)
    values = v_pool.view(1, pool * BS, KV, D).transpose(1, 2)
    fa = torch.compile(flex_attention, dynamic=False)
    return lambda: fa(q.unsqueeze(2), keys, values, block_mask=bm, enable_gqa=True)


def matmuls(rows: int, repeats: int) -> None:
    dt = torch.bfloat16
    shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
    weights = [[torch.randn(n, k, dtype=dt) * 0.02 for n, k in shapes] for _ in range(30)]
    packed = [[pack(w) for w in ws] for ws in weights]
    xs = {k: torch.randn(rows, k, dtype=dt) for k in (576, 1536)}
    fns = {
        "plain": lambda: [F.linear(xs[w.shape[1]], w) for ws in weights for w in ws],
        "packed": lambda: [
            packed_linear(xs[w.shape[1]], p)
            for ws, ps in zip(weights, packed, strict=True)
            for w, p in zip(ws, ps, strict=True)
        ],
    }
    show(f"30 layers' matmuls, {rows} rows", side_by_side(fns, max(3, repeats // 5)))


def pointwise(rows: int, repeats: int) -> None:
    dt = torch.bfloat16
    x, r, w = torch.randn(rows, 576, dtype=dt), torch.randn(rows, 576, dtype=dt), torch.randn(576, dtype=dt)
    qk, cos, sin = (
        torch.randn(rows, 12, 64, dtype=dt),
        torch.randn(rows, 1, 64, dtype=dt),
        torch.randn(rows, 1, 64, dtype=dt),
    )
    gu = torch.randn(rows, 3072, dtype=dt)
    c_norm, c_rope, c_silu = (
        torch.compile(f, dynamic=True) for f in (layers.add_rms_norm, layers.rope_qk, layers.silu_and_mul)
    )
    fns = {
        "eager": lambda: (
            layers.add_rms_norm(x, r, w, 1e-5),
            layers.rope_qk(qk, cos, sin),
            layers.silu_and_mul(gu),
        ),
        "compiled": lambda: (c_norm(x, r, w, 1e-5), c_rope(qk, cos, sin), c_silu(gu)),
    }
    show(f"pointwise ops of one layer, {rows} rows", side_by_side(fns, repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument(
        "--skip-flex", action="store_true", help="skip the compiled variants (~30 s of compiling)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    with torch.inference_mode():
        for b, ctx in ((1, 256), (16, 208), (64, 256)):
            attention(b, ctx, args.repeats, not args.skip_flex and b == 16)
        for t in (128, 512):
            prompt_attention(t, args.repeats, not args.skip_flex)
        for rows in (1, 16, 128, 512):
            matmuls(rows, args.repeats)
        for rows in (16, 512):
            pointwise(rows, args.repeats)


if __name__ == "__main__":
    main()
