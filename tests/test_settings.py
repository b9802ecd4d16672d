"""The capacity settings S1-S5 build the workloads and SLOs they claim, and the SLO rules do what
they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ascendra.cli import build_parser
from ascendra.cli.common import scenario_from
from ascendra.core.perf_model import isolated_decode_time, isolated_prefill_time
from ascendra.runtime.settings import SETTINGS, TRACE_HELP, setting
from ascendra.runtime.slo_rules import RELAXED, SLO_RULES, STRICT, SLOClass, SLOClasses
from ascendra.workload import make_workload, read_trace

CONV = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "splitwise_conv.csv"


def scenario(name: str, n: int, **kw):
    return setting(name).scenario(num_requests=n, **kw)


def test_s2_draws_code_lengths_with_poisson_arrivals() -> None:
    sc = scenario("S2", 20_000)
    items = sc.items(5.0, 3)
    assert [(i.prompt_len, i.output_len) for i in items] == [
        (i.prompt_len, i.output_len)
        for i in make_workload("code", rate=5.0, num_requests=20_000, seed=3, max_model_len=8192)
    ]
    gaps = np.diff([i.arrival_time for i in items])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    assert 1 / gaps.mean() == pytest.approx(5.0, rel=0.03)


def test_s3_arrivals_are_gamma_with_cv_3() -> None:
    sc = scenario("S3", 50_000)
    gaps = np.diff([i.arrival_time for i in sc.items(8.0, 0)])
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)
    assert 1 / gaps.mean() == pytest.approx(8.0, rel=0.1)
    assert setting("S3").lo < 1.0  # FCFS systems miss 99% at a few req/s under these bursts


def test_s4_gives_every_request_the_stated_product_slo() -> None:
    sc = scenario("S4", 2000)
    d = isolated_decode_time(sc.perf)
    ttft = 10 * d + isolated_prefill_time(sc.perf, 8192)
    reqs = sc.requests(10.0, 0)
    assert len({r.slo for r in reqs}) == 1
    assert (reqs[0].slo.ttft, reqs[0].slo.tbt) == (pytest.approx(ttft), pytest.approx(5 * d))
    assert f"TTFT {1e3 * ttft:.0f} ms" in sc.describe() and f"= {1e3 * 5 * d:.0f} ms" in sc.describe()
    # Every prompt the model admits could meet it served alone, the longest too.
    assert isolated_prefill_time(sc.perf, max(r.prompt_len for r in reqs)) < ttft


def test_s5_mixes_70_percent_strict_and_30_percent_relaxed_per_request() -> None:
    sc = scenario("S5", 20_000)
    perf = sc.perf
    reqs = sc.requests(10.0, 1)
    strict = [r for r in reqs if r.slo.tbt == pytest.approx(STRICT.tbt(perf))]
    relaxed = [r for r in reqs if r.slo.tbt == pytest.approx(RELAXED.tbt(perf))]
    assert len(strict) + len(relaxed) == len(reqs)
    assert len(strict) / len(reqs) == pytest.approx(0.7, abs=0.015)
    for rule, group in ((STRICT, strict[:200]), (RELAXED, relaxed[:200])):
        assert all(r.slo.ttft == pytest.approx(rule.ttft(perf, r.prompt_len)) for r in group)
    # The same seed draws the same classes at every rate (common random numbers), another seed not.
    classes = lambda rs: [r.slo.tbt for r in rs]
    assert classes(sc.requests(20.0, 1)) == classes(reqs) != classes(sc.requests(10.0, 2))


def test_slo_classes_are_validated() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SLOClasses("bad", (SLOClass(0.7, STRICT), SLOClass(0.2, RELAXED)))
    assert set(SLO_RULES) >= {"strict", "relaxed", "product", "classes"}


def test_s1_needs_a_trace_and_says_where_to_get_it() -> None:
    with pytest.raises(ValueError, match="AzurePublicDataset") as e:
        scenario("S1", 100)
    assert "--trace PATH" in str(e.value) and str(e.value) == TRACE_HELP
    with pytest.raises(ValueError, match="S1"):
        scenario("S3", 100, trace="t.csv")


def test_s1_replays_windows_of_a_trace_at_a_speed_up(tmp_path: Path) -> None:
    t = np.cumsum(np.random.default_rng(0).exponential(0.5, 100))
    rows = "".join(f"{x:.6f},{10 + i},{1 + i % 5}\n" for i, x in enumerate(t))
    (tmp_path / "t.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows)
    sc = scenario("S1", 30, trace=str(tmp_path / "t.csv"))
    mean_rate = 99 / (t[-1] - t[0])
    for seed, start in ((0, 0), (1, 30), (2, 60), (3, 19)):  # the fourth wraps: 71 window starts
        items = sc.items(4 * mean_rate, seed)
        assert [i.prompt_len for i in items] == list(range(10 + start, 40 + start))
        want = (t[start:start + 30] - t[start]) / 4
        assert np.allclose([i.arrival_time for i in items], want, atol=1e-5)
    assert sc.speedup(4 * mean_rate) == pytest.approx(4.0)


@pytest.mark.skipif(not CONV.is_file(), reason="needs ../shared/data/traces/splitwise_conv.csv")
def test_s1_keeps_the_azure_traces_own_inter_arrival_pattern() -> None:
    trace = read_trace(CONV)
    sc = scenario("S1", 4000, trace=str(CONV))
    for seed in range(3):
        items = sc.items(20.0, seed)
        real = trace.arrival_times[seed * 4000:(seed + 1) * 4000]
        assert np.allclose(np.diff([i.arrival_time for i in items]), np.diff(real) / sc.speedup(20.0))
        rows = zip(trace.prompt_lens[seed * 4000:][:50], trace.output_lens[seed * 4000:][:50], strict=True)
        # The trace's own pairs, a prompt cut only where the pair exceeds the model's context.
        assert [(i.prompt_len, i.output_len) for i in items[:50]] == [(min(p, 8192 - o), o) for p, o in rows]
    # Rate-scaled with its own timing: the windows' own rates differ, as the hour's traffic did.
    spans = [sc.items(20.0, s)[-1].arrival_time for s in range(3)]
    assert max(spans) / min(spans) > 1.2


def test_command_line_overrides_a_setting() -> None:
    parse = lambda *a: scenario_from(build_parser().parse_args(["simulate", *a]))
    s3 = parse("--setting", "s3")
    assert (s3.workload, s3.arrival, s3.cv, s3.slo) == ("conv", "gamma", 3.0, "strict")
    poisson = parse("--setting", "S3", "--arrival", "poisson", "--num-requests", "100")
    assert (poisson.arrival, poisson.cv, poisson.num_requests) == ("poisson", 1.0, 100)
    assert parse("--setting", "S4", "--slo", "relaxed").slo == "relaxed"
    custom = parse()
    assert (custom.workload, custom.arrival, custom.slo) == ("conv", "poisson", "strict")
    assert set(SETTINGS) == {"S1", "S2", "S3", "S4", "S5"}
