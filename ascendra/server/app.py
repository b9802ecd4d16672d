"""The OpenAI-compatible HTTP API over the live cluster (FastAPI).

Routes: POST /v1/completions, POST /v1/chat/completions (streaming as server-sent events, or one JSON
body), GET /v1/models, GET /health, GET /metrics. Prompts are tokenized here, in the server process,
on a thread (a megabyte prompt takes a second, which /health must not wait for); text is produced
next to the tokens in the instance workers. A client that disconnects aborts its request, streaming
or not, which frees its KV blocks. Before a route runs, a request passes the API key
(door.ApiKeyMiddleware) and has its whole body read against a size limit and a deadline
(body_reader.py; the head's deadline is the HTTP protocol's, http_protocol.py). The route checks the
media type, validates every field and the SLOs (protocol.py, slos.py), and only then takes an
admission slot (door.Admission). Nothing here depends on which engine serves behind LiveCluster.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ascendra.core.default_slo import DEFAULT_SLO
from ascendra.core.slo_floors import SLOFloors
from ascendra.runtime.live.cluster import LiveCluster
from ascendra.runtime.live.messages import AddRequest
from ascendra.runtime.live.state import LiveConfig, Tracked
from ascendra.server.access_log import PROBE_PATHS
from ascendra.server.body_reader import BodyReader
from ascendra.server.defaults import GenerationDefaults
from ascendra.server.door import Admission, ApiKeyMiddleware, Slot, check_json_content_type, error_response
from ascendra.server.metrics import ServerMetrics
from ascendra.server.protocol import ApiError, Limits, ParsedRequest, error_body, parse_body
from ascendra.server.responses import DONE, Accumulator, sse
from ascendra.server.slos import SLOClass, SLOPolicy

OPEN_PATHS = PROBE_PATHS  # open without the API key unless --api-key-all-routes


@dataclass
class ServerConfig:
    live: LiveConfig
    model_name: str
    model_aliases: tuple[str, ...]
    tokenizer: Any  # ascendra.model.tokenizer.Tokenizer or None (dummy weights)
    ttft_slo_ms: float = DEFAULT_SLO.ttft_ms  # of a request that sets none
    tbt_slo_ms: float = DEFAULT_SLO.tbt_ms
    drain_timeout: float = 30.0
    vocab_size: int | None = None
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    api_key: str | None = None
    api_key_all_routes: bool = False  # also guard /health and /metrics
    max_concurrent_requests: int = 512
    max_request_bytes: int = 2 * 1024 * 1024
    header_timeout: float = 10.0  # seconds for a request's head to arrive (http_protocol.py)
    body_timeout: float = 30.0  # seconds for its body, from the head (body_reader.py)
    min_ttft_slo_ms: float = 0.0  # the operator's bounds on what clients may ask (slos.py)
    min_tbt_slo_ms: float = 0.0
    slo_classes: tuple[SLOClass, ...] = ()
    below_floor: str = "reject"  # or "best-effort"
    tbt_slo_mean: bool = False  # the default TBT SLO bounds the mean gap (vLLM bench's TPOT)


@dataclass
class ServerState:
    config: ServerConfig
    cluster: LiveCluster
    metrics: ServerMetrics
    limits: Limits
    admission: Admission
    draining: bool = False


def slo_policy(config: ServerConfig) -> SLOPolicy:
    """The SLOs clients may ask of this server. The floors are the fastest instance's: the largest
    chunk any of them takes when idle (all share one performance model)."""
    live = config.live
    chunk = max(live.system.scheduler_config(role, live.capacity.max_model_len).max_num_batched_tokens
                for role in set(live.system.roles()))
    default = SLOClass("default", config.ttft_slo_ms, config.tbt_slo_ms, config.tbt_slo_mean)
    return SLOPolicy(default, SLOFloors(live.perf_model, chunk), live.capacity.max_model_len,
                     config.min_ttft_slo_ms, config.min_tbt_slo_ms, {c.name: c for c in config.slo_classes},
                     config.below_floor)


def create_app(config: ServerConfig) -> FastAPI:
    metrics = ServerMetrics()
    cluster = LiveCluster(config.live, metrics)
    slos = slo_policy(config)
    limits = Limits((config.model_name, *config.model_aliases), config.live.capacity, slos, config.vocab_size,
                    config.defaults)
    state = ServerState(config, cluster, metrics, limits, Admission(config.max_concurrent_requests))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await cluster.start()
        try:
            yield
        finally:
            await cluster.shutdown()

    # No /docs or /openapi.json: the routes read raw bodies, so there is no schema to show, and an
    # unauthenticated page listing them is surface for nothing.
    app = FastAPI(title="Ascendra", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    # Added first, so it runs inside the API key check: no body is read for a client without the key.
    app.add_middleware(BodyReader, max_bytes=config.max_request_bytes, timeout=config.body_timeout,
                       departures=metrics.departures, on_refused=metrics.on_refused)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, on_refused=metrics.on_refused,
                           open_paths=frozenset() if config.api_key_all_routes else OPEN_PATHS)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        metrics.on_refused(e.status)
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, str(e)[:300]))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(e.status_code, str(e.detail), code=e.status_code, type_=kind))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        # A defect of ours, not the client's: answered in OpenAI's shape (Starlette re-raises it after
        # this, so uvicorn logs its traceback).
        return error_response(ApiError(500, f"internal server error ({type(e).__name__})",
                                       type_="server_error", code="internal_error"))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _generate(state, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(state, request, chat=True)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": config.model_name, "object": "model", "created": 0, "owned_by": "ascendra",
                "max_model_len": config.live.capacity.max_model_len,
                "generation_defaults": config.defaults.as_dict(),  # applied where a request sets none
                "slo": slos.card()}  # the defaults, the tightest SLOs a request may ask, the classes
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> JSONResponse:
        alive = cluster.num_alive
        status = "draining" if state.draining else ("ok" if alive == len(cluster.workers) else
                                                    "degraded" if alive else "down")
        body = {"status": status, "requests_in_flight": len(cluster.tracked),
                "requests_admitted": state.admission.active, "admission_limit": state.admission.limit,
                "offloads": cluster.num_offloads, "reroutes": cluster.num_reroutes,
                "instances": [{"index": w.index, "role": w.role, "policy": w.policy, "alive": w.alive,
                               "pid": w.pid, "host": w.host, "death": w.death, "restarts": w.restarts,
                               "restarting": w.restart_at is not None} for w in cluster.workers]}
        return JSONResponse(body, status_code=200 if status in ("ok", "degraded") else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.in_flight.set(len(cluster.tracked))
        metrics.frames_rejected.set(cluster.transport.num_rejected)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _generate(state: ServerState, request: Request, chat: bool) -> Response:
    arrival = time.time()  # the request's arrival at the router, its body in: TTFT counts from here
    cluster = state.cluster
    if state.draining:
        raise ApiError(503, "the server is shutting down", type_="service_unavailable", code="draining")
    if cluster.num_alive == 0:
        raise ApiError(503, "no model instance is alive", type_="service_unavailable", code="no_instance")
    check_json_content_type(request)
    raw = await request.body()  # already read whole (body_reader.py): this waits for nothing
    state.admission.check()  # full now: refused before its prompt is tokenized for nothing
    tok = state.config.tokenizer
    parsed = await asyncio.to_thread(parse_body, raw, chat, state.limits, tok)
    slot = state.admission.enter()  # read and validated: only now does it hold a slot
    for slo in parsed.best_effort:
        state.metrics.best_effort.labels(slo).inc()
    tracked: Tracked | None = None
    try:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        stop_ids = parsed.params.stop_ids(frozenset() if tok is None else tok.eos_token_ids)
        add = AddRequest(0, rid, arrival, parsed.prompt_token_ids, parsed.params.max_tokens, parsed.ttft_slo,
                         parsed.tbt_slo, stop_ids, parsed.params, tbt_mean=parsed.tbt_mean)
        tracked = cluster.submit(add)
        acc = Accumulator(rid, parsed.model, chat, len(parsed.prompt_token_ids), parsed.logprobs, tok,
                          parsed.continuous_usage)
        if parsed.stream:
            stream = _stream(state, tracked, acc, parsed)
            response = _EventStream(stream, state, tracked, slot, _client(request))
            slot = None  # the stream releases it when it ends, however it ends
            return response
        return await _collect(state, request, tracked, acc)
    finally:
        if slot is not None:
            slot.release()
            _abort_unless_done(state, tracked, "waiting", _client(request))


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def _abort_unless_done(state: ServerState, tracked: Tracked | None, stage: str, client: str) -> None:
    """The request's client is gone (or its handler was cancelled): abort it unless it has finished,
    and say so once (departures.py)."""
    if tracked is not None and not tracked.done:
        state.cluster.abort(tracked.add.request_id)
        state.metrics.cancelled.inc()
        state.metrics.departures.left(stage, client, f"request {tracked.add.request_id} aborted after "
                                      f"{tracked.tokens_delivered} tokens")


class _EventStream(StreamingResponse):
    """An SSE response that aborts its request and frees its admission slot when it ends, however it
    ends: also when the client left before the first chunk, when the body generator never starts and
    so never reaches its own `finally`."""

    def __init__(self, content: AsyncIterator[str], state: ServerState, tracked: Tracked, slot: Slot,
                 client: str) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._state, self._tracked, self._slot, self._client = state, tracked, slot, client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
            _abort_unless_done(self._state, self._tracked, "streaming", self._client)


async def _until_disconnect(request: Request) -> None:
    """Returns when the client has gone. The body has been read, so the next ASGI message is the
    disconnect (uvicorn delivers it as soon as the connection closes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(state: ServerState, request: Request, tracked: Tracked, acc: Accumulator) -> Response:
    """The whole answer as one body. The client may leave meanwhile: a task waits for its disconnect
    beside the outputs, so the request is aborted (and its KV freed) at once, however often outputs
    come. (Polling for the disconnect only when no output came for a while, as this once did, never
    polls while tokens flow, and every abandoned request ran to its end.)"""
    gone = asyncio.ensure_future(_until_disconnect(request))
    try:
        while acc.finish_reason is None:
            out = asyncio.ensure_future(tracked.queue.get())
            await asyncio.wait((out, gone), return_when=asyncio.FIRST_COMPLETED)
            if not out.done():
                out.cancel()
                return Response(status_code=499)  # nobody reads it; the finally aborts the request
            acc.add(out.result())
    finally:
        gone.cancel()
        _abort_unless_done(state, tracked, "waiting", _client(request))
    if acc.finish_reason == "error":
        status = 503 if state.cluster.num_alive == 0 or state.draining else 500
        return JSONResponse(error_body(acc.error or "the request failed", "server_error", code=status),
                            status_code=status)
    return JSONResponse(acc.body())


async def _stream(state: ServerState, tracked: Tracked, acc: Accumulator, parsed: ParsedRequest
                  ) -> AsyncIterator[str]:
    """The stream's chunks. A client that leaves closes it; _EventStream then aborts the request."""
    metrics = state.metrics
    offset = 0
    first = acc.first_chunk()
    if first:
        yield first
    while acc.finish_reason is None:
        out = await tracked.queue.get()
        acc.add(out)
        if acc.finish_reason == "error":
            yield sse(error_body(acc.error or "the request failed", "server_error", code=500))
            break
        chunk = acc.chunk(out, offset)
        offset += len(out.text)
        if chunk is not None:
            if out.token_time is not None:
                metrics.on_stream_latency(time.time() - out.token_time)
            yield chunk
    if parsed.include_usage:
        yield acc.usage_chunk()
    yield DONE
