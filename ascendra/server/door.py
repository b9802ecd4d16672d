"""What a request meets at the door besides its body's size and deadline (body_reader.py): the API
key, the media type and the admission limit. Each refusal is an OpenAI-style JSON error."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ascendra.server.validation import ApiError

RETRY_AFTER_S = 1  # what a refused client is told to wait: about one iteration's worth of finishes


class ErrorResponse(JSONResponse):
    """JSON rendered as ASCII: an error may quote what the client sent, and a lone surrogate in it
    must not fail the rendering (UTF-8 cannot encode one; json's \\u escapes can)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(e: ApiError) -> ErrorResponse:
    return ErrorResponse(e.body(), status_code=e.status, headers=e.headers)


class ApiKeyMiddleware:
    """`--api-key`: every route but `open_paths` wants `Authorization: Bearer <key>` (as vllm serve).

    Plain ASGI rather than BaseHTTPMiddleware, which wraps `receive` and would hide a client's
    disconnect from the routes. The comparison takes the same time wherever the first wrong byte
    is (hmac.compare_digest), so the key cannot be guessed byte by byte from response times."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str],
                 on_refused: Callable[[int], None] | None = None) -> None:
        self.app = app
        self.expected = b"Bearer " + api_key.encode("utf-8")
        self.open_paths = open_paths
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if self.on_refused is not None:
            self.on_refused(401)
        e = ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>' with the key "
                          "the server was started with", code="invalid_api_key",
                     headers={"WWW-Authenticate": "Bearer"})
        await error_response(e)(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        got = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(got, self.expected)


class Admission:
    """A bound on the requests the server holds at once (validated, waiting or running): past it a
    request is refused with 429 and Retry-After at once, instead of waiting in an unbounded queue
    whose every entry also lengthens the router's projections. A request takes its slot only once
    its body is read and validated, so a client that is slow to send, or sends nonsense, holds none."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the admission limit must be at least 1, got {limit}")
        self.limit = limit
        self.active = 0

    def check(self) -> None:
        """429 if no slot is free now (before a prompt is tokenized for nothing)."""
        if self.active >= self.limit:
            raise ApiError(429, f"the server is at its limit of {self.limit} requests in flight; retry "
                                f"after {RETRY_AFTER_S} s", type_="rate_limit_error",
                           code="too_many_requests", headers={"Retry-After": str(RETRY_AFTER_S)})

    def enter(self) -> Slot:
        self.check()
        self.active += 1
        return Slot(self)


@dataclass(eq=False)
class Slot:
    admission: Admission
    held: bool = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.active -= 1


def check_json_content_type(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        shown = media[:60] or "none"
        raise ApiError(415, f"the body must be JSON sent with 'Content-Type: application/json' (got "
                            f"{shown})", code="unsupported_media_type")
