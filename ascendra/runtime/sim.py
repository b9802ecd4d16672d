"""The discrete-event simulator: the real schedulers and router on a virtual clock.

Two kinds of event: a request arrives, or an instance's iteration ends. Arrivals come pre-sorted,
iteration ends from a heap; whichever is earlier happens next. An iteration's duration is the
performance model's prediction for the batch the real scheduler chose (`SimExecutor`), scattered
as measured (the profile's spread, or a live run's `IterationNoise`), and its tokens are
placeholders: a simulated request ends when it reaches its trace output length.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ascendra.cluster.system import SystemConfig, build_cluster
from ascendra.core.batch import ScheduledBatch
from ascendra.core.iteration_stats import IterationNoise
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request, RequestStatus


class SimExecutor:
    """Runs nothing: returns how long the iteration would take.

    With `noise` (or, without it, where the profile has a `spread`) the prediction is scattered
    as live iterations are, seeded. A request meets its TBT SLO only if (nearly) every gap does,
    so one slow iteration can fail it: a simulator whose iterations all take exactly their
    prediction overstates TBT attainment."""

    def __init__(
        self, perf_model: PerfModel, seed: int | str = 0, noise: IterationNoise | None = None
    ) -> None:
        self.perf_model = perf_model
        pm = perf_model
        self.noise = noise or IterationNoise.around_prediction(pm.spread, pm.spread_correlation)
        self._rng = random.Random(seed)
        self._z = 0.0  # the AR(1) state: a standard normal

    def execute(self, batch: ScheduledBatch) -> float:
        seconds = self.perf_model.predict(batch.shape)
        if self.noise is None:
            return seconds
        mean, sd = self.noise.band(seconds)
        rho = self.noise.correlation
        self._z = rho * self._z + math.sqrt(1.0 - rho * rho) * self._rng.gauss(0.0, 1.0)
        return seconds * math.exp(mean + sd * self._z)


@dataclass
class SimResult:
    requests: list[Request]
    sim_seconds: float  # virtual time from the first arrival to the last token
    wall_seconds: float
    num_iterations: int
    num_offloads: int
    num_preemptions: int
    instance_of: list[int]  # where each request finished (after any offload)


def reject_reason(request: Request, perf_model: PerfModel) -> str | None:
    """Requests no instance could ever hold are failed at the door, as vLLM rejects them."""
    total = request.prompt_len + request.max_tokens
    if total > perf_model.max_model_len:
        return (
            f"prompt ({request.prompt_len}) + max_tokens ({request.max_tokens}) exceeds the context "
            f"of {perf_model.max_model_len} tokens"
        )
    if -(-total // perf_model.block_size) > perf_model.num_kv_blocks:
        return f"request needs more KV blocks than an instance has ({perf_model.num_kv_blocks})"
    return None


def simulate(
    config: SystemConfig,
    perf_model: PerfModel,
    requests: list[Request],
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
    noise: IterationNoise | None = None,
) -> SimResult:
    """Serve `requests` (fresh ones: this mutates them) on the system and return them finished.
    `progress(n)` is called with the number of requests finished since the last call. Iterations
    scatter by `noise` (default: the profile's spread, if any), seeded by `seed`, one stream per
    instance."""
    wall0 = time.perf_counter()
    schedulers, router = build_cluster(config, perf_model)
    executors = [SimExecutor(perf_model, f"{seed}:{i}", noise) for i in range(len(schedulers))]
    offloading = router.config.offload
    n_inst = len(schedulers)
    batches: list[ScheduledBatch | None] = [None] * n_inst
    instance_of = {}
    heap: list[tuple[float, int]] = []
    arrivals = sorted(requests, key=lambda r: r.arrival_time)
    num_iterations = 0

    def start(i: int, now: float) -> None:
        nonlocal num_iterations
        batch = schedulers[i].schedule(now)
        if batch.requests:
            batches[i] = batch
            num_iterations += 1
            heapq.heappush(heap, (now + executors[i].execute(batch), i))
        else:
            batches[i] = None

    a, n = 0, len(arrivals)
    while a < n or heap:
        next_arrival = arrivals[a].arrival_time if a < n else math.inf
        if heap and heap[0][0] <= next_arrival:
            now, i = heapq.heappop(heap)
            finished = schedulers[i].update(batches[i], None, now)
            for r in finished:
                instance_of[id(r)] = i
            if progress is not None and finished:
                progress(len(finished))
            if offloading:
                for _, h in router.check_offloads(i, now):
                    if batches[h] is None:
                        start(h, now)
            start(i, now)
        else:
            req = arrivals[a]
            a += 1
            reason = reject_reason(req, perf_model)
            if reason is not None:
                req.status, req.finish_reason, req.error = RequestStatus.FINISHED_FAILED, "failed", reason
                continue
            i = router.dispatch(req, req.arrival_time)
            if batches[i] is None:
                start(i, req.arrival_time)

    for sched in schedulers:  # nothing should be left; if something is, say so rather than drop it
        for r in [*sched.waiting, *sched.running]:
            sched.finish(r, RequestStatus.FINISHED_FAILED, "simulation ended with the request unserved")
    last = max((r.token_times[-1] for r in requests if r.token_times), default=0.0)
    first = arrivals[0].arrival_time if arrivals else 0.0
    return SimResult(
        requests=requests,
        sim_seconds=last - first,
        wall_seconds=time.perf_counter() - wall0,
        num_iterations=num_iterations,
        num_offloads=router.num_offloads,
        num_preemptions=sum(s.num_preemptions for s in schedulers),
        instance_of=[instance_of.get(id(r), -1) for r in requests],
    )
