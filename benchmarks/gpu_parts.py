"""Parts of benchmarks/gpu_engine.py that run whole models: logits against the reference,
offline throughput through the instance loop, and Hugging Face `generate` on the same batch.

Each takes the benchmark's `Run` (device, dtype, shapes, the loaded model) and returns a dict for
the JSON. Run on an H200 (docs/benchmarks.md §6).
"""

from __future__ import annotations

import random
import time

import torch

from ascendra.core.block_manager import BlockManager
from ascendra.core.policies import make_scheduler
from ascendra.core.request import SLO, Request
from ascendra.core.scheduler import SchedulerConfig
from ascendra.engine.instance import Instance
from ascendra.model.attention import SeqChunk, build_metadata
from ascendra.model.attn_backends import make_attention
from ascendra.model.config import named_config
from ascendra.model.kv_cache import KVCache
from ascendra.model.loader import load_dummy
from ascendra.model.sampling import SamplingParams


def logits(run) -> dict:
    """A mixed paged batch (prompt chunks at offsets, ragged decodes) at float32, 2 layers."""
    name = run.args.model.removeprefix("dummy:") if run.args.model.startswith("dummy:") else "llama-3-8b"
    steps = [
        [(0, 0, 37), (1, 0, 16), (2, 0, 5)],
        [(0, 37, 1), (1, 16, 20), (2, 5, 1), (3, 0, 9)],
        [(0, 38, 1), (1, 36, 1), (2, 6, 1), (3, 9, 1)],
    ]
    tokens = {s: torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(s)) for s in range(4)}
    tables = {s: list(range(8 * s + 3, 8 * s + 11)) for s in range(4)}  # scattered: offset by 3

    def logits_of(backend: str, device: torch.device) -> list[torch.Tensor]:
        # The same weights everywhere: drawn on the CPU (each device's generator draws others), then cast.
        m = load_dummy(named_config(name, num_layers=2), torch.float32, "cpu").model
        m.cast(torch.float32, device)
        m.use_attention(make_attention(backend, m.config, device, torch.float32))
        kv = KVCache.allocate(m.config, 40, 16, torch.float32, device, m.attention_backend().kv_layout)
        outs = []
        for batch in steps:
            ids = (
                torch.cat([tokens[s][c : c + n] for s, c, n in batch])
                .remainder(m.config.vocab_size)
                .to(device)
            )
            meta = build_metadata([SeqChunk(tables[s], c, n, n == 1) for s, c, n in batch], 16, device)
            last = (torch.cumsum(torch.tensor([n for _, _, n in batch]), 0) - 1).to(device)
            with torch.inference_mode():
                outs.append(m(ids, meta, kv, last).cpu())
        return outs

    ref = logits_of("sdpa", run.device)
    res = {}
    others = [("sdpa on cpu", "sdpa", torch.device("cpu"))] if run.device.type == "cuda" else []
    for label, backend, dev in others + [(b, b, run.device) for b in run.backends() if b != "sdpa"]:
        got = logits_of(backend, dev)
        res[label] = {
            "max_abs_diff": max((g - r).abs().max().item() for g, r in zip(got, ref, strict=True)),
            "argmax_equal": all(
                torch.equal(g.argmax(-1), r.argmax(-1)) for g, r in zip(got, ref, strict=True)
            ),
        }
    return {"reference": f"sdpa on {run.device}, float32, {name} with 2 layers", "vs_reference": res}


def offline(run) -> dict:
    ex, cfg, out = run.executor(run.backends()[0]), run.model.config, {}
    for n, prompt, new in run.shapes["offline"]:
        sched = make_scheduler(
            "vllm",
            SchedulerConfig(max_num_batched_tokens=run.args.token_budget, max_num_seqs=256),
            BlockManager(ex.num_blocks, 16, 0.01),
        )
        inst = Instance(sched, ex)
        rng = random.Random(n)
        params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
        reqs = [
            Request(
                f"o{n}-{i}",
                0.0,
                prompt,
                new,
                SLO(float("inf"), float("inf")),
                prompt_token_ids=[rng.randrange(cfg.vocab_size) for _ in range(prompt)],
                params=params,
            )
            for i in range(n)
        ]
        for r in reqs:
            inst.add_request(r)
        t0 = time.perf_counter()
        while inst.has_unfinished():
            inst.step(time.monotonic)
        run.sync()
        dt = time.perf_counter() - t0
        produced = sum(r.num_output_tokens for r in reqs)
        out[f"{n} x ({prompt} -> {new})"] = {
            "wall_seconds": dt,
            "output_tokens": produced,
            "output_tok_per_s": produced / dt,
            "iterations": inst.num_steps,
        }
    return out


def hf_generate(run) -> dict:
    from transformers import AutoModelForCausalLM, LlamaConfig

    n, prompt, new = run.shapes["offline"][-1]
    c = run.model.config if run.model is not None else named_config(run.args.model.removeprefix("dummy:"))
    hf_cfg = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        rope_theta=c.rope_theta,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings,
    )
    with torch.device(run.device):
        hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=run.dtype).eval()
    ids = torch.randint(0, c.vocab_size, (n, prompt), device=run.device)
    gen = dict(do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    with torch.inference_mode():
        hf.generate(
            ids[:2, :16], max_new_tokens=2, **(gen | {"attention_mask": torch.ones_like(ids[:2, :16])})
        )
        run.sync()
        t0 = time.perf_counter()
        out = hf.generate(ids, max_new_tokens=new, min_new_tokens=new, **gen)
        run.sync()
    dt = time.perf_counter() - t0
    produced = (out.shape[1] - prompt) * n
    return {"batch": f"{n} x ({prompt} -> {new})", "generate_seconds": dt, "output_tok_per_s": produced / dt}
