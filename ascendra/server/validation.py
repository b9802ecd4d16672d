"""The door's field checks: JSON types, sizes and text encoding, each failure an OpenAI-style 4xx.

Every value a request carries is hostile until checked here: JSON may nest 100,000 deep, hold
integers of thousands of digits, numbers that overflow a float, or strings with lone surrogates
(`"\\ud800"` is valid JSON but not encodable text). Ranges of sampling parameters are not checked
here but by `SamplingParams` itself, the one definition of that rule.
"""

from __future__ import annotations

import json
import sys
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | int | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def brief(value: Any, limit: int = 40) -> str:
    """A value for an error message: short and plain ASCII whatever it holds (a 4,000-digit integer,
    a megabyte of text, a lone surrogate)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | int | float | bool) or value is None:
        text = ascii(value) if isinstance(value, str) else json.dumps(value)
    else:
        text = f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)} items"
    return text if len(text) <= limit else text[:limit - 10] + f"...({len(text)} chars)"


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 for anything else (including what makes json.loads
    itself fail in other ways than a syntax error: nesting past the recursion limit, integers past
    Python's 4,300-digit limit)."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"request body is not valid JSON: {str(e)[:200]}") from None
    except ValueError:  # int() refuses literals past sys.get_int_max_str_digits() (4,300)
        raise ApiError(400, f"request body has an integer of more than {sys.get_int_max_str_digits()} "
                            f"digits") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def text(value: str, param: str, where: str | None = None) -> str:
    """`value` if it is encodable text: JSON's \\ud800 escape decodes to a lone surrogate, which no
    tokenizer, log or response can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"'{where or param}' is not valid Unicode text: a lone surrogate at "
                            f"position {e.start}", param) from None
    return value


class Fields:
    """One JSON object's fields, read by type. `null` counts as absent, as OpenAI's API has it.

    `where` prefixes the names in messages (e.g. "stream_options."); `param` is the OpenAI `param`
    a failure names (the top-level field)."""

    def __init__(self, body: dict, where: str = "", param: str | None = None) -> None:
        self.body, self.where, self.param = body, where, param

    def _fail(self, name: str, what: str, value: Any) -> ApiError:
        return ApiError(400, f"'{self.where}{name}' must be {what}, got {brief(value)}", self.param or name)

    def value(self, name: str) -> Any:
        return self.body.get(name)

    def int(self, name: str, default: int | None = None) -> int | None:
        v = self.body.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):  # bool is an int in Python; JSON true is not
            raise self._fail(name, "an integer", v)
        return v

    def number(self, name: str, default: float | int | None = None) -> float | int | None:
        """The raw JSON number (an int may be far too big for a float: the caller's range check says
        so with the field's name)."""
        v = self.body.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self._fail(name, "a number", v)
        return v

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.body.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._fail(name, "a boolean", v)
        return v

    def str(self, name: str, default: str | None = None, max_chars: int | None = None) -> str | None:
        v = self.body.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self._fail(name, "a string", v)
        if max_chars is not None and len(v) > max_chars:
            raise ApiError(400, f"'{self.where}{name}' must be at most {max_chars} characters",
                           self.param or name)
        return text(v, self.param or name, self.where + name)

    def object(self, name: str) -> dict:
        v = self.body.get(name)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self._fail(name, "an object", v)
        return v

    def check_known(self, known: frozenset[str], neutral: dict[str, Any] | None = None) -> None:
        """Refuse fields this server does not implement, naming them, rather than ignore them: a
        client that sends `logit_bias` or `tools` must not get an answer that silently lacks them.
        A field in `neutral` passes when it holds its no-op value (OpenAI clients send
        `frequency_penalty: 0` and the like by default)."""
        neutral = neutral or {}
        unknown, unsupported = [], []
        for name, v in self.body.items():
            if name in known or v is None:
                continue
            if name not in neutral:
                unknown.append(name)
            elif not _is_neutral(v, neutral[name]):
                unsupported.append(name)
        if unsupported:
            names = ", ".join(f"{self.where}{_name(n)}" for n in unsupported[:5])
            noop = ", ".join(f"{_name(n)}: {json.dumps(neutral[n])}" for n in unsupported[:5])
            raise ApiError(400, f"not supported by this server: {names} (leave them out, or send the "
                                f"value that asks for nothing: {noop})", self.param or unsupported[0])
        if unknown:
            names = ", ".join(f"{self.where}{_name(n)}" for n in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ApiError(400, f"unrecognized request argument supplied: {names}{more}",
                           self.param or _name(unknown[0]))


def _is_neutral(value: Any, neutral: Any) -> bool:
    if callable(neutral):
        return bool(neutral(value))
    # Python compares an int of any size with a float exactly; JSON true must not pass for 1.
    return isinstance(value, bool) == isinstance(neutral, bool) and value == neutral


def _name(name: str) -> str:
    """A field name for a message: ASCII, at most 40 characters."""
    shown = ascii(name)[1:-1]
    return shown if len(shown) <= 40 else shown[:30] + "..."
