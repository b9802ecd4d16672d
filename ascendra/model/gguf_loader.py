"""Load a Llama GGUF file: metadata -> ModelConfig and Tokenizer, tensors dequantized to the model dtype."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ascendra.model.config import ModelConfig
from ascendra.model.gguf_reader import GGUFFile, read_gguf

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def open_gguf(path: str | Path) -> GGUFFile:
    """The parsed file, with a plain error for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        return read_gguf(path)
    except ValueError as e:
        raise ValueError(f"not a readable GGUF file: {e}") from None
    except Exception as e:  # struct/numpy/unicode errors on garbage input
        raise ValueError(f"{path} is not a readable GGUF file (corrupt or truncated?): {e}") from None


def read_metadata(reader: GGUFFile) -> dict[str, Any]:
    return reader.metadata


def gguf_config(reader: GGUFFile, meta: dict[str, Any]) -> ModelConfig:
    names = {t.name for t in reader.tensors}
    return ModelConfig.from_gguf_metadata(meta, tie_word_embeddings="output.weight" not in names)


def unpermute_qk(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's convert-time row permutation of Q/K (interleaved -> rotate-half rotary layout)."""
    rows = w.shape[0]
    # convert_hf_to_gguf viewed each head as (2, dim/2) and swapped to (dim/2, 2); swap back.
    return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def iter_hf_weights(reader: GGUFFile, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, float32 tensor) for every tensor, dequantized one at a time to bound peak memory."""
    from gguf.quants import dequantize

    for t in reader.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
            name = f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
        elif len(parts) == 2 and parts[0] in _TOP_NAMES:
            name = f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
        elif parts[0] == "rope_freqs":  # llama3 files store the scaled frequencies; we recompute them
            continue
        else:
            raise ValueError(f"unexpected tensor {t.name!r} in a llama GGUF")
        try:
            array = dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise ValueError(f"cannot dequantize tensor {t.name!r} ({t.tensor_type.name}): {e}") from None
        w = torch.from_numpy(np.require(array, np.float32, ["C", "W"]))  # copies read-only memmaps
        if parts[-2:] == ["attn_q", "weight"]:
            w = unpermute_qk(w, config.num_heads)
        elif parts[-2:] == ["attn_k", "weight"]:
            w = unpermute_qk(w, config.num_kv_heads)
        yield name, w
