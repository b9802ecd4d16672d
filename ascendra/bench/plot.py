"""Plots for bench runs: attainment and goodput against request rate (several systems), or one run's CDFs.

matplotlib's object API on the Agg canvas (no pyplot global state), like ascendra.metrics.plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ascendra.bench.report import BenchReport
from ascendra.metrics.plot import save_figure


def plot_compare(
    reports: Sequence[BenchReport], path: str | Path,
    ttft_slo: float | None = None, tbt_slo: float | None = None,
) -> Path:
    """Left: attainment of both SLOs vs rate; right: goodput vs rate; one line per system label.

    Runs without a rate (offline batches) are placed at their measured request throughput.
    """
    series: dict[str, list[tuple[float, float, float]]] = {}
    for r in reports:
        s = r.summary(ttft_slo, tbt_slo)
        rate = r.meta.get("rate") or s.request_throughput
        series.setdefault(r.label, []).append((float(rate), s.attainment, s.goodput))
    fig = Figure(figsize=(10, 4))
    ax_att, ax_good = fig.subplots(1, 2)
    for label, pts in series.items():
        pts.sort()
        x = [p[0] for p in pts]
        ax_att.plot(x, [100 * p[1] for p in pts], marker="o", label=label)
        ax_good.plot(x, [p[2] for p in pts], marker="o", label=label)
    for t in (99, 90):
        ax_att.axhline(t, color="grey", ls="--", lw=0.8)
    ax_att.set(xlabel="request rate (req/s)", ylabel="requests meeting both SLOs (%)", ylim=(-2, 102),
               title="SLO attainment")
    ax_good.set(xlabel="request rate (req/s)", ylabel="goodput (req/s)", title="goodput")
    for ax in (ax_att, ax_good):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_run(report: BenchReport, path: str | Path) -> Path:
    """One run: CDFs of TTFT and of each request's p99 token gap, with the SLOs as dashed lines."""
    recs = [x for x in report.records if x.token_times]
    ttft = np.sort([x.ttft for x in recs]) * 1e3
    tbt = np.sort([x.tbt_p99 for x in recs if x.tbt_p99 is not None]) * 1e3
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, xs, slo, name in ((axes[0], ttft, report.meta["ttft_slo"], "TTFT (ms)"),
                              (axes[1], tbt, report.meta["tbt_slo"], "per-request p99 token gap (ms)")):
        if len(xs):
            ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post",
                    label=f"{report.label} (n={len(xs)})")
        ax.axvline(slo * 1e3, color="grey", ls="--", lw=0.8, label="SLO")
        ax.set(xlabel=name, ylabel="share of requests", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)
