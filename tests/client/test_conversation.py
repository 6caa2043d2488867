"""The sans-IO ``Conversation``: messages, encoding, batching, replies, reconnects, spool. No daemon."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from traced.client.conversation import (
    BATCH_EVENTS,
    Backoff,
    Conversation,
    check,
    spool_pending,
    spool_reply,
)
from traced.errors import DaemonUnavailable, RequestError
from traced.format import spool
from traced.wire import protocol
from traced.wire.framing import Framer

SID = "01JDSESSIONAAAAAAAAAAAAAAA"
OTHER = "01JDSESSIONBBBBBBBBBBBBBBB"
TS = 1_700_000_000.0
SECRET = "ghp_" + "a1B2" * 9


def _conv() -> Conversation:
    return Conversation(client_id="01JDCLIENT", name="test", send_secrets=False, spool_after=2.0)


def _sent(conv: Conversation) -> list[protocol.Request]:
    """Every request in ``conv.out``, decoded the way the daemon does."""
    framer = Framer()
    bodies = framer.feed(bytes(conv.out))
    assert framer.buffered == 0, "out holds whole frames only"
    return [protocol.decode_request(body) for body in bodies]


def _replies(*msgs: msgspec.Struct) -> bytes:
    buf = bytearray()
    for msg in msgs:
        protocol.encode(msg, buf)
    return bytes(buf)


def _emit(conv: Conversation, n: int, *, ack: bool = True, sid: str = SID) -> protocol.Emit:
    return conv.emit_msg(sid, "note", {"message": f"m{n}"}, ack=ack, ts=TS + n)


# --- messages ---------------------------------------------------------------------------


def test_messages_are_built_with_every_field() -> None:
    conv = _conv()
    assert conv.hello() == protocol.Hello(client="test", client_id="01JDCLIENT", pid=os.getpid(),
                                          cwd=os.getcwd(), secrets=[])
    opened = conv.open_msg("review", session_id=SID, target="/abs", input={"pr": 1}, meta={"k": "v"},
                           owner_pid=77, idle_timeout=3.5, cwd="/w")
    assert (opened.skill, opened.session_id, opened.target, opened.cwd, opened.owner_pid, opened.idle_timeout,
            opened.input, opened.meta, opened.id) == ("review", SID, "/abs", "/w", 77, 3.5, {"pr": 1}, {"k": "v"}, 0)
    fresh = conv.open_msg("review")
    assert len(fresh.session_id) == 26 and fresh.session_id != SID
    assert (fresh.owner_pid, fresh.idle_timeout, fresh.target, fresh.meta, fresh.input) == (0, 0.0, "global", {}, None)
    e1 = conv.emit_msg(SID, "tool_call", {"tool": "Bash"}, ts=12.5)
    e2 = conv.emit_msg(SID, "note", {"message": "x"}, ack=False, ts=13.0)
    assert e1 == protocol.Emit(session_id=SID, phase="tool_call", payload={"tool": "Bash"}, ts=12.5, seq=1, ack=True)
    assert e2 == protocol.Emit(session_id=SID, phase="note", payload={"message": "x"}, ts=13.0, seq=2, ack=False)
    closing = conv.close_msg(SID, "failure", "broke")
    assert (closing.session_id, closing.outcome, closing.summary) == (SID, "failure", "broke")
    assert conv.next_seq() == 3


def test_send_numbers_requests_and_tracks_emits() -> None:
    conv = _conv()
    op = conv.open_msg("review", session_id=SID, cwd="/w")
    ev = _emit(conv, 1)
    cl = conv.close_msg(SID)
    assert [conv.send(op), conv.send(ev), conv.send(cl)] == [1, 2, 3]
    assert _sent(conv) == [op, ev, cl]
    assert list(conv.unacked) == [1] and conv.unacked[1] is ev
    conv.feed(_replies(protocol.Opened(id=1, session_id=SID, dir="/d", step=1), protocol.Ack(id=2, step=2)))
    assert conv.take(2) == protocol.Ack(id=2, step=2)
    assert conv.take(2) is None, "a reply is taken once"
    assert conv.take(1) == protocol.Opened(id=1, session_id=SID, dir="/d", step=1)
    assert conv.unacked == {}


# --- encoding before queueing ------------------------------------------------------------------


UNENCODABLE = [object(), complex(1, 2), Ellipsis, [2**64, object()]]


@pytest.mark.parametrize("bad", UNENCODABLE, ids=["object", "complex", "ellipsis", "bigint-then-object"])
def test_unencodable_event_fails_alone_and_the_next_one_is_clean(bad: Any) -> None:
    conv = _conv()
    bad_msg = conv.emit_msg(SID, "note", {"value": bad}, ts=TS)
    with pytest.raises(RequestError) as exc:
        conv.send(bad_msg)
    assert exc.value.code == "invalid_event"
    assert exc.value.message.startswith("cannot encode the event: ")
    assert conv.out == bytearray() and conv.unacked == {} and conv.replies == {}
    good = _emit(conv, 2)
    rid = conv.send(good)
    assert _sent(conv) == [protocol.Emit(id=rid, session_id=SID, phase="note", payload={"message": "m2"},
                                         ts=TS + 2, seq=2)]
    assert list(conv.unacked) == [2]
    conv.feed(_replies(protocol.Ack(id=rid, step=2)))
    assert conv.take(rid) == protocol.Ack(id=rid, step=2)
    assert conv.unacked == {}


@pytest.mark.parametrize("bad", UNENCODABLE, ids=["object", "complex", "ellipsis", "bigint-then-object"])
def test_unencodable_queued_event_leaves_the_batch_intact(bad: Any) -> None:
    conv = _conv()
    first = _emit(conv, 1, ack=False)
    conv.queue(first)
    with pytest.raises(RequestError) as exc:
        conv.queue(conv.emit_msg(SID, "note", {"n": bad}, ack=False, ts=TS))
    assert exc.value.code == "invalid_event"
    assert conv.out == bytearray() and list(conv.unacked) == [1] and conv.unsynced == 1
    third = _emit(conv, 3, ack=False)
    conv.queue(third)
    conv.flush_batch()
    assert _sent(conv) == [protocol.EmitBatch(id=1, session_id=SID, ack=False, events=[
        protocol.Event(phase="note", payload={"message": "m1"}, ts=TS + 1, seq=1),
        protocol.Event(phase="note", payload={"message": "m3"}, ts=TS + 3, seq=3),
    ])]
    assert list(conv.unacked) == [1, 3] and conv.unsynced == 2


ODD = {"big": 2**64, "small": -(2**63) - 1, "edge": 2**64 - 1, "text": "a\ud800b", "nested": [{"k\udfff": 10**30}]}
REPAIRED = {"big": 2**64, "small": -(2**63) - 1, "edge": 2**64 - 1, "text": "a\ufffdb",
            "nested": [{"k\ufffd": 10**30}]}


def test_big_ints_and_lone_surrogates_are_repaired_not_refused() -> None:
    conv = _conv()
    msg = conv.emit_msg(SID, "note", dict(ODD), ts=TS)
    rid = conv.send(msg)
    assert _sent(conv) == [protocol.Emit(id=rid, session_id=SID, phase="note", payload=REPAIRED, ts=TS, seq=1)]
    conv.reset_transport()
    conv.requeue()  # the resend carries the same repaired payload
    assert _sent(conv) == [protocol.Emit(id=rid, session_id=SID, phase="note", payload=REPAIRED, ts=TS, seq=1)]


def test_queued_big_ints_and_lone_surrogates_are_repaired_not_refused() -> None:
    conv = _conv()
    conv.queue(conv.emit_msg(SID, "note", dict(ODD), ack=False, ts=TS))
    conv.flush_batch()
    assert _sent(conv) == [protocol.EmitBatch(id=1, session_id=SID, ack=False, events=[
        protocol.Event(phase="note", payload=REPAIRED, ts=TS, seq=1)])]
    conv.reset_transport()
    conv.requeue()
    assert _sent(conv) == [protocol.Emit(id=2, session_id=SID, phase="note", payload=REPAIRED, ts=TS, seq=1,
                                         ack=False)]


def _payload_for_body(size: int) -> dict[str, str]:
    """A payload whose ``emit`` body is exactly ``size`` bytes (ids and seqs below 128)."""
    for n in range(1, size):
        msg = protocol.Emit(id=1, session_id=SID, phase="note", payload={"message": "x" * n}, ts=TS, seq=1)
        if len(protocol.encoder.encode(msg)) == size:
            return {"message": "x" * n}
    raise AssertionError(size)


def test_event_over_the_frame_limit_is_too_large_and_queues_nothing() -> None:
    conv = _conv()
    assert conv.welcome(protocol.Welcome(id=1, server="traced 9", max_frame=200)) == "traced 9"
    assert conv.frame_limit == 200
    at_limit = _payload_for_body(200)
    over = {"message": at_limit["message"] + "x"}
    big = conv.emit_msg(SID, "note", over, ts=TS)
    with pytest.raises(RequestError) as exc:
        conv.send(big)
    assert (exc.value.code, exc.value.message) == (
        "too_large", "event of 201 bytes exceeds the daemon's limit of 200 bytes")
    assert conv.out == bytearray() and conv.unacked == {}
    with pytest.raises(RequestError) as exc:
        conv.queue(conv.emit_msg(SID, "note", {"message": "y" * 300}, ack=False, ts=TS))
    assert exc.value.code == "too_large"
    conv.flush_batch()
    assert conv.out == bytearray() and conv.unacked == {} and conv.unsynced == 0
    fits = protocol.Emit(session_id=SID, phase="note", payload=at_limit, ts=TS, seq=1)
    rid = conv.send(fits)  # exactly at the limit still goes
    assert rid == 2 and len(conv.out) == 4 + 200
    assert _sent(conv) == [fits]


def test_welcome_is_required() -> None:
    conv = _conv()
    with pytest.raises(RequestError) as exc:
        conv.welcome(protocol.Synced(id=1))
    assert (exc.value.code, exc.value.message) == ("bad_frame", "expected welcome, got Synced")
    with pytest.raises(RequestError) as exc:
        conv.welcome(protocol.Error(id=1, code="forbidden", message="uid 0"))
    assert exc.value.code == "forbidden"
    with pytest.raises(DaemonUnavailable):
        conv.welcome(None)  # type: ignore[arg-type]


# --- batching ---------------------------------------------------------------------------------


def test_ack_false_events_coalesce_into_one_batch_per_session() -> None:
    conv = _conv()
    a1, a2, b1 = _emit(conv, 1, ack=False), _emit(conv, 2, ack=False), _emit(conv, 3, ack=False, sid=OTHER)
    conv.queue(a1)
    conv.queue(a2)
    assert conv.out == bytearray(), "nothing is sent before a flush"
    conv.queue(b1)  # another session: the first batch goes out
    assert _sent(conv) == [protocol.EmitBatch(id=1, session_id=SID, ack=False, events=[
        protocol.Event(phase="note", payload={"message": "m1"}, ts=TS + 1, seq=1),
        protocol.Event(phase="note", payload={"message": "m2"}, ts=TS + 2, seq=2)])]
    acked = _emit(conv, 4)
    assert conv.send(acked) == 3  # send flushes the pending batch first (id 2)
    assert _sent(conv)[1:] == [
        protocol.EmitBatch(id=2, session_id=OTHER, ack=False, events=[
            protocol.Event(phase="note", payload={"message": "m3"}, ts=TS + 3, seq=3)]),
        acked,
    ]
    assert list(conv.unacked) == [1, 2, 3, 4] and conv.unsynced == 3


def test_a_full_batch_flushes_itself() -> None:
    conv = _conv()
    for n in range(1, BATCH_EVENTS + 2):
        conv.queue(_emit(conv, n, ack=False))
    sent = _sent(conv)
    assert len(sent) == 1 and isinstance(sent[0], protocol.EmitBatch)
    assert [e.seq for e in sent[0].events] == list(range(1, BATCH_EVENTS + 1))
    conv.flush_batch()
    last = _sent(conv)[1]
    assert isinstance(last, protocol.EmitBatch) and [e.seq for e in last.events] == [BATCH_EVENTS + 1]
    assert last.id == 2


# --- replies --------------------------------------------------------------------------------------


def test_error_for_an_ack_false_batch_is_reported_once_and_never_resent() -> None:
    conv = _conv()
    for n in (1, 2):
        conv.queue(_emit(conv, n, ack=False))
    conv.flush_batch()
    conv.feed(_replies(protocol.Error(id=1, code="invalid_event", message="invalid phase 'X'")))
    assert conv.unacked == {}
    assert conv.take(1) is None, "the batch's error is not a reply anyone waits for"
    with pytest.raises(RequestError) as exc:
        conv.raise_pending_errors()
    assert (exc.value.code, exc.value.message) == ("invalid_event", "invalid phase 'X'")
    conv.raise_pending_errors()  # reported once
    conv.reset_transport()
    conv.requeue()
    assert conv.out == bytearray(), "a rejected event is never resent"


def test_error_for_a_single_ack_false_emit_is_reported_once_and_never_resent() -> None:
    conv = _conv()
    rejected = _emit(conv, 1, ack=False)
    kept = _emit(conv, 2, ack=False)
    r1, r2 = conv.send(rejected), conv.send(kept)
    conv.feed(_replies(protocol.Error(id=r1, code="session_closed", message="session S is closed")))
    assert list(conv.unacked) == [2]
    assert conv.take(r1) is None
    with pytest.raises(RequestError) as exc:
        conv.raise_pending_errors()
    assert exc.value.code == "session_closed"
    conv.raise_pending_errors()
    conv.reset_transport()
    conv.requeue()
    assert _sent(conv) == [protocol.Emit(id=r2, session_id=SID, phase="note", payload={"message": "m2"},
                                         ts=TS + 2, seq=2, ack=False)]


def test_error_for_an_acked_emit_is_its_reply_and_drops_it() -> None:
    conv = _conv()
    rid = conv.send(_emit(conv, 1))
    conv.feed(_replies(protocol.Error(id=rid, code="invalid_event", message="bad")))
    assert conv.unacked == {}
    reply = conv.take(rid)
    assert reply == protocol.Error(id=rid, code="invalid_event", message="bad")
    with pytest.raises(RequestError) as exc:
        check(reply)
    assert exc.value.code == "invalid_event"
    conv.raise_pending_errors()  # not an ack=False error: nothing pending


def test_synced_confirms_every_earlier_unacked_event() -> None:
    conv = _conv()
    conv.queue(_emit(conv, 1, ack=False))
    conv.queue(_emit(conv, 2, ack=False))
    conv.send(_emit(conv, 3, ack=False))  # batch id 1, emit id 2
    sync_id = conv.send(protocol.Sync())
    assert sync_id == 3
    after = _emit(conv, 4, ack=False)
    conv.queue(after)  # after the sync: not covered by it
    conv.feed(_replies(protocol.Synced(id=sync_id)))
    assert list(conv.unacked) == [4]
    assert conv.take(sync_id) == protocol.Synced(id=sync_id)
    conv.reset_transport()
    conv.requeue()
    assert _sent(conv) == [protocol.Emit(id=4, session_id=SID, phase="note", payload={"message": "m4"},
                                         ts=TS + 4, seq=4, ack=False)]


def test_connection_level_error_raises_on_take() -> None:
    conv = _conv()
    rid = conv.send(_emit(conv, 1))
    other = conv.send(_emit(conv, 2))
    conv.feed(_replies(protocol.Ack(id=rid, step=5),
                       protocol.Error(id=0, code="too_large", message="frame of 9999999 bytes")))
    assert conv.take(rid) == protocol.Ack(id=rid, step=5), "a reply that arrived is still taken"
    with pytest.raises(RequestError) as exc:
        conv.take(other)
    assert (exc.value.code, exc.value.message) == ("too_large", "frame of 9999999 bytes")
    assert conv.take(other) is None, "the connection error is raised once"
    assert list(conv.unacked) == [2]


def test_unreadable_reply_is_bad_frame() -> None:
    conv = _conv()
    body = msgspec.msgpack.encode({"op": "ack", "id": 1})  # no step
    with pytest.raises(RequestError) as exc:
        conv.feed(len(body).to_bytes(4, "big") + body)
    assert exc.value.code == "bad_frame"


def test_replies_may_arrive_in_pieces() -> None:
    conv = _conv()
    rid = conv.send(_emit(conv, 1))
    data = _replies(protocol.Ack(id=rid, step=2))
    for i in range(len(data)):
        conv.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert conv.take(rid) is None
    assert conv.take(rid) == protocol.Ack(id=rid, step=2)


# --- reconnect ---------------------------------------------------------------------------------


def test_requeue_resends_unconfirmed_emits_with_the_same_keys_in_order() -> None:
    conv = _conv()
    first = conv.send(_emit(conv, 1))
    conv.queue(_emit(conv, 2, ack=False))
    conv.queue(_emit(conv, 3, ack=False))
    fourth = conv.send(_emit(conv, 4))  # the batch goes first, as id 2
    assert (first, fourth) == (1, 3)
    conv.feed(_replies(protocol.Ack(id=first, step=2)))
    conv.queue(_emit(conv, 5, ack=False))  # never flushed before the connection broke
    conv.reset_transport()
    assert conv.out == bytearray() and conv.replies == {}
    conv.requeue()
    sent = _sent(conv)
    assert [(m.seq, m.ack, m.payload) for m in sent] == [  # type: ignore[union-attr]
        (2, False, {"message": "m2"}), (3, False, {"message": "m3"}), (4, True, {"message": "m4"}),
        (5, False, {"message": "m5"})]
    assert all(isinstance(m, protocol.Emit) and m.session_id == SID for m in sent)
    ids = [m.id for m in sent]
    assert ids == [4, 5, 3, 6], "batched emits get fresh ids; a sent one keeps its own"
    assert conv.hello().client_id == "01JDCLIENT", "the same client id: the same idempotency keys"
    conv.feed(_replies(protocol.Ack(id=3, step=9)))
    assert conv.take(3) == protocol.Ack(id=3, step=9)
    assert list(conv.unacked) == [2, 3, 5]
    sync_id = conv.send(protocol.Sync())
    conv.feed(_replies(protocol.Synced(id=sync_id)))
    assert conv.unacked == {}


def test_retry_after_loss_only_for_non_emits() -> None:
    conv = _conv()
    assert conv.retry_after_loss(_emit(conv, 1)) is False
    assert conv.retry_after_loss(conv.close_msg(SID)) is True
    assert conv.retry_after_loss(protocol.Sync()) is True


# --- spool ------------------------------------------------------------------------------------


def test_spool_messages_takes_unconfirmed_emits_then_the_request() -> None:
    conv = _conv()
    conv.send(conv.open_msg("review", session_id=SID, cwd="/w"))
    e1 = _emit(conv, 1)
    conv.send(e1)
    e2 = _emit(conv, 2, ack=False)
    conv.queue(e2)
    closing = conv.close_msg(SID)
    assert conv.spool_messages(closing) == [e1, e2, closing]
    assert conv.unacked == {} and conv.unsynced == 0
    out_before = bytes(conv.out)
    conv.flush_batch()
    assert bytes(conv.out) == out_before, "the batch went to the spool, not the socket"


def test_spool_messages_does_not_repeat_the_failed_emit_and_drops_syncs() -> None:
    conv = _conv()
    e1 = _emit(conv, 1)
    conv.send(e1)
    e2 = _emit(conv, 2)
    conv.send(e2)
    assert conv.spool_messages(e2) == [e1, e2]
    conv.send(e3 := _emit(conv, 3))
    assert conv.spool_messages(protocol.Sync()) == [e3]
    assert conv.spool_messages(None) == []


def test_spool_reply_makes_up_each_reply(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for var in ("STATE_DIRECTORY", "TRACED_ROOT"):
        monkeypatch.delenv(var, raising=False)
    day = time.strftime("%Y-%m-%d", time.gmtime(TS))
    absolute = protocol.Open(id=4, skill="review", session_id=SID, target="/abs/dir", ts=TS)
    assert spool_reply(absolute) == protocol.Opened(id=4, session_id=SID, dir=f"/abs/dir/{day}/review/{SID}", step=0)
    glob = protocol.Open(id=5, skill="review", session_id=SID, target="global", ts=TS)
    assert spool_reply(glob) == protocol.Opened(
        id=5, session_id=SID, dir=f"{tmp_path}/state/traced/sessions/{day}/review/{SID}", step=0)
    assert spool_reply(protocol.Close(id=6, session_id=SID)) == protocol.Closed(id=6, meta={})
    assert spool_reply(protocol.Sync(id=7)) == protocol.Synced(id=7)
    assert spool_reply(protocol.Hello(id=8)) == protocol.Welcome(id=8)
    assert spool_reply(protocol.Emit(id=9, session_id=SID, phase="note")) == protocol.Ack(id=9, step=0)


def test_spool_pending_writes_one_redacted_segment(tmp_path: Path) -> None:
    conv = _conv()
    e1 = conv.emit_msg(SID, "note", {"message": f"token {SECRET}"}, ts=TS)
    conv.send(e1)
    closing = conv.close_msg(SID, "success", f"leaked {SECRET}")
    assert spool_pending(conv, closing, tmp_path / "spool") == 1
    [segment] = spool.segments(tmp_path / "spool")
    assert segment.name == "01JDCLIENT-000000000001.spool"
    assert segment.stat().st_mode & 0o777 == 0o600
    framer = Framer()
    msgs = [protocol.decode_request(b) for b in framer.feed(segment.read_bytes())]
    assert framer.buffered == 0
    assert msgs[0] == protocol.Hello(client="test", client_id="01JDCLIENT", pid=os.getpid(), cwd=os.getcwd())
    assert msgs[1] == protocol.Emit(id=1, session_id=SID, phase="note",
                                    payload={"message": "token <redacted:github-token>"}, ts=TS, seq=1)
    assert isinstance(msgs[2], protocol.Close) and msgs[2].summary == "leaked <redacted:github-token>"
    assert len(msgs) == 3
    assert conv.unacked == {}
    assert spool_pending(conv, None, tmp_path / "spool") == 0


def test_spool_pending_redacts_keys_too(tmp_path: Path) -> None:
    conv = _conv()
    conv.send(conv.emit_msg(SID, "note", {"tally": {SECRET: 2, "n": 1}}, ts=TS))
    assert spool_pending(conv, None, tmp_path / "spool") == 1
    [segment] = spool.segments(tmp_path / "spool")
    assert SECRET.encode() not in segment.read_bytes()
    msgs = [protocol.decode_request(b) for b in Framer().feed(segment.read_bytes())]
    assert msgs[1] == protocol.Emit(id=1, session_id=SID, phase="note",
                                    payload={"tally": {"<redacted:github-token>": 2, "n": 1}}, ts=TS, seq=1)


# --- backoff and check --------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap() -> None:
    backoff = Backoff(budget=60.0)
    assert [backoff.next() for _ in range(7)] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.25, 0.25]


def test_backoff_gives_up_when_the_next_delay_passes_the_deadline() -> None:
    backoff = Backoff(budget=1.0, first=0.3, cap=10.0)
    assert [backoff.next(), backoff.next(), backoff.next(), backoff.next()] == [0.3, 0.6, None, None]
    assert Backoff(budget=0.0).next() is None


def test_check() -> None:
    ack = protocol.Ack(id=1, step=3)
    assert check(ack) is ack
    with pytest.raises(RequestError) as exc:
        check(protocol.Error(id=1, code="overloaded", message="busy"))
    assert (exc.value.code, exc.value.message) == ("overloaded", "busy")
    with pytest.raises(DaemonUnavailable):
        check(None)
