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


def num_blocks_for_memory(config: ModelConfig, num_bytes: int, block_size: int, dtype: torch.dtype) -> int:
    """How many KV blocks fit in `num_bytes` (the `--kv-cache-memory` budget) for this model and dtype."""
    per_block = config.kv_bytes_per_token(torch.empty((), dtype=dtype).element_size()) * block_size
    blocks = num_bytes // per_block
    if blocks < 1:
        raise ValueError(
            f"{num_bytes} bytes hold no KV block of {per_block} bytes for {config.name or 'model'}"
        )
    return int(blocks)


def parse_bytes(text: str) -> int:
    """'4GiB', '512MB', '1e9' -> bytes."""
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
    s = text.strip().lower().removesuffix("b")
    for suffix in sorted(units, key=len, reverse=True):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * units[suffix])
    try:
        return int(float(s))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a size (examples: 4GiB, 512MB, 1e9)") from None
