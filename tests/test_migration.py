"""Migration of running requests with their KV (issue 18): when the router moves one, and that a move
loses no token, frees the source's blocks, and gives a live request the tokens it would have had."""

from __future__ import annotations

import pytest

from ascendra.cluster.system import SystemConfig, build_cluster
from ascendra.core.kv_transfer import KVTransfer
from ascendra.core.request import RequestStatus
from ascendra.engine.sim_executor import SimExecutor
from ascendra.runtime.experiment import Scenario
from tests.test_scheduler import CAPACITY, PERF, req

FAST = KVTransfer(1000, 1e9)  # 1 ms per move, plus 1 us per token
SLOW = KVTransfer(1000, 1e9, latency=0.5)  # a link whose transfer alone outlasts what a move saves


def one_step(inst, now: float) -> float:
    b = inst.start_iteration(now)
    out = inst.executor.execute(b)
    inst.complete_iteration(b, out, now + out.duration)
    return now + out.duration


def run_until(inst, now: float, done) -> float:
    """Step a simulated instance until `done()`; returns the time."""
    while not done():
        now = one_step(inst, now)
    return now


def cluster(link: KVTransfer, **system):
    config = SystemConfig("ascendra", 2, num_hp=1, kv_link=link, **system)
    return build_cluster(config, PERF, CAPACITY, lambda i: SimExecutor(PERF, str(i)))


def half_prefilled(link: KVTransfer, ttft: float):
    """An LP instance running 100 decodes and chunking a 3,000-token prompt behind them (two
    iterations in, 312 tokens computed; alone there its first token comes at 0.91 s), and an idle
    HP instance (which would give it at 0.69 s)."""
    (lp, hp), router = cluster(link, token_budget=256)
    for k in range(100):
        lp.add_request(req(f"d{k}", prompt=20, out=500, ttft=100, tbt=10))
    now = run_until(lp, 0.0, lambda: not lp.num_waiting)
    long = req("long", prompt=3000, out=4, arrival=now, ttft=ttft, tbt=10)
    lp.add_request(long)
    now = one_step(lp, one_step(lp, now))
    assert 0 < long.num_computed_tokens < 3000 and not long.output_token_ids
    return lp, hp, router, long, now


def moves(router, now: float) -> list[tuple[str, int]]:
    router.offload(0, now)
    return [(m.request.request_id, m.target) for m in router.take_migrations()]


def test_a_half_prefilled_prompt_moves_with_its_kv_only_when_it_would_be_late_and_the_move_pays():
    # Late where it is (deadline 0.96 s, less the margin), in time on the HP instance: it moves.
    assert moves(*half_prefilled(FAST, 0.6)[2::2]) == [("long", 1)]
    # In time where it is: it stays.
    assert moves(*half_prefilled(FAST, 1.0)[2::2]) == []
    # Late, but half a second of transfer makes it later there than staying: it stays.
    assert moves(*half_prefilled(SLOW, 0.6)[2::2]) == []


def full_batch(link: KVTransfer, tight_tbt: float):
    """An LP instance running 101 decodes (an iteration of them alone takes 15.9 ms), one of them
    with a TBT SLO of `tight_tbt`; the HP instance idle (one decode: 10.0 ms)."""
    (lp, hp), router = cluster(link)
    for k in range(100):
        lp.add_request(req(f"d{k}", prompt=200, out=500, ttft=100, tbt=10))
    lp.add_request(req("tight", prompt=200, out=50, ttft=100, tbt=tight_tbt))
    now = run_until(lp, 0.0, lambda: not lp.num_waiting and all(r.is_decode for r in lp.scheduler.running))
    return lp, hp, router, now


def test_a_decode_whose_tbt_a_full_batch_misses_moves_only_when_the_move_pays():
    assert moves(*full_batch(FAST, 0.015)[2:]) == [("tight", 1)]
    assert moves(*full_batch(FAST, 0.05)[2:]) == []  # its SLO holds where it is
    assert moves(*full_batch(SLOW, 0.015)[2:]) == []  # the transfer's gap outlasts what it saves


