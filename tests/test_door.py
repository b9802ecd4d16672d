"""The body reader in-process, without a server: size, deadline and hang-up, driven as ASGI with
scripted `receive`s. Small deadlines, no timing asserted: a `receive` that never returns stands for
the slow client."""

from __future__ import annotations

import asyncio
import json
import logging

from prometheus_client import CollectorRegistry, Counter

from ascendra.server.body_reader import BodyReader
from ascendra.server.departures import Departures


def departures() -> Departures:
    r = CollectorRegistry()
    return Departures(Counter("left", "", ["stage"], registry=r),
                      Counter("timed_out", "", ["stage"], registry=r))


def count(c: Counter, stage: str) -> float:
    return c.labels(stage)._value.get()


class Route:
    """The app behind the reader: records what it was given."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.after: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.calls.append(body)
        self.after.append(await receive())  # what comes once the body is in
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope(headers: dict[str, str]) -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/completions", "client": ("127.0.0.1", 5000),
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}


def drive(reader: BodyReader, headers: dict[str, str], messages: list[dict], then_hang: bool = False):
    """Run the reader over `messages`; after them `receive` never returns (then_hang) or reports
    the disconnect. Returns what was sent and how many messages were received."""
    sent, received = [], [0]

    async def receive() -> dict:
        if received[0] < len(messages):
            received[0] += 1
            return messages[received[0] - 1]
        if then_hang:
            await asyncio.Event().wait()  # the client that never sends the rest
        return {"type": "http.disconnect"}

    async def send(m: dict) -> None:
        sent.append(m)

    # The guard is no timing: it turns a reader without a deadline from a hang into a failure.
    asyncio.run(asyncio.wait_for(reader(scope(headers), receive, send), 30))
    return sent, received[0]


def status(sent: list[dict]) -> int | None:
    return sent[0]["status"] if sent else None


def body_of(sent: list[dict]) -> dict:
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_slow_body_is_dropped_at_its_deadline_and_no_route_runs():
    route, d = Route(), departures()
    reader = BodyReader(route, max_bytes=1000, timeout=0.05, departures=d)
    first = {"type": "http.request", "body": b"{", "more_body": True}
    sent, _ = drive(reader, {"content-length": "100"}, [first], then_hang=True)
    assert status(sent) == 408 and body_of(sent)["error"]["code"] == "request_timeout"
    assert (b"connection", b"close") in sent[0]["headers"]
    assert route.calls == []  # nothing behind the door ran: no admission slot, no parse, no worker
    assert count(d.timed_out_count, "body") == 1


def test_an_oversized_content_length_gets_413_before_any_of_the_body_is_read():
    route, d = Route(), departures()
    sent, received = drive(BodyReader(route, 1000, 5.0, d), {"content-length": "999999999"}, [])
    assert status(sent) == 413 and body_of(sent)["error"]["code"] == "request_too_large"
    assert received == 0 and route.calls == []


def test_a_chunked_body_past_the_limit_gets_413():
    route = Route()
    big = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3
    sent, _ = drive(BodyReader(route, 1000, 5.0, departures()), {"transfer-encoding": "chunked"},
                    [*big, {"type": "http.request", "body": b"", "more_body": False}])
    assert status(sent) == 413 and route.calls == []


def test_a_hang_up_mid_body_is_one_info_line_and_a_count(caplog):
    route, d = Route(), departures()
    with caplog.at_level(logging.INFO, logger="ascendra.server"):
        sent, _ = drive(BodyReader(route, 1000, 5.0, d), {"content-length": "100"},
                        [{"type": "http.request", "body": b'{"pro', "more_body": True}])
    assert sent == [] and route.calls == []  # no answer to a client that is gone, no exception
    assert count(d.left_count, "body") == 1
    lines = [r for r in caplog.records if r.name == "ascendra.server"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and not lines[0].exc_info
    assert "5 of 100 bytes" in lines[0].getMessage()


def test_the_route_gets_the_whole_body_at_once_then_the_disconnect():
    route = Route()
    parts = [{"type": "http.request", "body": b'{"a":', "more_body": True},
             {"type": "http.request", "body": b" 1}", "more_body": False}]
    sent, _ = drive(BodyReader(route, 1000, 5.0, departures()), {"content-length": "8"}, parts)
    assert status(sent) == 200 and route.calls == [b'{"a": 1}']
    assert route.after == [{"type": "http.disconnect"}]  # the server's own receive, after the body


def test_a_request_without_a_body_passes_untouched():
    route = Route()
    sent, received = drive(BodyReader(route, 1000, 5.0, departures()), {}, [])
    assert status(sent) == 200 and received == 0
