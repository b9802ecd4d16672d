"""A bench run's results: per-request records, the summary, JSON in and out, and comparison tables.

The JSON file holds the run's settings (`meta`), the summary, and every request's arrival and token
times, so `--compare` re-judges runs from the raw times (optionally under other SLOs) rather than
trusting stored verdicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascendra.bench.client import RequestResult
from ascendra.metrics import RequestRecord, Summary, format_table, summarize, write_json

SCHEMA = "ascendra-bench/1"


@dataclass(slots=True)
class BenchReport:
    meta: dict[str, Any]  # label, base_url, model, endpoint, rate, workload, seed, ttft_slo, tbt_slo, ...
    results: list[RequestResult]
    wall_time: float = 0.0
    records: list[RequestRecord] = field(init=False)

    def __post_init__(self) -> None:
        self.records = [to_record(r, self.meta["ttft_slo"], self.meta["tbt_slo"]) for r in self.results]

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.meta.get("model") or "run")

    def summary(self, ttft_slo: float | None = None, tbt_slo: float | None = None) -> Summary:
        """The run's summary; SLOs in seconds override the ones the run was measured against."""
        recs = self.records
        if ttft_slo is not None or tbt_slo is not None:
            recs = [to_record(r, ttft_slo or self.meta["ttft_slo"], tbt_slo or self.meta["tbt_slo"])
                    for r in self.results]
        return summarize(recs)

    def to_dict(self) -> dict[str, Any]:
        s = self.summary()
        errors: dict[str, int] = {}
        for r in self.results:
            if r.error:
                key = r.error[:80]
                errors[key] = errors.get(key, 0) + 1
        lags = sorted(r.send_time - r.arrival_time for r in self.results if r.send_time is not None)
        return {
            "schema": SCHEMA,
            "meta": self.meta,
            "summary": s.as_dict(),
            "num_failed": sum(not r.ok for r in self.results),
            "errors": errors,
            "wall_time": self.wall_time,
            # Client lag behind the schedule (includes waits for --max-concurrency).
            "send_lag_max": lags[-1] if lags else None,
            "requests": [_result_dict(r) for r in self.results],
        }

    def write_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> BenchReport:
        d = json.loads(Path(path).read_text())
        if d.get("schema") != SCHEMA:
            raise ValueError(f"{path}: not an `ascendra bench` JSON file (schema {d.get('schema')!r})")
        results = [RequestResult(**{k: v for k, v in r.items() if k in RequestResult.__slots__})
                   for r in d["requests"]]
        meta = dict(d["meta"])
        meta.setdefault("label", Path(path).stem)
        return cls(meta, results, float(d.get("wall_time") or 0.0))


def to_record(r: RequestResult, ttft_slo: float, tbt_slo: float) -> RequestRecord:
    return RequestRecord(
        arrival_time=r.arrival_time, token_times=r.token_times, ttft_slo=ttft_slo, tbt_slo=tbt_slo,
        prompt_len=r.prompt_len, ok=r.ok, request_id=str(r.index),
        extra={"error": r.error, "send_time": r.send_time},
    )


def _result_dict(r: RequestResult) -> dict[str, Any]:
    ttft = r.token_times[0] - r.arrival_time if r.token_times else None
    return {
        "index": r.index, "arrival_time": r.arrival_time, "send_time": r.send_time,
        "prompt_len": r.prompt_len, "output_len": r.output_len, "ok": r.ok, "error": r.error,
        "http_status": r.http_status, "finish_reason": r.finish_reason,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "per_chunk_usage": r.per_chunk_usage, "ttft": ttft,
        "token_times": [round(t, 6) for t in r.token_times],
    }


def _ms(x: float) -> float:
    return x * 1e3 if x is not None and not math.isnan(x) else math.nan


def summary_row(label: str, meta: dict[str, Any], s: Summary, num_failed: int) -> dict[str, Any]:
    """One table row: attainment in %, latencies in ms, throughput in req/s and tok/s."""
    return {
        "system": label,
        "rate": meta.get("rate"),
        "n": s.num_requests,
        "failed": num_failed,
        "TTFT att %": 100 * s.ttft_attainment,
        "TBT att %": 100 * s.tbt_attainment,
        "both att %": 100 * s.attainment,
        "goodput req/s": s.goodput,
        "req/s": s.request_throughput,
        "out tok/s": s.token_throughput,
        "TTFT p50 ms": _ms(s.ttft_p50),
        "TTFT p99 ms": _ms(s.ttft_p99),
        "TBT p50 ms": _ms(s.tbt_p50),
        "TBT p99 ms": _ms(s.tbt_p99),
    }


def compare_table(
    reports: Sequence[BenchReport], ttft_slo: float | None = None, tbt_slo: float | None = None,
    markdown: bool = True,
) -> str:
    rows = [summary_row(r.label, r.meta, r.summary(ttft_slo, tbt_slo), sum(not x.ok for x in r.results))
            for r in reports]
    return format_table(rows, floatfmt=".3g", markdown=markdown)
