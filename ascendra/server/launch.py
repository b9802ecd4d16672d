"""Start `ascendra serve` as a child process and wait until it answers: for tests, benchmarks and
scripts that need a real server on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], startup_timeout: float = 300.0, api_key: str | None = None) -> None:
        """`api_key`: started with it (through ASCENDRA_API_KEY, so it is not on a command line), and
        sent on this object's own /health checks."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="ascendra-serve-", suffix=".log", delete=False)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        env = dict(os.environ)
        env.pop("ASCENDRA_API_KEY", None)
        if api_key:
            env["ASCENDRA_API_KEY"] = api_key
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ascendra.cli.serve", "--port", str(self.port), "--log-level", "warning",
             *args], stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT))
        self._wait_ready(startup_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0, headers=self.headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"the server did not start within {timeout:.0f} s:\n{self.output()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def health(self, timeout: float = 30.0) -> dict:
        """The server's /health. The default wait is generous: tests call this beside engines that
        hold both cores of a small CI machine."""
        return httpx.get(self.url + "/health", timeout=timeout, headers=self.headers).json()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        Path(self.log.name).unlink(missing_ok=True)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        key, _, lab = head.partition("{")
        if key != name or not all(f'{k}="{v}"' in lab for k, v in labels.items()):
            continue
        total += float(value)
    return total
