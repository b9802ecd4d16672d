"""Adaptive roles (issue 18): the rule, the role change in a scheduler, in the simulator, and in a
live worker on the real model."""

from __future__ import annotations

import math

import pytest

from ascendra.cluster.roles import DEMOTE, PROMOTE, STAY, AdaptiveRoles, PoolSample
from ascendra.cluster.system import SystemConfig
from ascendra.core.config import SchedulerConfig
from ascendra.core.policies import POLICIES
from ascendra.core.queue import KEY, RequestQueue
from ascendra.core.request import RequestStatus
from ascendra.runtime.experiment import Scenario
from tests.test_scheduler import req, sched, step


def feed(rule: AdaptiveRoles, sample: PoolSample, num_hp: int, num_lp: int, seconds: float,
         t0: float = 0.0, dt: float = 0.1) -> list[int]:
    """The rule's decisions over `seconds` of checks every `dt`, each measuring `sample`."""
    return [rule.sample(t0 + k * dt, sample, num_hp, num_lp) for k in range(round(seconds / dt) + 1)]


def rule(target_hp: int = 1, slo: float = 1.0) -> AdaptiveRoles:
    r = AdaptiveRoles(target_hp)
    r.observe_slo(slo)  # a window of 4 s
    return r


def test_an_idle_hp_pool_beside_a_late_lp_pool_turns_lp_after_a_whole_window():
    r = rule()
    got = feed(r, PoolSample(lp_pressure=1.0, hp_busy=0.0, refused=0), 1, 3, 4.0)
    assert got[:-1] == [STAY] * (len(got) - 1)  # no decision before the window is full
    assert got[-1] == DEMOTE
    # The same pressure with the HP pool at work: it earns its place, nothing changes.
    assert DEMOTE not in feed(rule(), PoolSample(1.0, 0.6, 0), 1, 3, 12.0)


def test_refusals_while_the_hp_pool_is_full_add_an_hp_instance():
    assert feed(rule(), PoolSample(0.6, 1.0, refused=1), 1, 3, 4.0)[-1] == PROMOTE
    # Not while the HP pool has room (its refusals are requests no instance could save) ...
    assert PROMOTE not in feed(rule(), PoolSample(0.6, 0.5, 1), 1, 3, 12.0)
    # ... nor when it would leave no LP instance.
    assert PROMOTE not in feed(rule(), PoolSample(0.6, 1.0, 1), 1, 1, 12.0)


def test_a_calm_window_leads_back_to_the_split_at_rest():
    calm = PoolSample(0.0, 0.0, 0)
    assert feed(rule(target_hp=1), calm, 0, 4, 4.0)[-1] == PROMOTE
    assert feed(rule(target_hp=1), calm, 2, 2, 4.0)[-1] == DEMOTE
    assert set(feed(rule(target_hp=1), calm, 1, 3, 12.0)) == {STAY}


def test_without_hp_instances_an_overload_does_not_flap_the_roles():
    # Under the overload that emptied the HP pool every at-risk request is refused (there is no HP
    # instance to take it); promoting on that alone would undo the demotion a window later.
    assert set(feed(rule(), PoolSample(1.0, 0.0, refused=5), 0, 4, 20.0)) == {STAY}


def test_between_the_thresholds_nothing_changes():
    assert set(feed(rule(), PoolSample(0.3, 0.5, 0), 1, 3, 20.0)) == {STAY}


def test_the_window_is_a_few_ttft_slos_and_starts_again_after_a_decision():
    r = rule(slo=2.0)  # 8 s windows
    overload = PoolSample(1.0, 0.0, 0)
    assert DEMOTE not in feed(r, overload, 1, 3, 7.5)
    assert feed(r, overload, 1, 3, 1.0, t0=7.5).index(DEMOTE) == 5  # at 8 s
    assert DEMOTE not in feed(r, overload, 1, 3, 7.0, t0=8.6)  # a fresh window from 8 s to 16 s
    assert DEMOTE in feed(r, overload, 1, 3, 0.5, t0=15.7)


