"""The client's whole policy, sans-IO: one ``Conversation`` under both Python clients.

What it decides, so that ``Client`` (blocking sockets) and ``AsyncClient``
(anyio) are only loops that move bytes and sleep:

- **messages**: ``hello``/``open``/``emit``/``close`` are built here, once;
- **numbering**: request ids, and the per-client ``seq`` that with the
  ``client_id`` is each event's idempotency key (DESIGN §3);
- **encoding before queueing**: an event that cannot be encoded, or that is
  over the daemon's ``max_frame``, raises for that event alone and leaves
  nothing behind, so the stream stays clean and nothing bad is ever resent;
- **batching**: ``ack=False`` events to one session coalesce into one
  ``emit_batch`` frame, each encoded once;
- **confirmation**: every emit stays in ``unacked`` until the daemon confirms
  it (its ``ack``/``error``, or a later ``synced``); an event the daemon
  rejected is dropped, never resent;
- **reconnect**: ``requeue`` re-sends every unconfirmed emit with the same
  keys after a reconnect; ``Backoff`` gives the delays and the deadline;
- **spool**: when the daemon stays away for ``spool_after`` seconds, the
  unconfirmed events and the failed request go to the spool
  (``spool_messages``), and ``spool_reply`` makes up the local reply.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from traced import locations
from traced.client.shell import spool_after_default
from traced.errors import DaemonUnavailable, RequestError
from traced.format import layout
from traced.format.ids import new_ulid
from traced.wire import protocol
from traced.wire.fit import cut_depth, repair
from traced.wire.framing import HEADER, Framer, frame

FLUSH_AT: Final = 64 * 1024
"""Send buffered ``ack=False`` events once this many bytes wait."""
BATCH_EVENTS: Final = 256
"""``ack=False`` events to one session per ``emit_batch`` frame."""
MAX_UNSYNCED: Final = 10000
"""Send a ``sync`` after this many ``ack=False`` events, bounding the daemon's backlog."""
REVIVE_EVERY: Final = 1.0
"""While spooling, seconds between attempts to reach the daemon again."""
READ_SIZE: Final = 65536
DEFAULT_DEPTH: Final = 64
"""The daemon's default payload depth limit (``max_payload_depth``), until its welcome says."""

_encoder: Final = msgspec.msgpack.Encoder()


def client_secrets() -> list[str]:
    """Values of this process's secret-named env vars, for the daemon's redaction."""
    from traced.redaction.names import secret_env_values  # not the redactor: its tables cost an import

    return secret_env_values(os.environ)


class Backoff:
    """Reconnect delays: 10 ms doubling to 250 ms, until ``budget`` seconds have passed."""

    def __init__(self, budget: float, first: float = 0.01, cap: float = 0.25) -> None:
        self.deadline = time.monotonic() + budget
        self.delay = first
        self.cap = cap

    def next(self) -> float | None:
        """The next delay in seconds, or None when the budget is spent (give up, spool)."""
        if time.monotonic() + self.delay > self.deadline:
            return None
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay


def check(reply: protocol.Reply | None) -> protocol.Reply:
    """Raise RequestError for an ``error`` reply, DaemonUnavailable for none; return any other."""
    if isinstance(reply, protocol.Error):
        raise RequestError(reply.code, reply.message)
    if reply is None:
        raise DaemonUnavailable("connection closed before the reply arrived")
    return reply


