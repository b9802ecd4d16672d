"""The live server's own overhead, measured inside a real `ascendra serve` (run in this process).

  send:     HTTP request arrival (the handler's first line) -> the request handed to zmq for its worker
            (read body, parse, tokenize, route): the server's own work on the way in
  dispatch: HTTP request arrival -> the instance worker receiving the request (send + zmq transit +
            the wait for the worker's running iteration to end: it drains messages between iterations)
  stream:   a token's production in the worker (end of its iteration) -> its SSE chunk handed to the
            HTTP layer (scheduler update, detokenize, snapshot, pickle, zmq, route to the stream, JSON)

Both ends read time.time on the same machine. The load client runs in a child process so that it does
not compete with the server for this process's GIL. Run:
    PYTHONPATH=. python3 benchmarks/server_overhead.py [--requests 20] [--concurrency 4] [-- serve args]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

from ascendra.cli.serve import add_arguments, build_server_config
from ascendra.server.app import create_app
from ascendra.server.launch import free_port


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def stream_one(url: str, max_tokens: int, k: int) -> int:
    body = {"prompt": f"Question {k}: tell me about the ocean.", "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True}
    n = 0
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            n += line.startswith("data: {")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight in the loaded phase")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)  # internal: run the load only
    ap.add_argument("serve_args", nargs="*", help="arguments for ascendra serve (after --)")
    a = ap.parse_args()
    if a.client:
        with ThreadPoolExecutor(a.concurrency) as pool:
            list(pool.map(lambda k: stream_one(a.client, a.max_tokens, k), range(a.requests)))
        return 0
    sp = argparse.ArgumentParser()
    add_arguments(sp)
    serve = sp.parse_args(["--port", str(free_port()), "--log-level", "warning", *a.serve_args])
    app = create_app(build_server_config(serve))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=serve.port, loop="asyncio",
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{serve.port}"
    while not server.started:
        time.sleep(0.1)
    state = app.state.server
    for k in range(2):  # warm-up
        stream_one(url, 4, k)
    rows = []
    for phase, conc in (("one at a time", 1), (f"{a.concurrency} concurrent", a.concurrency)):
        state.cluster.dispatch_latency.clear()
        state.cluster.send_latency.clear()
        state.metrics.stream_latency.clear()
        subprocess.run([sys.executable, __file__, "--client", url, "--requests", str(a.requests),
                        "--concurrency", str(conc), "--max-tokens", str(a.max_tokens)], check=True)
        for stage, xs in (("send", list(state.cluster.send_latency)),
                          ("dispatch", list(state.cluster.dispatch_latency)),
                          ("stream", list(state.metrics.stream_latency))):
            rows.append((phase, stage, len(xs), statistics.median(xs) * 1e3, pct(xs, 99) * 1e3))
    server.should_exit = True
    thread.join(60)
    print(f"server overhead, {serve.system} x{serve.instances} instances, model {serve.model}, "
          f"{a.requests} requests x {a.max_tokens} tokens per phase")
    print(f"{'phase':<16}{'stage':<10}{'n':>6}{'median ms':>12}{'p99 ms':>10}")
    for phase, stage, n, med, p99 in rows:
        print(f"{phase:<16}{stage:<10}{n:>6}{med:>12.2f}{p99:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
