"""The live cluster, server side: the Router over remote instances, on asyncio and zmq.

Requests arrive from the HTTP layer (`submit`), are dispatched by the same Router the simulator
uses (over `RemoteInstanceView`s), and sent to the chosen worker. Each worker report delivers the
step's outputs to the requests' queues, refreshes that instance's mirror, and - for an LP instance -
runs the router's offload check. An offload is a steal: only when the LP worker answers that it
handed the request over is it sent to the HP worker. A worker that dies has its requests that have
not shown the client a token yet re-dispatched; the others end with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import deque

import zmq
import zmq.asyncio

from ascendra.cluster.router import Role, Router
from ascendra.core.policies import POLICIES
from ascendra.core.projection import Projection
from ascendra.core.request import Request, RequestStatus
from ascendra.engine.factory import InstanceSpec
from ascendra.engine.instance import RequestOutput
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.launcher import ProcessWorker, RayWorker, init_ray
from ascendra.runtime.live.remote_view import RemoteInstanceView
from ascendra.runtime.live.state import ClusterObserver, LiveConfig, Tracked, WorkerState, new_request
from ascendra.runtime.live.worker import identity


def restore_signal_handlers() -> None:
    """Ray's core worker installs C-level SIGTERM/SIGINT handlers that abort the process, replacing
    the server's graceful drain; re-install the Python handlers (uvicorn's) over them."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            signal.signal(sig, handler)


