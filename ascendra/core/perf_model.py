"""Predicts one iteration's duration from the batch's composition.

A linear model over a few physical features (DistServe's simulator and Sarathi-Serve's deadline
scheduler use the same shape):

    t = c0 + c_tok * T + c_knee * max(0, T - knee) + c_pattn * prefill_attn_work
          + c_dctx * decode_context + c_seq * num_seqs

T is the batch's token count: the linear layers cost ~c_tok per token, and on a GPU they are
memory-bound (flat) until T passes a knee, which the hinge term captures. The two attention terms
are FLOPs for prompt chunks and KV bytes for decodes. `fit` picks the knee from a grid and solves
least squares with non-negative coefficients.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ascendra.core.batch import BatchShape

FEATURES = ("intercept", "num_tokens", "tokens_over_knee", "prefill_attn_work", "decode_context", "num_seqs")
KNEE_GRID = (0, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def features(shape: BatchShape, knee: int) -> list[float]:
    t = shape.num_tokens
    return [1.0, t, max(0, t - knee), shape.prefill_attn_work, shape.decode_context, shape.num_seqs]


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    return float(np.mean(np.abs(p - m) / m)) if len(m) else float("nan")


@dataclass
class PerfModel:
    coef: list[float]
    knee: int = 0
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
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.coef) != len(FEATURES):
            raise ValueError(f"PerfModel needs {len(FEATURES)} coefficients {FEATURES}, got {len(self.coef)}")
        self._c = tuple(float(c) for c in self.coef)

    def predict(self, shape: BatchShape) -> float:
        c0, ct, ck, cp, cd, cs = self._c
        t = shape.num_tokens
        over = t - self.knee
        return (
            c0
            + ct * t
            + (ck * over if over > 0 else 0.0)
            + cp * shape.prefill_attn_work
            + cd * shape.decode_context
            + cs * shape.num_seqs
        )

    def predict_parts(
        self, num_tokens: int, num_seqs: int, prefill_attn_work: float, decode_context: float
    ) -> float:
        """`predict` without building a BatchShape, for projections in hot loops."""
        c0, ct, ck, cp, cd, cs = self._c
        over = num_tokens - self.knee
        return (
            c0
            + ct * num_tokens
            + (ck * over if over > 0 else 0.0)
            + cp * prefill_attn_work
            + cd * decode_context
            + cs * num_seqs
        )

    def max_prefill_tokens(
        self, base: BatchShape, time_limit: float, context: int = 0, cap: int = 1 << 16
    ) -> int:
        """Largest prompt chunk, at most `cap`, after `context` cached tokens, that keeps the
        iteration within `time_limit` when added to a batch of shape `base`; 0 if none does."""
        c0, ct, ck, cp, cd, cs = self._c
        t0, w0 = base.num_tokens, base.prefill_attn_work
        fixed = c0 + cd * base.decode_context + cs * (base.num_seqs + 1)

        def cost(n: int) -> float:
            t = t0 + n
            over = t - self.knee
            return (
                fixed + ct * t + (ck * over if over > 0 else 0.0) + cp * (w0 + n * context + n * (n + 1) // 2)
            )

        if cap <= 0 or cost(1) > time_limit:
            return 0
        if cost(cap) <= time_limit:
            return cap  # the common case when the whole remaining prompt fits: one evaluation
        # cost(n) is quadratic in n on each side of the knee: solve a n^2 + b n + c = limit on the
        # first piece and, past the knee, on the second; then settle rounding by evaluation.
        a = cp / 2
        b = ct + cp * (context + 0.5)
        c = fixed + ct * t0 + cp * w0 + (ck * (t0 - self.knee) if t0 > self.knee else 0.0)
        if t0 < self.knee:
            n = _root(a, b, c - time_limit)
            if n > self.knee - t0:  # past the knee: the hinge adds ck per token beyond it
                n = _root(a, b + ck, c - ck * (self.knee - t0) - time_limit)
        else:
            n = _root(a, b + ck, c - time_limit)
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
        knee_grid: Sequence[int] = KNEE_GRID,
        **meta,
    ) -> PerfModel:
        """Least squares on relative error (every point weighs by 1/measured, so short iterations
        count as much as long ones), non-negative coefficients, knee chosen from `knee_grid`.
        A random `heldout` share of the points is kept out of the fit and reported."""
        y = np.asarray(seconds, dtype=float)
        if len(y) < len(FEATURES) + 2:
            raise ValueError(f"need at least {len(FEATURES) + 2} measured iterations, got {len(y)}")
        if np.any(y <= 0):
            raise ValueError("measured iteration times must be positive")
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(y))
        n_hold = int(round(len(y) * heldout)) if heldout > 0 else 0
        test, train = idx[:n_hold], idx[n_hold:]
        best = None
        for knee in knee_grid:
            x = np.array([features(s, knee) for s in shapes], dtype=float)
            coef = _nnls_relative(x[train], y[train])
            err = mape(x[train] @ coef, y[train])
            if best is None or err < best[0]:
                best = (err, knee, coef, x)
        err, knee, coef, x = best
        hold = mape(x[test] @ coef, y[test]) if n_hold else None
        return cls(coef=[float(c) for c in coef], knee=int(knee), fit_mape=err, heldout_mape=hold, **meta)

    # ---- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(FEATURES)
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> PerfModel:
        d = dict(d)
        names = d.pop("features", list(FEATURES))
        if list(names) != list(FEATURES):
            raise ValueError(f"profile features {names} do not match this version's {list(FEATURES)}")
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
    return model.predict(BatchShape.of([(context - 1, 1)]))


def isolated_prefill_time(model: PerfModel, prompt_len: int) -> float:
    return model.predict(BatchShape.of([(0, prompt_len)]))
