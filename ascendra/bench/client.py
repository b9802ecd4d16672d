"""One streamed request to an OpenAI-compatible server, timed from the client side.

Token counting (a chunk may carry several tokens, or none):
- The request asks for `stream_options: {include_usage, continuous_usage_stats}`. vLLM then puts the
  cumulative `usage.completion_tokens` in every chunk, so a chunk's token count is the increase of that
  number: exact, however the server groups tokens or holds back text that ends inside a character.
- A server without per-chunk usage: each chunk whose choice carries non-empty text counts one token.
  When the final usage chunk reports more completion tokens than were counted (text held back, or
  several tokens in one chunk), the difference is put on the last token-bearing chunk, since those
  tokens reached the user no earlier than that.
All tokens of a chunk get the chunk's arrival time: that is when the user sees them (a gap of 0 then).

TTFT is measured from the request's *scheduled* arrival time, not from when the client got round to
sending it, so client lag or a --max-concurrency queue counts against the system, as a real user would
see it; the send time is recorded too, to show client lag.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class BenchRequest:
    index: int
    arrival_time: float  # seconds from the run's start
    prompt: str | list[int]  # the prompt text or token ids (completions), or the user message (chat)
    prompt_len: int  # tokens asked for by the workload
    output_len: int  # max_tokens


@dataclass(slots=True)
class RequestResult:
    index: int
    arrival_time: float
    prompt_len: int
    output_len: int
    send_time: float | None = None  # seconds from the run's start
    token_times: list[float] = field(default_factory=list)
    ok: bool = False
    error: str | None = None
    http_status: int | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # the server's usage figures, when it sent them
    completion_tokens: int | None = None
    per_chunk_usage: bool = False  # token counts came from per-chunk usage (exact)
    response_id: str | None = None  # the answer's `id` (our server's: the router's request id)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    endpoint: str = "completions"  # or "chat"
    ignore_eos: bool = True
    continuous_usage: bool = True
    timeout: float = 300.0  # seconds for one whole request
    extra_body: dict[str, Any] = field(default_factory=dict)


def request_body(opts: ClientOptions, req: BenchRequest) -> dict[str, Any]:
    stream_options: dict[str, Any] = {"include_usage": True}
    if opts.continuous_usage:
        stream_options["continuous_usage_stats"] = True
    body: dict[str, Any] = {
        "model": opts.model,
        "max_tokens": req.output_len,
        "temperature": 0.0,
        "stream": True,
        "stream_options": stream_options,
    }
    if opts.ignore_eos:
        body["ignore_eos"] = True
    if opts.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        body["prompt"] = req.prompt
    body.update(opts.extra_body)
    return body


def endpoint_path(endpoint: str) -> str:
    if endpoint == "chat":
        return "/chat/completions"
    if endpoint == "completions":
        return "/completions"
    raise ValueError(f"unknown endpoint {endpoint!r}; use completions or chat")


def _chunk_text(choice: dict[str, Any]) -> str:
    if "delta" in choice:  # chat
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


class _Counter:
    """Turns parsed chunks into token arrival times (see module doc)."""

    def __init__(self, result: RequestResult) -> None:
        self.r = result
        self.last_usage = 0

    def feed(self, obj: dict[str, Any], now: float) -> None:
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            self.r.error = str(err.get("message", err) if isinstance(err, dict) else err)
            return
        if self.r.response_id is None and isinstance(obj.get("id"), str):
            self.r.response_id = obj["id"]
        choices = obj.get("choices") or []
        usage = obj.get("usage") or None
        if usage is not None:
            self.r.prompt_tokens = usage.get("prompt_tokens", self.r.prompt_tokens)
        if choices:
            choice = choices[0]
            if usage is not None and usage.get("completion_tokens") is not None:
                self.r.per_chunk_usage = True
                n = int(usage["completion_tokens"]) - self.last_usage
            else:
                n = 1 if _chunk_text(choice) else 0
            if n > 0:
                self.r.token_times.extend([now] * n)
                self.last_usage += n
            if choice.get("finish_reason"):
                self.r.finish_reason = choice["finish_reason"]
        if usage is not None and usage.get("completion_tokens") is not None:
            self.r.completion_tokens = int(usage["completion_tokens"])

    def close(self) -> None:
        """Reconcile with the final usage: tokens the chunks did not show arrived with the last chunk."""
        missing = (self.r.completion_tokens or 0) - len(self.r.token_times)
        if missing > 0 and self.r.token_times:
            self.r.token_times.extend([self.r.token_times[-1]] * missing)


async def send_request(
    client: httpx.AsyncClient, opts: ClientOptions, req: BenchRequest, result: RequestResult, t0: float
) -> None:
    """Send `req`, stream the answer and fill `result` in place (partial times survive a cancellation).

    Never raises for server or network faults: they end up in result.error with ok False.
    """
    result.send_time = time.perf_counter() - t0
    counter = _Counter(result)
    saw_done = False
    try:
        async with asyncio.timeout(opts.timeout):
            path, body = endpoint_path(opts.endpoint), request_body(opts, req)
            async with client.stream("POST", path, json=body) as resp:
                result.http_status = resp.status_code
                if resp.status_code != 200:
                    body = (await resp.aread()).decode(errors="replace")
                    result.error = f"HTTP {resp.status_code}: {body[:300]}"
                    return
                async for line in resp.aiter_lines():
                    now = time.perf_counter() - t0
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event: lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        saw_done = True
                        break
                    try:
                        counter.feed(json.loads(data), now)
                    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
                        result.error = f"bad chunk {data[:120]!r}: {e}"
                        return
    except TimeoutError:
        result.error = f"timed out after {opts.timeout:g} s"
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        counter.close()
    if result.error is None and not (saw_done or result.finish_reason):
        result.error = "stream ended without [DONE] or a finish_reason"
    result.ok = result.error is None and result.http_status == 200
