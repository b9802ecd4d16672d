"""Paged KV blocks: a pool of fixed-size blocks handed to requests as their block tables grow."""

from __future__ import annotations

from ascendra.core.request import Request


class BlockManager:
    """Owns the free list. A request's `block_ids` is its block table; slot p of the request lives in
    block `block_ids[p // block_size]`. New admissions must leave `watermark` of the pool free so that
    running requests can keep appending without immediate preemption (vLLM's watermark)."""

    def __init__(self, num_blocks: int, block_size: int = 16, watermark: float = 0.01) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks}x{block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.watermark_blocks = int(watermark * num_blocks)
        # Popped from the end: the most recently freed block is reused first (warm in caches).
        self.free_block_ids: list[int] = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    @property
    def usage(self) -> float:
        return 1.0 - len(self.free_block_ids) / self.num_blocks

    def blocks_needed(self, request: Request, num_new_tokens: int) -> int:
        needed = -(-(request.num_computed_tokens + num_new_tokens) // self.block_size) - len(
            request.block_ids
        )
        return needed if needed > 0 else 0

    def can_allocate(self, request: Request, num_new_tokens: int) -> bool:
        """Whether the next `num_new_tokens` of `request` fit; a request holding no blocks yet is a
        new admission and must leave the watermark free."""
        needed = self.blocks_needed(request, num_new_tokens)
        reserve = self.watermark_blocks if not request.block_ids else 0
        return needed + reserve <= len(self.free_block_ids)

    def allocate(self, request: Request, num_new_tokens: int) -> None:
        """Grow the block table to hold the request's next `num_new_tokens`. Callers check
        `can_allocate` first; running out here is a scheduler bug, so it raises."""
        needed = self.blocks_needed(request, num_new_tokens)
        if needed > len(self.free_block_ids):
            raise RuntimeError(f"out of KV blocks: need {needed}, {len(self.free_block_ids)} free")
        free = self.free_block_ids
        for _ in range(needed):
            request.block_ids.append(free.pop())

    def free(self, request: Request) -> None:
        self.free_block_ids.extend(reversed(request.block_ids))
        request.block_ids = []

    def max_request_blocks(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)
