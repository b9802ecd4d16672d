"""`ascendra bench`: open-loop load generator for any OpenAI-compatible streaming endpoint.

    ascendra bench --base-url http://127.0.0.1:8000/v1 --model smollm2 --workload cpu-small \\
        --rate 2 --num-requests 100 --json vllm.json
    ascendra bench --compare vllm.json ascendra.json --plot compare.png
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from dataclasses import replace
from urllib.parse import urlparse

from ascendra.core import default_slo

_DESC = "load-test an OpenAI-compatible server (TTFT/TBT attainment, goodput), or --compare saved runs"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help=_DESC, description=_DESC)
    slo = default_slo.DEFAULT_SLO  # the one definition, shared with serve and the README
    tgt = p.add_argument_group("target")
    tgt.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="API root (default: %(default)s)")
    tgt.add_argument("--model", default=None, help="model name in requests (default: the server's first)")
    tgt.add_argument("--endpoint", choices=("completions", "chat"), default="completions",
                     help="/v1/completions with a text prompt, or /v1/chat/completions with one user "
                     "message (default: %(default)s)")
    tgt.add_argument("--label", default=None, help="system name in tables and plots (default: the model)")
    tgt.add_argument("--no-ignore-eos", action="store_true",
                     help="do not send ignore_eos (for servers that reject it; outputs may then be shorter)")
    tgt.add_argument("--no-continuous-usage", action="store_true",
                     help="do not ask for per-chunk usage (stream_options.continuous_usage_stats)")
    tgt.add_argument("--send-slo", action="store_true",
                     help="send ttft_slo_ms/tbt_slo_ms in each request (Ascendra's server schedules by them)")
    tgt.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --base-url")
    wl = p.add_argument_group("workload")
    wl.add_argument("--workload", default="cpu-small", help="fitted length distribution (cpu-small, conv, "
                    "code, arxiv, NAME/FACTOR) (default: %(default)s)")
    wl.add_argument("--trace", default=None,
                    help="trace CSV to replay (Vidur or Azure format) (default: none, --workload's lengths)")
    wl.add_argument("--rate", type=float, default=None,
                    help="mean request rate (req/s); for a trace, rescales it (default: none: every "
                    "request is sent at once, and the run says so; a trace keeps its own timing)")
    wl.add_argument("--arrival", choices=("poisson", "gamma"), default="poisson",
                    help="arrival process at --rate (default: %(default)s)")
    wl.add_argument("--cv", type=float, default=1.0,
                    help="coefficient of variation of gamma gaps (default: %(default)s)")
    wl.add_argument("--num-requests", type=int, default=100,
                    help="requests in the run (default: %(default)s)")
    wl.add_argument("--seed", type=int, default=0,
                    help="seed of the lengths, arrivals and prompts (default: %(default)s)")
    wl.add_argument("--max-model-len", type=int, default=None,
                    help="cut prompts so prompt+output fits (default: no cut)")
    wl.add_argument("--prompt-len", type=int, default=None,
                    help="every prompt this many tokens (default: the workload's lengths)")
    wl.add_argument("--output-len", type=int, default=None,
                    help="every output this many tokens (default: the workload's lengths)")
    wl.add_argument("--tokenizer", default="smollm2",
                    help="for exact-length prompts: smollm2, a HF folder, tokenizer.json, .gguf; words (no "
                    "tokenizer); ids (token-id prompts) (default: %(default)s)")
    lim = p.add_argument_group("SLOs and limits")
    lim.add_argument("--ttft-slo-ms", type=float,
                     help=f"TTFT SLO the run is judged by and --send-slo sends (default: {slo.ttft_ms:g}, "
                     "as ascendra serve's); with --compare, re-judge the saved runs by it (default: each "
                     "run's own)")
    lim.add_argument("--tbt-slo-ms", type=float,
                     help=f"TBT SLO the run is judged by and --send-slo sends (default: {slo.tbt_ms:g}, "
                     "as ascendra serve's); with --compare, re-judge the saved runs by it (default: each "
                     "run's own)")
    lim.add_argument("--max-concurrency", type=int, default=None,
                     help="cap on in-flight requests (default: no cap)")
    lim.add_argument("--timeout", type=float, default=300.0,
                     help="seconds for one request (default: %(default)s)")
    lim.add_argument("--max-duration", type=float, default=600.0,
                     help="seconds after the last arrival before in-flight requests are cut off "
                     "(default: %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--json", default=None,
                     help="write the run (summary + per-request times) here (default: not written)")
    out.add_argument("--plot", default=None,
                     help="PNG: CDFs for one run; attainment/goodput for --compare (default: no plot)")
    out.add_argument("--compare", nargs="+", default=None, metavar="JSON",
                     help="no load: tabulate (and --plot) these saved --json runs side by side (default: "
                     "none, run a load)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def judged_slos(args: argparse.Namespace) -> tuple[float, float]:
    """The (TTFT, TBT) SLOs in seconds a run is judged by: the flags, else serve's defaults."""
    slo = default_slo.DEFAULT_SLO
    ttft = slo.ttft_ms if args.ttft_slo_ms is None else args.ttft_slo_ms
    tbt = slo.tbt_ms if args.tbt_slo_ms is None else args.tbt_slo_ms
    return ttft / 1e3, tbt / 1e3


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise ValueError(f"--base-url {url} is not on loopback; pass --allow-remote to load a remote server")


