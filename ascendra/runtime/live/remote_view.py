"""The router's view of an instance that runs in another process: a mirror of its latest snapshot.

It implements the router's `InstanceView` protocol, so the live server runs the very Router the
simulator runs. The worker reports its waiting queue by request id; the view maps the ids to the
server's own mirror `Request` objects (whose token counts it sets to match the report) and adds what
the server sent since that report (adds in transit) or is taking away (steals and migrations in
flight, `stealing`). Moves the router makes through the view are optimistic: the cluster sends the
messages and corrects the view when a worker refuses a steal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ascendra.core.config import SchedulerConfig
from ascendra.core.projection import Projection, QueueView
from ascendra.core.queue import RequestQueue
from ascendra.core.request import Request
from ascendra.runtime.live.messages import Snapshot


class RemoteInstanceView:
    def __init__(self, projection: Projection, requests: dict[str, Request]) -> None:
        # The instance's policy rule, config and perf model; each report brings the state it reads
        # (slowdown, tightest TTFT SLO), so the router projects exactly as the worker plans.
        self._projection = projection
        self._requests = requests
        self.report = Snapshot()
        self.acked_seq = 0
        self.in_transit: dict[str, tuple[int | None, Request]] = {}  # id -> (seq sent, or None yet)
        self.stealing: set[str] = set()
        self.pending_prefill_tokens = 0
        self._waiting = self._new_queue()
        self._prefilling: list[Request] = []
        self._decodes: list[Request] = []
        self._now = projection  # the rule with the state the worker last reported, plus adds since

    # ---- InstanceView ------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def snapshot(self) -> QueueView:
        q, rep = self._waiting, self.report
        return QueueView(q.as_list(), q.columns, self._prefilling, rep.num_decodes, rep.decode_context,
                         rep.min_tbt, self._now, self._decodes)

    @property
    def kv_room(self) -> int:
        return self.report.kv_room

    def take_waiting(self, request: Request) -> bool:
        rid = request.request_id
        if request.started or rid in self.stealing or not self._waiting.remove(request):
            return False
        self.stealing.add(rid)
        self.in_transit.pop(rid, None)
        self.pending_prefill_tokens -= request.num_remaining_prefill
        return True

    def add_request(self, request: Request) -> None:
        self.in_transit[request.request_id] = (None, request)
        self._now = self._now.with_ttft_slo(request.slo.ttft)
        self._waiting.push(request)
        self.pending_prefill_tokens += request.num_remaining_prefill

    def change_policy(self, policy: type, config: SchedulerConfig) -> None:
        """A role change: project with the new rule at once (the cluster tells the worker)."""
        self._projection = replace(self._projection, policy=policy, config=config)
        self._now = replace(self._now, policy=policy, config=config)
        self._waiting.reorder(policy.waiting_key)

    # ---- what the cluster calls --------------------------------------------------------------

    def mark_sent(self, request_id: str, seq: int) -> None:
        if request_id in self.in_transit:
            self.in_transit[request_id] = (seq, self.in_transit[request_id][1])

    def forget(self, request_id: str) -> None:
        """The request finished, was aborted, or moved: stop counting it here until a report says so."""
        self.stealing.discard(request_id)
        entry = self.in_transit.pop(request_id, None)
        if entry is not None and self._waiting.remove(entry[1]):
            self.pending_prefill_tokens -= entry[1].num_remaining_prefill

    def update(self, report: Snapshot, acked_seq: int, received: Iterable[str] = ()) -> None:
        """Rebuild the mirror from a worker's report; adds it has applied leave the in-transit set:
        ours by the sequence number it acknowledges, a vLLM engine's (sent over HTTP, not our
        socket) by the ids it says it received."""
        self.report = report
        self.acked_seq = max(self.acked_seq, acked_seq)
        got = set(received)
        self.in_transit = {
            rid: (s, r) for rid, (s, r) in self.in_transit.items()
            if (s is None or s > self.acked_seq) and rid not in got
        }
        reqs = self._requests
        queue = self._new_queue()
        pending = report.pending_prefill_tokens
        for e in report.waiting:
            req = reqs.get(e.request_id)
            if req is None or e.request_id in self.in_transit:
                continue
            _set_remaining(req, e.remaining)
            req.started = e.started
            if e.request_id in self.stealing:
                pending -= e.remaining
                continue
            queue.push(req)
        prefilling, decodes = [], []
        for rid, remaining in report.prefilling:
            req = reqs.get(rid)
            if req is not None and rid not in self.stealing:  # (a migration in flight: leaving)
                _set_remaining(req, remaining)
                req.started = True
                prefilling.append(req)
        for rid in report.decoding:
            req = reqs.get(rid)
            if req is not None and rid not in self.stealing:
                _set_remaining(req, 1)
                decodes.append(req)
        # The worker's own state, as it plans with it: its learnt slowdown and the tightest TTFT
        # SLO it holds; adds still in transit will join that.
        projection = replace(self._projection, slowdown=report.slowdown, min_ttft_slo=report.min_ttft_slo,
                             step_slowdown=report.step_slowdown)
        for _, req in self.in_transit.values():
            queue.push(req)
            pending += req.num_remaining_prefill
            projection = projection.with_ttft_slo(req.slo.ttft)
        self._waiting, self._prefilling, self._decodes, self._now = queue, prefilling, decodes, projection
        self.pending_prefill_tokens = max(0, pending)

    def _new_queue(self) -> RequestQueue:
        return RequestQueue(self._projection.waiting_key, self._projection.perf_model.prefill_time)

    def reset(self) -> None:
        """The instance died: it holds nothing."""
        self.in_transit.clear()
        self.stealing.clear()
        self.update(Snapshot(), self.acked_seq)


def _set_remaining(req: Request, remaining: int) -> None:
    req.num_computed_tokens = max(0, req.num_tokens - remaining)
