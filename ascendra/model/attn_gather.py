"""Paged attention that gathers each part's K/V blocks into a dense buffer, then attends to it.

Two variants share the gather plan:

- `sdpa`, the reference every other backend is tested against: an "NHD" pool, SDPA for prompt
  chunks and decodes alike (the engine's original path).
- `cpu`, the CPU default: an "HND" pool, so one `index_select` lays each sequence's context out
  as a contiguous `[kv_heads, tokens, head_dim]`; SDPA for prompt chunks, and for decodes a grouped
  matmul, a float32 softmax and a second matmul. PyTorch's CPU flash kernel is slow for one query
  row in bfloat16 (3.0 ms against 0.23 ms for the matmul form, 16 decodes x 208 tokens at SmolLM2's
  heads; docs/benchmarks.md section 6), and on CPU the gather is cheap next to the rest.

Decodes are bucketed by context length so one long context does not pad every short one; each
prompt chunk gets its own call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ascendra.model.attention import AttentionMetadata
from ascendra.model.config import ModelConfig

# A decode joins the current bucket unless padding would exceed this share of useful blocks
# (plus a small constant), which keeps the number of buckets, i.e. calls per layer, small.
_PAD_RATIO = 1.25
_PAD_SLACK_BLOCKS = 8


@dataclass
class Part:
    """Queries of the flattened batch that attend to one gathered buffer."""

    rows: slice | torch.Tensor | None  # a prompt chunk's token range; decode rows; None: every row
    batch: int  # sequences sharing the buffer (1 for a prompt chunk)
    gather_index: torch.Tensor | None  # what to gather; None: a fresh prompt (attend to its own K/V)
    mask: torch.Tensor | None  # additive, in the model dtype; None: none needed (or causal)


@dataclass
class GatherPlan:
    prefills: list[Part]
    decodes: list[Part]
    # Gather buffers by size, allocated by the first layer and reused by the others: a fresh
    # multi-MB tensor per layer costs page faults that showed up as most of the gather time.
    buffers: dict[int, tuple[torch.Tensor, torch.Tensor]]


class GatherAttention:
    def __init__(self, config: ModelConfig, decode: str = "sdpa") -> None:
        if decode not in ("sdpa", "matmul"):
            raise ValueError(f"decode must be 'sdpa' or 'matmul', got {decode!r}")
        self.kv_heads = config.num_kv_heads
        self.decode = decode
        self.name = "sdpa" if decode == "sdpa" else "cpu"
        self.kv_layout = "NHD" if decode == "sdpa" else "HND"

    def plan(self, meta: AttentionMetadata, dtype: torch.dtype) -> GatherPlan:
        bs, dev = meta.block_size, meta.device
        prefills: list[Part] = []
        decode_rows: list[tuple[int, int, int]] = []  # (num_blocks, token row, sequence)
        for i, ch in enumerate(meta.chunks):
            start, end, ctx = meta.query_start[i], meta.query_start[i + 1], meta.seq_lens[i]
            nb = -(-ctx // bs)
            if ch.decode:
                decode_rows.append((nb, start, i))
            elif ch.num_computed == 0:
                prefills.append(Part(slice(start, end), 1, None, None))
            else:
                allowed = torch.arange(nb * bs)[None, :] <= torch.arange(ch.num_computed, ctx)[:, None]
                index = self._gather_index(meta.block_table[i : i + 1, :nb]).to(dev)
                prefills.append(Part(slice(start, end), 1, index, _additive(allowed, dtype, dev)))
        groups = _bucket(sorted(decode_rows))
        whole = len(groups) == 1 and not prefills  # decode-only, one bucket: no row shuffling
        decodes = [self._decode_part(g, meta, dtype, whole) for g in groups]
        return GatherPlan(prefills, decodes, {})

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """q: [T, H, D]; k, v: [T, KV, D], already in the cache. Returns [T, H, D]."""
        plan: GatherPlan = meta.plan
        out = torch.empty_like(q)
        for p in plan.prefills:
            qs = q[p.rows].transpose(0, 1).unsqueeze(0)
            if p.gather_index is None:
                ks = k[p.rows].transpose(0, 1).unsqueeze(0)
                vs = v[p.rows].transpose(0, 1).unsqueeze(0)
                o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
            else:
                ks, vs = self._gather(k_cache, v_cache, p, plan.buffers)
                o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=p.mask, enable_gqa=True)
            out[p.rows] = o[0].transpose(0, 1)
        for p in plan.decodes:
            qd = q if p.rows is None else q.index_select(0, p.rows)
            kd, vd = self._gather(k_cache, v_cache, p, plan.buffers)
            if self.decode == "matmul":
                o = _decode_matmul(qd, kd, vd, p.mask)
            else:
                o = F.scaled_dot_product_attention(qd.unsqueeze(2), kd, vd, attn_mask=p.mask, enable_gqa=True)
                o = o.squeeze(2)
            if p.rows is None:
                return o
            out.index_copy_(0, p.rows, o)
        return out

    # ---- gathering -----------------------------------------------------------------------------
    def _gather_index(self, blocks: torch.Tensor) -> torch.Tensor:
        """Rows of the pool to gather for [B, nb] block ids: whole blocks (NHD), or for HND each
        (block, head) row in [B, head, block] order so the result is [B, KV, tokens, D]."""
        if self.kv_layout == "NHD":
            return blocks.reshape(-1)
        heads = torch.arange(self.kv_heads)[None, :, None]
        return (blocks[:, None, :] * self.kv_heads + heads).reshape(-1)

    def _gather(
        self,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        part: Part,
        buffers: dict[int, tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The part's K and V as [batch, kv_heads, L, head_dim] (views over reused buffers)."""
        index = part.gather_index
        assert index is not None
        if self.kv_layout == "NHD":
            bs, kvh, d = k_cache.shape[1:]
            kp, vp = k_cache, v_cache
        else:
            kvh, bs, d = k_cache.shape[1:]
            kp, vp = k_cache.view(-1, bs, d), v_cache.view(-1, bs, d)
        n = index.numel()
        if n not in buffers:
            buffers[n] = (kp.new_empty((n, *kp.shape[1:])), vp.new_empty((n, *vp.shape[1:])))
        kb, vb = buffers[n]
        torch.index_select(kp, 0, index, out=kb)
        torch.index_select(vp, 0, index, out=vb)
        if self.kv_layout == "NHD":
            kd, vd = kb.view(part.batch, -1, kvh, d), vb.view(part.batch, -1, kvh, d)
            return kd.transpose(1, 2), vd.transpose(1, 2)
        return kb.view(part.batch, kvh, -1, d), vb.view(part.batch, kvh, -1, d)

    def _decode_part(
        self, rows: list[tuple[int, int, int]], meta: AttentionMetadata, dtype: torch.dtype, whole: bool
    ) -> Part:
        bs, dev = meta.block_size, meta.device
        nb = rows[-1][0]  # sorted ascending: the last needs the most blocks
        if whole:  # every row of the batch, in its own order
            rows = sorted(rows, key=lambda r: r[1])
        seqs = torch.tensor([r[2] for r in rows], dtype=torch.long)
        ctx = torch.tensor([meta.seq_lens[r[2]] for r in rows], dtype=torch.long)
        mask = None
        if bool((ctx != nb * bs).any()):
            allowed = torch.arange(nb * bs)[None, :] < ctx[:, None]
            mask = _additive(allowed, dtype, dev).view(len(rows), 1, 1, -1)
        index = self._gather_index(meta.block_table[seqs, :nb]).to(dev)
        token_rows = None if whole else torch.tensor([r[1] for r in rows], dtype=torch.long).to(dev)
        return Part(token_rows, len(rows), index, mask)