def _first_model(base_url: str) -> str:
    """The server's first model id; a server that is not there, or not OpenAI-like, is a ValueError
    (one line from the CLI, not a traceback)."""
    import httpx

    url = base_url.rstrip("/") + "/models"
    try:
        r = httpx.get(url, timeout=10.0, trust_env=False)
        r.raise_for_status()
        data = r.json().get("data") or []
        model = data[0]["id"] if data else None
    except httpx.HTTPStatusError as e:
        raise ValueError(f"{url} answered HTTP {e.response.status_code}; pass --model (or the API "
                         f"key the server wants)") from None
    except httpx.HTTPError as e:
        raise ValueError(f"no server answers at {base_url} ({type(e).__name__}: {e})") from None
    except (ValueError, AttributeError, TypeError, KeyError, IndexError):
        raise ValueError(f"{url} did not answer with an OpenAI model list; pass --model") from None
    if model is None:
        raise ValueError(f"{url} lists no model; pass --model")
    return str(model)


def _compare(args: argparse.Namespace) -> int:
    from ascendra.bench.report import BenchReport, compare_table

    reports = [BenchReport.from_json(p) for p in args.compare]
    ttft = args.ttft_slo_ms / 1e3 if args.ttft_slo_ms else None
    tbt = args.tbt_slo_ms / 1e3 if args.tbt_slo_ms else None
    print(compare_table(reports, ttft, tbt))
    if args.plot:
        from ascendra.bench.plot import plot_compare

        print(f"plot: {plot_compare(reports, args.plot, ttft, tbt)}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    from ascendra.bench.client import ClientOptions
    from ascendra.bench.prompts import make_prompt_builder
    from ascendra.bench.report import BenchReport, compare_table
    from ascendra.bench.runner import RunOptions, build_requests, run_bench
    from ascendra.workload import make_workload

    if not args.allow_remote:
        _check_loopback(args.base_url)
    if args.num_requests < 1:
        raise ValueError("--num-requests must be at least 1")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise ValueError("--max-concurrency must be at least 1")
    ttft_slo, tbt_slo = judged_slos(args)
    if ttft_slo <= 0 or tbt_slo <= 0:
        raise ValueError("SLOs must be positive")
    items = make_workload(args.trace or args.workload, rate=args.rate, num_requests=args.num_requests,
                          seed=args.seed, arrival=args.arrival, cv=args.cv, max_model_len=args.max_model_len)
    if args.prompt_len is not None or args.output_len is not None:
        if any(x is not None and x < 1 for x in (args.prompt_len, args.output_len)):
            raise ValueError("--prompt-len and --output-len must be at least 1")
        items = [replace(it, prompt_len=args.prompt_len or it.prompt_len,
                         output_len=args.output_len or it.output_len) for it in items]
    if len(items) > 1 and max(it.arrival_time for it in items) == 0.0:
        print(f"ascendra bench: no --rate, so all {len(items)} requests are sent at once (an offline "
              "batch: TTFT then measures the server's queue); pass --rate R for arrivals at R req/s",
              file=sys.stderr, flush=True)
    prompts = make_prompt_builder(args.tokenizer)
    requests = build_requests(items, prompts, args.seed, chat=args.endpoint == "chat")
    model = args.model or _first_model(args.base_url)
    opts = ClientOptions(base_url=args.base_url, model=model, endpoint=args.endpoint,
                         ignore_eos=not args.no_ignore_eos, continuous_usage=not args.no_continuous_usage,
                         timeout=args.timeout,
                         extra_body={"ttft_slo_ms": ttft_slo * 1e3, "tbt_slo_ms": tbt_slo * 1e3}
                         if args.send_slo else {})
    meta = {
        "label": args.label or model, "base_url": args.base_url, "model": model, "endpoint": args.endpoint,
        "workload": args.trace or args.workload, "prompt_len": args.prompt_len,
        "output_len": args.output_len, "rate": args.rate, "arrival": args.arrival, "cv": args.cv,
        "num_requests": len(requests), "seed": args.seed, "ttft_slo": ttft_slo, "tbt_slo": tbt_slo,
        "max_concurrency": args.max_concurrency, "tokenizer": args.tokenizer,
        "exact_prompt_len": prompts.exact,
        "ignore_eos": opts.ignore_eos, "send_slo": args.send_slo,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prompt_tokens_asked": sum(r.prompt_len for r in requests),
        "output_tokens_asked": sum(r.output_len for r in requests),
    }
    results, wall = run_bench(requests, opts, RunOptions(args.max_concurrency, args.max_duration,
                                                         progress=not args.no_progress))
    report = BenchReport(meta, results, wall)
    d = report.to_dict()
    if d["num_failed"] == len(results):  # nothing to tabulate: say why in one line, and fail
        if args.json:
            report.write_json(args.json)
        first = next(iter(d["errors"]), "unknown error")
        print(f"ascendra bench: error: all {len(results)} requests failed (first: {first[:200]})",
              file=sys.stderr)
        return 1
    print(compare_table([report]))
    if d["num_failed"]:
        print(f"{d['num_failed']} of {len(results)} requests failed:", file=sys.stderr)
        for err, count in sorted(d["errors"].items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {count} x {err}", file=sys.stderr)
    short = sum(r.ok and len(r.token_times) < r.output_len for r in results)
    if short:
        print(f"note: {short} requests produced fewer tokens than asked (ignore_eos unsupported?)",
              file=sys.stderr)
    if args.json:
        print(f"json: {report.write_json(args.json)}")
    if args.plot:
        from ascendra.bench.plot import plot_run

        print(f"plot: {plot_run(report, args.plot)}")
    return 0
