"""The guard of tests/test_hostile.py: beside the hostile requests, /health polled every 0.1 s and
healthy streams run one after another, each in its own thread, for the whole module."""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import openai

from tests.hostile_cases import MODEL

STREAM_TOKENS = 16


@dataclass
class StreamRun:
    start: float
    end: float = math.inf
    tokens: int = 0
    reason: str | None = None
    error: str | None = None


class Guard:
    """/health polled and healthy streams run, in two threads, for the whole module."""

    def __init__(self, url: str, key: str) -> None:
        self.key = key
        self.url = url
        self.health: list[tuple[float, float]] = []  # (sent at, round trip; inf if it failed)
        self.streams: list[StreamRun] = []
        self.stop, self.pause, self.idle = threading.Event(), threading.Event(), threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._poll, self._stream)]
        for t in self.threads:
            t.start()

    def _poll(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self.stop.is_set():
                t = time.perf_counter()
                try:
                    ok = c.get(self.url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health.append((t, time.perf_counter() - t if ok else math.inf))
                self.stop.wait(0.1)

    def _stream(self) -> None:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key=self.key, timeout=120, max_retries=0)
        while not self.stop.is_set():
            if self.pause.is_set():
                self.idle.set()
                self.stop.wait(0.05)
                continue
            self.idle.clear()
            run = StreamRun(time.perf_counter())
            try:
                for c in client.completions.create(
                        model=MODEL, prompt="Count from one to twenty:", max_tokens=STREAM_TOKENS,
                        temperature=0, stream=True, stream_options={"include_usage": True},
                        extra_body={"ignore_eos": True}):
                    if c.choices and c.choices[0].finish_reason:
                        run.reason = c.choices[0].finish_reason
                    if c.usage is not None:
                        run.tokens = c.usage.completion_tokens
            except Exception as e:  # noqa: BLE001 - recorded and asserted on
                run.error = repr(e)
            run.end = time.perf_counter()
            self.streams.append(run)

    @contextmanager
    def paused(self):
        """No healthy stream in flight (for exact idle counts); streams resume afterwards."""
        self.pause.set()
        assert self.idle.wait(120), "the healthy stream did not end"
        try:
            yield
        finally:
            self.pause.clear()


def wait_for(cond, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False