def test_queue_reorder_serves_the_same_requests_in_the_new_order_with_their_columns():
    q = RequestQueue(lambda r: r.num_remaining_prefill)
    rs = [req(f"r{i}", prompt=p, arrival=a, ttft=t) for i, (p, a, t) in
          enumerate([(50, 0.0, 9.0), (10, 1.0, 9.0), (30, 2.0, 1.0), (20, 3.0, 5.0)])]
    for r in rs:
        q.push(r)
    assert [r.request_id for r in q] == ["r1", "r3", "r2", "r0"]
    q.reorder(lambda r: r.ttft_deadline)  # deadlines 9, 10, 3, 8
    assert [r.request_id for r in q] == ["r2", "r3", "r0", "r1"]
    assert list(q.columns[KEY]) == [3.0, 8.0, 9.0, 10.0]


def test_a_scheduler_changes_policy_with_everything_it_holds():
    s = sched("ascendra-lp")
    running = req("run", 16, out=4)
    s.add_request(running)
    step(s, 0.0)  # its prompt is computed: it decodes from now on
    waiting = [req("long-urgent", 400, ttft=0.5), req("short-lax", 20, ttft=9.0)]
    for r in waiting:
        s.add_request(r)
    assert [r.request_id for r in s.waiting] == ["short-lax", "long-urgent"]  # shortest first
    hp_config = SchedulerConfig(tbt_target=0.8)
    s.change_policy(POLICIES["ascendra-hp"], hp_config)
    assert s.name == "ascendra-hp" and s.config is hp_config
    assert [r.request_id for r in s.waiting] == ["long-urgent", "short-lax"]  # earliest deadline first
    assert s.running == [running]
    now, done = 0.0, []
    while s.has_unfinished():
        now += 0.1
        done += step(s, now)[1]
    assert sorted(r.request_id for r in done) == ["long-urgent", "run", "short-lax"]
    assert all(r.status is RequestStatus.FINISHED_LENGTH for r in done)
    assert all(r.num_output_tokens == r.max_tokens for r in done)
    assert s.block_manager.num_free_blocks == s.block_manager.num_blocks
    with pytest.raises(ValueError, match="schedule differently"):
        s.change_policy(POLICIES["vllm"], SchedulerConfig())


def test_roles_change_under_overload_in_the_simulator_and_no_request_fails():
    sc = Scenario(profile="a100-llama-3-8b", workload="conv", slo="strict", num_requests=800)
    summary, res = sc.run(SystemConfig("ascendra", 4, num_hp=1, adaptive_roles=True), 40.0, 1)
    assert res.num_role_changes >= 1
    assert all(r.status is RequestStatus.FINISHED_LENGTH for r in res.requests)
    assert all(r.num_output_tokens == r.max_tokens == len(r.token_times) for r in res.requests)
    static = sc.run(SystemConfig("ascendra", 4, num_hp=1), 40.0, 1)[1]
    assert static.num_role_changes == 0


@pytest.mark.slow
def test_a_live_worker_changes_role_mid_run_and_its_tokens_are_the_unchanged_runs():
    """The worker's side of a role change, on the real model: the message through the signed codec,
    the queue re-sorted, nothing drained, and every greedy token what the run without it gave."""
    import random

    from ascendra.engine.factory import InstanceSpec, build_instance
    from ascendra.model.sampling import SamplingParams
    from ascendra.profiles import load_profile
    from ascendra.runtime.live import messages as m
    from ascendra.runtime.live.wire import new_secret
    from ascendra.runtime.live.worker import WorkerLoop

    rng = random.Random(3)
    prompts = [[rng.randrange(1000, 20000) for _ in range(n)] for n in (90, 12, 60, 30, 45)]
    codec = m.codec(new_secret())
    small = SchedulerConfig(max_num_batched_tokens=32, max_idle_budget=32)  # prompts queue for a while

    def via_wire(msg: object) -> object:
        return codec.decode(codec.encode(msg))

    def run(change_after: int | None) -> tuple[dict[str, list[int]], list[str]]:
        spec = InstanceSpec(dtype="float32", num_blocks=128, policy="ascendra-lp", scheduler=small,
                            perf_model=load_profile("cpu-smollm2").perf_model)
        loop = WorkerLoop(build_instance(spec), None, codec, 0)
        params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
        for i, p in enumerate(prompts):
            loop._handle(via_wire(m.AddRequest(i + 1, f"r{i}", 0.0, p, 10, 5.0, 1.0, frozenset(), params)))
        steps = 0
        while loop.instance.has_unfinished():
            if steps == change_after:
                order = [r.request_id for r in loop.instance.scheduler.waiting]
                assert len(order) >= 2 and loop.instance.scheduler.running  # mid-run, not between runs
                hp = SchedulerConfig(max_num_batched_tokens=32, max_idle_budget=32, tbt_target=0.8)
                loop._handle(via_wire(m.ChangeRole(99, "ascendra-hp", hp, False)))
                assert loop.instance.scheduler.name == "ascendra-hp"
                assert sorted(r.request_id for r in loop.instance.scheduler.waiting) == sorted(order)
            loop._step()
            steps += 1
        tokens: dict[str, list[int]] = {}
        reasons = []
        for out in loop._report.outputs:
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finished:
                reasons.append(out.finish_reason)
        assert loop.instance.scheduler.block_manager.num_free_blocks == 128
        return tokens, reasons

    plain, _ = run(None)
    changed, reasons = run(2)
    assert reasons == ["length"] * len(prompts)
    assert changed == plain and all(len(t) == 10 for t in plain.values())


