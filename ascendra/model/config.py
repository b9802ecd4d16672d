"""Shape and hyper-parameters of a Llama-family decoder, from a HF config.json, GGUF metadata or a name."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """Frequency scaling of the rotary embedding ("linear" or llama3-style)."""

    rope_type: str
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    name: str = ""

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")

    @property
    def num_params(self) -> int:
        attn = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        per_layer = attn + mlp + 2 * self.hidden_size
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + self.hidden_size

    def kv_bytes_per_token(self, element_size: int) -> int:
        """KV cache bytes one token takes over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element_size

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> ModelConfig:
        archs = d.get("architectures") or ["LlamaForCausalLM"]
        if (
            d.get("model_type", "llama") not in ("llama", "mistral")
            or archs[0] not in SUPPORTED_ARCHITECTURES
        ):
            raise ValueError(
                f"unsupported architecture {archs[0]!r} (model_type {d.get('model_type')!r}); "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        try:
            hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
            # transformers >= 5 writes rope_parameters (rope_theta inside); older files rope_scaling.
            rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
            theta = float(d.get("rope_theta") or rope.get("rope_theta") or 10000.0)
            eos = d.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
            return cls(
                vocab_size=int(d["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_layers=int(d["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=theta,
                rope_scaling=_rope_scaling(rope),
                max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                bos_token_id=d.get("bos_token_id"),
                eos_token_ids=eos_ids,
                name=str(d.get("_name_or_path", "")),
            )
        except KeyError as e:
            raise ValueError(f"config.json lacks required key {e.args[0]!r}") from None

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], tie_word_embeddings: bool) -> ModelConfig:
        arch = meta.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: 'llama'")

        def get(key: str, default: Any = None) -> Any:
            value = meta.get(f"llama.{key}", default)
            if value is None:
                raise ValueError(f"GGUF metadata lacks llama.{key}")
            return value

        hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
        scaling = None
        if meta.get("llama.rope.scaling.type") == "linear":
            scaling = RopeScaling("linear", float(get("rope.scaling.factor")))
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            vocab_size=int(meta.get("llama.vocab_size") or len(meta["tokenizer.ggml.tokens"])),
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            head_dim=int(get("rope.dimension_count", hidden // heads)),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            max_position_embeddings=int(get("context_length", 4096)),
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=() if eos is None else (int(eos),),
            name=str(meta.get("general.name", "")),
        )


def _rope_scaling(rope: dict[str, Any]) -> RopeScaling | None:
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type == "default":
        return None
    return RopeScaling(
        rope_type=rope_type,
        factor=float(rope.get("factor", 1.0)),
        low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
        high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(rope.get("original_max_position_embeddings", 8192)),
    )


_NAMED = {
    "tiny": ModelConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_ids=(2,),
        name="tiny",
    ),
    "smollm2-135m": ModelConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_ids=(2,),
        name="smollm2-135m",
    ),
    "llama-2-7b": ModelConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        head_dim=128,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_ids=(2,),
        name="llama-2-7b",
    ),
    "llama-3-8b": ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        bos_token_id=128000,
        eos_token_ids=(128001, 128009),
        name="llama-3-8b",
    ),
    "llama-3.1-8b": ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192),
        max_position_embeddings=131072,
        bos_token_id=128000,
        eos_token_ids=(128001, 128008, 128009),
        name="llama-3.1-8b",
    ),
}


def named_config(name: str, **overrides: Any) -> ModelConfig:
    """A dummy shape by name ("tiny", "smollm2-135m", "llama-2-7b", "llama-3-8b", "llama-3.1-8b")."""
    if name not in _NAMED:
        raise ValueError(f"unknown model shape {name!r}; known: {', '.join(sorted(_NAMED))}")
    return replace(_NAMED[name], **overrides)


# Bytes per element of the dtypes an instance can run in.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_blocks_for_memory(config: ModelConfig, memory: int | str, block_size: int = 16,
                         dtype: str = "float32") -> int:
    """How many KV blocks of `block_size` tokens fit in `memory` bytes (an int, or a string like
    '2GiB' from `--kv-cache-memory`) for this model in `dtype`: the one sizing rule, for the server
    (which never loads the weights) and the instance that allocates the pool alike."""
    num_bytes = parse_bytes(memory) if isinstance(memory, str) else int(memory)
    per_block = config.kv_bytes_per_token(DTYPE_BYTES[dtype]) * block_size
    blocks = num_bytes // per_block
    if blocks < 1:
        raise ValueError(
            f"{num_bytes} bytes hold no KV block of {per_block} bytes for {config.name or 'the model'}"
        )
    return int(blocks)


def parse_bytes(text: str) -> int:
    """'4GiB', '512MB', '1e9' -> bytes."""
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
    s = text.strip().lower().removesuffix("b")
    for suffix in sorted(units, key=len, reverse=True):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * units[suffix])
    try:
        return int(float(s))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a size (examples: 4GiB, 512MB, 1e9)") from None
