"""The body of every request, read whole before any route sees it, against a size and a deadline.

So a route runs only once its request is all here: a client that trickles its body holds no
admission slot, no handler and no worker, only its connection, and that only until the deadline.

  - `Content-Length` over the size limit: 413 at once, before any of the body is read (the rest is
    left to h11, which discards it; the connection's own deadline ends that, http_protocol.py);
  - a body (declared or chunked) that grows past the limit: 413 (read on, up to 4x the limit, so
    that the client, still sending, can read the answer rather than meet a reset mid-upload);
  - a body not all in within `timeout` seconds of the head: 408, and the connection closes;
  - a client that hangs up mid-body: one line at INFO and a count, no answer, no traceback.

Plain ASGI (as door.ApiKeyMiddleware) rather than BaseHTTPMiddleware, which would hide a client's
disconnect from the routes. After the body, `receive` is the server's own again, so a route still
hears of a disconnect as soon as it happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ascendra.server.departures import Departures
from ascendra.server.door import error_response
from ascendra.server.validation import ApiError

DRAIN_FACTOR = 4  # a chunked body past the limit is read on to this many times it


class BodyReader:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float, departures: Departures,
                 on_refused: Callable[[int], None] | None = None) -> None:
        self.app, self.max_bytes, self.timeout, self.departures = app, max_bytes, timeout, departures
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # h11 lower-cases the names
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (HTTP/1.1: neither header, length 0)
            return
        if declared is not None and not declared.isdigit():
            e = ApiError(400, "the Content-Length header is not a number")
            await self._refuse(e, scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(self._too_large(), scope, receive, send)
            return
        client = "{}:{}".format(*scope["client"]) if scope.get("client") else "unknown"
        where = f"{scope['method']} {scope['path']}"
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        shown = f"{size} of {int(declared)}" if declared is not None else f"{size}"
                        self.departures.left("body", client, f"{where}, {shown} bytes in")
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size <= self.max_bytes:
                        chunks.append(chunk)
                    if not message.get("more_body", False) or size > DRAIN_FACTOR * self.max_bytes:
                        break
        except TimeoutError:
            self.departures.timed_out("body", client, f"{where}, {size} bytes in after {self.timeout:g} s "
                                      "(--body-timeout)")
            e = ApiError(408, f"the request body did not arrive within {self.timeout:g} s",
                         code="request_timeout", headers={"Connection": "close"})
            await self._refuse(e, scope, receive, send)
            return
        if size > self.max_bytes:
            await self._refuse(self._too_large(), scope, receive, send)
            return
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, e: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_refused is not None:
            self.on_refused(e.status)
        await error_response(e)(scope, receive, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than this server's limit of {self.max_bytes} bytes "
                             f"(--max-request-bytes)", code="request_too_large")


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app: the whole body at once, then the server's own (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
