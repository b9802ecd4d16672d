"""Metrics: per-request TTFT/TBT verdicts, run summaries, capacity search, plots and reports."""

from ascendra.metrics.capacity import CapacityResult, find_capacity, saturation_rate
from ascendra.metrics.records import RequestRecord, gap_percentile, to_record
from ascendra.metrics.report import format_table, write_csv, write_json
from ascendra.metrics.summary import Summary, summarize

__all__ = [
    "CapacityResult",
    "RequestRecord",
    "Summary",
    "find_capacity",
    "format_table",
    "gap_percentile",
    "saturation_rate",
    "summarize",
    "to_record",
    "write_csv",
    "write_json",
]
