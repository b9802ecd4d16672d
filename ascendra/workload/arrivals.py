"""Arrival processes: request arrival times at a mean rate, reproducible from a numpy Generator.

The first request arrives at time 0 and the mean gap is 1 / rate, so n arrivals span about
(n - 1) / rate seconds. Gaps are drawn at unit rate and then divided by the rate: the same
Generator state at two rates gives the same arrival pattern stretched in time (common random
numbers), which keeps attainment curves over rate smooth in capacity searches.
"""

from __future__ import annotations

import numpy as np

ARRIVAL_KINDS = ("poisson", "gamma")


def _times_from_gaps(gaps: np.ndarray) -> np.ndarray:
    times = np.empty(len(gaps))
    if len(gaps):
        times[0] = 0.0
        np.cumsum(gaps[:-1], out=times[1:])
    return times


def _check(n: int, rate: float) -> None:
    if n < 0:
        raise ValueError(f"number of arrivals must be >= 0, got {n}")
    if not rate > 0:
        raise ValueError(f"arrival rate must be positive, got {rate}")


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """n arrival times of a Poisson process (exponential gaps, CV 1) at `rate` requests/s."""
    _check(n, rate)
    return _times_from_gaps(rng.standard_exponential(n) / rate)


def gamma_arrivals(n: int, rate: float, cv: float, rng: np.random.Generator) -> np.ndarray:
    """n arrival times with gamma-distributed gaps: mean 1/rate, coefficient of variation `cv`.

    cv > 1 is burstier than Poisson, cv < 1 more regular; cv = 1 is exactly Poisson.
    """
    _check(n, rate)
    if not cv > 0:
        raise ValueError(f"arrival CV must be positive, got {cv}")
    shape = 1.0 / (cv * cv)  # gamma(k, theta): CV = 1/sqrt(k), mean = k * theta
    return _times_from_gaps(rng.standard_gamma(shape, n) / (shape * rate))


def make_arrivals(kind: str, n: int, rate: float, rng: np.random.Generator, cv: float = 1.0) -> np.ndarray:
    """Arrival times of the named process (`poisson` or `gamma`)."""
    if kind == "poisson":
        if cv != 1.0:
            raise ValueError(f"a Poisson process has CV 1; use arrival='gamma' for cv={cv}")
        return poisson_arrivals(n, rate, rng)
    if kind == "gamma":
        return gamma_arrivals(n, rate, cv, rng)
    raise ValueError(f"unknown arrival process {kind!r}; known: {', '.join(ARRIVAL_KINDS)}")
