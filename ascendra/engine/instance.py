"""An instance: one scheduler and one executor, stepped as start -> execute -> complete.

The same loop serves the offline `LLM`, the live server's instance processes, Ray actors and the
simulator; only the clock and the executor differ. A live instance reads its clock around
`execute` (`step`); the simulator starts an iteration at one virtual `now`, asks its SimExecutor
how long it takes, and completes it at a later one. Text (incremental detokenization, stop
strings) is handled here, next to the tokens, so a stop string frees the KV blocks at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ascendra.core.batch import ScheduledBatch
from ascendra.core.config import SchedulerConfig
from ascendra.core.iteration_stats import IterationStats
from ascendra.core.projection import QueueView
from ascendra.core.request import Request, RequestStatus
from ascendra.core.scheduler import Scheduler
from ascendra.engine.executor import ExecuteOutput, Executor, KVState


class Detokenizer(Protocol):
    def push(self, token_id: int) -> str: ...  # the text this token completes ("" mid-character)
    def flush(self) -> str: ...  # whatever was held back, at the end of the stream


DetokenizerFactory = Callable[[Request], Detokenizer]


@dataclass
class RequestOutput:
    """What one step produced for one request: streamed to the client as it comes."""

    request_id: str
    new_token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    token_time: float | None = None


@dataclass
class Migrated:
    """A running request on its way to another instance, with what its source held for it."""

    request: Request
    kv: KVState | None  # None in simulation: the transfer is modelled
    text_sent: int = 0  # characters of its text already streamed


@dataclass
class _TextState:
    detok: Detokenizer
    text: str = ""
    sent: int = 0  # characters already streamed


class Instance:
    """Also what the router sees of a local instance (`InstanceView`)."""

    def __init__(
        self,
        scheduler: Scheduler,
        executor: Executor,
        detokenizer: DetokenizerFactory | None = None,
        *,
        emit_outputs: bool = True,
    ) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.detokenizer = detokenizer
        # A simulated instance has nobody to stream to: it skips building per-token outputs.
        self.emit_outputs = emit_outputs
        self.requests: dict[str, Request] = {}
        self._text: dict[str, _TextState] = {}
        self.num_steps = 0
        # How the iterations really ran against the performance model, and when the last one
        # ended if work was left.
        self.iterations = IterationStats()
        self._busy_since: float | None = None

    # ---- what the router reads (InstanceView) -------------------------------------------------

    @property
    def pending_prefill_tokens(self) -> int:
        return self.scheduler.pending_prefill_tokens

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def snapshot(self) -> QueueView:
        return self.scheduler.snapshot()

    @property
    def kv_room(self) -> int:
        return self.scheduler.block_manager.room()

    def change_policy(self, policy: type, config: SchedulerConfig) -> None:
        """A role change: see `Scheduler.change_policy`."""
        self.scheduler.change_policy(policy, config)

    # ---- requests in and out -------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self.requests[request.request_id] = request
        if self.detokenizer is not None:
            self._text[request.request_id] = _TextState(self.detokenizer(request))
        self.scheduler.add_request(request)

    def abort_request(
        self,
        request_id: str,
        status: RequestStatus = RequestStatus.FINISHED_ABORTED,
        reason: str | None = None,
    ) -> Request | None:
        """End a request on the client's word (or fail it with a reason); frees its KV blocks."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        self.scheduler.finish(req, status, reason)
        self._drop(req)
        return req

    def take_waiting(self, request: Request) -> bool:
        """Hand over a request that has not started, for offloading; False if it has."""
        if self.requests.get(request.request_id) is not request or not self.scheduler.take_waiting(request):
            return False
        del self.requests[request.request_id]
        self._drop(request)
        return True

    def migrate_out(self, request_id: str) -> Migrated | None:
        """Hand over a running request with its KV, for migration (None if it is not running
        here): its KV is copied out, then its blocks are freed."""
        req = self.requests.get(request_id)
        if req is None or req.status is not RequestStatus.RUNNING:
            return None
        kv = self.executor.export_kv(req)
        if not self.scheduler.take_running(req):
            return None
        del self.requests[request_id]
        st = self._text.get(request_id)
        self._drop(req)
        return Migrated(req, kv, 0 if st is None else st.sent)

    def migrate_in(self, moved: Migrated) -> bool:
        """Take over a migrated request where its source left it: with its KV copied into blocks
        allocated here, or, when they do not fit or the KV does not fit this executor, as a
        preempted request that recomputes its tokens. Its stream goes on where the source stopped
        (`text_sent`). Returns whether it kept its KV."""
        req = moved.request
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        self.requests[req.request_id] = req
        if self.detokenizer is not None:
            st = self._text[req.request_id] = _TextState(self.detokenizer(req))
            for tok in req.output_token_ids:  # the text so far, as the source built it
                st.text += st.detok.push(tok)
            st.sent = moved.text_sent
        if not self.scheduler.add_migrated(req, with_kv=True):
            return False  # no room here: it waits to recompute
        try:
            self.executor.import_kv(req, moved.kv)
        except ValueError:
            self.scheduler.take_running(req)  # frees the blocks; it recomputes instead
            self.scheduler.add_migrated(req, with_kv=False)
            return False
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def _drop(self, req: Request) -> None:
        self._text.pop(req.request_id, None)
        self.executor.release(req.request_id)

    # ---- the loop ------------------------------------------------------------------------------

    def step(self, clock: Callable[[], float]) -> list[RequestOutput]:
        """Run one iteration on a real clock: `clock()` is read when the batch is chosen and when it
        is done; the second reading is every sampled token's time."""
        batch = self.start_iteration(clock())
        if batch is None:
            return []
        out = self.executor.execute(batch)
        return self.complete_iteration(batch, out, clock())[1]

    def start_iteration(self, now: float) -> ScheduledBatch | None:
        """Choose the batch of an iteration starting at `now` (None: nothing to run)."""
        batch = self.scheduler.schedule(now)
        if not batch.requests:
            return None
        if self._busy_since is not None:
            self.iterations.record_gap(now - self._busy_since)
        return batch

    def complete_iteration(
        self, batch: ScheduledBatch, out: ExecuteOutput, now: float
    ) -> tuple[list[Request], list[RequestOutput]]:
        """Apply an executed iteration that ended at `now`: the requests it ended, and what each
        request produced for its client (nothing in simulation, where no one streams)."""
        outputs: list[RequestOutput] = []
        if out.errors is not None:
            for req, err in zip(batch.requests, out.errors, strict=True):
                if err is not None and self.abort_request(req.request_id, RequestStatus.FINISHED_FAILED, err):
                    outputs.append(_failed(req, err))
        sched = self.scheduler
        sampled = [i for i in range(len(batch)) if batch.samples(i)] if self.emit_outputs else ()
        finished = sched.update(batch, out.token_ids, now)
        self.num_steps += 1
        if batch.predicted:
            self.iterations.record(now - batch.start_time, batch.predicted)
        self._busy_since = now if sched.waiting or sched.running else None
        for i in sampled:
            req = batch.requests[i]
            if req.status is RequestStatus.FINISHED_FAILED:
                continue  # its row failed: already reported
            o = self._output(req, out, i, now)
            outputs.append(o)
            if o.finished and req.request_id in self.requests and req not in finished:
                finished.append(req)  # a stop string in its text ended it
        for req in finished:
            if self.requests.pop(req.request_id, None) is not None:
                self._drop(req)
        return finished, outputs

    def _output(self, req: Request, out: ExecuteOutput, i: int, now: float) -> RequestOutput:
        tok = req.output_token_ids[-1]
        o = RequestOutput(req.request_id, [tok], num_prompt_tokens=req.prompt_len,
                          num_output_tokens=req.num_output_tokens, token_time=now)
        if out.logprobs is not None and out.logprobs[i] is not None:
            o.logprobs.append(out.logprobs[i])
        self._add_text(req, tok, o)
        if req.is_finished:
            o.finished, o.finish_reason = True, req.finish_reason
            o.error = req.error
        return o

    def _add_text(self, req: Request, token_id: int, o: RequestOutput) -> None:
        st = self._text.get(req.request_id)
        if st is None:
            return
        if token_id in req.stop_token_ids and req.status is RequestStatus.FINISHED_STOPPED:
            o.text = st.text[st.sent :] + st.detok.flush()  # the EOS token itself is not text
            return
        st.text += st.detok.push(token_id)
        if req.is_finished:
            st.text += st.detok.flush()
        stops = getattr(req.params, "stop", None) or ()
        cut = -1
        for s in stops:
            # Only the new tail can complete a stop string: search from just before it.
            j = st.text.find(s, max(0, st.sent - len(s) + 1))
            if j != -1 and (cut == -1 or j < cut):
                cut = j
        if cut != -1:
            st.text = st.text[:cut]
            if not req.is_finished:
                self.scheduler.finish(req, RequestStatus.FINISHED_STOPPED)
        elif not req.is_finished and stops:
            # Hold back a tail that could still grow into a stop string.
            hold = max(len(s) for s in stops) - 1
            o.text = st.text[st.sent : max(st.sent, len(st.text) - hold)]
            st.sent += len(o.text)
            return
        o.text = st.text[st.sent :]
        st.sent = len(st.text)


def _failed(req: Request, reason: str) -> RequestOutput:
    return RequestOutput(req.request_id, finished=True, finish_reason=req.finish_reason, error=reason,
                         num_prompt_tokens=req.prompt_len, num_output_tokens=req.num_output_tokens)
