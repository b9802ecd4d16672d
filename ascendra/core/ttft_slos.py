"""The TTFT SLOs of the requests on an instance that have no first token yet, kept sorted.

The Ascendra budgets read the tightest of them. Only requests present count: a request's SLO stops
shaping the instance's iterations the moment it has its first token or leaves (an SLO that once
only ever lowered the budget let one request wedge an instance for good). SLOs below a policy's
floor (no iteration could meet them) are kept but never read.
"""

from __future__ import annotations

from bisect import bisect_left, insort


class PendingTTFT:
    def __init__(self, floor: float = 0.0) -> None:
        self.floor = floor
        self._slos: list[float] = []

    def add(self, slo: float) -> None:
        insort(self._slos, slo)

    def remove(self, slo: float) -> None:
        del self._slos[bisect_left(self._slos, slo)]

    def tightest(self) -> float | None:
        """The tightest SLO at or above the floor; None if there is none."""
        slos = self._slos
        i = bisect_left(slos, self.floor) if self.floor else 0
        return slos[i] if i < len(slos) else None
