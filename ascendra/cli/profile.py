"""`ascendra profile`: measure this machine with the real engine and write a PerfModel profile."""

from __future__ import annotations

import argparse
import platform

from tqdm import tqdm

from ascendra.core.config import KVCapacity
from ascendra.engine.factory import DTYPES
from ascendra.metrics import format_table
from ascendra.model.config import DTYPE_BYTES
from ascendra.profiles import Profile


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "profile",
        help="time batches on the real engine and fit a performance profile",
        description="Runs a spread of batches (prompt chunks, decode batches, hybrids) through "
        "the real executor on this machine, fits the PerfModel by least squares "
        "and writes the profile JSON that the simulator and the router use.",
    )
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2), a HF folder, a .gguf or dummy:<shape> (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="auto: bfloat16 on CUDA and on CPUs with bfloat16 instructions, else float32 "
                   "(default: %(default)s)")
    p.add_argument("--device", default="cpu",
                   help="torch device: cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads, as each serving instance uses (default: %(default)s)")
    p.add_argument("--num-blocks", type=int, default=None,
                   help="KV blocks of the executor under test (default: 4096 on CPU, 32768 on a GPU)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="times each batch is timed; the fit reads their median (default: %(default)s)")
    p.add_argument("--instances", type=int, default=1,
                   help="profile as this many serving instances sharing the machine: as many processes "
                   "time the spread at once, and every one's points are fitted (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a smaller spread (for tests and smoke runs)")
    p.add_argument("--name", default=None, help="profile name (default: <hardware>-<model>)")
    p.add_argument("--out", default="profile.json", help="where to write the profile (default: %(default)s)")
    p.add_argument("--from-steps", nargs="+", default=None, metavar="STEPS.jsonl",
                   help="fit from the steps a vLLM engine's Ascendra plugin recorded (the steps-N.jsonl "
                   "files in `ascendra serve --engine vllm`'s --vllm-log-dir) instead of timing batches "
                   "here (default: time batches)")
    return p


def run_from_steps(args: argparse.Namespace) -> int:
    from ascendra.profiles.steps import fit_steps, read_steps

    shapes, seconds = read_steps(args.from_steps)
    model_name = "smollm2-135m" if args.model == "default" else str(args.model).rstrip("/").split("/")[-1]
    hardware = f"vllm-{args.device}-{platform.machine()}"
    perf = fit_steps(shapes, seconds, args.device, name=args.name or f"{hardware}-{model_name}",
                     hardware=hardware, model=model_name,
                     notes={"source": "vLLM engine steps recorded by the Ascendra plugin"})
    print(f"fit on {perf.notes['steps']} steps ({perf.notes['stalls_left_out']} stalls left out): MAPE "
          f"{100 * perf.fit_mape:.1f}%, held-out {100 * (perf.heldout_mape or 0):.1f}%, "
          f"spread {perf.spread:.3f}")
    Profile(perf, KVCapacity()).save(args.out)
    print(f"profile written to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.from_steps:
        return run_from_steps(args)
    from ascendra.engine.factory import resolve_dtype
    from ascendra.engine.profiler import ProfileJob, fit_profile, run_profile_job

    if args.num_blocks is None:
        args.num_blocks = 4096 if args.device == "cpu" else 32768
    if args.threads < 1 or args.repeats < 1 or args.num_blocks < 1 or args.instances < 1:
        raise ValueError("--threads, --repeats, --num-blocks and --instances must be at least 1")
    args.dtype = resolve_dtype(args.dtype, args.device)
    job = ProfileJob(args.model, args.dtype, args.device, args.threads, args.num_blocks, args.block_size,
                     args.repeats, args.quick)
    with tqdm(desc="profiling", unit="batch") as bar:
        points, cfg = run_profile_job(job, args.instances, progress=bar)
    hardware = f"{args.device}-{platform.machine()}-{args.threads}t"
    if args.device.startswith("cuda"):
        import torch

        hardware = torch.cuda.get_device_name(torch.device(args.device)).lower().replace(" ", "-")
    model_name = "smollm2-135m" if args.model == "default" else str(args.model).rstrip("/").split("/")[-1]
    perf = fit_profile(
        points,
        args.device,
        name=args.name or f"{hardware}-{model_name}-{args.dtype}",
        hardware=hardware,
        model=model_name,
        notes={
            "source": "ascendra profile on this machine",
            "dtype": args.dtype,
            "threads": args.threads,
            "points": len(points),
            "instances": args.instances,
        },
    )
    rows = [
        {
            "batch": p.label,
            "measured ms": 1e3 * p.seconds,
            "predicted ms": 1e3 * perf.predict(p.shape),
            "error %": 100 * (perf.predict(p.shape) - p.seconds) / p.seconds,
        }
        for p in points
    ]
    print(format_table(rows, floatfmt=".3g"))
    print(
        f"\nfit MAPE {100 * perf.fit_mape:.1f}% on {len(points)} batches; held-out MAPE "
        f"{100 * (perf.heldout_mape or 0):.1f}%  (knees {perf.knees} tokens); spread (sd of "
        f"log measured/predicted, which the simulator draws iteration noise from) {perf.spread:.3f}"
    )
    kv_bytes = cfg.kv_bytes_per_token(DTYPE_BYTES[args.dtype])
    capacity = KVCapacity(args.num_blocks, args.block_size, cfg.max_position_embeddings, kv_bytes)
    Profile(perf, capacity).save(args.out)
    print(f"profile written to {args.out}")
    return 0


if __name__ == "__main__":
    # `python -m ascendra.cli.profile ...`: this subcommand alone, where the serving dependencies
    # (fastapi, pyzmq, ray) are not installed, as on the GPU machine.
    import sys

    parser = argparse.ArgumentParser(prog="python -m ascendra.cli.profile")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    sys.exit(run(parser.parse_args(["profile", *sys.argv[1:]])))
