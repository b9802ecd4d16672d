"""Seeded hostile request bodies for tests/test_hostile.py: valid OpenAI bodies, mutated.

Each body is (path, raw bytes, what was done). Mutations: a field (or a nested one) set to a hostile
value (wrong type, huge or non-finite number, lone surrogate, huge string, deep nesting), an unknown
or unsupported field added, a field dropped, the body wrapped in deep nesting, replaced by a
non-object, truncated, or given an invalid UTF-8 byte. Valid bodies ask for two tokens, so those that
survive the mutations are served quickly.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

MODEL = "SmolLM2-135M-Instruct"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
BASES: list[tuple[str, dict]] = [
    (COMPLETIONS, {"model": MODEL, "prompt": "Say hi", "max_tokens": 2, "temperature": 0}),
    (COMPLETIONS, {"prompt": [504, 3458, 314], "max_tokens": 2, "stream": True, "seed": 5,
                   "stream_options": {"include_usage": True}, "ttft_slo_ms": 4000}),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
            "max_completion_tokens": 2}),
    (CHAT, {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_completion_tokens": 2, "max_tokens": 2, "top_p": 0.9, "stop": ["\n"], "tbt_slo_ms": 900}),
]
KEEP = {"max_tokens", "max_completion_tokens"}  # dropping both would let a chat run to its end
HUGE_INT = "__HUGE_INT__"
HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 2, 2**31, 2**63, 2**64, -(2**63) - 1, 10**400, HUGE_INT, 1e308, 1e-300,
    -0.0, 0.5, float("nan"), float("inf"), float("-inf"), "", "x", "2", "\ud800", "a\udfffb", "é" * 50,
    "a" * 100_000, [], [1], [None], ["\ud800"], [[[]]], {}, {"a": 1}, {"type": "text"}, "Infinity",
]
EXTRA_FIELDS = ["tools", "response_format", "logit_bias", "frequency_penalty", "presence_penalty",
                "suffix", "best_of", "echo", "n", "functions", "top_logprobs", "logprobs", "user",
                "foo", "\ud800", "x" * 300, "stream_options", "ignore_eos", "top_k", "seed"]


def bodies(n: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    rng = random.Random(seed)
    return [_Body(rng).build() for _ in range(n)]


class _Body:
    """One mutated body. json.dumps can write neither an integer of 5,000 digits nor 100,000 levels
    of nesting, so those go in as marker strings, replaced by their text after dumping."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.raw: dict[str, str] = {HUGE_INT: "9" * 5000}

    def build(self) -> tuple[str, bytes, str]:
        rng = self.rng
        path, base = rng.choice(BASES)
        body: Any = copy.deepcopy(base)
        done = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            kind = rng.choice(("set", "set", "set", "nested", "add", "drop", "deep", "whole"))
            body, what = getattr(self, "_" + kind)(body)
            done.append(what)
        raw = self.dumps(body).encode("ascii")
        if rng.random() < 0.08:
            cut = rng.randrange(1, max(2, len(raw)))
            raw, done = raw[:cut], [*done, f"truncated at {cut}"]
        elif rng.random() < 0.05:
            at = rng.randrange(0, len(raw))
            raw, done = raw[:at] + b"\xff" + raw[at:], [*done, "invalid UTF-8 byte"]
        return path, raw, "; ".join(done)

    def dumps(self, v: Any) -> str:
        """JSON text (ASCII: a lone surrogate is written as its \\ud800 escape), markers replaced."""
        text = json.dumps(v, allow_nan=True)
        while hits := [m for m in self.raw if f'"{m}"' in text]:
            for m in hits:
                text = text.replace(f'"{m}"', self.raw[m])
        return text

    def nest(self, v: Any, depth: int) -> str:
        marker = f"__NEST_{len(self.raw)}__"
        self.raw[marker] = "[" * depth + self.dumps(v) + "]" * depth
        return marker

    def value(self) -> Any:
        v = self.rng.choice(HOSTILE)
        if self.rng.random() < 0.1:
            v = self.nest(v, self.rng.choice((50, 900, 5_000, 100_000)))
        return v

    def show(self, v: Any) -> str:
        if isinstance(v, str) and v in self.raw:
            return f"<{len(self.raw[v])} chars of raw JSON>"
        s = ascii(v) if not isinstance(v, int) or abs(v) < 10**20 else f"int of {len(str(v))} digits"
        return s if len(s) <= 40 else s[:30] + f"...({len(s)} chars)"

    def _set(self, body: Any) -> tuple[Any, str]:
        if not isinstance(body, dict) or not body:
            return body, "set skipped"
        key = self.rng.choice(sorted(body))
        body[key] = v = self.value()
        return body, f"{key}={self.show(v)}"

    def _nested(self, body: Any) -> tuple[Any, str]:
        if not isinstance(body, dict):
            return body, "nested skipped"
        v = self.value()
        msgs, prompt = body.get("messages"), body.get("prompt")
        if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict):
            key = self.rng.choice(("role", "content", "name", "tool_calls"))
            msgs[-1][key] = v
            return body, f"messages[-1].{key}={self.show(v)}"
        if isinstance(prompt, list) and prompt:
            prompt[self.rng.randrange(len(prompt))] = v
            return body, f"prompt[i]={self.show(v)}"
        key = self.rng.choice(("include_usage", "continuous_usage_stats", "bogus"))
        body["stream_options"] = {key: v}
        return body, f"stream_options.{key}={self.show(v)}"

    def _add(self, body: Any) -> tuple[Any, str]:
        if not isinstance(body, dict):
            return body, "add skipped"
        key = self.rng.choice(EXTRA_FIELDS)
        neutral = {"n": 1, "frequency_penalty": 0, "logit_bias": {}}.get(key, 0)
        body[key] = v = self.value() if self.rng.random() < 0.7 else neutral
        return body, f"+{self.show(key)}={self.show(v)}"

    def _drop(self, body: Any) -> tuple[Any, str]:
        keys = sorted(set(body) - KEEP) if isinstance(body, dict) else []
        if not keys:
            return body, "drop skipped"
        key = self.rng.choice(keys)
        del body[key]
        return body, f"-{key}"

    def _deep(self, body: Any) -> tuple[Any, str]:
        depth = self.rng.choice((10, 1_000, 100_000))
        return self.nest(body, depth), f"body nested {depth} deep"

    def _whole(self, body: Any) -> tuple[Any, str]:
        v = self.rng.choice([[], 1, "body", None, True, [body]])
        return v, f"body={self.show(v)}"
