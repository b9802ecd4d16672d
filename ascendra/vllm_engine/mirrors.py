"""Our core `Request` beside each of vLLM's: the figures our policies and the router read.

vLLM's request carries tokens and sampling parameters; our policies read a request's SLO, deadline,
arrival and token counts through our own `Request`. A mirror is made when vLLM's scheduler gets
the request and dropped when vLLM frees it. The SLOs and the router's own request id and arrival
time come with the request, in `vllm_xargs` (`sampling_params.extra_args`): a request sent by
someone else than our router gets the engine's default SLOs and vLLM's own arrival time.
"""

from __future__ import annotations

from vllm.v1.request import Request as VLLMRequest

from ascendra.core.request import SLO, Request
from ascendra.vllm_engine.plugin_config import XARG_ARRIVAL, XARG_ID, XARG_TBT, XARG_TBT_MEAN, XARG_TTFT


def _number(args: dict, key: str, default: float) -> float:
    v = args.get(key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return default
    return v if v > 0 and v < 86_400 * 365 else default


class Mirrors:
    def __init__(self, default_slo: SLO) -> None:
        self.default_slo = default_slo
        self._mirror: dict[str, Request] = {}  # vLLM request id -> mirror
        self._engine: dict[int, VLLMRequest] = {}  # id(mirror) -> vLLM request
        self._by_router_id: dict[str, VLLMRequest] = {}  # the router's id -> vLLM request

    def __len__(self) -> int:
        return len(self._mirror)

    def get(self, request_id: str) -> Request | None:
        return self._mirror.get(request_id)

    def engine_request(self, mirror: Request) -> VLLMRequest:
        return self._engine[id(mirror)]

    def add(self, req: VLLMRequest) -> Request:
        args = (req.sampling_params.extra_args or {}) if req.sampling_params is not None else {}
        d = self.default_slo
        slo = SLO(_number(args, XARG_TTFT, d.ttft), _number(args, XARG_TBT, d.tbt),
                  args.get(XARG_TBT_MEAN) == 1)
        arrival = _number(args, XARG_ARRIVAL, req.arrival_time)
        router_id = args.get(XARG_ID)
        mirror = Request(
            router_id if isinstance(router_id, str) and router_id else req.request_id,
            arrival, max(1, req.num_prompt_tokens), max(1, req.max_tokens or 1), slo,
        )
        self._mirror[req.request_id] = mirror
        self._engine[id(mirror)] = req
        self._by_router_id[mirror.request_id] = req
        return mirror

    def sync(self, req: VLLMRequest, in_flight: int = 0) -> Request:
        """The mirror with vLLM's token counts as they are now, less `in_flight` computed tokens:
        those of steps scheduled but not yet done (vLLM counts them when it schedules)."""
        mirror = self._mirror.get(req.request_id) or self.add(req)
        mirror.num_computed_tokens = max(0, req.num_computed_tokens - in_flight)
        n_out = req.num_output_tokens
        if len(mirror.output_token_ids) != n_out:
            mirror.output_token_ids = list(req.output_token_ids)
        return mirror

    def drop(self, request_id: str) -> Request | None:
        mirror = self._mirror.pop(request_id, None)
        if mirror is not None:
            self._engine.pop(id(mirror), None)
            self._by_router_id.pop(mirror.request_id, None)
        return mirror

    def by_router_id(self, router_id: str) -> VLLMRequest | None:
        return self._by_router_id.get(router_id)
