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
    from ascendra.core.batch import BatchShape
    from ascendra.core.request import SLO
    from ascendra.vllm_engine.mirrors import Mirrors
    from ascendra.vllm_engine.scheduler import LPScheduler
    from ascendra.vllm_engine.steps import Step, StepBook

    long, dec = _request(vllm_types, "long", 1000), _request(vllm_types, "dec", 10)
    dec.num_computed_tokens = 10
    dec.append_output_token_ids(5)
    long.num_computed_tokens, dec.num_computed_tokens = 1000, 11  # as vLLM leaves them, scheduled
    sched = object.__new__(LPScheduler)  # only the state these two methods read
    sched.mirrors, sched.running = Mirrors(SLO(5.0, 1.0)), [long, dec]
    sched.steps = StepBook()
    sched.steps.scheduled(Step(0.0, BatchShape(), 0.0, 0.0, 0.0, 0, 1024, 1.0, {"long": 1000, "dec": 1}))

    num_decodes, _, _, prefilling = sched._decode_state(0.0)  # the budget's view
    assert num_decodes == 2 and prefilling == []
    num_decodes, context, _, prefilling = sched._decode_state(0.0, sched.steps.in_flight())  # the report's
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


def _real_scheduler(cls, tmp_path, monkeypatch, env: dict):
    """One of our vLLM schedulers as vLLM builds it (`--scheduler-cls`), on a real vLLM config and
    KV cache of 200 blocks, in this process: no model runs, `schedule()` is vLLM's own."""
    import torch
    from transformers import LlamaConfig
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tiny = LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=128, vocab_size=4096, max_position_embeddings=2048)
    tiny.save_pretrained(tmp_path)
    model = ModelConfig(model=str(tmp_path), max_model_len=2048, dtype="float32", skip_tokenizer_init=True)
    sched = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=512, max_model_len=2048,
                            is_encoder_decoder=False, enable_chunked_prefill=True)
    cache = CacheConfig(block_size=16, enable_prefix_caching=False)
    cache.num_gpu_blocks = 200  # what the engine sets once it has sized its KV cache
    config = VllmConfig(model_config=model, scheduler_config=sched, cache_config=cache)
    spec = FullAttentionSpec(block_size=16, num_kv_heads=1, head_size=32, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=200, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l0"], spec)])
    return cls(vllm_config=config, kv_cache_config=kv,
               structured_output_manager=StructuredOutputManager(config), block_size=16)


@pytest.mark.parametrize("awaits", [True, False])
def test_an_lp_engine_holds_a_new_arrival_for_the_routers_offload_check(vllm_types, tmp_path, monkeypatch,
                                                                        awaits):
    """vLLM admits a waiting request within a step, and a started one cannot be offloaded. So an LP
    engine under a router that offloads reports a new arrival and holds the step that would start
    it until the router has checked that report (`Checked`); a steal sent before the check is
    applied first, and the request never starts here. Without the wait it starts at once."""
    import threading

    import zmq

    from ascendra.runtime.live import messages as m
    from ascendra.vllm_engine import plugin_config as pc
    from ascendra.vllm_engine.scheduler import LPScheduler

    # The wait's bound is for a router that does not answer; here the router answers when it has read.
    monkeypatch.setattr("ascendra.vllm_engine.scheduler.OFFLOAD_CHECK_WAIT_S", 600.0)
    secret, endpoint = b"s" * 16, f"ipc://{tmp_path}/router.sock"
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    codec = m.codec(secret)
    env = {pc.ROUTER: endpoint, pc.SECRET: secret.hex(), pc.PROFILE: "cpu-smollm2",
           pc.AWAIT_CHECK: "1" if awaits else "0"}
    sched = _real_scheduler(LPScheduler, tmp_path, monkeypatch, env)
    try:
        sched.add_request(_request(vllm_types, "long", 1500, ascendra_id="r1"))
        done: dict = {}
        step = threading.Thread(target=lambda: done.update(out=sched.schedule()))
        step.start()
        if not awaits:
            step.join(600)
            assert done["out"].num_scheduled_tokens.get("long", 0) > 0  # started: nothing can move it
            return
        while True:  # the hello and the idle report first, then the arrival's
            if not router.poll(100):
                assert step.is_alive(), "the step went on without waiting for the router's check"
                continue
            route, frame = router.recv_multipart()
            rep = codec.decode(frame)
            if isinstance(rep, m.Report) and rep.awaits_check:
                break
        assert [e.request_id for e in rep.snapshot.waiting] == ["r1"] and step.is_alive()
        router.send_multipart([route, codec.encode(m.Steal(1, "r1"))])  # the router's order: steals,
        router.send_multipart([route, codec.encode(m.Checked(2, rep.number))])  # then the check
        step.join(600)
        assert done["out"].num_scheduled_tokens == {} and "long" not in sched.requests
        assert sched.num_stolen == 1 and sched._stolen == ["r1"]  # the next report hands it over
    finally:
        sched.shutdown()
        router.close(0)
        ctx.term()
