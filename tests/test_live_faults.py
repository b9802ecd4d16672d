"""Faults of the live server: client disconnects, a full KV pool, a dying instance (and its restart),
SIGTERM.

One server for the module (SmolLM2, ascendra 1 LP + 1 HP, a tiny KV pool of 10 blocks x 16 tokens per
instance); the tests run in file order and the last two take an instance and then the server down.
"""

from __future__ import annotations

import os
import signal
import threading

import httpx
import openai
import pytest

from ascendra.server.launch import ServerProcess, metric
from tests.hostile_guard import wait_for

pytestmark = pytest.mark.slow  # end to end: a live server

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--instances", "2", "--hp-instances", "1", "--num-blocks", "10",
                        "--drain-timeout", "20"]) as srv:
        yield srv


def metrics(server) -> str:
    return httpx.get(server.url + "/metrics", timeout=10).text


def test_disconnect_mid_stream_aborts_and_frees_blocks(server):
    body = {"model": MODEL, "prompt": "Write a long story about a dragon.", "max_tokens": 100,
            "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # a few tokens in: the request holds KV blocks
        assert any(x.startswith("data: {") for x in got)
        assert metric(metrics(server), "ascendra_kv_blocks_used") > 0
    # The connection is closed here: the server aborts the request and the worker frees its blocks.
    assert wait_for(lambda: metric(metrics(server), "ascendra_kv_blocks_used") == 0, 20)
    assert wait_for(lambda: metric(metrics(server), "ascendra_requests_in_flight") == 0, 5)
    assert server.health()["requests_in_flight"] == 0


def _complete(server, prompt: str, max_tokens: int, results: list, stream: bool = False,
              flowing: threading.Event | None = None) -> None:
    """`flowing` is set once a streamed token has reached this client."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=120, max_retries=0)
    try:
        if stream:
            text, reason = "", None
            for c in client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens,
                                               temperature=0, stream=True, extra_body={"ignore_eos": True}):
                text += c.choices[0].text
                reason = c.choices[0].finish_reason or reason
                if flowing is not None and c.choices[0].text:
                    flowing.set()
            results.append(("ok", reason, text))
        else:
            r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                          extra_body={"ignore_eos": True})
            results.append(("ok", r.choices[0].finish_reason, r.usage.completion_tokens))
    except openai.APIError as e:
        results.append(("error", type(e).__name__, str(e)))


def test_full_kv_pool_preempts_and_finishes_every_request(server):
    before = metric(metrics(server), "ascendra_preemptions_total")
    results: list = []
    # 8 requests of ~10 + 56 tokens (5 blocks each) against 2 pools of 10 blocks: however the router
    # spreads them, an instance gets 4 or more, which cannot all hold their KV at once, so its
    # scheduler preempts (recomputes) and still finishes every one.
    threads = [threading.Thread(target=_complete, args=(server, f"Count to {k}:", 56, results))
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert len(results) == 8, results
    assert all(r[0] == "ok" and r[1] == "length" and r[2] == 56 for r in results), results
    assert metric(metrics(server), "ascendra_preemptions_total") > before
    assert wait_for(lambda: metric(metrics(server), "ascendra_kv_blocks_used") == 0, 10)


def test_killed_instance_fails_its_started_requests_the_rest_keep_working_and_it_comes_back(server):
    lp = server.health()["instances"][0]
    results: list = []
    flowing = threading.Event()
    threads = [threading.Thread(target=_complete, args=(server, f"Tell me about {w}.", 40, results, True,
                                                        flowing))
               for w in ("cats", "dogs", "birds")]
    for t in threads:
        t.start()
    # Kill the LP instance once tokens are flowing to a client (requests land on the LP first): read
    # from the clients, not from a finished request's histogram, which needs one to have ended.
    assert wait_for(lambda: flowing.is_set() and
                    metric(metrics(server), "ascendra_kv_blocks_used", instance="0") > 0, 120)
    killed_steps = metric(metrics(server), "ascendra_instance_steps", instance="0")
    os.kill(lp["pid"], signal.SIGKILL)
    # Reported at once (the restart waits a 1 s back-off, then the model loads).
    assert wait_for(lambda: server.health()["status"] == "degraded", 5)
    assert [i["alive"] for i in server.health()["instances"]] == [False, True]
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a stream hung after its instance died"
    assert len(results) == 3
    errors = [r for r in results if r[0] == "error"]
    assert errors and all("instance 0 died" in r[2] for r in errors), results
    assert all(r[1] == "length" for r in results if r[0] == "ok"), results
    after: list = []
    _complete(server, "Hello", 5, after)  # served wherever an instance is alive
    assert after == [("ok", "length", 5)]
    assert metric(metrics(server), "ascendra_requests_finished_total", finish_reason="error") >= len(errors)
    # The supervisor starts the dead instance again (after a 1 s back-off), and it serves again.
    assert wait_for(lambda: server.health()["status"] == "ok", 180), server.health()
    health = server.health()
    assert health["instances"][0]["restarts"] == 1 and health["instances"][0]["pid"] != lp["pid"]
    assert "signal 9" in health["instances"][0]["death"]
    log = server.output()  # the server's log says what happened to whom
    assert "instance 0" in log and "died" in log and "restarts in" in log and "failed" in log
    assert metric(metrics(server), "ascendra_instance_restarts_total", instance="0") == 1
    # Its iteration count starts again from the new worker's first report.
    assert wait_for(lambda: metric(metrics(server), "ascendra_instance_steps", instance="0") < killed_steps,
                    30)
    steps = metric(metrics(server), "ascendra_instance_steps", instance="0")
    again: list = []
    threads = [threading.Thread(target=_complete, args=(server, f"Count to {k}.", 6, again)) for k in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert again == [("ok", "length", 6)] * 2
    assert metric(metrics(server), "ascendra_instance_steps", instance="0") > steps  # it took work


def test_sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_cleanly(server):
    pids = [i["pid"] for i in server.health()["instances"]]
    results: list = []
    t = threading.Thread(target=_complete, args=(server, "Describe the sea.", 30, results))
    t.start()
    assert wait_for(lambda: metric(metrics(server), "ascendra_requests_in_flight") > 0, 30)
    server.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: httpx.get(server.url + "/health", timeout=5).status_code == 503, 10)
    r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                   timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
    t.join(60)
    assert results == [("ok", "length", 30)]  # the in-flight request finished during the drain
    assert server.proc.wait(60) == 0
    for pid in pids:  # no orphan instance processes
        assert wait_for(lambda pid=pid: not _alive(pid), 10), f"instance process {pid} outlived the server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited; its parent just has not reaped it
        return f.read().split()[2] != "Z"
