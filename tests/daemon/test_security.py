"""Hostile input against the real daemon: symlinks, limits, stalled and flooding clients, fuzzing.

After each test the daemon is alive and every trace it wrote still validates.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced import RequestError
from traced.wire import protocol
from traced.wire.framing import Framer
from traced.wire.protocol import encode


@pytest.fixture
def hardened(daemon_factory: Any) -> Iterator[Daemon]:
    d: Daemon = daemon_factory(env={
        "TRACED_MAX_PAYLOAD_DEPTH": "8", "TRACED_MAX_PAYLOAD_KEYS": "50", "TRACED_MAX_STRING": "1000",
        "TRACED_MAX_SESSIONS_PER_CONNECTION": "3", "TRACED_MAX_CONNECTIONS": "40",
        "TRACED_MAX_OPEN_SESSIONS": "6", "TRACED_PARTIAL_FRAME_TIMEOUT": "0.5",
    })
    yield d
    assert d.alive(), "the daemon survived"
    for trace in d.root.glob("*/*/*/trace.jsonl"):
        assert_gap_free(read_trace(trace))


def _raw(d: Daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(d.socket))
    return s


def _replies(s: socket.socket, n: int) -> list[Any]:
    framer = Framer()
    out: list[Any] = []
    while len(out) < n:
        data = s.recv(65536)
        if not data:
            break
        out += [protocol.decode_reply(b) for b in framer.feed(data)]
    return out


def _reply(s: socket.socket) -> Any:
    got = _replies(s, 1)
    return got[0] if got else None


def test_symlink_planted_in_a_root_is_refused(daemon: Daemon, short_tmp: Path) -> None:
    outside = short_tmp / "outside"
    outside.mkdir()
    with daemon.client() as c:
        first = c.open("victim")  # creates today's date dir
        c.end(first.session_id)
        date_dir = Path(first.dir).parent.parent
        (date_dir / "evil").symlink_to(outside)  # a skill dir that points elsewhere
        with pytest.raises(RequestError) as e:
            c.open("evil")
        assert e.value.code == "forbidden" and "symlink" in e.value.message
    assert list(outside.iterdir()) == []


def test_repo_with_symlinked_devboy_dir_is_refused(daemon: Daemon, short_tmp: Path) -> None:
    repo, outside = short_tmp / "repo", short_tmp / "elsewhere"
    (repo / ".git").mkdir(parents=True)
    outside.mkdir()
    (repo / ".devboy").symlink_to(outside)
    with daemon.client() as c, pytest.raises(RequestError) as e:
        c.open("r", target="repo", cwd=str(repo))
    assert e.value.code == "forbidden"
    assert list(outside.iterdir()) == []


def test_modes_do_not_depend_on_umask(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    d.start(preexec=lambda: os.umask(0))
    with d.client() as c, c.session(skill="modes") as s:
        s.note("x")
    sdir = Path(s.dir)
    for path in (sdir, sdir.parent, sdir.parent.parent, d.socket.parent):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (sdir / "trace.jsonl", sdir / "meta.json", d.socket):
        assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.parametrize(
    ("payload", "kept"),
    [
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
         {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"$omitted": "too_deep", "depth": 9}}}}}}}}}),
        ({"deep": [[[[[[[[[1]]]]]]]]]},
         {"deep": [[[[[[[{"$omitted": "too_deep", "depth": 9}]]]]]]]}),
    ],
)
def test_payloads_past_the_depth_limit_are_kept_with_a_marker(hardened: Daemon, payload: dict[str, Any],
                                                             kept: dict[str, Any]) -> None:
    """max_payload_depth = 8: the record lands, the subtrees past depth 8 become markers."""
    with hardened.client() as c:
        opened = c.open("limits")
        assert c.emit(opened.session_id, "note", payload) == 2
        assert c.emit(opened.session_id, "note", {"message": "fine"}) == 3
    records = read_trace(Path(opened.dir) / "trace.jsonl")
    assert records[1]["payload"] == kept


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({f"k{i}": i for i in range(60)}, "more than 50 keys"),
        ({"s": "x" * 1001}, "exceeds 1000"),
    ],
)
def test_payload_limits(hardened: Daemon, payload: dict[str, Any], fragment: str) -> None:
    with hardened.client() as c:
        opened = c.open("limits")
        with pytest.raises(RequestError) as e:
            c.emit(opened.session_id, "note", payload)
        assert e.value.code == "invalid_event" and fragment in e.value.message
        assert c.emit(opened.session_id, "note", {"message": "fine"}) == 2


def test_session_and_connection_limits(hardened: Daemon) -> None:
    with hardened.client() as c:
        for _ in range(3):
            c.open("per-conn")
        with pytest.raises(RequestError) as e:
            c.open("per-conn")
        assert e.value.code == "overloaded"
    with hardened.client() as c2:
        for _ in range(3):
            c2.open("total")
        with hardened.client() as c3, pytest.raises(RequestError) as e:
            c3.open("total")
        assert e.value.code == "overloaded" and "sessions open" in e.value.message
    socks = [_raw(hardened) for _ in range(40)]
    extra = _raw(hardened)
    reply = _reply(extra)
    assert isinstance(reply, protocol.Error) and reply.code == "overloaded"
    for s in socks:
        s.close()
    extra.close()
    with hardened.client() as c:  # the daemon notices the 41 hang-ups as it gets to them
        wait_for(lambda: c.status()["connections"] == 1, what="only this connection left")


def test_half_frame_then_stall_is_cut_off(hardened: Daemon) -> None:
    s = _raw(hardened)
    s.sendall((100).to_bytes(4, "big") + b"\x81")  # a header and one byte of a 100-byte body
    reply = _reply(s)
    assert isinstance(reply, protocol.Error) and reply.code == "bad_frame" and "stalled" in reply.message
    assert s.recv(10) == b""


def test_stalled_connections_do_not_slow_a_normal_client(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"TRACED_MAX_CONNECTIONS": "1024"})
    stalled = []
    for i in range(200):
        s = _raw(d)
        s.sendall((1000).to_bytes(4, "big") + b"\x00" * (i % 7))  # half-open frames
        stalled.append(s)
    # a flood of garbage and a reader that never reads its acks, too
    flood = _raw(d)
    flood.sendall(b"".join(len(b).to_bytes(4, "big") + b for b in [b"\xc1" * 50] * 2000))
    deaf = _raw(d)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with d.client() as c, c.session(skill="normal") as sess:
        flood_of_acks = memoryview(bytes(encode(protocol.Hello(id=1))) + b"".join(
            bytes(encode(protocol.Emit(id=i + 2, session_id=sess.id, phase="note", payload={"m": i})))
            for i in range(20000)))
        deaf.setblocking(False)
        try:  # the daemon stops reading a client that does not read its acks: send what fits
            while flood_of_acks:
                flood_of_acks = flood_of_acks[deaf.send(flood_of_acks):]
        except BlockingIOError:
            pass
        assert flood_of_acks, "backpressure: the daemon stopped reading the deaf client"
        # a normal client is served beside them: every event acknowledged, in order (latency is
        # scripts/bench's business, not a timed assertion's)
        steps = [sess.note(f"n{i}") for i in range(500)]
    # (the deaf client writes into the same session: its events interleave, each one step)
    assert all(isinstance(x, int) for x in steps), "starved: a normal client must not wait on hostile ones"
    assert steps == sorted(set(steps)) and len(steps) == 500, "every event acknowledged once, in order"
    for s in [*stalled, flood, deaf]:
        s.close()
    assert d.alive()


ints = st.integers(-(2**63), 2**63 - 1)
frames = st.one_of(
    st.binary(max_size=200),
    st.builds(msgspec.msgpack.encode, st.dictionaries(
        st.sampled_from(["op", "id", "session_id", "phase", "payload", "skill", "events", "ack", "seq"]),
        st.one_of(st.none(), ints, st.text(max_size=20), st.binary(max_size=20),
                  st.sampled_from(["emit", "open", "close", "sync", "hello", "emit_batch", "status"]),
                  st.lists(ints, max_size=3), st.dictionaries(st.text(max_size=5), ints)),
        max_size=8)),
)


CRASHERS = [
    pytest.param(b"\xa3\x00\x00\x80", id="invalid-utf8-str"),  # untyped decode raised UnicodeDecodeError
    pytest.param(bytes.fromhex("85a26f70a465aa73696d74657373696f6e5f697373a5a17061686465a46e6f7465a77061796c6f616481"
                               "a16d9301a17881a16bc0a2696401"), id="invalid-utf8-key"),  # typed decode too (atheris)
]


@pytest.mark.parametrize("body", CRASHERS)
def test_found_crashers_stay_fixed(daemon: Daemon, body: bytes) -> None:
    s = _raw(daemon)
    s.sendall(len(body).to_bytes(4, "big") + body + bytes(encode(protocol.StatusRequest(id=5))))
    first, second = _replies(s, 2)
    assert isinstance(first, protocol.Error) and first.code == "bad_frame"
    assert isinstance(second, protocol.Status)
    s.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(frames, min_size=1, max_size=10))
def test_fuzz_the_live_daemon(daemon: Daemon, bodies: list[bytes]) -> None:
    s = _raw(daemon)
    try:
        s.sendall(b"".join(len(b).to_bytes(4, "big") + b for b in bodies) + bytes(encode(protocol.Sync(id=999))))
        framer = Framer()
        deadline = time.monotonic() + 10
        done = False
        while not done and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            for body in framer.feed(data):
                done = done or protocol.decode_reply(body).id == 999
        assert done, "the daemon answered everything up to the sync"
    finally:
        s.close()
    assert daemon.alive()


def test_no_secret_in_daemon_logs(daemon: Daemon) -> None:
    secret = "ghp_" + "A1b2C3d4" * 5
    with daemon.client() as c:
        opened = c.open("logs")
        c.emit(opened.session_id, "tool_result", {"tool": "x", "ok": False, "error": secret})
        with pytest.raises(RequestError):
            c.emit(opened.session_id, "Bad Phase", {"token": secret})
        with pytest.raises(RequestError):
            c.emit(opened.session_id, "note", [secret])  # type: ignore[arg-type]
        c.end(opened.session_id, "failure", summary=f"failed with {secret}")
    assert secret not in daemon.log.read_text()
    assert secret not in (Path(opened.dir) / "trace.jsonl").read_text()
    assert secret not in (Path(opened.dir) / "meta.json").read_text()
    meta = json.loads((Path(opened.dir) / "meta.json").read_text())
    assert meta["redactions"] >= 1
