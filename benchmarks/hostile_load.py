"""Issue 21's table, reproduced against a real `ascendra serve --max-concurrent-requests 32` on
loopback (SmolLM2, one LP and one HP instance, each its own process):

  trickle   40 connections send their headers, then their JSON body one byte a second; meanwhile
            20 normal requests, one every 0.5 s (30 s timeout each): the share served;
  hang-up   15 s in, those 40 close mid-body: tracebacks in the server's log, the clients counted gone;
  oversize  a POST announcing `Content-Length: 999999999` that sends nothing: what comes back, when;
  tight     4 clients in closed loops (short prompts, 64 output tokens) with the tightest TBT SLO the
            server accepts (its /v1/models floor where it reports one, else 1 ms), against 4 such
            clients with the default SLOs: the TTFT of a 1,500-token prompt sent beside them (the
            median of `--victims` tries each, the two conditions alternating), and the ratio; also
            in the performance model's seconds (the predicted time of the iterations run while the
            victim waited), which other processes on the machine do not stretch. On a second
            server of one LP instance (`--victim-serve-args`): with an HP instance beside it the
            router often places the victim apart from the 4 clients, and the figure would measure
            where it went, not what their SLOs do to the instance they share.

Run (the server's log level is `warning`, so a traceback shows and an INFO line does not):
    PYTHONPATH=. python benchmarks/hostile_load.py [--victims 5] [-- extra serve args]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ascendra.server.launch import ServerProcess, metric

TRICKLERS = 40
LIMIT = 32
VICTIM_TOKENS = 1500


def head(port: int, length: int, path: str = "/v1/completions") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def trickle(port: int, stop: threading.Event, sent: list[int], k: int) -> socket.socket:
    """A connection that sends its head, then its body one byte a second until `stop` (the body
    is long enough never to end first)."""
    body = json.dumps({"prompt": "Hello " * 40, "max_tokens": 4}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head(port, len(body)))

    def run() -> None:
        for b in body:
            if stop.wait(1.0):
                return
            try:
                s.sendall(bytes([b]))
                sent[k] += 1
            except OSError:  # the server dropped it (a deadline): it stops here
                return

    threading.Thread(target=run, daemon=True).start()
    return s


def normal(url: str, k: int) -> int:
    try:
        r = httpx.post(url + "/v1/completions", json={"prompt": f"Question {k}: name a colour.",
                                                      "max_tokens": 8}, timeout=30)
        return r.status_code
    except httpx.HTTPError:
        return 0


def log_text(srv: ServerProcess) -> str:
    """The server's whole log so far (`ServerProcess.output` keeps only its tail)."""
    srv.log.flush()
    return Path(srv.log.name).read_text()


def trickle_and_hang_up(srv: ServerProcess, normals: int) -> dict:
    """40 tricklers; `normals` normal requests sent one every 0.5 s meanwhile (each in its own
    thread, 30 s timeout); 15 s in, well before any body deadline of 30 s, the tricklers hang up."""
    stop = threading.Event()
    sent = [0] * TRICKLERS
    t0 = time.perf_counter()
    socks = [trickle(srv.port, stop, sent, k) for k in range(TRICKLERS)]
    time.sleep(3.0)  # every trickler has its head in and a few body bytes
    statuses: list[int] = []
    threads = []
    for k in range(normals):
        t = threading.Thread(target=lambda k=k: statuses.append(normal(srv.url, k)), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.5)
    time.sleep(max(0.0, 15.0 - (time.perf_counter() - t0)))
    trickled = min(sent)
    before = log_text(srv).count("Traceback")
    stop.set()
    for s in socks:  # hang up mid-body (none has sent its whole body)
        s.close()
    for t in threads:
        t.join(60)
    time.sleep(3.0)
    text = httpx.get(srv.url + "/metrics", timeout=10).text
    return {"normal_sent": normals, "normal_served": sum(s == 200 for s in statuses),
            "statuses": sorted(statuses), "trickle_bytes_min": trickled,
            "tracebacks_after_hang_up": log_text(srv).count("Traceback") - before,
            "clients_left_body": metric(text, "ascendra_clients_left_total", stage="body"),
            "clients_timed_out_body": metric(text, "ascendra_clients_timed_out_total", stage="body")}


def oversize(srv: ServerProcess) -> dict:
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(head(srv.port, 999_999_999))
    s.settimeout(10.0)
    t0 = time.perf_counter()
    try:
        data = s.recv(65536)
        answer = data.split(b"\r\n", 1)[0].decode() or "connection closed"
    except TimeoutError:
        answer = "nothing within 10 s"
    took = time.perf_counter() - t0
    s.close()
    return {"answer": answer, "seconds": round(took, 3)}


