"""Does a system keep up with the load it was offered? The share of the offered work it serves.

A finite run above the saturation rate can show high SLO attainment while its backlog builds, so a
capacity search also asks whether the system keeps up. The question is whether the backlog grows,
not whether output kept pace with arrivals in some window: bursty arrivals (gamma, CV 3; a
replayed trace) make any window's own offered load swing far from the run's mean, and a gate that
compares a window's output with the run's mean rate fails stable systems at random (measured: the
old middle-half gate put 1 seed in 3 at 0.94 at 5 req/s, a fifth of the saturation rate).

The backlog is counted in output tokens (those offered by the requests that have arrived, minus
those produced): a policy that starves long prompts under overload is not credited for finishing
more short ones, since a starved request keeps all its tokens in the backlog. Its trend is the
least-squares slope over the arrival window, after a warm-up while the backlog first fills: a
stable system's backlog fluctuates around a level, however bursty, and an overloaded one's grows
at the offered rate minus the served rate. So

    served share = 1 - backlog slope / offered token rate

is about 1 while the system keeps up (a little above or below by noise) and the served fraction of
the offered load past saturation. Nothing after the last arrival is looked at: the drain's length
depends on the last requests' lengths, not on whether the system kept up.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ascendra.core.request import Request, RequestStatus

WARMUP = 0.2  # share of the arrival window skipped while the backlog first fills
GRID = 400  # backlog samples across the rest of the window


def _load(requests: Sequence[Request]) -> list[Request]:
    """The requests that are part of the load: not those refused at the door (failed, no token)."""
    return [r for r in requests if r.token_times or r.status is not RequestStatus.FINISHED_FAILED]


def backlog(requests: Sequence[Request], times: np.ndarray) -> np.ndarray:
    """Output tokens offered by the requests arrived by each time, minus those produced by then."""
    served = _load(requests)
    arrivals = np.array([r.arrival_time for r in served])
    order = np.argsort(arrivals, kind="stable")
    offered = np.cumsum(np.array([r.max_tokens for r in served], dtype=np.float64)[order])
    tokens = np.sort(np.fromiter((t for r in served for t in r.token_times), np.float64))
    n_arrived = np.searchsorted(arrivals[order], times, side="right")
    offered_by = np.where(n_arrived > 0, offered[np.maximum(n_arrived - 1, 0)], 0.0)
    return offered_by - np.searchsorted(tokens, times, side="right")


def served_share(requests: Sequence[Request]) -> float:
    """1 - (growth rate of the output-token backlog over the arrival window) / (offered token rate);
    see the module doc. About 1 while the system keeps up, the served fraction once it does not."""
    if len(requests) < 8:
        raise ValueError("need at least 8 requests to judge whether a system keeps up")
    requests = _load(requests)
    arrivals = np.array([r.arrival_time for r in requests])
    t0, t1 = float(arrivals.min()), float(arrivals.max())
    if t1 <= t0:
        return 1.0  # one batch at one instant: nothing arrives later to fall behind on
    grid = np.linspace(t0 + WARMUP * (t1 - t0), t1, GRID)
    slope = np.polyfit(grid, backlog(requests, grid), 1)[0]
    offered_rate = sum(r.max_tokens for r in requests) / (t1 - t0)
    return float(1.0 - slope / offered_rate)
