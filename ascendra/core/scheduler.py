"""The scheduler: which tokens of which requests the next iteration computes.

A policy (one file each under `policies/`) decides the batch; this base class holds what they
share: the waiting queue and the running list, block accounting, preemption by recompute, and
`update`, which applies an iteration's result. Nothing here reads a clock: `now` comes in.
"""

from __future__ import annotations

from collections.abc import Callable

from ascendra.core.batch import BatchShape, ScheduledBatch
from ascendra.core.block_manager import BlockManager
from ascendra.core.config import SchedulerConfig
from ascendra.core.perf_model import PerfModel
from ascendra.core.projection import PrefillRate, Projection, QueueView
from ascendra.core.queue import RequestQueue
from ascendra.core.request import Request, RequestStatus, tightest_gap
from ascendra.core.slowdown import learnt_slowdown, learnt_step_slowdown
from ascendra.core.ttft_slos import PendingTTFT


class Scheduler:
    name = "base"

    def __init__(
        self, config: SchedulerConfig, block_manager: BlockManager, perf_model: PerfModel | None = None
    ) -> None:
        self.config = config
        self.block_manager = block_manager
        self.perf_model = perf_model
        self.waiting = RequestQueue(self.waiting_key, perf_model.prefill_time if perf_model else None)
        # Admitted requests, in the order they were admitted (their priority for preemption).
        self.running: list[Request] = []
        self.num_preemptions = 0
        # Prompt tokens not yet computed, over waiting and partly prefilled requests: the router's
        # load signal, kept as a running sum so reading it costs nothing.
        self.pending_prefill_tokens = 0
        # Measured over predicted iteration time, smoothed: what the performance model misses on
        # this instance now (a noisy neighbour, a slower machine than profiled). Budgets and
        # projections scale by it. In the simulator it stays near 1 (iterations take the prediction,
        # scattered as measured); live, it is learnt from the `now`s given to schedule and update,
        # no clock read.
        self.slowdown = 1.0
        self.step_slowdown = 1.0  # the typical iteration's: what budgets are sized by
        # The last time given to schedule or update: when a snapshot's decodes are judged.
        self.now = 0.0
        self._pending_ttft = PendingTTFT(0.0 if perf_model is None else self.ttft_floor(config, perf_model))

    # ---- policy hooks --------------------------------------------------------------------------

    # The order the waiting queue is served in (FCFS here); a static rule, so the router's
    # projection reads it without a scheduler.
    waiting_key: Callable[[Request], float] = staticmethod(lambda r: r.arrival_time)
    # Whether requests that can no longer make their deadline wait behind the others
    # (`misses_deadline`): the Ascendra policies' rule, which the projection must follow too.
    defers_late = False

    def schedule(self, now: float) -> ScheduledBatch:
        """The batch of the next iteration, starting at `now`."""
        self.now = now
        batch = self._schedule(now)
        batch.start_time = now
        if self.perf_model is not None and batch.requests:
            batch.predicted = self.perf_model.predict(batch.shape)
        return batch

    def _schedule(self, now: float) -> ScheduledBatch:
        raise NotImplementedError  # the policy

    @staticmethod
    def prefill_rate(p: Projection, num_decodes: int, decode_context: int, min_tbt: float | None
                     ) -> PrefillRate:
        """How fast this policy gets through prompt tokens under the current decode load: the
        linear form of playing it forward, which is what the router projects with.
        The default is a fixed budget shared with the decodes (Sarathi's rule)."""
        tokens = max(0, p.config.max_num_batched_tokens - num_decodes)
        return PrefillRate.of(p, tokens, num_decodes, decode_context)

    @staticmethod
    def ttft_floor(config: SchedulerConfig, perf_model: PerfModel) -> float:
        """The tightest TTFT SLO that may shape this policy's budget; tighter ones are served and
        count as missed, and do not throttle everyone else (none here: FCFS budgets ignore TTFT)."""
        return 0.0

    def projection(self) -> Projection | None:
        """This instance's budget rule with the state it reads now (None without a perf model)."""
        if self.perf_model is None:
            return None
        return Projection(type(self), self.config, self.perf_model, self.slowdown, self.min_ttft_slo,
                          self.step_slowdown)

    @property
    def min_ttft_slo(self) -> float | None:
        """The tightest TTFT SLO, at or above the policy's floor, among the requests here still
        waiting for their first token."""
        return self._pending_ttft.tightest()

    def change_policy(self, policy: type[Scheduler], config: SchedulerConfig) -> None:
        """A role change (Ascendra LP <-> HP): the instance goes on under `policy` and `config`
        with everything it holds. Nothing is drained or restarted: the waiting queue is re-sorted
        into the new policy's order, and the next iteration's budget follows the new config."""
        if policy.__init__ is not type(self).__init__ or policy._schedule is not type(self)._schedule:
            raise ValueError(f"{type(self).name} cannot become {policy.name}: they schedule differently")
        self.__class__ = policy  # the policies of one family differ only in static rules and config
        self.config = config
        self.waiting.reorder(policy.waiting_key)
        if self.perf_model is not None:
            self._pending_ttft.floor = policy.ttft_floor(config, self.perf_model)

    # ---- requests in and out -------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if not request.started:  # a preempted request is still counted from its first admission
            self._pending_ttft.add(request.slo.ttft)
        request.status = RequestStatus.WAITING
        self.pending_prefill_tokens += request.num_remaining_prefill
        self.waiting.push(request)

    def take_waiting(self, request: Request) -> bool:
        """Remove a request that has not started (no token computed, ever), for offloading."""
        if request.started or request.status is not RequestStatus.WAITING:
            return False
        if not self.waiting.remove(request):
            return False
        self.pending_prefill_tokens -= request.num_remaining_prefill
        self._pending_ttft.remove(request.slo.ttft)
        return True

    def take_running(self, request: Request) -> bool:
        """Hand over a running request with everything computed, for migration: it leaves the
        running set and its blocks are freed (the executor has copied their KV out first); its
        token counts and outputs travel with it. False if it is not running here."""
        if request.status is not RequestStatus.RUNNING or request not in self.running:
            return False
        self._release(request)
        return True

    def add_migrated(self, request: Request, with_kv: bool) -> bool:
        """Take in a migrated request. `with_kv`: its computed tokens' KV is coming, and it runs on
        from where it was, in blocks allocated here (the executor copies the KV into them). Without
        the KV, or without room for it, it waits as a preempted request does, to recompute its
        tokens: no token is lost either way. Returns whether it kept its KV."""
        request.block_ids = []
        if (with_kv and len(self.running) < self.config.max_num_seqs
                and self.block_manager.allocate_slots(request, 0)):
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            if not request.is_decode:
                self.pending_prefill_tokens += request.num_remaining_prefill
            if not request.output_token_ids:
                self._pending_ttft.add(request.slo.ttft)
            return True
        request.num_computed_tokens = 0
        request.is_decode = False
        if not request.output_token_ids:
            self._pending_ttft.add(request.slo.ttft)  # add_request counts only requests not started
        self.add_request(request)
        return False

    def finish(self, request: Request, status: RequestStatus, reason: str | None = None) -> None:
        """End a request from outside `update`: abort, stop string, failure. Frees its blocks."""
        if request.status not in (RequestStatus.WAITING, RequestStatus.RUNNING):
            return
        self._release(request)
        request.status = status
        request.finish_reason = status.value
        if reason is not None:
            request.error = reason

    def _release(self, request: Request) -> None:
        """Take a waiting or running request out of this scheduler's queues and counts, and free
        its blocks (its own status is the caller's to set)."""
        if request.status is RequestStatus.WAITING:
            self.waiting.remove(request)
            self.pending_prefill_tokens -= request.num_remaining_prefill
        else:
            self.running.remove(request)
            if not request.is_decode:
                self.pending_prefill_tokens -= request.num_remaining_prefill
        if not request.output_token_ids:
            self._pending_ttft.remove(request.slo.ttft)
        self.block_manager.free(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or bool(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # ---- shared scheduling steps ---------------------------------------------------------------

    def _preempt(self, request: Request, batch: ScheduledBatch) -> None:
        """Preemption by recompute: drop the KV and send it back to wait; its computed tokens
        (prompt and output so far) are recomputed as one longer prompt when it is admitted again."""
        self.running.remove(request)
        if not request.is_decode:
            self.pending_prefill_tokens -= request.num_remaining_prefill
        self.block_manager.free(request)
        request.num_computed_tokens = 0
        request.is_decode = False
        request.num_preemptions += 1
        self.num_preemptions += 1
        batch.preempted.append(request)
        self.add_request(request)

    def _schedule_decodes(self, batch: ScheduledBatch) -> list[Request]:
        """Give every decoding request its one token, preempting from the back of `running` when
        blocks run out (vLLM's rule: the request admitted last loses). Returns the running
        requests that are still in their prompt, for the policy to chunk."""
        running = self.running
        decodes: list[Request] = []
        prefilling: list[Request] = []
        for r in running:
            (decodes if r.is_decode else prefilling).append(r)
        k = self.block_manager.append_slots(decodes)
        while k < len(decodes):  # decodes[k] needs a block and none is free
            victim = running[-1]  # admitted after decodes[k], or decodes[k] itself: never served yet
            self._preempt(victim, batch)
            (prefilling if victim in prefilling else decodes).remove(victim)
            k += self.block_manager.append_slots(decodes[k:])
        # The batch's lists and shape are filled here rather than through batch.add (same result,
        # a fraction of the time: this runs for every decode of every simulated iteration).
        n = len(decodes)
        batch.requests.extend(decodes)
        batch.num_new_tokens.extend([1] * n)
        shape = batch.shape
        context = n
        for r in decodes:
            context += r.num_computed_tokens
        shape.decode_context += context
        shape.num_tokens += n
        shape.num_seqs += n
        shape.num_decodes += n
        return prefilling

    def _fill_prefills(
        self,
        batch: ScheduledBatch,
        prefilling: list[Request],
        chunk_limit: Callable[[Request], int],
        defer: Callable[[int], bool] | None = None,
    ) -> None:
        """Fill the batch with prompt chunks in the policy's order: partly prefilled requests and
        waiting ones merged by the waiting key. `chunk_limit(req)` is the most tokens the batch can
        still take for that request (0 ends the batch). Waiting requests for which `defer(i)` (i:
        the position in the waiting queue) says so are tried last. Stops at the first chunk whose
        blocks do not fit, as vLLM does. (Admitting a request takes it out of the queue, so the
        next one moves up to the same position.)"""
        key = self.waiting.key
        partial = sorted(prefilling, key=key)
        waiting, wkeys = self.waiting.as_list(), self.waiting.keys
        deferred: list[Request] = []
        pi = wi = 0
        while True:
            if pi < len(partial) and (wi >= len(waiting) or key(partial[pi]) <= wkeys[wi]):
                req = partial[pi]
                pi += 1
            elif wi < len(waiting):
                req = waiting[wi]
                if defer is not None and defer(wi):
                    deferred.append(req)
                    wi += 1
                    continue
            elif deferred:
                req = deferred.pop(0)
            else:
                return
            n = min(req.num_remaining_prefill, chunk_limit(req))
            if not self._try_chunk(batch, req, n):
                return

    def _admit(self, request: Request) -> None:
        self.waiting.remove(request)
        request.status = RequestStatus.RUNNING
        self.running.append(request)

    def _try_chunk(self, batch: ScheduledBatch, request: Request, num_new: int) -> bool:
        """Add a prompt chunk if its blocks fit (admitting it from the waiting queue if needed)."""
        if num_new <= 0:
            return False
        admit = request.status is RequestStatus.WAITING
        if admit and len(self.running) >= self.config.max_num_seqs:
            return False
        if not self.block_manager.allocate_slots(request, num_new):
            return False
        if admit:
            self._admit(request)
        request.started = True
        self.pending_prefill_tokens -= num_new
        batch.add(request, num_new)
        return True

    # ---- applying an iteration's result --------------------------------------------------------

    def update(self, batch: ScheduledBatch, token_ids: list[int | None] | None, now: float) -> list[Request]:
        """Apply an executed iteration that ended at `now`. `token_ids[i]` is sequence i's sampled
        token or None; a simulator passes None for the whole list and gets placeholder tokens.
        Returns the requests that finished."""
        self.now = now
        finished: list[Request] = []
        num_new = batch.num_new_tokens
        running = RequestStatus.RUNNING
        for i, req in enumerate(batch.requests):
            if req.status is not running:
                continue  # aborted while the iteration ran
            out = req.output_token_ids
            if req.is_decode:  # most sequences: the common case first
                req.num_computed_tokens += 1
            else:
                c = req.num_computed_tokens = req.num_computed_tokens + num_new[i]
                if c < req.prompt_len + len(out):
                    continue  # a prompt chunk that does not reach the end samples nothing
                req.is_decode = True
                if not out:
                    self._pending_ttft.remove(req.slo.ttft)  # its first token
            tok = 0 if token_ids is None else token_ids[i]
            out.append(tok)
            req.token_times.append(now)
            if len(out) >= req.max_tokens:
                req.status = RequestStatus.FINISHED_LENGTH
            elif tok in req.stop_token_ids:
                req.status = RequestStatus.FINISHED_STOPPED
            else:
                continue
            req.finish_reason = req.status.value
            self.block_manager.free(req)
            finished.append(req)
        if finished:
            self.running = [r for r in self.running if r.status is running]
        if batch.predicted > 0:
            elapsed = now - batch.start_time
            self.slowdown = learnt_slowdown(self.slowdown, elapsed, batch.predicted)
            self.step_slowdown = learnt_step_slowdown(self.step_slowdown, elapsed, batch.predicted)
        return finished

    # ---- what the router reads -----------------------------------------------------------------

    def snapshot(self) -> QueueView:
        prefilling: list[Request] = []
        decodes: list[Request] = []
        ctx = 0
        for r in self.running:
            if r.is_decode:
                decodes.append(r)
                ctx += r.num_computed_tokens + 1
            else:
                prefilling.append(r)
        q = self.waiting
        return QueueView(q.as_list(), q.columns, prefilling, len(decodes), ctx,
                         tightest_gap(decodes, self.now), self.projection(), decodes)


def decode_shape(num_decodes: int, decode_context: int) -> BatchShape:
    return BatchShape(num_decodes, num_decodes, 0, num_decodes, 0, decode_context)
