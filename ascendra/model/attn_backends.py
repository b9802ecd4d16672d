"""Attention backends by name, and the one each device gets at start-up.

| name | how | where it is the default |
|---|---|---|
| `sdpa` | gather each part's blocks, PyTorch SDPA (the reference the tests compare against) | - |
| `cpu` | gather; SDPA for prompt chunks, a grouped matmul for decodes | CPU (measured fastest there) |
| `flex` | PyTorch FlexAttention over the pool in place, a block mask built from the block table | CUDA |
| `flashinfer` | FlashInfer's paged prefill/decode kernels (`pip install flashinfer-python`) | - |

On CUDA, FlexAttention needs nothing beyond torch and Triton. FlashInfer is used only when asked
for: its wheel compiles kernels with nvcc on first use, which a machine without the CUDA toolkit
cannot do. Neither CUDA path has been run on a GPU yet (no GPU was lent to the session that wrote
them); they follow the libraries' documented APIs and are tested here on CPU where the library runs
there (FlexAttention), against `sdpa`.

Every backend has `name`, `plan(meta, dtype)` (per-iteration state, built once and kept in
`meta.plan`) and `forward(q, k, v, k_cache, v_cache, meta)` (one layer; the new K/V are already in
the cache).
"""

from __future__ import annotations

import torch

from ascendra.model.config import ModelConfig

BACKENDS = ("sdpa", "cpu", "flex", "flashinfer")


def default_attention(device: torch.device | str) -> str:
    return "cpu" if torch.device(device).type == "cpu" else "flex"


def make_attention(
    name: str | None, config: ModelConfig, device: torch.device | str, dtype: torch.dtype, **options
):
    """The backend called `name` (None or "auto": the device's default) for a model of `config`."""
    if name in (None, "auto"):
        name = default_attention(device)
    if name == "sdpa":
        from ascendra.model.attn_gather import GatherAttention

        return GatherAttention(config, decode="sdpa")
    if name == "cpu":
        from ascendra.model.attn_gather import GatherAttention

        return GatherAttention(config, decode="matmul")
    if name == "flex":
        from ascendra.model.attn_flex import FlexPagedAttention

        return FlexPagedAttention(config, torch.device(device), **options)
    if name == "flashinfer":
        from ascendra.model.attn_flashinfer import FlashInferAttention

        return FlashInferAttention(config, torch.device(device), dtype, **options)
    raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)} or auto")
