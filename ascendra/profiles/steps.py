"""Fitting a profile from a vLLM engine's own steps, as the Ascendra scheduler plugin records them.

The plugin writes one JSON line per step (`ASCENDRA_STEP_LOG`): the batch's shape, in the figures our
performance model reads, and how long the step took, between the engine taking in the previous
step's output and this one's. So a vLLM engine on any device vLLM supports gets a profile of its
own from the traffic it served, with no profiling run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Iterator
from pathlib import Path

from ascendra.core.batch import BatchShape
from ascendra.core.perf_model import PerfModel
from ascendra.profiles.fit import fit_device_profile

# A step longer than this many times the median of steps of its size is a stall (the machine's other
# jobs, a compile), not the batch's cost.
OUTLIER_FACTOR = 5.0


def step_rows(paths: Iterable[str | Path]) -> Iterator[dict]:
    """Each step the plugin logged, as its JSON row, file by file (the one reader of the log)."""
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def read_steps(paths: Iterable[str | Path]) -> tuple[list[BatchShape], list[float]]:
    shapes, seconds = [], []
    for row in step_rows(paths):
        if row["seconds"] > 0:
            shapes.append(BatchShape(**row["shape"]))
            seconds.append(float(row["seconds"]))
    return shapes, seconds


def fit_steps(shapes: list[BatchShape], seconds: list[float], device: str = "cpu", **meta) -> PerfModel:
    """The model fitted to the steps (stalls left out), with its spread for the simulator."""
    if not shapes:
        raise ValueError("no steps to fit")
    by_size: dict[int, list[float]] = {}
    for s, t in zip(shapes, seconds, strict=True):
        by_size.setdefault(s.num_tokens.bit_length(), []).append(t)
    median = {k: statistics.median(v) for k, v in by_size.items()}
    keep = [i for i, (s, t) in enumerate(zip(shapes, seconds, strict=True))
            if t <= OUTLIER_FACTOR * median[s.num_tokens.bit_length()]]
    shapes, seconds = [shapes[i] for i in keep], [seconds[i] for i in keep]
    pm = fit_device_profile(shapes, seconds, device, **meta)
    pm.notes = dict(pm.notes, steps=len(shapes), stalls_left_out=sum(map(len, by_size.values())) - len(keep))
    return pm
