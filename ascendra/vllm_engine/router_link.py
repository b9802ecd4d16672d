"""The plugin's line to the router: the same signed msgpack frames our own instance workers send.

vLLM's engine core calls the scheduler only while it has work, so the socket belongs to a thread of
its own: it sends what the scheduler hands it (hello, a report after every step), repeats the last
report as a heartbeat while the engine is idle, and keeps what the router sends (steals) for the
scheduler to apply at its next step. zmq sockets are not shared between threads: only this thread
touches the socket; the scheduler and it meet in two deques (appends and pops are atomic), and in a
condition on which the scheduler can wait for the router's `Checked` to one of its reports.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import replace

import zmq

from ascendra.runtime.live import messages as m
from ascendra.runtime.live.wire import BadMessage

log = logging.getLogger("ascendra.vllm")
HEARTBEAT_S = 0.5  # as our workers: an idle engine still reports this often


class RouterLink:
    def __init__(self, endpoint: str, secret: bytes, index: int) -> None:
        self.index = index
        self._codec = m.codec(secret)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.IDENTITY, f"vllm-{index}-{os.getpid()}-{secrets.token_hex(4)}".encode())
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.connect(endpoint)
        self._outbox: deque[object] = deque()
        self.inbox: deque[object] = deque()
        self._last_report: m.Report | None = None
        self._number = 0  # reports handed to `send`; numbered there, so the scheduler knows which
        self._checked = 0  # the newest report the router has checked for offloads
        self._news = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ascendra-router-link", daemon=True)
        self._thread.start()

    def send(self, msg: object) -> int:
        """Queue a message for the router; a report gets its number here, which is returned."""
        if isinstance(msg, m.Report):
            self._number += 1
            msg.number = self._number
        self._outbox.append(msg)
        return self._number

    def wait_checked(self, number: int, timeout: float) -> bool:
        """Wait until the router has checked report `number` (the steals it decided on are in the
        inbox by then), at most `timeout` seconds: a router that does not answer stalls nothing."""
        with self._news:
            return self._news.wait_for(lambda: self._checked >= number or self._stop.is_set(), timeout)

    def close(self) -> None:
        self._stop.set()
        with self._news:
            self._news.notify_all()
        self._thread.join(2.0)

    def _run(self) -> None:
        last_sent = 0.0
        try:
            while not self._stop.is_set():
                if self._sock.poll(20):
                    self._receive()
                while self._outbox:
                    self._send(self._outbox.popleft())
                    last_sent = time.time()
                if self._last_report is not None and time.time() - last_sent > HEARTBEAT_S:
                    # Nothing new: the last report again (its outputs and receipts already went),
                    # under its own number; the scheduler waits on the original's check, if any.
                    self._send(replace(self._last_report, stolen=[], refused=[], received=[],
                                       awaits_check=False))
                    last_sent = time.time()
        finally:
            self._sock.close(0)
            self._ctx.term()

    def _receive(self) -> None:
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = self._codec.decode(frame)
            except BadMessage as e:
                log.warning("dropped a frame from the router socket: %s", e)
                continue
            if isinstance(msg, m.Checked):
                with self._news:
                    self._checked = max(self._checked, msg.report)
                    self._news.notify_all()
            else:
                self.inbox.append(msg)

    def _send(self, msg: object) -> None:
        if isinstance(msg, m.Report):
            self._last_report = msg
        self._sock.send(self._codec.encode(msg))