def _decode_matmul(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """One query per sequence against its gathered context, grouped-query heads sharing their K/V.
    q: [B, H, D]; k, v: [B, KV, L, D]; mask: additive [B, 1, 1, L]. Scores and softmax in float32,
    as the SDPA kernels keep them."""
    b, h, d = q.shape
    kv = k.shape[1]
    scores = torch.matmul(q.view(b, kv, h // kv, d), k.transpose(-1, -2)).float() * (d**-0.5)  # [B, KV, G, L]
    if mask is not None:
        scores = scores + mask  # [B, 1, 1, L] broadcasts over KV heads and their groups
    probs = scores.softmax(dim=-1).to(v.dtype)
    return torch.matmul(probs, v).view(b, h, d)


def _bucket(rows: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    groups: list[list[tuple[int, int, int]]] = []
    useful = 0
    for row in rows:
        if groups:
            padded = (len(groups[-1]) + 1) * row[0]
            if padded <= _PAD_RATIO * (useful + row[0]) + _PAD_SLACK_BLOCKS:
                groups[-1].append(row)
                useful += row[0]
                continue
        groups.append([row])
        useful = row[0]
    return groups


def _additive(allowed: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A bool mask as an additive one in the model dtype, built once per iteration: SDPA would
    otherwise convert a bool mask again in every layer."""
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf")).to(device)
