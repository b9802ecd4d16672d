"""The paged KV cache: per layer, K and V pools of `[num_blocks, block_size, num_kv_heads, head_dim]`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascendra.model.config import ModelConfig


@dataclass
class KVCache:
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    block_size: int

    @property
    def num_blocks(self) -> int:
        return self.k[0].shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> KVCache:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        shape = (num_blocks, block_size, config.num_kv_heads, config.head_dim)
        # zeros, not empty: padded gathers read unused slots, and NaN garbage there would poison the
        # masked softmax's matmul (0 * NaN = NaN).
        k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        return cls(k, v, block_size)
