"""OpenAI request bodies: parse and validate into what the engine needs, or a 4xx ApiError.

Validation is by hand rather than by pydantic models so that every bad input gets OpenAI's error
shape with the offending `param`, and so the handler starts timing before the body is parsed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ascendra.model.sampling import SamplingParams


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass
class Limits:
    """What the server checks a request against."""

    model_names: tuple[str, ...]
    max_model_len: int
    max_request_blocks: int  # KV blocks one instance holds
    block_size: int
    ttft_slo_ms: float
    tbt_slo_ms: float


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
    model: str = ""
    prompt_text: str | None = None


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _get(body: dict, name: str, kinds: tuple[type, ...], default: Any = None, what: str = "") -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(400, f"'{name}' must be {what or ' or '.join(k.__name__ for k in kinds)}, "
                            f"got {json.dumps(value)[:60]}", name)
    return value


def _number(body: dict, name: str, default: float | None) -> float | None:
    v = _get(body, name, (int, float), default, "a number")
    if v is not None and not math.isfinite(v):
        raise ApiError(400, f"'{name}' must be a finite number", name)
    return v


def parse_request(body: dict, chat: bool, limits: Limits, tokenizer: Any) -> ParsedRequest:
    model = _get(body, "model", (str,), "", "a string")
    if model and model not in limits.model_names:
        raise ApiError(404, f"the model '{model}' does not exist; this server serves "
                            f"'{limits.model_names[0]}'", "model", "model_not_found")
    n = _get(body, "n", (int,), 1, "an integer")
    if n != 1:
        raise ApiError(400, f"only n=1 is supported, got n={n}", "n")
    if _get(body, "best_of", (int,), 1, "an integer") != 1:
        raise ApiError(400, "best_of is not supported", "best_of")
    if _get(body, "echo", (bool,), False, "a boolean"):
        raise ApiError(400, "echo is not supported", "echo")
    prompt_ids, text = _chat_prompt(body, tokenizer) if chat else _completion_prompt(body, tokenizer)
    if not prompt_ids:
        raise ApiError(400, "the prompt is empty", "messages" if chat else "prompt")
    max_tokens = _get(body, "max_completion_tokens", (int,), None, "an integer") if chat else None
    if max_tokens is None:
        max_tokens = _get(body, "max_tokens", (int,), None, "an integer")
    param = "max_tokens"
    if max_tokens is None:  # OpenAI: 16 for completions; chat runs to the end of what fits
        room = min(limits.max_model_len, limits.max_request_blocks * limits.block_size)
        max_tokens = 16 if not chat else room - len(prompt_ids)
    if max_tokens <= 0:
        raise ApiError(400, f"'{param}' must be at least 1, got {max_tokens}", param)
    total = len(prompt_ids) + max_tokens
    if total > limits.max_model_len:
        raise ApiError(400, f"this model's maximum context length is {limits.max_model_len} tokens; the "
                            f"request asks for {len(prompt_ids)} prompt + {max_tokens} completion tokens",
                       param, "context_length_exceeded")
    if -(-total // limits.block_size) > limits.max_request_blocks:
        raise ApiError(400, f"the request needs {total} tokens of KV cache; an instance holds "
                            f"{limits.max_request_blocks * limits.block_size}", param, "kv_cache_exceeded")
    temperature = _number(body, "temperature", 1.0)
    if temperature < 0:
        raise ApiError(400, f"'temperature' must be >= 0, got {temperature}", "temperature")
    top_p = _number(body, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise ApiError(400, f"'top_p' must be in (0, 1], got {top_p}", "top_p")
    top_k = _get(body, "top_k", (int,), -1, "an integer")
    if top_k < -1:
        raise ApiError(400, f"'top_k' must be -1 (off) or a positive integer, got {top_k}", "top_k")
    seed = _get(body, "seed", (int,), None, "an integer")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", "stop")
    logprobs = _logprobs(body, chat)
    stream = _get(body, "stream", (bool,), False, "a boolean")
    opts = _get(body, "stream_options", (dict,), {}, "an object")
    include_usage = bool(_get(opts, "include_usage", (bool,), False, "a boolean"))
    continuous = bool(_get(opts, "continuous_usage_stats", (bool,), False, "a boolean"))
    ignore_eos = _get(body, "ignore_eos", (bool,), False, "a boolean")
    ttft = _number(body, "ttft_slo_ms", limits.ttft_slo_ms)
    tbt = _number(body, "tbt_slo_ms", limits.tbt_slo_ms)
    for name, v in (("ttft_slo_ms", ttft), ("tbt_slo_ms", tbt)):
        if v <= 0:
            raise ApiError(400, f"'{name}' must be positive, got {v}", name)
    params = SamplingParams(max_tokens=max_tokens, temperature=float(temperature), top_k=top_k,
                            top_p=float(top_p), seed=seed, stop=list(stop or []), ignore_eos=ignore_eos,
                            logprobs=logprobs)
    return ParsedRequest(chat, prompt_ids, params, stream, include_usage, continuous, logprobs,
                         ttft / 1000.0, tbt / 1000.0, model or limits.model_names[0], text)


def _logprobs(body: dict, chat: bool) -> bool:
    if chat:
        top = _get(body, "top_logprobs", (int,), 0, "an integer")
        if top:
            raise ApiError(400, "top_logprobs > 0 is not supported (only the chosen token's logprob)",
                           "top_logprobs")
        return bool(_get(body, "logprobs", (bool,), False, "a boolean"))
    lp = _get(body, "logprobs", (int,), None, "an integer")
    if lp is not None and not 0 <= lp <= 5:
        raise ApiError(400, f"'logprobs' must be between 0 and 5, got {lp}", "logprobs")
    return lp is not None


def _completion_prompt(body: dict, tokenizer: Any) -> tuple[list[int], str | None]:
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "'prompt' is required", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ApiError(400, "this model has no tokenizer; send the prompt as token ids", "prompt")
        return (tokenizer.encode(prompt) if prompt else []), prompt
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        vocab = tokenizer.vocab_size if tokenizer is not None else None
        if any(t < 0 or (vocab is not None and t >= vocab) for t in prompt):
            raise ApiError(400, "prompt token ids must be in the vocabulary", "prompt")
        return list(prompt), None
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        raise ApiError(400, f"a batch of {len(prompt)} prompts is not supported; send one per request",
                       "prompt")
    raise ApiError(400, "'prompt' must be a string or a list of token ids", "prompt")


def _chat_prompt(body: dict, tokenizer: Any) -> tuple[list[int], str | None]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    if tokenizer is None or not tokenizer.chat_template:
        raise ApiError(400, "this model has no chat template; use /v1/completions", "messages")
    clean = []
    for j, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise ApiError(400, f"messages[{j}] must be an object with a 'role'", "messages")
        content = msg.get("content")
        if isinstance(content, list):  # content parts: only text ones are understood
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise ApiError(400, f"messages[{j}].content: only text parts are supported", "messages")
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{j}].content must be a string or text parts", "messages")
        clean.append({"role": msg["role"], "content": content})
    try:
        text = tokenizer.apply_chat_template(clean, add_generation_prompt=True)
    except ValueError as e:
        raise ApiError(400, str(e), "messages") from None
    return tokenizer.encode(text, add_special_tokens=False), text