def test_a_moved_request_loses_no_token_and_frees_its_source_blocks():
    lp, hp, router, long, now = half_prefilled(FAST, 0.6)
    router.offload(0, now)
    (mv,) = router.take_migrations()
    bm = lp.scheduler.block_manager
    free, held = bm.num_free_blocks, len(long.block_ids)
    moved = lp.migrate_out("long")
    assert bm.num_free_blocks == free + held and "long" not in lp.requests
    assert hp.migrate_in(moved) and len(long.block_ids) == held and hp.scheduler.pending_prefill_tokens > 0
    assert lp.migrate_out("long") is None  # gone from the source
    run_until(hp, now + mv.seconds, lambda: not hp.has_unfinished())
    assert long.status is RequestStatus.FINISHED_LENGTH and long.num_output_tokens == 4
    run_until(lp, now, lambda: not lp.has_unfinished())
    for inst in (lp, hp):
        assert inst.scheduler.block_manager.num_free_blocks == CAPACITY.num_kv_blocks


def test_a_target_without_room_takes_the_request_to_recompute_it():
    lp, hp, router, long, now = half_prefilled(FAST, 0.6)
    moved = lp.migrate_out("long")
    small = build_cluster(SystemConfig("ascendra", 2, num_hp=1), PERF,
                          CAPACITY.__class__(num_kv_blocks=8, max_model_len=8192),
                          lambda i: SimExecutor(PERF, str(i)))[0][1]
    assert not small.migrate_in(moved)  # 312 tokens need 20 blocks
    assert long.num_computed_tokens == 0 and long.status is RequestStatus.WAITING
    assert small.scheduler.pending_prefill_tokens == 3000


@pytest.mark.parametrize("link, expect", [("pcie4", True), (KVTransfer(131072, 1e3), False)])
def test_the_simulator_migrates_under_overload_only_over_a_link_that_pays(link, expect):
    sc = Scenario(profile="a100-llama-3-8b", workload="conv", slo="strict", num_requests=600)
    _, res = sc.run(SystemConfig("ascendra", 4, num_hp=1, kv_link=link), 30.0, 0)
    assert (res.num_migrations > 0) is expect
    assert all(r.status is RequestStatus.FINISHED_LENGTH for r in res.requests)
    assert all(r.num_output_tokens == r.max_tokens == len(r.token_times) for r in res.requests)


# ---- live: two workers on the real model, the KV through the signed codec ----------------------

# Prompt lengths: r0 is chunked 32 tokens at a time; r1 samples at temperature 1 with a seed (its
# sampler's state must move with it), the others are greedy.
LIVE_PROMPTS = {"r0": 90, "r1": 12, "r2": 40}
LIVE_TOKENS = 12


def _live_parts():
    import random

    from ascendra.core.config import SchedulerConfig
    from ascendra.engine.factory import InstanceSpec, build_instance
    from ascendra.model.sampling import SamplingParams
    from ascendra.profiles import load_profile
    from ascendra.runtime.live import messages as m
    from ascendra.runtime.live.wire import new_secret
    from ascendra.runtime.live.worker import WorkerLoop

    rng = random.Random(5)
    codec = m.codec(new_secret())
    greedy = SamplingParams(max_tokens=LIVE_TOKENS, temperature=0.0, ignore_eos=True)
    seeded = SamplingParams(max_tokens=LIVE_TOKENS, temperature=1.0, seed=7, ignore_eos=True)
    adds = {rid: m.AddRequest(k + 1, rid, 0.0, [rng.randrange(1000, 20000) for _ in range(n)], LIVE_TOKENS,
                              5.0, 1.0, frozenset(), seeded if rid == "r1" else greedy)
            for k, (rid, n) in enumerate(LIVE_PROMPTS.items())}

    def worker(index: int) -> WorkerLoop:
        spec = InstanceSpec(dtype="float32", num_blocks=128, policy="ascendra-lp",
                            scheduler=SchedulerConfig(max_num_batched_tokens=32, max_idle_budget=32),
                            perf_model=load_profile("cpu-smollm2").perf_model)
        return WorkerLoop(build_instance(spec), None, codec, index)

    def via_wire(msg: object) -> object:
        return codec.decode(codec.encode(msg))

    return m, adds, worker, via_wire