@dataclass
class Clients:
    """4 clients in closed loops; each request carries the TBT SLO in `tbt_ms` when it is sent
    (None: the server's default). `fresh[k]` counts client k's requests sent since the last switch."""

    url: str
    tbt_ms: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    fresh: list[int] = field(default_factory=lambda: [0] * 4)
    codes: list[int] = field(default_factory=list)

    def run(self, k: int) -> None:
        with httpx.Client(timeout=120) as c:
            j = 0
            while not self.stop.is_set():
                body = {"prompt": f"Client {k} story {j}: once upon a time", "max_tokens": 64,
                        "ignore_eos": True}
                if self.tbt_ms is not None:
                    body["tbt_slo_ms"] = self.tbt_ms
                self.fresh[k] += 1
                try:
                    self.codes.append(c.post(self.url + "/v1/completions", json=body).status_code)
                except httpx.HTTPError:
                    self.codes.append(0)
                j += 1

    def switch(self, tbt_ms: float | None) -> None:
        """From now on every client asks for `tbt_ms`; returns once each has sent a request since
        and had it answered, so that every decode running carries it."""
        self.tbt_ms = tbt_ms
        self.fresh = [0] * 4
        while min(self.fresh) < 2:
            time.sleep(0.1)


def victim_ttft(url: str, rng: random.Random) -> tuple[float, float]:
    """Seconds from sending a 1,500-token prompt (random token ids) to its first streamed token,
    and the same span in the performance model's seconds (the predicted time of the iterations the
    instance ran meanwhile: what the load of other processes on the machine does not change)."""
    ids = [rng.randrange(100, 40000) for _ in range(VICTIM_TOKENS)]
    predicted = metric(httpx.get(url + "/metrics", timeout=10).text,
                       "ascendra_instance_predicted_busy_seconds")
    t0 = time.perf_counter()
    with httpx.stream("POST", url + "/v1/completions", timeout=300, json={
            "prompt": ids, "max_tokens": 2, "ignore_eos": True, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                ttft = time.perf_counter() - t0
                after = metric(httpx.get(url + "/metrics", timeout=10).text,
                               "ascendra_instance_predicted_busy_seconds")
                return ttft, after - predicted
    raise RuntimeError("the victim's stream ended without a token")


def tight_vs_default(srv: ServerProcess, victims: int) -> dict:
    """The two conditions alternate victim by victim, so that the machine's other load, which comes
    and goes on a shared box, falls on both alike."""
    card = httpx.get(srv.url + "/v1/models", timeout=10).json()["data"][0]
    tight = card.get("slo", {}).get("tightest", {}).get("tbt_ms", 1.0)
    rng = random.Random(0)
    clients = Clients(srv.url)
    threads = [threading.Thread(target=clients.run, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    runs: dict[str, list[tuple[float, float]]] = {"default": [], "tight": []}
    for _ in range(victims):
        for name, tbt in (("default", None), ("tight", tight)):
            clients.switch(tbt)
            runs[name].append(victim_ttft(srv.url, rng))
    clients.stop.set()
    for t in threads:
        t.join(120)
    out: dict = {"tight_tbt_ms": tight, "client_statuses": sorted(set(clients.codes))}
    for name, xs in runs.items():
        out[name] = {"victim_ttft_s": [round(x, 3) for x, _ in xs], "median": round(statistics.median(
            x for x, _ in xs), 3), "model_s": [round(m, 3) for _, m in xs],
            "model_median": round(statistics.median(m for _, m in xs), 3)}
    out["ratio"] = round(out["tight"]["median"] / out["default"]["median"], 2)
    out["pair_ratios"] = [round(t[0] / d[0], 2) for d, t in zip(runs["default"], runs["tight"], strict=True)]
    out["model_ratio"] = round(out["tight"]["model_median"] / out["default"]["model_median"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--normals", type=int, default=20, help="normal requests while the 40 trickle")
    ap.add_argument("--victims", type=int, default=5, help="victim prompts per condition")
    ap.add_argument("--victim-serve-args", default="--instances 1 --hp-instances 0",
                    help="extra arguments for the victim's server (default: %(default)s)")
    ap.add_argument("serve_args", nargs="*", help="extra arguments for ascendra serve (after --)")
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    args = ["--max-concurrent-requests", str(LIMIT), *a.serve_args]
    result: dict = {"serve_args": args}
    with ServerProcess(args) as srv:
        result["trickle"] = trickle_and_hang_up(srv, a.normals)
        print(json.dumps(result["trickle"]), flush=True)
        result["oversize"] = oversize(srv)
        print(json.dumps(result["oversize"]), flush=True)
    result["victim_serve_args"] = victim_args = [*args, *a.victim_serve_args.split()]
    with ServerProcess(victim_args) as srv:
        result["tight"] = tight_vs_default(srv, a.victims)
        print(json.dumps(result["tight"]), flush=True)
    result["load_average_after"] = os.getloadavg()
    t, v = result["trickle"], result["tight"]
    print(f"\nnormal requests served while {TRICKLERS} trickle: {t['normal_served']}/{t['normal_sent']}; "
          f"tracebacks after they hang up: {t['tracebacks_after_hang_up']}; Content-Length 999999999: "
          f"{result['oversize']['answer']} after {result['oversize']['seconds']} s; victim TTFT "
          f"{v['default']['median']} s (default clients) vs {v['tight']['median']} s (tbt "
          f"{v['tight_tbt_ms']} ms): {v['ratio']}x (in the model's seconds {v['model_ratio']}x); load "
          f"average after: {result['load_average_after']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
