"""``Handler.process`` and ``Registry`` in process: real config, real files under tmp_path, no socket."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traced.daemon.config import Config
from traced.daemon.handler import Connection, Handler, Peer
from traced.daemon.intake import check_payload
from traced.daemon.registry import Live, Registry
from traced.daemon.session import Pending
from traced.errors import RequestError
from traced.format.records import Record
from traced.redaction.redactor import Redactor
from traced.wire import protocol
from traced.wire.fit import cut_depth
from traced.wire.framing import Framer, frame

SID = "01JDSESSIONAAAAAAAAAAAAAAA"
OTHER = "01JDSESSIONBBBBBBBBBBBBBBB"
CLIENT = "01JDCLIENT"
TS = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = "2023-11-14"
SECRET = "ghp_" + "a1B2" * 9
TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


def ts(offset: float = 0.0) -> str:
    seconds = 20 + int(offset)
    return f"2023-11-14T22:13:{seconds:02d}.000000Z"


def _config(tmp_path: Path, fsync: str = "never") -> Config:
    return Config(root=str(tmp_path / "root"), fsync=fsync)  # type: ignore[arg-type]


@dataclass
class Rig:
    root: Path
    registry: Registry
    handler: Handler
    conn: Connection

    @property
    def sdir(self) -> Path:
        return self.root / DAY / "review" / SID

    def lines(self, sid: str = SID) -> list[str]:
        data = (self.root / DAY / "review" / sid / "trace.jsonl").read_text()
        assert data.endswith("\n")
        return data.splitlines()

    async def send(self, *items: msgspec.Struct | bytes, conn: Connection | None = None) -> list[protocol.Reply]:
        """One read holding ``items`` (requests, or raw bodies framed as they are): the decoded replies."""
        stream = bytearray()
        for item in items:
            if isinstance(item, bytes):
                stream += frame(item)
            else:
                protocol.encode(item, stream)
        framer = Framer()
        bodies = framer.feed(bytes(stream))
        assert framer.buffered == 0
        out = bytearray()
        touched: set[Live] = set()
        await self.handler.process(conn or self.conn, bodies, out, touched)
        reader = Framer()
        replies = [protocol.decode_reply(body) for body in reader.feed(bytes(out))]
        assert reader.buffered == 0
        return replies


def _connection(from_spool: bool = False) -> Connection:
    return Connection(peer=Peer(pid=os.getpid(), uid=os.getuid(), gid=os.getgid()), redactor=Redactor([]),
                      from_spool=from_spool)


@asynccontextmanager
async def _rig(private_env: Path, **settings: Any) -> AsyncIterator[Rig]:
    """A handler on ``settings`` (fsync "never" unless given), its connection said hello."""
    config = Config(root=str(private_env / "root"), **{"fsync": "never", **settings})
    registry = Registry(config)
    r = Rig(root=private_env / "root", registry=registry, handler=Handler(config, registry, Redactor([])),
            conn=_connection())
    try:
        replies = await r.send(protocol.Hello(id=1, client="test", client_id=CLIENT, pid=os.getpid(), cwd="/w"))
        assert len(replies) == 1 and isinstance(replies[0], protocol.Welcome) and replies[0].id == 1
        assert replies[0].max_frame == config.max_frame
        yield r
    finally:
        registry.shutdown()


@pytest.fixture
async def rig(private_env: Path) -> AsyncIterator[Rig]:
    async with _rig(private_env) as r:
        yield r


def _open(rid: int = 2, sid: str = SID, **kw: Any) -> protocol.Open:
    return protocol.Open(id=rid, skill="review", session_id=sid, cwd="/w", owner_pid=-1, ts=TS, **kw)


def _note(rid: int, seq: int, message: str, *, ack: bool = True, sid: str = SID) -> protocol.Emit:
    return protocol.Emit(id=rid, session_id=sid, phase="note", payload={"message": message}, ts=TS + seq, seq=seq,
                         ack=ack)


def line(step: int, phase: str, payload: dict[str, Any] | None, *, offset: float = 0.0, seq: int = 0,
         turn: int = 0, sid: str = SID) -> str:
    """The exact trace.jsonl line the daemon must write."""
    rec: dict[str, Any] = {"ts": ts(offset), "skill": "review", "session_id": sid, "step": step}
    if turn:
        rec["turn"] = turn
    rec["phase"] = phase
    if payload is not None:
        rec["payload"] = payload
    if seq:
        rec["client_seq"] = f"{CLIENT}:{seq}"
    return json.dumps(rec, separators=(",", ":"))


START = line(1, "start", {"cwd": "/w"})


async def _opened(rig: Rig) -> None:
    replies = await rig.send(_open())
    assert replies == [protocol.Opened(id=2, session_id=SID, dir=str(rig.sdir), step=1)]
    assert rig.lines() == [START]


# --- the handler -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_writes_start_and_meta_skeleton(rig: Rig) -> None:
    replies = await rig.send(_open(input={"pr": 42}, meta={"team": "a"}))
    assert replies == [protocol.Opened(id=2, session_id=SID, dir=str(rig.sdir), step=1)]
    assert rig.lines() == [line(1, "start", {"input": {"pr": 42}, "cwd": "/w"})]
    meta = json.loads((rig.sdir / "meta.json").read_text())
    assert (meta["session_id"], meta["skill"], meta["started_at"], meta["steps"], meta["phases"],
            meta["input_summary"], meta["labels"], meta["cwd"], meta["target"]) == (
        SID, "review", ts(), 1, {"start": 1}, '{"pr":42}', {"team": "a"}, "/w", "global")
    assert "ended_at" not in meta
    assert os.stat(rig.sdir / "trace.jsonl").st_mode & 0o777 == 0o600


@pytest.mark.anyio
async def test_consecutive_emits_in_one_read_are_one_write_with_acks_in_order(rig: Rig) -> None:
    await _opened(rig)
    live = rig.registry.sessions[SID]
    assert live.journal.written_gen == 1
    batch = protocol.EmitBatch(id=5, session_id=SID, events=[
        protocol.Event(phase="tool_call", payload={"tool": "Bash"}, ts=TS + 3, seq=3),
        protocol.Event(phase="note", payload={"message": "d"}, ts=TS + 4, seq=4)])
    replies = await rig.send(_note(3, 1, "a"), _note(4, 2, "b"), batch, _note(6, 5, "e"))
    assert replies == [protocol.Ack(id=3, step=2), protocol.Ack(id=4, step=3), protocol.Ack(id=5, step=5),
                       protocol.Ack(id=6, step=6)]
    assert live.journal.written_gen == 2, "four requests, one write(2)"
    assert rig.lines() == [
        START,
        line(2, "note", {"message": "a"}, offset=1, seq=1),
        line(3, "note", {"message": "b"}, offset=2, seq=2),
        line(4, "tool_call", {"tool": "Bash"}, offset=3, seq=3),
        line(5, "note", {"message": "d"}, offset=4, seq=4),
        line(6, "note", {"message": "e"}, offset=5, seq=5),
    ]


@pytest.mark.anyio
async def test_a_resent_event_is_acked_with_its_first_step_and_not_written_again(rig: Rig) -> None:
    await _opened(rig)
    assert await rig.send(_note(3, 1, "a"), _note(4, 2, "b")) == [protocol.Ack(id=3, step=2),
                                                                  protocol.Ack(id=4, step=3)]
    replies = await rig.send(_note(7, 1, "a"), _note(8, 3, "c"), _note(9, 2, "b"))
    assert replies == [protocol.Ack(id=7, step=2), protocol.Ack(id=8, step=4), protocol.Ack(id=9, step=3)]
    assert rig.lines() == [
        START,
        line(2, "note", {"message": "a"}, offset=1, seq=1),
        line(3, "note", {"message": "b"}, offset=2, seq=2),
        line(4, "note", {"message": "c"}, offset=3, seq=3),
    ]


@pytest.mark.anyio
async def test_ack_false_gets_no_reply_but_is_written(rig: Rig) -> None:
    await _opened(rig)
    replies = await rig.send(_note(3, 1, "quiet", ack=False),
                             protocol.EmitBatch(id=4, session_id=SID, ack=False, events=[
                                 protocol.Event(phase="note", payload={"message": "q2"}, ts=TS + 2, seq=2)]),
                             protocol.Sync(id=5))
    assert replies == [protocol.Synced(id=5)]
    assert rig.lines() == [START, line(2, "note", {"message": "quiet"}, offset=1, seq=1),
                           line(3, "note", {"message": "q2"}, offset=2, seq=2)]


@pytest.mark.anyio
async def test_malformed_bodies_get_bad_frame_and_the_rest_of_the_read_succeeds(rig: Rig) -> None:
    await _opened(rig)
    replies = await rig.send(
        _note(3, 1, "a"),
        b"\xc1",  # never used in MessagePack
        msgspec.msgpack.encode({"op": "emit", "id": 7}),  # no session_id: the id can still be read
        msgspec.msgpack.encode({"op": "teleport", "id": 8}),
        msgspec.msgpack.encode({"op": "emit", "id": True, "session_id": SID}),  # a bool is not an id
        msgspec.msgpack.encode([1, 2, 3]),
        _note(9, 2, "b"),
    )
    assert [(type(r).__name__, r.id, getattr(r, "code", None)) for r in replies] == [
        ("Ack", 3, None), ("Error", 0, "bad_frame"), ("Error", 7, "bad_frame"), ("Error", 8, "bad_frame"),
        ("Error", 0, "bad_frame"), ("Error", 0, "bad_frame"), ("Ack", 9, None)]
    assert replies[0] == protocol.Ack(id=3, step=2) and replies[-1] == protocol.Ack(id=9, step=3)
    assert all(r.message.startswith("bad request: ") for r in replies[1:-1])  # type: ignore[union-attr]
    assert rig.lines() == [START, line(2, "note", {"message": "a"}, offset=1, seq=1),
                           line(3, "note", {"message": "b"}, offset=2, seq=2)]


@pytest.mark.anyio
async def test_invalid_phase_fails_that_request_only(rig: Rig) -> None:
    await _opened(rig)
    bad = protocol.Emit(id=3, session_id=SID, phase="Bad-Phase", payload={}, ts=TS + 1, seq=1)
    reserved = protocol.Emit(id=5, session_id=SID, phase="end", payload={"outcome": "success"}, ts=TS + 3, seq=3)
    not_a_map = protocol.Emit(id=6, session_id=SID, phase="note", payload=[1], ts=TS + 4, seq=4)
    replies = await rig.send(bad, _note(4, 2, "fine"), reserved, not_a_map, _note(7, 5, "also fine"))
    assert replies == [
        protocol.Error(id=3, code="invalid_event",
                       message="invalid phase 'Bad-Phase': must match [a-z][a-z0-9_]{0,63}"),
        protocol.Ack(id=4, step=2),
        protocol.Error(id=5, code="invalid_event", message="phase 'end' is written by the daemon: use open/close"),
        protocol.Error(id=6, code="invalid_event", message="payload must be a map, not list"),
        protocol.Ack(id=7, step=3),
    ]
    assert rig.lines() == [START, line(2, "note", {"message": "fine"}, offset=2, seq=2),
                           line(3, "note", {"message": "also fine"}, offset=5, seq=5)]


@pytest.mark.anyio
async def test_one_bad_event_fails_its_whole_batch(rig: Rig) -> None:
    await _opened(rig)
    batch = protocol.EmitBatch(id=3, session_id=SID, events=[
        protocol.Event(phase="note", payload={"message": "x"}, ts=TS + 1, seq=1),
        protocol.Event(phase="Nope", payload={}, ts=TS + 2, seq=2)])
    replies = await rig.send(batch)
    assert replies == [protocol.Error(id=3, code="invalid_event",
                                      message="invalid phase 'Nope': must match [a-z][a-z0-9_]{0,63}")]
    assert rig.lines() == [START]


@pytest.mark.anyio
async def test_emit_to_an_unknown_session(rig: Rig) -> None:
    await _opened(rig)
    replies = await rig.send(_note(3, 1, "x", sid=OTHER), _note(4, 2, "y"),
                             _note(5, 3, "z", sid="../escape"))
    assert replies == [
        protocol.Error(id=3, code="unknown_session", message=f"no open session {OTHER!r}"),
        protocol.Ack(id=4, step=2),
        protocol.Error(id=5, code="invalid_name", message=replies[2].message),  # type: ignore[union-attr]
    ]
    assert rig.lines() == [START, line(2, "note", {"message": "y"}, offset=2, seq=2)]
    assert not (rig.root / DAY / "review" / OTHER).exists()


@pytest.mark.anyio
async def test_close_then_emit_is_session_closed(rig: Rig) -> None:
    await _opened(rig)
    close = protocol.Close(id=4, session_id=SID, outcome="failure", summary="broke", ts=TS + 10)
    replies = await rig.send(_note(3, 1, "a"), close, _note(5, 2, "after"))
    assert [type(r) for r in replies] == [protocol.Ack, protocol.Closed, protocol.Error]
    assert replies[0] == protocol.Ack(id=3, step=2)
    closed = replies[1]
    assert isinstance(closed, protocol.Closed) and closed.id == 4
    assert (closed.meta["steps"], closed.meta["outcome"], closed.meta["summary"], closed.meta["ended_at"],
            closed.meta["phases"]) == (3, "failure", "broke", ts(10), {"start": 1, "note": 1, "end": 1})
    assert replies[2] == protocol.Error(id=5, code="session_closed", message=f"session {SID} is closed")
    assert rig.lines() == [START, line(2, "note", {"message": "a"}, offset=1, seq=1),
                           line(3, "end", {"outcome": "failure", "summary": "broke"}, offset=10)]
    (again,) = await rig.send(protocol.Close(id=6, session_id=SID, ts=TS + 11))  # resent: the recorded ending
    assert isinstance(again, protocol.Closed) and again.id == 6
    assert (again.meta["outcome"], again.meta["summary"], again.meta["ended_at"]) == ("failure", "broke", ts(10))
    assert rig.lines()[-1] == line(3, "end", {"outcome": "failure", "summary": "broke"}, offset=10), "one end"
    meta = json.loads((rig.sdir / "meta.json").read_text())
    assert (meta["steps"], meta["outcome"], meta["ended_at"]) == (3, "failure", ts(10))


@pytest.mark.anyio
async def test_open_resumes_an_ended_session_with_start_resumed(rig: Rig) -> None:
    await _opened(rig)
    await rig.send(protocol.Close(id=3, session_id=SID, ts=TS + 10))
    replies = await rig.send(_open(rid=4), _note(5, 1, "again"))
    assert replies == [protocol.Opened(id=4, session_id=SID, dir=str(rig.sdir), step=3, resumed=True),
                       protocol.Ack(id=5, step=4)]
    lines = rig.lines()
    assert lines[:2] == [START, line(2, "end", {"outcome": "success"}, offset=10)]
    resumed = json.loads(lines[2])
    resumed_ts = resumed.pop("ts")
    assert TS_RE.match(resumed_ts)
    assert resumed == {"skill": "review", "session_id": SID, "step": 3, "phase": "start",
                       "payload": {"resumed": True}}
    # the note's own time (TS + 1) is before the resumed start's: time never runs backwards in a session
    note = json.loads(lines[3])
    assert note.pop("ts") == resumed_ts
    assert json.loads(line(4, "note", {"message": "again"}, offset=1, seq=1)) == {**note, "ts": ts(1)}
    assert len(lines) == 4


@pytest.mark.anyio
async def test_a_spool_replay_cannot_reopen_an_ended_session(rig: Rig) -> None:
    await _opened(rig)
    await rig.send(protocol.Close(id=3, session_id=SID, ts=TS + 10))
    spool_conn = _connection(from_spool=True)
    replies = await rig.send(protocol.Hello(id=1, client_id=CLIENT), _open(rid=4), _note(5, 1, "late"),
                             conn=spool_conn)
    assert replies[1:] == [protocol.Error(id=4, code="session_closed", message=f"session {SID} is closed"),
                           protocol.Error(id=5, code="session_closed", message=f"session {SID} is closed")]
    assert rig.lines() == [START, line(2, "end", {"outcome": "success"}, offset=10)]


@pytest.mark.anyio
async def test_a_spool_replay_may_create_and_resume_an_open_session(rig: Rig) -> None:
    spool_conn = _connection(from_spool=True)
    replies = await rig.send(protocol.Hello(id=1, client_id=CLIENT), _open(rid=2), _open(rid=3), _note(4, 1, "s"),
                             conn=spool_conn)
    assert replies[1:] == [protocol.Opened(id=2, session_id=SID, dir=str(rig.sdir), step=1),
                           protocol.Opened(id=3, session_id=SID, dir=str(rig.sdir), step=1, resumed=True),
                           protocol.Ack(id=4, step=2)]
    assert rig.lines() == [START, line(2, "note", {"message": "s"}, offset=1, seq=1)]


@pytest.mark.anyio
async def test_secrets_are_redacted_on_disk(rig: Rig) -> None:
    await _opened(rig)
    emit = protocol.Emit(id=3, session_id=SID, phase="tool_call", ts=TS + 1, seq=1,
                         payload={"tool": "Bash", "args": {"cmd": f"echo {SECRET} | gh auth", "api_key": "k1"}})
    replies = await rig.send(emit, protocol.Close(id=4, session_id=SID, summary=f"used {SECRET}", ts=TS + 2))
    assert replies[0] == protocol.Ack(id=3, step=2)
    lines = rig.lines()
    assert SECRET not in (rig.sdir / "trace.jsonl").read_text()
    assert json.loads(lines[1])["payload"] == {
        "tool": "Bash", "args": {"cmd": "echo <redacted:github-token> | gh auth", "api_key": "<redacted:secret-key>"}}
    assert json.loads(lines[2])["payload"] == {"outcome": "success", "summary": "used <redacted:github-token>"}
    meta = json.loads((rig.sdir / "meta.json").read_text())
    assert meta["redactions"] == 2
    assert SECRET not in (rig.sdir / "meta.json").read_text()


class _FailingRedactor(Redactor):
    """A redactor with a bug: it raises on any payload saying "boom" (the fault under test)."""

    def redactions(self, payloads: list[Any], sizes: list[int] | None = None, wires: Any = None) -> Any:
        if any("boom" in json.dumps(p) for p in payloads):
            raise RuntimeError("a bug in redaction")
        return super().redactions(payloads, sizes, wires)


@pytest.mark.anyio
async def test_a_redaction_that_raises_costs_its_read_an_error_not_the_connection(rig: Rig) -> None:
    """A bug in redaction (an input no rule foresaw) fails the read's requests with ``internal``: nothing
    of them is written unredacted, the connection goes on, and the next read is written (before: the
    exception closed the connection, the client resent the same read, and so on without end)."""
    await _opened(rig)
    rig.handler.redactor = rig.conn.redactor = _FailingRedactor([])
    rig.conn.base = None
    replies = await rig.send(_note(3, 1, "fine"), _note(4, 2, "boom"))
    why = "internal error: RuntimeError('a bug in redaction')"
    assert replies == [protocol.Error(id=3, code="internal", message=why),
                       protocol.Error(id=4, code="internal", message=why)]
    assert rig.lines() == [START]
    assert await rig.send(_note(5, 3, "after")) == [protocol.Ack(id=5, step=2)]
    assert rig.lines() == [START, line(2, "note", {"message": "after"}, offset=3, seq=3)]


@pytest.mark.anyio
async def test_hello_secrets_redact_that_connections_values(rig: Rig) -> None:
    await _opened(rig)
    value = "s3cr3t-value-" + "q" * 12
    await rig.send(protocol.Hello(id=1, client_id=CLIENT, secrets=[value]))
    assert await rig.send(_note(3, 1, f"x {value} y")) == [protocol.Ack(id=3, step=2)]
    assert rig.lines()[1] == line(2, "note", {"message": "x <redacted:env-value> y"}, offset=1, seq=1)


# --- the registry ----------------------------------------------------------------------------


def _recount(lines: list[str]) -> dict[str, Any]:
    recs = [json.loads(raw) for raw in lines]
    phases = Counter(r["phase"] for r in recs)
    return {
        "steps": len(recs),
        "tool_calls": phases["tool_call"],
        "errors": sum(1 for r in recs if r["phase"] == "tool_result" and r["payload"].get("ok") is False),
        "phases": dict(phases),
        "turns": max((r.get("turn", 0) for r in recs), default=0),
    }


EVENTS = [
    Pending("user_prompt", {"prompt": "go"}, TS + 1),
    Pending("tool_call", {"tool": "Bash", "args": {}}, TS + 2),
    Pending("tool_result", {"tool": "Bash", "ok": False, "error": "no"}, TS + 3),
    Pending("tool_result", {"tool": "Bash", "ok": True}, TS + 4),
    Pending("llm_call", {"model": "m", "usage": {"input_tokens": 10, "output_tokens": 4}, "cost_usd": 0.5}, TS + 5),
    Pending("note", {"message": "n"}, TS + 6),
]


@pytest.fixture
def registry(private_env: Path) -> Iterator[Registry]:
    reg = Registry(_config(private_env))
    try:
        yield reg
    finally:
        reg.shutdown()


def _reg_open(reg: Registry) -> Live:
    live, resumed, fallback = reg.open(skill="review", session_id=SID, cwd="/w", peer_uid=os.getuid(), ts=TS)
    assert (resumed, fallback) == (False, None)
    return live


@pytest.mark.anyio
async def test_registry_meta_matches_the_trace(registry: Registry, private_env: Path) -> None:
    live = _reg_open(registry)
    marker = private_env / "state" / "traced" / "open" / f"{SID}.json"
    assert json.loads(marker.read_text())["dir"] == live.state.dir
    steps, error = registry.append(live, [Pending(e.phase, dict(e.payload), e.ts) for e in EVENTS])
    assert (steps, error) == ([2, 3, 4, 5, 6, 7], None)
    closed, ended_before = registry.close(SID, "failure", "it broke", ts=TS + 9)
    assert closed is live and not ended_before and live.state.closed and SID not in registry.sessions
    registry.finish(live)
    sdir = Path(live.state.dir)
    lines = (sdir / "trace.jsonl").read_text().splitlines()
    meta = json.loads((sdir / "meta.json").read_text())
    expect = _recount(lines)
    assert expect == {"steps": 8, "tool_calls": 1, "errors": 1, "turns": 1, "phases": {
        "start": 1, "user_prompt": 1, "tool_call": 1, "tool_result": 2, "llm_call": 1, "note": 1, "end": 1}}
    assert {k: meta[k] for k in expect} == expect
    assert (meta["outcome"], meta["summary"], meta["ended_at"], meta["started_at"]) == (
        "failure", "it broke", ts(9), ts())
    assert meta["usage"] == {"input_tokens": 10, "output_tokens": 4, "cache_read_tokens": 0,
                             "cache_write_tokens": 0, "cost_usd": 0.5, "llm_calls": 1, "unknown_cost_calls": 0}
    assert json.loads(lines[-1])["payload"] == {"outcome": "failure", "summary": "it broke"}
    assert [json.loads(raw).get("turn") for raw in lines] == [None, 1, 1, 1, 1, 1, 1, 1]
    assert not marker.exists(), "the open marker goes once meta.json is final"
    with pytest.raises(RequestError) as exc:
        registry.append(live, [Pending("note", {"message": "late"}, TS + 10)])
    assert exc.value.code == "session_closed"
    again, ended_before = registry.close(SID, "success")  # a resent close: the recorded ending, no 2nd end
    assert again is live and ended_before and again.state.m.outcome == "failure"
    assert len((sdir / "trace.jsonl").read_text().splitlines()) == 8


@pytest.mark.anyio
async def test_registry_meta_matches_the_trace_after_a_restart(private_env: Path) -> None:
    config = _config(private_env)
    first = Registry(config)
    live = _reg_open(first)
    first.append(live, [Pending(e.phase, dict(e.payload), e.ts) for e in EVENTS])
    [marker] = first.markers.read()
    first.shutdown()  # the daemon dies; the session stays open on disk
    second = Registry(config)
    try:
        adopted = second.adopt_marker(marker)
        assert adopted is not None and adopted.state.step == 7
        second.close(SID, "success", ts=TS + 9)
        second.finish(adopted)
        sdir = Path(adopted.state.dir)
        expect = _recount((sdir / "trace.jsonl").read_text().splitlines())
        meta = json.loads((sdir / "meta.json").read_text())
        assert {k: meta[k] for k in expect} == expect
    finally:
        second.shutdown()


@pytest.mark.anyio
async def test_on_durable_is_immediate_with_fsync_never(registry: Registry) -> None:
    heard: list[tuple[str, list[int | None]]] = []

    def listener(live: Live, records: list[Record]) -> None:
        heard.append((live.state.session_id, [r.step for r in records]))

    registry.on_durable.append(listener)
    live = _reg_open(registry)
    assert heard == [(SID, [1])]
    registry.append(live, [Pending("note", {"message": "a"}, TS), Pending("note", {"message": "b"}, TS)])
    assert heard == [(SID, [1]), (SID, [2, 3])]
    registry.close(SID, "success")
    assert heard == [(SID, [1]), (SID, [2, 3]), (SID, [4])]
    registry.finish(live)
    assert registry.fsyncs == 0, "fsync=never never syncs"


@pytest.mark.anyio
async def test_with_fsync_batch_a_write_asks_for_a_sync_only_while_someone_listens(private_env: Path) -> None:
    """The bus is always a listener; with no subscriber and no forwarder every write used to wake the
    batch task for an fdatasync (one per write under acked load). Now the tick covers them."""
    registry = Registry(_config(private_env, fsync="batch"))
    heard: list[list[int | None]] = []
    listening = [False]
    registry.on_durable.append(lambda live, records: heard.append([r.step for r in records]))
    registry.listening.append(lambda: listening[0])
    try:
        live = _reg_open(registry)
        registry.append(live, [Pending("note", {"message": "a"}, TS)])
        assert not registry.sync_wanted.is_set() and live.unpublished == [] and live.journal.dirty
        listening[0] = True  # a subscriber connects
        registry.append(live, [Pending("note", {"message": "b"}, TS)])
        assert registry.sync_wanted.is_set()
        await registry.sync_dirty()
        assert heard == [[3]] and registry.fsyncs == 1 and not live.journal.dirty
    finally:
        registry.shutdown()


@pytest.mark.anyio
async def test_on_durable_waits_for_fdatasync_with_fsync_batch(private_env: Path) -> None:
    registry = Registry(_config(private_env, fsync="batch"))
    heard: list[list[int | None]] = []
    registry.on_durable.append(lambda live, records: heard.append([r.step for r in records]))
    try:
        live = _reg_open(registry)
        registry.append(live, [Pending("note", {"message": "a"}, TS)])
        registry.append(live, [Pending("note", {"message": "b"}, TS), Pending("note", {"message": "c"}, TS)])
        assert heard == [] and registry.fsyncs == 0
        assert live.journal.dirty and registry.sync_wanted.is_set()
        await registry.durable([live])
        assert heard == [[1], [2], [3, 4]]
        assert registry.fsyncs == 1, "one fdatasync covers every write before it"
        assert not live.journal.dirty
        await registry.durable([live])
        assert registry.fsyncs == 1 and heard == [[1], [2], [3, 4]]
        registry.close(SID, "success")
        assert heard == [[1], [2], [3, 4]], "the end is not heard before it is durable"
        registry.finish(live)
        assert registry.fsyncs == 2
        assert heard == [[1], [2], [3, 4]]
        registry.finished(live)
        assert heard == [[1], [2], [3, 4], [5]]
    finally:
        registry.shutdown()


@pytest.mark.anyio
async def test_sync_with_fsync_reaches_the_disk_through_the_handler(private_env: Path) -> None:
    async with _rig(private_env, fsync="batch") as r:
        registry = r.registry
        await r.send(_open())
        assert await r.send(_note(3, 1, "a", ack=False), protocol.Sync(id=4)) == [protocol.Synced(id=4)]
        assert registry.fsyncs == 0, "a plain sync only orders"
        assert r.conn.touched == {registry.sessions[SID]}
        assert await r.send(_note(5, 2, "b", ack=False), protocol.Sync(id=6, fsync=True)) == [protocol.Synced(id=6)]
        assert registry.fsyncs == 1
        assert not registry.sessions[SID].journal.dirty
        assert r.conn.touched == set(), "what a sync made durable is not walked again by the next one"
        assert await r.send(_note(7, 3, "c", ack=False), protocol.Sync(id=8, fsync=True)) == [protocol.Synced(id=8)]
        assert (registry.fsyncs, r.conn.touched) == (2, set())


# --- the fast path and the walked path ---------------------------------------------------------
#
# ``process_now`` takes what msgspec's checked decoder accepts (JSON values, string keys, at most
# ``protocol.CHECKED_DEPTH`` deep, a frame smaller than every limit); anything else is walked by
# ``process`` one frame at a time. Both must write what the other would, in request order.


def _nest(depth: int) -> dict[str, Any]:
    """A payload ``depth`` maps deep (the payload itself is depth 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


@pytest.mark.anyio
async def test_fast_and_walked_frames_interleave_in_request_order(rig: Rig) -> None:
    await _opened(rig)
    deep = _nest(protocol.CHECKED_DEPTH + 1)  # past the checked decoder: walked, kept whole (64 is the limit)
    emits: list[msgspec.Struct | bytes] = [
        _note(3, 1, "fast"),
        protocol.Emit(id=4, session_id=SID, phase="note", payload=deep, ts=TS + 2, seq=2),
        protocol.Emit(id=5, session_id=SID, phase="note", payload={"blob": b"\x00\x01"}, ts=TS + 3, seq=3),
        msgspec.msgpack.encode({"op": "emit", "id": 6, "session_id": SID, "phase": "note", "payload": {1: "x"},
                                "ts": TS + 4, "seq": 4}),
        protocol.Emit(id=7, session_id=SID, phase="Not-A-Phase", payload={}, ts=TS + 5, seq=5),
        _note(8, 6, f"token {SECRET}"),
        protocol.Emit(id=9, session_id=SID, phase="note", payload=_nest(70), ts=TS + 7, seq=7),
        _note(10, 8, "last"),
    ]
    replies = await rig.send(*emits)
    assert [type(r).__name__ for r in replies] == ["Ack", "Ack", "Ack", "Error", "Error", "Ack", "Ack", "Ack"]
    assert [r.id for r in replies] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert [getattr(r, "step", None) for r in replies] == [2, 3, 4, None, None, 5, 6, 7]
    assert [getattr(r, "code", None) for r in replies][3:5] == ["invalid_event", "invalid_event"]
    lines = rig.lines()
    cut = cut_depth(_nest(70), 64)  # the walked path's marker (tests/wire covers cut_depth itself)
    assert json.dumps(cut).count("{") == 65 and '"$omitted": "too_deep"' in json.dumps(cut)
    assert lines == [
        START,
        line(2, "note", {"message": "fast"}, offset=1, seq=1),
        line(3, "note", deep, offset=2, seq=2),
        line(4, "note", {"blob": "AAE="}, offset=3, seq=3),
        line(5, "note", {"message": "token <redacted:github-token>"}, offset=6, seq=6),
        line(6, "note", cut, offset=7, seq=7),
        line(7, "note", {"message": "last"}, offset=8, seq=8),
    ]
    assert rig.registry.sessions[SID].state.m.redactions == 1


@pytest.mark.anyio
async def test_a_read_of_fast_emits_redacts_only_the_events_that_hold_a_secret(rig: Rig) -> None:
    await _opened(rig)
    clean = [_note(10 + i, 1 + i, f"pytest -q tests/test_{i}.py") for i in range(6)]
    batch = protocol.EmitBatch(id=30, session_id=SID, events=[
        protocol.Event(phase="tool_call", payload={"tool": "Bash", "args": {"cmd": "ls", "api_key": "k-12345678"}},
                       ts=TS + 20, seq=20),
        protocol.Event(phase="note", payload={"message": f"caf\u00e9 {SECRET}"}, ts=TS + 21, seq=21)])
    replies = await rig.send(*clean[:3], batch, *clean[3:])
    assert [getattr(r, "step", None) for r in replies] == [2, 3, 4, 6, 7, 8, 9]
    lines = rig.lines()
    assert lines[1:4] == [line(2 + i, "note", {"message": f"pytest -q tests/test_{i}.py"}, offset=1 + i, seq=1 + i)
                          for i in range(3)]
    assert lines[4] == line(5, "tool_call", {"tool": "Bash", "args": {"cmd": "ls", "api_key": "<redacted:secret-key>"}},
                            offset=20, seq=20)
    assert json.loads(lines[5]) == json.loads(line(6, "note", {"message": "caf\u00e9 <redacted:github-token>"},
                                                   offset=21, seq=21))
    assert lines[6:] == [line(7 + i, "note", {"message": f"pytest -q tests/test_{3 + i}.py"}, offset=21, seq=4 + i)
                         for i in range(3)], "their ts (TS + 4..6) would run backwards: they take the time before"
    assert rig.registry.sessions[SID].state.m.redactions == 2


@pytest.mark.anyio
async def test_an_event_over_the_spill_threshold_is_spilled_between_fast_ones(private_env: Path) -> None:
    async with _rig(private_env, spill_threshold=1024) as r:
        await _opened(r)
        big = "x" * 2000
        replies = await r.send(_note(3, 1, "a"), _note(4, 2, big), _note(5, 3, "b"))
        assert replies == [protocol.Ack(id=3, step=2), protocol.Ack(id=4, step=3), protocol.Ack(id=5, step=4)]
        lines = r.lines()
        spilled = json.loads(lines[2])["payload"]["message"]
        assert set(spilled) == {"$blob", "size"} and spilled["size"] == 2000
        assert (r.sdir / "blobs" / spilled["$blob"].removeprefix("sha256:")).read_text() == big
        assert lines[1] == line(2, "note", {"message": "a"}, offset=1, seq=1)
        assert lines[3] == line(4, "note", {"message": "b"}, offset=3, seq=3)


@pytest.mark.anyio
async def test_a_large_emit_batch_is_checked_event_by_event(rig: Rig) -> None:
    """An ``emit_batch`` frame past the key-count bound (20 KB by default) is still checked per event:
    300 events land as one write; one event with a non-string key fails its whole batch, as before."""
    await _opened(rig)
    events = [protocol.Event(phase="tool_call", payload={"tool": "Bash", "args": {"cmd": f"pytest -q -k case_{i:04d}"}},
                             ts=TS + 1, seq=1 + i) for i in range(300)]
    events[150] = protocol.Event(phase="note", payload={"message": f"export GH={SECRET}"}, ts=TS + 1, seq=151)
    batch = protocol.EmitBatch(id=3, session_id=SID, events=events)
    assert len(protocol.encode(batch)) > 2 * Config().max_payload_keys
    live = rig.registry.sessions[SID]
    gen = live.journal.written_gen
    bad = msgspec.msgpack.encode({"op": "emit_batch", "id": 4, "session_id": SID, "events": [
        {"phase": "note", "payload": {"m": "a"}, "seq": 401}, {"phase": "note", "payload": {7: "b"}, "seq": 402}]})
    after = protocol.Emit(id=5, session_id=SID, phase="note", payload={"message": "after"}, ts=TS + 30, seq=999)
    replies = await rig.send(batch, bad, after)
    assert replies[0] == protocol.Ack(id=3, step=301)
    assert isinstance(replies[1], protocol.Error) and (replies[1].id, replies[1].code) == (4, "invalid_event")
    assert replies[2] == protocol.Ack(id=5, step=302)
    lines = rig.lines()
    assert len(lines) == 302 and live.journal.written_gen == gen + 2
    assert lines[1] == line(2, "tool_call", {"tool": "Bash", "args": {"cmd": "pytest -q -k case_0000"}}, offset=1,
                            seq=1)
    assert lines[151] == line(152, "note", {"message": "export GH=<redacted:github-token>"}, offset=1, seq=151)
    assert lines[300] == line(301, "tool_call", {"tool": "Bash", "args": {"cmd": "pytest -q -k case_0299"}},
                              offset=1, seq=300)
    assert lines[301] == line(302, "note", {"message": "after"}, offset=30, seq=999)


# The checked decoder is the fast path's copy of intake's payload rules: whatever it takes, the
# walk must take unchanged (no refusal, no depth cut, the same value); what it refuses is walked.

_leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=6) | st.binary(max_size=3))
_trees = st.recursive(_leaves, lambda ch: st.lists(ch, max_size=3)
                      | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), ch, max_size=3), max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=4) | st.integers(0, 2), _trees, max_size=4), st.sampled_from([1, 3, 10, 64]))
