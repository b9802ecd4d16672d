"""The paged Llama model against transformers on random checkpoints; loaders, tokenizer and sampler."""

from __future__ import annotations

import json

import pytest
import torch

from ascendra.model.attention import SeqChunk, build_metadata
from ascendra.model.config import ModelConfig, named_config
from ascendra.model.kv_cache import KVCache
from ascendra.model.loader import default_model_path, load_gguf, load_hf_folder, load_model
from ascendra.model.sampling import SamplingParams, make_generator, sample
from ascendra.model.tokenizer import Tokenizer

# One thread: on shared, oversubscribed cores two OpenMP threads ran up to 10x slower than one.
torch.set_num_threads(1)

GQA_TIED = dict(tie_word_embeddings=True)
LLAMA3_ROPE = dict(
    tie_word_embeddings=False,
    rope_theta=500000.0,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
)


def save_random_llama(folder, **kw) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        **kw,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder)  # safetensors
    return model


def run(model, kv, seqs, block_tables, chunks):
    """Forward one mixed batch: chunks[i] = (num_computed, num_new) of seqs[i]; logits at each last token.
    One new token after cached ones runs as a decode here (these made-up sequences have no outputs)."""
    ids = torch.cat([s[c : c + n] for s, (c, n) in zip(seqs, chunks, strict=True)])
    meta = build_metadata(
        [SeqChunk(b, c, n, n == 1 and c > 0) for b, (c, n) in zip(block_tables, chunks, strict=True)],
        kv.block_size, "cpu",
    )
    last = torch.cumsum(torch.tensor([n for _, n in chunks]), 0) - 1
    with torch.inference_mode():
        return model(ids, meta, kv, last)


@pytest.mark.parametrize("kw", [GQA_TIED, LLAMA3_ROPE], ids=["gqa-tied", "llama3-rope"])
def test_mixed_batch_logits_match_transformers(tmp_path, kw) -> None:
    hf = save_random_llama(tmp_path, **kw)
    loaded = load_hf_folder(tmp_path)
    assert loaded.config.tie_word_embeddings == kw["tie_word_embeddings"]
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 320, (n,), generator=g) for n in (40, 23, 9, 70)]
    with torch.inference_mode():
        ref = [hf(s[None]).logits[0] for s in seqs]
    layout = loaded.model.attention_backend().kv_layout
    kv = KVCache.allocate(loaded.config, 64, 8, torch.float32, "cpu", layout)
    # Scattered, non-contiguous block tables, as a real allocator hands out.
    tables = [[7, 3, 30, 12, 5], [1, 22, 9], [40, 41], [50, 2, 13, 44, 17, 60, 8, 11, 33]]
    steps = [
        [(0, 17), (0, 22), (0, 8), (0, 30)],  # prompts; seq 0 and 3 only partly (chunked prefill)
        [(17, 23), (22, 1), (8, 1), (30, 40)],  # seq 0 and 3 continue after cached tokens, 1 and 2 decode
        [(39, 1), (22, 1), (8, 1), (69, 1)],  # all decode (re-feeding known tokens), lengths differ
    ]
    for chunks in steps:
        # sequences 1 and 2 "decode" their last prompt token repeatedly; overwrite is idempotent.
        out = run(loaded.model, kv, seqs, tables, chunks)
        for i, (c, n) in enumerate(chunks):
            want = ref[i][c + n - 1]
            assert torch.allclose(out[i], want, atol=1e-4, rtol=1e-4), (
                chunks,
                i,
                (out[i] - want).abs().max(),
            )


def test_bfloat16_close_to_float32(tmp_path) -> None:
    save_random_llama(tmp_path, **GQA_TIED)
    f32, bf16 = load_hf_folder(tmp_path), load_hf_folder(tmp_path, dtype=torch.bfloat16)
    seq = torch.randint(0, 320, (30,), generator=torch.Generator().manual_seed(2))
    outs = []
    for m in (f32, bf16):
        kv = KVCache.allocate(m.config, 8, 16, m.model.dtype, "cpu", m.model.attention_backend().kv_layout)
        outs.append(run(m.model, kv, [seq], [[3, 1]], [(0, 30)])[0])
    assert outs[1].dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(outs[0], outs[1], dim=0)
    assert cos > 0.99 and outs[0].argmax() == outs[1].argmax()


