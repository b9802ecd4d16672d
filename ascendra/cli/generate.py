"""`ascendra generate`: complete one prompt offline and print the text."""

from __future__ import annotations

import argparse

from ascendra.engine.factory import DTYPES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="complete a prompt offline", description=__doc__)
    p.add_argument("--prompt", required=True, help="the text to complete (required)")
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2), a HF folder, a .gguf file (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature; 0 is greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling share (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=-1,
                   help="sample from the k likeliest tokens; -1 for all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: none, unseeded)")
    p.add_argument("--stop", action="append", default=[],
                   help="stop string, repeatable (default: none)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="weights and KV cache precision (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    return p


def run(args: argparse.Namespace) -> int:
    from ascendra.engine.llm import LLM
    from ascendra.model.sampling import SamplingParams

    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=args.stop,
    )
    llm = LLM(args.model, dtype=args.dtype, threads=args.threads)
    out = llm.generate(args.prompt, params, use_chat_template=args.chat)[0]
    print(out.text)
    return 0
