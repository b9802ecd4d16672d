"""Matmuls against the model's weights, with the weights laid out once for the kernel that runs them.

On CPU in bfloat16, oneDNN (which `F.linear` calls) reorders a plain weight into its blocked layout
on every call. Reordering once at start-up, as torch.compile's CPU freezing pass and vLLM's CPU
backend do, cut the 30 SmolLM2 layers' matmuls from 42 to 24 ms at 16 rows and the LM head from
6.1 to 3.1 ms at one row on this machine (docs/benchmarks.md section 6), with identical results. In
float32 the MKL path gains nothing, and elsewhere (CUDA) plain `F.linear` is the kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# The row count oneDNN lays the weight out for: measured best across 1-512 rows for SmolLM2.
PACK_ROWS_HINT = 16

Linear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    return (
        device.type == "cpu"
        and dtype in (torch.bfloat16, torch.float16)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def pack(weight: torch.Tensor) -> torch.Tensor:
    """An opaque oneDNN copy of `weight` ([out, in]) for `packed_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS_HINT)


def packed_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def plain_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight)
