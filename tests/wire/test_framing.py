"""The framer and protocol, without an event loop: every message survives any chunking."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traced.wire import protocol
from traced.wire.framing import Framer, FrameTooLarge
from traced.wire.protocol import encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=30)
ids = st.integers(0, 2**31)

messages: st.SearchStrategy[Any] = st.one_of(
    st.builds(protocol.Hello, id=ids, client=st.text(max_size=20), client_id=names,
              pid=st.integers(0, 2**22), cwd=st.text(max_size=40), secrets=st.lists(st.text(max_size=30), max_size=3)),
    st.builds(protocol.Open, id=ids, skill=names, session_id=names, target=st.sampled_from(["global", "repo", "/x"]),
              owner_pid=st.integers(-1, 2**22), idle_timeout=st.floats(0, 1e6), input=json_values,
              meta=st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    st.builds(protocol.Emit, id=ids, session_id=names, phase=names, payload=json_values,
              ts=st.floats(0, 2e9), seq=st.integers(0, 2**40), ack=st.booleans()),
    st.builds(protocol.EmitBatch, id=ids, session_id=names,
              events=st.lists(st.builds(protocol.Event, phase=names, payload=json_values,
                                        seq=st.integers(0, 99)), max_size=4)),
    st.builds(protocol.Close, id=ids, session_id=names,
              outcome=st.sampled_from(["success", "failure", "aborted"]), summary=st.none() | st.text(max_size=40)),
    st.builds(protocol.Sync, id=ids, fsync=st.booleans()),
    st.builds(protocol.StatusRequest, id=ids),
    st.builds(protocol.Welcome, id=ids, server=st.text(max_size=20), pid=st.integers(0, 2**22)),
    st.builds(protocol.Opened, id=ids, session_id=names, dir=st.text(max_size=40), step=st.integers(0, 2**40),
              resumed=st.booleans(), root_fallback=st.none() | st.text(max_size=20)),
    st.builds(protocol.Ack, id=ids, step=st.integers(0, 2**40)),
    st.builds(protocol.Closed, id=ids, meta=st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    st.builds(protocol.Synced, id=ids),
    st.builds(protocol.Status, id=ids, info=st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    st.builds(protocol.Error, id=ids, code=st.sampled_from(["bad_frame", "too_large", "internal"]),
              message=st.text(max_size=40)),
)

REQUESTS = (protocol.Hello, protocol.Open, protocol.Emit, protocol.EmitBatch, protocol.Close,
            protocol.Sync, protocol.StatusRequest)


def _decode(body: bytes, kind: type) -> Any:
    return protocol.decode_request(body) if kind in REQUESTS else protocol.decode_reply(body)


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(messages, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_round_trip_under_any_chunking(msgs: list[Any], cuts: list[int]) -> None:
    stream = bytes(b"".join(bytes(encode(m)) for m in msgs))
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    framer = Framer()
    bodies: list[bytes] = []
    for a, b in itertools.pairwise(points):
        bodies += framer.feed(stream[a:b])
    assert framer.buffered == 0
    assert len(bodies) == len(msgs)
    for body, msg in zip(bodies, msgs, strict=True):
        assert _decode(body, type(msg)) == msg


def test_byte_by_byte() -> None:
    msg = protocol.Emit(id=3, session_id="s", phase="note", payload={"message": "x" * 300})
    framer = Framer()
    got: list[bytes] = []
    for byte in bytes(encode(msg)):
        got += framer.feed(bytes([byte]))
    assert [protocol.decode_request(b) for b in got] == [msg]


def test_too_large_is_refused_from_the_header() -> None:
    framer = Framer(limit=1024)
    with pytest.raises(FrameTooLarge) as e:
        framer.feed((4096).to_bytes(4, "big") + b"abc")
    assert e.value.size == 4096 and "1024" in str(e.value)


def test_frame_at_the_limit_is_accepted() -> None:
    body = b"\xa3abc" + b"\x00" * 1020
    framer = Framer(limit=len(body))
    assert framer.feed(len(body).to_bytes(4, "big") + body) == [body]


def test_unknown_fields_are_ignored_and_defaults_fill_in() -> None:
    newer = msgspec.msgpack.encode({"op": "emit", "id": 5, "session_id": "s", "phase": "note",
                                    "payload": {}, "future_field": [1, 2, 3]})
    req = protocol.decode_request(newer)
    assert isinstance(req, protocol.Emit) and req.ack is True and req.seq == 0


def test_unknown_op_is_a_decode_error() -> None:
    with pytest.raises(msgspec.ValidationError):
        protocol.decode_request(msgspec.msgpack.encode({"op": "nope", "id": 1}))


@settings(max_examples=2000, deadline=None)
@given(body=st.binary(max_size=300))
def test_any_bytes_decode_cleanly_or_raise_a_decode_error(body: bytes) -> None:
    from traced.daemon.handler import peek_id as _peek_id

    try:
        protocol.decode_request(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    assert isinstance(_peek_id(body), int)  # never raises: it answers the error reply's id
