"""What moving a request's KV costs on the live path (issue 18), per KV block, on this machine.

For each context length, a request of SmolLM2 (the served default) is prefilled on one instance,
then moved to another as the live cluster moves it: the source's executor copies its KV out
(`export_kv`), the worker wraps it in a `Moved` report, the signed codec encodes it, zmq carries it
over an IPC socket twice (worker -> server -> worker, as the server relays it), the target decodes
it and copies the KV into its own blocks (`import_kv`). Median of --repeats per length; a line
fitted over the lengths gives the fixed cost per move and the cost per block, which is what the
router's `cpu-loopback` link (core/kv_transfer.py) assumes.

    python benchmarks/kv_migration.py --dtype float32 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import zmq

from ascendra.core.config import SchedulerConfig
from ascendra.core.request import SLO, Request
from ascendra.engine.factory import InstanceSpec, build_instance
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.wire import new_secret


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--lengths", default="64,256,1024,2048")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    spec = InstanceSpec(dtype=a.dtype, num_blocks=512, policy="ascendra-lp",
                        scheduler=SchedulerConfig(max_num_batched_tokens=4096, max_idle_budget=4096))
    src, dst = build_instance(spec), build_instance(spec)
    codec = m.codec(new_secret())
    ctx = zmq.Context()
    path = os.path.join(tempfile.mkdtemp(), "kv.ipc")
    tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    rx.bind(f"ipc://{path}")
    tx.connect(f"ipc://{path}")
    rows = []
    for n in [int(x) for x in a.lengths.split(",")]:
        parts: dict[str, list[float]] = {"export": [], "wire": [], "import": [], "total": []}
        size = 0
        for k in range(a.repeats + 1):  # the first run warms up
            rid = f"r{n}-{k}"
            prompt = [1000 + i % 5000 for i in range(n)]
            req = Request(rid, 0.0, n, 4, SLO(60.0, 60.0), prompt_token_ids=prompt)
            src.add_request(req)
            while req.num_output_tokens < 1:
                src.step(time.time)
            add = m.AddRequest(1, rid, 0.0, req.prompt_token_ids, 4, 60.0, 60.0, frozenset(), None)
            t0 = time.perf_counter()
            moved = src.migrate_out(rid)
            t1 = time.perf_counter()
            msg = m.Moved(rid, list(req.output_token_ids), req.num_computed_tokens, req.is_decode,
                          req.num_preemptions, moved.text_sent, moved.kv)
            frame = codec.encode(m.Report(0, 0, m.Snapshot(), migrated=[msg]))
            for _ in range(2):  # worker -> server, server -> worker
                tx.send(frame, copy=False)
                frame = rx.recv()
            got = codec.decode(frame).migrated[0]
            t2 = time.perf_counter()
            assert dst.migrate_in(got.to_migrated(add)), "the KV was refused"
            t3 = time.perf_counter()
            dst.abort_request(rid)
            size = len(frame)
            if k:
                for name, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                    parts[name].append(v)
        med = {k: statistics.median(v) for k, v in parts.items()}
        rows.append({"tokens": n, "blocks": -(-n // 16), "frame_bytes": size,
                     **{f"{k}_ms": 1e3 * v for k, v in med.items()}})
        print(f"{n:5d} tokens ({rows[-1]['blocks']} blocks, {size / 1e6:.2f} MB): " +
              ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in med.items()), flush=True)
    blocks = np.array([r["blocks"] for r in rows], float)
    total = np.array([r["total_ms"] for r in rows]) / 1e3
    per_block, fixed = np.polyfit(blocks, total, 1)
    bytes_per_block = rows[-1]["frame_bytes"] / rows[-1]["blocks"]
    print(f"fit: {1e3 * fixed:.2f} ms per move + {1e6 * per_block:.1f} us per block of 16 tokens "
          f"({bytes_per_block / per_block / 1e9:.2f} GB/s of frame); load {os.getloadavg()}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"dtype": a.dtype, "rows": rows, "fixed_s": fixed, "per_block_s": per_block,
                       "load": os.getloadavg()}, f, indent=2)
    tx.close()
    rx.close()
    ctx.term()


if __name__ == "__main__":
    main()
