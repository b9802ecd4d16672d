"""Write results as JSON or CSV, and format rows as a plain-text or markdown table."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _plain(obj: Any) -> Any:
    """JSON-safe form: dataclasses to dicts, numpy scalars/arrays to Python, NaN/inf to None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy array or scalar
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(obj), indent=2) + "\n")
    return path


def write_csv(
    path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """One line per row; columns default to the union of the rows' keys in first-seen order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(columns) if columns is not None else _columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: _plain(v) for k, v in row.items()})
    return path


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _is_numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)


def _cell(v: Any, floatfmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else format(v, floatfmt)
    return str(v)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    floatfmt: str = ".4g",
    markdown: bool = True,
) -> str:
    """Rows as a markdown table (or space-aligned plain text); numbers right-aligned, NaN/None as '-'."""
    cols = list(columns) if columns is not None else _columns(rows)
    cells = [[_cell(row.get(c), floatfmt) for c in cols] for row in rows]
    numeric = [_is_numeric([row.get(c) for row in rows]) for c in cols]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]

    def fmt(vals: Sequence[str]) -> list[str]:
        return [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric, strict=True)]

    if markdown:
        rule = [("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric, strict=True)]
        lines = [fmt(cols), rule, *(fmt(r) for r in cells)]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    lines = [fmt(cols), ["-" * w for w in widths], *(fmt(r) for r in cells)]
    return "\n".join("  ".join(line).rstrip() for line in lines)