def _streams(*loops) -> dict[str, tuple[list[int], str, list[str]]]:
    """Per request, over the loops' reports in order: tokens, text and finish reasons."""
    got: dict[str, tuple[list[int], str, list[str]]] = {}
    for loop in loops:
        for out in loop._report.outputs:
            toks, text, reasons = got.setdefault(out.request_id, ([], "", []))
            toks.extend(out.new_token_ids)
            ended = [out.finish_reason] if out.finished else []
            got[out.request_id] = (toks, text + out.text, reasons + ended)
    return got


def _drain(*loops) -> None:
    while any(loop.instance.has_unfinished() for loop in loops):
        for loop in loops:
            if loop.instance.has_unfinished():
                loop._step()


@pytest.fixture(scope="module")
def live():
    """Two workers (each test's runs leave them empty) and the streams of a run without moves."""
    m, adds, worker, via_wire = _live_parts()
    src, dst = worker(0), worker(1)
    for add in adds.values():
        src._handle(via_wire(add))
    _drain(src)
    plain = _streams(src)
    src._report = src._fresh()
    return m, adds, via_wire, src, dst, plain


def _migrate_mid_run(live, spoil=None):
    """r1 decoding and r0 half prefilled on worker 0, both moved to worker 1 (the KV spoilt by
    `spoil` if given); returns the streams and the target."""
    m, adds, via_wire, src, dst, _ = live
    for add in adds.values():
        src._handle(via_wire(add))
    sched = src.instance.scheduler
    r0, r1 = src.instance.requests["r0"], src.instance.requests["r1"]
    for _ in range(20):
        if 0 < r0.num_computed_tokens < 90 and r1.is_decode and r1.num_output_tokens >= 2:
            break
        src._step()
    assert 0 < r0.num_computed_tokens < 90 and r1.num_output_tokens >= 2  # mid-run, both kinds
    held = len(r0.block_ids) + len(r1.block_ids)
    free = sched.block_manager.num_free_blocks
    for seq, rid in ((50, "r1"), (51, "r0")):
        src._handle(via_wire(m.Migrate(seq, rid)))
    assert sched.block_manager.num_free_blocks == free + held  # the source's blocks, freed at once
    assert set(src.instance.requests) == {"r2"}
    for k, moved in enumerate(src._report.migrated):
        assert moved.kv is not None and moved.kv.dtype == "float32"
        if spoil is not None:
            spoil(moved.kv)
        dst._handle(via_wire(m.AddMigrated(60 + k, adds[moved.request_id], moved)))
    landed = {rid: dst.instance.requests[rid].num_computed_tokens for rid in ("r0", "r1")}
    _drain(src, dst)
    for loop in (src, dst):
        assert loop.instance.scheduler.block_manager.num_free_blocks == 128
    streams = _streams(src, dst)
    src._report, dst._report = src._fresh(), dst._fresh()
    return streams, landed


@pytest.mark.slow
def test_a_live_decode_and_a_half_prefilled_prompt_migrate_with_their_kv_and_keep_their_tokens(live):
    plain = live[-1]
    moved, landed = _migrate_mid_run(live)
    assert moved == plain  # tokens, streamed text and finish reasons: unbroken, nothing twice
    assert all(len(toks) == LIVE_TOKENS and reasons == ["length"] for toks, _, reasons in plain.values())
    assert landed["r0"] > 0 and landed["r1"] > 12  # they went on from their KV: nothing recomputed


def _wrong_dtype(kv) -> None:
    kv.dtype = "bfloat16"


def _truncated(kv) -> None:
    kv.data = kv.data[:-4]


def _wrong_shape(kv) -> None:
    kv.shape = [kv.shape[0], 2, kv.shape[2] + 1, *kv.shape[3:]]


def _not_bytes(kv) -> None:
    kv.data = "x" * len(kv.data)


@pytest.mark.slow
@pytest.mark.parametrize("spoil", [_wrong_dtype, _truncated, _wrong_shape, _not_bytes])
def test_kv_that_does_not_fit_is_refused_and_the_request_recomputes_its_tokens(live, spoil):
    plain = live[-1]
    moved, landed = _migrate_mid_run(live, spoil)
    assert moved == plain
    assert landed == {"r0": 0, "r1": 0}  # refused at the door, recomputed from their tokens


