"""Plain data of the live cluster: its configuration, a request in flight, a worker's state, and the
hooks through which the server observes the cluster (metrics)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ascendra.cluster.system import SystemConfig
from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request
from ascendra.engine.factory import InstanceSpec
from ascendra.engine.instance import RequestOutput
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.launcher import WorkerHandle
from ascendra.runtime.live.vllm_launcher import VLLMEngines


@dataclass
class LiveConfig:
    system: SystemConfig
    spec: InstanceSpec  # the base spec; policy and scheduler config are set per role
    perf_model: PerfModel
    capacity: KVCapacity  # what each instance holds
    ray_address: str | None = None
    # A worker that has sent nothing for this long is dead (an idle one reports every 0.5 s; a busy
    # one after every iteration, which on CPU can take seconds).
    heartbeat_timeout: float = 30.0
    startup_timeout: float = 600.0
    # A dead instance is started again after a back-off that doubles from the first figure to the
    # second with each death in a row (reset once it has run for a minute); 0: never restart.
    restart_backoff: tuple[float, float] = (1.0, 60.0)
    vllm: VLLMEngines | None = None  # the instances are vLLM engines (None: our own engine's workers)
    # Where instances started by someone else report (HOST:PORT, TCP), and the key they sign with.
    router_address: str | None = None
    secret: bytes | None = None


@dataclass(eq=False)
class Tracked:
    """A request in flight, server side: its mirror for the router, its output queue for the client."""

    add: m.AddRequest
    request: Request
    instance: int = -1
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    tokens_delivered: int = 0
    done: bool = False


@dataclass
class WorkerState:
    index: int
    role: str
    policy: str
    handle: WorkerHandle
    alive: bool = False
    ready: bool = False
    pid: int | None = None
    host: str = ""
    last_seen: float = 0.0
    death: str | None = None  # why it last died
    route: bytes = b""  # its zmq identity, from its signed hello
    restarts: int = 0
    restart_at: float | None = None  # when the next start is due, while it is dead
    started_at: float = 0.0


class ClusterObserver:
    """Hooks for metrics; the server overrides what it records."""

    def on_report(self, worker: WorkerState, snapshot: m.Snapshot) -> None: ...
    def on_finished(self, tracked: Tracked, output: RequestOutput) -> None: ...
    def on_offload(self) -> None: ...
    def on_offload_refused(self) -> None: ...
    def on_migration(self) -> None: ...
    def on_dispatch_latency(self, seconds: float) -> None: ...
    def on_dead(self, worker: WorkerState) -> None: ...
    def on_restart(self, worker: WorkerState) -> None: ...
    def on_reroute(self) -> None: ...
    def on_role_change(self, worker: WorkerState, old_role: str) -> None: ...
