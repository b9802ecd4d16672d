"""`ascendra profile`: time a spread of batches on the real executor and fit the PerfModel.

Batches cover what the schedulers produce: prompt chunks of several sizes after several cached
contexts, decode batches of several sizes and contexts, and Sarathi-style hybrids of both. Each
is timed through `TorchExecutor.execute` (inputs, model, sampling: everything an iteration costs)
after a warm-up, the median of a few repeats kept. A random share is held out of the fit and its
error reported.

Serving runs several instance processes on one machine, and they slow one another (shared cores,
caches, memory bandwidth). `run_profile_job(job, instances=N)` times the spread in N processes at
once, each in its own shuffled order as independent instances would be, and fits every point.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.block_manager import BlockManager
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import SLO, Request
from ascendra.profiles.fit import fit_device_profile


@dataclass
class ProfilePoint:
    shape: BatchShape
    seconds: float
    label: str


@dataclass(frozen=True)
class SpreadBatch:
    """One batch to time: prompt chunks as (num_computed, num_new), decodes by cached tokens."""

    label: str
    prefills: tuple[tuple[int, int], ...] = ()
    decodes: tuple[int, ...] = ()

    def seqs(self) -> list[tuple[int, int]]:
        """(num_computed, num_new) of every sequence, prompt chunks first."""
        return [*self.prefills, *((c, 1) for c in self.decodes)]

    def kv_tokens(self) -> int:
        return sum(c + n for c, n in self.seqs())


# What a GPU's schedulers produce: budgets up to 8k tokens, up to 256 decodes at long contexts.
GPU_SPREAD = dict(
    chunks=[64, 128, 256, 512, 1024, 2048, 4096, 8192],
    ctxs=[0, 1024, 4096],
    decode_bs=[1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256],
    decode_ctx=[256, 1024, 4096],
    hybrid_bs=[16, 64, 128],
    hybrid_n=[256, 512, 2048],
)


def batch_spread(
    max_model_len: int, quick: bool = False, max_tokens: int | None = None, device: str = "cpu"
) -> list[SpreadBatch]:
    """Every batch to time; batches holding more than `max_tokens` KV tokens in all (the pool
    under test, a block of slack per sequence) are left out. A GPU gets its own, larger spread
    (`GPU_SPREAD`); `quick` trims either."""
    cap = max_model_len - 1
    chunks = [16, 64, 128, 256, 512] if quick else [8, 16, 32, 64, 128, 256, 384, 512, 768, 1024]
    ctxs = [0, 512] if quick else [0, 256, 1024, 2048]
    decode_bs = [1, 3, 4, 16, 32] if quick else [1, 2, 3, 4, 6, 8, 12, 16, 32, 48, 64]
    decode_ctx = [64, 512] if quick else [64, 256, 1024, 2048]
    hybrid_bs = [4, 16] if quick else [4, 16, 32]
    hybrid_n = [64, 256] if quick else [32, 128, 256, 512]
    if device != "cpu":
        g = GPU_SPREAD
        step = 2 if quick else 1
        chunks, ctxs, decode_bs = g["chunks"][::step], g["ctxs"], g["decode_bs"][::step]
        decode_ctx, hybrid_bs, hybrid_n = g["decode_ctx"], g["hybrid_bs"], g["hybrid_n"]
    spread = []
    for n in chunks:
        for c in ctxs:
            if c + n <= cap:
                spread.append(SpreadBatch(f"prefill {n}@{c}", ((c, n),)))
    for b in decode_bs:
        for c in decode_ctx:
            spread.append(SpreadBatch(f"decode {b}x@{c}", decodes=(min(c, cap - 1),) * b))
    for b in hybrid_bs:
        for n in hybrid_n:
            spread.append(SpreadBatch(f"hybrid {b}x@256+{n}", ((0, min(n, cap)),), (min(256, cap - 1),) * b))
    return [
        sb for sb in spread
        if max_tokens is None or sb.kv_tokens() + 16 * (len(sb.prefills) + len(sb.decodes)) <= max_tokens
    ]


def build_batch(
    executor, sb: SpreadBatch, vocab_size: int, block_size: int, rng: random.Random
) -> ScheduledBatch:
    """The batch `sb` of random tokens, with blocks from a fresh block manager over the executor's
    pool; a decode's last token is an output token and its prompt all cached. Every sequence samples."""
    bm = BlockManager(executor.num_blocks, block_size, watermark=0.0)
    batch = ScheduledBatch()
    seqs = [(c, n, False) for c, n in sb.prefills] + [(c, 1, True) for c in sb.decodes]
    for i, (computed, new, decode) in enumerate(seqs):
        ids = [rng.randrange(vocab_size) for _ in range(computed + new)]
        r = Request(f"p{i}", 0.0, computed + new, 1, SLO(1.0, 1.0), prompt_token_ids=ids)
        if decode:
            r.prompt_len -= 1
            r.output_token_ids = [ids[-1]]
            r.prompt_token_ids = ids[:-1]
            r.is_decode = True
        if not bm.allocate_slots(r, computed + new):
            raise ValueError(f"the KV pool ({executor.num_blocks} blocks) cannot hold batch {sb.label!r}")
        r.num_computed_tokens = computed
        batch.add(r, new)
    return batch


