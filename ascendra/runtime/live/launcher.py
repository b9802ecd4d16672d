"""Start instance workers: spawned OS processes on this machine, or Ray actors on a Ray cluster.

Both kinds run `serve_instance` and connect back to the server's zmq endpoint; the server only sees
a `WorkerHandle` that can tell whether the worker is gone and can stop it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from typing import Protocol

from ascendra.engine.factory import InstanceSpec
from ascendra.runtime.live.worker import process_main


class WorkerHandle(Protocol):
    pid: int | None

    def exited(self) -> str | None: ...  # why the worker is gone, or None while it runs
    def join(self, timeout: float) -> bool: ...  # True when it has exited
    def kill(self) -> None: ...


class ProcessWorker:
    def __init__(self, spec: InstanceSpec, endpoint: str, index: int, secret: bytes) -> None:
        ctx = mp.get_context("spawn")  # fork would copy the server's threads and event loop
        # The secret reaches the child through the spawn pipe between the two processes.
        self.proc = ctx.Process(
            target=process_main,
            args=(spec, endpoint, index, secret, os.getpid()),
            name=f"ascendra-instance-{index}",
            daemon=True,
        )
        self.proc.start()
        self.pid = self.proc.pid

    def exited(self) -> str | None:
        code = self.proc.exitcode
        if code is None:
            return None
        return (
            f"process {self.pid} exited with code {code}"
            if code >= 0
            else f"process {self.pid} was killed by signal {-code}"
        )

    def join(self, timeout: float) -> bool:
        self.proc.join(timeout)
        return self.proc.exitcode is not None

    def kill(self) -> None:
        if self.proc.exitcode is None:
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(2.0)


class RayWorker:
    """One Ray actor (num_cpus=1) running the worker loop; `run` returns when the worker stops."""

    def __init__(self, spec: InstanceSpec, endpoint: str, index: int, secret: bytes) -> None:
        import ray

        actor_cls = ray.remote(num_cpus=1)(_RayInstance)
        self.actor = actor_cls.options(name=None, max_restarts=0).remote()
        # Ray carries the arguments over its own channels, inside the cluster it trusts.
        self.ref = self.actor.run.remote(spec, endpoint, index, secret)
        self.pid = None  # known from the worker's hello

    def exited(self) -> str | None:
        import ray

        done, _ = ray.wait([self.ref], timeout=0)
        if not done:
            return None
        try:
            ray.get(self.ref)
            return "Ray actor returned"
        except Exception as e:  # ActorDiedError, a task error: either way it is gone
            return f"Ray actor died: {type(e).__name__}"

    def join(self, timeout: float) -> bool:
        import ray

        done, _ = ray.wait([self.ref], timeout=timeout)
        return bool(done)

    def kill(self) -> None:
        import ray

        ray.kill(self.actor, no_restart=True)


class _RayInstance:
    def run(self, spec: InstanceSpec, endpoint: str, index: int, secret: bytes) -> None:
        from ascendra.runtime.live.worker import serve_instance

        serve_instance(spec, endpoint, index, secret)


def init_ray(address: str, num_instances: int = 1) -> str:
    """Connect to Ray (`auto`, an address) or start a local one (`local`); returns this node's IP,
    which the actors use to reach the server's zmq endpoint."""
    import ray

    if not ray.is_initialized():
        if address == "local":
            # One CPU per instance actor at least, so every actor gets scheduled on a small machine.
            ray.init(num_cpus=max(num_instances, os.cpu_count() or 1), include_dashboard=False)
        else:
            ray.init(address=address, include_dashboard=False)
    return ray.util.get_node_ip_address()


def restore_signal_handlers() -> None:
    """Ray's core worker installs C-level SIGTERM/SIGINT handlers that abort the process, replacing
    the server's graceful drain; re-install the Python handlers (uvicorn's) over them."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            signal.signal(sig, handler)
