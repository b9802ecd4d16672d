"""The OpenAI-compatible HTTP API over the live cluster (FastAPI).

Routes: POST /v1/completions, POST /v1/chat/completions (streaming as server-sent events, or one JSON
body), GET /v1/models, GET /health, GET /metrics. Prompts are tokenized here, in the server process;
text is produced next to the tokens in the instance workers. A client that disconnects aborts its
request, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ascendra.runtime.live.cluster import LiveCluster
from ascendra.runtime.live.messages import AddRequest
from ascendra.runtime.live.state import LiveConfig, Tracked
from ascendra.server.metrics import ServerMetrics
from ascendra.server.protocol import ApiError, Limits, ParsedRequest, error_body, parse_json, parse_request
from ascendra.server.responses import DONE, Accumulator, sse

DISCONNECT_POLL_S = 0.5


@dataclass
class ServerConfig:
    live: LiveConfig
    model_name: str
    model_aliases: tuple[str, ...]
    tokenizer: Any  # ascendra.model.tokenizer.Tokenizer or None (dummy weights)
    max_model_len: int
    num_blocks: int  # per instance
    ttft_slo_ms: float = 5000.0
    tbt_slo_ms: float = 1000.0
    drain_timeout: float = 30.0


@dataclass
class ServerState:
    config: ServerConfig
    cluster: LiveCluster
    metrics: ServerMetrics
    limits: Limits
    draining: bool = False


def create_app(config: ServerConfig) -> FastAPI:
    metrics = ServerMetrics()
    cluster = LiveCluster(config.live, metrics)
    spec = config.live.spec
    limits = Limits((config.model_name, *config.model_aliases), config.max_model_len, config.num_blocks,
                    spec.block_size, config.ttft_slo_ms, config.tbt_slo_ms)
    state = ServerState(config, cluster, metrics, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await cluster.start()
        try:
            yield
        finally:
            await cluster.shutdown()

    app = FastAPI(title="Ascendra", lifespan=lifespan)
    app.state.server = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(e)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(e.detail), kind, code=e.status_code), status_code=e.status_code)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _generate(state, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(state, request, chat=True)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": config.model_name, "object": "model", "created": 0, "owned_by": "ascendra",
                "max_model_len": config.max_model_len}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> JSONResponse:
        alive = cluster.num_alive
        status = "draining" if state.draining else ("ok" if alive == len(cluster.workers) else
                                                    "degraded" if alive else "down")
        body = {"status": status, "requests_in_flight": len(cluster.tracked),
                "offloads": cluster.num_offloads, "reroutes": cluster.num_reroutes,
                "instances": [{"index": w.index, "role": w.role, "policy": w.policy, "alive": w.alive,
                               "pid": w.pid, "host": w.host, "death": w.death} for w in cluster.workers]}
        return JSONResponse(body, status_code=200 if status in ("ok", "degraded") else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.in_flight.set(len(cluster.tracked))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _generate(state: ServerState, request: Request, chat: bool) -> Response:
    arrival = time.time()  # the request's arrival at the router: TTFT counts from here
    cluster = state.cluster
    if state.draining:
        raise ApiError(503, "the server is shutting down", type_="service_unavailable", code="draining")
    if cluster.num_alive == 0:
        raise ApiError(503, "no model instance is alive", type_="service_unavailable", code="no_instance")
    parsed = parse_request(parse_json(await request.body()), chat, state.limits, state.config.tokenizer)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    tok = state.config.tokenizer
    stop_ids = parsed.params.stop_ids(frozenset() if tok is None else tok.eos_token_ids)
    add = AddRequest(0, rid, arrival, parsed.prompt_token_ids, parsed.params.max_tokens, parsed.ttft_slo,
                     parsed.tbt_slo, stop_ids, parsed.params)
    tracked = cluster.submit(add)
    acc = Accumulator(rid, parsed.model, chat, len(parsed.prompt_token_ids), parsed.logprobs, tok,
                      parsed.continuous_usage)
    if parsed.stream:
        return StreamingResponse(_stream(state, tracked, acc, parsed), media_type="text/event-stream")
    return await _collect(state, request, tracked, acc)


async def _collect(state: ServerState, request: Request, tracked: Tracked, acc: Accumulator) -> Response:
    while acc.finish_reason is None:
        try:
            out = await asyncio.wait_for(tracked.queue.get(), DISCONNECT_POLL_S)
        except TimeoutError:
            if await request.is_disconnected():
                state.cluster.abort(acc.request_id)
                return Response(status_code=499)
            continue
        acc.add(out)
    if acc.finish_reason == "error":
        status = 503 if state.cluster.num_alive == 0 or state.draining else 500
        return JSONResponse(error_body(acc.error or "the request failed", "server_error", code=status),
                            status_code=status)
    return JSONResponse(acc.body())


async def _stream(state: ServerState, tracked: Tracked, acc: Accumulator, parsed: ParsedRequest
                  ) -> AsyncIterator[str]:
    metrics = state.metrics
    offset = 0
    try:
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
    finally:
        if not tracked.done:  # the client went away mid-stream (the generator was closed)
            state.cluster.abort(acc.request_id)