class Conversation:
    """Request/reply bookkeeping of one client, across reconnections (see the module doc)."""

    def __init__(self, client_id: str | None = None, name: str = "", *, send_secrets: bool = True,
                 spool_after: float | None = None, max_frame: int = 64 * 1024 * 1024) -> None:
        self.client_id = client_id or new_ulid()
        self.name = name or f"python:{os.getpid()}"
        self.send_secrets = send_secrets
        self.spool_after = spool_after if spool_after is not None else spool_after_default()
        self.max_frame = max_frame
        self.out = bytearray()
        self.framer = Framer(max_frame)
        self.replies: dict[int, protocol.Reply] = {}
        self.errors: list[RequestError] = []
        """Errors answering ``ack=False`` events, reported at the next sync."""
        self.unacked: dict[int, protocol.Emit] = {}
        """seq -> emit not yet confirmed, in send order."""
        self.unsynced = 0
        self.frame_limit = 0
        """The daemon's max_frame from ``welcome`` (0: unknown): larger events fail here."""
        self.spooling = False
        """True once events went to the spool; reset when the daemon answers again."""
        self.last_attempt = 0.0
        self.lost = 0
        """Events lost because neither the daemon nor the spool took them (told at the next hello)."""
        self.lost_warned = False
        self.max_depth = DEFAULT_DEPTH
        """The daemon's payload depth limit, from ``welcome``."""
        self.max_keys = 0
        """The daemon's payload key limit, from ``welcome`` (0: not known)."""
        self._next_id = 0
        self._seq = 0
        self._emit_seq: dict[int, int] = {}
        self._sync_mark: dict[int, int] = {}
        self._batch: list[tuple[protocol.Emit, msgspec.Raw]] = []
        """``ack=False`` emits to one session (with each event encoded once), waiting for one frame."""
        self._batch_bytes = 0
        self._batch_seqs: dict[int, list[int]] = {}

    # --- messages -------------------------------------------------------------------

    def hello(self) -> protocol.Hello:
        """The ``hello`` of a (re)connection, with this process's secret env values when allowed."""
        return protocol.Hello(client=self.name, client_id=self.client_id, pid=os.getpid(),
                              cwd=locations.current_dir(), secrets=client_secrets() if self.send_secrets else [],
                              lost=self.lost)

    def open_msg(self, skill: str, *, session_id: str | None = None, target: str = "global", input: Any = None,
                 meta: dict[str, Any] | None = None, owner_pid: int | None = None,
                 idle_timeout: float | None = None, cwd: str | None = None, reopen: bool = True,
                 ts: float | None = None) -> protocol.Open:
        """An ``open``: a new ULID unless ``session_id`` resumes one; owner 0 = this process;
        ``ts``: when the session started (epoch seconds; default now)."""
        return protocol.Open(skill=skill, session_id=session_id or new_ulid(), target=target,
                             cwd=cwd or locations.current_dir(), owner_pid=owner_pid or 0,
                             idle_timeout=idle_timeout or 0.0, input=input, meta=meta or {}, ts=ts or time.time(),
                             reopen=reopen)

    def emit_msg(self, session_id: str, phase: str, payload: dict[str, Any], *, ack: bool = True,
                 ts: float | None = None, late: bool = False, seq: int | None = None) -> protocol.Emit:
        """An ``emit`` with the next idempotency ``seq``, or the caller's own (a stable key: see
        ``Client.emit``); ``late``: see ``protocol.Emit``."""
        return protocol.Emit(session_id=session_id, phase=phase, payload=payload, ts=ts or time.time(),
                             seq=seq or self.next_seq(), ack=ack, late=late)

    @staticmethod
    def close_msg(session_id: str, outcome: str = "success", summary: str | None = None,
                  ts: float | None = None) -> protocol.Close:
        """A ``close`` (``ts``: when the session ended, epoch seconds; default now)."""
        return protocol.Close(session_id=session_id, outcome=outcome, summary=summary,  # type: ignore[arg-type]
                              ts=ts or time.time())

    def next_seq(self) -> int:
        """The next client sequence number (the idempotency key with client_id)."""
        self._seq += 1
        return self._seq

    # --- outgoing -------------------------------------------------------------------

    def _encode(self, msg: Any) -> bytes:
        """``msg`` as one frame; RequestError ``invalid_event``/``too_large`` and nothing queued when it cannot go.

        What JSON can hold but MessagePack cannot is repaired first, never refused
        (``_encode_body``).
        """
        body = self._encode_body(msg)
        if self.frame_limit and len(body) > self.frame_limit:
            raise RequestError("too_large", f"event of {len(body)} bytes exceeds the daemon's limit of "
                               f"{self.frame_limit} bytes")
        return len(body).to_bytes(HEADER, "big") + body

    def _encode_body(self, msg: Any) -> bytes:
        """The MessagePack body of ``msg``.

        A lone surrogate becomes U+FFFD, an integer past 64 bits travels as
        ``EXT_BIGINT``, a payload nested past the interpreter's limit is cut at
        the daemon's depth with a ``too_deep`` marker. Anything else that cannot
        be encoded (an object with no JSON form) is RequestError ``invalid_event``.
        """
        for attempt in (1, 2):
            try:
                return _encoder.encode(msg)
            except (UnicodeEncodeError, OverflowError, RecursionError) as e:
                if attempt == 2:
                    raise RequestError("invalid_event", f"cannot encode the event: {e}") from e
                _repair(msg, self.max_depth)
            except Exception as e:  # an object with no JSON form: this event alone fails
                raise RequestError("invalid_event", f"cannot encode the event: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def send(self, msg: Any) -> int:
        """Number ``msg``, encode it into ``out`` and return its id.

        Raises RequestError (``invalid_event``, ``too_large``) and queues
        nothing for a message that cannot go, so it is never resent either.
        """
        self.flush_batch()
        self._next_id += 1
        msg.id = self._next_id
        data = self._encode(msg)
        self.out += data
        if isinstance(msg, protocol.Emit):
            self.unacked[msg.seq] = msg
            self._emit_seq[msg.id] = msg.seq
        elif isinstance(msg, protocol.Sync):
            self._sync_mark[msg.id] = self._seq
        return int(msg.id)

    def queue(self, msg: protocol.Emit) -> None:
        """Add an ``ack=False`` emit to the batch (flushed as one ``emit_batch`` frame).

        The event is encoded here, alone: RequestError for it, and nothing else changes.
        """
        event = protocol.Event(phase=msg.phase, payload=msg.payload, ts=msg.ts, seq=msg.seq)
        raw = msgspec.Raw(self._encode_body(event))
        msg.payload = event.payload  # as repaired, for a resend or the spool
        if self.frame_limit and len(raw) + 64 > self.frame_limit:
            raise RequestError("too_large", f"event of {len(raw)} bytes exceeds the daemon's limit of "
                               f"{self.frame_limit} bytes")
        if self._batch and (self._batch[0][0].session_id != msg.session_id or self._batch[0][0].late != msg.late
                            or (self.frame_limit and self._batch_bytes + len(raw) + 64 > self.frame_limit)):
            self.flush_batch()
        self._batch.append((msg, raw))
        self._batch_bytes += len(raw)
        self.unacked[msg.seq] = msg
        self.unsynced += 1
        if len(self._batch) >= BATCH_EVENTS:
            self.flush_batch()

    def flush_batch(self) -> None:
        """Encode the pending batch into ``out``: one frame, one decode in the daemon."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._batch_bytes = 0
        self._next_id += 1
        rid = self._next_id
        frame = protocol.EmitBatchEncoded(id=rid, session_id=batch[0][0].session_id, ack=False,
                                          events=[raw for _m, raw in batch], late=batch[0][0].late)
        body = _encoder.encode(frame)
        self.out += len(body).to_bytes(HEADER, "big") + body
        self._batch_seqs[rid] = [m.seq for m, _raw in batch]

    # --- incoming -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse received bytes into replies (RequestError ``bad_frame`` for a reply we cannot read)."""
        for body in self.framer.feed(data):
            try:
                reply = protocol.decode_reply(body)
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                raise RequestError("bad_frame", f"unreadable reply from the daemon: {e}") from e
            rid = reply.id
            seqs = self._batch_seqs.pop(rid, None)
            if seqs is not None:  # only an error answers an ack=False batch
                for s in seqs:
                    self.unacked.pop(s, None)
                if isinstance(reply, protocol.Error):
                    self.errors.append(RequestError(reply.code, reply.message))
                continue
            seq = self._emit_seq.pop(rid, None)
            if seq is not None:
                msg = self.unacked.pop(seq, None)  # confirmed, or rejected: never resent
                if msg is not None and not msg.ack:
                    if isinstance(reply, protocol.Error):
                        self.errors.append(RequestError(reply.code, reply.message))
                    continue
            mark = self._sync_mark.pop(rid, None)
            if mark is not None and isinstance(reply, protocol.Synced):
                for done in [s for s in self.unacked if s <= mark]:
                    self._emit_seq.pop(self.unacked.pop(done).id, None)
                self._batch_seqs = {k: v for k, v in self._batch_seqs.items() if k > rid}
            self.replies[rid] = reply

    def take(self, rid: int) -> protocol.Reply | None:
        """The reply to request ``rid`` if it has arrived; raises RequestError on a connection-level error."""
        reply = self.replies.pop(rid, None)
        if reply is None:
            conn_err = self.replies.pop(0, None)
            if isinstance(conn_err, protocol.Error):
                raise RequestError(conn_err.code, conn_err.message)
        return reply

    def welcome(self, reply: protocol.Reply) -> str:
        """Take the daemon's ``welcome``: its frame limit; returns its name. RequestError otherwise."""
        reply = check(reply)
        if not isinstance(reply, protocol.Welcome):
            raise RequestError("bad_frame", f"expected welcome, got {type(reply).__name__}")
        self.frame_limit = reply.max_frame
        self.max_depth = reply.max_depth or DEFAULT_DEPTH
        self.max_keys = reply.max_keys
        self.spooling = False
        self.lost = 0  # told
        self.lost_warned = False
        return reply.server

    def raise_pending_errors(self) -> None:
        """Raise the first error that answered an ``ack=False`` event, if any."""
        if self.errors:
            first = self.errors[0]
            self.errors.clear()
            raise first

    # --- reconnect --------------------------------------------------------------------

    def reset_transport(self) -> None:
        """Forget the lost connection's bytes and replies (keeps ``unacked`` and seq)."""
        self.out.clear()
        self.framer = Framer(self.max_frame)
        self.replies.clear()
        self._emit_seq.clear()
        self._sync_mark.clear()
        self._batch_seqs.clear()
        self._batch = []
        self._batch_bytes = 0

    def requeue(self) -> None:
        """Encode every unconfirmed emit again, same keys, in order (batched ones one by one)."""
        for msg in self.unacked.values():
            if not msg.id:
                self._next_id += 1
                msg.id = self._next_id
            self._emit_seq[msg.id] = msg.seq
            self.out += self._encode(msg)

    def revive_due(self) -> bool:
        """While spooling: whether it is time to try the daemon again (at most once a second)."""
        return time.monotonic() - self.last_attempt >= REVIVE_EVERY

    def retry_after_loss(self, msg: Any) -> bool:
        """After a reconnect: whether ``msg`` must be sent again (emits were requeued with their keys)."""
        return not isinstance(msg, protocol.Emit)

    # --- spool -----------------------------------------------------------------------------

    def spool_messages(self, msg: Any) -> list[Any]:
        """Take every unconfirmed emit, then ``msg`` (if any), as the messages to spool, in order."""
        pending: list[Any] = list(self.unacked.values())
        self.unacked.clear()
        self._emit_seq.clear()
        self._batch = []
        self._batch_bytes = 0
        self._batch_seqs.clear()
        self.unsynced = 0
        if msg is not None and not (isinstance(msg, protocol.Emit) and pending and pending[-1] is msg):
            pending.append(msg)
        return [p for p in pending if not isinstance(p, protocol.Sync | protocol.StatusRequest | protocol.Subscribe)]


def _repair(msg: Any, max_depth: int) -> None:
    """Make ``msg``'s client values encodable in place (see ``Conversation._encode_body``)."""
    for field in ("payload", "input", "meta"):
        value = getattr(msg, field, None)
        if value is not None:
            setattr(msg, field, repair(cut_depth(value, max_depth), protocol.bigint))
    for field in ("summary", "phase", "session_id", "skill"):
        value = getattr(msg, field, None)
        if isinstance(value, str):
            setattr(msg, field, repair(value))


def spool_pending(conv: Conversation, msg: Any, directory: Path) -> int:
    """Write ``conv``'s unconfirmed emits, then ``msg``, as one spool segment; return the events spooled.

    Payloads, inputs and summaries are redacted here, with this process's
    secret env values, because the spool is on disk. When the segment cannot
    be written (a full disk, not a directory), the events are lost: they are
    counted in ``conv.lost`` (reported to the daemon at the next ``hello``) and
    0 is returned; nothing is raised into the caller's program.
    """
    from traced.format import spool
    from traced.redaction.redactor import Redactor

    pending = conv.spool_messages(msg)
    if not pending:
        return 0
    redactor = Redactor(client_secrets())
    frames = protocol.encode(protocol.Hello(client=conv.name, client_id=conv.client_id, pid=os.getpid(),
                                            cwd=locations.current_dir()))
    first_seq = 0
    for item in pending:
        if isinstance(item, protocol.Emit):
            item.payload, _ = redactor.redact(item.payload)
            if item.seq <= conv._seq:  # numbered by us (a caller's own seq says nothing of order)
                first_seq = first_seq or item.seq
        elif isinstance(item, protocol.Open):
            if item.input is not None:
                item.input, _ = redactor.redact(item.input)
            if item.meta:
                item.meta, _ = redactor.redact(item.meta)
        elif isinstance(item, protocol.Close) and item.summary:
            item.summary, _ = redactor.redact_text(item.summary)
        try:  # what MessagePack cannot hold is repaired here too: the spool loses nothing the socket keeps
            frames += frame(conv._encode_body(item))
        except RequestError:
            continue  # an event with no JSON form was already refused to the caller
    events = sum(isinstance(p, protocol.Emit) for p in pending)
    try:
        spool.write_segment(directory, conv.client_id, first_seq or conv.next_seq(), frames)
    except OSError as e:
        conv.lost += events
        if not conv.lost_warned:
            conv.lost_warned = True
            import sys

            print(f"traced: cannot write the spool in {directory} ({e.strerror or e}): events are lost "
                  "until the daemon is back", file=sys.stderr)
        return 0
    return events


def spool_reply(msg: Any) -> protocol.Reply:
    """The reply a client makes up for a request that went to the spool."""
    rid = getattr(msg, "id", 0)
    if isinstance(msg, protocol.Open):
        root = Path(msg.target) if msg.target.startswith("/") else locations.default_root()
        day = time.strftime("%Y-%m-%d", time.gmtime(msg.ts or None))
        return protocol.Opened(id=rid, session_id=msg.session_id,
                               dir=layout.session_dir(str(root), day, msg.skill, msg.session_id), step=0)
    if isinstance(msg, protocol.Close):
        return protocol.Closed(id=rid, meta={})
    if isinstance(msg, protocol.Sync):
        return protocol.Synced(id=rid)
    if isinstance(msg, protocol.Hello):
        return protocol.Welcome(id=rid)
    return protocol.Ack(id=rid, step=0)


def records(framer: Framer, data: bytes) -> Iterator[dict[str, Any] | int]:
    """The records (dicts) and gaps (ints: records dropped for us) in a subscription's bytes."""
    decode_line = msgspec.json.decode
    for body in framer.feed(data):
        msg = protocol.decode_reply(body)
        if isinstance(msg, protocol.RecordMsg):
            yield decode_line(msg.line)
        elif isinstance(msg, protocol.Gap):
            yield msg.dropped
