"""How messages cross the server <-> worker socket: msgpack, signed with a per-launch secret.

Nothing that crosses a socket is unpickled. A message is one of a fixed set of dataclasses, packed
as a msgpack array whose head is an empty extension value holding the type's code, then its fields
in order, over plain msgpack values; so decoding can only ever build those dataclasses from numbers,
strings, bytes and lists: no code travels. The array is flat, not an extension value wrapping the
packed fields: a nested message (a request's KV inside a handed-over request inside a report) is
then copied into the frame once, not once per level (4x faster for 46 MB of KV, measured).
Every frame carries an HMAC-SHA256 of its body under a secret the server draws at launch and hands
only to the workers it starts; a frame without the right tag is dropped before it is decoded.
Locally the socket is also an IPC path in a directory only this user can enter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

import msgpack

TAG_BYTES = 32  # HMAC-SHA256
# A report of a full 256-sequence iteration is a few kB; one that hands a request over carries its
# KV (SmolLM2 in float32: 46 kB per token, so 2,900 tokens in the half a frame a worker allows).
MAX_FRAME_BYTES = 256 * 1024 * 1024


class BadMessage(ValueError):
    """A frame that is not ours: wrong tag, not msgpack, or not one of the registered messages."""


def new_secret() -> bytes:
    return secrets.token_bytes(32)


class Codec:
    """Encodes and decodes the registered dataclasses; `types` is the whole vocabulary, in a fixed
    order (its index is the extension code, so both ends must list the same types)."""

    def __init__(self, types: Sequence[type], secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the wire secret must be at least 16 bytes")
        self._types = list(types)
        self._code = {t: i for i, t in enumerate(self._types)}
        self._secret = secret

    def encode(self, msg: object) -> bytes:
        body = msgpack.packb(msg, default=self._default, use_bin_type=True)
        return hmac.digest(self._secret, body, hashlib.sha256) + body

    def decode(self, frame: bytes) -> object:
        if len(frame) <= TAG_BYTES or len(frame) > MAX_FRAME_BYTES:
            raise BadMessage(f"a frame of {len(frame)} bytes")
        tag, body = frame[:TAG_BYTES], frame[TAG_BYTES:]
        if not hmac.compare_digest(tag, hmac.digest(self._secret, body, hashlib.sha256)):
            raise BadMessage("the frame's tag does not match this launch's secret")
        heads = [0, 0]  # type codes read, and those that opened a message's array

        def ext_hook(code: int, data: bytes) -> _Head:
            if not 0 <= code < len(self._types):
                raise BadMessage(f"unknown message type {code}")
            if data:
                raise BadMessage("a message's type code carries data")
            heads[0] += 1
            return _Head(code)

        def list_hook(items: list) -> object:  # arrays come inner ones first: fields are built
            if items and type(items[0]) is _Head:
                heads[1] += 1
                return self._types[items[0].code](*items[1:])
            return items

        try:
            value = msgpack.unpackb(body, ext_hook=ext_hook, list_hook=list_hook, raw=False,
                                    strict_map_key=True)
        except BadMessage:
            raise
        except Exception as e:  # malformed msgpack, wrong arity, a field of the wrong kind
            raise BadMessage(f"undecodable frame: {type(e).__name__}: {e}") from None
        if heads[0] != heads[1]:
            raise BadMessage("a message type outside the head of a message")
        return value

    def _default(self, obj: Any) -> Any:
        code = self._code.get(type(obj))
        if code is not None:
            return [msgpack.ExtType(code, b""), *(getattr(obj, f.name) for f in dataclasses.fields(obj))]
        if isinstance(obj, (frozenset, set, tuple)):
            return list(obj)
        raise TypeError(f"{type(obj).__name__} is not a wire type")


@dataclasses.dataclass(frozen=True, slots=True)
class _Head:
    """A message's type code, read at the head of its array until the array is complete."""

    code: int
