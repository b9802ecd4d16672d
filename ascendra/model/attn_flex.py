"""Paged attention with PyTorch FlexAttention, reading K/V where they lie in the pool: no gather copy.

The pool of one layer, `[num_blocks, block_size, kv_heads, head_dim]` ("NHD"), is viewed as one long
sequence `[1, kv_heads, num_blocks * block_size, head_dim]`. A block mask, whose KV block is our
16-token cache block, lists for each query block which pool blocks it may read, in logical order;
the kernel visits only those. A `mask_mod` then keeps, inside a visited block, the keys that belong
to the query's sequence (`owner`) and precede it (`logical` position <= query position).

Two layouts:

- an eager iteration flattens all its queries into one sequence `[1, H, T, D]` in query blocks of 16
  tokens; a query block that spans several sequences lists all their blocks (as vLLM's FlexAttention
  backend does): each sequence's K/V is still read once, and the extra score computation is small
  next to the prompt chunks of a mixed batch. One kernel, compiled once for any token count.
- a decode-only iteration in a CUDA graph runs as a batch of one-query rows `[B, H, 1, D]` against
  the shared pool (batch 1, broadcast), each row listing exactly its own blocks: a static batch,
  which lets PyTorch pick its flex-decoding kernel (grouped-query heads share their K/V loads).

On CUDA the kernel is `torch.compile(flex_attention)` (Triton). On CPU eager FlexAttention evaluates
the mask over the whole pool densely, which is what the CPU tests use to hold both layouts to the
SDPA reference; compiled on CPU it also runs, but measured slower than the `cpu` backend (4.0 ms
against 0.3 ms for 16 decodes x 208 tokens, docs/benchmarks.md section 6).
On an H200 (same section) decodes ran 2.1-2.6x the roofline in graphs, but a 4096-token prefill
4.4x: the 16 x 16 tiles leave the tensor cores idle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ascendra.model.attention import AttentionMetadata
from ascendra.model.config import ModelConfig

Q_BLOCK = 16  # query tokens per block-mask row (Triton's smallest tile)
# Flattened queries in 16-token blocks against 16-token KV blocks need 16 x 16 tiles; without
# FORCE_USE_FLEX_ATTENTION a short flattened batch could be routed to the decoding kernel.
FLAT_KERNEL_OPTIONS = {"BLOCK_M": Q_BLOCK, "BLOCK_N": 16, "FORCE_USE_FLEX_ATTENTION": True}


@dataclass
class FlexPart:
    """One flex_attention call's queries and block mask."""

    seq: torch.Tensor  # batch sequence of each query (flattened) or of each batch row (rows)
    pos: torch.Tensor  # position of each query
    kv_num_blocks: torch.Tensor  # int32 [B, 1, query blocks]
    kv_indices: torch.Tensor  # int32 [B, 1, query blocks, W]
    block_mask: object = None  # BlockMask, made on the first layer once the pool size is known


@dataclass
class FlexPlan:
    part: FlexPart
    rows_layout: bool  # decodes as batch rows [B, H, 1, D] (graphs); else flattened [1, H, T, D]
    owner_blocks: torch.Tensor  # physical blocks the batch uses
    owner_seq: torch.Tensor  # their sequence
    owner_logical: torch.Tensor  # their logical index within it
    owner: torch.Tensor | None = None  # [num_blocks]: each pool block's sequence (-1: none)
    logical: torch.Tensor | None = None  # [num_blocks]: its index within that sequence


def _flat_attention(*args, **kwargs):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(*args, **kwargs)


def _rows_attention(*args, **kwargs):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(*args, **kwargs)


