"""Decode graphs' static, padded path, run eagerly on CPU: padding to a bucket changes no token."""

from __future__ import annotations

import pytest
import torch

from ascendra.core.batch import ScheduledBatch
from ascendra.core.request import SLO, Request
from ascendra.engine.torch_executor import TorchExecutor
from ascendra.model.attention import SeqChunk
from ascendra.model.cuda_graphs import DecodeGraphs, graph_bucket, pad_decode_batch
from ascendra.model.kv_cache import KVCache
from tests.test_attention import BLOCK, CFG, POOL, Run, model

torch.set_num_threads(1)


def test_buckets_and_padding() -> None:
    assert [graph_bucket(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, None]
    chunks, ids = pad_decode_batch([SeqChunk([3, 4], 5, 1, True)], [11], 4, scratch_block=47)
    assert ids == [11, 0, 0, 0] and chunks[1:] == [SeqChunk([47], 0, 1, True)] * 3
    with pytest.raises(ValueError):
        pad_decode_batch([SeqChunk([1], 0, 1, True)] * 3, [1, 2, 3], 2, 47)


def test_padded_static_decodes_equal_the_eager_forward() -> None:
    """Two pools filled alike; decode steps of 3, 5, 6 and 1 sequences at ragged contexts run
    eagerly on one and padded to buckets of 4 and 8 over static buffers on the other."""
    g = torch.Generator().manual_seed(1)
    lens = [9, 14, 3, 22, 6, 11]
    tokens = {s: torch.randint(0, CFG.vocab_size, (n + 4,), generator=g) for s, n in enumerate(lens)}
    tables = {s: [7 * s + j for j in range(7)] for s in range(6)}  # 7 blocks of 4 tokens; 42-47 free
    eager, static = Run("flex"), Run("flex")
    scratch = POOL - 1
    graphs = DecodeGraphs(static.model, static.kv, max_blocks_per_seq=7, scratch_block=scratch,
                          buckets=(1, 2, 4, 8), capture=False)
    graphs.capture()
    prompts = [(s, 0, n) for s, n in enumerate(lens)]
    eager.step(tokens, tables, prompts)
    static.step(tokens, tables, prompts)
    for step, seqs in enumerate([[0, 1, 2], [0, 1, 2, 3, 4], [5, 4, 3, 2, 1, 0], [3]]):
        batch = [(s, lens[s] + step, 1) for s in seqs]
        want = eager.step(tokens, tables, batch)
        chunks = [SeqChunk(tables[s], c, n, n == 1) for s, c, n in batch]
        assert graphs.can_run(chunks)
        got = graphs.run(chunks, [int(tokens[s][c]) for s, c, _ in batch])
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-5), (step, (got - want).abs().max())
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    # Prompt chunks and batches beyond the largest bucket stay eager.
    assert not graphs.can_run([SeqChunk(tables[0], 0, 5)])
    assert not graphs.can_run([SeqChunk(tables[0], 1, 1, True)] * 9)


def test_executor_with_graphs_reserves_a_scratch_block_and_samples_alike() -> None:
    def decode_batch(executor: TorchExecutor) -> list[int | None]:
        batch = ScheduledBatch()
        for i in range(3):
            r = Request(f"r{i}", 0.0, 6 + i, 4, SLO(1.0, 1.0), prompt_token_ids=list(range(10, 16 + i)))
            r.block_ids = [3 * i, 3 * i + 1, 3 * i + 2]
            batch.add(r, 6 + i)  # prefill (eager in both)
        executor.execute(batch)
        for r in batch.requests:
            r.num_computed_tokens = r.num_tokens
            r.output_token_ids.append(5)
        step = ScheduledBatch()
        for r in batch.requests:
            step.add(r, 1)
        return executor.execute(step).token_ids

    with_graphs = TorchExecutor(model(), num_blocks=10, block_size=BLOCK, attention="flex", cuda_graphs=True,
                                graph_buckets=(1, 4))
    eager = TorchExecutor(model(), num_blocks=10, block_size=BLOCK, attention="flex", cuda_graphs=False)
    assert with_graphs.num_blocks == 10 and with_graphs.kv_cache.num_blocks == 11  # + the scratch block
    assert isinstance(with_graphs.kv_cache, KVCache) and with_graphs.graphs is not None
    assert decode_batch(with_graphs) == decode_batch(eager)
