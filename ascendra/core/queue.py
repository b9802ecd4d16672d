"""A waiting queue kept in the order a policy serves it, with the figures the router projects from.

Every policy orders its waiting requests by a key that does not change while they wait (arrival
for FCFS, TTFT deadline for EDF, remaining prompt for SRPT), so a sorted list with bisection gives
O(log n) search and a memmove-fast insert, and - unlike a heap - can be read in order at no cost.

Beside the requests the queue keeps, in the same order, one numpy column per figure a projection
reads: tokens to compute, TTFT deadline, TTFT SLO, and the prompt's prefill alone (model seconds).
They do not change while a request waits, so they are written once at insertion, and the router
projects thousands of waiting requests in a few vectorised passes instead of a Python loop.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator

import numpy as np

from ascendra.core.request import Request

KEY, REMAINING, DEADLINE, TTFT_SLO, ALONE = range(5)  # the rows of `columns`


def figures(request: Request, key: float, alone: Callable[[int], float] | None
            ) -> tuple[float, float, float, float, float]:
    """A waiting request's column: its key, what it has left to compute, its deadline and SLO,
    and its prefill alone. One that already has its first token (preempted) has no TTFT to miss:
    its deadline is infinite."""
    rem = request.num_remaining_prefill
    if request.output_token_ids:
        return key, rem, math.inf, request.slo.ttft, 0.0
    return key, rem, request.ttft_deadline, request.slo.ttft, alone(rem) if alone is not None else 0.0


class RequestQueue:
    def __init__(self, key: Callable[[Request], float], alone: Callable[[int], float] | None = None) -> None:
        self._key = key
        # The prompt's prefill alone, in model seconds; None: this queue is never projected.
        self._alone = alone
        self._keys: list[float] = []
        self._items: list[Request] = []
        self._cols = np.empty((5, 64))

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
        n = len(self._items)
        self._keys.insert(i, k)
        self._items.insert(i, request)
        cols = self._cols
        if n == cols.shape[1]:
            cols = self._cols = np.concatenate([cols, np.empty_like(cols)], axis=1)
        cols[:, i + 1 : n + 1] = cols[:, i:n]
        cols[:, i] = figures(request, k, self._alone)

    def pop(self, i: int = 0) -> Request:
        n = len(self._items)
        del self._keys[i]
        self._cols[:, i : n - 1] = self._cols[:, i + 1 : n]
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

    def reorder(self, key: Callable[[Request], float]) -> None:
        """Serve the same requests in another policy's order (a role change); ties keep their
        current order."""
        items = self._items
        self._key, self._keys, self._items = key, [], []
        self._cols = np.empty((5, max(64, len(items))))
        for r in sorted(items, key=key):  # stable, and push puts equal keys after: order kept
            self.push(r)

    def as_list(self) -> list[Request]:
        return self._items

    @property
    def keys(self) -> list[float]:
        return self._keys

    @property
    def raw_columns(self) -> np.ndarray:
        """The columns' storage, valid until the next push (a push may move it); for reading one
        request's figures by position, which costs less than slicing a view first."""
        return self._cols

    @property
    def columns(self) -> np.ndarray:
        """[KEY, REMAINING, DEADLINE, TTFT_SLO, ALONE] x waiting requests, in serving order (a view)."""
        return self._cols[:, : len(self._items)]
