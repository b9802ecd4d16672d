"""Metrics: per-request SLO verdicts, run summaries, plots and reports (the capacity search and the
sustained gate: tests/test_capacity_search.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ascendra.core.request import SLO, Request, RequestStatus
from ascendra.metrics import (
    RequestRecord,
    format_table,
    gap_percentile,
    summarize,
    to_record,
    write_csv,
    write_json,
)
from ascendra.metrics.plot import plot_attainment, plot_cdf


def rec(arrival: float, gaps: list[float], ttft: float = 0.1, *, ttft_slo: float = 1.0, tbt_slo: float = 0.1,
        ok: bool = True) -> RequestRecord:
    """A record whose first token comes `ttft` after arrival, then one token per gap."""
    times = [arrival + ttft] if ttft is not None else []
    for g in gaps:
        times.append(times[-1] + g)
    return RequestRecord(arrival, times, ttft_slo, tbt_slo, prompt_len=10, ok=ok)


# --- per-request verdicts ----------------------------------------------------------------------


def test_p99_is_the_largest_gap_up_to_100_tokens() -> None:
    gaps = [0.05] * 98 + [0.3]  # 100 tokens, 99 gaps: p99 is the largest
    assert gap_percentile(gaps, 99) == 0.3
    r = rec(0.0, gaps)
    assert r.tbt_p99 == pytest.approx(0.3) and not r.meets_tbt and r.meets_ttft and not r.meets_both
    assert gap_percentile([0.05] * 99 + [0.3], 99) == 0.05  # 101 tokens, 100 gaps: one outlier allowed


def test_long_output_tolerates_one_percent_of_slow_gaps() -> None:
    one_spike = [0.05] * 148 + [0.5]  # 150 tokens, 149 gaps: floor(149/100) = 1 gap may exceed
    two_spikes = [0.05] * 147 + [0.5, 0.5]
    assert rec(0.0, one_spike).meets_tbt
    assert not rec(0.0, two_spikes).meets_tbt
    s = summarize([rec(0.0, one_spike), rec(0.0, two_spikes)])
    assert (s.num_tbt_met, s.tbt_attainment) == (1, 0.5)


def test_edge_cases_one_token_failed_and_silent_requests() -> None:
    one_token = rec(0.0, [])
    assert one_token.meets_tbt and one_token.meets_ttft and one_token.tbt_p99 is None
    failed = rec(0.0, [0.01, 0.01], ok=False)
    assert not failed.meets_ttft and not failed.meets_tbt
    silent = RequestRecord(0.0, [], 1.0, 0.1, 10, ok=True)
    assert silent.ttft is None and not silent.meets_ttft and not silent.meets_tbt
    at_slo = rec(2.0, [0.1, 0.1], ttft=1.0)  # at both SLOs up to float rounding (3.1 - 3.0 > 0.1): met
    assert at_slo.meets_ttft and at_slo.meets_tbt
    late = rec(2.0, [0.01], ttft=1.25)
    assert not late.meets_ttft and late.meets_tbt and late.ttft == pytest.approx(1.25)


# --- summaries ---------------------------------------------------------------------------------


def test_summary_shares_goodput_and_throughput() -> None:
    records = [
        rec(0.0, [0.05] * 9, ttft=0.5),  # meets both
        rec(1.0, [0.05] * 9, ttft=2.0),  # misses TTFT
        rec(2.0, [0.05] * 8 + [0.4], ttft=0.2),  # misses TBT (largest gap, under 100 tokens)
        rec(3.0, [0.05] * 9, ttft=0.3, ok=False),  # failed: meets neither
    ]
    s = summarize(records)
    assert (s.num_requests, s.num_ok, s.num_output_tokens) == (4, 3, 40)
    assert (s.ttft_attainment, s.tbt_attainment, s.attainment) == (0.5, 0.5, 0.25)
    span = records[3].token_times[-1] - 0.0  # first arrival to last token
    assert s.duration == pytest.approx(span)
    assert s.goodput == pytest.approx(1 / span)
    assert s.request_throughput == pytest.approx(3 / span)
    assert s.token_throughput == pytest.approx(40 / span)
    assert s.ttft_p50 == pytest.approx(0.3) and s.ttft_p99 == pytest.approx(2.0)
    # 36 pooled gaps (failed requests' gaps count too), one of 0.4: nearest-rank p99 is the 36th
    assert s.tbt_p99 == pytest.approx(0.4) and s.tbt_p90 == pytest.approx(0.05)
    assert summarize(records, duration=10.0).goodput == pytest.approx(0.1)


def test_vectorised_summary_agrees_with_per_request_rules() -> None:
    rng = np.random.default_rng(7)
    records = []
    for i in range(400):
        n = int(rng.choice([0, 1, 2, 50, 99, 100, 101, 150, 250]))
        gaps = rng.exponential(0.03, max(n - 1, 0)).tolist()
        r = rec(i * 0.2, gaps, ttft=float(rng.exponential(0.5)), ttft_slo=float(rng.uniform(0.2, 1.5)),
                tbt_slo=float(rng.uniform(0.05, 0.2)), ok=bool(rng.random() > 0.05))
        if n == 0:
            r.token_times = []
        records.append(r)
    s = summarize(records)
    assert s.num_ttft_met == sum(r.meets_ttft for r in records)
    assert s.num_tbt_met == sum(r.meets_tbt for r in records)
    assert s.num_both_met == sum(r.meets_both for r in records)
    assert 0 < s.num_both_met < len(records)
    pooled = sorted(g for r in records for g in r.tbt_gaps)
    assert s.tbt_p90 == gap_percentile(pooled, 90)


def test_summary_reads_requests_and_counts_unfinished_as_failed() -> None:
    reqs = []
    for i, status in enumerate([RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_STOPPED,
                                RequestStatus.RUNNING, RequestStatus.FINISHED_ABORTED]):
        r = Request(str(i), float(i), prompt_len=5, max_tokens=3, slo=SLO(ttft=1.0, tbt=0.1))
        r.token_times = [i + 0.2, i + 0.25, i + 0.3]
        r.status = status
        reqs.append(r)
    assert to_record(reqs[0]).ok and not to_record(reqs[2]).ok
    assert to_record(reqs[0]).token_times is reqs[0].token_times
    s = summarize(reqs)
    assert (s.num_ok, s.num_both_met, s.attainment) == (2, 2, 0.5)


def test_empty_summary_is_nan_not_an_error() -> None:
    s = summarize([])
    assert s.num_requests == 0 and math.isnan(s.attainment) and math.isnan(s.ttft_p50)


# --- plots and reports -------------------------------------------------------------------------


def test_plots_write_png_files(tmp_path: Path) -> None:
    curves = {"vllm": [(1, 1.0), (2, 0.95), (3, 0.5)], "ascendra": [(1, 1.0), (3, 0.99), (4, 0.8)]}
    a = plot_attainment(curves, tmp_path / "att.png", capacities={"vllm": 1.5})
    ttfts = {"live": [0.1, 0.2, 0.4], "simulated": [0.12, 0.22, 0.35]}
    c = plot_cdf(ttfts, tmp_path / "sub" / "cdf.png", slo=0.3)
    for p in (a, c):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_reports_round_trip(tmp_path: Path) -> None:
    s = summarize([rec(0.0, [0.05] * 5)])
    rows = [{"system": "vllm", "capacity": 3.25, "note": None},
            {"system": "ascendra", "capacity": float("nan")}]
    path = write_json(tmp_path / "r.json", {"summary": s, "rows": rows, "arr": np.arange(3)})
    data = json.loads(path.read_text())
    assert data["summary"]["attainment"] == 1.0 and data["rows"][1]["capacity"] is None
    assert data["arr"] == [0, 1, 2]
    with open(write_csv(tmp_path / "r.csv", rows)) as f:
        back = list(csv.DictReader(f))
    assert back[0] == {"system": "vllm", "capacity": "3.25", "note": ""}
    table = format_table(rows, floatfmt=".2f")
    assert table.splitlines()[0].split("|")[1].strip() == "system"
    assert "3.25" in table and "| ascendra |" in table
    assert table.splitlines()[1].split("|")[2].strip().endswith(":")  # numbers right-aligned
    assert not table.splitlines()[1].split("|")[3].strip().endswith(":")  # an all-empty column is not
    plain = format_table(rows, ["system", "capacity"], markdown=False)
    assert "|" not in plain and plain.splitlines()[2].startswith("vllm")

