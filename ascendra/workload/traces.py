"""Read request traces from CSV: Vidur's format and the Azure public dataset's, detected from the header.

Formats (extra columns after the required ones are allowed and ignored):

- Vidur: `arrived_at,num_prefill_tokens,num_decode_tokens`; `arrived_at` in seconds.
- Azure LLM inference trace (AzurePublicDataset): `TIMESTAMP,ContextTokens,GeneratedTokens`;
  TIMESTAMP a datetime string such as `2023-11-16 18:15:46.6805900`.
- Lengths only (Vidur's arXiv file): `num_prefill_tokens,num_decode_tokens,...`; no arrival times,
  so the caller draws them from an arrival process (see `make_workload`).

Arrival times are made relative to the first row. Timestamps that go backwards raise an error by
default: a trace replayed out of order is usually a corrupted or concatenated file, and silently
reordering it would change the experiment; pass `sort=True` to replay it in time order instead.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ascendra.workload.item import WorkItem

# format name -> (arrival column or None, prompt column, output column)
FORMATS: dict[str, tuple[str | None, str, str]] = {
    "vidur": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "lengths": (None, "num_prefill_tokens", "num_decode_tokens"),
}


class TraceFormatError(ValueError):
    """A trace file that cannot be read; the message names the file, the line and the problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True, slots=True)
class Trace:
    path: str
    format: str
    arrival_times: np.ndarray | None  # seconds from the first row; None for a lengths-only file
    prompt_lens: np.ndarray  # int64
    output_lens: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.prompt_lens)


def _detect(path: Path, header: list[str]) -> tuple[str, list[int]]:
    names = [h.strip().lstrip("\ufeff") for h in header]
    for fmt, cols in FORMATS.items():
        wanted = [c for c in cols if c is not None]
        if all(c in names for c in wanted):  # vidur is tried before lengths-only
            return fmt, [names.index(c) for c in wanted]
    known = "; ".join(",".join(c for c in cols if c) for cols in FORMATS.values())
    raise TraceFormatError(path, 1, f"unknown header {','.join(names)!r}; expected one of: {known}")


def _tokens(path: Path, line: int, col: str, cell: str) -> int:
    try:
        v = float(cell)
    except ValueError:
        raise TraceFormatError(path, line, f"column {col}: {cell!r} is not a number") from None
    if not math.isfinite(v) or v != int(v):
        raise TraceFormatError(path, line, f"column {col}: {cell!r} is not a whole number of tokens")
    if v < 1:
        raise TraceFormatError(path, line, f"column {col}: token count must be at least 1, got {cell}")
    return int(v)


def _time(path: Path, line: int, fmt: str, col: str, cell: str) -> float:
    if fmt == "azure":
        try:
            dt = datetime.fromisoformat(cell.strip())
        except ValueError:
            raise TraceFormatError(path, line, f"column {col}: {cell!r} is not a datetime") from None
        # Naive times are read as UTC, not local time: a DST change must not bend the trace.
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    try:
        v = float(cell)
    except ValueError:
        raise TraceFormatError(path, line, f"column {col}: {cell!r} is not a number") from None
    if not math.isfinite(v):
        raise TraceFormatError(path, line, f"column {col}: {cell!r} is not a finite time")
    return v


def read_trace(path: str | Path, *, limit: int | None = None, sort: bool = False) -> Trace:
    """Read the first `limit` rows (all when None) of a trace file; raises TraceFormatError."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    lines: list[int] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise TraceFormatError(path, None if header is None else 1, "empty file: no header line")
        fmt, idx = _detect(path, header)
        cols = [c for c in FORMATS[fmt] if c is not None]
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank lines, e.g. a trailing newline
            if len(row) != len(header):
                raise TraceFormatError(path, line, f"expected {len(header)} columns, got {len(row)}")
            cells = [row[i] for i in idx]
            if fmt != "lengths":
                times.append(_time(path, line, fmt, cols[0], cells[0]))
                cells = cells[1:]
            prompts.append(_tokens(path, line, cols[-2], cells[0]))
            outputs.append(_tokens(path, line, cols[-1], cells[1]))
            lines.append(line)
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise TraceFormatError(path, None, "no data rows after the header")
    p, o = np.array(prompts, dtype=np.int64), np.array(outputs, dtype=np.int64)
    arrivals = None
    if fmt != "lengths":
        t = np.array(times)
        back = np.flatnonzero(np.diff(t) < 0)
        if len(back):
            if not sort:
                i = int(back[0]) + 1
                raise TraceFormatError(
                    path, lines[i], f"timestamp goes backwards ({times[i]} after {times[i - 1]}); "
                    "pass sort=True to replay the trace in time order")
            order = np.argsort(t, kind="stable")
            t, p, o = t[order], p[order], o[order]
        arrivals = t - t[0]
    return Trace(str(path), fmt, arrivals, p, o)


def scale_arrivals(
    times: np.ndarray, *, rate: float | None = None, time_scale: float | None = None
) -> np.ndarray:
    """Stretch arrival times to a mean `rate` (requests/s, = (n - 1) / span) or by a `time_scale` factor.

    time_scale multiplies every time: 2.0 replays twice as slowly (half the rate). At most one of the two.
    """
    if rate is not None and time_scale is not None:
        raise ValueError("give either rate or time_scale, not both")
    if time_scale is not None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        return times * time_scale
    if rate is not None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        span = float(times[-1] - times[0]) if len(times) else 0.0
        if span <= 0:
            raise ValueError("cannot scale a trace to a rate: its arrivals span no time (need 2+ distinct)")
        return (times - times[0]) * ((len(times) - 1) / span / rate)
    return times


def load_trace_items(
    path: str | Path, *, rate: float | None = None, time_scale: float | None = None,
    limit: int | None = None, sort: bool = False,
) -> list[WorkItem]:
    """A timestamped trace as WorkItems, optionally rescaled in time (see `scale_arrivals`)."""
    trace = read_trace(path, limit=limit, sort=sort)
    if trace.arrival_times is None:
        raise ValueError(f"{path}: a lengths-only trace has no arrival times; use make_workload with a rate")
    t = scale_arrivals(trace.arrival_times, rate=rate, time_scale=time_scale)
    rows = zip(t, trace.prompt_lens, trace.output_lens, strict=True)
    return [WorkItem(float(a), int(p), int(o)) for a, p, o in rows]