def test_what_the_checked_decoder_takes_the_walk_takes_unchanged(payload: dict[Any, Any], depth: int) -> None:
    body = bytes(protocol.encode(protocol.Emit(session_id=SID, phase="note", payload=payload)))[4:]
    walked = protocol.decode_request(body)
    assert isinstance(walked, protocol.Emit)
    try:
        fast = protocol.checked(depth).decoder.decode(body)
    except msgspec.ValidationError:
        return  # walked instead
    longest, too_deep = check_payload(walked.payload, depth, 10_000, 1 << 20)
    assert not too_deep
    assert fast.payload == walked.payload
    assert longest == max((len(s) for s in _strings(walked.payload)), default=0)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_the_checked_decoder_refuses_each_kind_the_walk_treats_apart() -> None:
    checked = protocol.checked(64)

    def takes(payload: Any) -> bool:
        try:
            checked.decoder.decode(msgspec.msgpack.encode({"op": "emit", "session_id": SID, "phase": "n",
                                                           "payload": payload}))
        except msgspec.ValidationError:
            return False
        return True

    assert takes(_nest(protocol.CHECKED_DEPTH)) and not takes(_nest(protocol.CHECKED_DEPTH + 1))
    assert not takes({1: "int key"}) and not takes({"a": {2: "nested int key"}})
    assert not takes({"b": b"bytes"}) and not takes({"e": msgspec.msgpack.Ext(1, b"x")})
    assert not takes(["not", "a map"]) and not takes("text")
    assert takes({"ok": [1, 2.5, None, True, {"s": "x"}]})
    assert protocol.checked(3).decoder.decode(msgspec.msgpack.encode(
        {"op": "emit", "session_id": SID, "phase": "n", "payload": {"a": {"b": 1}}})) is not None


