"""A Llama-family decoder in plain PyTorch over the paged KV cache.

One forward takes the flattened tokens of a batch that mixes prompt chunks and decode tokens and
returns logits only at the rows that sample. Q/K/V and gate/up projections are fused into one matmul
each at load time; the residual add rides with each norm, RoPE turns queries and keys in one go,
and the attention backend (chosen per device, see `attn_backends.py`) plans its per-iteration
bookkeeping once for all layers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ascendra.model.attention import AttentionMetadata
from ascendra.model.config import ModelConfig
from ascendra.model.kv_cache import KVCache
from ascendra.model.layers import add_rms_norm, rms_norm, rope_qk, silu_and_mul
from ascendra.model.linear import Linear, can_pack, pack, packed_linear, plain_linear
from ascendra.model.rope import cos_sin, inv_frequencies

__all__ = ["MATMULS", "LlamaForCausalLM", "LlamaLayer", "rms_norm"]

MATMULS = ("qkv", "o", "gate_up", "down")  # the weights a layer multiplies by


class LlamaLayer(nn.Module):
    def __init__(self, c: ModelConfig, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__()

        def p(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)

        qkv_rows = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
        self.input_norm = p(c.hidden_size)
        self.qkv = p(qkv_rows, c.hidden_size)
        self.o = p(c.hidden_size, c.num_heads * c.head_dim)
        self.post_norm = p(c.hidden_size)
        self.gate_up = p(2 * c.intermediate_size, c.hidden_size)
        self.down = p(c.hidden_size, c.intermediate_size)


class LlamaForCausalLM(nn.Module):
    def __init__(
        self, config: ModelConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ):
        super().__init__()
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported dtype {dtype}; use float32 or bfloat16")
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        c = config
        self.embed = nn.Parameter(
            torch.empty(c.vocab_size, c.hidden_size, dtype=dtype, device=device), requires_grad=False
        )
        self.layers = nn.ModuleList(LlamaLayer(c, dtype, device) for _ in range(c.num_layers))
        self.norm = nn.Parameter(torch.empty(c.hidden_size, dtype=dtype, device=device), requires_grad=False)
        self.lm_head = (
            self.embed
            if c.tie_word_embeddings
            else nn.Parameter(
                torch.empty(c.vocab_size, c.hidden_size, dtype=dtype, device=device), requires_grad=False
            )
        )
        self.inv_freq = inv_frequencies(c).to(self.device)
        self.attention = None  # set by use_attention(); chosen per device on first forward if not
        # What the forward multiplies by: the parameters themselves, or their packed copies.
        self._linear: Linear = plain_linear
        self._weights: list[dict[str, torch.Tensor]] | None = None
        self._lm_head: torch.Tensor | None = None

    def use_attention(self, backend) -> None:
        """The attention backend the forward uses (`attn_backends.make_attention`)."""
        self.attention = backend

    def attention_backend(self):
        """The backend in use; the device's default if none was set. Its `kv_layout` is the layout
        the KV cache must be allocated in."""
        if self.attention is None:
            from ascendra.model.attn_backends import make_attention

            self.attention = make_attention(None, self.config, self.device, self.dtype)
        return self.attention

    def pack_weights(self) -> bool:
        """Lay the matmul weights out once for the device's kernel, where that pays (`linear.py`);
        call after the last `cast`. Returns whether it packed."""
        if not can_pack(self.dtype, self.device):
            return False
        self._weights = [{n: pack(getattr(layer, n)) for n in MATMULS} for layer in self.layers]
        self._lm_head = pack(self.lm_head)
        self._linear = packed_linear
        return True

    def cast(self, dtype: torch.dtype, device: torch.device | str) -> LlamaForCausalLM:
        """Move/convert the weights in place (tied embeddings stay tied)."""
        self.to(device=device, dtype=dtype)
        self.dtype, self.device = dtype, torch.device(device)
        self._linear, self._weights, self._lm_head = plain_linear, None, None  # packed for the old dtype
        self.inv_freq = self.inv_freq.to(self.device)
        return self

    # ---- weights -------------------------------------------------------------------------------
    def load_hf_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy tensors named like HF Llama checkpoints (model.layers.N.self_attn.q_proj.weight, ...)."""
        c = self.config
        q_rows, kv_rows = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        seen: set[str] = set()
        for name, tensor in weights:
            # Tied checkpoints may still list lm_head.weight (a copy of the embedding).
            if name.endswith("rotary_emb.inv_freq") or (c.tie_word_embeddings and name == "lm_head.weight"):
                continue
            target = self._slot(name, q_rows, kv_rows)
            if target is None:
                raise ValueError(f"unexpected weight {name!r} for a Llama model")
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"weight {name!r} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(tensor)
            seen.add(name)
        if c.tie_word_embeddings:
            seen.add("lm_head.weight")
        missing = sorted(set(self._expected_names()) - seen)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")

    def _slot(self, name: str, q_rows: int, kv_rows: int) -> torch.Tensor | None:
        if name == "model.embed_tokens.weight":
            return self.embed.data
        if name == "model.norm.weight":
            return self.norm.data
        if name == "lm_head.weight":
            return None if self.config.tie_word_embeddings else self.lm_head.data
        parts = name.split(".")
        if len(parts) < 5 or parts[:2] != ["model", "layers"] or not parts[2].isdigit():
            return None
        idx = int(parts[2])
        if idx >= len(self.layers):
            return None
        layer: LlamaLayer = self.layers[idx]  # type: ignore[assignment]
        inter = self.config.intermediate_size
        table = {
            "input_layernorm.weight": layer.input_norm.data,
            "post_attention_layernorm.weight": layer.post_norm.data,
            "self_attn.q_proj.weight": layer.qkv.data[:q_rows],
            "self_attn.k_proj.weight": layer.qkv.data[q_rows : q_rows + kv_rows],
            "self_attn.v_proj.weight": layer.qkv.data[q_rows + kv_rows :],
            "self_attn.o_proj.weight": layer.o.data,
            "mlp.gate_proj.weight": layer.gate_up.data[:inter],
            "mlp.up_proj.weight": layer.gate_up.data[inter:],
            "mlp.down_proj.weight": layer.down.data,
        }
        return table.get(".".join(parts[3:]))

    def _expected_names(self) -> list[str]:
        names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
        for i in range(self.config.num_layers):
            for suffix in (
                "input_layernorm",
                "post_attention_layernorm",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ):
                names.append(f"model.layers.{i}.{suffix}.weight")
        return names

    def init_dummy(self, seed: int = 0) -> None:
        """Random weights (normal, std 0.02; norms 1), generated in place: no second copy of the model."""
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for name, param in self.named_parameters():
            if "norm" in name:
                param.data.fill_(1.0)
            else:
                param.data.normal_(0.0, 0.02, generator=gen)

    # ---- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        meta: AttentionMetadata,
        kv: KVCache,
        logits_indices: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """input_ids: [T]; returns float32 logits [len(logits_indices), vocab] (None if no row samples)."""
        c = self.config
        attn_backend = self.attention_backend()
        if kv.layout != attn_backend.kv_layout:
            raise ValueError(f"attention {attn_backend.name!r} reads a {attn_backend.kv_layout} KV cache, "
                             f"got {kv.layout}")
        if meta.plan_owner != attn_backend.name:  # built once per iteration, read by every layer
            meta.plan, meta.plan_owner = attn_backend.plan(meta, self.dtype), attn_backend.name
        t = input_ids.shape[0]
        heads, kv_heads, d = c.num_heads, c.num_kv_heads, c.head_dim
        cos, sin = cos_sin(meta.positions, self.inv_freq, self.dtype)
        slots = kv.slot_index(meta.slot_mapping)
        mm = self._linear
        x, residual = F.embedding(input_ids, self.embed), None
        for i, layer in enumerate(self.layers):
            w = self._weights[i] if self._weights is not None else None
            h, residual = add_rms_norm(x, residual, layer.input_norm, c.rms_norm_eps)
            qkv = mm(h, w["qkv"] if w else layer.qkv).view(t, heads + 2 * kv_heads, d)
            qk = rope_qk(qkv[:, : heads + kv_heads], cos, sin)
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv_heads :]
            kv.write(i, k, v, slots)
            attn = attn_backend.forward(q, k, v, kv.k[i], kv.v[i], meta)
            x = mm(attn.reshape(t, heads * d), w["o"] if w else layer.o)
            h, residual = add_rms_norm(x, residual, layer.post_norm, c.rms_norm_eps)
            x = mm(silu_and_mul(mm(h, w["gate_up"] if w else layer.gate_up)), w["down"] if w else layer.down)
        if logits_indices is None:
            return None
        x = (residual + x).index_select(0, logits_indices)
        x = rms_norm(x, self.norm, c.rms_norm_eps)
        return mm(x, self._lm_head if self._lm_head is not None else self.lm_head).float()
