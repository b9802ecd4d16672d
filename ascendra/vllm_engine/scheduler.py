"""Ascendra's policies as vLLM schedulers: `vllm serve ... --scheduler-cls
ascendra.vllm_engine.scheduler.LPScheduler` (or `HPScheduler`).

vLLM's own scheduler keeps doing the mechanics (KV blocks, prefix cache, preemption, async steps,
the output it hands the workers). The policy decides what it decides on our engine, read from the
same code in `core/`:
- the order of the waiting queue: the policy's `waiting_key` and, for the Ascendra policies, the
  deferral of requests that can no longer make their deadline (`PolicyWaitingQueue`);
- each step's token budget: the policy's `prefill_rate` (for LP and HP the largest prompt share
  the performance model says keeps the tightest running TBT SLO), plus one token per decode.
After each step the plugin reports to the router what our instance workers report (the waiting
queue by the router's ids, the decodes, KV use, the step's duration against the prediction), and
applies the router's steals (offloads) of requests that have not started.

vLLM serves requests already running (decodes and partly prefilled prompts) before any waiting
one, where ours merges partly prefilled prompts with waiting ones by key; so the partly prefilled
prompts the policy serves after the first waiting request sit out the step (`_hold_back_prompts`).
And vLLM counts a step's tokens as computed when it schedules it, while the router must see what is
still to compute: the report takes the steps in flight back (`StepBook.in_flight`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.request import Request as VLLMRequest
from vllm.v1.request import RequestStatus as VLLMStatus

from ascendra.core.batch import BatchShape
from ascendra.core.config import SchedulerConfig
from ascendra.core.policies import POLICIES
from ascendra.core.policies.ascendra_hp import AscendraHPScheduler
from ascendra.core.policies.ascendra_lp import AscendraLPScheduler
from ascendra.core.policies.sarathi import SarathiScheduler
from ascendra.core.projection import Projection, QueueView
from ascendra.core.queue import REMAINING
from ascendra.core.request import SLO, tightest_gap
from ascendra.core.scheduler import Scheduler
from ascendra.core.ttft_slos import PendingTTFT
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.worker import OFFLOAD_CHECK_WAIT_S, awaits_offload_check, wire_snapshot
from ascendra.vllm_engine.mirrors import Mirrors
from ascendra.vllm_engine.plugin_config import PluginConfig
from ascendra.vllm_engine.router_link import RouterLink
from ascendra.vllm_engine.steps import Step, StepBook
from ascendra.vllm_engine.waiting_queue import PolicyWaitingQueue


class AscendraScheduler(AsyncScheduler):
    ascendra_policy: type[Scheduler] = AscendraLPScheduler
    shapes_budget = True  # False: vLLM's own token budget, every step

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cfg = PluginConfig.from_env()
        self.ascendra = cfg
        self.perf_model = None
        if cfg.profile:
            from ascendra.profiles import load_profile

            self.perf_model = load_profile(cfg.profile).perf_model
        self.token_cap = self.max_num_scheduled_tokens
        self.policy_config = self._within_vllm(cfg.scheduler if cfg.scheduler_given else replace(
            cfg.scheduler, max_num_batched_tokens=self.token_cap, max_num_seqs=self.max_num_running_reqs))
        self.mirrors = Mirrors(SLO(cfg.default_ttft, cfg.default_tbt))
        alone = self.perf_model.prefill_time if self.perf_model is not None else None
        self.waiting = PolicyWaitingQueue(self.ascendra_policy, self.mirrors, alone)
        policy, perf = self.ascendra_policy, self.perf_model
        self.pending_ttft = PendingTTFT(policy.ttft_floor(self.policy_config, perf) if perf else 0.0)
        self.steps = StepBook(cfg.step_log)
        self.num_stolen = 0
        self._received: list[tuple[str, float]] = []
        self._stolen: list[str] = []
        self._refused: list[str] = []
        self._awaited = 0  # the report whose offload check the next step waits for (0: none)
        self.link = None
        if cfg.router:
            self.link = RouterLink(cfg.router, cfg.secret, cfg.index)
            self.link.send(m.Hello(cfg.index, os.getpid(), self.kv_cache_config.num_blocks,
                                   socket.gethostname()))
            self._report(time.time())  # the router hears from an idle engine too (the link repeats it)

    # ---- requests in and out -----------------------------------------------------------------

    def add_request(self, request: VLLMRequest) -> None:
        mirror = self.mirrors.add(request)
        self.pending_ttft.add(mirror.slo.ttft)
        now = time.time()
        self._received.append((mirror.request_id, now))
        self.steps.received(mirror.request_id, mirror.arrival_time, now)
        super().add_request(request)

    def _free_request(self, request: VLLMRequest, *args, **kwargs):
        mirror = self.mirrors.drop(request.request_id)
        if mirror is not None and not mirror.output_token_ids:
            self.pending_ttft.remove(mirror.slo.ttft)  # it leaves without a first token
        return super()._free_request(request, *args, **kwargs)

    def _within_vllm(self, sched: SchedulerConfig) -> SchedulerConfig:
        """vLLM's own limits bound the policy's: its budget never exceeds what the engine was sized for."""
        cap = self.token_cap
        return replace(sched, max_num_batched_tokens=min(sched.max_num_batched_tokens, cap),
                       max_idle_budget=min(sched.max_idle_budget, cap))

    def _apply_router_messages(self) -> None:
        if self.link is None:
            return
        inbox = self.link.inbox
        while inbox:
            msg = inbox.popleft()
            if isinstance(msg, m.Steal):
                (self._stolen if self._steal(msg.request_id) else self._refused).append(msg.request_id)
            elif isinstance(msg, m.ChangeRole):
                self._change_role(msg)

    def _offload_check(self) -> float:
        """Before a step that could start a new arrival, let the router see it waiting and decide,
        as our LP workers do (`WorkerLoop._offload_check`): vLLM admits a waiting request within a
        step, and a started one cannot move, so without the wait the router's check after each
        step found the queue empty and a long prompt at risk started here. Its steals come before
        its `Checked`; the wait is bounded, and idles nothing while a step is in flight. Returns
        the seconds of its own work (the report), the wait left out."""
        if self.link is None or not self.ascendra.await_offload_check:
            return 0.0
        t0 = time.perf_counter()
        if self._received:
            self._report(time.time())  # the arrivals since the last report, where they are queued
        own = time.perf_counter() - t0
        if self._awaited:
            self.link.wait_checked(self._awaited, OFFLOAD_CHECK_WAIT_S)
            self._awaited = 0
        return own

    def _change_role(self, msg: m.ChangeRole) -> None:
        """The router changed this engine's role (adaptive roles): the same requests go on under
        the other Ascendra policy; the waiting queue takes its order, the next step its budget."""
        policy = POLICIES.get(msg.policy)
        if policy is None or not self.shapes_budget or not issubclass(policy, AscendraLPScheduler):
            return  # only the Ascendra policies change roles; a stock engine stays stock
        self.ascendra_policy = policy  # this engine's, over its class's
        self.policy_config = self._within_vllm(msg.scheduler)
        self.ascendra.await_offload_check = msg.await_offload_check
        self.waiting.change_policy(policy)
        if self.perf_model is not None:
            self.pending_ttft.floor = policy.ttft_floor(self.policy_config, self.perf_model)

    def _steal(self, router_id: str) -> bool:
        """Hand a request over to another engine if no token of it has been computed. It ends here
        as aborted; the router closes its stream to this engine, and vLLM's front end then
        aborts a request its engine no longer has (a no-op)."""
        req = self.mirrors.by_router_id(router_id)
        mirror = self.mirrors.get(req.request_id) if req is not None else None
        if (mirror is None or req.status != VLLMStatus.WAITING or req.num_computed_tokens
                or req.num_output_tokens or mirror.started):
            return False
        self.finish_requests(req.request_id, VLLMStatus.FINISHED_ABORTED)
        self.num_stolen += 1
        return True

    # ---- each step ---------------------------------------------------------------------------

    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:
        check = self._offload_check()
        now = time.time()
        t0 = time.perf_counter()
        self._apply_router_messages()
        self.waiting.begin_step(now, self.steps.slowdown)
        self.max_num_scheduled_tokens = self._token_budget(now)
        held = self._hold_back_prompts()
        t1 = time.perf_counter()
        try:
            out = super().schedule(throttle_prefills)
        finally:
            self.running.extend(held)  # last: the first to be preempted, the last served
        t2 = time.perf_counter()
        shape = BatchShape()
        logged = [] if self.steps.logging else None
        for rid, n in out.num_scheduled_tokens.items():
            req = self.requests[rid]
            before = req.num_computed_tokens - n  # vLLM advances it when it schedules
            shape.add(before, n, decode=before >= req.num_prompt_tokens)
            mirror = self.mirrors.get(rid)
            if mirror is not None:
                mirror.started = True
            if logged is not None:
                logged.append((mirror.request_id if mirror else rid, before, n, req.num_prompt_tokens))
        if shape.num_seqs:
            predicted = self.perf_model.predict(shape) if self.perf_model is not None else 0.0
            # Our own cost around vLLM's (the queue's order inside it is vLLM's loop's to pay).
            own = check + (t1 - t0) + (time.perf_counter() - t2)
            self.steps.scheduled(Step(now, shape, predicted, own, t2 - t1, len(self.waiting),
                                      self.max_num_scheduled_tokens, self.steps.step_slowdown,
                                      out.num_scheduled_tokens, logged))
        return out

    def _hold_back_prompts(self) -> list[VLLMRequest]:
        """Take out of `self.running`, for this step's scheduling, the partly prefilled prompts the
        policy serves after the first waiting request (`served_after_head`). vLLM serves running
        requests first, so under a budget of a few hundred tokens a started 1,000-token prompt kept
        every shorter arrival waiting for all its chunks: first come, first served among started
        prompts. Not when the first waiting request could not be admitted anyway (every running
        slot would be taken, or its prompt needs more KV than is free): the step would then idle."""
        if not self.shapes_budget or not self.waiting:
            return []
        if len(self.running) + len(self.waiting) > self.max_num_running_reqs:
            return []
        head = self.waiting.peek_request()
        free = self.kv_cache_manager.block_pool.get_num_free_blocks() * self.block_size
        if head.num_tokens > free:
            return []
        held = self.waiting.served_after_head(self.running)
        if held:
            ids = {id(r) for r in held}
            self.running[:] = [r for r in self.running if id(r) not in ids]
        return held

    def _decode_state(self, now: float, in_flight: dict[str, int] | None = None
                      ) -> tuple[int, int, float | None, list]:
        """The running requests as decodes (their count, context and tightest gap) and partly
        prefilled prompts. vLLM counts a step's tokens as computed when it schedules the step: for
        the next step's budget that is right (a prompt whose last chunk is in flight decodes next),
        but the router must see what is still to compute, as our engine reports it between
        iterations. `in_flight` (`StepBook.in_flight()`): the tokens of the steps scheduled and not yet done,
        taken back. Without it, a 1,000-token prompt in a 3 s step showed its engine as idle, and
        the router sent the next short prompt behind it."""
        context = 0
        decodes, prefilling = [], []
        for req in self.running:
            mirror = self.mirrors.sync(req, in_flight.get(req.request_id, 0) if in_flight else 0)
            if mirror.num_computed_tokens >= req.num_prompt_tokens:
                decodes.append(mirror)
                context += mirror.num_computed_tokens + 1
            else:
                prefilling.append(mirror)
        return len(decodes), context, tightest_gap(decodes, now), prefilling

    def projection(self) -> Projection | None:
        if self.perf_model is None:
            return None
        return Projection(self.ascendra_policy, self.policy_config, self.perf_model, self.steps.slowdown,
                          self.pending_ttft.tightest(), self.steps.step_slowdown)

    def _token_budget(self, now: float) -> int:
        """The policy's own budget rule (`prefill_rate`, what the router projects with), plus one
        token per decode, within what vLLM was sized for."""
        p = self.projection()
        if p is None or not self.shapes_budget:
            return self.token_cap
        decodes, context, min_tbt, _ = self._decode_state(now)
        rate = p.prefill_rate(decodes, context, min_tbt)
        return max(1, min(self.token_cap, decodes + rate.tokens_per_iteration))

    def update_from_output(self, scheduler_output: SchedulerOutput, model_runner_output):
        result = super().update_from_output(scheduler_output, model_runner_output)
        now = time.time()
        t0 = time.perf_counter()
        done = self.steps.done(now) if scheduler_output.num_scheduled_tokens else None
        for rid in scheduler_output.num_scheduled_tokens:
            req, mirror = self.requests.get(rid), self.mirrors.get(rid)
            if req is None or mirror is None:
                continue
            if not mirror.output_token_ids and req.num_output_tokens:
                self.pending_ttft.remove(mirror.slo.ttft)  # its first token
                mirror.token_times.append(now)  # what a mean TBT SLO counts its gaps from
                self.mirrors.sync(req)
        self._report(now)
        if done is not None:
            step, elapsed = done
            self.steps.log(step, now, elapsed, step.plugin_seconds + time.perf_counter() - t0)
        return result

    # ---- what the router reads ---------------------------------------------------------------

    def _report(self, now: float) -> None:
        if self.link is None:
            return
        decodes, context, min_tbt, prefilling = self._decode_state(now, self.steps.in_flight())
        q = self.waiting.queue  # waiting mirrors were synced when they joined the queue
        view = QueueView(q.as_list(), q.columns, prefilling, decodes, context, min_tbt, None)
        pending = int(q.columns[REMAINING].sum()) + sum(r.num_remaining_prefill for r in prefilling)
        num_blocks = self.kv_cache_config.num_blocks
        used = int(round(self.kv_cache_manager.usage * num_blocks))
        book = self.steps
        snap = wire_snapshot(view, pending, len(self.running), used, num_blocks, 0, book.num_steps,
                             self.pending_ttft.tightest(), book.slowdown, book.iterations, book.step_slowdown)
        awaits = awaits_offload_check(self.ascendra.await_offload_check, snap)
        number = self.link.send(m.Report(self.ascendra.index, 0, snap, received=self._received,
                                         stolen=self._stolen, refused=self._refused, awaits_check=awaits))
        self._awaited = number if awaits else 0
        self._received, self._stolen, self._refused = [], [], []

    def shutdown(self) -> None:
        if self.link is not None:
            self.link.close()
        self.steps.close()
        super().shutdown()


class LPScheduler(AscendraScheduler):
    """Low priority: shortest remaining prompt first, the TBT-safe budget."""

    ascendra_policy = AscendraLPScheduler


class HPScheduler(AscendraScheduler):
    """High priority: earliest TTFT deadline first, the same budget rule."""

    ascendra_policy = AscendraHPScheduler


class StockScheduler(AscendraScheduler):
    """vLLM's own policy (first come first served, its own token budget), reporting to the router
    like the others: the baseline behind the same router, and what `--system vllm` runs."""

    ascendra_policy = SarathiScheduler  # FCFS by arrival: the order vLLM's deque keeps
    shapes_budget = False


