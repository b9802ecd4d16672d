"""The hostile cases of tests/test_hostile.py: (name, path, body, status, param, a fragment of the
message). A body is a dict (sent as JSON, lone surrogates as \\ud800 escapes) or raw bytes."""

from __future__ import annotations

C, CHAT = "/v1/completions", "/v1/chat/completions"
MODEL = "SmolLM2-135M-Instruct"
BIG = "1" + "0" * 400  # 10**400: an integer float() cannot hold
DEEP = b"[" * 100_000 + b"]" * 100_000


def hi(**kw: object) -> dict:
    return {"model": MODEL, "prompt": "hi", "max_tokens": 2, **kw}


def chat(*messages: object, **kw: object) -> dict:
    return {"model": MODEL, "messages": list(messages), "max_tokens": 2, **kw}


def user(content: object = "hi") -> dict:
    return {"role": "user", "content": content}


def raw(text: str) -> bytes:
    return text.encode()


def num(field: str, literal: str) -> bytes:
    """A body whose `field` is the JSON number `literal`, written as is (10**400, NaN, -Infinity)."""
    return raw(f'{{"prompt": "hi", "{field}": {literal}}}')


CASES: list[tuple[str, str, dict | bytes, int, str | None, str]] = [
    # JSON that makes the parser itself fail
    ("nested 100,000 deep", C, DEEP, 400, None, "nested too deeply"),
    ("nested 100,000 deep in a field", C, b'{"prompt": ' + DEEP + b"}", 400, None, "nested too deeply"),
    ("integer of 5,000 digits", C, num("max_tokens", "9" * 5000), 400, None,
     "more than 4300 digits"),
    ("not JSON", C, b"{nope", 400, None, "not valid JSON"),
    ("empty body", C, b"", 400, None, "not valid JSON"),
    ("invalid UTF-8", C, b'{"prompt": "\xff\xfe"}', 400, None, "UTF-8"),
    ("a list body", C, b"[1, 2]", 400, None, "JSON object"),
    ("a null body", C, b"null", 400, None, "JSON object"),
    # numbers past a float (OverflowError), and non-finite ones
    ("temperature 10**400", C, num("temperature", BIG), 400, "temperature", "finite"),
    ("top_p 10**400", C, num("top_p", BIG), 400, "top_p", "finite"),
    ("ttft_slo_ms 10**400", C, num("ttft_slo_ms", BIG), 400, "ttft_slo_ms", "one day"),
    ("tbt_slo_ms 10**400", C, num("tbt_slo_ms", BIG), 400, "tbt_slo_ms", "one day"),
    ("temperature 1e400 (inf)", C, num("temperature", "1e400"), 400, "temperature", "finite"),
    ("top_p NaN", C, num("top_p", "NaN"), 400, "top_p", "finite"),
    ("tbt_slo_ms -Infinity", C, num("tbt_slo_ms", "-Infinity"), 400, "tbt_slo_ms", "from 1 ms"),
    ("tpot_slo_ms 10**400", C, num("tpot_slo_ms", BIG), 400, "tpot_slo_ms", "one day"),
    ("tpot_slo_ms NaN", C, num("tpot_slo_ms", "NaN"), 400, "tpot_slo_ms", "from 1 ms"),
    ("max_tokens 10**400", C, num("max_tokens", BIG), 400, "max_tokens",
     "maximum context length"),
    # lone surrogates: valid JSON escapes, not encodable text
    ("surrogate in prompt", C, hi(prompt="a\ud800b"), 400, "prompt", "lone surrogate"),
    ("surrogate in chat content", CHAT, chat(user("\udfff")), 400, "messages", "lone surrogate"),
    ("surrogate in a content part", CHAT, chat(user([{"type": "text", "text": "\ud800"}])), 400, "messages",
     "lone surrogate"),
    ("surrogate in role", CHAT, chat({"role": "us\ud800er", "content": "hi"}), 400, "messages", "surrogate"),
    ("surrogate in model", C, hi(model="gpt-\ud800"), 400, "model", "lone surrogate"),
    ("surrogate in stop", C, hi(stop=["\ud800"]), 400, "stop", "lone surrogate"),
    ("surrogate as a field name", C, {**hi(), "\ud800": 1}, 400, "\\ud800", "unrecognized"),
    ("unknown model, non-ASCII name", C, hi(model="mod\u00e8le-\u2603"), 404, "model", "does not exist"),
    # wrong types everywhere
    ("prompt a number", C, hi(prompt=42), 400, "prompt", "string or a list of token ids"),
    ("prompt an object", C, hi(prompt={}), 400, "prompt", "string or a list"),
    ("prompt of floats", C, hi(prompt=[1.5]), 400, "prompt", "string or a list"),
    ("prompt of booleans", C, hi(prompt=[True]), 400, "prompt", "string or a list"),
    ("token id negative", C, hi(prompt=[-1]), 400, "prompt", "vocabulary"),
    ("token id past the vocabulary", C, hi(prompt=[10**12]), 400, "prompt", "vocabulary"),
    ("prompt missing", C, {"max_tokens": 2}, 400, "prompt", "required"),
    ("messages a string", CHAT, {"messages": "hi"}, 400, "messages", "non-empty list"),
    ("message a string", CHAT, chat("hi"), 400, "messages", "object"),
    ("content a number", CHAT, chat(user(5)), 400, "messages", "string or a list of text parts"),
    ("content missing", CHAT, chat({"role": "user"}), 400, "messages", "string or a list"),
    ("role a number", CHAT, chat({"role": 5, "content": "hi"}), 400, "messages", "must be a string"),
    ("max_tokens a string", C, hi(max_tokens="5"), 400, "max_tokens", "integer"),
    ("max_tokens a float", C, hi(max_tokens=2.0), 400, "max_tokens", "integer"),
    ("temperature a string", C, hi(temperature="hot"), 400, "temperature", "number"),
    ("temperature true", C, hi(temperature=True), 400, "temperature", "number"),
    ("top_k a float", C, hi(top_k=1.5), 400, "top_k", "integer"),
    ("seed a string", C, hi(seed="7"), 400, "seed", "integer"),
    ("stream 1", C, hi(stream=1), 400, "stream", "boolean"),
    ("stream_options a list", C, hi(stream=True, stream_options=[]), 400, "stream_options", "object"),
    ("include_usage a string", C, hi(stream=True, stream_options={"include_usage": "yes"}), 400,
     "stream_options", "boolean"),
    ("stream_options unknown key", C, hi(stream=True, stream_options={"x": 1}), 400, "stream_options",
     "unrecognized"),
    ("stream_options without stream", C, hi(stream_options={"include_usage": True}), 400, "stream_options",
     "only allowed"),
    ("stop a number", C, hi(stop=5), 400, "stop", "string or a list"),
    ("stop of numbers", C, hi(stop=[1]), 400, "stop", "string or a list"),
    ("ttft_slo_ms a string", C, hi(ttft_slo_ms="fast"), 400, "ttft_slo_ms", "number"),
    ("tpot_slo_ms a string", C, hi(tpot_slo_ms="fast"), 400, "tpot_slo_ms", "number"),
    ("tpot_slo_ms beside tbt_slo_ms", C, hi(tpot_slo_ms=500, tbt_slo_ms=500), 400, "tpot_slo_ms", "not both"),
    ("ignore_eos a string", C, hi(ignore_eos="yes"), 400, "ignore_eos", "boolean"),
    ("user a number", C, hi(user=5), 400, "user", "string"),
    ("model a list", C, hi(model=["a"]), 400, "model", "string"),
    # ranges (SamplingParams' rule), SLO floors and ceilings
    ("top_k 2**63", C, hi(top_k=2**63), 400, "top_k", "2147483647"),
    ("seed 2**64", C, hi(seed=2**64), 400, "seed", "9223372036854775807"),
    ("seed -2**63-1", C, hi(seed=-(2**63) - 1), 400, "seed", "integer from"),
    ("temperature -1", C, hi(temperature=-1), 400, "temperature", ">= 0"),
    ("top_p 0", C, hi(top_p=0), 400, "top_p", "(0, 1]"),
    ("too many stop strings", C, hi(stop=["x"] * 17), 400, "stop", "at most 16"),
    ("ttft_slo_ms 1e-300", C, hi(ttft_slo_ms=1e-300), 400, "ttft_slo_ms", "from 1 ms"),
    ("tbt_slo_ms 0.5", C, hi(tbt_slo_ms=0.5), 400, "tbt_slo_ms", "from 1 ms"),
    ("tbt_slo_ms 1e300", C, hi(tbt_slo_ms=1e300), 400, "tbt_slo_ms", "one day"),
    ("max_tokens 0", C, hi(max_tokens=0), 400, "max_tokens", "at least 1"),
    ("max_tokens past the context", C, hi(max_tokens=10**6), 400, "max_tokens", "maximum context length"),
    # OpenAI fields this server does not implement: refused by name, unless neutral
    ("tools", CHAT, chat(user(), tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools",
     "not supported"),
    ("response_format json", CHAT, chat(user(), response_format={"type": "json_object"}), 400,
     "response_format", "not supported"),
    ("logit_bias", C, hi(logit_bias={"50": 100}), 400, "logit_bias", "not supported"),
    ("frequency_penalty 0.5", C, hi(frequency_penalty=0.5), 400, "frequency_penalty", "not supported"),
    ("presence_penalty 1", CHAT, chat(user(), presence_penalty=1), 400, "presence_penalty", "not supported"),
    ("suffix", C, hi(suffix="end"), 400, "suffix", "not supported"),
    ("n 2", C, hi(n=2), 400, "n", "not supported"),
    ("best_of 3", C, hi(best_of=3), 400, "best_of", "not supported"),
    ("echo", C, hi(echo=True), 400, "echo", "not supported"),
    ("logprobs 2 (alternatives)", C, hi(logprobs=2), 400, "logprobs", "alternatives"),
    ("top_logprobs 3", CHAT, chat(user(), top_logprobs=3), 400, "top_logprobs", "not supported"),
    ("unknown field", C, hi(foo=1), 400, "foo", "unrecognized request argument supplied: foo"),
    ("echo on chat (a completions field)", CHAT, chat(user(), echo=False), 400, "echo", "unrecognized"),
    # chat roles and content
    ("role tool", CHAT, chat({"role": "tool", "content": "42", "tool_call_id": "a"}), 400, "messages",
     "not supported"),
    ("role wizard", CHAT, chat({"role": "wizard", "content": "hi"}), 400, "messages", "must be one of"),
    ("role missing", CHAT, chat({"content": "hi"}), 400, "messages", "role' is required"),
    ("image part", CHAT, chat(user([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])), 400,
     "messages", "only text content parts"),
    ("message with an unknown key", CHAT, chat({**user(), "weight": 2}), 400, "messages", "unrecognized"),
    ("assistant tool_calls", CHAT, chat(user(), {"role": "assistant", "content": "", "tool_calls": [{}]}),
     400, "messages", "not supported"),
    ("no messages", CHAT, {"messages": []}, 400, "messages", "non-empty list"),
]
