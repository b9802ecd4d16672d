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
from ascendra.engine.executor import KVState
from ascendra.engine.instance import Migrated, RequestOutput
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
    tbt_mean: bool = False  # `SLO.tbt_mean`

    def __post_init__(self) -> None:
        self.stop_token_ids = frozenset(self.stop_token_ids)  # a list on the wire

    def to_request(self) -> Request:
        """The engine's Request for it: the worker's to schedule, the server's to mirror."""
        return Request(
            self.request_id,
            self.arrival_time,
            len(self.prompt_token_ids),
            self.max_tokens,
            SLO(self.ttft_slo, self.tbt_slo, self.tbt_mean),
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
class Migrate:
    """Hand over this running request with its KV (a migration: cluster/migration.py)."""

    seq: int
    request_id: str


@dataclass(slots=True)
class Moved:
    """A running request as its source handed it over: where it stands, and its KV as bytes."""

    request_id: str
    output_token_ids: list[int]
    num_computed_tokens: int
    is_decode: bool
    num_preemptions: int
    text_sent: int  # characters of its text already streamed
    kv: KVState | None  # None: too large for a frame, or not ours; the target recomputes

    def to_migrated(self, add: AddRequest) -> Migrated:
        """The engine's request again, on its target, where its source left it."""
        req = add.to_request()
        req.output_token_ids = list(self.output_token_ids)
        req.num_computed_tokens, req.is_decode = self.num_computed_tokens, self.is_decode
        req.num_preemptions, req.started = self.num_preemptions, True
        if not 0 < req.num_computed_tokens <= req.num_tokens or req.num_output_tokens >= req.max_tokens:
            raise ValueError(f"request {add.request_id}: {req.num_computed_tokens} of {req.num_tokens} "
                             f"tokens computed, {req.num_output_tokens} of {req.max_tokens} sampled")
        return Migrated(req, self.kv, self.text_sent)


@dataclass(slots=True)
class AddMigrated:
    """Take over this request from another instance (`Moved`, from its source's report)."""

    seq: int
    add: AddRequest
    moved: Moved


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
    decoding: list[str] = field(default_factory=list)  # the running decodes (migration candidates)
    kv_room: int = 0  # tokens of KV a request migrated here could bring (BlockManager.room)
    step_slowdown: float = 1.0  # the typical iteration's slowdown, which the budget rule reads


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
    migrated: list[Moved] = field(default_factory=list)  # migrations carried out
    not_migrated: list[str] = field(default_factory=list)  # not running here any more
    refused: list[str] = field(default_factory=list)  # steals refused (started, finished or unknown)
    step_error: str | None = None
    number: int = 0  # reports this worker has sent, this one included
    awaits_check: bool = False  # the worker holds its next iteration for a `Checked` to this report


# The wire's whole vocabulary; the order is the wire's type codes (the same on both ends).
WIRE_TYPES = (AddRequest, Abort, Steal, Checked, Stop, WaitingEntry, Snapshot, Hello, Report,
              RequestOutput, SamplingParams, IterationStats, Moments, ChangeRole, SchedulerConfig,
              Migrate, Moved, AddMigrated, KVState)


def codec(secret: bytes) -> Codec:
    return Codec(WIRE_TYPES, secret)
