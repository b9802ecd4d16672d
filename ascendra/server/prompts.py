"""The prompt of a request as token ids: a completion's text or ids, or chat messages rendered with the
model's chat template. Runs off the event loop (tokenizing megabytes takes seconds)."""

from __future__ import annotations

from typing import Any

from ascendra.server.validation import ApiError, Fields, brief, text

# OpenAI's roles this server can render; "developer" is the newer name of "system" (OpenAI's o1
# models), rendered as one. "tool" and "function" messages answer tool calls, which are not supported.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MESSAGE_FIELDS = frozenset({"role", "content", "name"})  # "name" has no place in the template: ignored
# Fields an OpenAI client echoes back from an earlier assistant message: accepted while empty.
MESSAGE_NEUTRAL: dict[str, Any] = {"tool_calls": [], "annotations": []}


def completion_prompt(body: dict, tokenizer: Any, vocab_size: int | None, max_len: int) -> list[int]:
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "'prompt' is required", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ApiError(400, "this model has no tokenizer; send the prompt as token ids", "prompt")
        return _encode(tokenizer, text(prompt, "prompt"), max_len, "prompt") if prompt else []
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        bad = next((t for t in prompt if t < 0 or (vocab_size is not None and t >= vocab_size)), None)
        if bad is not None:
            top = f"0 to {vocab_size - 1}" if vocab_size else "non-negative"
            raise ApiError(400, f"prompt token ids must be in the vocabulary ({top}), got {brief(bad)}",
                           "prompt")
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        raise ApiError(400, f"a batch of {len(prompt)} prompts is not supported; send one per request",
                       "prompt")
    raise ApiError(400, "'prompt' must be a string or a list of token ids", "prompt")


def chat_prompt(body: dict, tokenizer: Any, max_len: int) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "messages")
    if tokenizer is None or not tokenizer.chat_template:
        raise ApiError(400, "this model has no chat template; use /v1/completions", "messages")
    clean = [_message(j, msg) for j, msg in enumerate(messages)]
    try:
        rendered = tokenizer.apply_chat_template(clean, add_generation_prompt=True)
    except ValueError as e:  # the template's own raise_exception
        raise ApiError(400, str(e)[:300], "messages") from None
    return _encode(tokenizer, rendered, max_len, "messages", add_special_tokens=False)


def _encode(tokenizer: Any, prompt: str, max_len: int, param: str, add_special_tokens: bool = True
            ) -> list[int]:
    """The prompt's ids; a prompt that certainly leaves no room in the context is refused before
    it is tokenized (a 2 MB prompt takes seconds, for an answer known at once)."""
    floor = tokenizer.min_tokens(prompt)
    if floor >= max_len:
        raise ApiError(400, f"this model's maximum context length is {max_len} tokens; the prompt alone "
                            f"has at least {floor} ({len(prompt)} characters)", param,
                       "context_length_exceeded")
    return tokenizer.encode(prompt, add_special_tokens=add_special_tokens)


def _message(j: int, msg: Any) -> dict[str, str]:
    where = f"messages[{j}]"
    if not isinstance(msg, dict):
        raise ApiError(400, f"'{where}' must be an object with 'role' and 'content'", "messages")
    fields = Fields(msg, where + ".", "messages")
    role = fields.str("role", max_chars=32)
    if role is None:
        raise ApiError(400, f"'{where}.role' is required", "messages")
    if role not in ROLES:  # before the other fields: a tool message's tool_call_id is not the news
        why = " (tool calling is not supported)" if role in ("tool", "function") else ""
        raise ApiError(400, f"'{where}.role' must be one of {', '.join(ROLES)}, got {brief(role)}{why}",
                       "messages")
    fields.check_known(MESSAGE_FIELDS, MESSAGE_NEUTRAL)
    fields.str("name", max_chars=256)
    content = msg.get("content")
    if isinstance(content, list):  # content parts: only text ones can be rendered
        content = "".join(_text_part(f"{where}.content[{k}]", part) for k, part in enumerate(content))
    elif not isinstance(content, str):
        raise ApiError(400, f"'{where}.content' must be a string or a list of text parts, got "
                            f"{brief(content)}", "messages")
    return {"role": ROLES[role], "content": text(content, "messages", f"{where}.content")}


def _text_part(where: str, part: Any) -> str:
    if not isinstance(part, dict) or part.get("type") != "text":
        kind = brief(part.get("type")) if isinstance(part, dict) else brief(part)
        raise ApiError(400, f"'{where}': only text content parts are supported, got {kind}", "messages")
    fields = Fields(part, where + ".", "messages")
    fields.check_known(frozenset({"type", "text"}))
    value = fields.str("text")
    if value is None:
        raise ApiError(400, f"'{where}.text' is required", "messages")
    return value
