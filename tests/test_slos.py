"""The SLOs a request may ask for (server/slos.py): the floors from the performance model, the
operator's minimums and named classes, best-effort below the floor, and what /v1/models reports."""

from __future__ import annotations

import pytest

from ascendra.core.slo_floors import SLOFloors
from ascendra.profiles import load_profile
from ascendra.server.slos import AskedSLO, SLOClass, SLOPolicy
from ascendra.server.validation import ApiError

PERF = load_profile("cpu-smollm2").perf_model
FLOORS = SLOFloors(PERF, 1024)


def policy(**kw) -> SLOPolicy:
    return SLOPolicy(SLOClass("default", 5000.0, 1000.0), FLOORS, 8192, **kw)


def refused(p: SLOPolicy, asked: AskedSLO, prompt_len: int = 10) -> ApiError:
    with pytest.raises(ApiError) as e:
        p.grant(asked, prompt_len)
    assert e.value.status == 400
    return e.value


def test_an_slo_below_the_floor_gets_a_400_naming_the_field_and_the_floor():
    p = policy()
    tbt_floor, ttft_floor = 1e3 * FLOORS.tbt, 1e3 * FLOORS.ttft(1500)
    e = refused(p, AskedSLO(tbt_ms=1.0))
    assert e.param == "tbt_slo_ms" and f"at least {tbt_floor:.1f} ms" in e.message
    assert "decode step" in e.message
    e = refused(p, AskedSLO(ttft_ms=1000.0), prompt_len=1500)  # fine for a short prompt, not this one
    assert e.param == "ttft_slo_ms" and f"at least {ttft_floor:.1f} ms" in e.message
    assert "1500 tokens" in e.message
    assert p.grant(AskedSLO(ttft_ms=1000.0), 10).ttft == 1.0
    got = p.grant(AskedSLO(ttft_ms=ttft_floor + 1, tbt_ms=tbt_floor + 1), 1500)
    assert (got.ttft, got.tbt) == pytest.approx(((ttft_floor + 1) / 1e3, (tbt_floor + 1) / 1e3))
    assert got.best_effort == ()
    assert p.grant(AskedSLO(), 100_000).ttft == 5.0  # the server's own defaults are not second-guessed
    card = p.card()["tightest"]
    assert card["tbt_ms"] >= tbt_floor and card["ttft_ms_by_prompt_tokens"]["8192"] > 1e4
    at_card = AskedSLO(tbt_ms=card["tbt_ms"], ttft_ms=card["ttft_ms_by_prompt_tokens"]["1024"])
    p.grant(at_card, 1024)  # what the card says is accepted (no 400)


def test_best_effort_serves_at_the_bound_and_says_so():
    got = policy(below_floor="best-effort").grant(AskedSLO(ttft_ms=1.0, tbt_ms=1.0), 1500)
    assert got.ttft == pytest.approx(FLOORS.ttft(1500)) and got.tbt == pytest.approx(FLOORS.tbt)
    assert got.best_effort == ("ttft", "tbt")


def test_operator_minimums_and_classes():
    p = policy(min_tbt_ms=100.0)
    e = refused(p, AskedSLO(tbt_ms=50.0))
    assert "at least 100.0 ms" in e.message and "--min-tbt-slo-ms" in e.message
    gold = SLOClass("gold", 800.0, 100.0)
    p = policy(classes={"gold": gold})
    got = p.grant(AskedSLO(slo_class="gold"), 10)
    assert (got.ttft, got.tbt, got.best_effort) == (0.8, 0.1, ())
    assert p.grant(AskedSLO(slo_class="default"), 10).tbt == 1.0
    assert refused(p, AskedSLO(tbt_ms=500.0)).param == "tbt_slo_ms"  # classes replace raw SLOs
    assert refused(p, AskedSLO(slo_class="platinum")).param == "slo_class"
    assert refused(p, AskedSLO(slo_class="gold"), prompt_len=1500).param == "slo_class"  # below its floor
    with pytest.raises(ValueError, match="less than this server can honour"):
        policy(classes={"fast": SLOClass("fast", 800.0, 1.0)})
    assert SLOClass.parse("gold=800:100") == gold
    with pytest.raises(ValueError, match="name=ttft_ms:tbt_ms"):
        SLOClass.parse("gold=800")


def test_a_tpot_slo_bounds_the_mean_gap_and_excludes_a_per_gap_one():
    p = policy()
    got = p.grant(AskedSLO(tpot_ms=300.0), 10)
    assert (got.tbt, got.tbt_mean) == (pytest.approx(0.3), True)
    assert p.grant(AskedSLO(tbt_ms=300.0), 10).tbt_mean is False
    assert p.grant(AskedSLO(), 10).tbt_mean is False
    e = refused(p, AskedSLO(tbt_ms=300.0, tpot_ms=300.0))
    assert e.param == "tpot_slo_ms" and "not both" in e.message
    e = refused(p, AskedSLO(tpot_ms=1.0))  # the same floor as a per-gap SLO
    assert e.param == "tpot_slo_ms" and "decode step" in e.message
    mean_default = SLOPolicy(SLOClass("default", 5000.0, 1000.0, tbt_mean=True), FLOORS, 8192)
    assert mean_default.grant(AskedSLO(), 10).tbt_mean is True
    assert mean_default.grant(AskedSLO(tbt_ms=300.0), 10).tbt_mean is False  # the client's word
    assert mean_default.card()["default"]["tbt_mean"] is True
    e = refused(policy(classes={"gold": SLOClass("gold", 800.0, 100.0)}), AskedSLO(tpot_ms=300.0))
    assert e.param == "tpot_slo_ms" and "slo_class" in e.message
