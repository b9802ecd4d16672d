"""`ascendra capacity` end to end on short simulated runs: the ablation's columns, the baselines'
best configurations named, no capacity it did not sustain, and no ratio to saturation above 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascendra.cli import main
from ascendra.cluster.system import SystemConfig
from ascendra.metrics.sustained import served_share
from ascendra.runtime.candidates import CANDIDATES, candidate_configs
from ascendra.runtime.compare import compare, rows
from ascendra.runtime.search import Plan
from ascendra.runtime.settings import setting


def test_the_ablation_has_its_columns() -> None:
    assert list(CANDIDATES)[:4] == ["vllm", "sarathi", "lp-only", "ascendra"]
    lp = candidate_configs("lp-only", instances=4, sweep=False, max_model_len=8192)
    assert [(c.system, c.num_hp, c.roles()) for c in lp] == [("ascendra", 0, ["lp"] * 4)]
    assert not lp[0].router_config().offload
    splits = candidate_configs("ascendra", instances=4, sweep=False, max_model_len=8192)
    assert [c.num_hp for c in splits] == [1, 2] and all(c.router_config().offload for c in splits)
    swept = candidate_configs("sarathi", instances=4, sweep=True, max_model_len=8192)
    assert {c.token_budget for c in swept} >= {256, 512, 2048}
    with pytest.raises(ValueError, match="unknown system"):
        candidate_configs("orca", instances=4, sweep=False, max_model_len=8192)


def test_a_bursty_stable_run_keeps_up_and_an_overloaded_one_does_not() -> None:
    """S3 (gamma, CV 3) on Sarathi: at 5 req/s every seed keeps up (the old middle-half gate failed
    1 seed in 3 here), at 40 req/s, past its saturation near 31, none does."""
    sc = setting("S3").scenario(num_requests=2000)
    system = SystemConfig("sarathi", token_budget=384)
    for seed in range(3):
        assert served_share(sc.run(system, 5.0, seed)[1].requests) > 0.97
        assert served_share(sc.run(system, 40.0, seed)[1].requests) < 0.9


def test_compare_reports_only_sustained_capacities_never_above_saturation() -> None:
    sc = setting("S2").scenario(num_requests=300)
    plan = Plan(targets=(0.99, 0.9), seeds=(0, 1), lo=2.0, hi=8.0, rel_tol=0.2)
    configs = {"sarathi": [SystemConfig("sarathi", token_budget=b) for b in (384, 1024)],
               "lp-only": [SystemConfig("ascendra", num_hp=0)]}
    results = compare(sc, configs, plan, workers=1)
    assert [r.system for r in results] == ["sarathi", "lp-only"]
    sarathi = results[0]
    assert sarathi.best.token_budget == 384 and [lbl for lbl, _ in sarathi.tried] == [
        "sarathi(budget=384)", "sarathi(budget=1024)"]
    for r in results:
        for t in plan.targets:
            assert r.rate(t) <= r.saturation
            for own, sat in zip(r.detail.seed_capacity[t], r.detail.seed_saturation, strict=True):
                assert own.capacity <= sat.capacity
            if r.rate(t) > 0:  # a rate every seed kept up with
                assert all(sc.score(r.best, r.rate(t), s).keeps_up for s in plan.seeds)
        assert r.curve and all(0 <= a <= 1 for _, a in r.curve)
    row = rows(results, sc, plan)[1]
    assert row["best configuration"] == "ascendra(4LP:0HP,margin=0.2)" and "vs LP-only@99%" not in row
    assert 0 < row["capacity@99% / saturation"] <= 1


@pytest.mark.parametrize("command", ["capacity", "simulate"])
def test_help_prints(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "--setting" in capsys.readouterr().out


def test_the_command_prints_no_ratio_above_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cap.json"
    rc = main(["capacity", "--setting", "S5", "--systems", "sarathi,lp-only", "--num-requests", "300",
               "--seeds", "1", "--lo", "2", "--hi", "8", "--rel-tol", "0.25", "--workers", "1",
               "--plot", str(tmp_path / "cap.png"), "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "70% strict" in text and "too short to judge" in text
    data = json.loads(out.read_text())
    assert data["setting"] == "S5" and not data["quick"]
    assert all(0 <= row["capacity@99% / saturation"] <= 1 for row in data["rows"])
    for r in data["results"]:
        assert all(c <= r["saturation"] for c in r["capacity"].values())
    assert (tmp_path / "cap.png").stat().st_size > 5000


def test_the_output_fits_100_columns_and_writes_only_what_was_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three seeds whose capacities differ (ranges in the cells), two targets, saturation: the widest
    table; no --plot and no --json: no file, wherever it runs; no --setting: no setting named."""
    monkeypatch.chdir(tmp_path)
    rc = main(["capacity", "--systems", "sarathi,lp-only,ascendra", "--workload", "code", "--num-requests",
               "200", "--seeds", "3", "--lo", "2", "--hi", "8", "--rel-tol", "0.25", "--workers", "1"])
    assert rc == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("system "))
    table = lines[start:lines.index("", start)]
    assert table[0].split() == ["system", "@99%", "req/s", "@90%", "req/s", "vs", "best", "baseline", "vs",
                                "LP-only", "saturation"]
    assert any("-" in line.split("  ")[1] for line in table[2:]), "no seed range shown"
    assert max(len(line) for line in lines) <= 100  # the tables, and the prose wrapped to them
    assert "custom" not in captured.out and "scenario." not in captured.out
    assert list(tmp_path.iterdir()) == []  # no capacity.png in the working folder


def test_the_progress_total_is_the_number_of_searches_run() -> None:
    sc = setting("S2").scenario(num_requests=200)
    configs = {"sarathi": [SystemConfig("sarathi", token_budget=b) for b in (384, 1024)],
               "lp-only": [SystemConfig("ascendra", num_hp=0)]}
    for saturation in (True, False):
        plan = Plan(targets=(0.99, 0.9), seeds=(0, 1), lo=2.0, hi=8.0, rel_tol=0.25, saturation=saturation)
        ticks: list[int] = []
        results = compare(sc, configs, plan, workers=1, tick=ticks.append)
        assert sum(ticks) == plan.searches(3, 2) == 3 * 2 + 2 * (2 * 2 + (3 if saturation else 0))
        assert all((r.saturation is not None) == saturation for r in results)
