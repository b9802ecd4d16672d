"""The instance worker: one Instance stepped on the wall clock, talking to the server over zmq.

The same loop runs in a spawned OS process (`process_main`) and in a Ray actor (launcher.py).
Each turn it drains the server's messages (blocking only while it has nothing to run), runs one
iteration, and sends back the iteration's outputs with a snapshot of its queue. `time.time` is the
one clock: arrivals stamped by the server, token times and `now` stamped here mean the same thing.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time

import zmq

from ascendra.core.iteration_stats import IterationStats
from ascendra.core.policies import POLICIES
from ascendra.core.projection import QueueView
from ascendra.core.request import RequestStatus
from ascendra.core.scheduler import Scheduler
from ascendra.engine.factory import InstanceSpec, build_instance
from ascendra.engine.instance import Instance, RequestOutput
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.wire import MAX_FRAME_BYTES, BadMessage, Codec

HEARTBEAT_S = 0.5  # an idle worker still reports this often, so the server can tell it is alive
# Longest wait for the router's offload check after a report (a round trip takes ~1 ms): a slow
# server delays the next iteration by at most this much, then the worker goes on without it.
OFFLOAD_CHECK_WAIT_S = 0.025
# A migrated request's KV travels in one report; past this (half a frame) it goes without, and its
# target recomputes it.
MAX_KV_BYTES = MAX_FRAME_BYTES // 2


def snapshot_of(sched: Scheduler, num_steps: int = 0, iterations: IterationStats | None = None) -> m.Snapshot:
    bm = sched.block_manager
    snap = wire_snapshot(sched.snapshot(), sched.pending_prefill_tokens, sched.num_running,
                         bm.num_blocks - bm.num_free_blocks, bm.num_blocks, sched.num_preemptions, num_steps,
                         sched.min_ttft_slo, sched.slowdown, iterations, sched.step_slowdown)
    snap.kv_room = bm.room()  # our engine's KV can move here (a vLLM engine's reports leave it 0)
    return snap


def wire_snapshot(snap: QueueView, pending_prefill_tokens: int, num_running: int, blocks_used: int,
                  num_blocks: int, num_preemptions: int, num_steps: int, min_ttft_slo: float | None,
                  slowdown: float, iterations: IterationStats | None = None,
                  step_slowdown: float = 1.0) -> m.Snapshot:
    """A queue view as the router reads it, by request id: from our scheduler or the vLLM plugin."""
    return m.Snapshot(
        waiting=[
            m.WaitingEntry(r.request_id, r.num_remaining_prefill, r.started, len(r.output_token_ids))
            for r in snap.waiting
        ],
        prefilling=[(r.request_id, r.num_remaining_prefill) for r in snap.prefilling],
        decoding=[r.request_id for r in snap.decodes],
        num_decodes=snap.num_decodes,
        decode_context=snap.decode_context,
        min_tbt=snap.min_tbt,
        pending_prefill_tokens=pending_prefill_tokens,
        num_running=num_running,
        blocks_used=blocks_used,
        num_blocks=num_blocks,
        num_preemptions=num_preemptions,
        num_steps=num_steps,
        min_ttft_slo=min_ttft_slo,
        slowdown=slowdown,
        iterations=iterations or IterationStats(),
        step_slowdown=step_slowdown,
    )


class WorkerLoop:
    def __init__(
        self,
        instance: Instance,
        sock: zmq.Socket,
        codec: Codec,
        index: int,
        parent_pid: int | None = None,
        await_offload_check: bool = False,
    ) -> None:
        self.instance = instance
        self.codec = codec
        self.await_offload_check = await_offload_check
        self.num_reports = 0
        self.checked_report = 0  # the newest report the router has checked for offloads
        self._added_since_report = False
        self._last_awaits_check = False
        self.sock = sock
        self.index = index
        self.parent_pid = parent_pid
        self.acked_seq = 0
        self.stopped = False
        self._report = self._fresh()

    def _fresh(self) -> m.Report:
        return m.Report(self.index, 0, m.Snapshot())

    def run(self) -> None:
        last_sent = 0.0
        ran = False
        while not self.stopped:
            # Block for messages unless the last turn ran an iteration: a worker whose scheduler
            # has work but chooses no batch must wait for news, not spin on empty iterations
            # (and flood the server with reports).
            handled = self._drain(0 if ran else int(HEARTBEAT_S * 1000))
            if self.stopped or self._orphaned():
                break
            ran = False
            if self.instance.has_unfinished():
                if self.await_offload_check:
                    self._offload_check()
                ran = self._step()
            if not ran and not handled and time.time() - last_sent < HEARTBEAT_S:
                continue
            self._send()
            last_sent = time.time()

    def _offload_check(self) -> None:
        """Before an iteration that could start a request the router would move elsewhere, let the
        router see the queue and decide (its steals arrive before its answer and are applied by
        `_handle`): the simulator checks between two iterations too."""
        if self._added_since_report:
            self._send()  # the router must see the new arrivals where they are queued
        deadline = time.time() + OFFLOAD_CHECK_WAIT_S
        while self._last_awaits_check and self.checked_report < self.num_reports and not self.stopped:
            left = deadline - time.time()
            if left <= 0 or not self._drain(max(1, int(left * 1000))):
                break
        if self._report.stolen or self._report.migrated:
            self._send()  # hand the moved requests over now, not after the next iteration

    def _orphaned(self) -> bool:
        # A process worker whose server died (even by SIGKILL) must not linger as an orphan.
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _drain(self, timeout_ms: int) -> bool:
        handled = False
        if not self.sock.poll(timeout_ms):
            return False
        while True:
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return handled
            try:
                msg = self.codec.decode(data)
            except BadMessage:
                continue  # not from our server: dropped unread
            handled = True
            self._handle(msg)
            if self.stopped:
                return True

    def _handle(self, msg: object) -> None:
        rep, inst = self._report, self.instance
        self.acked_seq = max(self.acked_seq, getattr(msg, "seq", 0))
        if isinstance(msg, m.AddRequest):
            self._added_since_report = True
            rep.received.append((msg.request_id, time.time()))
            try:
                inst.add_request(msg.to_request())
            except ValueError as e:
                self._refuse(msg.request_id, f"instance {self.index} rejected the request: {e}")
        elif isinstance(msg, m.Abort):
            inst.abort_request(msg.request_id)
        elif isinstance(msg, m.Steal):
            req = inst.requests.get(msg.request_id)
            taken = req is not None and inst.take_waiting(req)
            (rep.stolen if taken else rep.refused).append(msg.request_id)
        elif isinstance(msg, m.Migrate):
            self._migrate_out(msg.request_id)
        elif isinstance(msg, m.AddMigrated):
            self._migrate_in(msg)
        elif isinstance(msg, m.Checked):
            self.checked_report = max(self.checked_report, msg.report)
        elif isinstance(msg, m.ChangeRole):
            inst.change_policy(POLICIES[msg.policy], msg.scheduler)
            self.await_offload_check = msg.await_offload_check
        elif isinstance(msg, m.Stop):
            self.stopped = True

    def _migrate_out(self, request_id: str) -> None:
        moved = self.instance.migrate_out(request_id)
        if moved is None:
            self._report.not_migrated.append(request_id)
            return
        req, kv = moved.request, moved.kv
        if kv is not None and len(kv.data) > MAX_KV_BYTES:
            kv = None  # past what one frame carries: the target recomputes it
        self._report.migrated.append(m.Moved(request_id, list(req.output_token_ids), req.num_computed_tokens,
                                             req.is_decode, req.num_preemptions, moved.text_sent, kv))

    def _migrate_in(self, msg: m.AddMigrated) -> None:
        self._added_since_report = True
        try:
            self.instance.migrate_in(msg.moved.to_migrated(msg.add))
        except ValueError as e:
            self._refuse(msg.add.request_id,
                         f"instance {self.index} could not take the migrated request: {e}")

    def _refuse(self, request_id: str, reason: str) -> None:
        """A request this worker could not take ends, failed with the reason, in the next report."""
        self._report.outputs.append(RequestOutput(
            request_id, finished=True, finish_reason=RequestStatus.FINISHED_FAILED.value, error=reason))

    def _step(self) -> bool:
        """Run one iteration; False when the scheduler chose no batch."""
        steps = self.instance.num_steps
        try:
            self._report.outputs.extend(self.instance.step(time.time))
            return self.instance.num_steps > steps
        except Exception as e:  # a failing iteration must end its requests, not hang their clients
            reason = f"instance {self.index} failed an iteration: {type(e).__name__}: {e}"
            self._report.step_error = reason
            for rid in list(self.instance.requests):
                req = self.instance.abort_request(rid, RequestStatus.FINISHED_FAILED, reason)
                self._report.outputs.append(
                    RequestOutput(
                        rid,
                        finished=True,
                        finish_reason=RequestStatus.FINISHED_FAILED.value,
                        error=reason,
                        num_prompt_tokens=req.prompt_len if req else 0,
                        num_output_tokens=req.num_output_tokens if req else 0,
                    )
                )
            return True

    def _send(self) -> None:
        rep = self._report
        self.num_reports += 1
        rep.acked_seq, rep.number = self.acked_seq, self.num_reports
        inst = self.instance
        rep.snapshot = snapshot_of(inst.scheduler, inst.num_steps, inst.iterations)
        rep.awaits_check = awaits_offload_check(self.await_offload_check, rep.snapshot)
        self.sock.send(self.codec.encode(rep))
        self._report = self._fresh()
        self._added_since_report = False
        self._last_awaits_check = rep.awaits_check


def awaits_offload_check(enabled: bool, snapshot: m.Snapshot) -> bool:
    """Whether an LP instance holds its next iteration for the router's check of this report (our
    workers and the vLLM plugin alike). Only requests that have not started can be moved: with none
    listed there is nothing to check."""
    return enabled and any(not e.started for e in snapshot.waiting)


def serve_instance(
    spec: InstanceSpec, endpoint: str, index: int, secret: bytes, parent_pid: int | None = None
) -> None:
    """Build the instance, connect to the server and run until told to stop."""
    instance = build_instance(spec)
    codec = m.codec(secret)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    # A fresh identity per worker process: the server routes to whoever said hello last for this
    # instance, so a restarted worker never receives its predecessor's messages.
    sock.setsockopt(zmq.IDENTITY, f"instance-{index}-{os.getpid()}-{secrets.token_hex(4)}".encode())
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(endpoint)
    try:
        bm = instance.scheduler.block_manager
        sock.send(codec.encode(m.Hello(index, os.getpid(), bm.num_blocks, socket.gethostname())))
        WorkerLoop(instance, sock, codec, index, parent_pid, spec.await_offload_check).run()
    finally:
        sock.close()
        ctx.term()


def process_main(spec: InstanceSpec, endpoint: str, index: int, secret: bytes, parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl-C in a terminal signals the whole process group; the server stops the workers itself,
    # after draining, so a worker must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve_instance(spec, endpoint, index, secret, parent_pid)
