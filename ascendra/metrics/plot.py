"""PNG plots: attainment against request rate (one line per system) and CDFs of latency samples.

Figures are built with matplotlib's object API on the Agg canvas, never pyplot: no global figure
state, no display needed, safe in worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render an Agg figure to a PNG, making the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_attainment(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    targets: Sequence[float] = (0.99, 0.9),
    capacities: Mapping[str, float] | None = None,
    title: str = "SLO attainment vs request rate",
    xlabel: str = "request rate (req/s)",
    ylabel: str = "attainment (both SLOs)",
) -> Path:
    """One line per system from its (rate, attainment) points (sorted by rate), dashed lines at targets.

    capacities: optional per-system capacity, drawn as a dotted vertical line in the system's colour.
    """
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for name, pts in curves.items():
        pts = sorted(pts)
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
        if capacities and name in capacities and capacities[name] > 0:
            ax.axvline(capacities[name], color=line.get_color(), ls=":", lw=1)
    for t in targets:
        ax.axhline(t, color="grey", ls="--", lw=0.8)
        ax.annotate(f"{t:.0%}", xy=(1.0, t), xycoords=("axes fraction", "data"), fontsize=8, color="grey",
                    ha="left", va="center")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_cdf(
    samples: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str = "TTFT (s)",
    title: str = "CDF",
    log_x: bool = False,
    slo: float | None = None,
) -> Path:
    """Empirical CDF of each named sample (e.g. 'vllm live', 'vllm simulated'); optional SLO line.
    Samples whose names share a first word share a colour, told apart by line style."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    colours: dict[str, str] = {}
    seen: dict[str, int] = {}
    for name, xs in samples.items():
        x = np.sort(np.asarray(xs, dtype=np.float64))
        if len(x) == 0:
            continue
        group = name.split()[0]
        colours.setdefault(group, f"C{len(colours)}")
        style = ("-", "--", ":", "-.")[seen.get(group, 0) % 4]
        seen[group] = seen.get(group, 0) + 1
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=colours[group], ls=style,
                label=f"{name} (n={len(x)})")
    if slo is not None:
        ax.axvline(slo, color="grey", ls="--", lw=0.8, label="SLO")
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="share of requests", title=title, ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
