"""Metrics: per-request TTFT/TBT verdicts, run summaries, capacity search, plots and reports."""

from ascendra.metrics.capacity import CapacityResult, RunScore, find_capacity, find_saturation
from ascendra.metrics.records import RequestRecord, gap_percentile, to_record
from ascendra.metrics.report import format_table, write_csv, write_json
from ascendra.metrics.summary import Summary, summarize

__all__ = [
    "CapacityResult",
    "RequestRecord",
    "RunScore",
    "Summary",
    "find_capacity",
    "find_saturation",
    "format_table",
    "gap_percentile",
    "summarize",
    "to_record",
    "write_csv",
    "write_json",
]
