"""`ascendra serve`: the OpenAI-compatible server over live instances (processes or Ray actors)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ascendra.cluster.system import SYSTEMS, SystemConfig
from ascendra.engine.factory import DTYPES, InstanceSpec, load_model_info, resolve_dtype, resolve_perf_model
from ascendra.runtime.live.state import LiveConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2-135M-Instruct GGUF), a HF folder, a .gguf file, or dummy:<shape>")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: derived)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="auto: bfloat16 on CUDA and on CPUs with bfloat16 instructions, else float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--system", default="ascendra", choices=SYSTEMS)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--hp-instances", type=int, default=1, help="high-priority instances (ascendra only)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="max tokens per iteration (vllm: context; sarathi: 512; ascendra: cap 8192)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--num-blocks", type=int, default=None, help="KV blocks per instance")
    p.add_argument("--kv-cache-memory", default="256MiB", help="KV cache per instance, if no --num-blocks")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--ttft-slo-ms", type=float, default=5000.0, help="default TTFT SLO of a request")
    p.add_argument("--tbt-slo-ms", type=float, default=1000.0, help="default TBT SLO of a request")
    p.add_argument("--profile", default=None, help="performance profile (path or shipped name)")
    p.add_argument("--threads-per-instance", type=int, default=1)
    p.add_argument("--ray-address", default=None, help="run instances as Ray actors: 'auto', an address, "
                   "or 'local' to start Ray here")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish requests on SIGTERM")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0,
                   help="seconds of silence after which an instance counts as dead")
    p.add_argument("--log-level", default="info")


def build_server_config(args: argparse.Namespace):  # -> ascendra.server.app.ServerConfig
    """Everything the server needs, resolved in this process: model shape and tokenizer, KV size,
    performance model, and the system's roles and policies (the simulator's SystemConfig)."""
    from ascendra.server.app import ServerConfig

    info = load_model_info(args.model)
    elem = 4 if resolve_dtype(args.dtype, args.device) == "float32" else 2
    if args.num_blocks is not None:
        num_blocks = args.num_blocks
    else:
        from ascendra.model.kv_cache import parse_bytes

        num_blocks = parse_bytes(str(args.kv_cache_memory)) // (info.kv_bytes_per_token * elem // 4
                                                                 * args.block_size)
    if num_blocks < 1:
        raise ValueError(f"the KV cache holds no block (--kv-cache-memory {args.kv_cache_memory})")
    perf, source = resolve_perf_model(args.profile, info, args.device)
    perf = replace(perf, num_kv_blocks=num_blocks, block_size=args.block_size,
                   max_model_len=info.max_model_len)
    num_hp = args.hp_instances if args.system == "ascendra" else 0
    system = SystemConfig(system=args.system, num_instances=args.instances, num_hp=num_hp,
                          token_budget=args.token_budget, max_num_seqs=args.max_num_seqs)
    spec = InstanceSpec(model=args.model, dtype=args.dtype, device=args.device, num_blocks=num_blocks,
                        block_size=args.block_size, threads=args.threads_per_instance)
    live = LiveConfig(system, spec, perf, ray_address=args.ray_address,
                      heartbeat_timeout=args.heartbeat_timeout)
    name = args.served_model_name or info.name
    aliases = tuple(a for a in {args.model, info.name} if a != name)
    print(f"ascendra serve: {system.label()} of {name}, {num_blocks} KV blocks x {args.block_size} per "
          f"instance, perf model: {source}", file=sys.stderr, flush=True)
    return ServerConfig(live, name, aliases, info.tokenizer, info.max_model_len, num_blocks,
                        args.ttft_slo_ms, args.tbt_slo_ms, args.drain_timeout)


def run(args: argparse.Namespace) -> int:
    from ascendra.server.app import create_app
    from ascendra.server.runner import serve_app

    config = build_server_config(args)
    serve_app(create_app(config), args.host, args.port, args.drain_timeout, args.log_level)
    return 0


if __name__ == "__main__":  # python -m ascendra.cli.serve ... (used by the tests)
    from ascendra.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