def _cluster_config(num_hp: int):
    """A live cluster of two SmolLM2 workers in float32, `num_hp` of them HP."""
    from ascendra.core.config import KVCapacity
    from ascendra.engine.factory import InstanceSpec
    from ascendra.profiles import load_profile
    from ascendra.runtime.live.state import LiveConfig

    return LiveConfig(SystemConfig("ascendra", 2, num_hp=num_hp),
                      InstanceSpec(dtype="float32", num_blocks=64),
                      load_profile("cpu-smollm2").perf_model, KVCapacity(64, 16, 2048))


@pytest.mark.slow
def test_a_live_cluster_moves_a_streaming_request_and_its_stream_goes_on_unbroken():
    """Real worker processes behind the live cluster: a request moved mid-stream with its KV keeps
    streaming, with the tokens of the same request unmoved, and its source holds no block after."""
    import asyncio
    import time

    from ascendra.model.sampling import SamplingParams
    from ascendra.runtime.live import messages as m
    from ascendra.runtime.live.cluster import LiveCluster

    config = _cluster_config(num_hp=0)
    n = 48  # tokens: enough that the request is still running when its move is asked for
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
    prompt = list(range(1000, 1050))

    def add(rid: str) -> m.AddRequest:
        return m.AddRequest(0, rid, time.time(), prompt, n, 5.0, 1.0, frozenset(), params)

    async def tokens_of(tr, until: int | None = None) -> list[int]:
        got: list[int] = []
        while until is None or len(got) < until:
            out = await asyncio.wait_for(tr.queue.get(), 120)
            assert out.error is None, out.error
            got += out.new_token_ids
            if out.finished:
                assert out.finish_reason == "length"
                break
        return got

    async def main() -> tuple[list[int], list[int]]:
        cluster = LiveCluster(config)
        await cluster.start()
        try:
            tr = cluster.submit(add("moved"))
            first = await tokens_of(tr, until=4)
            source = tr.instance
            assert cluster.migrations.start("moved", 1 - source)
            moved = first + await tokens_of(tr)
            assert tr.instance == 1 - source and cluster.migrations.num_migrations == 1
            for _ in range(240):  # the source's next reports: nothing held there any more
                if cluster.views[source].report.blocks_used == 0:
                    break
                await asyncio.sleep(0.25)
            assert cluster.views[source].report.blocks_used == 0
            return moved, await tokens_of(cluster.submit(add("unmoved")))
        finally:
            await cluster.shutdown()

    moved, unmoved = asyncio.run(main())
    assert len(moved) == n and moved == unmoved


@pytest.mark.slow
def test_a_live_steal_that_comes_after_the_request_started_is_refused_and_counted():
    """Live, a steal reaches the LP worker a report and a message after the router decided it (the
    simulator's is instant): a request that started meanwhile stays, streams every token where it
    is, and the refusal is counted (`ascendra_offloads_refused_total`), not taken for an offload."""
    import asyncio
    import time

    from ascendra.model.sampling import SamplingParams
    from ascendra.runtime.live import messages as m
    from ascendra.runtime.live.cluster import LiveCluster
    from ascendra.runtime.live.state import ClusterObserver

    class Counts(ClusterObserver):
        offloads = refused = 0

        def on_offload(self) -> None:
            self.offloads += 1

        def on_offload_refused(self) -> None:
            self.refused += 1

    config = _cluster_config(num_hp=1)
    n = 24
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
    counts = Counts()

    async def main() -> tuple[int, int, int]:
        cluster = LiveCluster(config, counts)
        await cluster.start()
        try:
            tr = cluster.submit(m.AddRequest(0, "r", time.time(), list(range(1000, 1040)), n, 60.0, 60.0,
                                             frozenset(), params))
            got, source = 0, None
            while True:
                out = await asyncio.wait_for(tr.queue.get(), 120)
                assert out.error is None, out.error
                got += len(out.new_token_ids)
                if source is None and got:  # started: its first token is out
                    source = tr.instance
                    cluster.steal(source, "r", 1 - source)
                if out.finished:
                    return got, source, tr.instance
        finally:
            await cluster.shutdown()

    got, source, end = asyncio.run(main())
    assert got == n and end == source
    assert counts.refused == 1 and counts.offloads == 0
