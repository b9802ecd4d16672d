"""The worker socket's codec: signed msgpack of the registered messages, and nothing else."""

from __future__ import annotations

import pickle

import msgpack
import pytest

from ascendra.core.config import SchedulerConfig
from ascendra.core.iteration_stats import IterationStats
from ascendra.engine.instance import RequestOutput
from ascendra.model.sampling import SamplingParams
from ascendra.runtime.live import messages as m
from ascendra.runtime.live.wire import TAG_BYTES, BadMessage, new_secret


def test_every_message_round_trips() -> None:
    codec = m.codec(new_secret())
    stats = IterationStats()
    stats.record(0.11, 0.1)
    msgs = [
        m.AddRequest(3, "r", 1.5, [1, 2, 3], 8, 0.5, 0.1, frozenset({2, 7}),
                     SamplingParams(max_tokens=8, temperature=0.7, stop=["\n"], seed=5), 0.25),
        m.Abort(4, "r"), m.Steal(5, "r"), m.Checked(6, 2), m.Stop(7),
        m.ChangeRole(8, "ascendra-hp", SchedulerConfig(max_num_batched_tokens=64, protected_ttft=2.5), True),
        m.Hello(1, 1234, 512, "host"),
        # (pairs travel as lists, which the readers unpack alike)
        m.Report(1, 7, m.Snapshot([m.WaitingEntry("r", 3, False, 0)], [["p", 9]], 2, 300, 0.1, 12, 3, 5,
                                  512, 1, 40, 0.25, 1.1, stats),
                 [RequestOutput("r", [5], "hi", [-0.5], True, "length", None, 3, 1, 2.0)],
                 [["r", 1.0]], ["a"], ["b"], None, 3, True),
    ]
    for msg in msgs:
        back = codec.decode(codec.encode(msg))
        assert back == msg and type(back) is type(msg)
    assert isinstance(codec.decode(codec.encode(msgs[0])).stop_token_ids, frozenset)


def test_frames_without_this_launchs_signature_are_refused() -> None:
    codec, other = m.codec(new_secret()), m.codec(new_secret())
    frame = codec.encode(m.Stop(1))
    with pytest.raises(BadMessage, match="tag"):
        other.decode(frame)
    with pytest.raises(BadMessage, match="tag"):
        codec.decode(frame[:-1] + bytes([frame[-1] ^ 1]))  # one bit of the body changed
    with pytest.raises(BadMessage):
        codec.decode(pickle.dumps(m.Stop(1)))
    with pytest.raises(BadMessage):
        codec.decode(b"")


def test_signed_frames_still_decode_only_to_registered_messages() -> None:
    secret = new_secret()
    codec = m.codec(secret)
    sign = m.codec(secret).encode  # a signed frame of anything msgpack can say
    tag_of = codec.encode(m.Stop(1))[:TAG_BYTES]
    assert len(tag_of) == TAG_BYTES
    import hashlib
    import hmac

    def signed(body: bytes) -> bytes:
        return hmac.digest(secret, body, hashlib.sha256) + body

    assert codec.decode(signed(msgpack.packb({"plain": [1, 2]}))) == {"plain": [1, 2]}  # data only
    with pytest.raises(BadMessage, match="unknown message type"):
        codec.decode(signed(msgpack.packb(msgpack.ExtType(99, msgpack.packb([])))))
    stop = msgpack.ExtType(4, b"")  # m.Stop's code: a message is [code, *fields]
    assert codec.decode(signed(msgpack.packb([stop, 1]))) == m.Stop(1)
    for body in ([stop, 1, 2, 3],  # the right type with the wrong number of fields
                 stop, [1, stop], [stop, stop],  # a type code anywhere but a message's head
                 [msgpack.ExtType(4, msgpack.packb([1]))]):  # a code that carries data
        with pytest.raises(BadMessage):
            codec.decode(signed(msgpack.packb(body)))
    with pytest.raises(TypeError):
        sign(object())  # only registered dataclasses and plain values go out
