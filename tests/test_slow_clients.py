"""Slow and departing clients against a real `ascendra serve` on loopback, by raw sockets (dummy
weights, one instance: quick to start; an admission limit of 2; short deadlines). Nothing is timed:
a socket's timeout only turns a hang into a failure."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from ascendra.server.launch import ServerProcess, metric
from tests.hostile_guard import wait_for

pytestmark = pytest.mark.slow  # end to end: a live server

LIMIT = 2
BODY_TIMEOUT = 8.0  # long beside a dummy model's answer (milliseconds), short for a test to wait out
HEADER_TIMEOUT = 2.0
BODY = json.dumps({"prompt": [1, 2, 3], "max_tokens": 4}).encode()


@pytest.fixture(scope="module")
def server():
    args = ["--model", "dummy:tiny", "--instances", "1", "--hp-instances", "0", "--log-level", "info",
            "--max-concurrent-requests", str(LIMIT), "--body-timeout", str(BODY_TIMEOUT),
            "--header-timeout", str(HEADER_TIMEOUT)]
    with ServerProcess(args) as srv:
        yield srv


def head(length: int | str, path: str = "/v1/completions") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def connect(server, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(data)
    return s


def answer(s: socket.socket, guard: float = 60.0) -> bytes:
    """The next response on `s`, head and body (by its Content-Length; b"" once closed)."""
    s.settimeout(guard)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in top.lower().split(b"\r\n")
                   if line.startswith(b"content-length:")), None)
    while length is not None and len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return top + b"\r\n\r\n" + body


def unanswered(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(65536) is None
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)


def counted(server, name: str, **labels: str) -> float:
    return metric(httpx.get(server.url + "/metrics", timeout=10).text, name, **labels)


def log_of(server) -> str:
    server.log.flush()
    return Path(server.log.name).read_text()


def test_slow_bodies_hold_no_slot_and_are_dropped_at_their_deadline(server):
    before = counted(server, "ascendra_clients_timed_out_total", stage="body")
    slow = [connect(server, head(len(BODY)) + BODY[:5]) for _ in range(3 * LIMIT)]
    # Three times the admission limit trickling, and no slot taken: a normal client is served.
    assert server.health()["requests_admitted"] == 0
    r = httpx.post(server.url + "/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 4}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    assert all(unanswered(s) for s in slow)  # still trickling while the normal one was served
    for s in slow:  # each one dropped at the deadline, with a 408 it can still read
        data = answer(s)
        assert data.startswith(b"HTTP/1.1 408") and b"connection: close" in data.lower(), data[:200]
        assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        assert answer(s) == b""  # and closed
        s.close()
    assert counted(server, "ascendra_clients_timed_out_total", stage="body") == before + len(slow)


def test_a_head_sent_too_slowly_gets_408(server):
    before = counted(server, "ascendra_clients_timed_out_total", stage="headers")
    s = connect(server, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
    data = answer(s)
    assert data.startswith(b"HTTP/1.1 408") and b"request_timeout" in data
    assert answer(s) == b""
    idle = connect(server, b"")  # a connection that never sends anything is closed, quietly
    assert answer(idle) == b""
    assert counted(server, "ascendra_clients_timed_out_total", stage="headers") == before + 1


def test_an_oversized_content_length_gets_413_with_no_body_sent(server):
    s = connect(server, head(999_999_999))  # and nothing more: the answer comes all the same
    data = answer(s)
    assert data.startswith(b"HTTP/1.1 413") and b"request_too_large" in data
    s.close()


def test_clients_that_leave_at_any_stage_leave_one_line_and_a_count_and_no_traceback(server):
    stages = ("headers", "body", "waiting", "streaming")
    before = {st: counted(server, "ascendra_clients_left_total", stage=st) for st in stages}
    connect(server, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n").close()
    connect(server, head(len(BODY)) + BODY[:7]).close()
    for stream in (False, True):
        ask = {"prompt": [1, 2, 3], "max_tokens": 2000, "ignore_eos": True, "stream": stream}
        body = json.dumps(ask).encode()
        s = connect(server, head(len(body)) + body)
        if stream:
            assert answer(s).startswith(b"HTTP/1.1 200")  # the stream is open
        else:
            assert wait_for(lambda: server.health()["requests_in_flight"] == 1, 30)
        s.close()
    assert wait_for(lambda: all(counted(server, "ascendra_clients_left_total", stage=st) == before[st] + 1
                                for st in stages), 30)
    log = log_of(server)
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    for st in stages:
        assert log.count(f"(stage {st})") == 1, st
    assert wait_for(lambda: server.health()["requests_in_flight"] == 0, 30)


def test_slos_below_the_floor_get_a_400_naming_the_field_and_the_floor(server):
    card = httpx.get(server.url + "/v1/models", timeout=10).json()["data"][0]["slo"]
    tightest = card["tightest"]["tbt_ms"]
    assert 0 < tightest < card["default"]["tbt_ms"]
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   json={"prompt": [1, 2, 3], "max_tokens": 2, "tbt_slo_ms": 1})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "tbt_slo_ms" and f"{tightest:.1f} ms" in err["message"]
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   json={"prompt": [1, 2, 3], "max_tokens": 2, "tbt_slo_ms": tightest})
    assert r.status_code == 200  # the floor itself is accepted


def test_a_refused_client_can_still_read_its_answer_while_it_sends(server):
    """413 on Content-Length leaves the body unread: h11 discards it, so a client that sends it
    anyway (as httpx does) reads the 413 rather than meeting a reset."""
    r = httpx.post(server.url + "/v1/completions", content=b"x" * 3_000_000, timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
