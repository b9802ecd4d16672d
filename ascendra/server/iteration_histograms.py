"""The instances' histograms of log(measured / predicted iteration time), for `/metrics`.

A collector read at scrape time from each instance's last report, not gauges set on every report:
those would be one `set` per non-empty bucket (tens per band) on every iteration of every instance,
on the server's event loop.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from ascendra.core.iteration_stats import IterationStats, band_label, bucket_label


class IterationHistograms:
    def __init__(self) -> None:
        self._latest: dict[int, tuple[str, IterationStats]] = {}  # by instance: (role, its last stats)

    def update(self, index: int, role: str, stats: IterationStats) -> None:
        self._latest[index] = (role, stats)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["instance", "role", "band", "le"]
        counts = GaugeMetricFamily("ascendra_instance_iteration_log_ratio_bucket", "Iterations of the band "
                                   "whose log(measured / predicted duration) is under le and over the bucket "
                                   "below (not cumulative)", labels=labels)
        sums = GaugeMetricFamily("ascendra_instance_iteration_log_ratio_bucket_sum", "Sum of log(measured "
                                 "/ predicted duration) over the bucket's iterations", labels=labels)
        for index, (role, stats) in sorted(self._latest.items()):
            for b, m in enumerate(stats.bands):
                for k, (c, t) in enumerate(zip(m.bucket_counts, m.bucket_sums, strict=True)):
                    if c:
                        at = [str(index), role, band_label(b), bucket_label(k)]
                        counts.add_metric(at, c)
                        sums.add_metric(at, t)
        yield counts
        yield sums
