"""The shell client's dict messages against the one place the schema is written (wire.protocol)."""

from __future__ import annotations

import msgspec
import pytest

from traced.client import shell
from traced.wire import minipack, protocol

STRUCTS = {"hello": protocol.Hello, "open": protocol.Open, "emit": protocol.Emit, "close": protocol.Close}

SAMPLES = {
    "hello": lambda: shell.hello_msg("traced-shell", "01JDCLIENT"),
    "open": lambda: shell.open_msg("review", session_id="01JDSESSION", target="repo", input={"pr": 42},
                                   meta={"k": "v"}, owner_pid=7, idle_timeout=3.5, cwd="/tmp"),
    "emit": lambda: shell.emit_msg("01JDSESSION", "tool_call", {"tool": "Bash", "args": {"cmd": "ls"}}, 3, ts=12.5,
                                   late=True),
    "close": lambda: shell.close_msg("01JDSESSION", "failure", "it broke"),
}


def test_every_op_has_a_builder() -> None:
    assert set(shell.MESSAGES) == set(STRUCTS) == set(SAMPLES)


@pytest.mark.parametrize("op", sorted(STRUCTS))
def test_builder_fields_are_exactly_the_structs_fields(op: str) -> None:
    """A misspelled field would be silently ignored by the daemon (unknown fields are): none is."""
    msg = SAMPLES[op]()
    msg["id"] = 9
    fields = set(STRUCTS[op].__struct_fields__)
    assert msg["op"] == op
    assert set(msg) - {"op"} <= fields, set(msg) - {"op"} - fields


@pytest.mark.parametrize("op", sorted(STRUCTS))
def test_builder_decodes_as_the_struct_with_every_value(op: str) -> None:
    msg = SAMPLES[op]()
    msg["id"] = 9
    decoded = protocol.decode_request(minipack.packb(msg))
    assert isinstance(decoded, STRUCTS[op])
    as_dict = msgspec.to_builtins(decoded)
    for key, value in msg.items():
        if key in ("op",):
            continue
        assert as_dict.get(key, getattr(decoded, key)) == value, key


def test_emit_sample_values() -> None:
    decoded = protocol.decode_request(minipack.packb({**SAMPLES["emit"](), "id": 1}))
    assert isinstance(decoded, protocol.Emit)
    assert (decoded.session_id, decoded.phase, decoded.seq, decoded.ts, decoded.ack, decoded.late) == (
        "01JDSESSION", "tool_call", 3, 12.5, True, True)
    assert decoded.payload == {"tool": "Bash", "args": {"cmd": "ls"}}