def test_config_from_hf_dict_and_named_shapes() -> None:
    d = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 10,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
        "rope_theta": 5e5,
        "eos_token_id": [3, 4],
    }
    cfg = ModelConfig.from_hf_dict(d)
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.rope_theta, cfg.eos_token_ids) == (8, 2, 5e5, (3, 4))
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 8.0
    assert 6.5e9 < named_config("llama-2-7b").num_params < 7e9
    assert 7.9e9 < named_config("llama-3-8b").num_params < 8.1e9
    with pytest.raises(ValueError, match="unsupported architecture"):
        ModelConfig.from_hf_dict(d | {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    with pytest.raises(ValueError, match="rope type"):
        ModelConfig.from_hf_dict(d | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="unknown model shape"):
        named_config("gpt-5")


def test_dummy_weights_are_seeded() -> None:
    a, b = load_model("dummy:tiny", seed=3), load_model("dummy:tiny", seed=3)
    assert torch.equal(a.model.layers[0].qkv, b.model.layers[0].qkv)
    assert a.tokenizer is None and a.model.layers[0].qkv.std() > 0.01


def test_loader_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "empty")
    folder = tmp_path / "model"
    save_random_llama(folder, **GQA_TIED)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_model(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ValueError, match="unsupported architecture"):
        load_model(folder)
    src = default_model_path()
    cut = tmp_path / "cut.gguf"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(src.stat().st_size // 3))
    with pytest.raises(ValueError, match="GGUF"):
        load_gguf(cut)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="GGUF"):
        load_model(tmp_path / "junk.gguf")


@pytest.fixture(scope="module")
def smol_tokenizer() -> Tokenizer:
    from ascendra.model.gguf_loader import open_gguf, read_metadata

    return Tokenizer.from_gguf_metadata(read_metadata(open_gguf(default_model_path())))


def test_gguf_tokenizer_and_chat_template(smol_tokenizer: Tokenizer) -> None:
    tok = smol_tokenizer
    text = "Ünïcödé café 日本語 🙂 and 2024 numbers"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode("2024") == [tok.backend.token_to_id(d) for d in "2024"]  # SmolLM splits digits
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    chat_ids = tok.encode_chat([{"role": "user", "content": "Hi"}])
    assert chat_ids[0] == tok.backend.token_to_id("<|im_start|>") and chat_ids.count(1) == 3
    assert tok.backend.token_to_id("<|im_end|>") in tok.eos_token_ids


def test_incremental_detokenizer_streams_multibyte_text(smol_tokenizer: Tokenizer) -> None:
    tok = smol_tokenizer
    text = "Emoji 🙂🚀 split across tokens, 日本語 too.\nNew line"
    ids = tok.encode(text)
    detok = tok.detokenizer(prompt_ids=tok.encode("Prompt:"))
    deltas = [detok.push(i) for i in ids]
    assert "".join(deltas) + detok.flush() == text
    assert all("\ufffd" not in d for d in deltas)
    assert "" in deltas  # some token ended mid-character and was held back


def test_sampling_params_validation() -> None:
    for bad in (
        dict(temperature=-0.1),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(top_k=-2),
        dict(max_tokens=0),
        dict(stop=[""]),
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    assert SamplingParams(top_k=1).greedy and SamplingParams(temperature=0).greedy
    assert SamplingParams(stop="END").stop == ["END"]


def test_sampler_seeded_batch_independent_and_filters() -> None:
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 3
    p = SamplingParams(temperature=0.8, top_k=50, top_p=0.95, seed=11)

    def draws(rows: list[int], n: int = 20) -> list[int]:
        gens = [make_generator(11 if r == 0 else r, "cpu") for r in rows]
        params = [p if r == 0 else SamplingParams(temperature=1.5, seed=r) for r in rows]
        return [sample(logits[rows], params, gens).token_ids[rows.index(0)] for _ in range(n)]

    alone = draws([0])
    assert alone == draws([0]) == draws([2, 0, 3]) == draws([3, 1, 0])
    assert len(set(alone)) > 1
    top1 = sample(logits, [SamplingParams(top_k=1)] * 4, [make_generator(0, "cpu")] * 4).token_ids
    assert top1 == logits.argmax(-1).tolist()
    narrow = SamplingParams(temperature=2.0, top_k=2)
    allowed = set(logits[1].topk(2).indices.tolist())
    gen = make_generator(5, "cpu")
    assert {sample(logits[1:2], [narrow], [gen]).token_ids[0] for _ in range(30)} == allowed
    tiny_p = SamplingParams(temperature=1.0, top_p=1e-6, logprobs=True)
    out = sample(logits, [tiny_p] * 4, [make_generator(i, "cpu") for i in range(4)])
    toks, lps = out.token_ids, out.logprobs
    assert toks == logits.argmax(-1).tolist()
    assert lps == pytest.approx(torch.log_softmax(logits, -1).max(-1).values.tolist(), abs=1e-5)


def test_hf_folder_tokenizer_files(tmp_path, smol_tokenizer: Tokenizer) -> None:
    smol_tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    cfg = {"chat_template": smol_tokenizer.chat_template, "eos_token": {"content": "<|im_end|>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = Tokenizer.from_hf_folder(tmp_path, eos_token_ids=[0])
    text = "Hello 2024 wörld"
    assert tok.encode(text) == smol_tokenizer.encode(text)
    assert tok.eos_token_ids == {0, 2}
    messages = [{"role": "user", "content": "Hi"}]
    assert tok.encode_chat(messages) == smol_tokenizer.encode_chat(messages)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_hf_folder(tmp_path / "missing")


def test_sampler_survives_extreme_params_row_by_row() -> None:
    """The extremes validation admits, which used to raise for the whole batch: a near-zero
    temperature (logits / 1e-300 overflow), the largest top_k, a negative seed (torch's generators
    take unsigned 64 bits), a huge temperature. Each row samples on its own."""
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(3))
    params = [
        SamplingParams(temperature=1e-300),
        SamplingParams(temperature=0.7, top_k=SamplingParams.MAX_TOP_K),
        SamplingParams(temperature=1.0, seed=-3),
        SamplingParams(temperature=1e300, top_p=0.5),
    ]
    gens = [None if p.greedy else make_generator(p.seed, "cpu") for p in params]
    out = sample(logits, params, gens)
    assert out.errors == [None] * 4 and all(isinstance(t, int) and 0 <= t < 50 for t in out.token_ids)
    assert out.token_ids[0] == logits[0].argmax().item()  # below 1e-5 counts as greedy, as in vLLM
    # A seed is reduced modulo 2**64: -3 draws exactly what 2**64 - 3 draws.
    again = sample(logits[2:3], [params[2]], [make_generator(2**64 - 3, "cpu")])
    assert again.token_ids == [out.token_ids[2]]


def test_a_row_with_broken_logits_fails_alone() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(4))
    logits[1, 7] = float("nan")
    logits[3, 9] = float("inf")
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.0, logprobs=True),
              SamplingParams(temperature=0.9, seed=1, logprobs=True), SamplingParams(temperature=0.9, seed=2)]
    gens = [None, None, make_generator(1, "cpu"), make_generator(2, "cpu")]
    out = sample(logits, params, gens)
    assert out.errors[0] is None and out.errors[2] is None
    assert out.errors[1] is not None and out.errors[3] is not None and "finite" in out.errors[1]
    assert out.token_ids[1] is None and out.token_ids[3] is None and out.logprobs[1] is None
    assert out.token_ids[0] == logits[0].argmax().item() and out.logprobs[2] <= 0.0