class FlexPagedAttention:
    name = "flex"
    kv_layout = "NHD"

    def __init__(self, config: ModelConfig, device: torch.device, compile: bool | None = None) -> None:
        from torch.nn.attention.flex_attention import flex_attention

        self.num_heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        compile = device.type == "cuda" if compile is None else compile
        cuda = device.type == "cuda"
        # Flattened: the token count changes every iteration, one dynamic kernel serves them all
        # (torch 2.13's CPU lowering fails to compile the dynamic form: static there).
        # Graph decodes: one static kernel per bucket (few), so the decoding kernel can be chosen.
        # Each layout compiles its own wrapper: Dynamo keeps one cache per code object, and the two
        # sharing `flex_attention`'s hit its recompile limit (8) on the H200, after which it ran the
        # unfused kernel that materialises every score (64 GiB at a 4k prefill).
        if compile:
            # One static decode kernel per graph bucket (12 by default) is past Dynamo's default
            # limit of 8 compiles per function, beyond which it too falls back to the unfused kernel.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self._flat = torch.compile(_flat_attention, dynamic=cuda) if compile else flex_attention
        self._rows = torch.compile(_rows_attention, dynamic=False) if compile else flex_attention
        self._flat_options = FLAT_KERNEL_OPTIONS if cuda else None
        # The CPU lowering asserts that the block lists are as wide as the whole pool.
        self._pad_lists = compile and not cuda

    # ---- eager iterations: the flattened layout --------------------------------------------------
    def plan(self, meta: AttentionMetadata, dtype: torch.dtype) -> FlexPlan:
        bs, dev, table = meta.block_size, meta.device, meta.block_table
        nblocks = [-(-n // bs) for n in meta.seq_lens]
        blocks, seqs, logical = [], [], []
        for i, nb in enumerate(nblocks):
            blocks += table[i, :nb].tolist()
            seqs += [i] * nb
            logical += range(nb)
        seq: list[int] = []
        pos: list[int] = []
        for i, ch in enumerate(meta.chunks):
            seq += [i] * ch.num_new
            pos += range(ch.num_computed, ch.num_computed + ch.num_new)
        lists: list[list[int]] = []
        for q0 in range(0, len(pos), Q_BLOCK):
            q1 = min(q0 + Q_BLOCK, len(pos))
            visit: list[int] = []
            for i in range(seq[q0], seq[q1 - 1] + 1):  # the sequences this query block spans
                top = pos[min(q1, meta.query_start[i + 1]) - 1]  # the latest position it sees of i
                visit += table[i, : top // bs + 1].tolist()
            lists.append(visit)
        idx = torch.zeros(1, 1, len(lists), max(len(v) for v in lists), dtype=torch.int32)
        for g, v in enumerate(lists):
            idx[0, 0, g, : len(v)] = torch.tensor(v, dtype=torch.int32)
        num = torch.tensor([len(v) for v in lists], dtype=torch.int32).view(1, 1, -1)
        host = torch.tensor([seq, pos], dtype=torch.long).to(dev, non_blocking=True)
        part = FlexPart(host[0], host[1], num.to(dev), idx.to(dev))
        owners = torch.tensor([blocks, seqs, logical], dtype=torch.long).to(dev, non_blocking=True)
        return FlexPlan(part, False, owners[0], owners[1], owners[2])

    # ---- CUDA graphs: decode rows over buffers that keep their addresses -------------------------
    def graph_plan(self, batch: int, max_blocks: int, num_blocks: int, block_size: int, device) -> FlexPlan:
        def zeros(*shape: int, dtype=torch.int32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        part = FlexPart(
            torch.arange(batch, device=device),
            zeros(batch, dtype=torch.long),
            zeros(batch, 1, 1),
            zeros(batch, 1, 1, max_blocks),
        )
        empty = zeros(0, dtype=torch.long)
        plan = FlexPlan(part, True, empty, empty, empty)
        self._finalize(plan, num_blocks, block_size)
        return plan

    def update_graph_plan(self, plan: FlexPlan, meta: AttentionMetadata) -> None:
        """Write a (padded, decode-only) batch's blocks into `graph_plan`'s buffers; `meta` is on
        the host."""
        d = plan.part
        assert plan.owner is not None and plan.logical is not None
        n, width = d.kv_indices.shape[0], d.kv_indices.shape[-1]
        lens = torch.tensor(meta.seq_lens)
        nb = (lens + meta.block_size - 1) // meta.block_size
        cols = torch.arange(meta.block_table.shape[1])
        used = cols[None, :] < nb[:, None]
        idx = torch.zeros(n, width, dtype=torch.int32)
        idx[:, : cols.numel()] = torch.where(used, meta.block_table, 0).to(torch.int32)
        d.kv_indices.view(n, width).copy_(idx, non_blocking=True)
        d.kv_num_blocks.view(n).copy_(nb.to(torch.int32), non_blocking=True)
        d.pos.copy_(lens - 1, non_blocking=True)
        dev = plan.owner.device
        blocks = meta.block_table[used].to(dev)
        plan.owner.fill_(-1)
        plan.owner.index_copy_(0, blocks, torch.arange(n)[:, None].expand_as(used)[used].to(dev))
        plan.logical.index_copy_(0, blocks, cols[None, :].expand_as(used)[used].to(dev))

    # ---- both ----------------------------------------------------------------------------------
    def _finalize(self, plan: FlexPlan, num_blocks: int, block_size: int) -> None:
        """Each pool block's owner and logical index, and the block mask (first layer only)."""
        from torch.nn.attention.flex_attention import BlockMask

        dev = plan.owner_blocks.device
        plan.owner = torch.full((num_blocks,), -1, dtype=torch.long, device=dev)
        plan.logical = torch.zeros(num_blocks, dtype=torch.long, device=dev)
        plan.owner.index_copy_(0, plan.owner_blocks, plan.owner_seq)
        plan.logical.index_copy_(0, plan.owner_blocks, plan.owner_logical)
        owner, logical, part = plan.owner, plan.logical, plan.part
        rows = plan.rows_layout
        if self._pad_lists and part.kv_indices.shape[-1] < num_blocks:
            part.kv_indices = F.pad(part.kv_indices, (0, num_blocks - part.kv_indices.shape[-1]))

        def mask(b, h, q_idx, kv_idx):
            at = b if rows else q_idx  # a row per sequence, or a flattened query index
            blk = kv_idx // block_size
            visible = logical[blk] * block_size + kv_idx % block_size <= part.pos[at]
            return (owner[blk] == part.seq[at]) & visible

        q_len = 1 if rows else part.seq.numel()
        # torch 2.13's CPU decode template does not compile without full-block lists: empty ones.
        full = (
            (torch.zeros_like(part.kv_num_blocks), torch.zeros_like(part.kv_indices))
            if self._pad_lists
            else ()
        )
        part.block_mask = BlockMask.from_kv_blocks(
            part.kv_num_blocks,
            part.kv_indices,
            *full,
            BLOCK_SIZE=(Q_BLOCK, block_size),
            mask_mod=mask,
            seq_lengths=(q_len, num_blocks * block_size),
            compute_q_blocks=False,
        )

    # ---- per layer -----------------------------------------------------------------------------
    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """q: [T, H, D]; the new K/V are already in the pool. Returns [T, H, D]."""
        plan: FlexPlan = meta.plan
        num_blocks, block_size = k_cache.shape[0], k_cache.shape[1]
        if plan.owner is None:
            self._finalize(plan, num_blocks, block_size)
        keys = k_cache.view(1, num_blocks * block_size, self.kv_heads, self.head_dim).transpose(1, 2)
        values = v_cache.view(1, num_blocks * block_size, self.kv_heads, self.head_dim).transpose(1, 2)
        gqa = self.kv_heads != self.num_heads
        mask = plan.part.block_mask
        if plan.rows_layout:
            return self._rows(q.unsqueeze(2), keys, values, block_mask=mask, enable_gqa=gqa).squeeze(2)
        o = self._flat(
            q.transpose(0, 1).unsqueeze(0),
            keys,
            values,
            block_mask=mask,
            enable_gqa=gqa,
            kernel_options=self._flat_options,
        )
        return o[0].transpose(0, 1)
