"""How an instance's iterations really ran against the performance model's prediction.

Live, these figures tell how far the simulator's iteration times are from the machine's on the
day: the mean ratio (a slower host than at profiling time), the scatter of single iterations
around it, and whether slow iterations come in runs. Both depend on the iteration's length: on a
shared CPU, short decode iterations ran ~4% over the profile with a scatter of 0.09, while
half-second prompt chunks ran ~6% under it with a scatter of 0.05. So the moments of
log(measured / predicted) are kept per band of predicted duration, and an `IterationNoise` built
from them lets the simulator draw each iteration as the live machine ran one of its length.
Moments alone make that draw log-normal, whose tail is thin: on a loaded 2-core machine about 1% of
30 ms decode steps of vLLM engines took over 250 ms (8x; a log-normal of their scatter, 0.4, puts
that at 5 standard deviations), and a request fails its TBT SLO on one such gap. So each band also
keeps a histogram of log(measured / predicted), and the simulator draws from it.
Plain data: it crosses process boundaries in the worker's reports.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

# Upper edges (seconds of predicted duration) of the bands: doubling from 12.5 ms to 3.2 s.
BAND_EDGES = tuple(0.0125 * 2**k for k in range(9))
MIN_BAND_COUNT = 10  # fewer iterations than this in a band: it takes the moments of all of them
# Upper edges of the histogram's buckets of log(measured / predicted): 0.1 apart (about 10% in the
# ratio) from 0.37x to 20x; the last bucket takes everything slower.
LOG_RATIO_EDGES = tuple(round(-1.0 + 0.1 * k, 1) for k in range(41))


def band_label(index: int) -> str:
    return f"{BAND_EDGES[index]:g}" if index < len(BAND_EDGES) else "+Inf"


def bucket_label(index: int) -> str:
    return f"{LOG_RATIO_EDGES[index]:g}" if index < len(LOG_RATIO_EDGES) else "+Inf"


@dataclass(slots=True)
class Moments:
    """Moments of x, and its histogram over LOG_RATIO_EDGES: per bucket, how many and their sum (so
    a draw from a bucket is its own mean, and the histogram keeps the mean of x exactly). The
    histogram's lists stay empty until the first x."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    bucket_counts: list[int] = field(default_factory=list)
    bucket_sums: list[float] = field(default_factory=list)

    @classmethod
    def pooled(cls, parts: Iterable[Moments]) -> Moments:
        out = cls()
        for m in parts:
            out.n, out.total, out.squares = out.n + m.n, out.total + m.total, out.squares + m.squares
            if m.bucket_counts:
                out._buckets()
                for k, (c, t) in enumerate(zip(m.bucket_counts, m.bucket_sums, strict=True)):
                    out.bucket_counts[k] += c
                    out.bucket_sums[k] += t
        return out

    def _buckets(self) -> None:
        if not self.bucket_counts:
            self.bucket_counts = [0] * (len(LOG_RATIO_EDGES) + 1)
            self.bucket_sums = [0.0] * (len(LOG_RATIO_EDGES) + 1)

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.squares += x * x
        self._buckets()
        k = bisect_left(LOG_RATIO_EDGES, x)
        self.bucket_counts[k] += 1
        self.bucket_sums[k] += x

    def quantiles(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(cumulative share, mean x) of each non-empty bucket, in order: the histogram as a
        discrete distribution to draw from."""
        cum, xs, seen, total = [], [], 0, sum(self.bucket_counts)
        for c, t in zip(self.bucket_counts, self.bucket_sums, strict=True):
            if c:
                seen += c
                cum.append(seen / total)
                xs.append(t / c)
        return tuple(cum), tuple(xs)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def sd(self) -> float:
        if self.n < 2:
            return 0.0
        return math.sqrt(max(self.squares / self.n - self.mean**2, 0.0))


@dataclass(frozen=True)
class IterationNoise:
    """What the simulator multiplies a predicted duration t by: exp(x), x drawn for t's band from
    the live histogram where there is one (at the quantile of z), else mean + sd * z with the band's
    mean and sd; z a standard normal that follows an AR(1) process with `correlation`, so slow
    iterations come in runs as live."""

    mean: tuple[float, ...]  # per band (len(edges) + 1), or one value for every duration
    sd: tuple[float, ...]
    correlation: float = 0.0
    edges: tuple[float, ...] = ()
    histograms: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = ()  # per band: Moments.quantiles

    @classmethod
    def around_prediction(cls, spread: float, correlation: float = 0.0) -> IterationNoise | None:
        """A mean-1 scatter of `spread` (a profile's), the same for every duration; None if 0."""
        if spread <= 0:
            return None
        return cls((-0.5 * spread * spread,), (spread,), correlation)

    @classmethod
    def from_moments(cls, bands: list[Moments], correlation: float) -> IterationNoise:
        """Each band's mean and sd; a band with too few iterations takes those of all of them."""
        pooled = Moments.pooled(bands)
        used = [pooled if m.n < MIN_BAND_COUNT else m for m in bands]
        return cls(
            tuple(m.mean for m in used),
            tuple(m.sd for m in used),
            correlation,
            BAND_EDGES,
            tuple(m.quantiles() for m in used) if sum(pooled.bucket_counts) else (),
        )

    def _index(self, predicted: float) -> int:
        return bisect_left(self.edges, predicted) if self.edges else 0

    def band(self, predicted: float) -> tuple[float, float]:
        i = self._index(predicted)
        return self.mean[i], self.sd[i]

    def log_ratio(self, predicted: float, z: float) -> float:
        """x for an iteration predicted at `predicted` seconds, at the standard normal z."""
        i = self._index(predicted)
        if not self.histograms:
            return self.mean[i] + self.sd[i] * z
        cum, xs = self.histograms[i]
        u = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
        return xs[min(bisect_left(cum, u), len(xs) - 1)]


@dataclass(slots=True)
class IterationStats:
    busy_time: float = 0.0  # seconds in iterations, measured
    predicted_busy_time: float = 0.0  # the same iterations as the performance model predicted them
    # Time between one iteration's end and the next one's start while work was left: the serving
    # loop's own cost (detokenizing, reporting, IPC), which no iteration includes.
    gap_time: float = 0.0
    num_gaps: int = 0
    # x = log(measured / predicted) per iteration, per band, and x times the previous x.
    bands: list[Moments] = field(default_factory=lambda: [Moments() for _ in range(len(BAND_EDGES) + 1)])
    lag_products: float = 0.0
    last_log_ratio: float | None = None

    def record_gap(self, seconds: float) -> None:
        self.gap_time += seconds
        self.num_gaps += 1

    def record(self, elapsed: float, predicted: float) -> None:
        self.busy_time += elapsed
        self.predicted_busy_time += predicted
        if elapsed <= 0 or predicted <= 0:
            return
        x = math.log(elapsed / predicted)
        self.bands[bisect_left(BAND_EDGES, predicted)].add(x)
        last = self.last_log_ratio
        if last is not None:
            self.lag_products += x * last
        self.last_log_ratio = x

    @property
    def slowdown(self) -> float:
        """Measured over predicted time, over all iterations (1.0 before any)."""
        return self.busy_time / self.predicted_busy_time if self.predicted_busy_time > 0 else 1.0

    @property
    def log_ratio(self) -> Moments:
        """x over all iterations."""
        return Moments.pooled(self.bands)

    @property
    def spread(self) -> float:
        """Standard deviation of log(measured / predicted) over single iterations."""
        return self.log_ratio.sd

    @property
    def spread_correlation(self) -> float:
        """Lag-1 autocorrelation of x: near 0 if slow iterations come alone, near 1 if in long
        runs. Kept in [0, 0.99] for the simulator's AR(1)."""
        x = self.log_ratio
        if x.n < 3 or x.sd <= 0:
            return 0.0
        cov = self.lag_products / (x.n - 1) - x.mean**2
        return min(max(cov / (x.sd * x.sd), 0.0), 0.99)

    def noise(self) -> IterationNoise:
        return IterationNoise.from_moments(self.bands, self.spread_correlation)
