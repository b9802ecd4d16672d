"""Paged attention with FlashInfer (PyPI `flashinfer-python`), reading the pool in place.

FlashInfer's paged layout "NHD", `[num_pages, page_size, kv_heads, head_dim]` per K and V, is our
pool's, and its page table is ours in CSR form (`indptr` into a flat list of block ids, plus the
fill of each sequence's last block). One `BatchPrefillWithPagedKVCacheWrapper` call per layer runs
a whole mixed batch: its causal mask aligns each sequence's queries to the end of its context, so a
prompt chunk at any offset and a decode (one query) are the same case. Decode-only batches in CUDA
graphs use `BatchDecodeWithPagedKVCacheWrapper` with `use_cuda_graph=True` over static buffers,
re-planned before each replay as FlashInfer documents.

Used only when asked for (`--attention flashinfer`): the wheel compiles its kernels with nvcc on
first use. Written to FlashInfer's documented API; not yet run on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascendra.model.attention import AttentionMetadata
from ascendra.model.config import ModelConfig

WORKSPACE_BYTES = 256 * 2**20


@dataclass
class PagedTable:
    """The batch's block table in FlashInfer's CSR form, on the host."""

    indptr: torch.Tensor  # int32 [S + 1]
    indices: torch.Tensor  # int32 [sum of blocks]
    last_page_len: torch.Tensor  # int32 [S], 1..block_size

    @classmethod
    def of(cls, meta: AttentionMetadata) -> PagedTable:
        bs = meta.block_size
        lens = torch.tensor(meta.seq_lens, dtype=torch.int32)
        nb = (lens + bs - 1) // bs
        used = torch.arange(meta.block_table.shape[1])[None, :] < nb[:, None]
        indptr = torch.zeros(len(meta.seq_lens) + 1, dtype=torch.int32)
        indptr[1:] = torch.cumsum(nb, 0)
        return cls(indptr, meta.block_table[used].to(torch.int32), lens - (nb - 1) * bs)


class FlashInferAttention:
    name = "flashinfer"
    kv_layout = "NHD"

    def __init__(self, config: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        import flashinfer  # noqa: F401 - fail at start-up, not in the first iteration

        if device.type != "cuda":
            raise ValueError("FlashInfer runs on CUDA only; on CPU use the 'cpu' or 'sdpa' backend")
        self.num_heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.device, self.dtype = device, dtype
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        self._prefill = None

    def _shape(self, block_size: int) -> dict:
        return dict(num_qo_heads=self.num_heads, num_kv_heads=self.kv_heads, page_size=block_size,
                    q_data_type=self.dtype, kv_data_type=self.dtype)

    def plan(self, meta: AttentionMetadata, dtype: torch.dtype):
        from flashinfer import BatchPrefillWithPagedKVCacheWrapper

        if self._prefill is None:
            self._prefill = BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        t = PagedTable.of(meta)
        self._prefill.plan(
            torch.tensor(meta.query_start, dtype=torch.int32), t.indptr, t.indices, t.last_page_len,
            head_dim_qk=self.head_dim, causal=True, **self._shape(meta.block_size),
        )
        return self._prefill

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
        return meta.plan.run(q.contiguous(), (k_cache, v_cache))

    # ---- CUDA graphs ----------------------------------------------------------------------------
    def graph_plan(self, batch: int, max_blocks: int, num_blocks: int, block_size: int, device):
        from flashinfer import BatchDecodeWithPagedKVCacheWrapper

        wrapper = BatchDecodeWithPagedKVCacheWrapper(
            self.workspace,
            "NHD",
            use_cuda_graph=True,
            use_tensor_cores=self.num_heads // self.kv_heads >= 4,
            paged_kv_indptr_buffer=torch.zeros(batch + 1, dtype=torch.int32, device=device),
            paged_kv_indices_buffer=torch.zeros(batch * max_blocks, dtype=torch.int32, device=device),
            paged_kv_last_page_len_buffer=torch.ones(batch, dtype=torch.int32, device=device),
        )
        return _GraphDecode(wrapper, block_size)

    def update_graph_plan(self, plan: _GraphDecode, meta: AttentionMetadata) -> None:
        t = PagedTable.of(meta)
        plan.wrapper.plan(t.indptr, t.indices, t.last_page_len, head_dim=self.head_dim,
                          **self._shape(plan.block_size))


@dataclass
class _GraphDecode:
    wrapper: object
    block_size: int

    def run(self, q: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.wrapper.run(q.contiguous(), kv)
