"""What the server and the instance workers say to each other over zmq.

Every message is one of the dataclasses below, sent through `wire.Codec` (msgpack, signed per
launch: never pickle). Server -> worker messages carry a sequence number; each report echoes the
last one the worker applied, so the server knows which of its adds and steals a snapshot already
reflects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ascendra.core.config import SchedulerConfig
from ascendra.core.iteration_stats import IterationStats, Moments
from ascendra.core.request import SLO, Request
from ascendra.engine.instance import RequestOutput
from ascendra.model.sampling import SamplingParams
from ascendra.runtime.live.wire import Codec

# ---- server -> worker ----------------------------------------------------------------------------


@dataclass(slots=True)
class AddRequest:
    seq: int
    request_id: str
    arrival_time: float
    prompt_token_ids: list[int]
    max_tokens: int
    ttft_slo: float
    tbt_slo: float
    stop_token_ids: frozenset[int]
    params: SamplingParams
    sent_at: float = 0.0

    def __post_init__(self) -> None:
        self.stop_token_ids = frozenset(self.stop_token_ids)  # a list on the wire

    def to_request(self) -> Request:
        """The engine's Request for it: the worker's to schedule, the server's to mirror."""
        return Request(
            self.request_id,
            self.arrival_time,
            len(self.prompt_token_ids),
            self.max_tokens,
            SLO(self.ttft_slo, self.tbt_slo),
            prompt_token_ids=list(self.prompt_token_ids),
            stop_token_ids=self.stop_token_ids,
            params=self.params,
        )


@dataclass(slots=True)
class Abort:
    seq: int
    request_id: str


@dataclass(slots=True)
class Steal:
    """Hand back this request if it has not started (an offload to an HP instance)."""

    seq: int
    request_id: str


@dataclass(slots=True)
class Checked:
    """The router has checked this LP worker's queue for offloads after its report `report`; any
    steals it decided on were sent before this."""

    seq: int
    report: int


@dataclass(slots=True)
class ChangeRole:
    """Go on under this policy and config with everything held: a role change (cluster/roles.py)."""

    seq: int
    policy: str
    scheduler: SchedulerConfig
    await_offload_check: bool  # an LP worker holds each iteration for the router's offload check


@dataclass(slots=True)
class Stop:
    seq: int


# ---- worker -> server ----------------------------------------------------------------------------


@dataclass(slots=True)
class WaitingEntry:
    request_id: str
    remaining: int  # prompt tokens (and recomputed outputs after a preemption) still to compute
    started: bool
    num_output: int


@dataclass(slots=True)
class Snapshot:
    """The worker's queue as the router reads it (QueueSnapshot, by id) plus load gauges."""

    waiting: list[WaitingEntry] = field(default_factory=list)  # in the order the policy serves them
    prefilling: list[tuple[str, int]] = field(default_factory=list)  # (id, remaining prompt tokens)
    num_decodes: int = 0
    decode_context: int = 0
    min_tbt: float | None = None
    pending_prefill_tokens: int = 0
    num_running: int = 0
    blocks_used: int = 0
    num_blocks: int = 1
    num_preemptions: int = 0
    num_steps: int = 0
    # Policy state the budget rule reads: the tightest TTFT SLO among requests without a first token.
    min_ttft_slo: float | None = None
    slowdown: float = 1.0  # the worker scheduler's learnt measured/predicted iteration time
    iterations: IterationStats = field(default_factory=IterationStats)


@dataclass(slots=True)
class Hello:
    index: int
    pid: int
    num_blocks: int
    host: str = ""


@dataclass(slots=True)
class Report:
    index: int
    acked_seq: int  # the last server message applied before this snapshot was taken
    snapshot: Snapshot
    outputs: list[RequestOutput] = field(default_factory=list)
    received: list[tuple[str, float]] = field(default_factory=list)  # (request id, time it arrived here)
    stolen: list[str] = field(default_factory=list)  # steals granted
    refused: list[str] = field(default_factory=list)  # steals refused (started, finished or unknown)
    step_error: str | None = None
    number: int = 0  # reports this worker has sent, this one included
    awaits_check: bool = False  # the worker holds its next iteration for a `Checked` to this report


# The wire's whole vocabulary; the order is the wire's type codes (the same on both ends).
WIRE_TYPES = (AddRequest, Abort, Steal, Checked, Stop, WaitingEntry, Snapshot, Hello, Report,
              RequestOutput, SamplingParams, IterationStats, Moments, ChangeRole, SchedulerConfig)


def codec(secret: bytes) -> Codec:
    return Codec(WIRE_TYPES, secret)
