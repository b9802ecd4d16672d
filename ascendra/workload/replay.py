"""Replay a timestamped trace as users sent it: a window of consecutive rows, sped up uniformly.

A replay keeps what a fitted distribution loses: the trace's burstiness at every time scale (its
rate drifts over the hour) and the real pairing of each prompt with its output. The load is set by
a speed-up factor applied to the whole trace's timing (2.0 replays it twice as fast), so a window
that was busy in the trace is busy in the replay; `rate` below is the speed-up times the whole
trace's mean rate.

A seed picks the window: seed k replays rows [k * n, (k + 1) * n), wrapping over the trace, so the
first len(trace) // n seeds are disjoint stretches of it and different seeds are different periods
of real traffic, not redraws of one.
"""

from __future__ import annotations

from ascendra.workload.item import WorkItem
from ascendra.workload.traces import Trace


def mean_rate(trace: Trace) -> float:
    """The whole trace's mean arrival rate, requests/s."""
    t = trace.arrival_times
    if t is None or len(t) < 2 or t[-1] <= t[0]:
        raise ValueError(f"{trace.path}: a replay needs a timestamped trace spanning some time")
    return (len(t) - 1) / float(t[-1] - t[0])


def window(trace: Trace, num_requests: int, seed: int) -> slice:
    """The rows seed `seed` replays (see the module doc)."""
    n = len(trace)
    if not 1 <= num_requests <= n:
        raise ValueError(f"{trace.path} has {n} rows; a window of {num_requests} requests does not fit")
    if seed < 0:
        raise ValueError(f"a trace window's seed must be >= 0, got {seed}")
    start = (seed * num_requests) % (n - num_requests + 1)
    return slice(start, start + num_requests)


def replay(trace: Trace, *, num_requests: int, seed: int, rate: float) -> list[WorkItem]:
    """Window `seed` of the trace, its arrivals from 0 and sped up by rate / mean_rate(trace)."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rows = window(trace, num_requests, seed)
    t = trace.arrival_times[rows]
    times = (t - t[0]) * (mean_rate(trace) / rate)
    rows_ = zip(times, trace.prompt_lens[rows], trace.output_lens[rows], strict=True)
    return [WorkItem(float(a), int(p), int(o)) for a, p, o in rows_]
