"""`ascendra capacity --quick` is the full run's experiment made smaller (one seed, one target, no
saturation search), so it finds the recorded full run (docs/capacity) and reproduces that run's
figures on its seed; the ratio it prints lies inside the spread the full run documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ascendra.cli import build_parser, main
from ascendra.cli.capacity import FULL, QUICK, _plan
from ascendra.cli.common import scenario_from
from ascendra.runtime import recorded
from ascendra.runtime.candidates import candidate_configs

HEADLINE = recorded.RECORDS / "headline.json"


def experiment(*argv: str) -> tuple[recorded.Experiment, tuple[int, ...]]:
    """The experiment `ascendra capacity ARGV` runs, as the command builds it."""
    args = build_parser().parse_args(["capacity", *argv])
    size = QUICK if args.quick else FULL
    for k in ("num_requests", "seeds", "targets", "rel_tol"):
        if getattr(args, k) is None:
            setattr(args, k, getattr(size, k))
    sc, plan = scenario_from(args), _plan(args, size)
    configs = {n: candidate_configs(n, instances=args.instances, sweep=args.sweep,
                                    max_model_len=sc.capacity.max_model_len) for n in args.systems.split(",")}
    return recorded.Experiment.of_run(sc, args.profile, args.instances, plan, configs), plan.seeds


def test_quick_is_the_recorded_headline_experiment_on_fewer_seeds():
    found = recorded.find(*experiment("--quick"))
    assert found is not None and found.path == HEADLINE and found.seeds == (0, 1, 2)
    overall, per_seed = found.vs_best_baseline("ascendra", 0.99)
    assert f"{overall:.2f}" == "1.46" and [f"{x:.2f}" for x in per_seed] == ["1.41", "1.46", "1.51"]
    assert recorded.find(*experiment()) == found  # the full run is the same experiment
    for other in (["--num-requests", "600"], ["--sweep"], ["--rel-tol", "0.1"], ["--slo", "relaxed"],
                  ["--systems", "sarathi,ascendra"]):
        assert recorded.find(*experiment("--quick", *other)) is None, other


@pytest.mark.slow  # the real --quick: about 90 s of CPU
def test_quick_lands_inside_the_recorded_spread(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "quick.json"
    assert main(["capacity", "--quick", "--workers", "2", "--json", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    d = json.loads(out.read_text())
    row = next(r for r in d["rows"] if r["system"] == "ascendra")
    _, per_seed = recorded.find(*experiment("--quick")).vs_best_baseline("ascendra", 0.99)
    assert d["quick"] and d["plan"]["seeds"] == [0]
    # The quick run takes the best configuration on seed 0; the full run the best over three seeds
    # (3 LP : 1 HP, 27.5 on seed 0), and 2 LP : 2 HP has 28 on seed 0.
    assert per_seed[0] <= row["vs best baseline@99%"] <= max(per_seed)
    assert "ascendra / best baseline @99%: 1.44x in this run (seed 0); the recorded full run" in text
    assert "1.46x, seed by seed 1.41x / 1.46x / 1.51x" in text
