"""Build a real Instance from a picklable description, in whichever process will run it.

The live server sends an `InstanceSpec` to each worker process (or Ray actor); the worker calls
`build_instance` there, so model weights are loaded where they are used and never pickled. The server
itself only needs the tokenizer (`load_tokenizer`) and the performance model (`resolve_perf_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ascendra.core.block_manager import WATERMARK, BlockManager
from ascendra.core.perf_model import PerfModel
from ascendra.core.policies import make_scheduler
from ascendra.core.request import Request
from ascendra.core.scheduler import SchedulerConfig
from ascendra.engine.instance import DetokenizerFactory, Instance
from ascendra.model.config import ModelConfig

DTYPES = ("auto", "float32", "bfloat16", "float16")
CPU_PROFILE = "cpu-smollm2"  # fitted for the default model on CPU (`for_this_cpu`: its AMX variant)
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# Rough single-thread CPU cost of SmolLM2-135M (float32), fitted by least squares on 40 timed
# iterations of this engine on the 2-core shared VM (fit MAPE ~29% under contention). Used only when
# no fitted profile is given or shipped; other models scale the per-token terms by parameter count.
ROUGH_CPU_COEF = [0.028, 0.0031, 0.0007, 0.0, 0.0, 0.0177]
ROUGH_CPU_KNEE = 384
ROUGH_CPU_PARAMS = 134_515_008


@dataclass
class InstanceSpec:
    """Everything needed to build one instance; plain data, so it crosses process boundaries."""

    model: str = "default"  # "default" (SmolLM2 GGUF), a HF folder, a .gguf path, or "dummy:<shape>"
    dtype: str = "auto"  # resolve_dtype: bfloat16 where measured faster, else float32
    device: str = "cpu"
    num_blocks: int | None = None  # KV blocks; None: from kv_cache_memory
    kv_cache_memory: int | str = "256MiB"
    block_size: int = 16
    policy: str = "sarathi"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    perf_model: PerfModel | None = None  # resolved once in the server, shared by every instance
    watermark: float = WATERMARK
    threads: int = 1  # torch intra-op threads per instance process
    seed: int = 0
    # An LP instance of a system that offloads waits (briefly) after each report for the router's
    # offload check, so a request the router moves cannot start here first (as in the simulator,
    # where the check runs between two iterations).
    await_offload_check: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.threads < 1:
            raise ValueError("an instance needs at least one torch thread")


def resolve_dtype(name: str, device: str = "cpu") -> str:
    """"auto" is bfloat16 on CUDA, and on a CPU with bfloat16 matmul instructions (AVX512-BF16 or
    AMX), where it measured 1.2x (1 decode) to 3.6x (16 decodes) faster than float32 on this
    engine (docs/benchmarks.md section 6); float32 on other CPUs, which would emulate bfloat16."""
    if name != "auto":
        return name
    import torch

    if torch.device(device).type != "cpu":
        return "bfloat16"
    fast_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if fast_bf16 else "float32"


def torch_dtype(name: str, device: str = "cpu"):  # -> torch.dtype; torch imported lazily (light server)
    import torch

    return getattr(torch, resolve_dtype(name, device))


def build_instance(spec: InstanceSpec) -> Instance:
    """Load the model, allocate its paged KV cache and wire scheduler + executor into an Instance."""
    import torch

    from ascendra.engine.torch_executor import TorchExecutor
    from ascendra.model.config import kv_blocks_for_memory
    from ascendra.model.loader import load_model

    torch.set_num_threads(spec.threads)
    dtype_name = resolve_dtype(spec.dtype, spec.device)
    dtype = getattr(torch, dtype_name)
    loaded = load_model(spec.model, dtype=dtype, device=spec.device, seed=spec.seed)
    num_blocks = spec.num_blocks or kv_blocks_for_memory(
        loaded.config, spec.kv_cache_memory, spec.block_size, dtype_name
    )
    executor = TorchExecutor(loaded.model, num_blocks, spec.block_size, spec.device, dtype)
    blocks = BlockManager(num_blocks, spec.block_size, spec.watermark)
    scheduler = make_scheduler(spec.policy, spec.scheduler, blocks, spec.perf_model)
    detok = _detokenizer_factory(loaded.tokenizer) if loaded.tokenizer is not None else None
    return Instance(scheduler, executor, detok)


def _detokenizer_factory(tokenizer) -> DetokenizerFactory:
    def make(req: Request):  # one incremental detokenizer per request, primed with its prompt's tail
        return tokenizer.detokenizer(req.prompt_token_ids or ())

    return make


@dataclass
class ModelInfo:
    """What the server process knows of the model without loading its weights."""

    name: str
    max_model_len: int
    tokenizer: object | None  # ascendra.model.tokenizer.Tokenizer; None for dummy weights
    config: ModelConfig


def load_model_info(model: str) -> ModelInfo:
    """The tokenizer (prompt encoding and chat template happen in the server) and the model's shape."""
    from ascendra.model.config import named_config
    from ascendra.model.loader import default_model_path
    from ascendra.model.tokenizer import Tokenizer

    if model.startswith("dummy:"):
        cfg = named_config(model.removeprefix("dummy:"))
        return ModelInfo(model, cfg.max_position_embeddings, None, cfg)
    path = default_model_path() if model == "default" else Path(model).expanduser()
    if path.is_file():
        from ascendra.model.gguf_loader import gguf_config, open_gguf, read_metadata

        reader = open_gguf(path)
        meta = read_metadata(reader)
        cfg = gguf_config(reader, meta)
        tok = Tokenizer.from_gguf_metadata(meta)
    elif path.is_dir():
        import json

        cfg = ModelConfig.from_hf_dict(json.loads((path / "config.json").read_text()))
        has_tok = (path / "tokenizer.json").is_file()
        tok = Tokenizer.from_hf_folder(path, cfg.eos_token_ids) if has_tok else None
    else:
        raise FileNotFoundError(f"model not found: {model!r} (give 'default', a HF folder, a .gguf file "
                                f"or 'dummy:<shape>')")
    name = DEFAULT_MODEL_NAME if model == "default" else path.stem
    return ModelInfo(name, cfg.max_position_embeddings, tok, cfg)


def load_tokenizer(model: str):
    """The model's tokenizer (None for dummy weights)."""
    return load_model_info(model).tokenizer


def resolve_perf_model(profile: str | None, info: ModelInfo, device: str = "cpu") -> tuple[PerfModel, str]:
    """The performance model the schedulers and the router project with, and where it came from:
    the given profile (a path or a shipped name); else the shipped CPU profile for the default model on
    CPU; else a rough
    built-in CPU estimate scaled by parameter count (said so in the returned description)."""
    from ascendra.profiles import for_this_cpu, load_profile, shipped_profiles

    if profile:
        return load_profile(profile).perf_model, f"profile {profile}"
    if device == "cpu" and info.name == DEFAULT_MODEL_NAME and CPU_PROFILE in shipped_profiles():
        name = for_this_cpu(CPU_PROFILE)
        return load_profile(name).perf_model, f"shipped profile {name}"
    scale = max(info.config.num_params, 1) / ROUGH_CPU_PARAMS
    coef = list(ROUGH_CPU_COEF)
    for j in (1, 2, 5):  # per-token and per-sequence work grows with the weights
        coef[j] *= scale
    pm = PerfModel(coef=coef, knees=[ROUGH_CPU_KNEE], name="rough-cpu", hardware="cpu", model=info.name)
    return pm, "built-in rough CPU estimate (no fitted profile; run `ascendra profile` for one)"