def time_batches(
    executor,
    spread: list[SpreadBatch],
    *,
    vocab_size: int,
    block_size: int,
    repeats: int = 3,
    progress: Callable[[], None] | None = None,
    seed: int = 0,
) -> list[ProfilePoint]:
    """Run every batch of the spread through `executor` and return its median time."""
    rng = random.Random(seed)
    points = []
    for sb in spread:
        batch = build_batch(executor, sb, vocab_size, block_size, rng)
        executor.execute(batch)  # warm-up: allocator, caches
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            executor.execute(batch)
            times.append(time.perf_counter() - t0)
        for r in batch.requests:
            executor.release(r.request_id)
        points.append(ProfilePoint(batch.shape, statistics.median(times), sb.label))
        if progress is not None:
            progress()
    return points


def fit_profile(points: list[ProfilePoint], device: str = "cpu", **meta) -> PerfModel:
    """The profile of timed batches (see `fit_device_profile`)."""
    return fit_device_profile([p.shape for p in points], [p.seconds for p in points], device, **meta)


@dataclass
class ProfileJob:
    """What one profiling process loads and times; plain data, so it crosses process boundaries."""

    model: str = "default"
    dtype: str = "auto"
    device: str = "cpu"
    threads: int = 1
    num_blocks: int = 4096
    block_size: int = 16
    repeats: int = 3
    quick: bool = False

    def run(self, shuffle_seed: int | None = None, start: Any = None, progress=None) -> tuple[list, Any]:
        """Load the model, wait at `start` (a barrier) if given, time the spread; (points, config)."""
        import torch

        from ascendra.engine.factory import torch_dtype
        from ascendra.engine.torch_executor import TorchExecutor
        from ascendra.model.loader import load_model

        torch.set_num_threads(self.threads)
        dtype = torch_dtype(self.dtype, self.device)
        loaded = load_model(self.model, dtype=dtype, device=self.device)
        cfg = loaded.config
        executor = TorchExecutor(loaded.model, self.num_blocks, self.block_size, self.device, dtype)
        max_len = min(cfg.max_position_embeddings, self.num_blocks * self.block_size)
        spread = batch_spread(
            max_len, quick=self.quick, max_tokens=self.num_blocks * self.block_size, device=self.device
        )
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(spread)
        if progress is not None:
            progress.total = len(spread)
        if start is not None:
            start.wait()
        points = time_batches(
            executor,
            spread,
            vocab_size=cfg.vocab_size,
            block_size=self.block_size,
            repeats=self.repeats,
            progress=progress.update if progress is not None else None,
        )
        return points, cfg


def _neighbour(job: ProfileJob, index: int, start: Any, results: Any) -> None:
    try:
        results.put((index, job.run(shuffle_seed=index, start=start)[0], None))
    except BaseException as e:  # the parent must not wait forever on a neighbour that failed
        start.abort()
        results.put((index, [], f"{type(e).__name__}: {e}"))


def run_profile_job(job: ProfileJob, instances: int = 1, progress=None) -> tuple[list[ProfilePoint], Any]:
    """Time the spread in `instances` processes at once (this one and `instances - 1` spawned
    neighbours) and return all their points with the model config."""
    if instances == 1:
        return job.run(progress=progress)
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(instances), ctx.Queue()
    procs = [ctx.Process(target=_neighbour, args=(job, i, start, results)) for i in range(1, instances)]
    for proc in procs:
        proc.start()
    try:
        points, cfg = job.run(start=start, progress=progress)
        for _ in procs:
            index, more, err = results.get()
            if err is not None:
                raise RuntimeError(f"profiling neighbour {index} failed: {err}")
            points = points + more
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    return points, cfg
