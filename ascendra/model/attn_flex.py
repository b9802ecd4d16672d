"""Paged attention with PyTorch FlexAttention, reading K/V where they lie in the pool: no gather copy.

The pool of one layer, `[num_blocks, block_size, kv_heads, head_dim]` ("NHD"), is viewed as one long
sequence `[1, kv_heads, num_blocks * block_size, head_dim]`. A block mask, whose KV block is our
16-token cache block, lists for each query block which pool blocks it may read, in logical order;
the kernel visits only those. A `mask_mod` then keeps, inside a visited block, the keys that belong
to the query's sequence (`owner`) and precede it (`logical` position <= query position).

Two calls per layer, so neither pays for the other's shape:

- decodes as a batch of one-query sequences, `[B, H, 1, D]` against the shared pool (batch 1,
  broadcast); each batch row's mask lists exactly its own blocks;
- prompt chunks flattened into one query sequence `[1, H, Tp, D]`, in query blocks of 16 tokens;
  a query block that straddles two chunks lists both chunks' blocks (as vLLM's FlexAttention backend
  does), which costs little because chunks are long.

On CUDA the kernel is `torch.compile(flex_attention)` (Triton). On CPU eager FlexAttention evaluates
the mask over the whole pool densely, which is what the CPU tests use to hold the masks to the SDPA
reference; compiled on CPU it also runs, but measured slower than the `cpu` backend (4.0 ms against
0.3 ms for 16 decodes x 208 tokens, docs/benchmarks.md section 6). Not yet run on a GPU.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import torch

from ascendra.model.attention import AttentionMetadata
from ascendra.model.config import ModelConfig

Q_BLOCK = 16  # query tokens per block-mask row for prompt chunks (Triton's smallest tile)


@dataclass
class FlexPart:
    rows: torch.Tensor | None  # rows of the flattened batch this call attends for; None: all
    seq: torch.Tensor  # [n] batch sequence of each query (flattened prefills) or of each batch row
    pos: torch.Tensor  # [n] position of each query
    kv_num_blocks: torch.Tensor  # int32 [B, 1, Qblocks]
    kv_indices: torch.Tensor  # int32 [B, 1, Qblocks, W]
    block_mask: object = None  # BlockMask, made on the first layer once the pool size is known


@dataclass
class FlexPlan:
    decode: FlexPart | None
    prefill: FlexPart | None
    owner_blocks: torch.Tensor  # physical blocks the batch uses
    owner_seq: torch.Tensor  # their sequence
    owner_logical: torch.Tensor  # their logical index within it
    owner: torch.Tensor | None = None  # [num_blocks] per pool block, filled on the first layer
    logical: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


class FlexPagedAttention:
    name = "flex"
    kv_layout = "NHD"

    def __init__(self, config: ModelConfig, device: torch.device, compile: bool | None = None) -> None:
        from torch.nn.attention.flex_attention import flex_attention

        self.num_heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        compile = device.type == "cuda" if compile is None else compile
        # dynamic: the token count changes every iteration; one compiled kernel serves them all.
        self._flex = torch.compile(flex_attention, dynamic=True) if compile else flex_attention

    # ---- per iteration -------------------------------------------------------------------------
    def plan(self, meta: AttentionMetadata, dtype: torch.dtype) -> FlexPlan:
        bs, dev, table = meta.block_size, meta.device, meta.block_table
        dec = [i for i, ch in enumerate(meta.chunks) if ch.num_new == 1]
        pre = [i for i, ch in enumerate(meta.chunks) if ch.num_new > 1]
        nblocks = [-(-n // bs) for n in meta.seq_lens]
        blocks, seqs, logical = [], [], []
        for i, nb in enumerate(nblocks):
            blocks += table[i, :nb].tolist()
            seqs += [i] * nb
            logical += range(nb)
        decode = prefill = None
        if dec:
            width = max(nblocks[i] for i in dec)
            idx = torch.zeros(len(dec), 1, 1, width, dtype=torch.int32)
            for r, i in enumerate(dec):
                idx[r, 0, 0, : nblocks[i]] = table[i, : nblocks[i]].to(torch.int32)
            num = torch.tensor([nblocks[i] for i in dec], dtype=torch.int32).view(-1, 1, 1)
            rows = torch.tensor([meta.query_start[i] for i in dec])
            whole = not pre
            decode = FlexPart(
                None if whole else rows.to(dev),
                torch.tensor(dec).to(dev),
                torch.tensor([meta.seq_lens[i] - 1 for i in dec]).to(dev),
                num.to(dev),
                idx.to(dev),
            )
        if pre:
            prefill = self._prefill_part(meta, pre, nblocks)
        as_dev = torch.tensor([blocks, seqs, logical], dtype=torch.long).to(dev, non_blocking=True)
        return FlexPlan(decode, prefill, as_dev[0], as_dev[1], as_dev[2])

    def _prefill_part(self, meta: AttentionMetadata, pre: list[int], nblocks: list[int]) -> FlexPart:
        bs, dev, table = meta.block_size, meta.device, meta.block_table
        rows: list[int] = []
        seq: list[int] = []
        pos: list[int] = []
        for i in pre:
            ch = meta.chunks[i]
            rows += range(meta.query_start[i], meta.query_start[i + 1])
            seq += [i] * ch.num_new
            pos += range(ch.num_computed, ch.num_computed + ch.num_new)
        starts = [0]  # where each prompt chunk starts among the flattened prefill queries
        for i in pre:
            starts.append(starts[-1] + meta.chunks[i].num_new)
        lists: list[list[int]] = []
        for q0 in range(0, len(rows), Q_BLOCK):
            q1 = min(q0 + Q_BLOCK, len(rows))
            first = bisect.bisect_right(starts, q0) - 1
            last = bisect.bisect_right(starts, q1 - 1) - 1
            visit: list[int] = []
            for j in range(first, last + 1):
                i = pre[j]
                top = pos[min(q1, starts[j + 1]) - 1]  # the latest position this block's queries see
                visit += table[i, : top // bs + 1].tolist()
            lists.append(visit)
        width = max(len(v) for v in lists)
        idx = torch.zeros(1, 1, len(lists), width, dtype=torch.int32)
        for g, v in enumerate(lists):
            idx[0, 0, g, : len(v)] = torch.tensor(v, dtype=torch.int32)
        num = torch.tensor([len(v) for v in lists], dtype=torch.int32).view(1, 1, -1)
        whole = len(rows) == meta.num_tokens
        return FlexPart(
            None if whole else torch.tensor(rows).to(dev),
            torch.tensor(seq).to(dev),
            torch.tensor(pos).to(dev),
            num.to(dev),
            idx.to(dev),
        )

    # ---- CUDA graphs: the same decode plan over buffers that keep their addresses ------------------
    def graph_plan(self, batch: int, max_blocks: int, num_blocks: int, block_size: int, device) -> FlexPlan:
        def zeros(*shape: int, dtype=torch.int32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        decode = FlexPart(None, torch.arange(batch, device=device), zeros(batch, dtype=torch.long),
                          zeros(batch, 1, 1), zeros(batch, 1, 1, max_blocks))
        empty = zeros(0, dtype=torch.long)
        plan = FlexPlan(decode, None, empty, empty, empty)
        self._finalize(plan, num_blocks, block_size)
        return plan

    def update_graph_plan(self, plan: FlexPlan, meta: AttentionMetadata) -> None:
        """Write a (padded, decode-only) batch's blocks into `graph_plan`'s buffers; `meta` is on
        the host."""
        d = plan.decode
        assert d is not None and plan.owner is not None and plan.logical is not None
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
        blocks = meta.block_table[used]
        seqs = torch.arange(n)[:, None].expand(n, cols.numel())[used]
        dev = plan.owner.device
        plan.owner.fill_(-1)
        plan.owner.index_copy_(0, blocks.to(dev), seqs.to(dev))
        plan.logical.index_copy_(0, blocks.to(dev), cols[None, :].expand(n, cols.numel())[used].to(dev))

    def _finalize(self, plan: FlexPlan, num_blocks: int, block_size: int) -> None:
        """Per-pool-block owner and logical index, and the block masks (first layer only)."""
        from torch.nn.attention.flex_attention import BlockMask

        dev = plan.owner_blocks.device
        plan.owner = torch.full((num_blocks,), -1, dtype=torch.long, device=dev)
        plan.logical = torch.zeros(num_blocks, dtype=torch.long, device=dev)
        plan.owner.index_copy_(0, plan.owner_blocks, plan.owner_seq)
        plan.logical.index_copy_(0, plan.owner_blocks, plan.owner_logical)
        owner, logical, pool = plan.owner, plan.logical, num_blocks * block_size
        if plan.decode is not None:
            d = plan.decode

            def decode_mask(b, h, q_idx, kv_idx):
                blk = kv_idx // block_size
                visible = logical[blk] * block_size + kv_idx % block_size <= d.pos[b]
                return (owner[blk] == d.seq[b]) & visible

            d.block_mask = BlockMask.from_kv_blocks(
                d.kv_num_blocks, d.kv_indices, BLOCK_SIZE=(Q_BLOCK, block_size), mask_mod=decode_mask,
                seq_lengths=(1, pool), compute_q_blocks=False,
            )
        if plan.prefill is not None:
            p = plan.prefill

            def prefill_mask(b, h, q_idx, kv_idx):
                blk = kv_idx // block_size
                visible = logical[blk] * block_size + kv_idx % block_size <= p.pos[q_idx]
                return (owner[blk] == p.seq[q_idx]) & visible

            p.block_mask = BlockMask.from_kv_blocks(
                p.kv_num_blocks, p.kv_indices, BLOCK_SIZE=(Q_BLOCK, block_size), mask_mod=prefill_mask,
                seq_lengths=(p.seq.numel(), pool), compute_q_blocks=False,
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
        out = None if (plan.decode is None) != (plan.prefill is None) else torch.empty_like(q)
        for part, decode in ((plan.decode, True), (plan.prefill, False)):
            if part is None:
                continue
            qs = q if part.rows is None else q.index_select(0, part.rows)
            # decodes: [B, H, 1, D]; prompt chunks: [1, H, Tp, D]
            qs = qs.unsqueeze(2) if decode else qs.transpose(0, 1).unsqueeze(0)
            o = self._flex(qs, keys, values, block_mask=part.block_mask, enable_gqa=gqa)
            o = o.squeeze(2) if decode else o[0].transpose(0, 1)
            if out is None:
                return o
            out.index_copy_(0, part.rows, o) if part.rows is not None else out.copy_(o)
        assert out is not None
        return out
