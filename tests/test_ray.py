"""`ascendra serve --ray-address local`: the instances run as Ray actors (one CPU each) that connect
back to the server over zmq/tcp; the router and the HTTP API are the same as with processes.
Kept lean for CI: the tiny dummy model (prompts as token ids), two actors, a local Ray of 2 CPUs."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from ascendra.server.launch import ServerProcess, metric

pytestmark = pytest.mark.slow  # end to end: Ray actors

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--model", "dummy:tiny", "--ray-address", "local", "--system", "sarathi",
                        "--instances", "2", "--num-blocks", "64"], startup_timeout=240) as srv:
        yield srv


def test_serves_through_two_ray_actors(server):
    health = server.health()
    assert health["status"] == "ok"
    assert len(health["instances"]) == 2 and all(i["alive"] and i["pid"] for i in health["instances"])
    assert len({i["pid"] for i in health["instances"]}) == 2  # two actor processes
    # Enough concurrent requests that the load-balancing router uses both actors.
    with httpx.Client(base_url=server.url, timeout=120) as c:
        bodies = [{"model": "dummy:tiny", "prompt": list(range(3, 3 + 40 + k)), "max_tokens": 6,
                   "temperature": 0, "ignore_eos": True} for k in range(4)]
        with cf.ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda b: c.post("/v1/completions", json=b), bodies))
    for k, r in enumerate(rs):
        assert r.status_code == 200, r.text
        assert r.json()["usage"] == {"prompt_tokens": 40 + k, "completion_tokens": 6, "total_tokens": 46 + k}
        assert r.json()["choices"][0]["finish_reason"] == "length"
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for i in ("0", "1"):  # both actors ran iterations
        assert metric(text, "ascendra_instance_steps", instance=i) > 0


def test_sigterm_stops_the_actors_and_exits_cleanly(server):
    # Ray's core worker replaces the SIGTERM handler with one that aborts; the server restores its own.
    assert server.stop() == 0
