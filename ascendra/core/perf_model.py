"""Predicts one iteration's duration from the batch's composition.

A linear model over a few physical features (DistServe's simulator and Sarathi-Serve's deadline
scheduler use the same shape):

    t = c0 + g(T) + c_pattn * prefill_attn_work + c_dctx * decode_context + c_seq * num_seqs
    g(T) = c_tok * T + sum_j c_j * max(0, T - knee_j)

T is the batch's token count and g the cost of the linear layers: piecewise linear in T, never
falling as T grows. On a GPU the layers are memory-bound (flat) until T passes one knee, then
compute-bound (steep). On a CPU the BLAS picks different kernels by row count: here one or two rows
cost the same, four cost 1.7x as much, and large batches settle to a steady per-token cost, so a
CPU profile uses several knees. The two attention terms are FLOPs for prompt chunks and KV bytes
for decodes. `fit` solves least squares on relative error with non-negative segment slopes.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ascendra.core.batch import BatchShape

KNEE_GRID = (0, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
# Knees for a CPU profile: every row-count regime of the BLAS, then the per-token steady state.
CPU_KNEES = (2, 3, 4, 8, 16, 32, 64, 128, 256, 512)


def feature_names(knees: Sequence[int]) -> list[str]:
    return [
        "intercept",
        "num_tokens",
        *(f"tokens_over_{k}" for k in knees),
        "prefill_attn_work",
        "decode_context",
        "num_seqs",
    ]


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return float(np.mean(np.abs(p - m) / m)) if len(m) else float("nan")


@dataclass
class PerfModel:
    """`coef` is [c0, c_tok, c_j for each knee, c_pattn, c_dctx, c_seq] (see the module doc)."""

    coef: list[float]
    knees: list[int] = field(default_factory=list)
    name: str = "unnamed"
    hardware: str = ""
    model: str = ""
    # What the instance can hold: the simulator and router size their block managers from it.
    num_kv_blocks: int = 4096
    block_size: int = 16
    max_model_len: int = 4096
    # Reported where it was fitted: MAPE on the fitting points and on held-out ones.
    fit_mape: float | None = None
    heldout_mape: float | None = None
    # How single iterations scatter around the prediction: the standard deviation of
    # log(measured / predicted) and its lag-1 autocorrelation (slow iterations coming in runs).
    # The simulator draws each iteration's duration from them; 0 means exactly the prediction.
    spread: float = 0.0
    spread_correlation: float = 0.0
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.knees = [int(k) for k in self.knees]
        if self.knees != sorted(set(self.knees)) or any(k < 0 for k in self.knees):
            raise ValueError(f"knees must be distinct, ascending and non-negative, got {self.knees}")
        n = len(feature_names(self.knees))
        if len(self.coef) != n:
            raise ValueError(
                f"PerfModel with {len(self.knees)} knees needs {n} coefficients, got {len(self.coef)}"
            )
        c = [float(x) for x in self.coef]
        self._c0, (self._cp, self._cd, self._cs) = c[0], c[-3:]
        # g(T) on segment j (knees[j-1] < T <= knees[j]) is _g[j] + _s[j] * (T - _b[j]): one
        # bisect per prediction however many knees there are.
        self._b, self._g, self._s = [0], [0.0], [c[1]]
        for k, inc in zip(self.knees, c[2:-3], strict=True):
            self._g.append(self._g[-1] + self._s[-1] * (k - self._b[-1]))
            self._b.append(k)
            self._s.append(self._s[-1] + inc)
        if min(self._s) < -1e-12:
            raise ValueError("the token cost must not fall as the batch grows (a segment slope is negative)")

    def token_cost(self, num_tokens: int) -> float:
        """g(T): the linear layers' share of an iteration of `num_tokens` tokens."""
        j = bisect_left(self.knees, num_tokens)
        return self._g[j] + self._s[j] * (num_tokens - self._b[j])

    def predict(self, shape: BatchShape) -> float:
        s = shape
        return self.predict_parts(s.num_tokens, s.num_seqs, s.prefill_attn_work, s.decode_context)

    def predict_parts(
        self, num_tokens: int, num_seqs: int, prefill_attn_work: float, decode_context: float
    ) -> float:
        """`predict` without building a BatchShape, for projections in hot loops."""
        j = bisect_left(self.knees, num_tokens)
        return (
            self._c0
            + self._g[j]
            + self._s[j] * (num_tokens - self._b[j])
            + self._cp * prefill_attn_work
            + self._cd * decode_context
            + self._cs * num_seqs
        )

    def max_prefill_tokens(
        self, base: BatchShape, time_limit: float, context: int = 0, cap: int = 1 << 16
    ) -> int:
        """Largest prompt chunk, at most `cap`, after `context` cached tokens, that keeps the
        iteration within `time_limit` when added to a batch of shape `base`; 0 if none does."""
        cp = self._cp
        t0, w0 = base.num_tokens, base.prefill_attn_work
        fixed = self._c0 + self._cd * base.decode_context + self._cs * (base.num_seqs + 1) + cp * w0

        def cost(n: int) -> float:
            return fixed + self.token_cost(t0 + n) + cp * (n * context + n * (n + 1) // 2)

        if cap <= 0 or cost(1) > time_limit:
            return 0
        if cost(cap) <= time_limit:
            return cap  # the common case when the whole remaining prompt fits: one evaluation
        # cost(n) rises with n and is quadratic within each segment of g: find the segment where
        # it crosses the limit, solve a n^2 + b n + c = limit there, settle rounding by evaluation.
        j = bisect_left(self.knees, t0 + 1)
        while j < len(self.knees) and self.knees[j] - t0 < cap and cost(self.knees[j] - t0) <= time_limit:
            j += 1
        s = self._s[j]
        n = _root(cp / 2, s + cp * (context + 0.5), fixed + self._g[j] + s * (t0 - self._b[j]) - time_limit)
        n = max(1, min(cap - 1, int(n)))
        while n > 1 and cost(n) > time_limit:
            n -= 1
        while n + 1 < cap and cost(n + 1) <= time_limit:
            n += 1
        return n

    # ---- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
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
        count as much as long ones) with non-negative coefficients and segment slopes. With
        `knees` the token cost bends at each of them; without, at one knee chosen from
        `knee_grid`. A random `heldout` share of the points is kept out of the fit and reported."""
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
        return cls(coef=[float(c) for c in coef], knees=ks, fit_mape=err, heldout_mape=hold, **meta)

    # ---- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = feature_names(self.knees)
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> PerfModel:
        d = dict(d)
        names = d.pop("features", None)
        expected = feature_names(d.get("knees", []))
        if names is not None and list(names) != expected:
            raise ValueError(f"profile features {names} do not match this version's {expected}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> PerfModel:
        p = Path(path)
        if not p.exists():
            p = Path(__file__).resolve().parent.parent / "profiles" / f"{path}.json"
        if not p.exists():
            raise FileNotFoundError(
                f"no performance profile at {path!r} (nor a shipped one by that name; "
                f"shipped: {', '.join(shipped_profiles())})"
            )
        return cls.from_dict(json.loads(p.read_text()))


def _segment_features(shape: BatchShape, knees: Sequence[int]) -> list[float]:
    """The batch's features with the token count split at the knees, so each column's coefficient
    is one segment's slope (the fit keeps slopes, hence g, non-negative)."""
    t = shape.num_tokens
    edges = [0, *knees, math.inf]
    tokens = [max(0.0, min(t, hi) - lo) for lo, hi in zip(edges, edges[1:], strict=False)]
    return [1.0, *tokens, shape.prefill_attn_work, shape.decode_context, shape.num_seqs]


def _root(a: float, b: float, c: float) -> float:
    """Largest x with a x^2 + b x + c <= 0 (a, b >= 0, c <= 0 where it matters)."""
    if c > 0:
        return 0.0
    if a <= 0:
        return -c / b if b > 0 else float(1 << 30)
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def shipped_profiles() -> list[str]:
    folder = Path(__file__).resolve().parent.parent / "profiles"
    return sorted(p.stem for p in folder.glob("*.json"))


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


def isolated_decode_time(model: PerfModel, context: int = 1024) -> float:
    """One decode of one sequence at `context` tokens: the unit Sarathi-Serve scales TBT SLOs by."""
    return model.predict(BatchShape.of(decodes=[context - 1]))


def isolated_prefill_time(model: PerfModel, prompt_len: int) -> float:
    return model.predict(BatchShape.of([(0, prompt_len)]))