def test_a_closed_sessions_fd_is_closed_on_the_loop_not_in_finishs_thread(private_env: Path) -> None:
    """finish() runs in a worker thread; it closed the cached trace fd there, whose number its own
    meta.json temp file then took while the loop was about to write a trace line to it."""
    registry = Registry(_config(private_env, fsync="batch"))
    try:
        live = _reg_open(registry)
        registry.append(live, [Pending("note", {"message": "a"}, TS)])
        assert live.journal.path in registry.fds._fds
        registry.close(SID, "success")
        registry.finish(live)  # (the worker thread's part)
        assert live.journal.path in registry.fds._fds, "finish leaves the fd alone"
        registry.finished(live)  # back on the loop
        assert live.journal.path not in registry.fds._fds
    finally:
        registry.shutdown()


@pytest.mark.anyio
async def test_a_payload_nested_past_the_recursion_limit_is_a_bad_frame_not_a_lost_connection(rig: Rig) -> None:
    await _opened(rig)
    mark = msgspec.msgpack.encode("DEEP-HERE")  # msgspec will not encode 3,000 levels: spliced in as bytes
    body = msgspec.msgpack.encode({"op": "emit", "id": 4, "session_id": SID, "phase": "note",
                                   "payload": {"d": "DEEP-HERE"}}).replace(mark, b"\x91" * 3000 + b"\x01")
    replies = await rig.send(_note(3, 1, "before"), body, _note(5, 2, "after"), protocol.Sync(id=6))
    assert [type(r).__name__ for r in replies] == ["Ack", "Error", "Ack", "Synced"]
    # (its id cannot be read either: msgspec recurses to skip the value; peek_id says 0, as documented)
    assert isinstance(replies[1], protocol.Error) and (replies[1].id, replies[1].code) == (0, "bad_frame")
    assert "nested too deep" in replies[1].message
    assert rig.lines()[1:] == [line(2, "note", {"message": "before"}, offset=1, seq=1),
                               line(3, "note", {"message": "after"}, offset=2, seq=2)]


