"""`ascendra simulate --json` gives the recorded figures for every system x seed x profile x SLO of
the grid (tests/behaviour_grid.py): a restructuring that moves code must not move a decision."""

from __future__ import annotations

import json

import pytest

from tests.behaviour_grid import RECORD, cases, key, run_case

RECORDED = json.loads(RECORD.read_text())


@pytest.mark.parametrize("case", cases(), ids=lambda c: key(*c[:4]))
def test_simulation_matches_the_recorded_figures(case: tuple[str, str, str, int, float]) -> None:
    system, profile, slo, seed, rate = case
    assert run_case(system, profile, slo, seed, rate) == RECORDED[key(system, profile, slo, seed)]
