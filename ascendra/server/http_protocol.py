"""uvicorn's h11 protocol with the two deadlines that ASGI cannot see.

A request's head (request line and headers) is parsed below ASGI: the app only hears of a request
once its head is complete, so a client that sends its headers a byte a second is invisible to it,
and uvicorn sets no deadline of its own on a head (`timeout_keep_alive` runs only between requests,
and the first byte of the next one cancels it). Here:

  - the head: from when the connection starts waiting for a request (it opens, or the previous
    response ends) the whole head must arrive within `header_timeout` seconds. A client that sent
    part of one gets 408 and the connection closes; one that sent nothing is closed quietly (as an
    idle keep-alive connection is);
  - a body nobody reads: a response sent before the body has arrived (401, 413, 404, ...) leaves
    h11 discarding the rest of it, and every byte that comes cancels uvicorn's keep-alive timer, so a
    client could go on trickling forever. The connection closes once `body_timeout` has passed since
    the head, as the app's own wait for a body would (body_reader.py).

The h11 protocol is chosen explicitly, so that uvicorn does not swap in httptools when it happens to
be installed, and h11's own limit on a head's size (`h11_max_incomplete_event_size`, 16 KiB: past it
a 400) holds as well.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ascendra.server.departures import Departures


class DeadlineH11Protocol(H11Protocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, header_timeout: float,
                 body_timeout: float, departures: Departures) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout, self.body_timeout, self.departures = header_timeout, body_timeout, departures
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # between requests: what comes next is a head
        self._head_at = 0.0  # when the current request's head was complete
        self._dropped = False  # closed by a deadline here: its connection_lost is no client leaving

    # ---- uvicorn's hooks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        # A request read to its end is followed by the next head (which uvicorn may parse at once,
        # from a pipelined buffer, inside this call); one whose body is still coming is not.
        self._awaiting_head = self.conn.their_state is h11.DONE
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        partial_head = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        self._cancel_timers()
        if partial_head and not self._dropped:
            self.departures.left("headers", self._client(), f"after {len(self.conn.trailing_data[0])} bytes "
                                 "of its request head")
        super().connection_lost(exc)

    # ---- the deadlines -------------------------------------------------------------------------

    def _watch(self) -> None:
        """Arm or cancel the timers for the state the connection is in now."""
        if self.transport is None or self.transport.is_closing():
            self._cancel_timers()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._awaiting_head = True
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout, self._head_overdue)
        else:
            if self._awaiting_head:  # the head has just come in
                self._awaiting_head = False
                self._head_at = self.loop.time()
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        unread = state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete
        if unread and self._body_timer is None:
            left = self._head_at + self.body_timeout - self.loop.time()
            self._body_timer = self.loop.call_later(max(0.0, left), self._body_overdue)
        elif not unread and self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        got = len(self.conn.trailing_data[0])
        self._dropped = True
        if got:
            self.departures.timed_out("headers", self._client(), f"its request head was incomplete after "
                                      f"{self.header_timeout:g} s ({got} bytes; --header-timeout)")
            self._send_408(f"the request head did not arrive within {self.header_timeout:g} s")
        self.transport.close()

    def _body_overdue(self) -> None:
        """A body whose request was answered early, still arriving at the deadline."""
        self._body_timer = None
        if not self.transport.is_closing():
            self._dropped = True
            self.departures.timed_out("body", self._client(), "its unread body was still arriving "
                                      f"{self.body_timeout:g} s after its head (--body-timeout)")
            self.transport.close()

    def _send_408(self, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "request_timeout"}}).encode()
        try:
            self.transport.write(self.conn.send(h11.Response(
                status_code=408, reason=b"Request Timeout",
                headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")])))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # h11 cannot answer in this state: the close says it all
            pass

    def _client(self) -> str:
        return "{}:{}".format(*self.client) if self.client else "unknown"
