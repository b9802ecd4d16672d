"""Paged attention over a block-major KV cache for a batch that mixes prompt chunks and decode tokens.

Layout: per layer, K and V are each `[num_blocks, block_size, num_kv_heads, head_dim]`. Position p of a
request lives in block `block_ids[p // block_size]`, slot `p % block_size`. Block-major means one
`index_select` over the block dimension copies whole contiguous blocks, so a group of decodes gathers
all its context with one call per layer and hands SDPA a `[B, kv_heads, L, head_dim]` strided view.

Everything that depends only on the batch (slot mapping, gather indices, masks) is built once per
forward in `AttentionMetadata` and reused by every layer. Decodes are bucketed by context length so a
long context does not pad every short one; each prompt chunk gets its own SDPA call (there are few).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# A decode joins the current bucket unless padding would exceed this share of useful blocks
# (plus a small constant), which keeps the number of buckets, i.e. SDPA calls per layer, small.
_PAD_RATIO = 1.25
_PAD_SLACK_BLOCKS = 8


@dataclass(frozen=True)
class SeqChunk:
    """One sequence of the batch: compute `num_new` tokens after `num_computed` cached ones."""

    block_ids: list[int]
    num_computed: int
    num_new: int
    decode: bool = False  # the request's call (Request.is_decode): one new token, read as a decode


@dataclass
class PrefillChunk:
    start: int  # token range [start, end) in the flattened batch
    end: int
    block_index: torch.Tensor | None  # blocks to gather; None when nothing is cached (use the fresh K/V)
    mask: torch.Tensor | None  # [n, num_blocks * block_size], True = attend
    workspace: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class DecodeGroup:
    token_index: torch.Tensor  # [B] rows of the flattened batch
    block_index: torch.Tensor  # [B * num_blocks] blocks to gather, padded with block 0
    num_blocks: int
    mask: torch.Tensor | None  # [B, 1, 1, num_blocks * block_size]
    # Gather buffers, allocated by the first layer and reused by the others: a fresh multi-MB
    # tensor per layer costs page faults that showed up as most of the gather time.
    workspace: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class AttentionMetadata:
    positions: torch.Tensor  # [T]
    slot_mapping: torch.Tensor  # [T] flat slot (block * block_size + offset) each new K/V is written to
    prefills: list[PrefillChunk]
    decodes: list[DecodeGroup]
    num_tokens: int


def build_metadata(chunks: list[SeqChunk], block_size: int, device: torch.device | str) -> AttentionMetadata:
    """Index tensors for one forward pass; raises ValueError if a sequence lacks blocks."""
    max_blocks = 1
    positions: list[int] = []
    seq_of_token: list[int] = []
    for i, ch in enumerate(chunks):
        if ch.num_new < 1 or ch.num_computed < 0 or (ch.decode and ch.num_new != 1):
            raise ValueError(f"sequence {i}: bad chunk (computed={ch.num_computed}, new={ch.num_new})")
        needed = -(-(ch.num_computed + ch.num_new) // block_size)
        if len(ch.block_ids) < needed:
            raise ValueError(
                f"sequence {i}: {len(ch.block_ids)} blocks cannot hold {ch.num_computed + ch.num_new} tokens"
            )
        max_blocks = max(max_blocks, needed)
        positions.extend(range(ch.num_computed, ch.num_computed + ch.num_new))
        seq_of_token.extend([i] * ch.num_new)
    table = torch.tensor([(ch.block_ids + [0] * max_blocks)[:max_blocks] for ch in chunks], dtype=torch.long)
    pos = torch.tensor(positions, dtype=torch.long)
    seq = torch.tensor(seq_of_token, dtype=torch.long)
    slots = table[seq, pos // block_size] * block_size + pos % block_size

    prefills: list[PrefillChunk] = []
    decode_rows: list[tuple[int, int, int]] = []  # (num_blocks, token row, sequence)
    start = 0
    for i, ch in enumerate(chunks):
        end = start + ch.num_new
        ctx = ch.num_computed + ch.num_new
        nb = -(-ctx // block_size)
        if ch.decode:
            decode_rows.append((nb, start, i))
        elif ch.num_computed == 0:
            prefills.append(PrefillChunk(start, end, None, None))
        else:
            keys = torch.arange(nb * block_size)
            queries = torch.arange(ch.num_computed, ctx)
            mask = (keys[None, :] <= queries[:, None]).to(device)
            prefills.append(PrefillChunk(start, end, table[i, :nb].to(device), mask))
        start = end
    decodes = [_decode_group(g, table, chunks, block_size, device) for g in _bucket(sorted(decode_rows))]
    return AttentionMetadata(pos.to(device), slots.to(device), prefills, decodes, len(positions))


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


def _decode_group(
    rows: list[tuple[int, int, int]],
    table: torch.Tensor,
    chunks: list[SeqChunk],
    block_size: int,
    device: torch.device | str,
) -> DecodeGroup:
    nb = rows[-1][0]  # sorted ascending: the last needs the most blocks
    seqs = torch.tensor([r[2] for r in rows], dtype=torch.long)
    ctx = torch.tensor([chunks[r[2]].num_computed + 1 for r in rows], dtype=torch.long)
    mask = None
    if bool((ctx != nb * block_size).any()):
        mask = (torch.arange(nb * block_size)[None, :] < ctx[:, None]).view(len(rows), 1, 1, -1).to(device)
    return DecodeGroup(
        token_index=torch.tensor([r[1] for r in rows], dtype=torch.long).to(device),
        block_index=table[seqs, :nb].reshape(-1).to(device),
        num_blocks=nb,
        mask=mask,
    )


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
) -> torch.Tensor:
    """q: [T, H, D]; k, v: [T, KV, D] (already rotated). Writes k, v into the cache, returns [T, H, D]."""
    num_kv, head_dim = k.shape[1], k.shape[2]
    k_cache.view(-1, num_kv, head_dim).index_copy_(0, meta.slot_mapping, k)
    v_cache.view(-1, num_kv, head_dim).index_copy_(0, meta.slot_mapping, v)
    out = torch.empty_like(q)
    for p in meta.prefills:
        qs = q[p.start : p.end].transpose(0, 1).unsqueeze(0)
        if p.block_index is None:
            ks = k[p.start : p.end].transpose(0, 1).unsqueeze(0)
            vs = v[p.start : p.end].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
        else:
            ks, vs = _gather(k_cache, v_cache, p, 1)
            p.mask = _additive(p.mask, q.dtype)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=p.mask, enable_gqa=True)
        out[p.start : p.end] = o[0].transpose(0, 1)
    for g in meta.decodes:
        b = g.token_index.numel()
        qd = q.index_select(0, g.token_index).unsqueeze(2)
        kd, vd = _gather(k_cache, v_cache, g, b)
        g.mask = _additive(g.mask, q.dtype)
        o = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=g.mask, enable_gqa=True)
        out.index_copy_(0, g.token_index, o.squeeze(2))
    return out


def _gather(
    k_cache: torch.Tensor, v_cache: torch.Tensor, part: PrefillChunk | DecodeGroup, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of the part's blocks as [batch, kv_heads, L, head_dim] views over its reused buffers."""
    blocks = part.block_index
    assert blocks is not None
    if part.workspace is None:
        shape = (blocks.numel(), *k_cache.shape[1:])
        part.workspace = (k_cache.new_empty(shape), v_cache.new_empty(shape))
    kb, vb = part.workspace
    torch.index_select(k_cache, 0, blocks, out=kb)
    torch.index_select(v_cache, 0, blocks, out=vb)
    num_kv, head_dim = k_cache.shape[2], k_cache.shape[3]
    return (
        kb.view(batch, -1, num_kv, head_dim).transpose(1, 2),
        vb.view(batch, -1, num_kv, head_dim).transpose(1, 2),
    )


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A bool mask as an additive one in the model dtype, converted by the first layer and kept:
    SDPA would otherwise convert it again in every layer (a `where` over the mask per call)."""
    if mask is None or mask.dtype == dtype:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
