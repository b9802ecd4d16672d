"""The pointwise parts of a Llama layer, written as few operations as their arithmetic allows.

They keep Hugging Face's order of operations (RMS statistics in float32, the scale applied in the
model dtype; rotate-half RoPE), so float32 results match transformers where the matmuls do. Each
is a plain function of tensors, so `torch.compile` can fuse it (see `compiled.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(x + residual), x + residual): the residual stream and the next sublayer's input in one."""
    if residual is not None:
        x = residual + x
    return rms_norm(x, weight, eps), x


def rope_qk(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of queries and keys together: qk [T, H + KV, D], cos/sin [T, 1, D]."""
    half = qk.shape[-1] // 2
    rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
    return qk * cos + rotated * sin


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU's activation: silu(gate) * up, the two halves of one fused projection."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
