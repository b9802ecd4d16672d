"""Open-loop load generation: every request is sent at its scheduled arrival time, whatever is in flight.

A closed loop (send the next request when one finishes) lets a slow server slow the offered load down
and hides queueing; an open loop keeps the offered rate fixed, so overload shows up as TTFT growth,
as it does for real users. `max_concurrency` optionally caps in-flight requests (a client-side queue
whose wait counts in TTFT, since TTFT is measured from the scheduled arrival).

The run is bounded: each request by `ClientOptions.timeout`, the whole run by `max_duration` seconds
after the last scheduled arrival (requests still streaming then are cut off and count as failures).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from ascendra.bench.client import BenchRequest, ClientOptions, RequestResult, send_request
from ascendra.bench.prompts import PromptBuilder
from ascendra.workload import WorkItem

_START_LEAD = 0.05  # seconds between creating the tasks and the first arrival


@dataclass(frozen=True, slots=True)
class RunOptions:
    max_concurrency: int | None = None
    max_duration: float | None = None  # seconds after the last arrival before in-flight requests are cut
    progress: bool = True


def build_requests(
    items: Sequence[WorkItem], prompts: PromptBuilder, seed: int, chat: bool
) -> list[BenchRequest]:
    """Requests with deterministic prompts of each item's prompt length (chat: less the template's tokens)."""
    make = prompts.chat_content if chat else prompts.prompt
    return [BenchRequest(i, it.arrival_time, make(i, it.prompt_len, seed), it.prompt_len, it.output_len)
            for i, it in enumerate(items)]


async def run_requests(
    requests: Sequence[BenchRequest], opts: ClientOptions, run: RunOptions,
    on_done: Callable[[RequestResult], None] | None = None,
) -> tuple[list[RequestResult], float]:
    """Send every request open-loop; returns the results (in request order) and the wall time in seconds."""
    results = [RequestResult(r.index, r.arrival_time, r.prompt_len, r.output_len) for r in requests]
    sem = asyncio.Semaphore(run.max_concurrency) if run.max_concurrency else None
    n = len(requests)
    limits = httpx.Limits(max_connections=run.max_concurrency or max(n, 1),
                          max_keepalive_connections=run.max_concurrency or max(n, 1))
    timeout = httpx.Timeout(opts.timeout, connect=min(30.0, opts.timeout))
    t0 = time.perf_counter() + _START_LEAD

    async def one(req: BenchRequest, res: RequestResult) -> None:
        delay = t0 + req.arrival_time - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if sem is None:
            await send_request(client, opts, req, res, t0)
        else:
            async with sem:
                await send_request(client, opts, req, res, t0)
        if on_done is not None:
            on_done(res)

    async with httpx.AsyncClient(base_url=opts.base_url.rstrip("/"), limits=limits, timeout=timeout,
                                 trust_env=False) as client:
        tasks = [asyncio.create_task(one(q, r)) for q, r in zip(requests, results, strict=True)]
        last = max((r.arrival_time for r in requests), default=0.0)
        budget = None if run.max_duration is None else _START_LEAD + last + run.max_duration
        done, pending = await asyncio.wait(tasks, timeout=budget) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            if t.exception() is not None:  # a bug in our own code: surface it, do not count it as a result
                raise t.exception()  # type: ignore[misc]
    for res in results:
        if not res.ok and res.error is None:
            res.error = (f"cut off: still running {run.max_duration:g} s after the last arrival"
                         if res.send_time is not None else "cut off before it was sent")
    return results, time.perf_counter() - t0


def run_bench(
    requests: Sequence[BenchRequest], opts: ClientOptions, run: RunOptions
) -> tuple[list[RequestResult], float]:
    """Blocking wrapper around `run_requests` with an optional tqdm progress bar on stderr."""
    bar = None
    if run.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc="requests", unit="req", leave=False, dynamic_ncols=True)

    def done(res: RequestResult) -> None:
        if bar is not None:
            bar.update(1)
            if not res.ok:
                bar.set_postfix_str(f"last error: {(res.error or '')[:40]}")

    try:
        return asyncio.run(run_requests(requests, opts, run, on_done=done))
    finally:
        if bar is not None:
            bar.close()
