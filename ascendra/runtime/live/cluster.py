"""The live cluster, server side: the Router over remote instances, on asyncio and zmq.

Requests arrive from the HTTP layer (`submit`), are dispatched by the same Router the simulator
uses (over `RemoteInstanceView`s), and sent to the chosen worker. Each worker report delivers the
step's outputs to the requests' queues, settles offloads, refreshes that instance's mirror, and -
for an LP instance - runs the router's offload step. An offload is a steal: only when the LP worker
answers that it handed the request over is it sent to the HP worker. A worker that dies has its
requests that have not shown the client a token yet re-dispatched, the others end with an error,
and the supervisor starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import replace

from ascendra.cluster.router import Role, Router
from ascendra.core.policies import POLICIES
from ascendra.core.projection import Projection
from ascendra.core.request import Request, RequestStatus
from ascendra.engine.factory import InstanceSpec
from ascendra.engine.instance import RequestOutput
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.launcher import init_ray, restore_signal_handlers
from ascendra.runtime.live.migrations import LiveMigrations
from ascendra.runtime.live.remote_view import RemoteInstanceView
from ascendra.runtime.live.state import ClusterObserver, LiveConfig, Tracked, WorkerState
from ascendra.runtime.live.supervisor import Supervisor
from ascendra.runtime.live.transport import ServerTransport
from ascendra.runtime.live.vllm_stream import VLLMRequests
from ascendra.runtime.live.wire import new_secret

log = logging.getLogger("ascendra.server")


class LiveCluster:
    def __init__(self, config: LiveConfig, observer: ClusterObserver | None = None) -> None:
        self.config = config
        self.observer = observer or ClusterObserver()
        self.tracked: dict[str, Tracked] = {}
        self.mirrors: dict[str, Request] = {}
        sysc = config.system
        roles = sysc.roles()
        self.views: list[RemoteInstanceView] = []
        specs: list[InstanceSpec] = []
        for role in roles:
            policy = sysc.policy(role)
            sched_cfg = sysc.scheduler_config(role, config.capacity.max_model_len)
            self.views.append(RemoteInstanceView(Projection(POLICIES[policy], sched_cfg, config.perf_model),
                                                 self.mirrors))
            specs.append(InstanceSpec(**{
                **config.spec.__dict__, "policy": policy, "scheduler": sched_cfg,
                "perf_model": config.perf_model,
                "await_offload_check": sysc.router_config(config.capacity).offload and role == Role.LP,
            }))
        self.router = Router(list(self.views), roles, sysc.router_config(config.capacity),
                             sysc.role_specs(config.capacity.max_model_len))
        self.supervisor = Supervisor(config, specs, roles, self.observer, self._on_dead, self._on_alive)
        # The workers' proof that a frame is theirs (see wire.py): drawn per launch, or the
        # operator's when engines started elsewhere report here.
        self._secret = config.secret or new_secret()
        self.transport = ServerTransport(self._secret)
        self._offloads: dict[str, int] = {}  # request id -> HP index, while the steal is in flight
        self.migrations = LiveMigrations(self)
        # vLLM engines take requests over their OpenAI API, one stream each; ours over the socket.
        self.vllm: VLLMRequests | None = None
        self._seq = 0
        self._tasks: list[asyncio.Task] = []
        self._supervising: asyncio.Task | None = None
        self.num_offloads = 0
        self.num_reroutes = 0
        # Benchmarks read these raw samples (seconds): HTTP arrival -> handing it to zmq, and
        # HTTP arrival -> the worker draining it (which waits for its running iteration to end).
        self.send_latency: deque[float] = deque(maxlen=100_000)
        self.dispatch_latency: deque[float] = deque(maxlen=100_000)
        self.started = False

    @property
    def workers(self) -> list[WorkerState]:
        return self.supervisor.workers

    @property
    def num_alive(self) -> int:
        return self.supervisor.num_alive

    # ---- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        tcp_host = None  # local workers: a private IPC socket
        if cfg.ray_address:
            node_ip = await asyncio.to_thread(init_ray, cfg.ray_address, len(self.views))
            restore_signal_handlers()
            # Actors on other nodes connect back over the cluster's network (signed frames).
            tcp_host = "127.0.0.1" if cfg.ray_address == "local" else node_ip
        if cfg.router_address:
            host, _, port = cfg.router_address.rpartition(":")
            endpoint = self.transport.bind(host or "0.0.0.0", int(port))
        else:
            endpoint = self.transport.bind(tcp_host)
        if cfg.vllm is not None:
            self.vllm = VLLMRequests(cfg.vllm, self._deliver_from, self._on_engine_error)
        log.info("instance workers connect on %s", endpoint)
        self._tasks.append(asyncio.create_task(self._recv_loop()))
        try:
            await self.supervisor.start(endpoint, self._secret)
        except BaseException:
            await self.shutdown()
            raise
        self._supervising = asyncio.create_task(self.supervisor.run())
        self._tasks.append(self._supervising)
        self.started = True

    def fail_all(self, reason: str) -> None:
        """End every request in flight with an error (their streams close) and free their blocks."""
        for tr in list(self.tracked.values()):
            self._abort_on(tr)
            self._fail(tr, reason)

    async def shutdown(self, fail_reason: str = "the server is shutting down") -> None:
        self.fail_all(fail_reason)
        if self._supervising is not None:
            self._supervising.cancel()  # no restarts while the workers are being stopped
        await self.supervisor.stop(lambda i: self._send(i, m.Stop(self._next_seq())))
        if self.vllm is not None:
            await self.vllm.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self.transport.close()

    # ---- requests ----------------------------------------------------------------------------

    def submit(self, add: m.AddRequest) -> Tracked:
        """Dispatch a new request; its outputs arrive on the returned queue."""
        if add.request_id in self.tracked:
            raise ValueError(f"request id {add.request_id!r} is already in flight")
        tr = Tracked(add, add.to_request())
        self.tracked[add.request_id] = tr
        self.mirrors[add.request_id] = tr.request
        self._dispatch(tr, time.time())
        return tr

    def abort(self, request_id: str) -> None:
        """The client went away: end the request wherever it is and free its blocks."""
        tr = self.tracked.get(request_id)
        if tr is None:
            return
        self._abort_on(tr)
        self._end(tr)

    def _abort_on(self, tr: Tracked) -> None:
        """End the request in its instance and free its blocks there."""
        if self.vllm is not None:
            self.vllm.cancel(tr.add.request_id)  # closing the stream aborts it in the engine
        elif tr.instance >= 0 and self.workers[tr.instance].alive:
            self._send(tr.instance, m.Abort(self._next_seq(), tr.add.request_id))

    def _dispatch(self, tr: Tracked, now: float) -> None:
        if self.num_alive == 0:
            self._fail(tr, "no live instance can serve the request")
            return
        self._send_add(tr, self.router.dispatch(tr.request, now))

    def _send_add(self, tr: Tracked, i: int) -> None:
        tr.instance = i
        seq = self._next_seq()
        tr.add.seq, tr.add.sent_at = seq, time.time()
        self.views[i].mark_sent(tr.add.request_id, seq)
        self.send_latency.append(tr.add.sent_at - tr.add.arrival_time)
        if self.vllm is not None:
            self.vllm.start(tr.add, i)
        else:
            self._send(i, tr.add)

    def _deliver_from(self, i: int, out: RequestOutput) -> None:
        """An output from instance i, for a request that is still i's (not moved, not ended)."""
        tr = self.tracked.get(out.request_id)
        if tr is not None and tr.instance == i:
            self._deliver(tr, out)

    def _on_engine_error(self, i: int, request_id: str, reason: str, engine_down: bool) -> None:
        """A request's stream to a vLLM engine failed. If the engine itself is down, it is a dead
        instance like a dead worker: its requests that have shown nothing start over elsewhere,
        this one included, the others fail with the reason, and the supervisor restarts it."""
        if engine_down and self.workers[i].alive:
            self.mark_dead(i, reason)
            return
        tr = self.tracked.get(request_id)
        if tr is not None and tr.instance == i:
            self._fail(tr, reason)

    def _end(self, tr: Tracked) -> None:
        rid = tr.add.request_id
        tr.done = True
        self.tracked.pop(rid, None)
        self.mirrors.pop(rid, None)
        self._offloads.pop(rid, None)
        self.migrations.forget(rid)
        for v in self.views:
            v.forget(rid)

    def _fail(self, tr: Tracked, reason: str) -> None:
        if not tr.done:
            self._deliver(tr, RequestOutput(
                tr.add.request_id, finished=True, finish_reason=RequestStatus.FINISHED_FAILED.value,
                error=reason, num_prompt_tokens=len(tr.add.prompt_token_ids),
                num_output_tokens=tr.tokens_delivered))

    def _deliver(self, tr: Tracked, out: RequestOutput) -> None:
        req = tr.request
        if out.new_token_ids:
            req.output_token_ids.extend(out.new_token_ids)
            req.token_times.extend([out.token_time] * len(out.new_token_ids))
            tr.tokens_delivered += len(out.new_token_ids)
        tr.queue.put_nowait(out)
        if out.finished:
            req.status = RequestStatus(out.finish_reason)
            if req.status is RequestStatus.FINISHED_FAILED:
                log.warning("request %s failed: %s", tr.add.request_id, out.error)
            self.observer.on_finished(tr, out)
            self._end(tr)

    # ---- worker messages -----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, i: int, msg: object) -> None:
        self.transport.send(self.workers[i].route, msg)

    async def _recv_loop(self) -> None:
        while True:
            route, msg = await self.transport.recv()
            try:
                if isinstance(msg, m.Report):
                    self._on_report(msg, route)
                elif isinstance(msg, m.Hello):
                    self.supervisor.on_hello(msg, route)
            except Exception:  # a bug in one report must not stop every request's stream
                log.exception("handling a worker message failed")
            # A message already queued resolves the receive at once, without yielding: a worker
            # flooding reports would otherwise starve every HTTP handler, /health included.
            await asyncio.sleep(0)

    def _on_report(self, rep: m.Report, route: bytes) -> None:
        i = rep.index
        if not self.supervisor.is_current(i, route):
            return  # a late report from an instance already declared dead (or replaced)
        now = time.time()
        w = self.workers[i]
        w.last_seen = now
        if rep.step_error:
            log.error("instance %d: %s", i, rep.step_error)
        self._note_receipts(rep)
        for out in rep.outputs:
            self._deliver_from(i, out)
        self._settle_steals(rep, now)
        self.migrations.settle(rep)
        self.views[i].update(rep.snapshot, rep.acked_seq, [rid for rid, _ in rep.received])
        self.observer.on_report(w, rep.snapshot)
        for req, target in self.router.offload(i, now):
            self.steal(i, req.request_id, target)
        for mv in self.router.take_migrations():
            self.migrations.start(mv.request.request_id, mv.target)
        self._apply_role_changes()
        if rep.awaits_check:
            self._send(i, m.Checked(self._next_seq(), rep.number))

    def _apply_role_changes(self) -> None:
        """Tell the workers whose role the router changed; a restart starts them in it too."""
        for i, role in self.router.role_changes:
            policy, sched = self.router.role_specs[role]
            check = self.router.config.offload and role == Role.LP
            self.supervisor.specs[i] = replace(self.supervisor.specs[i], policy=policy.name, scheduler=sched,
                                               await_offload_check=check)
            w = self.workers[i]
            old, w.role, w.policy = w.role, role, policy.name
            log.info("instance %d is now %s", i, role.upper())
            self.observer.on_role_change(w, old)
            if w.alive:
                self._send(i, m.ChangeRole(self._next_seq(), policy.name, sched, check))
        self.router.role_changes.clear()

    def _note_receipts(self, rep: m.Report) -> None:
        for rid, t in rep.received:
            tr = self.tracked.get(rid)
            if tr is not None:
                self.dispatch_latency.append(t - tr.add.arrival_time)
                self.observer.on_dispatch_latency(t - tr.add.arrival_time)

    def steal(self, i: int, rid: str, target: int) -> None:
        """Ask instance `i` to hand request `rid` over to `target` (an offload) if it has not started;
        its next report says whether it did (`_settle_steals`)."""
        self._offloads[rid] = target
        self._send(i, m.Steal(self._next_seq(), rid))

    def _settle_steals(self, rep: m.Report, now: float) -> None:
        """Steals the worker granted go on to their HP instance; refused ones stay where they are."""
        view = self.views[rep.index]
        for rid in rep.stolen:
            view.stealing.discard(rid)
            target = self._offloads.pop(rid, None)
            tr = self.tracked.get(rid)
            if tr is None or target is None:
                continue  # aborted while the steal was in flight: the worker already dropped it
            if self.vllm is not None:
                self.vllm.cancel(rid)  # the engine no longer has it: its stream there just ends
            if self.workers[target].alive:
                self.num_offloads += 1
                self.observer.on_offload()
                self._send_add(tr, target)
            else:
                self.views[target].forget(rid)
                self._redispatch(tr, now)
        for rid in rep.refused:
            view.stealing.discard(rid)
            target = self._offloads.pop(rid, None)
            if target is not None:
                self.views[target].forget(rid)
                self.observer.on_offload_refused()

    # ---- faults ------------------------------------------------------------------------------

    def mark_dead(self, i: int, why: str) -> None:
        self.supervisor.mark_dead(i, why)

    def _on_dead(self, i: int, why: str) -> None:
        self.router.set_alive(i, False)
        self.views[i].reset()
        now = time.time()
        reason = f"instance {i} died ({why}) while serving the request"
        for tr in [
            t for t in self.tracked.values() if t.instance == i or self._offloads.get(t.add.request_id) == i
        ]:
            self._offloads.pop(tr.add.request_id, None)
            self.migrations.forget(tr.add.request_id)
            for v in self.views:
                v.forget(tr.add.request_id)
            if self.vllm is not None:
                self.vllm.cancel(tr.add.request_id)
            if tr.tokens_delivered == 0:
                self._redispatch(tr, now)  # the client has seen nothing: start over elsewhere
            else:
                self._fail(tr, reason)

    def _on_alive(self, i: int) -> None:
        self.views[i].reset()
        self.router.set_alive(i, True)

    def _redispatch(self, tr: Tracked, now: float) -> None:
        self.num_reroutes += 1
        self.observer.on_reroute()
        tr.request = tr.add.to_request()
        self.mirrors[tr.add.request_id] = tr.request
        self._dispatch(tr, now)
