"""Fitting a PerfModel to measured iterations: least squares on relative error with non-negative
segment slopes (so the token cost never falls as the batch grows), and its MAPE on held-out points."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from ascendra.core.batch import BatchShape
from ascendra.core.perf_model import PerfModel, feature_names

KNEE_GRID = (0, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
# Knees for a CPU profile: every row-count regime of the BLAS, then the per-token steady state.
CPU_KNEES = (2, 3, 4, 8, 16, 32, 64, 128, 256, 512)


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return float(np.mean(np.abs(p - m) / m)) if len(m) else float("nan")


def fit_perf_model(
    shapes: Sequence[BatchShape],
    seconds: Sequence[float],
    *,
    heldout: float = 0.2,
    seed: int = 0,
    knees: Sequence[int] | None = None,
    knee_grid: Sequence[int] = KNEE_GRID,
    **meta,
) -> PerfModel:
    """Least squares on relative error (every point weighs by 1/measured, so short iterations
    count as much as long ones) with non-negative coefficients and segment slopes. With `knees`
    the token cost bends at each of them; without, at one knee chosen from `knee_grid`. A random
    `heldout` share of the points is kept out of the fit and reported."""
    y = np.asarray(seconds, dtype=float)
    n_coef = len(feature_names(knees or [0]))
    if len(y) < n_coef + 2:
        raise ValueError(f"need at least {n_coef + 2} measured iterations, got {len(y)}")
    if np.any(y <= 0):
        raise ValueError("measured iteration times must be positive")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    n_hold = int(round(len(y) * heldout)) if heldout > 0 else 0
    test, train = idx[:n_hold], idx[n_hold:]
    candidates = [list(knees)] if knees is not None else [[k] for k in knee_grid]
    best = None
    for ks in candidates:
        x = np.array([_segment_features(s, ks) for s in shapes], dtype=float)
        sol = _nnls_relative(x[train], y[train])
        err = mape(x[train] @ sol, y[train])
        if best is None or err < best[0]:
            best = (err, ks, sol, x)
    err, ks, sol, x = best
    hold = mape(x[test] @ sol, y[test]) if n_hold else None
    slopes = sol[1 : 2 + len(ks)]
    coef = [sol[0], slopes[0], *np.diff(slopes), *sol[-3:]]  # slopes -> increments at the knees
    return PerfModel(coef=[float(c) for c in coef], knees=ks, fit_mape=err, heldout_mape=hold, **meta)


def fit_device_profile(shapes: Sequence[BatchShape], seconds: Sequence[float], device: str = "cpu",
                       **meta) -> PerfModel:
    """A CPU's BLAS changes kernels with the row count, so its token cost bends at several knees;
    a GPU's bends once, where the layers turn compute-bound. The fitted model's scatter around the
    measured points (model error and timing noise together) becomes its `spread`, which the
    simulator draws iteration noise from. For timed batches (`ascendra profile`) and for a vLLM
    engine's recorded steps alike."""
    knees = CPU_KNEES if device == "cpu" else None
    pm = fit_perf_model(shapes, seconds, heldout=0.2, seed=0, knees=knees, **meta)
    pm.spread = statistics.pstdev(math.log(t / pm.predict(s)) for s, t in zip(shapes, seconds, strict=True))
    return pm


def _segment_features(shape: BatchShape, knees: Sequence[int]) -> list[float]:
    """The batch's features with the token count split at the knees, so each column's coefficient
    is one segment's slope (the fit keeps slopes, hence g, non-negative)."""
    t = shape.num_tokens
    edges = [0, *knees, math.inf]
    tokens = [max(0.0, min(t, hi) - lo) for lo, hi in zip(edges, edges[1:], strict=False)]
    return [1.0, *tokens, shape.prefill_attn_work, shape.decode_context, shape.num_seqs]


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative residuals by a small active-set loop: drop the most
    negative coefficient and refit until none is negative (6 features: at most 6 rounds)."""
    w = 1.0 / y
    xw, yw = x * w[:, None], y * w
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(xw[:, active], yw, rcond=None)
        if np.all(sol >= 0):
            coef[:] = 0
            coef[active] = sol
            return coef
        active.pop(int(np.argmin(sol)))
    return coef


