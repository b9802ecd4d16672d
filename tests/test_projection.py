"""The router projects what the schedulers will do: for random queues and every policy, each
waiting request's projected first-token time is compared with what playing that instance's own
`schedule()` forward gives; and so is the HP insertion that decides an offload.

The replay keeps the projection's premise: the waiting requests end at their first token (no new
decodes join), the running decodes go on, nothing new arrives. One case is excused, and counted:
the Ascendra policies serve last a request whose turn comes after its latest start, so a request
whose turn falls within one iteration of that boundary may go either way, and everything served
after it moves by its whole prefill. Requests behind such a one are not judged; the test demands
that most requests are judged all the same.

Measured over 60 random queues per policy (`python tests/test_projection.py`): vLLM 100% of the
judged requests within one iteration, Sarathi 99.95%, Ascendra LP 98.6% and HP 97.5%, all within
2.1 iterations. The projection is fluid (a long prompt's chunks, the attention they carry and the
Ascendra time budget taken as averages), so the Ascendra policies miss the one-iteration mark on a
few percent; the test holds every policy to 95% within one iteration and all within 2.5. With
the protected budget binding (core/budget.py; `queue(..., protected=True)`), Ascendra LP 98.0% and
HP 98.8%, all within 2.1 iterations.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from ascendra.cluster.first_tokens import project
from ascendra.core.block_manager import BlockManager
from ascendra.core.config import SchedulerConfig
from ascendra.core.policies import POLICIES, make_scheduler
from ascendra.core.request import SLO, Request
from ascendra.core.scheduler import Scheduler
from ascendra.profiles import load_profile

PERF = load_profile("a100-llama-3-8b").perf_model


def queue(policy: str, seed: int, protected: bool = False) -> tuple[Scheduler, list[Request], float]:
    """Decoding requests (outputs long enough to outlast the horizon) and a random waiting queue,
    a share of it with TTFT SLOs tight enough for some to be deferred. `protected`: SLOs tighter
    than 0.3 s TBT and 0.6 s TTFT shape the budget only down to the protected share
    (core/budget.py), which then binds in most queues."""
    rng = random.Random(seed)
    budget = 8192 if policy == "vllm" else rng.choice([512, 1024, 2048])
    cfg = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=512)
    if protected:
        cfg.protected_tbt, cfg.protected_ttft, cfg.protected_share = 0.3, 0.6, rng.choice([0.5, 0.75, 0.9])
    s = make_scheduler(policy, cfg, BlockManager(200_000, 16), PERF)
    decodes = [Request(f"d{i}", 0.0, rng.randint(50, 2000), 10**6, SLO(100.0, rng.uniform(0.05, 0.5)))
               for i in range(rng.choice([0, 4, 16, 48]))]
    for r in decodes:
        s.add_request(r)
    now = 0.0
    while any(not r.output_token_ids for r in decodes):
        b = s.schedule(now)
        now += PERF.predict(b.shape)
        s.update(b, None, now)
    tight = rng.choice([0.0, 0.3, 0.7])
    waiting = []
    for i in range(rng.randint(5, 60)):
        ttft = rng.uniform(0.05, 1.0) if rng.random() < tight else 100.0
        r = Request(f"w{i}", now - rng.uniform(0, 0.05), rng.randint(1, 3000), 1, SLO(ttft, 0.2))
        s.add_request(r)
        waiting.append(r)
    return s, waiting, now


def replay(s: Scheduler, requests: list[Request], now: float) -> float:
    """Play the scheduler forward until every one of `requests` has its first token; returns the
    longest iteration."""
    longest = 0.0
    while any(not r.output_token_ids for r in requests):
        b = s.schedule(now)
        assert b.requests, "the instance stopped with work left"
        d = PERF.predict(b.shape)
        longest = max(longest, d)
        now += d
        s.update(b, None, now)
    return longest


def judged_errors(first, requests, iteration: float) -> tuple[list[float], int]:
    """Real minus projected first-token time, in iterations, for the requests served before any
    borderline one; and how many were borderline. A borderline request, deferred or not, stands
    at its place in the queue order; the deferred ones all come after every other."""
    on_time = [i for i in range(len(requests)) if not first.late[i]]
    order = on_time + [i for i in range(len(requests)) if first.late[i]]
    errors, borderline = [], 0
    cut = next((k for k, i in enumerate(range(len(requests))) if abs(first.slack[i]) <= iteration), None)
    for i in order:
        if abs(first.slack[i]) <= iteration:
            borderline += 1
        if cut is not None and (i >= cut or first.late[i]):
            continue
        errors.append((requests[i].token_times[0] - first.times[i]) / iteration)
    return errors, borderline


@pytest.mark.parametrize(("policy", "protected"), [(p, False) for p in sorted(POLICIES)]
                         + [("ascendra-lp", True), ("ascendra-hp", True)])
def test_projected_first_tokens_match_the_schedule_played_forward(policy: str, protected: bool) -> None:
    judged = total = within = 0
    for seed in range(60):
        s, _, now = queue(policy, seed, protected)
        snap = s.snapshot()
        first, _ = project(snap, now)
        in_order = list(snap.waiting)  # the projection's order, before the replay empties it
        iteration = replay(s, in_order, now)
        errors, _ = judged_errors(first, in_order, iteration)
        assert all(abs(e) <= 2.5 for e in errors), (seed, min(errors), max(errors))
        within += sum(abs(e) <= 1.0 for e in errors)
        judged, total = judged + len(errors), total + len(in_order)
    # The protected budget makes iterations longer, so more requests fall within one of the
    # deferral boundary and go unjudged (HP: 41% judged; 53% without it).
    assert judged >= (0.4 if protected else 0.5) * total, (judged, total)
    assert within >= 0.95 * judged, (within, judged)


def test_hp_insertion_projects_where_the_hp_instance_will_serve_the_request() -> None:
    judged = 0
    for seed in range(16):
        s, _, now = queue("ascendra-hp", seed)
        rng = random.Random(1000 + seed)
        joining = Request("joining", now, rng.randint(16, 2500), 1, SLO(rng.uniform(0.2, 3.0), 0.2))
        first, at = project(s.snapshot(), now, joining=joining)
        s.add_request(joining)
        iteration = replay(s, list(s.waiting), now)
        ahead_borderline = any(abs(first.slack[i]) <= iteration for i in range(len(first.times))
                               if first.times[i] <= first.times[at])
        if ahead_borderline:
            continue
        assert abs(joining.token_times[0] - first.times[at]) <= iteration, seed
        judged += 1
    assert judged >= 8


@pytest.mark.filterwarnings("error")  # numpy's "invalid value" warning is how a NaN appears
def test_a_queue_that_no_budget_fits_projects_infinity_not_nan() -> None:
    """Slow enough (a learnt slowdown of 3), the Ascendra budget fits no prompt token beside the
    decodes at some positions: those requests, and every one served after them, get their first
    token never. NaN (inf - inf) compared false with every deadline, so the router never offloaded
    them: in 12 of these 40 queues before the fix."""
    infinite = 0
    for seed in range(40):
        s, _, now = queue("ascendra-lp", seed)
        s.slowdown = s.step_slowdown = 3.0  # every iteration 3x: the typical one too
        first, _ = project(s.snapshot(), now)
        assert not np.isnan(first.times).any(), seed
        infinite += int(np.isinf(first.times).any())
    assert infinite > 0  # the case arises


if __name__ == "__main__":  # the accuracy figures quoted above
    for name, prot in [(p, False) for p in sorted(POLICIES)] + [("ascendra-lp", True), ("ascendra-hp", True)]:
        errors, total = [], 0
        for k in range(60):
            sched, _, t0 = queue(name, k, prot)
            view = sched.snapshot()
            proj, _ = project(view, t0)
            ordered = list(view.waiting)
            errors += judged_errors(proj, ordered, replay(sched, ordered, t0))[0]
            total += len(ordered)
        err = np.abs(np.array(errors))
        print(f"{name}{' protected' if prot else ''}: judged {len(err)} of {total}; within one iteration "
              f"{100 * (err <= 1).mean():.2f}%, max {err.max():.2f} iterations")
