"""Run the app under uvicorn with a graceful drain on SIGTERM / Ctrl-C.

On the first signal the server keeps listening but answers new requests with 503, lets the requests
in flight finish for up to `drain_timeout` seconds, fails the rest with a clear error, and then shuts
down (the app's lifespan stops the instance workers). A second signal skips the drain.

Once the instances are up and the socket serves, the last line of start-up says where the server
listens, what it serves and with which instances (uvicorn says nothing of the address when it is
handed a socket, as here).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import sys
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from ascendra.server.access_log import keep_probes_out
from ascendra.server.http_protocol import DeadlineH11Protocol

log = logging.getLogger("ascendra.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_timeout: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:  # noqa: ANN001 - uvicorn's signature
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and sockets:  # after uvicorn's own start-up lines, and the instances' start
            host, port = sockets[0].getsockname()[:2]
            print(ready_line(self.app.state.server.config, host, port), file=sys.stderr, flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise the signal after a clean exit.
        state = self.app.state.server
        if state.draining or self._loop is None or self.drain_timeout <= 0:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            return
        state.draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        state = self.app.state.server
        cluster = state.cluster
        n = len(cluster.tracked)
        log.info("draining: %d request(s) in flight, up to %.0f s", n, self.drain_timeout)
        deadline = time.time() + self.drain_timeout
        while cluster.tracked and time.time() < deadline and not self.should_exit:
            await asyncio.sleep(0.05)
        if cluster.tracked:
            log.info("drain timeout: failing %d request(s)", len(cluster.tracked))
            cluster.fail_all(f"the server shut down before the request finished (drain timeout "
                             f"{self.drain_timeout:.0f} s)")
            await asyncio.sleep(0.2)  # let the streams write their error events
        self.should_exit = True


def ready_line(config, host: str, port: int) -> str:  # config: ascendra.server.app.ServerConfig
    """The last line of start-up: the address, the model and the instances' roles."""
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if host in ("0.0.0.0", "::"):
        url += " (every interface)"
    system = config.live.system
    roles = system.roles()
    if system.system == "ascendra":
        instances = f"{roles.count('lp')} LP + {roles.count('hp')} HP"
        if system.adaptive_roles:
            instances += " at rest, roles following the load"
    else:
        instances = f"{len(roles)} x {system.system}"
    return f"ascendra serve: ready on {url}, model {config.model_name}, instances {instances}"


def serve_app(
    app: FastAPI, sock: socket.socket, drain_timeout: float, log_level: str = "info",
    log_probes: bool = False,
) -> None:
    """Serve on `sock`, already bound and listening (`ascendra serve` binds it before loading models).
    `log_probes`: keep /health and /metrics requests in the access log (by default left out)."""
    host, port = sock.getsockname()[:2]
    # The server's own log (worker failures, restarts, dropped frames) beside uvicorn's, on stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logging.getLogger("ascendra").addHandler(handler)
    logging.getLogger("ascendra").setLevel(log_level.upper())
    state = app.state.server
    # h11 with the head's and the unread body's deadlines (http_protocol.py). No `limit_concurrency`:
    # it counts open connections, the very thing a slow client multiplies, and answers 503 to
    # everyone past it; the admission limit counts requests whose body is in (door.Admission).
    protocol = functools.partial(DeadlineH11Protocol, header_timeout=state.config.header_timeout,
                                 body_timeout=state.config.body_timeout, departures=state.metrics.departures)
    config = uvicorn.Config(app, host=host, port=port, loop="asyncio", log_level=log_level, http=protocol,
                            timeout_graceful_shutdown=5, timeout_keep_alive=5)
    if not log_probes:  # uvicorn.Config has configured its loggers by now
        keep_probes_out()
    DrainingServer(config, app, drain_timeout).run(sockets=[sock])
