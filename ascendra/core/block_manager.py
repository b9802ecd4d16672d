"""Paged KV blocks: a pool of fixed-size blocks handed to requests as their block tables grow.

The scheduler asks for room (`allocate_slots`) and gives it back (`free`); only this class reads
or writes the free list and the block tables, as vLLM v1's KVCacheManager hides its structures
from its scheduler. Prefix caching would live behind the same two calls.
"""

from __future__ import annotations

from ascendra.core.request import Request

WATERMARK = 0.01  # share of the pool new admissions must leave free (vLLM's default)


class BlockManager:
    """Owns the free list. A request's `block_ids` is its block table (read by the executor, written
    only here); slot p of the request lives in block `block_ids[p // block_size]`. New admissions
    must leave `watermark` of the pool free so that running requests can keep appending without
    immediate preemption (vLLM's watermark)."""

    def __init__(self, num_blocks: int, block_size: int = 16, watermark: float = WATERMARK) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one token, got {num_blocks}x{block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.watermark_blocks = int(watermark * num_blocks)
        # Popped from the end: the most recently freed block is reused first (warm in caches).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def room(self) -> int:
        """Tokens a new admission could take now (its blocks beyond the watermark): what the router
        reads before moving a request with its KV here."""
        return max(0, len(self._free) - self.watermark_blocks) * self.block_size

    def allocate_slots(self, request: Request, num_new_tokens: int) -> bool:
        """Grow the request's block table to hold its next `num_new_tokens` tokens. False, with
        nothing allocated, when they do not fit; a request holding no blocks yet is a new admission
        and must leave the watermark free. The common call, a decode inside its last block, costs
        one comparison."""
        table = request.block_ids
        needed = -(-(request.num_computed_tokens + num_new_tokens) // self.block_size) - len(table)
        if needed <= 0:
            return True
        free = self._free
        if needed + (0 if table else self.watermark_blocks) > len(free):
            return False
        for _ in range(needed):
            table.append(free.pop())
        return True

    def append_slots(self, decodes: list[Request]) -> int:
        """One more slot for each of `decodes`, in order: how many got theirs (it stops at the first
        that does not fit). `allocate_slots(r, 1)` for each, as one call: the scheduler makes it for
        every decode of every iteration."""
        bs, free = self.block_size, self._free
        for k, req in enumerate(decodes):
            table = req.block_ids
            if req.num_computed_tokens >= len(table) * bs:
                if not free:
                    return k
                table.append(free.pop())
        return len(decodes)

    def free(self, request: Request) -> None:
        self._free.extend(reversed(request.block_ids))
        request.block_ids = []
