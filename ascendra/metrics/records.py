"""Per-request latency figures: TTFT, token gaps (TBT), and whether each SLO was met.

A record is what a request leaves behind: its arrival, the times of its output tokens, its SLOs and
whether it ended well. The simulator and the engine produce `Request`s (convert with `to_record`);
a live HTTP client builds `RequestRecord`s directly from the times it saw.

Definitions (DESIGN.md section 2):
- TTFT = first token time - arrival time; met when TTFT <= ttft_slo.
- TBT gaps = differences of consecutive token times; met when the 99th percentile of the gaps is
  <= tbt_slo. The percentile is the nearest-rank one (the smallest gap g such that at least 99% of
  the gaps are <= g), so for outputs of up to 100 tokens (at most 99 gaps) it is the largest gap,
  and a 1-token output (no gaps) meets it trivially. With `tbt_mean` (`SLO.tbt_mean`: vLLM bench's
  TPOT) the mean gap, (last token - first token) / gaps, is held to it instead.
- Comparisons allow TIME_EPS (1 ns): token times are sums of floats, and a scheduler that sizes
  iterations to exactly the TBT SLO must not flip verdicts on rounding error.
- A request that is not ok (failed, aborted, or did not finish within the run) or produced no token
  meets neither SLO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ascendra.core.request import Request, RequestStatus

OK_STATUSES = (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)
TIME_EPS = 1e-9  # seconds of slack in SLO comparisons (see module doc)


@dataclass(slots=True)
class RequestRecord:
    arrival_time: float
    token_times: Sequence[float]
    ttft_slo: float
    tbt_slo: float
    prompt_len: int
    ok: bool
    request_id: str = ""
    extra: dict = field(default_factory=dict)  # free-form tags for reports (instance, offloaded, ...)
    tbt_mean: bool = False  # the TBT SLO bounds the mean gap, not each one

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.arrival_time if self.token_times else None

    @property
    def tbt_gaps(self) -> list[float]:
        t = self.token_times
        return [t[i + 1] - t[i] for i in range(len(t) - 1)]

    @property
    def tbt_p99(self) -> float | None:
        """Nearest-rank 99th percentile of the token gaps; None without any gap."""
        return gap_percentile(self.tbt_gaps, 99.0)

    @property
    def meets_ttft(self) -> bool:
        ttft = self.ttft
        return self.ok and ttft is not None and ttft <= self.ttft_slo + TIME_EPS

    @property
    def meets_tbt(self) -> bool:
        if not (self.ok and self.token_times):
            return False
        t = self.token_times
        if self.tbt_mean:
            return mean_tbt_met(t[-1] - t[0], len(t) - 1, self.tbt_slo)
        gaps = self.tbt_gaps
        return tbt_met(sum(g > self.tbt_slo + TIME_EPS for g in gaps), len(gaps))

    @property
    def meets_both(self) -> bool:
        return self.meets_ttft and self.meets_tbt


def tbt_met(num_over, num_gaps):  # ints, or numpy arrays of them (summarize judges all at once)
    """The TBT verdict: the nearest-rank 99th percentile of a request's gaps is within the SLO,
    which is to say at most one gap in a hundred exceeds it (none, under 100 gaps)."""
    return num_over <= num_gaps // 100


def mean_tbt_met(span, num_gaps, tbt_slo):  # floats, or numpy arrays of them (summarize)
    """The TBT verdict of an SLO on the mean gap: the first to the last token within `num_gaps`
    times the SLO (no gap: met)."""
    return span <= (tbt_slo + TIME_EPS) * num_gaps


def gap_percentile(gaps: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile q (0 < q <= 100) of gaps; None when there are none."""
    if not gaps:
        return None
    # q * n / 100 is exact for whole q, so ceil gives the true rank (99 of 100 gaps -> rank 99).
    rank = max(1, math.ceil(q * len(gaps) / 100.0))
    return sorted(gaps)[rank - 1]


def to_record(req: Request) -> RequestRecord:
    """The record of a Request; ok only when it finished normally (stop or length).

    A request still waiting or running when the run ended counts as not ok: a run cut short under
    overload must not look better than one that drained. The token_times list is shared, not copied.
    """
    return RequestRecord(
        arrival_time=req.arrival_time,
        token_times=req.token_times,
        ttft_slo=req.slo.ttft,
        tbt_slo=req.slo.tbt,
        prompt_len=req.prompt_len,
        ok=req.status in OK_STATUSES,
        request_id=req.request_id,
        extra={"offloaded": req.offloaded, "preemptions": req.num_preemptions},
        tbt_mean=req.slo.tbt_mean,
    )
