"""TorchExecutor: runs one ScheduledBatch through the model over the paged KV cache and samples.

It reads each request's token ids, `num_computed_tokens` and `block_ids`, and never changes the
request: the scheduler's update applies the returned tokens. Per-request state (the sampling
generator) lives here until `release`.
"""

from __future__ import annotations

import math

import torch

from ascendra.core.batch import ScheduledBatch
from ascendra.core.request import Request
from ascendra.engine.executor import ExecuteOutput, KVState
from ascendra.model.attention import SeqChunk, build_metadata
from ascendra.model.attn_backends import make_attention
from ascendra.model.config import ModelConfig
from ascendra.model.cuda_graphs import GRAPH_BUCKETS, DecodeGraphs
from ascendra.model.kv_cache import KVCache
from ascendra.model.llama import LlamaForCausalLM
from ascendra.model.sampling import GREEDY, SamplingParams, make_generator, sample


class TorchExecutor:
    def __init__(
        self,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int = 16,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        attention: str | None = None,
        cuda_graphs: bool | None = None,
        graph_buckets: tuple[int, ...] = GRAPH_BUCKETS,
    ) -> None:
        """`attention`: a backend name (`attn_backends.BACKENDS`), None for the device's default.
        `cuda_graphs` (default: on CUDA) runs decode-only batches through graphs captured here;
        False runs everything eagerly. Asked for on CPU, the same static, padded path runs
        eagerly (how the tests check it)."""
        self.model = model
        self.device = torch.device(device) if device is not None else model.device
        self.dtype = dtype or model.dtype
        moved = self.device != model.device or self.dtype != model.dtype
        if moved:
            model.cast(self.dtype, self.device)
        if attention is not None or model.attention is None or moved:  # a backend is per device
            model.use_attention(make_attention(attention, model.config, self.device, self.dtype))
        self.block_size = block_size
        self._num_blocks = num_blocks
        use_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        # Graphs pad batches with dummy sequences that live in one extra block, outside the pool the
        # block manager hands out (blocks 0 .. num_blocks - 1).
        layout = model.attention_backend().kv_layout
        self.kv_cache = KVCache.allocate(
            model.config, num_blocks + int(use_graphs), block_size, self.dtype, self.device, layout
        )
        model.pack_weights()
        self._generators: dict[str, torch.Generator] = {}
        self.graphs: DecodeGraphs | None = None
        if use_graphs:
            max_blocks = -(-min(model.config.max_position_embeddings, num_blocks * block_size) // block_size)
            self.graphs = DecodeGraphs(model, self.kv_cache, max_blocks, num_blocks, graph_buckets)
            self.graphs.capture()

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def num_blocks(self) -> int:
        """Blocks the block manager may hand out (the scratch block of the graphs excluded)."""
        return self._num_blocks

    def execute(self, batch: ScheduledBatch) -> ExecuteOutput:
        n = len(batch)
        if batch.is_empty:
            return ExecuteOutput([], [], [])
        chunks: list[SeqChunk] = []
        input_ids: list[int] = []
        sample_rows: list[int] = []  # sequence index of each logits row
        last_token: list[int] = []  # flattened row whose logits it samples from
        for i, (req, k) in enumerate(zip(batch.requests, batch.num_new_tokens, strict=True)):
            c = req.num_computed_tokens
            if c + k > req.num_tokens:
                raise ValueError(
                    f"request {req.request_id}: {c}+{k} tokens scheduled but it has {req.num_tokens}"
                )
            input_ids.extend(_token_slice(req, c, k))
            chunks.append(SeqChunk(req.block_ids, c, k, req.is_decode))
            if c + k == req.num_tokens:
                sample_rows.append(i)
                last_token.append(len(input_ids) - 1)
        token_ids: list[int | None] = [None] * n
        logprobs: list[float | None] = [None] * n
        errors: list[str | None] = [None] * n
        with torch.inference_mode():
            if self.graphs is not None and self.graphs.can_run(chunks):
                logits = self.graphs.run(chunks, input_ids)  # decodes: every sequence samples
            else:
                logits = self._forward(chunks, input_ids, last_token if sample_rows else None)
            if logits is None:
                return ExecuteOutput(token_ids, logprobs, errors)
            params = [self._params(batch.requests[i].params) for i in sample_rows]
            gens = [
                None if p.greedy else self._generator(batch.requests[i].request_id, p)
                for i, p in zip(sample_rows, params, strict=True)
            ]
            out = sample(logits, params, gens)
        for j, i in enumerate(sample_rows):
            token_ids[i], logprobs[i], errors[i] = out.token_ids[j], out.logprobs[j], out.errors[j]
        return ExecuteOutput(token_ids, logprobs, errors)

    def _forward(
        self, chunks: list[SeqChunk], input_ids: list[int], last_token: list[int] | None
    ) -> torch.Tensor | None:
        meta = build_metadata(chunks, self.block_size, self.device)
        ids = torch.tensor(input_ids, dtype=torch.long).to(self.device, non_blocking=True)
        rows = None
        if last_token is not None:
            rows = torch.tensor(last_token, dtype=torch.long).to(self.device, non_blocking=True)
        return self.model(ids, meta, self.kv_cache, rows)

    def release(self, request_id: str) -> None:
        """Forget a finished or aborted request's sampling state."""
        self._generators.pop(request_id, None)

    # ---- migration --------------------------------------------------------------------------

    def export_kv(self, request: Request) -> KVState:
        """The KV of `request`'s computed tokens (the blocks that hold them) and its sampler state,
        as bytes."""
        kv = self._blocks(request)
        kv = torch.stack([torch.stack([k.index_select(0, kv), v.index_select(0, kv)])
                          for k, v in zip(self.kv_cache.k, self.kv_cache.v, strict=True)]).cpu().contiguous()
        gen = self._generators.get(request.request_id)
        return KVState(_dtype_name(self.dtype), self.kv_cache.layout, list(kv.shape),
                       kv.view(torch.uint8).numpy().tobytes(),
                       None if gen is None else gen.get_state().numpy().tobytes())

    def import_kv(self, request: Request, state: KVState | None) -> None:
        """Copy a migrated request's KV into the blocks allocated for it here, after checking that
        the bytes are what this cache holds: dtype, layout, shape and size. Its sampler state is
        taken first: a request whose KV is refused recomputes, and samples on as it would have."""
        if state is None:
            raise ValueError(f"request {request.request_id}: no KV came with it")
        rid = request.request_id
        if isinstance(state.generator, bytes):  # seeded sampling goes on where it was
            gen = torch.Generator(device=self.device)
            try:
                gen.set_state(torch.frombuffer(bytearray(state.generator), dtype=torch.uint8))
            except RuntimeError as e:
                raise ValueError(f"request {rid}: its sampler state does not fit: {e}") from None
            self._generators[rid] = gen
        ids = self._blocks(request)
        expected = [self.config.num_layers, 2, len(ids), *self.kv_cache.k[0].shape[1:]]
        dtype, layout = self.dtype, self.kv_cache.layout
        if state.dtype != _dtype_name(dtype) or state.layout != layout or state.shape != expected:
            raise ValueError(f"request {rid}: KV of {state.dtype} {state.layout} {state.shape} does not "
                             f"fit this cache ({_dtype_name(dtype)} {layout} {expected})")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not isinstance(state.data, bytes) or len(state.data) != math.prod(expected) * itemsize:
            raise ValueError(f"request {rid}: KV data of {type(state.data).__name__} {len(state.data)} long "
                             f"for shape {expected}")
        raw = torch.frombuffer(bytearray(state.data), dtype=torch.uint8)
        kv = raw.view(dtype).view(expected).to(self.device)
        for layer, (k, v) in enumerate(zip(self.kv_cache.k, self.kv_cache.v, strict=True)):
            k.index_copy_(0, ids, kv[layer, 0])
            v.index_copy_(0, ids, kv[layer, 1])

    def _blocks(self, request: Request) -> torch.Tensor:
        """The block ids holding `request`'s computed tokens."""
        n = -(-request.num_computed_tokens // self.block_size)
        if len(request.block_ids) < n:
            raise ValueError(f"request {request.request_id} holds {len(request.block_ids)} blocks, needs {n}")
        return torch.tensor(request.block_ids[:n], dtype=torch.long, device=self.device)

    @staticmethod
    def _params(params: object) -> SamplingParams:
        if params is None:
            return GREEDY
        if not isinstance(params, SamplingParams):
            raise TypeError(f"request params must be SamplingParams or None, got {type(params).__name__}")
        return params

    def _generator(self, request_id: str, params: SamplingParams) -> torch.Generator:
        gen = self._generators.get(request_id)
        if gen is None:
            gen = self._generators[request_id] = make_generator(params.seed, self.device)
        return gen


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _token_slice(req: Request, start: int, n: int) -> list[int]:
    """(prompt + outputs)[start:start + n] without building the whole list every step."""
    prompt = req.prompt_token_ids
    if prompt is None:
        raise ValueError(f"request {req.request_id} carries no token ids (a simulated request?)")
    plen = len(prompt)
    if start >= plen:
        return req.output_token_ids[start - plen : start - plen + n]
    if start + n <= plen:
        return prompt[start : start + n]
    return prompt[start:] + req.output_token_ids[: start + n - plen]
