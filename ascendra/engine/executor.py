"""What runs an iteration: the protocol both executors follow, and what they hand back.

`TorchExecutor` runs the model and returns sampled tokens; `SimExecutor` runs nothing and returns
how long the iteration would take. They are the only difference between a live instance and a
simulated one: both feed the same `Instance.complete_iteration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ascendra.core.batch import ScheduledBatch
from ascendra.core.request import Request


@dataclass(slots=True)
class ExecuteOutput:
    """One iteration's result, one entry per sequence of the batch where a list is given."""

    token_ids: list[int | None] | None  # the sampled token, None for an unfinished prompt chunk;
    # the whole list None in simulation (placeholder tokens, the trace decides the length)
    logprobs: list[float | None] | None = None
    # A row that could not be run (e.g. its sampling failed) fails that request alone.
    errors: list[str | None] | None = None
    duration: float | None = None  # simulated seconds; None when the clock measured it


@dataclass(slots=True)
class KVState:
    """What a migrated request takes along from its executor: its computed tokens' KV blocks and
    its sampler's state, as plain bytes with their dtype and shape (it crosses a socket: checked
    on arrival, never unpickled). None of a simulated request: its transfer is modelled."""

    dtype: str  # torch dtype name: "bfloat16", "float32", ...
    layout: str  # the KV cache layout (model/kv_cache.py)
    shape: list[int]  # [layers, 2 (K, V), blocks, *one block's shape]
    data: bytes
    generator: bytes | None = None  # the request's sampling generator state (seeded sampling)


class Executor(Protocol):
    def execute(self, batch: ScheduledBatch) -> ExecuteOutput: ...
    def release(self, request_id: str) -> None: ...  # forget a finished request's state
    # Migration: the request's state out of this executor (before its blocks are freed), and into
    # another's blocks (after they are allocated); import raises ValueError on a state that does
    # not fit this executor.
    def export_kv(self, request: Request) -> KVState | None: ...
    def import_kv(self, request: Request, state: KVState | None) -> None: ...
