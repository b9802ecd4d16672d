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
for decodes. Prediction only: fitting, and the profiles on disk, live in `ascendra.profiles`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from ascendra.core.batch import BatchShape


def feature_names(knees: Sequence[int]) -> list[str]:
    return [
        "intercept",
        "num_tokens",
        *(f"tokens_over_{k}" for k in knees),
        "prefill_attn_work",
        "decode_context",
        "num_seqs",
    ]


@dataclass
class PerfModel:
    """`coef` is [c0, c_tok, c_j for each knee, c_pattn, c_dctx, c_seq] (see the module doc)."""

    coef: list[float]
    knees: list[int] = field(default_factory=list)
    name: str = "unnamed"
    hardware: str = ""
    model: str = ""
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

    def token_slope(self, num_tokens: int) -> float:
        """g'(T): what one more token costs in an iteration of `num_tokens` tokens."""
        return self._s[bisect_left(self.knees, num_tokens)]

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

    @property
    def attention_cost(self) -> float:
        """Seconds per causal query-key pair of a prompt chunk."""
        return self._cp

    def prefill_time(self, num_tokens: int) -> float:
        """A prompt of `num_tokens` prefilled alone, in one iteration."""
        return self.predict_parts(num_tokens, 1, num_tokens * (num_tokens + 1) // 2, 0)

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


def _root(a: float, b: float, c: float) -> float:
    """Largest x with a x^2 + b x + c <= 0 (a, b >= 0, c <= 0 where it matters)."""
    if c > 0:
        return 0.0
    if a <= 0:
        return -c / b if b > 0 else float(1 << 30)
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def isolated_decode_time(model: PerfModel, context: int = 1024) -> float:
    """One decode of one sequence at `context` tokens: the unit Sarathi-Serve scales TBT SLOs by."""
    return model.predict(BatchShape.of(decodes=[context - 1]))


def isolated_prefill_time(model: PerfModel, prompt_len: int) -> float:
    return model.prefill_time(prompt_len)
