"""One request served by a vLLM engine: our door's request, sent on to the engine's OpenAI API.

The server validated and tokenized the request; the engine gets the prompt as token ids on
`/v1/completions` (so a chat request's template is rendered once, by us), the sampling parameters
as they were accepted, and the router's id, arrival time and SLOs in `vllm_xargs`, where the
Ascendra scheduler plugin reads them. The engine's stream comes back as our `RequestOutput`s.

Closing the stream aborts the request in the engine and frees its KV: how a client that leaves,
and an offload the engine granted, end it there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx

from ascendra.core.request import RequestStatus
from ascendra.engine.instance import RequestOutput
from ascendra.runtime.live.messages import AddRequest
from ascendra.vllm_engine.plugin_config import XARG_ARRIVAL, XARG_ID, XARG_TBT, XARG_TBT_MEAN, XARG_TTFT

# A freshly (re)started engine says hello before its HTTP server listens: a request that lost its
# connection before any token came is sent again for this long.
CONNECT_RETRY_S = 120.0


def completion_body(add: AddRequest, model: str) -> dict:
    p = add.params
    body = {
        "model": model, "prompt": list(add.prompt_token_ids), "max_tokens": add.max_tokens, "stream": True,
        "stream_options": {"include_usage": True}, "return_token_ids": True,
        "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k if p.top_k > 0 else -1,
        "stop": list(p.stop), "stop_token_ids": sorted(add.stop_token_ids), "ignore_eos": p.ignore_eos,
        "skip_special_tokens": True,
        "vllm_xargs": {XARG_ID: add.request_id, XARG_ARRIVAL: add.arrival_time, XARG_TTFT: add.ttft_slo,
                       XARG_TBT: add.tbt_slo, XARG_TBT_MEAN: int(add.tbt_mean)},
    }
    if p.seed is not None:
        body["seed"] = p.seed
    if p.logprobs:
        body["logprobs"] = 0
    return body


def _finish(reason: str | None) -> str:
    if reason in ("stop", "length", "abort"):
        return reason
    return RequestStatus.FINISHED_FAILED.value


async def stream_from_vllm(client: httpx.AsyncClient, base_url: str, model: str, add: AddRequest,
                           deliver: Callable[[RequestOutput], None]) -> None:
    """Serve `add` on the engine at `base_url`, delivering each chunk; the last output delivered
    is finished (normally, or failed with the reason). Cancel the task to abort the request."""
    rid, n_prompt = add.request_id, len(add.prompt_token_ids)
    n_out = 0
    deadline = time.monotonic() + CONNECT_RETRY_S
    while True:
        try:
            async with client.stream("POST", f"{base_url}/v1/completions", json=completion_body(add, model),
                                     timeout=httpx.Timeout(None, connect=10.0)) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread())[:500].decode("utf-8", "replace")
                    raise RuntimeError(f"the vLLM engine answered {resp.status_code}: {text}")
                finished = False
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError(f"the vLLM engine failed the request: {chunk['error']}")
                    for choice in chunk.get("choices") or ():
                        ids = list(choice.get("token_ids") or ())
                        n_out += len(ids)
                        reason = choice.get("finish_reason")
                        lp = choice.get("logprobs") or {}
                        deliver(RequestOutput(
                            rid, ids, choice.get("text") or "", list(lp.get("token_logprobs") or ()),
                            finished=reason is not None, finish_reason=_finish(reason) if reason else None,
                            num_prompt_tokens=n_prompt, num_output_tokens=n_out, token_time=time.time()))
                        finished = finished or reason is not None
                if not finished:
                    raise RuntimeError("the vLLM engine closed the stream before the request finished")
                return
        except httpx.TransportError:
            # Refused (an engine still starting), or a pooled connection the engine had just
            # closed: nothing of this request was delivered, so it is sent again (a stream that
            # broke is aborted in the engine, which never counts it twice).
            if n_out or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class VLLMRequests:
    """The streams of the requests the cluster has sent to vLLM engines, one task each."""

    def __init__(self, engines, on_output: Callable[[int, RequestOutput], None],
                 on_error: Callable[[int, str, str, bool], None]) -> None:
        self.engines = engines  # VLLMEngines
        self._on_output = on_output
        self._on_error = on_error
        # Idle connections are dropped before the engine's server would close them (uvicorn: 5 s).
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0)
        self.client = httpx.AsyncClient(trust_env=False, limits=limits)
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, add: AddRequest, index: int) -> None:
        self.cancel(add.request_id)
        task = asyncio.get_running_loop().create_task(self._run(add, index))
        self.tasks[add.request_id] = task

    async def _run(self, add: AddRequest, index: int) -> None:
        e = self.engines
        try:
            await stream_from_vllm(self.client, e.url(index), e.served_name, add,
                                   lambda out: self._on_output(index, out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine died, refused, or broke its stream
            # vLLM answers 503 on /health once its engine core is gone: then the whole engine is
            # down (the cluster treats it as a dead instance), else only this request failed.
            down = not await self.healthy(index)
            self._on_error(index, add.request_id, f"vLLM engine {index}: {type(exc).__name__}: {exc}", down)
        finally:
            if self.tasks.get(add.request_id) is asyncio.current_task():
                del self.tasks[add.request_id]

    async def healthy(self, index: int) -> bool:
        try:
            r = await self.client.get(f"{self.engines.url(index)}/health", timeout=5.0)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def cancel(self, request_id: str) -> None:
        """Close the request's stream: the engine aborts it and frees its KV."""
        task = self.tasks.pop(request_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        for rid in list(self.tasks):
            self.cancel(rid)
        await self.client.aclose()
