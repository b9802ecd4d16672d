"""The protected budget (core/budget.py) on the simulator's clock: four clients at the tightest TBT
SLO a server accepts (the smallest decode step) cannot stretch another client's first token past
1/share of what it is beside four clients at the default SLOs."""

from __future__ import annotations

import dataclasses

import pytest

from ascendra.cluster.system import SystemConfig
from ascendra.core.batch import BatchShape
from ascendra.core.budget import budget_limit, time_limit
from ascendra.core.config import KVCapacity, SchedulerConfig
from ascendra.core.request import SLO, Request
from ascendra.core.slo_floors import SLOFloors
from ascendra.profiles import load_profile
from ascendra.runtime.sim import simulate

PERF = dataclasses.replace(load_profile("cpu-smollm2").perf_model, spread=0.0)  # exactly the model
DEFAULT = SLO(5.0, 1.0)  # `ascendra serve`'s default SLOs
TIGHTEST_TBT = SLOFloors(PERF, 1024).tbt


def victim_ttft(client_tbt: float, protected: bool, share: float = SchedulerConfig.protected_share) -> float:
    """One LP instance: 4 clients decoding (outputs longer than the run), then a 1,500-token prompt
    at the default SLOs; its TTFT in simulated seconds."""
    clients = [Request(f"c{k}", 0.01 * k, 12, 2000, SLO(DEFAULT.ttft, client_tbt)) for k in range(4)]
    victim = Request("victim", 1.0, 1500, 2, DEFAULT)
    system = SystemConfig("ascendra", num_instances=1, num_hp=0, protected_share=share,
                          protected_ttft=DEFAULT.ttft if protected else None,
                          protected_tbt=DEFAULT.tbt if protected else None)
    simulate(system, PERF, [*clients, victim], capacity=KVCapacity(8192, 16, 8192))
    return victim.ttft


def test_tight_tbt_clients_cost_another_prompt_at_most_the_protected_share():
    alone_beside_defaults = victim_ttft(DEFAULT.tbt, protected=True)
    ratio = victim_ttft(TIGHTEST_TBT, protected=True) / alone_beside_defaults
    assert ratio <= 1 / SchedulerConfig.protected_share + 0.05, ratio  # 0.9: measured 1.10
    # Unprotected, the same clients hold the prompt back for minutes (measured 47x): the rule is
    # what keeps it.
    assert victim_ttft(TIGHTEST_TBT, protected=False) / alone_beside_defaults > 10


@pytest.mark.parametrize("share", [0.5, 0.75])
def test_the_share_sets_the_bound(share: float):
    ratio = victim_ttft(TIGHTEST_TBT, True, share) / victim_ttft(DEFAULT.tbt, True, share)
    assert ratio <= 1 / share + 0.05, (share, ratio)


def test_the_limit_is_raised_only_as_far_as_the_share_needs():
    cfg = SchedulerConfig(max_num_batched_tokens=1024, protected_ttft=5.0, protected_tbt=1.0,
                          protected_share=0.75)
    base = BatchShape.of(decodes=[100] * 4)
    # SLOs at or looser than the protected ones: the limit they ask for, untouched.
    assert budget_limit(cfg, PERF, 1.0, base, 1.0, 5.0) == time_limit(cfg, 1.0, 5.0)
    assert budget_limit(cfg, PERF, 1.0, base, 2.0, None) == time_limit(cfg, 2.0, None)
    # A tight TBT whose iterations still leave prompts 75% of the protected share: untouched.
    assert budget_limit(cfg, PERF, 1.0, base, 0.5, None) == time_limit(cfg, 0.5, None)
    # The tightest: raised to where prompts keep exactly 75% of their share of the time.
    limit = budget_limit(cfg, PERF, 1.0, base, TIGHTEST_TBT, None)
    assert limit > time_limit(cfg, TIGHTEST_TBT, None)
    fixed = PERF.predict(BatchShape.of([(0, 0)], decodes=[100] * 4))
    for slowdown in (1.0, 2.0):  # real seconds in and out; the shares are of model seconds
        n_ref = PERF.max_prefill_tokens(base, 0.9 / slowdown, 0, 1020)
        t_ref = PERF.predict(BatchShape.of([(0, n_ref)], decodes=[100] * 4))
        model = budget_limit(cfg, PERF, slowdown, base, TIGHTEST_TBT, None) / slowdown
        assert 1 - fixed / model == pytest.approx(0.75 * (1 - fixed / t_ref))
    # Share 0: every SLO shapes the budget as it asks.
    cfg.protected_share = 0.0
    assert budget_limit(cfg, PERF, 1.0, base, TIGHTEST_TBT, None) == time_limit(cfg, TIGHTEST_TBT, None)
