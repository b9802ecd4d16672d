"""The paged KV cache: per layer, a K and a V pool of blocks, each holding `block_size` tokens.

Two layouts, chosen by the attention backend that reads them:

- "NHD", `[num_blocks, block_size, num_kv_heads, head_dim]`: a token's heads side by side, so the
  pool is one long token axis with a constant stride (what FlexAttention reads in place, and
  FlashInfer's NHD layout);
- "HND", `[num_blocks, num_kv_heads, block_size, head_dim]`: each head's block contiguous, so a
  gather can lay a sequence's context out as `[kv_heads, tokens, head_dim]` directly, the shape a
  batched matmul reads without a second copy (the CPU backend).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascendra.model.config import ModelConfig

LAYOUTS = ("NHD", "HND")


@dataclass
class KVCache:
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    block_size: int
    layout: str = "NHD"

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
        layout: str = "NHD",
    ) -> KVCache:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown KV layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        kvh, d = config.num_kv_heads, config.head_dim
        shape = (num_blocks, block_size, kvh, d) if layout == "NHD" else (num_blocks, kvh, block_size, d)
        # zeros, not empty: padded gathers read unused slots, and NaN garbage there would poison the
        # masked softmax's matmul (0 * NaN = NaN).
        k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        return cls(k, v, block_size, layout)

    def slot_index(self, slots: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Where flat slots (block * block_size + offset) lie in this layout; computed once per
        iteration, then read by `write` in every layer."""
        if self.layout == "NHD":
            return (slots,)
        return (slots // self.block_size, slots % self.block_size)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, index: tuple[torch.Tensor, ...]) -> None:
        """Store new tokens' K and V ([T, kv_heads, head_dim]) at `slot_index(slots)`."""
        kc, vc = self.k[layer], self.v[layer]
        if self.layout == "NHD":
            kc.view(-1, k.shape[1], k.shape[2]).index_copy_(0, index[0], k)
            vc.view(-1, v.shape[1], v.shape[2]).index_copy_(0, index[0], v)
            return
        # HND: a [blocks, block_size, heads, dim] view takes the (block, offset) pair.
        kc.permute(0, 2, 1, 3).index_put_(index, k)
        vc.permute(0, 2, 1, 3).index_put_(index, v)

