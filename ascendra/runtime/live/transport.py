"""The server's end of the worker socket: one zmq ROUTER, signed msgpack frames (`wire`).

Local workers connect over an IPC path inside a directory only this user may enter; Ray actors on
other machines over TCP. Either way a frame without this launch's signature is dropped unread, so
a local user who finds the socket can neither run code in the server (nothing is unpickled) nor
speak for a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

import zmq
import zmq.asyncio

from ascendra.runtime.live.messages import codec
from ascendra.runtime.live.wire import BadMessage

log = logging.getLogger("ascendra.server")


class ServerTransport:
    def __init__(self, secret: bytes) -> None:
        self.codec = codec(secret)
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._dir: Path | None = None
        self.endpoint = ""
        self.num_rejected = 0  # frames dropped for a bad signature or shape

    def bind(self, tcp_host: str | None = None, port: int = 0) -> str:
        """Listen on a private IPC path, or on TCP at `tcp_host` for workers on other machines (on
        `port`, or one the system picks)."""
        if tcp_host is None:
            self._dir = Path(tempfile.mkdtemp(prefix="ascendra-"))  # mode 0700: this user's alone
            self.endpoint = f"ipc://{self._dir / 'workers'}"
            self._sock.bind(self.endpoint)
        else:
            if port:
                self._sock.bind(f"tcp://{tcp_host}:{port}")
            else:
                port = self._sock.bind_to_random_port(f"tcp://{tcp_host}")
            self.endpoint = f"tcp://{tcp_host}:{port}"
        return self.endpoint

    def send(self, route: bytes, msg: object) -> None:
        # A ROUTER send does not block (unroutable messages are dropped), so the future is done.
        self._sock.send_multipart([route, self.codec.encode(msg)])

    async def recv(self) -> tuple[bytes, object]:
        """The next well-formed, signed message from any worker, with the route back to it (a
        worker's route is learnt from its signed hello, so no one else can take it over)."""
        while True:
            parts = await self._sock.recv_multipart()
            try:
                if len(parts) != 2:
                    raise BadMessage(f"{len(parts)} frames")
                return parts[0], self.codec.decode(parts[1])
            except BadMessage as e:
                self.num_rejected += 1
                log.warning("dropped a frame on the worker socket: %s", e)
                await asyncio.sleep(0)  # a flood of bad frames must not starve the event loop

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