@pytest.mark.anyio
async def test_a_refused_batch_leaves_no_artifact_or_blob_behind(private_env: Path) -> None:
    async with _rig(private_env, spill_threshold=1024) as r:
        await _opened(r)
        source = private_env / "root" / "attach-me.txt"
        source.write_text("artifact body\n")
        bad = msgspec.msgpack.encode({"op": "emit_batch", "id": 3, "session_id": SID, "events": [
            {"phase": "artifact", "payload": {"path": str(source), "attach": True}, "seq": 1},
            {"phase": "note", "payload": {"big": "x" * 5000}, "seq": 2},
            {"phase": "note", "payload": {1: "not a string key"}, "seq": 3}]})
        replies = await r.send(bad)
        assert isinstance(replies[0], protocol.Error) and replies[0].code == "invalid_event"
        assert sorted(p.name for p in r.sdir.iterdir()) == ["meta.json", "trace.jsonl"]
        assert r.lines() == [START]


@pytest.mark.anyio
async def test_an_opens_input_and_labels_keep_the_payload_limits(rig: Rig) -> None:
    """They skipped every limit: a 970-deep input, 20,000 keys or a huge string went whole into the
    start record or meta.json (and readers then hit the recursion limit on them)."""
    replies = await rig.send(_open(input={"deep": _nest(100)}))
    assert isinstance(replies[0], protocol.Opened)
    start = json.loads(rig.lines()[0])["payload"]["input"]
    assert json.dumps(start).count('"$omitted": "too_deep"') == 1
    assert json.dumps(start).count("{") == 65, "the input map is depth 1, as a payload is"
    many = {f"k{i}": i for i in range(10_001)}
    refused = await rig.send(protocol.Open(id=3, skill="review", session_id=OTHER, owner_pid=-1, ts=TS,
                                           meta=many))
    assert isinstance(refused[0], protocol.Error) and refused[0].code == "invalid_event"
    assert "more than 10000 keys" in refused[0].message
