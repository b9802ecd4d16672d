"""Workloads: trace readers, arrival processes, fitted length distributions, the workload builder."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from ascendra.core.request import SLO
from ascendra.workload import (
    TraceFormatError,
    WorkItem,
    fit_to_model_len,
    gamma_arrivals,
    load_length_model,
    load_trace_items,
    make_workload,
    poisson_arrivals,
    read_trace,
    to_requests,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
TRACE_FILES = {
    "conv": "splitwise_conv.csv",
    "code": "splitwise_code.csv",
    "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
}


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- trace readers -----------------------------------------------------------------------------


def test_reads_vidur_format(tmp_path: Path) -> None:
    header = "arrived_at,num_prefill_tokens,num_decode_tokens\n"
    p = write(tmp_path, header + "2.0,100,10\n2.5,200,20\n4.0,300,30\n")
    tr = read_trace(p)
    assert tr.format == "vidur"
    assert tr.arrival_times.tolist() == [0.0, 0.5, 2.0]  # relative to the first row
    assert tr.prompt_lens.tolist() == [100, 200, 300]
    assert tr.output_lens.tolist() == [10, 20, 30]


def test_reads_azure_format(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.1805900,396,109\n"
        "2023-11-16 18:16:46.6805900,879,12\n",
    )
    tr = read_trace(p)
    assert tr.format == "azure"
    assert np.allclose(tr.arrival_times, [0.0, 0.5, 60.0])
    assert tr.prompt_lens.tolist() == [374, 396, 879]
    assert tr.output_lens.tolist() == [44, 109, 12]


def test_reads_lengths_only_and_extra_columns(tmp_path: Path) -> None:
    header = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
    p = write(tmp_path, header + "10,5,15,2.0\n7,3,10,2.3\n")
    tr = read_trace(p)
    assert tr.format == "lengths" and tr.arrival_times is None
    assert tr.prompt_lens.tolist() == [10, 7]
    items = make_workload(str(p), rate=2.0, num_requests=None, seed=0)
    assert [(i.prompt_len, i.output_len) for i in items] == [(10, 5), (7, 3)]
    assert items[0].arrival_time == 0.0 and items[1].arrival_time > 0


def test_limit_and_rate_scaling(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    t = np.round(np.cumsum(rng.exponential(0.7, 500)), 6)  # as written to the file
    rows = "".join(f"{x:.6f},{i + 1},{i % 7 + 1}\n" for i, x in enumerate(t))
    p = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows)
    assert len(read_trace(p, limit=40)) == 40
    items = load_trace_items(p, rate=8.0)
    times = np.array([i.arrival_time for i in items])
    assert (len(times) - 1) / (times[-1] - times[0]) == pytest.approx(8.0, rel=1e-9)
    # The shape of the trace is kept: gaps are proportional to the original ones.
    assert np.allclose(np.diff(times) / np.diff(t), np.diff(times)[0] / np.diff(t)[0])
    slow = load_trace_items(p, time_scale=2.0, limit=10)
    assert slow[-1].arrival_time == pytest.approx(2.0 * (t[9] - t[0]), rel=1e-5)
    via_builder = make_workload(str(p), rate=8.0, num_requests=100, seed=0)
    assert len(via_builder) == 100 and via_builder[-1].arrival_time == pytest.approx(99 / 8.0)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", None, "empty file"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n", None, "no data rows"),
        ("time,prompt,output\n1,2,3\n", 1, "unknown header"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,abc,5\n", 3, "not a number"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,10,0\n", 3, "at least 1"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,-4,5\n", 3, "at least 1"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,10,5,9\n", 3, "expected 3 columns"),
        ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n2,10,5\n1,10,5\n", 4, "backwards"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,5\n", 2, "not a datetime"),
    ],
)
def test_malformed_traces_name_file_and_line(tmp_path: Path, text: str, line: int | None, what: str) -> None:
    p = write(tmp_path, text, "bad.csv")
    with pytest.raises(TraceFormatError) as exc:
        read_trace(p)
    msg = str(exc.value)
    assert "bad.csv" in msg and what in msg
    if line is not None:
        assert f"line {line}:" in msg and exc.value.line == line


def test_unsorted_trace_can_be_sorted(tmp_path: Path) -> None:
    p = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n2,20,5\n1,30,5\n")
    tr = read_trace(p, sort=True)
    assert tr.arrival_times.tolist() == [0.0, 1.0, 2.0]
    assert tr.prompt_lens.tolist() == [10, 30, 20]


# --- arrivals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "cv"), [("poisson", 1.0), ("gamma", 0.5), ("gamma", 3.0)])
def test_arrivals_have_the_asked_rate_and_cv(kind: str, cv: float) -> None:
    rng = np.random.default_rng(11)
    n, rate = 200_000, 4.0
    t = poisson_arrivals(n, rate, rng) if kind == "poisson" else gamma_arrivals(n, rate, cv, rng)
    gaps = np.diff(t)
    assert t[0] == 0.0 and np.all(gaps >= 0)
    assert 1.0 / gaps.mean() == pytest.approx(rate, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_arrivals_are_deterministic_and_validated() -> None:
    a = gamma_arrivals(100, 2.0, 2.0, np.random.default_rng(5))
    b = gamma_arrivals(100, 2.0, 2.0, np.random.default_rng(5))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        poisson_arrivals(10, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        make_workload("conv", rate=1.0, num_requests=10, seed=0, arrival="poisson", cv=2.0)
    with pytest.raises(ValueError, match="unknown arrival"):
        make_workload("conv", rate=1.0, num_requests=10, seed=0, arrival="uniform")


# --- fitted lengths and the builder ------------------------------------------------------------


def test_params_file_names_its_source() -> None:
    params = json.loads(resources.files("ascendra.workload").joinpath("length_params.json").read_text())
    assert "Vidur" in params["source"] and "Azure" in params["source"] and "Splitwise" in params["source"]
    assert set(params["workloads"]) == {"conv", "code", "arxiv"}


@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data/traces")
@pytest.mark.parametrize("name", ["conv", "code", "arxiv"])
def test_sampled_lengths_match_the_real_trace(name: str) -> None:
    real = read_trace(DATA / TRACE_FILES[name])
    items = make_workload(name, rate=1.0, num_requests=40_000, seed=1)
    sp = np.array([i.prompt_len for i in items])
    so = np.array([i.output_len for i in items])
    for r, s in ((real.prompt_lens, sp), (real.output_lens, so)):
        assert np.median(s) == pytest.approx(np.median(r), rel=0.08)
        assert s.mean() == pytest.approx(r.mean(), rel=0.08)
        assert s.min() >= r.min() and s.max() <= r.max()
    real_corr = np.corrcoef(np.log(real.prompt_lens), np.log(real.output_lens))[0, 1]
    assert np.corrcoef(np.log(sp), np.log(so))[0, 1] == pytest.approx(real_corr, abs=0.05)


def test_arxiv_keeps_its_total_length_cap() -> None:
    items = make_workload("arxiv", rate=None, num_requests=20_000, seed=2)
    assert max(i.prompt_len + i.output_len for i in items) <= 4096
    assert all(i.arrival_time == 0.0 for i in items)  # rate None: an offline batch


def test_scaled_workloads_are_smaller() -> None:
    conv = make_workload("conv", rate=1.0, num_requests=5000, seed=0)
    small = make_workload("cpu-small", rate=1.0, num_requests=5000, seed=0)
    div4 = make_workload("conv/4", rate=1.0, num_requests=5000, seed=0)
    med = lambda xs: float(np.median([i.prompt_len for i in xs]))
    assert med(div4) == pytest.approx(med(conv) / 4, rel=0.1)
    assert med(small) < med(div4)
    assert min(i.output_len for i in small) >= 1 and min(i.prompt_len for i in small) >= 1
    assert load_length_model("cpu-small").name == "cpu-small"
    with pytest.raises(ValueError, match="unknown workload"):
        make_workload("chat", rate=1.0, num_requests=5, seed=0)


def test_same_seed_same_lengths_at_every_rate() -> None:
    a = make_workload("code", rate=1.0, num_requests=300, seed=9)
    b = make_workload("code", rate=4.0, num_requests=300, seed=9, arrival="gamma", cv=2.0)
    c = make_workload("code", rate=4.0, num_requests=300, seed=10)
    assert [(i.prompt_len, i.output_len) for i in a] == [(i.prompt_len, i.output_len) for i in b]
    assert [(i.prompt_len, i.output_len) for i in a] != [(i.prompt_len, i.output_len) for i in c]
    d = make_workload("code", rate=4.0, num_requests=300, seed=9)
    assert np.allclose([x.arrival_time * 4 for x in d], [x.arrival_time for x in a])


def test_max_model_len_makes_every_item_fit() -> None:
    items = make_workload("arxiv", rate=2.0, num_requests=3000, seed=4, max_model_len=1024)
    assert all(i.prompt_len + i.output_len <= 1024 and i.prompt_len >= 1 for i in items)
    assert fit_to_model_len(WorkItem(0.0, 900, 200), 1000) == WorkItem(0.0, 800, 200)  # prompt cut
    assert fit_to_model_len(WorkItem(0.0, 900, 5000), 1000) == WorkItem(0.0, 1, 999)
    assert fit_to_model_len(WorkItem(1.0, 10, 10), 1000) == WorkItem(1.0, 10, 10)


def test_to_requests_sets_ids_lengths_and_per_request_slos() -> None:
    items = make_workload("conv", rate=3.0, num_requests=50, seed=1)
    reqs = to_requests(items, lambda it: SLO(ttft=0.5 + it.prompt_len / 1000, tbt=0.1))
    assert [r.request_id for r in reqs] == [str(i) for i in range(50)]
    for it, r in zip(items, reqs, strict=True):
        assert (r.arrival_time, r.prompt_len, r.max_tokens) == (it.arrival_time, it.prompt_len, it.output_len)
        assert r.slo.ttft == pytest.approx(0.5 + it.prompt_len / 1000)
        assert r.ttft_deadline == pytest.approx(it.arrival_time + r.slo.ttft)


def test_mixture_fit_recovers_two_known_clusters() -> None:
    from ascendra.workload.fit import fit_best_mixture

    rng = np.random.default_rng(0)
    a = rng.multivariate_normal([4.0, 2.0], [[0.04, 0.03], [0.03, 0.09]], 3000)
    b = rng.multivariate_normal([7.0, 5.0], [[0.10, -0.02], [-0.02, 0.05]], 1000)
    fit = fit_best_mixture(np.vstack([a, b]), max_k=3)
    assert len(fit.weights) == 2  # BIC does not overfit a third component
    big = int(np.argmax(fit.weights))
    assert fit.weights[big] == pytest.approx(0.75, abs=0.02)
    assert np.allclose(fit.means[big], [4.0, 2.0], atol=0.03)
    assert np.allclose(fit.covs[big], [[0.04, 0.03], [0.03, 0.09]], atol=0.01)
    assert np.allclose(fit.means[1 - big], [7.0, 5.0], atol=0.05)