def test_an_idle_instance_takes_its_share_of_an_lp_backlog_only_with_adaptive_roles():
    from ascendra.cluster.system import build_cluster
    from ascendra.engine.sim_executor import SimExecutor
    from tests.test_scheduler import CAPACITY, PERF

    for adaptive in (True, False):
        system = SystemConfig("ascendra", 2, num_hp=1, adaptive_roles=adaptive)
        (lp, hp), router = build_cluster(system, PERF, CAPACITY, lambda i: SimExecutor(PERF, str(i)))
        backlog = [req(f"r{n}", prompt=n, ttft=1e6) for n in (100, 400, 200, 300, 500, 50)]  # none at risk
        for r in backlog:
            lp.add_request(r)
        moves = router.offload(0, 0.0)
        if not adaptive:
            assert moves == [] and hp.num_waiting == 0
            continue
        # The longest (the last SRPT serves), up to about half of the 1,550 prompt tokens waiting.
        assert [(r.request_id, j) for r, j in moves] == [("r500", 1), ("r400", 1)]
        assert [r.request_id for r in hp.scheduler.waiting] == ["r500", "r400"]
        assert [r.request_id for r in lp.scheduler.waiting] == ["r50", "r100", "r200", "r300"]
        assert router.offload(0, 0.0) == []  # the other instance has prompt work now


def test_after_a_role_change_an_instance_has_its_metrics_under_the_new_role_alone():
    from prometheus_client import generate_latest

    from ascendra.core.iteration_stats import IterationStats
    from ascendra.runtime.live.messages import Snapshot
    from ascendra.runtime.live.state import WorkerState
    from ascendra.server.launch import metric
    from ascendra.server.metrics import ServerMetrics

    metrics = ServerMetrics()
    w = WorkerState(0, "lp", "ascendra-lp", None)
    stats = IterationStats()
    stats.record(0.03, 0.03)
    metrics.on_report(w, Snapshot(blocks_used=7, num_blocks=10, iterations=stats))
    w.role = "hp"
    metrics.on_role_change(w, "lp")
    stats.record(0.3, 0.03)  # a stall: the histogram's top bucket
    metrics.on_report(w, Snapshot(blocks_used=3, num_blocks=10, iterations=stats))
    text = generate_latest(metrics.registry).decode()
    assert metric(text, "ascendra_kv_blocks_used", instance="0") == 3  # not 3 + the stale 7
    assert not [line for line in text.splitlines() if 'instance="0",role="lp"' in line]
    bucket = "ascendra_instance_iteration_log_ratio_bucket"
    assert metric(text, bucket, instance="0", role="hp") == 2
    assert metric(text, bucket, instance="0", band="0.05", le="0") == 1  # log(1) = 0: the bucket up to 0
    assert metric(text, f"{bucket}_sum", instance="0", band="0.05", le="2.4") == pytest.approx(math.log(10))
    assert metric(text, "ascendra_role_changes_total", role="hp") == 1
