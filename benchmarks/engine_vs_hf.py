"""The engine against Hugging Face `transformers` generate, same model, same prompts, one run.

64 requests of mixed prompt lengths (a fixed seed), greedy, a fixed number of new tokens each
(EOS ignored on both sides so both produce exactly the same amount), torch pinned to the same
threads. Ours: `LLM(...).generate` (paged KV, continuous batching, Sarathi-style chunked
prefill). Theirs: `model.generate` on the whole batch, left-padded. Reported: output tokens per
second, median of `--repeats` runs each, and the ratio.

    python benchmarks/engine_vs_hf.py [--requests 64] [--max-tokens 64] [--threads 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from ascendra.engine.llm import LLM
from ascendra.metrics import format_table
from ascendra.model.loader import default_model_path
from ascendra.model.sampling import SamplingParams

WORDS = "the of and to in is that for it as with was on be by this are from at or an have not".split()


def prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 200))) for _ in range(n)]


def hf_model(dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=dtype).eval()
    return tok, model


def run_hf(tok, model, texts: list[str], max_tokens: int, batch_size: int) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True)
            out = model.generate(
                **enc,
                max_new_tokens=max_tokens,
                min_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            n += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return time.perf_counter() - t0, n


def run_ours(llm: LLM, texts: list[str], max_tokens: int) -> tuple[float, int]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(texts, params)
    return time.perf_counter() - t0, sum(len(o.token_ids) for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--hf-batch-size", type=int, default=64)
    ap.add_argument("--token-budget", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    texts = prompts(args.requests, 0)
    llm = LLM(dtype=args.dtype, threads=args.threads, token_budget=args.token_budget, kv_cache_memory="1GiB")
    tok, model = hf_model(dtype)
    run_ours(llm, texts[:4], 4)  # warm-up
    run_hf(tok, model, texts[:4], 4, 4)
    ours, theirs = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both alike
        s, n = run_ours(llm, texts, args.max_tokens)
        ours.append(n / s)
        s, n = run_hf(tok, model, texts, args.max_tokens, args.hf_batch_size)
        theirs.append(n / s)
    o, t = statistics.median(ours), statistics.median(theirs)
    print(
        f"{args.requests} requests, prompts 8-200 words, {args.max_tokens} new tokens each, {args.dtype}, "
        f"{args.threads} threads, {args.repeats} runs (median)"
    )
    print(
        format_table(
            [
                {
                    "engine": "ascendra LLM.generate",
                    "output tokens/s": o,
                    "runs": ", ".join(f"{x:.0f}" for x in ours),
                },
                {
                    "engine": f"transformers generate (batch {args.hf_batch_size})",
                    "output tokens/s": t,
                    "runs": ", ".join(f"{x:.0f}" for x in theirs),
                },
            ],
            floatfmt=".4g",
        )
    )
    print(f"ratio ascendra / transformers: {o / t:.2f}x")


if __name__ == "__main__":
    main()
