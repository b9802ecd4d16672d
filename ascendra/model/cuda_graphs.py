"""CUDA graphs for decode-only iterations, captured at start-up at bucketed batch sizes.

A decode step of a large model on a GPU is short enough that launching its ~90 kernels per layer
from Python costs more than running them (issue 10: the GPU was busy 21% of a 1-decode iteration).
A graph replays the whole forward with one launch. It replays fixed shapes at fixed addresses, so:

- each bucket (1, 2, 4, ..., 192, 256 sequences) gets its own graph over static buffers: token
  ids, positions, KV slots, the attention backend's static plan, and the logits it writes;
- a batch is padded up to its bucket with dummy one-token sequences that live in a scratch block
  outside the block manager's pool: they write and read only that block, and their logits are
  dropped, so padding changes no real token (`tests/test_cuda_graphs.py` checks it on CPU, where the
  same static path runs eagerly);
- all graphs share one memory pool, captured largest first, and its size is measured
  (`memory_bytes`) so the KV sizing can count it (`engine/gpu_memory.kv_blocks_for_device`).

Mixed iterations (any prompt chunk) and decodes beyond the largest bucket run eagerly. The backend
must offer `graph_plan(batch, max_blocks_per_seq, num_pool_blocks, block_size, device)` and
`update_graph_plan(plan, host_meta)`; FlexAttention and FlashInfer do.
Measured with FlexAttention on an H200 (docs/benchmarks.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascendra.model.attention import AttentionMetadata, SeqChunk, build_metadata

# At most 1.5x padding above 32 sequences; few buckets, since each one is captured (and, with
# FlexAttention, compiled) at start-up.
GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256)


def graph_bucket(n: int, buckets: tuple[int, ...] = GRAPH_BUCKETS) -> int | None:
    """The smallest bucket that holds n sequences; None when n exceeds the largest."""
    return next((b for b in buckets if b >= n), None)


def pad_decode_batch(
    chunks: list[SeqChunk], input_ids: list[int], bucket: int, scratch_block: int
) -> tuple[list[SeqChunk], list[int]]:
    """The batch with `bucket - len(chunks)` dummy decodes appended: token 0 at position 0 of the
    scratch block, a context of one token that no real sequence can see."""
    pad = bucket - len(chunks)
    if pad < 0:
        raise ValueError(f"{len(chunks)} sequences do not fit a bucket of {bucket}")
    return chunks + [SeqChunk([scratch_block], 0, 1, decode=True)] * pad, input_ids + [0] * pad


@dataclass
class _Static:
    """One bucket's buffers; the graph reads and writes only these."""

    ids: torch.Tensor
    rows: torch.Tensor
    meta: AttentionMetadata
    logits: torch.Tensor | None = None
    graph: object = None  # torch.cuda.CUDAGraph where captured


class DecodeGraphs:
    def __init__(
        self,
        model,
        kv,
        max_blocks_per_seq: int,
        scratch_block: int,
        buckets: tuple[int, ...] = GRAPH_BUCKETS,
        capture: bool | None = None,
    ) -> None:
        """`capture=False` keeps the static buffers and padding but runs them eagerly: the same
        path on a device without graphs (the CPU tests)."""
        self.model, self.kv = model, kv
        self.backend = model.attention_backend()
        if not hasattr(self.backend, "graph_plan"):
            raise ValueError(f"attention backend {self.backend.name!r} cannot run in a CUDA graph")
        self.device = model.device
        self.capture_graphs = self.device.type == "cuda" if capture is None else capture
        self.max_blocks_per_seq = max_blocks_per_seq
        self.scratch_block = scratch_block
        self.buckets = tuple(sorted(buckets))
        self.memory_bytes = 0
        self._static: dict[int, _Static] = {}

    def capture(self) -> None:
        """Build every bucket's buffers and, on CUDA, warm up and capture its graph."""
        pool = torch.cuda.graph_pool_handle() if self.capture_graphs else None
        before = torch.cuda.memory_reserved(self.device) if self.capture_graphs else 0
        for b in sorted(self.buckets, reverse=True):  # largest first: the others reuse its pool
            st = self._buffers(b)
            self._update(st, *pad_decode_batch([], [], b, self.scratch_block))
            if not self.capture_graphs:
                self._static[b] = st
                continue
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(2):  # compile, autotune and allocate outside the capture
                    self.model(st.ids, st.meta, self.kv, st.rows)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
                st.logits = self.model(st.ids, st.meta, self.kv, st.rows)
            st.graph = graph
            self._static[b] = st
        if self.capture_graphs:
            torch.cuda.synchronize(self.device)
            self.memory_bytes = torch.cuda.memory_reserved(self.device) - before

    def can_run(self, chunks: list[SeqChunk]) -> bool:
        b = graph_bucket(len(chunks), self.buckets)
        if b is None or b not in self._static or not all(ch.decode for ch in chunks):
            return False
        bs = self.kv.block_size
        return all(-(-(ch.num_computed + 1) // bs) <= self.max_blocks_per_seq for ch in chunks)

    def run(self, chunks: list[SeqChunk], input_ids: list[int]) -> torch.Tensor:
        """Float32 logits [len(chunks), vocab] of a decode-only batch that `can_run`."""
        n = len(chunks)
        b = graph_bucket(n, self.buckets)
        assert b is not None
        st = self._static[b]
        self._update(st, *pad_decode_batch(chunks, input_ids, b, self.scratch_block))
        if st.graph is not None:
            st.graph.replay()
            return st.logits[:n]
        with torch.inference_mode():
            return self.model(st.ids, st.meta, self.kv, st.rows)[:n]

    # ---- static buffers --------------------------------------------------------------------------
    def _buffers(self, b: int) -> _Static:
        dev = self.device
        meta = build_metadata(pad_decode_batch([], [], b, self.scratch_block)[0], self.kv.block_size, dev)
        bs = self.kv.block_size
        meta.plan = self.backend.graph_plan(b, self.max_blocks_per_seq, self.kv.num_blocks, bs, dev)
        meta.plan_owner = self.backend.name
        ids = torch.zeros(b, dtype=torch.long, device=dev)
        return _Static(ids, torch.arange(b, device=dev), meta)

    def _update(self, st: _Static, chunks: list[SeqChunk], input_ids: list[int]) -> None:
        """Copy this iteration's values into the bucket's buffers (addresses unchanged)."""
        host = build_metadata(chunks, self.kv.block_size, "cpu")
        st.ids.copy_(torch.tensor(input_ids, dtype=torch.long), non_blocking=True)
        st.meta.positions.copy_(host.positions, non_blocking=True)
        st.meta.slot_mapping.copy_(host.slot_mapping, non_blocking=True)
        self.backend.update_graph_plan(st.meta.plan, host)
