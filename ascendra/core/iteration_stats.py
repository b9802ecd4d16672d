"""How an instance's iterations really ran against the performance model's prediction.

Live, these figures tell how far the simulator's iteration times are from the machine's on the
day: the mean ratio (a slower host than at profiling time), the scatter of single iterations
around it, and whether slow iterations come in runs. The simulator draws its own iteration noise
from the same two spread figures (`PerfModel.spread`, `spread_correlation`), so a simulation can be
run at the speed and with the scatter a live run measured. Plain data: it crosses process
boundaries in the worker's reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class IterationStats:
    busy_time: float = 0.0  # seconds in iterations, measured
    predicted_busy_time: float = 0.0  # the same iterations as the performance model predicted them
    # Time between one iteration's end and the next one's start while work was left: the serving
    # loop's own cost (detokenizing, reporting, IPC), which no iteration includes.
    gap_time: float = 0.0
    num_gaps: int = 0
    # Moments of x = log(measured / predicted) per iteration, and of x against the previous x.
    num_ratios: int = 0
    log_ratio_sum: float = 0.0
    log_ratio_squares: float = 0.0
    log_ratio_lag_products: float = 0.0
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
        self.num_ratios += 1
        self.log_ratio_sum += x
        self.log_ratio_squares += x * x
        if self.last_log_ratio is not None:
            self.log_ratio_lag_products += x * self.last_log_ratio
        self.last_log_ratio = x

    @property
    def slowdown(self) -> float:
        """Measured over predicted time, over all iterations (1.0 before any)."""
        return self.busy_time / self.predicted_busy_time if self.predicted_busy_time > 0 else 1.0

    @property
    def mean_gap(self) -> float:
        return self.gap_time / self.num_gaps if self.num_gaps else 0.0

    @property
    def spread(self) -> float:
        """Standard deviation of log(measured / predicted) over single iterations."""
        n = self.num_ratios
        if n < 2:
            return 0.0
        mean = self.log_ratio_sum / n
        return math.sqrt(max(self.log_ratio_squares / n - mean * mean, 0.0))

    @property
    def spread_correlation(self) -> float:
        """Lag-1 autocorrelation of log(measured / predicted): near 0 if slow iterations come
        alone, near 1 if they come in long runs (the host slowed down for a while)."""
        n = self.num_ratios
        sd = self.spread
        if n < 3 or sd <= 0:
            return 0.0
        mean = self.log_ratio_sum / n
        cov = self.log_ratio_lag_products / (n - 1) - mean * mean
        return min(max(cov / (sd * sd), 0.0), 0.99)
