"""OpenAI response bodies and stream chunks for completions and chat completions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ascendra.engine.instance import RequestOutput

FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort"}  # anything else is an error


@dataclass
class Accumulator:
    """What a request has produced so far, for usage and the non-streaming body."""

    request_id: str
    model: str
    chat: bool
    prompt_tokens: int
    want_logprobs: bool
    tokenizer: Any
    continuous_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None

    def add(self, out: RequestOutput) -> None:
        self.text += out.text
        self.token_ids.extend(out.new_token_ids)
        self.logprobs.extend(out.logprobs)
        self.completion_tokens = max(self.completion_tokens, out.num_output_tokens, len(self.token_ids))
        if out.finished:
            reason = out.finish_reason or "error"
            self.finish_reason = FINISH_REASONS.get(reason, "error")
            if self.finish_reason == "error":
                self.error = out.error or f"the request failed ({reason})"

    @property
    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    # ---- pieces ------------------------------------------------------------------------------

    def _token_str(self, t: int) -> str:
        return self.tokenizer.decode([t], skip_special_tokens=False) if self.tokenizer else str(t)

    def logprobs_of(self, token_ids: list[int], logprobs: list[float], offset: int) -> dict | None:
        if not self.want_logprobs:
            return None
        toks = [self._token_str(t) for t in token_ids]
        if self.chat:
            return {"content": [{"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": []}
                                for s, lp in zip(toks, logprobs, strict=False)]}
        offsets, pos = [], offset
        for s in toks:
            offsets.append(pos)
            pos += len(s)
        return {"tokens": toks, "token_logprobs": list(logprobs), "top_logprobs": None,
                "text_offset": offsets}

    def _head(self, obj: str) -> dict:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    # ---- full bodies -------------------------------------------------------------------------

    def body(self) -> dict:
        lp = self.logprobs_of(self.token_ids, self.logprobs, 0)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": self.text}, "logprobs": lp,
                      "finish_reason": self.finish_reason}
            return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage}
        choice = {"index": 0, "text": self.text, "logprobs": lp, "finish_reason": self.finish_reason}
        return {**self._head("text_completion"), "choices": [choice], "usage": self.usage}

    # ---- stream chunks -----------------------------------------------------------------------

    def first_chunk(self) -> str | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        if not self.chat:
            return None
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                  "finish_reason": None}
        return sse({**self._head("chat.completion.chunk"), "choices": [choice]})

    def chunk(self, out: RequestOutput, text_offset: int) -> str | None:
        """The chunk for one step's output (None when it adds nothing a client would see)."""
        reason = self.finish_reason if out.finished else None
        counted = self.continuous_usage or self.want_logprobs
        if not out.text and reason is None and not (counted and out.new_token_ids):
            return None
        lp = self.logprobs_of(out.new_token_ids, out.logprobs, text_offset)
        extra = {"usage": self.usage} if self.continuous_usage else {}
        if self.chat:
            choice = {"index": 0, "delta": {"content": out.text} if out.text else {}, "logprobs": lp,
                      "finish_reason": reason}
            return sse({**self._head("chat.completion.chunk"), "choices": [choice], **extra})
        choice = {"index": 0, "text": out.text, "logprobs": lp, "finish_reason": reason}
        return sse({**self._head("text_completion"), "choices": [choice], **extra})

    def usage_chunk(self) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({**self._head(obj), "choices": [], "usage": self.usage})


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"
