"""Starts the instance workers, watches them, and starts a dead one again after a back-off.

A worker is dead when its process (or Ray actor) exits, or when it has sent nothing for the
heartbeat timeout; the cluster then re-routes or fails its requests (`on_dead`). The supervisor
starts a fresh worker with the same spec after a back-off that doubles with each death in a row,
and the instance rejoins the router when the new worker says hello.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ascendra.engine.factory import InstanceSpec
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.launcher import ProcessWorker, RayWorker
from ascendra.runtime.live.state import ClusterObserver, LiveConfig, WorkerState
from ascendra.runtime.live.vllm_launcher import ExternalWorker, VLLMServerWorker

log = logging.getLogger("ascendra.server")
STABLE_AFTER_S = 60.0  # a worker that ran this long resets its back-off
MONITOR_PERIOD_S = 0.1


class Supervisor:
    def __init__(
        self,
        config: LiveConfig,
        specs: list[InstanceSpec],
        roles: list[str],
        observer: ClusterObserver,
        on_dead: Callable[[int, str], None],
        on_alive: Callable[[int], None],
    ) -> None:
        self.config = config
        self.specs = specs
        self.roles = roles
        self.observer = observer
        self._on_dead = on_dead
        self._on_alive = on_alive
        self.workers: list[WorkerState] = []
        self._endpoint = ""
        self._secret = b""
        self._deaths_in_a_row = [0] * len(specs)

    @property
    def num_alive(self) -> int:
        return sum(w.alive for w in self.workers)

    def _launch(self, i: int):  # -> WorkerHandle
        engines = self.config.vllm
        if engines is not None:
            if not engines.launched:
                return ExternalWorker()
            spec = self.specs[i]
            return VLLMServerWorker(engines, i, spec.policy, spec.scheduler, self._endpoint, self._secret,
                                    spec.await_offload_check)
        kind = RayWorker if self.config.ray_address else ProcessWorker
        return kind(self.specs[i], self._endpoint, i, self._secret)

    async def start(self, endpoint: str, secret: bytes) -> None:
        """Start every worker and wait until all have said hello (or fail if one cannot start)."""
        self._endpoint, self._secret = endpoint, secret
        for i, spec in enumerate(self.specs):
            handle = await asyncio.to_thread(self._launch, i)
            self.workers.append(WorkerState(i, self.roles[i], spec.policy, handle, pid=handle.pid,
                                            started_at=time.time()))
        deadline = time.time() + self.config.startup_timeout
        while not all(w.ready for w in self.workers):
            for w in self.workers:
                why = w.handle.exited()
                if why is not None and not w.ready:
                    raise RuntimeError(f"instance {w.index} failed to start: {why}")
            if time.time() > deadline:
                raise RuntimeError(f"instances did not start within {self.config.startup_timeout:.0f} s")
            await asyncio.sleep(0.05)

    def on_hello(self, msg: m.Hello, route: bytes) -> None:
        if not 0 <= msg.index < len(self.workers):
            return
        w = self.workers[msg.index]
        if w.alive or w.restart_at is not None:
            return  # not the worker we are waiting for (a late hello from one already replaced)
        w.pid, w.host, w.alive, w.ready, w.last_seen = msg.pid, msg.host, True, True, time.time()
        w.route = route
        if w.restarts:
            log.warning("instance %d is back (pid %s, restart %d)", w.index, w.pid, w.restarts)
            self.observer.on_restart(w)
            self._on_alive(w.index)

    def is_current(self, index: int, route: bytes) -> bool:
        """Whether a message comes from the live worker of that instance (not one replaced)."""
        if not 0 <= index < len(self.workers):
            return False
        w = self.workers[index]
        return w.alive and w.route == route

    async def run(self) -> None:
        """Watch for deaths and start the dead again when their back-off is over."""
        while True:
            await asyncio.sleep(MONITOR_PERIOD_S)
            now = time.time()
            for w in self.workers:
                if w.alive:
                    why = w.handle.exited()
                    if why is None and now - w.last_seen > self.config.heartbeat_timeout:
                        why = f"no report for {now - w.last_seen:.1f} s"
                    if why is not None:
                        self.mark_dead(w.index, why)
                elif w.restart_at is not None:
                    if now >= w.restart_at:
                        await self._restart(w)
                elif w.handle.exited() is not None:  # a restarted worker that died before its hello
                    w.death = f"restart failed: {w.handle.exited()}"
                    log.error("instance %d: %s", w.index, w.death)
                    self._schedule_restart(w)

    def mark_dead(self, index: int, why: str) -> None:
        w = self.workers[index]
        if not w.alive:
            return
        w.alive, w.death = False, why
        log.error("instance %d (pid %s) died: %s", index, w.pid, why)
        self.observer.on_dead(w)
        if w.handle.exited() is None:
            # Declared dead by silence but still running: stop it, or it would keep computing (and
            # holding KV for) requests that are now served elsewhere.
            asyncio.get_running_loop().run_in_executor(None, w.handle.kill)
        if time.time() - w.started_at > STABLE_AFTER_S:
            self._deaths_in_a_row[index] = 0
        self._schedule_restart(w)
        self._on_dead(index, why)

    def _schedule_restart(self, w: WorkerState) -> None:
        lo, hi = self.config.restart_backoff
        if lo <= 0:
            return
        wait = min(hi, lo * 2 ** self._deaths_in_a_row[w.index])
        self._deaths_in_a_row[w.index] += 1
        w.restart_at = time.time() + wait
        log.warning("instance %d restarts in %.0f s", w.index, wait)

    async def _restart(self, w: WorkerState) -> None:
        if w.handle.exited() is None:
            await asyncio.to_thread(w.handle.kill)
        w.restart_at = None
        w.restarts += 1
        w.ready, w.pid, w.started_at = False, None, time.time()
        try:
            w.handle = await asyncio.to_thread(self._launch, w.index)
            w.pid = w.handle.pid
        except Exception as e:  # could not even spawn: try again after the next back-off
            w.death = f"restart failed: {type(e).__name__}: {e}"
            log.error("instance %d: %s", w.index, w.death)
            self._schedule_restart(w)

    async def stop(self, send_stop: Callable[[int], None]) -> None:
        for w in self.workers:
            w.restart_at = None
            if w.alive:
                send_stop(w.index)
        for w in self.workers:
            if not await asyncio.to_thread(w.handle.join, 5.0):
                await asyncio.to_thread(w.handle.kill)
            w.alive = False
