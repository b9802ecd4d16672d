"""What one iteration's attention needs to know, built once on the host and shared by every layer.

A batch mixes prompt chunks (any number of new tokens after any number of cached ones) and decodes
(one new token). Its tokens are flattened in sequence order. The KV cache is paged: position p of a
sequence lives in block `block_ids[p // block_size]`, slot `p % block_size` (see `kv_cache.py`).

`build_metadata` computes what every attention backend shares (positions, the slot each new K/V is
written to, the block table, context lengths, where each sequence's queries start) with plain
Python on the host, then copies the index tensors to the device in one go. What a backend needs
beyond that (a gather plan, a block mask, a FlashInfer plan) it derives in its own `plan`, once per
iteration, stored in `meta.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SeqChunk:
    """One sequence of the batch: compute `num_new` tokens after `num_computed` cached ones."""

    block_ids: list[int]
    num_computed: int
    num_new: int
    decode: bool = False  # the request's call (Request.is_decode): one new token, read as a decode


@dataclass
class AttentionMetadata:
    chunks: list[SeqChunk]
    block_size: int
    num_tokens: int
    positions: torch.Tensor  # [T] on the device
    slot_mapping: torch.Tensor  # [T] flat slot (block * block_size + offset) each new K/V goes to
    block_table: torch.Tensor  # [S, max_blocks] on the host, padded with block 0
    seq_lens: list[int]  # context length of each sequence once this iteration's tokens are in
    query_start: list[int]  # [S + 1] where each sequence's tokens start in the flattened batch
    device: torch.device
    plan: Any = None  # the attention backend's own per-iteration state
    plan_owner: str | None = None  # which backend built `plan`

    @property
    def num_seqs(self) -> int:
        return len(self.chunks)

    @property
    def is_decode_only(self) -> bool:
        return all(ch.decode for ch in self.chunks)


def build_metadata(chunks: list[SeqChunk], block_size: int, device: torch.device | str) -> AttentionMetadata:
    """Index tensors for one forward pass; raises ValueError if a sequence lacks blocks."""
    max_blocks = 1
    positions: list[int] = []
    slots: list[int] = []
    seq_lens: list[int] = []
    query_start = [0]
    for i, ch in enumerate(chunks):
        if ch.num_new < 1 or ch.num_computed < 0 or (ch.decode and ch.num_new != 1):
            raise ValueError(f"sequence {i}: bad chunk (computed={ch.num_computed}, new={ch.num_new})")
        ctx = ch.num_computed + ch.num_new
        needed = -(-ctx // block_size)
        if len(ch.block_ids) < needed:
            raise ValueError(f"sequence {i}: {len(ch.block_ids)} blocks cannot hold {ctx} tokens")
        max_blocks = max(max_blocks, needed)
        span = range(ch.num_computed, ctx)
        positions.extend(span)
        slots.extend(ch.block_ids[p // block_size] * block_size + p % block_size for p in span)
        seq_lens.append(ctx)
        query_start.append(query_start[-1] + ch.num_new)
    table = torch.tensor([(ch.block_ids + [0] * max_blocks)[:max_blocks] for ch in chunks], dtype=torch.long)
    dev = torch.device(device)
    # One host-to-device copy for both index vectors; non-blocking so the host goes on building.
    both = torch.tensor([positions, slots], dtype=torch.long).to(dev, non_blocking=True)
    return AttentionMetadata(
        chunks=list(chunks),
        block_size=block_size,
        num_tokens=len(positions),
        positions=both[0],
        slot_mapping=both[1],
        block_table=table,
        seq_lens=seq_lens,
        query_start=query_start,
        device=dev,
    )

