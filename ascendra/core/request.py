"""A request as the scheduler sees it: token counts, SLO, and the times of its output tokens.

The vocabulary follows vLLM v1: a request has `num_tokens` (prompt plus output so far) and
`num_computed_tokens` (tokens whose KV is in the cache). Whatever lies between the two is what the
next iterations must compute; when the computed tokens reach `num_tokens` a new token is sampled.
Prefill, chunked prefill, decode and recompute after preemption are all the same rule.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_FAILED = "error"  # also the finish_reason a client sees

    @property
    def finished(self) -> bool:
        return self not in (RequestStatus.WAITING, RequestStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class SLO:
    """Per-request latency objectives, in seconds. `tbt` bounds every gap between two output
    tokens (DESIGN.md section 2) or, with `tbt_mean`, their mean: vLLM bench's TPOT, (last token -
    first token) / (tokens - 1), for a client that reads the whole answer rather than each token
    as it comes."""

    ttft: float
    tbt: float
    tbt_mean: bool = False

    def __post_init__(self) -> None:
        if not (self.ttft > 0 and self.tbt > 0):
            raise ValueError(f"SLO values must be positive, got ttft={self.ttft} tbt={self.tbt}")


@dataclass(eq=False, slots=True)
class Request:
    request_id: str
    arrival_time: float
    prompt_len: int
    max_tokens: int
    slo: SLO
    prompt_token_ids: list[int] | None = None
    stop_token_ids: frozenset[int] = frozenset()
    # Opaque to the scheduler: the engine's sampling parameters travel with the request.
    params: Any = None

    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    block_ids: list[int] = field(default_factory=list)
    num_preemptions: int = 0
    # True once any of its tokens has been computed: from then on it cannot be offloaded for free.
    started: bool = False
    offloaded: bool = False
    # A decode: its one pending token is its last sampled output. The one definition of a decode
    # (a prompt's final 1-token chunk is not one: it has sampled nothing yet), kept by the
    # scheduler: set when the request samples a token, cleared when it is preempted. A field
    # rather than a property because every running request is classified on every iteration.
    is_decode: bool = False
    finish_reason: str | None = None
    error: str | None = None
    ttft_deadline: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_len < 1:
            raise ValueError("a request needs at least one prompt token")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.ttft_deadline = self.arrival_time + self.slo.ttft

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + len(self.output_token_ids)

    @property
    def num_remaining_prefill(self) -> int:
        """Tokens still to compute before the next token can be sampled (1 for a decode)."""
        return self.prompt_len + len(self.output_token_ids) - self.num_computed_tokens

    def gap_allowance(self, now: float) -> float:
        """The longest the gap before this decode's next token may be, for an iteration starting at
        `now`: its TBT SLO; judged as the mean, also what the gaps so far left unspent (never
        borrowing from gaps to come, which may never come: the request can stop at any token)."""
        slo = self.slo
        if not (slo.tbt_mean and self.token_times):
            return slo.tbt
        return max(slo.tbt, self.token_times[0] + len(self.output_token_ids) * slo.tbt - now)

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.arrival_time if self.token_times else None

    @property
    def is_finished(self) -> bool:
        return self.status.finished


def tightest_gap(decodes: Sequence[Request], now: float) -> float | None:
    """The tightest `gap_allowance` among `decodes` for an iteration starting at `now`; None
    without any: what the LP budget protects (core/budget.py). An allowance is never below its
    SLO, so when the tightest SLO is judged per gap it is the answer, found without a Python
    call per decode (this runs every simulated iteration)."""
    if not decodes:
        return None
    tightest = min(decodes, key=_TBT)
    if not tightest.slo.tbt_mean:
        return tightest.slo.tbt
    return min(r.gap_allowance(now) for r in decodes)


_TBT = attrgetter("slo.tbt")
