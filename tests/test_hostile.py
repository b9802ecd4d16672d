"""Hostile input against a real `ascendra serve` on loopback (SmolLM2, one LP + one HP instance, an
API key, an admission limit of 64).

Every hostile case checks its status and its OpenAI-style body. Beside every test a guard polls
/health every 0.1 s, and every round trip must take under 1 s (a correctness bound, generous for a
loaded 2-core box: an idle one answers in milliseconds), and runs healthy streams one after another,
each of which must get all its tokens. Nothing else here depends on how fast the machine is.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from ascendra.server.launch import REPO_ROOT, ServerProcess, metric
from tests.fuzz_bodies import bodies
from tests.hostile_cases import CASES, MODEL
from tests.hostile_guard import STREAM_TOKENS, Guard, wait_for

pytestmark = pytest.mark.slow  # end to end: a live server

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "content-type": "application/json"}
LIMIT = 64  # --max-concurrent-requests
HEALTH_BOUND_S = 1.0


@pytest.fixture(scope="module")
def server():
    args = ["--instances", "2", "--hp-instances", "1", "--max-concurrent-requests", str(LIMIT)]
    with ServerProcess(args, api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def guard(server):
    g = Guard(server.url, KEY)
    yield g
    g.stop.set()
    for t in g.threads:
        t.join(130)
    rts = sorted(rt for _, rt in g.health)
    whole = sum(s.tokens == STREAM_TOKENS and s.reason == "length" and not s.error for s in g.streams)
    print(f"\nguard: {len(rts)} /health polls, median {rts[len(rts) // 2] * 1e3:.0f} ms, max "
          f"{rts[-1] * 1e3:.0f} ms; {len(g.streams)} healthy streams beside, {whole} with all "
          f"{STREAM_TOKENS} tokens")


@pytest.fixture(autouse=True)
def beside(guard):
    """After each test: the streams that overlapped it got every token; /health stayed quick."""
    t0 = time.perf_counter()
    yield
    t1 = time.perf_counter()
    guard.pause.clear()
    assert wait_for(lambda: any(s.start > t1 for s in guard.streams), 180), "streams stopped"
    ran = [s for s in guard.streams if s.start <= t1 and s.end >= t0]
    assert ran, "no healthy stream ran beside the test"
    bad = [s for s in ran if s.error or s.tokens != STREAM_TOKENS or s.reason != "length"]
    assert not bad, f"healthy streams hurt: {bad}"
    polls = [rt for t, rt in guard.health if t0 <= t <= t1]
    assert polls and max(polls) < HEALTH_BOUND_S, f"/health took {max(polls):.2f} s"


def post(server, path: str, body: dict | bytes, headers: dict = JSON, timeout: float = 120) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode("ascii")  # \\ud800 escapes
    return httpx.post(server.url + path, content=data, headers=headers, timeout=timeout)


def error_of(r: httpx.Response) -> dict:
    """The OpenAI error object of a response, checked for shape."""
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    assert set(err) == {"message", "type", "param", "code"}
    return err


def metrics(server) -> str:
    return httpx.get(server.url + "/metrics", timeout=10).text


def test_hostile_bodies_get_openai_errors(server):
    wrong = []
    for name, path, body, status, param, fragment in CASES:
        r = post(server, path, body)
        if r.status_code != status:
            wrong.append(f"{name}: {r.status_code} {r.text[:200]}")
            continue
        err = error_of(r)
        if err["param"] != param or fragment not in err["message"]:
            wrong.append(f"{name}: param {err['param']!r}, message {err['message']!r}")
    assert not wrong, "\n".join(wrong)
    assert metric(metrics(server), "ascendra_requests_refused_total", status="400") >= len(CASES) - 1


def test_extreme_but_valid_sampling_stays_with_its_request(server):
    """Values at the edges of the ranges are served, and only their own request sees them."""
    greedy = post(server, "/v1/completions", {"prompt": "The capital of France is", "max_tokens": 6,
                                             "temperature": 0}).json()["choices"][0]["text"]
    edges = [{"temperature": 1e-300}, {"temperature": 1e-5}, {"temperature": 1e300}, {"top_k": 2**31 - 1},
             {"seed": -(2**63)}, {"seed": 2**63 - 1}, {"top_p": 5e-324}, {"top_k": 1, "temperature": 2}]
    with concurrent.futures.ThreadPoolExecutor(len(edges)) as pool:
        rs = list(pool.map(lambda e: post(server, "/v1/completions", {
            "prompt": "The capital of France is", "max_tokens": 6, "ignore_eos": True, **e}), edges))
    for e, r in zip(edges, rs, strict=True):
        assert r.status_code == 200, (e, r.text)
        assert r.json()["usage"]["completion_tokens"] == 6, e
    # A temperature below 1e-5 is greedy (its limit), not inf/NaN logits.
    assert rs[0].json()["choices"][0]["text"] == greedy


def test_slos_below_the_floor_are_refused_and_the_tightest_leave_others_alone(server):
    r = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 3, "ttft_slo_ms": 1e-300})
    assert r.status_code == 400 and "from 1 ms" in error_of(r)["message"]
    # 1.5 ms is below what the performance model says any iteration takes: refused, naming the floor.
    r = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 3, "ttft_slo_ms": 1.5})
    err = error_of(r)
    assert r.status_code == 400 and err["param"] == "ttft_slo_ms" and err["code"] == "slo_below_floor"
    # The tightest SLOs accepted (/v1/models) are served (a miss), and the instance that saw them keeps
    # serving everyone else (a TTFT SLO no iteration meets once wedged the LP instance for good).
    card = httpx.get(server.url + "/v1/models", headers=AUTH, timeout=10).json()["data"][0]
    tightest = card["slo"]["tightest"]
    at_floor = {"ttft_slo_ms": tightest["ttft_ms_by_prompt_tokens"]["128"], "tbt_slo_ms": tightest["tbt_ms"]}
    for _ in range(2):
        r = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 3, **at_floor})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    steps = metric(metrics(server), "ascendra_instance_steps", instance="0")  # the LP instance
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda k: post(server, "/v1/completions", {
            "prompt": f"Story {k}:", "max_tokens": 8, "ignore_eos": True}), range(4)))
    assert [r.status_code for r in rs] == [200] * 4
    assert all(r.json()["usage"]["completion_tokens"] == 8 for r in rs)
    assert metric(metrics(server), "ascendra_instance_steps", instance="0") > steps  # still serving


def test_the_worker_socket_runs_no_code_and_speaks_only_for_our_workers(server, tmp_path):
    """Anyone on this machine who finds the server's worker socket once got `pickle.loads` of
    whatever they sent. Now a frame must carry this launch's signature and decodes to plain data."""
    import pickle

    import msgpack
    import zmq

    endpoint = worker_socket(server.pid)
    assert endpoint.startswith("ipc://") and (Path(endpoint[6:]).parent.stat().st_mode & 0o077) == 0
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(str(marker)))
    ctx = zmq.Context()
    try:
        for ident in (b"instance-0", b"intruder"):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, ident)
            sock.setsockopt(zmq.LINGER, 2000)  # deliver every frame before closing
            sock.connect(endpoint)
            for frame in (payload, b"\0" * 32 + payload, b"\0" * 32 + msgpack.packb([1, 2, 3]),
                          msgpack.packb({"index": 0}), b""):
                sock.send(frame)
            sock.close()
    finally:
        ctx.term()
    r = post(server, "/v1/completions", {"prompt": "Hello", "max_tokens": 4, "ignore_eos": True})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    assert not marker.exists()
    health = server.health()
    assert health["status"] == "ok" and [i["restarts"] for i in health["instances"]] == [0, 0]
    assert wait_for(lambda: metric(metrics(server), "ascendra_worker_frames_rejected") == 10, 10)


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def worker_socket(pid: int) -> str:
    """The IPC endpoint the server process listens on for its workers, found as any local user
    could: its socket inodes, looked up in /proc/net/unix."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[6] in inodes and parts[7].endswith("/workers"):
            return "ipc://" + parts[7]
    raise AssertionError("the server listens on no worker socket")


def test_media_type_size_and_big_prompts(server):
    for headers in ({**AUTH, "content-type": "text/plain"}, {**AUTH, "content-type":
                    "application/x-www-form-urlencoded"}, AUTH):
        r = post(server, "/v1/completions", {"prompt": "hi"}, headers=headers)
        assert r.status_code == 415 and error_of(r)["code"] == "unsupported_media_type", r.text
    r = post(server, "/v1/completions", {"prompt": "x" * 3_000_000})
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    # Under the size limit: 1.9 MB is more bytes than 8192 tokens can hold (none covers more than
    # 81), refused untokenized; 600 kB is not, and takes seconds to tokenize (600k digit tokens), on
    # a thread that releases the GIL, so /health (the guard) does not wait. Three at once.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        rs = list(pool.map(lambda n: post(server, "/v1/completions", {"prompt": "7 " * n}),
                           (950_000, 300_000, 300_000)))
    for r in rs:
        assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded", r.text
    assert "at least 23457" in error_of(rs[0])["message"]
    assert "600000 prompt" in error_of(rs[1])["message"]  # tokenized: the exact count


def test_api_key(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}x"},
                    {"Authorization": KEY}, {"Authorization": f"bearer {KEY}"}):
        for method, path in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                             ("GET", "/v1/models")):
            r = httpx.request(method, server.url + path, headers=headers, json={"prompt": "hi"}, timeout=10)
            assert r.status_code == 401, (headers, path)
            assert error_of(r)["code"] == "invalid_api_key" and KEY not in r.text
    # Open by default, as vllm serve's, for probes and Prometheus.
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert metric(metrics(server), "ascendra_requests_refused_total", status="401") >= 15
    ok = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert [m.id for m in ok.models.list().data] == [MODEL]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_fuzz_no_5xx(server):
    """320 seeded mutations of valid bodies: every answer is a 2xx or an OpenAI-style 4xx."""
    outcomes: collections.Counter[int] = collections.Counter()
    bad = []
    with httpx.Client(timeout=120, headers=JSON) as client:
        for i, (path, raw, what) in enumerate(bodies(320, seed=13)):
            r = client.post(server.url + path, content=raw)
            outcomes[r.status_code] += 1
            if r.status_code >= 500 or (r.status_code >= 400 and "error" not in r.json()):
                bad.append(f"#{i} {what}: {r.status_code} {r.text[:200]}")
            elif r.status_code == 200 and not (r.text.startswith("data:") or "choices" in r.json()):
                bad.append(f"#{i} {what}: 200 without choices")
    print(f"\nfuzz: 320 bodies, outcomes by status: {dict(sorted(outcomes.items()))}")
    assert not bad, "\n".join(bad[:20])
    assert outcomes[200] >= 10 and sum(n for s, n in outcomes.items() if 400 <= s < 500) >= 150


def _send(port: int, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head + data)
    return s


def test_clients_that_leave_free_their_requests_and_kv(server, guard):
    before = metrics(server)
    long = {"prompt": "Tell me a long story.", "max_tokens": 300, "ignore_eos": True}
    socks = [_send(server.port, {**long, "seed": k, "temperature": 0.7}) for k in range(50)]
    # All 50 accepted, and tokens flowing (this is when the old poll never looked).
    assert wait_for(lambda: server.health()["requests_in_flight"] >= 50, 60)
    assert wait_for(lambda: metric(metrics(server), "ascendra_tbt_seconds_count")
                    > metric(before, "ascendra_tbt_seconds_count") + 20, 60)
    for s in socks:
        s.close()
    # Streaming clients that leave before their first chunk.
    for k in range(10):
        _send(server.port, {**long, "stream": True, "seed": k}).close()
    with server_idle(server, guard) as m:
        name = "ascendra_requests_cancelled_total"
        cancelled = metric(m, name) - metric(before, name)
        # Each of the 50 was aborted (none ran to its 300 tokens); so were those of the 10 streams
        # that reached an instance before their client was seen to be gone.
        assert 50 <= cancelled <= 60


@contextmanager
def server_idle(server, guard: Guard):
    """With the healthy stream paused: nothing in flight or admitted, no KV block held; yields /metrics."""
    with guard.paused():
        idle = lambda: (server.health()["requests_in_flight"] == 0  # noqa: E731
                        and server.health()["requests_admitted"] == 0
                        and metric(metrics(server), "ascendra_kv_blocks_used") == 0)
        assert wait_for(idle, 60), (server.health(), metric(metrics(server), "ascendra_kv_blocks_used"))
        yield metrics(server)


def test_admission_limit_answers_429_with_retry_after(server, guard):
    with guard.paused():
        k = LIMIT + 12
        socks = [_send(server.port, {"prompt": f"Story {i}:", "max_tokens": 300, "ignore_eos": True})
                 for i in range(k)]
        answers: dict[int, bytes] = {}

        def settled() -> bool:
            for i, s in enumerate(socks):
                if i not in answers:
                    s.settimeout(0.01)
                    try:
                        answers[i] = s.recv(65536)
                    except TimeoutError:
                        pass
            return len(answers) + server.health()["requests_admitted"] >= k

        assert wait_for(settled, 60)
        assert server.health()["requests_admitted"] == LIMIT and len(answers) == k - LIMIT
        for data in answers.values():
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 429") and b"retry-after: 1" in head.lower(), head
            assert json.loads(body)["error"]["code"] == "too_many_requests"
        for s in socks:
            s.close()
    with server_idle(server, guard):
        pass


def test_key_on_all_routes_and_port_in_use():
    """A second server (dummy weights, quick to start): --api-key-all-routes guards /health and
    /metrics too; a second `serve` on its port fails at once, before loading any model."""
    with ServerProcess(["--model", "dummy:tiny", "--instances", "1", "--hp-instances", "0",
                        "--api-key-all-routes"], api_key="k2") as srv:
        for path in ("/health", "/metrics"):
            assert httpx.get(srv.url + path, timeout=10).status_code == 401
            r = httpx.get(srv.url + path, timeout=10, headers={"Authorization": "Bearer k2"})
            assert r.status_code == 200
        out = subprocess.run([sys.executable, "-m", "ascendra.cli.serve", "--port", str(srv.port)],
                             capture_output=True, text=True, timeout=120, cwd=str(REPO_ROOT))
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{srv.port}: address already in use" in out.stderr
    assert "KV blocks" not in out.stderr  # the banner comes after the model's files are read
