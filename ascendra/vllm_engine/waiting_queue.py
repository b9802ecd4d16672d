"""vLLM's waiting queue, kept in the order one of our policies serves it.

vLLM's scheduler walks `self.waiting` through the `RequestQueue` interface (peek, pop, prepend,
remove). This queue answers that interface from our core `RequestQueue` of mirror requests, so the
order is the policy's own `waiting_key` (shortest remaining prompt first for LP, earliest deadline
first for HP) and, for the Ascendra policies, the same deferral rule (`misses_deadline`) read from
the same columns as on our engine and in the router's projection. Nothing is re-implemented here:
only the mapping between vLLM's requests and their mirrors.

The deferral depends on the time, which the queue never reads: the scheduler hands it `now` at the
start of each step (`begin_step`), as our runtimes hand it to our scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from vllm.v1.core.sched.request_queue import RequestQueue as VLLMRequestQueue
from vllm.v1.request import Request as VLLMRequest

from ascendra.core.projection import misses_deadline
from ascendra.core.queue import ALONE, DEADLINE, RequestQueue
from ascendra.core.request import Request
from ascendra.core.scheduler import Scheduler
from ascendra.vllm_engine.mirrors import Mirrors


class PolicyWaitingQueue(VLLMRequestQueue):
    def __init__(self, policy: type[Scheduler], mirrors: Mirrors, alone=None) -> None:
        self._policy = policy
        self._mirrors = mirrors
        self.queue = RequestQueue(policy.waiting_key, alone)
        self._now = 0.0
        self._slowdown = 1.0
        self._order: list[Request] | None = None  # this step's serving order, head last (pop())
        self._head_on_time = True  # whether that head can still make its deadline

    # ---- what the scheduler adds -------------------------------------------------------------

    def change_policy(self, policy: type[Scheduler]) -> None:
        """A role change: the same requests, in the new policy's order from the next peek."""
        self._policy = policy
        self.queue.reorder(policy.waiting_key)
        self._order = None

    def begin_step(self, now: float, slowdown: float) -> None:
        """A new step starts at `now`: the deferral is judged afresh."""
        self._now, self._slowdown = now, slowdown
        self._order = None

    def _serving_order(self) -> list[Request]:
        if self._order is None:
            items = self.queue.as_list()
            if self._policy.defers_late and items:
                cols = self.queue.columns
                late = misses_deadline(self._now, cols[ALONE], cols[DEADLINE], self._slowdown)
                on_time = np.flatnonzero(~late)
                order = [items[i] for i in on_time] + [items[i] for i in np.flatnonzero(late)]
                self._head_on_time = bool(len(on_time))
            else:
                order = list(items)
                self._head_on_time = True
            order.reverse()
            self._order = order
        return self._order

    def served_after_head(self, running: Iterable[VLLMRequest]) -> list[VLLMRequest]:
        """The partly prefilled prompts among `running` that the policy serves after this queue's
        first request: on our engine partly prefilled prompts merge with the waiting ones by key,
        while vLLM gives every running request its share of a step before any waiting one. None
        when the first request is past saving (the deferral puts it after everything)."""
        order = self._serving_order()
        if not order or not self._head_on_time:
            return []
        key, head_key = self._policy.waiting_key, self._policy.waiting_key(order[-1])
        return [r for r in running if r.num_computed_tokens < r.num_prompt_tokens
                and key(self._mirrors.sync(r)) > head_key]

    def _push(self, request: VLLMRequest) -> None:
        self.queue.push(self._mirrors.sync(request))
        self._order = None

    def _take(self, mirror: Request) -> None:
        self.queue.remove(mirror)

    # ---- vLLM's RequestQueue -----------------------------------------------------------------

    def add_request(self, request: VLLMRequest) -> None:
        self._push(request)

    def pop_request(self) -> VLLMRequest:
        order = self._serving_order()
        if not order:
            raise IndexError("pop from an empty queue")
        mirror = order.pop()
        self._take(mirror)
        return self._mirrors.engine_request(mirror)

    def peek_request(self) -> VLLMRequest:
        order = self._serving_order()
        if not order:
            raise IndexError("peek from an empty queue")
        return self._mirrors.engine_request(order[-1])

    def prepend_request(self, request: VLLMRequest) -> None:
        # A policy order has no front: a request put back takes its place by its key, as in
        # vLLM's own priority queue.
        self._push(request)

    def prepend_requests(self, requests: Iterable[VLLMRequest]) -> None:
        for r in requests:
            self._push(r)

    def remove_request(self, request: VLLMRequest) -> None:
        mirror = self._mirrors.get(request.request_id)
        if mirror is None or not self.queue.remove(mirror):
            raise ValueError(f"request {request.request_id} is not waiting")
        self._order = None

    def remove_requests(self, requests: Iterable[VLLMRequest]) -> None:
        for r in requests:
            mirror = self._mirrors.get(r.request_id)
            if mirror is not None:
                self.queue.remove(mirror)
        self._order = None

    def __bool__(self) -> bool:
        return bool(self.queue)

    def __len__(self) -> int:
        return len(self.queue)

    def __iter__(self) -> Iterator[VLLMRequest]:
        return (self._mirrors.engine_request(m) for m in reversed(self._serving_order()))
