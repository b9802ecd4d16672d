"""The discrete-event simulator: the real schedulers and router on a virtual clock.

Two kinds of event: a request arrives, or an instance's iteration ends. Arrivals come pre-sorted,
iteration ends from a heap; whichever is earlier happens next. An iteration's duration is the
performance model's prediction for the batch the real scheduler chose (`SimExecutor`), scattered
as measured (the profile's spread, or a live run's `IterationNoise`), and its tokens are
placeholders: a simulated request ends when it reaches its trace output length.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ascendra.cluster.system import SystemConfig, build_cluster
from ascendra.core.batch import ScheduledBatch
from ascendra.core.config import KVCapacity
from ascendra.core.iteration_stats import IterationNoise
from ascendra.core.perf_model import PerfModel
from ascendra.core.request import Request, RequestStatus
from ascendra.engine.executor import ExecuteOutput
from ascendra.engine.instance import Migrated
from ascendra.engine.sim_executor import SimExecutor


@dataclass
class SimResult:
    requests: list[Request]
    sim_seconds: float  # virtual time from the first arrival to the last token
    wall_seconds: float
    num_iterations: int
    num_offloads: int
    num_preemptions: int
    num_role_changes: int
    num_migrations: int
    instance_of: list[int]  # where each request finished (after any offload)


def simulate(
    config: SystemConfig,
    perf_model: PerfModel,
    requests: list[Request],
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
    noise: IterationNoise | None = None,
    *,
    capacity: KVCapacity,
) -> SimResult:
    """Serve `requests` (fresh ones: this mutates them) on the system, each instance holding
    `capacity`, and return them finished.
    `progress(n)` is called with the number of requests finished since the last call. Iterations
    scatter by `noise` (default: the profile's spread, if any), seeded by `seed`, one stream per
    instance."""
    wall0 = time.perf_counter()
    instances, router = build_cluster(
        config, perf_model, capacity, lambda i: SimExecutor(perf_model, f"{seed}:{i}", noise)
    )
    offloading = router.config.offload
    # The iteration each instance runs, and its executor's output (None while it idles).
    batches: list[ScheduledBatch | None] = [None] * len(instances)
    outputs: list[ExecuteOutput | None] = [None] * len(instances)
    instance_of = {}
    heap: list[tuple[float, int]] = []
    arrivals = sorted(requests, key=lambda r: r.arrival_time)
    num_iterations = 0

    def start(i: int, now: float) -> None:
        nonlocal num_iterations
        inst = instances[i]
        batch = batches[i] = inst.start_iteration(now)
        if batch is None:
            return
        out = outputs[i] = inst.executor.execute(batch)
        num_iterations += 1
        heapq.heappush(heap, (now + out.duration, i))

    # Migrations in flight: (landing time, order, target, the request with what it carries).
    landings: list[tuple[float, int, int, Migrated]] = []
    migrating = router.config.migration is not None
    order = itertools.count()

    def migrate(now: float) -> None:
        for mv in router.take_migrations():
            moved = instances[mv.source].migrate_out(mv.request.request_id)
            if moved is not None:
                heapq.heappush(landings, (now + mv.seconds, next(order), mv.target, moved))

    a, n = 0, len(arrivals)
    while a < n or heap or landings:
        next_arrival = arrivals[a].arrival_time if a < n else math.inf
        if landings and landings[0][0] <= min(next_arrival, heap[0][0] if heap else math.inf):
            now, _, j, moved = heapq.heappop(landings)
            instances[j].migrate_in(moved)
            if batches[j] is None:
                start(j, now)
        elif heap and heap[0][0] <= next_arrival:
            now, i = heapq.heappop(heap)
            finished = instances[i].complete_iteration(batches[i], outputs[i], now)[0]
            for r in finished:
                instance_of[id(r)] = i
            if progress is not None and finished:
                progress(len(finished))
            if offloading:
                for _, h in router.offload(i, now):
                    if batches[h] is None:
                        start(h, now)
                if migrating:
                    migrate(now)
            start(i, now)
        else:
            req = arrivals[a]
            a += 1
            rejected = capacity.admission_error(req.prompt_len, req.max_tokens)
            if rejected is not None:
                req.status, req.error = RequestStatus.FINISHED_FAILED, rejected.message
                req.finish_reason = req.status.value
                continue
            i = router.dispatch(req, req.arrival_time)
            if batches[i] is None:
                start(i, req.arrival_time)

    for inst in instances:  # nothing should be left; if something is, say so rather than drop it
        for rid in list(inst.requests):
            inst.abort_request(rid, RequestStatus.FINISHED_FAILED, "the simulation ended with it unserved")
    last = max((r.token_times[-1] for r in requests if r.token_times), default=0.0)
    first = arrivals[0].arrival_time if arrivals else 0.0
    return SimResult(
        requests=requests,
        sim_seconds=last - first,
        wall_seconds=time.perf_counter() - wall0,
        num_iterations=num_iterations,
        num_offloads=router.num_offloads,
        num_preemptions=sum(inst.scheduler.num_preemptions for inst in instances),
        num_role_changes=router.adaptive.num_changes if router.adaptive is not None else 0,
        num_migrations=router.num_migrations,
        instance_of=[instance_of.get(id(r), -1) for r in requests],
    )