class LiveCluster:
    def __init__(self, config: LiveConfig, observer: ClusterObserver | None = None) -> None:
        self.config = config
        self.observer = observer or ClusterObserver()
        self.tracked: dict[str, Tracked] = {}
        self.mirrors: dict[str, Request] = {}
        sysc, perf = config.system, config.perf_model
        self.roles = sysc.roles()
        self.views: list[RemoteInstanceView] = []
        self.specs: list[InstanceSpec] = []
        for role in self.roles:
            policy = sysc.policy(role)
            sched_cfg = sysc.scheduler_config(role, config.capacity.max_model_len)
            projection = Projection(POLICIES[policy], sched_cfg, perf)
            self.views.append(RemoteInstanceView(projection, self.mirrors))
            spec = InstanceSpec(
                **{
                    **config.spec.__dict__,
                    "policy": policy,
                    "scheduler": sched_cfg,
                    "perf_model": perf,
                    "await_offload_check": sysc.router_config().offload and role == Role.LP,
                }
            )
            self.specs.append(spec)
        self.router = Router(list(self.views), self.roles, sysc.router_config())
        self.workers: list[WorkerState] = []
        self._offloads: dict[str, int] = {}  # request id -> HP index, while the steal is in flight
        self._seq = 0
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._tasks: list[asyncio.Task] = []
        self.num_offloads = 0
        self.num_reroutes = 0
        # Benchmarks read these raw samples (seconds): HTTP arrival -> handing it to zmq, and
        # HTTP arrival -> the worker draining it (which waits for its running iteration to end).
        self.send_latency: deque[float] = deque(maxlen=100_000)
        self.dispatch_latency: deque[float] = deque(maxlen=100_000)
        self.started = False

    # ---- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        host = "127.0.0.1"
        if cfg.ray_address:
            node_ip = await asyncio.to_thread(init_ray, cfg.ray_address, len(self.specs))
            restore_signal_handlers()
            if cfg.ray_address != "local":
                # Actors on other nodes connect back over the cluster's network. The messages are
                # pickles: run Ray only on a trusted network, as Ray itself requires.
                host = node_ip
        port = self._sock.bind_to_random_port(f"tcp://{'0.0.0.0' if host != '127.0.0.1' else host}")
        endpoint = f"tcp://{host}:{port}"
        kind = RayWorker if cfg.ray_address else ProcessWorker
        for i, spec in enumerate(self.specs):
            handle = await asyncio.to_thread(kind, spec, endpoint, i)
            self.workers.append(WorkerState(i, self.roles[i], spec.policy, handle, pid=handle.pid))
        self._tasks.append(asyncio.create_task(self._recv_loop()))
        deadline = time.time() + cfg.startup_timeout
        while not all(w.ready for w in self.workers):
            for w in self.workers:
                why = w.handle.exited()
                if why is not None and not w.ready:
                    await self.shutdown()
                    raise RuntimeError(f"instance {w.index} failed to start: {why}")
            if time.time() > deadline:
                await self.shutdown()
                raise RuntimeError(f"instances did not start within {cfg.startup_timeout:.0f} s")
            await asyncio.sleep(0.05)
        self._tasks.append(asyncio.create_task(self._monitor_loop()))
        self.started = True

    def fail_all(self, reason: str) -> None:
        """End every request in flight with an error (their streams close) and free their blocks."""
        for tr in list(self.tracked.values()):
            if tr.instance >= 0 and self.workers[tr.instance].alive:
                self._send(tr.instance, m.Abort(self._next_seq(), tr.add.request_id))
            self._fail(tr, reason)

    async def shutdown(self, fail_reason: str = "the server is shutting down") -> None:
        self.fail_all(fail_reason)
        for w in self.workers:
            if w.alive:
                self._send(w.index, m.Stop(self._next_seq()))
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for w in self.workers:
            if not await asyncio.to_thread(w.handle.join, 5.0):
                await asyncio.to_thread(w.handle.kill)
            w.alive = False
        self._sock.close(0)
        self._ctx.term()

    # ---- requests ----------------------------------------------------------------------------

    @property
    def num_alive(self) -> int:
        return sum(w.alive for w in self.workers)

    def submit(self, add: m.AddRequest) -> Tracked:
        """Dispatch a new request; its outputs arrive on the returned queue."""
        if add.request_id in self.tracked:
            raise ValueError(f"request id {add.request_id!r} is already in flight")
        req = new_request(add)
        tr = Tracked(add, req)
        self.tracked[add.request_id] = tr
        self.mirrors[add.request_id] = req
        self._dispatch(tr, time.time())
        return tr

    def abort(self, request_id: str) -> None:
        """The client went away: end the request wherever it is and free its blocks."""
        tr = self.tracked.get(request_id)
        if tr is None:
            return
        if tr.instance >= 0 and self.workers[tr.instance].alive:
            self._send(tr.instance, m.Abort(self._next_seq(), request_id))
        self._end(tr)

    def _dispatch(self, tr: Tracked, now: float) -> None:
        if self.num_alive == 0:
            self._fail(tr, "no live instance can serve the request")
            return
        i = self.router.dispatch(tr.request, now)
        self._send_add(tr, i)

    def _send_add(self, tr: Tracked, i: int) -> None:
        tr.instance = i
        seq = self._next_seq()
        tr.add.seq, tr.add.sent_at = seq, time.time()
        self.views[i].mark_sent(tr.add.request_id, seq)
        self.send_latency.append(tr.add.sent_at - tr.add.arrival_time)
        self._send(i, tr.add)

    def _end(self, tr: Tracked) -> None:
        rid = tr.add.request_id
        tr.done = True
        self.tracked.pop(rid, None)
        self.mirrors.pop(rid, None)
        self._offloads.pop(rid, None)
        for v in self.views:
            v.forget(rid)

    def _fail(self, tr: Tracked, reason: str) -> None:
        if tr.done:
            return
        out = RequestOutput(
            tr.add.request_id,
            finished=True,
            finish_reason="error",
            error=reason,
            num_prompt_tokens=len(tr.add.prompt_token_ids),
            num_output_tokens=tr.tokens_delivered,
        )
        self._deliver(tr, out)

    def _deliver(self, tr: Tracked, out: RequestOutput) -> None:
        req = tr.request
        if out.new_token_ids:
            req.output_token_ids.extend(out.new_token_ids)
            req.token_times.extend([out.token_time] * len(out.new_token_ids))
            tr.tokens_delivered += len(out.new_token_ids)
        tr.queue.put_nowait(out)
        if out.finished:
            req.status = {
                "stop": RequestStatus.FINISHED_STOPPED,
                "length": RequestStatus.FINISHED_LENGTH,
                "abort": RequestStatus.FINISHED_ABORTED,
            }.get(out.finish_reason or "", RequestStatus.FINISHED_FAILED)
            self.observer.on_finished(tr, out)
            self._end(tr)

    # ---- zmq ---------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, i: int, msg: object) -> None:
        # A ROUTER send does not block (unroutable messages are dropped), so the future is done.
        self._sock.send_multipart([identity(i), m.encode(msg)])

    async def _recv_loop(self) -> None:
        while True:
            _, data = await self._sock.recv_multipart()
            msg = m.decode(data)
            try:
                if isinstance(msg, m.Report):
                    self._on_report(msg)
                elif isinstance(msg, m.Hello):
                    self._on_hello(msg)
            except Exception:  # a bug in one report must not stop every request's stream
                import traceback

                traceback.print_exc()
            # A message already queued resolves the receive at once, without yielding: a worker
            # flooding reports would otherwise starve every HTTP handler, /health included.
            await asyncio.sleep(0)

    def _on_hello(self, msg: m.Hello) -> None:
        w = self.workers[msg.index]
        w.pid, w.host, w.alive, w.ready, w.last_seen = msg.pid, msg.host, True, True, time.time()

    def _on_report(self, rep: m.Report) -> None:
        i = rep.index
        w = self.workers[i]
        if not w.alive:
            return  # a late report from an instance already declared dead
        now = time.time()
        w.last_seen = now
        for rid, t in rep.received:
            tr = self.tracked.get(rid)
            if tr is not None:
                self.dispatch_latency.append(t - tr.add.arrival_time)
                self.observer.on_dispatch_latency(t - tr.add.arrival_time)
        for out in rep.outputs:
            tr = self.tracked.get(out.request_id)
            if tr is not None and tr.instance == i:
                self._deliver(tr, out)
        view = self.views[i]
        for rid in rep.stolen:
            view.stealing.discard(rid)
            target = self._offloads.pop(rid, None)
            tr = self.tracked.get(rid)
            if tr is None or target is None:
                continue  # aborted while the steal was in flight: the worker already dropped it
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
        view.update(rep.snapshot, rep.acked_seq)
        self.observer.on_report(w, rep.snapshot)
        for req, target in self.router.check_offloads(i, now):
            self._offloads[req.request_id] = target
            self._send(i, m.Steal(self._next_seq(), req.request_id))
        if rep.awaits_check:
            self._send(i, m.Checked(self._next_seq(), rep.number))

    # ---- faults ------------------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.time()
            for w in self.workers:
                if not w.alive:
                    continue
                why = w.handle.exited()
                if why is None and now - w.last_seen > self.config.heartbeat_timeout:
                    why = f"no report for {now - w.last_seen:.1f} s"
                if why is not None:
                    self.mark_dead(w.index, why)

    def mark_dead(self, i: int, why: str) -> None:
        w = self.workers[i]
        if not w.alive:
            return
        w.alive, w.death = False, why
        self.router.set_alive(i, False)
        self.views[i].reset()
        self.observer.on_dead(w)
        if w.handle.exited() is None:
            # Declared dead by silence but still running: stop it, or it would keep computing (and
            # holding KV for) requests that are now served elsewhere.
            asyncio.get_running_loop().run_in_executor(None, w.handle.kill)
        now = time.time()
        reason = f"instance {i} died ({why}) while serving the request"
        for tr in [
            t for t in self.tracked.values() if t.instance == i or self._offloads.get(t.add.request_id) == i
        ]:
            self._offloads.pop(tr.add.request_id, None)
            for v in self.views:
                v.forget(tr.add.request_id)
            if tr.tokens_delivered == 0:
                self._redispatch(tr, now)  # the client has seen nothing: start over elsewhere
            else:
                self._fail(tr, reason)

    def _redispatch(self, tr: Tracked, now: float) -> None:
        self.num_reroutes += 1
        self.observer.on_reroute()
        tr.request = new_request(tr.add)
        self.mirrors[tr.add.request_id] = tr.request
        self._dispatch(tr, now)
