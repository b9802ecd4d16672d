"""The vLLM plugin's waiting queue and request mirrors, on vLLM's own Request objects (no engine).

vLLM's scheduler walks `self.waiting` by peek/pop/prepend/remove; these tests drive our queue the
same way and check that it serves in the policy's order, with the same deferral rule as our engine,
and that a request's SLOs come from its `vllm_xargs` and nothing a client sends can break them.
Skipped where vLLM is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed (pip install -e '.[vllm]'; see the README)")


@pytest.fixture(scope="module")
def vllm_types():
    from vllm import SamplingParams
    from vllm.v1.request import Request

    return Request, SamplingParams


def _request(vllm_types, rid: str, prompt_len: int, arrival: float = 0.0, **xargs):
    Request, SamplingParams = vllm_types
    params = SamplingParams(max_tokens=8, extra_args=xargs or None)
    return Request(rid, list(range(1, prompt_len + 1)), params, None, arrival_time=arrival)


def _queue(policy, perf=None):
    from ascendra.core.request import SLO
    from ascendra.vllm_engine.mirrors import Mirrors
    from ascendra.vllm_engine.waiting_queue import PolicyWaitingQueue

    return PolicyWaitingQueue(policy, Mirrors(SLO(5.0, 1.0)), perf.prefill_time if perf else None)


def test_lp_queue_serves_shortest_prompt_first(vllm_types):
    from ascendra.core.policies.ascendra_lp import AscendraLPScheduler

    q = _queue(AscendraLPScheduler)
    reqs = {n: _request(vllm_types, f"r{n}", n, arrival=i) for i, n in enumerate((50, 10, 30, 20))}
    for r in reqs.values():
        q.add_request(r)
    q.begin_step(0.0, 1.0)
    assert [r.num_prompt_tokens for r in q] == [10, 20, 30, 50]
    assert q.peek_request() is reqs[10] and q.pop_request() is reqs[10]
    q.remove_request(reqs[30])
    assert [r.num_prompt_tokens for r in q] == [20, 50] and len(q) == 2
    q.prepend_request(reqs[10])  # put back (skipped this step): it takes its place by its key
    assert [r.num_prompt_tokens for r in q] == [10, 20, 50]
    with pytest.raises(ValueError):
        q.remove_request(reqs[30])


def _three_deadlines(vllm_types) -> tuple:
    """Requests whose shortest-first and earliest-deadline-first orders differ."""
    a = _request(vllm_types, "a", 10, ascendra_arrival=100.0, ttft_slo=9.0)  # deadline 109
    b = _request(vllm_types, "b", 50, ascendra_arrival=101.0, ttft_slo=2.0)  # deadline 103
    c = _request(vllm_types, "c", 30, ascendra_arrival=99.0, ttft_slo=5.0)  # deadline 104
    return a, b, c


def test_hp_queue_serves_earliest_deadline_first(vllm_types):
    from ascendra.core.policies.ascendra_hp import AscendraHPScheduler

    q = _queue(AscendraHPScheduler)
    for r in _three_deadlines(vllm_types):
        q.add_request(r)
    q.begin_step(100.0, 1.0)
    assert [r.request_id for r in q] == ["b", "c", "a"]


def test_a_role_change_reorders_the_same_waiting_requests(vllm_types):
    from ascendra.core.policies.ascendra_hp import AscendraHPScheduler
    from ascendra.core.policies.ascendra_lp import AscendraLPScheduler

    q = _queue(AscendraLPScheduler)
    a, b, c = _three_deadlines(vllm_types)
    for r in (a, b, c):
        q.add_request(r)
    q.begin_step(100.0, 1.0)
    assert q.peek_request() is a  # shortest first
    q.change_policy(AscendraHPScheduler)
    assert [r.request_id for r in q] == ["b", "c", "a"] and q.peek_request() is b
    q.change_policy(AscendraLPScheduler)
    assert [r.request_id for r in q] == ["a", "c", "b"]


def test_a_request_past_saving_waits_behind_the_others(vllm_types):
    """The Ascendra rule (`misses_deadline`), read from the same columns as on our engine: a prompt
    that cannot make its deadline even alone goes after those that still can."""
    from ascendra.core.policies.ascendra_lp import AscendraLPScheduler
    from ascendra.profiles import load_profile

    perf = load_profile("cpu-smollm2").perf_model
    q = _queue(AscendraLPScheduler, perf)
    late = _request(vllm_types, "late", 10, ascendra_arrival=0.0, ttft_slo=0.5)
    fine = _request(vllm_types, "fine", 40, ascendra_arrival=0.0, ttft_slo=60.0)
    q.add_request(late)
    q.add_request(fine)
    q.begin_step(0.0, 1.0)
    assert [r.request_id for r in q] == ["late", "fine"]  # at 0 s both can: shortest first
    q.begin_step(0.6, 1.0)  # past the short one's deadline
    assert [r.request_id for r in q] == ["fine", "late"]
    assert q.pop_request() is fine and q.pop_request() is late and not q


def test_mirror_slos_from_xargs_and_defaults_for_anything_else(vllm_types):
    from ascendra.core.request import SLO
    from ascendra.vllm_engine.mirrors import Mirrors

    m = Mirrors(SLO(5.0, 1.0))
    ok = m.add(_request(vllm_types, "x", 12, arrival=3.0, ascendra_id="cmpl-1", ttft_slo=2.0, tbt_slo=0.2))
    assert (ok.request_id, ok.slo.ttft, ok.slo.tbt, ok.arrival_time) == ("cmpl-1", 2.0, 0.2, 3.0)
    assert m.by_router_id("cmpl-1").request_id == "x"  # how the router's steals find it
    for bad in ({"ttft_slo": -1}, {"ttft_slo": "fast"}, {"ttft_slo": 1e300}, {"ttft_slo": float("nan")}):
        r = m.add(_request(vllm_types, f"b{len(m)}", 5, arrival=7.0, **bad))
        assert (r.slo.ttft, r.slo.tbt, r.arrival_time) == (5.0, 1.0, 7.0)
    assert m.drop("x") is ok and m.get("x") is None and m.by_router_id("cmpl-1") is None


def test_the_router_sees_the_prompt_tokens_of_a_step_in_flight(vllm_types):
    """vLLM counts a step's tokens as computed when it schedules the step, and async scheduling keeps
    a step in flight whenever the plugin reports. The next step's budget must count a prompt whose
    last chunk is in flight as a decode; the router's report must count its tokens as still to
    compute, or an engine busy with a 1,000-token prompt looks idle and gets the next arrival."""
    from collections import deque

    from ascendra.core.batch import BatchShape
    from ascendra.core.request import SLO
    from ascendra.vllm_engine.mirrors import Mirrors
    from ascendra.vllm_engine.scheduler import LPScheduler, _Step

    long, dec = _request(vllm_types, "long", 1000), _request(vllm_types, "dec", 10)
    dec.num_computed_tokens = 10
    dec.append_output_token_ids(5)
    long.num_computed_tokens, dec.num_computed_tokens = 1000, 11  # as vLLM leaves them, scheduled
    sched = object.__new__(LPScheduler)  # only the state these two methods read
    sched.mirrors, sched.running = Mirrors(SLO(5.0, 1.0)), [long, dec]
    sched._steps = deque([_Step(0.0, BatchShape(), 0.0, 0.0, 0.0, 0, 1024, 1.0, {"long": 1000, "dec": 1})])

    num_decodes, _, _, prefilling = sched._decode_state(0.0)  # the budget's view
    assert num_decodes == 2 and prefilling == []
    num_decodes, context, _, prefilling = sched._decode_state(0.0, sched._in_flight())  # the report's
    assert num_decodes == 1 and context == 11
    assert [(r.request_id, r.num_remaining_prefill) for r in prefilling] == [("long", 1000)]


def test_a_started_prompt_sits_out_a_step_for_a_shorter_arrival(vllm_types):
    """vLLM gives running requests a step's budget before any waiting one; the policy merges partly
    prefilled prompts with the waiting ones by key, as on our engine. So a started long prompt whose
    remainder is longer than the first waiting prompt sits out the step; a shorter remainder, a
    decode, or a waiting prompt past saving (deferred behind everything) holds nothing back."""
    from ascendra.core.policies.ascendra_lp import AscendraLPScheduler
    from ascendra.profiles import load_profile

    q = _queue(AscendraLPScheduler, load_profile("cpu-smollm2").perf_model)
    sizes = (("long", 1000), ("nearly", 300), ("dec", 10))
    long, nearly, dec = (_request(vllm_types, rid, n) for rid, n in sizes)
    long.num_computed_tokens, nearly.num_computed_tokens, dec.num_computed_tokens = 200, 280, 10
    dec.append_output_token_ids(5)
    short = _request(vllm_types, "short", 50, ascendra_arrival=0.0, ttft_slo=60.0)
    q.add_request(short)
    q.begin_step(0.0, 1.0)
    assert q.served_after_head([long, nearly, dec]) == [long]  # 800 left against 50; 20 left goes first
    q.begin_step(61.0, 1.0)  # the short prompt is past saving: it waits behind everything
    assert q.served_after_head([long, nearly, dec]) == []
    q.pop_request()
    assert q.served_after_head([long, nearly, dec]) == []  # nothing waiting
