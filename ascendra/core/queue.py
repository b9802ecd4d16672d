"""A waiting queue kept in the order a policy serves it.

Every policy orders its waiting requests by a key that does not change while they wait (arrival
for FCFS, TTFT deadline for EDF, remaining prompt for SRPT), so a sorted list with bisection gives
O(log n) search and a memmove-fast insert, and - unlike a heap - can be read in order at no cost,
which is what the router's projection does on every iteration.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator

from ascendra.core.request import Request


class RequestQueue:
    def __init__(self, key: Callable[[Request], float]) -> None:
        self._key = key
        self._keys: list[float] = []
        self._items: list[Request] = []

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._items)

    def __getitem__(self, i: int) -> Request:
        return self._items[i]

    def key(self, request: Request) -> float:
        return self._key(request)

    def push(self, request: Request) -> None:
        k = self._key(request)
        i = bisect_right(self._keys, k)  # equal keys stay in insertion order
        self._keys.insert(i, k)
        self._items.insert(i, request)

    def pop(self, i: int = 0) -> Request:
        del self._keys[i]
        return self._items.pop(i)

    def remove(self, request: Request) -> bool:
        k = self._key(request)
        i = bisect_left(self._keys, k)
        items, n = self._items, len(self._items)
        while i < n and self._keys[i] == k:
            if items[i] is request:
                self.pop(i)
                return True
            i += 1
        return False

    def as_list(self) -> list[Request]:
        return self._items
