"""OpenAI request bodies: parse and validate into what the engine needs, or a 4xx ApiError.

Validation is by hand rather than by pydantic models so that every bad input gets OpenAI's error
shape with the offending `param`, and so the handler starts timing before the body is parsed. Every
field is checked at the door (validation.py: types, sizes, text); sampling ranges are SamplingParams'
own rule, whose ValueError becomes a 400 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ascendra.core.config import KVCapacity
from ascendra.model.sampling import SamplingParams
from ascendra.server.defaults import GenerationDefaults
from ascendra.server.prompts import chat_prompt, completion_prompt
from ascendra.server.slos import AskedSLO, SLOPolicy
from ascendra.server.validation import ApiError, Fields, brief, error_body, parse_json

__all__ = ["ApiError", "Limits", "ParsedRequest", "error_body", "parse_json", "parse_request"]

_COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream",
           "stream_options", "logprobs", "ignore_eos", "ttft_slo_ms", "tbt_slo_ms", "tpot_slo_ms",
           "slo_class", "user"}  # user: an end-user id for abuse monitoring; it changes nothing in the answer
COMPLETION_FIELDS = frozenset(_COMMON | {"prompt", "echo"})
CHAT_FIELDS = frozenset(_COMMON | {"messages", "max_completion_tokens", "top_logprobs"})
# OpenAI (and vLLM) fields this server does not implement, accepted only at the value that asks for
# nothing: clients such as LangChain send `frequency_penalty: 0` on every request.
NEUTRAL: dict[str, Any] = {
    "n": 1, "best_of": 1, "frequency_penalty": 0, "presence_penalty": 0, "repetition_penalty": 1,
    "min_p": 0, "min_tokens": 0, "logit_bias": {}, "suffix": "", "tools": [], "functions": [],
    "tool_choice": "none", "function_call": "none", "response_format": {"type": "text"},
    "store": False, "modalities": ["text"],
}
STREAM_OPTIONS = frozenset({"include_usage", "continuous_usage_stats"})
SAMPLING_FIELDS = frozenset(f.name for f in fields(SamplingParams))
# Per-request SLOs, in ms: the range a number must lie in before the server's floors are checked
# (slos.py). The bottom: no answer of this server, not even an error, comes back within a
# millisecond (HTTP parsing plus one hop to a worker process). The ceiling: one day, past which an SLO
# is no SLO, and deadlines stay ordinary floats (1e300 ms would not).
SLO_MS_RANGE = (1.0, 86_400_000.0)


@dataclass
class Limits:
    """What the server checks a request against."""

    model_names: tuple[str, ...]
    capacity: KVCapacity  # what one instance holds
    slos: SLOPolicy  # the defaults, floors, minimums and classes of SLOs
    vocab_size: int | None = None  # token-id prompts must lie below it
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)


@dataclass
class ParsedRequest:
    chat: bool
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False  # vLLM's extension: usage in every chunk
    logprobs: bool = False
    ttft_slo: float = 1.0  # seconds
    tbt_slo: float = 1.0
    tbt_mean: bool = False  # tbt_slo bounds the mean gap (`SLO.tbt_mean`)
    model: str = ""
    best_effort: tuple[str, ...] = ()  # the SLOs ("ttft", "tbt") raised to the server's bound


def parse_body(raw: bytes, chat: bool, limits: Limits, tokenizer: Any) -> ParsedRequest:
    """The whole door for one body: JSON, fields, prompt and tokens (blocking: run it in a thread)."""
    return parse_request(parse_json(raw), chat, limits, tokenizer)


def parse_request(body: dict, chat: bool, limits: Limits, tokenizer: Any) -> ParsedRequest:
    f = Fields(body)
    f.check_known(CHAT_FIELDS if chat else COMPLETION_FIELDS, NEUTRAL)
    model = f.str("model", "", max_chars=256)
    if model and model not in limits.model_names:
        raise ApiError(404, f"the model {brief(model, 80)} does not exist; this server serves "
                            f"'{limits.model_names[0]}'", "model", "model_not_found")
    f.str("user", max_chars=256)
    if f.bool("echo"):
        raise ApiError(400, "echo is not supported", "echo")
    logprobs = _logprobs(f, chat)
    stream = f.bool("stream")
    opts = Fields(f.object("stream_options"), "stream_options.", "stream_options")
    opts.check_known(STREAM_OPTIONS)
    if opts.body and not stream:
        raise ApiError(400, "'stream_options' is only allowed when 'stream' is true", "stream_options")
    include_usage, continuous = opts.bool("include_usage"), opts.bool("continuous_usage_stats")
    ignore_eos = f.bool("ignore_eos")
    stop = f.value("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise ApiError(400, f"'stop' must be a string or a list of strings, got {brief(stop)}", "stop")
    for s in stop or []:
        Fields({"stop": s}).str("stop")  # encodable text
    asked = AskedSLO(_slo_ms(f, "ttft_slo_ms"), _slo_ms(f, "tbt_slo_ms"), f.str("slo_class", max_chars=64),
                     _slo_ms(f, "tpot_slo_ms"))
    # The fields above are cheap; the prompt may take seconds to tokenize, so it comes last.
    max_len = limits.capacity.max_model_len
    prompt_ids = (chat_prompt(body, tokenizer, max_len) if chat
                  else completion_prompt(body, tokenizer, limits.vocab_size, max_len))
    if not prompt_ids:
        raise ApiError(400, "the prompt is empty", "messages" if chat else "prompt")
    max_tokens = _max_tokens(f, chat, len(prompt_ids), limits)
    slo = limits.slos.grant(asked, len(prompt_ids))  # the TTFT floor depends on the prompt's length
    d = limits.defaults
    try:
        params = SamplingParams(
            max_tokens=max_tokens, temperature=f.number("temperature", d.temperature),
            top_k=f.int("top_k", d.top_k), top_p=f.number("top_p", d.top_p), seed=f.int("seed"),
            stop=list(stop or []), ignore_eos=ignore_eos, logprobs=logprobs)
    except ValueError as e:
        name = str(e).split(" ", 1)[0]
        raise ApiError(400, str(e), name if name in SAMPLING_FIELDS else None) from None
    return ParsedRequest(chat, prompt_ids, params, stream, include_usage, continuous, logprobs,
                         slo.ttft, slo.tbt, slo.tbt_mean, model or limits.model_names[0], slo.best_effort)


def _max_tokens(f: Fields, chat: bool, prompt_len: int, limits: Limits) -> int:
    param = "max_tokens"
    max_tokens = f.int("max_completion_tokens") if chat else None
    if max_tokens is None:
        max_tokens = f.int("max_tokens")
    else:
        param = "max_completion_tokens"
    room = limits.capacity.max_request_tokens
    if max_tokens is None:  # OpenAI: 16 for completions; chat runs to the end of what fits
        max_tokens = 16 if not chat else max(1, room - prompt_len)
    if max_tokens <= 0:
        raise ApiError(400, f"'{param}' must be at least 1, got {brief(max_tokens)}", param)
    rejected = limits.capacity.admission_error(prompt_len, max_tokens)
    if rejected is not None:
        raise ApiError(400, rejected.message, param, rejected.code)
    return max_tokens


def _slo_ms(f: Fields, name: str) -> float | None:
    v = f.number(name)
    if v is None:
        return None
    lo, hi = SLO_MS_RANGE
    try:
        ok = lo <= float(v) <= hi  # NaN fails both; an int of 400 digits overflows float()
    except OverflowError:
        ok = False
    if not ok:
        raise ApiError(400, f"'{name}' must be from {lo:g} ms (nothing answers sooner) to {hi:.0f} ms "
                            f"(one day), got {brief(v)}", name)
    return float(v)


def _logprobs(f: Fields, chat: bool) -> bool:
    """Only the chosen token's logprob is implemented: alternatives (top_logprobs, or completions'
    logprobs > 0) are refused rather than answered without them."""
    if chat:
        if f.int("top_logprobs", 0):
            raise ApiError(400, "top_logprobs > 0 is not supported (only the chosen token's logprob)",
                           "top_logprobs")
        return f.bool("logprobs")
    lp = f.int("logprobs")
    if lp is not None and lp != 0:
        raise ApiError(400, f"'logprobs' must be 0 (the chosen token's logprob; alternatives are not "
                            f"supported), got {brief(lp)}", "logprobs")
    return lp is not None

