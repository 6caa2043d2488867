"""The blocking client (stdlib ``socket`` + msgspec; no anyio) and the shared core.

``Conversation`` is the sans-IO part both clients share: it numbers requests,
encodes frames into an outgoing buffer (so ``ack=False`` events coalesce into
one ``send``), and matches replies to requests by id.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import msgspec

from traced import paths, protocol
from traced.errors import DaemonUnavailable, RequestError
from traced.framing import Framer, encode
from traced.ids import new_ulid
from traced.locations import current_dir

FLUSH_AT = 64 * 1024
"""Send buffered ``ack=False`` events once this many bytes wait."""
BATCH_EVENTS = 256
"""``ack=False`` events to one session per ``emit_batch`` frame."""
MAX_UNSYNCED = 10000
"""Send a ``sync`` after this many ``ack=False`` events, bounding the daemon's backlog."""


def client_secrets() -> list[str]:
    """Values of this process's secret-named env vars, for the daemon's redaction."""
    from traced.secretnames import secret_env_values  # not traced.redact: its tables cost an import

    return secret_env_values(os.environ)


class Conversation:
    """Sans-IO request/reply bookkeeping of one client, across reconnections.

    Every emit stays in ``unacked`` until the daemon confirms it: by its own
    ``ack``/``error`` reply, or, for ``ack=False`` emits, by a later
    ``synced``. After a reconnect ``requeue`` sends them all again with the
    same (client_id, seq) keys, and the daemon drops the ones it already wrote.
    """

    def __init__(self, max_frame: int = 64 * 1024 * 1024, client_id: str | None = None) -> None:
        self.client_id = client_id or new_ulid()
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
        self._next_id = 0
        self._seq = 0
        self._emit_seq: dict[int, int] = {}
        self._sync_mark: dict[int, int] = {}
        self._batch: list[protocol.Emit] = []
        """``ack=False`` emits to one session, waiting to go out as one ``emit_batch``."""
        self._batch_seqs: dict[int, list[int]] = {}

    def next_seq(self) -> int:
        """The next client sequence number (the idempotency key with client_id)."""
        self._seq += 1
        return self._seq

    def send(self, msg: Any) -> int:
        """Number ``msg``, encode it into ``out`` and return its id.

        Raises RequestError ``too_large`` (and queues nothing) for a frame the
        daemon would refuse, so it is never resent after a reconnect either.
        """
        self.flush_batch()
        self._next_id += 1
        msg.id = self._next_id
        start = len(self.out)
        encode(msg, self.out)
        size = len(self.out) - start - 4
        if self.frame_limit and size > self.frame_limit:
            del self.out[start:]
            raise RequestError("too_large", f"event of {size} bytes exceeds the daemon's limit of "
                               f"{self.frame_limit} bytes")
        self._track(msg)
        return int(msg.id)

    def queue(self, msg: protocol.Emit) -> None:
        """Add an ``ack=False`` emit to the batch (flushed as one ``emit_batch`` frame)."""
        if self._batch and self._batch[0].session_id != msg.session_id:
            self.flush_batch()
        self._batch.append(msg)
        self.unacked[msg.seq] = msg
        if len(self._batch) >= BATCH_EVENTS:
            self.flush_batch()

    def flush_batch(self) -> None:
        """Encode the pending batch into ``out``: one frame, one decode in the daemon."""
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._next_id += 1
        rid = self._next_id
        start = len(self.out)
        encode(protocol.EmitBatch(id=rid, session_id=batch[0].session_id, ack=False, events=[
            protocol.Event(phase=m.phase, payload=m.payload, ts=m.ts, seq=m.seq) for m in batch]), self.out)
        if self.frame_limit and len(self.out) - start - 4 > self.frame_limit:
            del self.out[start:]  # too big as one frame: send the events one by one
            for m in batch:
                del self.unacked[m.seq]
                try:
                    self.send(m)
                except RequestError as e:
                    self.errors.append(e)
            return
        self._batch_seqs[rid] = [m.seq for m in batch]

    def _track(self, msg: Any) -> None:
        if isinstance(msg, protocol.Emit):
            self.unacked[msg.seq] = msg
            self._emit_seq[msg.id] = msg.seq
        elif isinstance(msg, protocol.Sync):
            self._sync_mark[msg.id] = self._seq

    def feed(self, data: bytes) -> None:
        """Parse received bytes into replies."""
        for body in self.framer.feed(data):
            reply = protocol.decode_reply(body)
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
                msg = self.unacked.pop(seq, None)
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
        """The reply to request ``rid`` if it has arrived; raises on a connection error."""
        reply = self.replies.pop(rid, None)
        if reply is None:
            conn_err = self.replies.pop(0, None)
            if isinstance(conn_err, protocol.Error):
                raise RequestError(conn_err.code, conn_err.message)
        return reply

    def reset_transport(self) -> None:
        """Forget the lost connection's bytes and replies (keeps ``unacked`` and seq)."""
        self.out.clear()
        self.framer = Framer(self.max_frame)
        self.replies.clear()
        self._emit_seq.clear()
        self._sync_mark.clear()
        self._batch_seqs.clear()
        self._batch = []

    def requeue(self) -> None:
        """Encode every unconfirmed emit again, same keys, in order (batched ones one by one)."""
        for msg in self.unacked.values():
            if not msg.id:
                self._next_id += 1
                msg.id = self._next_id
            self._emit_seq[msg.id] = msg.seq
            encode(msg, self.out)

    def drain_unacked(self) -> list[protocol.Emit]:
        """Take every unconfirmed emit (they are going to the spool)."""
        msgs = list(self.unacked.values())
        self.unacked.clear()
        self._emit_seq.clear()
        self._batch = []
        self._batch_seqs.clear()
        return msgs

    def raise_pending_errors(self) -> None:
        """Raise the first error that answered an ``ack=False`` event, if any."""
        if self.errors:
            first = self.errors[0]
            self.errors.clear()
            raise first


def check(reply: protocol.Reply | None) -> protocol.Reply:
    """Raise RequestError for an ``error`` reply; return any other."""
    if isinstance(reply, protocol.Error):
        raise RequestError(reply.code, reply.message)
    if reply is None:
        raise DaemonUnavailable("connection closed before the reply arrived")
    return reply


class Client:
    """A blocking connection to the daemon, which survives daemon restarts.

    When the connection breaks, it reconnects with backoff and sends every
    unconfirmed event again (the daemon drops the ones it already wrote). When
    the daemon stays unreachable for ``spool_after`` seconds, events go to the
    local spool (redacted here first) and the calls return at once: steps are
    then None. The daemon ingests the spool when it is back.

    >>> with Client() as client, client.session(skill="review") as s:
    ...     s.tool_call("Bash", {"cmd": "ls"})
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        name: str = "",
        timeout: float = 30.0,
        send_secrets: bool = True,
        spool_after: float | None = None,
        spool: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path else paths.socket_path()
        self.name = name or f"python:{os.getpid()}"
        self.timeout = timeout
        self.send_secrets = send_secrets
        self.spool_after = spool_after if spool_after is not None else float(
            os.environ.get("TRACED_SPOOL_AFTER", "2"))
        self.spool_enabled = spool
        self.spool_dir = Path(spool_dir) if spool_dir else paths.spool_dir()
        self.spooling = False
        """True once events went to the spool; reset when the daemon answers again."""
        self.spooled = 0
        self.reconnects = 0
        """Times the connection was re-established after it broke."""
        self._sock: socket.socket | None = None
        self._conv = Conversation(client_id=client_id)
        self._last_attempt = 0.0
        self.server = ""

    # --- connection ---------------------------------------------------------

    def _hello(self) -> protocol.Hello:
        return protocol.Hello(
            client=self.name, client_id=self._conv.client_id, pid=os.getpid(), cwd=current_dir(),
            secrets=client_secrets() if self.send_secrets else [],
        )

    def _dial(self) -> None:
        """Open the socket and exchange hello (raises OSError/DaemonUnavailable)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._conv.reset_transport()
        rid = self._conv.send(self._hello())
        self._flush()
        welcome = self._wait(rid)
        if isinstance(welcome, protocol.Error):
            raise RequestError(welcome.code, welcome.message)
        assert isinstance(welcome, protocol.Welcome)
        self.server = welcome.server
        self._conv.frame_limit = welcome.max_frame
        self.spooling = False

    def connect(self) -> None:
        """Connect and say hello; raises DaemonUnavailable when nothing listens."""
        try:
            self._dial()
        except OSError as e:
            self._drop()
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}: {e.strerror or e}") from e

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _reconnect(self, budget: float) -> bool:
        """Try to reach the daemon for ``budget`` seconds; requeue unconfirmed events."""
        self._drop()
        deadline = time.monotonic() + budget
        delay = 0.01
        while True:
            self._last_attempt = time.monotonic()
            try:
                self._dial()
                self._conv.requeue()
                self.reconnects += 1
                return True
            except (OSError, DaemonUnavailable):
                self._drop()
            if time.monotonic() + delay > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def close(self) -> None:
        """Flush buffered events and close the connection."""
        if self._sock is not None:
            try:
                if self._conv.unacked:
                    self.sync()
            except (OSError, RequestError, DaemonUnavailable):
                pass
            self._drop()

    def __enter__(self) -> Client:
        if self._sock is None and not self.spooling:
            try:
                self.connect()
            except DaemonUnavailable:
                if not self.spool_enabled or not self._reconnect(self.spool_after):
                    if not self.spool_enabled:
                        raise
                    self.spooling = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _flush(self) -> None:
        self._conv.flush_batch()
        out = self._conv.out
        if out and self._sock is not None:
            try:
                self._sock.sendall(out)
            except OSError as e:
                self._parting_error()
                raise ConnectionError(f"connection to the daemon lost: {e}") from e
            out.clear()

    def _parting_error(self) -> None:
        """Raise the error the daemon sent before closing on us (forbidden, too_large…), if any."""
        assert self._sock is not None
        try:
            while data := self._sock.recv(65536):
                self._conv.feed(data)
        except OSError:
            pass
        self._conv.take(-1)  # raises the connection-level error when there is one

    def _wait(self, rid: int) -> protocol.Reply:
        """Read until the reply to ``rid`` arrives (OSError when the connection breaks)."""
        assert self._sock is not None
        conv = self._conv
        while True:
            reply = conv.take(rid)
            if reply is not None:
                return reply
            data = self._sock.recv(65536)
            if not data:
                conv.take(-1)
                raise ConnectionResetError("the daemon closed the connection")
            conv.feed(data)

    def request(self, msg: Any) -> protocol.Reply:
        """Send ``msg`` and wait for its reply; raise RequestError on ``error``.

        Survives a daemon restart; falls back to the spool when the daemon
        stays away (the reply is then made up locally: see ``spool_reply``).
        """
        conv = self._conv
        if self._sock is None and not self._revive():
            return self._spool(msg)
        rid = conv.send(msg)
        while True:
            try:
                self._flush()
                return check(self._wait(rid))
            except OSError:
                if not self._reconnect(self.spool_after):
                    return self._spool(None if isinstance(msg, protocol.Emit) else msg)
                if not isinstance(msg, protocol.Emit):  # emits were requeued with their ids
                    rid = conv.send(msg)

    def _revive(self) -> bool:
        """Whether a connection is (again) available; cheap while spooling."""
        if not self.spooling:
            return self._reconnect(self.spool_after)
        if time.monotonic() - self._last_attempt < 1.0:
            return False
        return self._reconnect(0.0)

    def _spool(self, msg: Any) -> protocol.Reply:
        """Write every unconfirmed emit (and ``msg``) to the spool; a local reply for ``msg``."""
        if not self.spool_enabled:
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        self.spooled += spool_pending(self._conv, self.name, msg, self.spool_dir)
        self.spooling = True
        return spool_reply(msg)

    # --- sessions -------------------------------------------------------------

    def open(
        self,
        skill: str,
        *,
        session_id: str | None = None,
        target: str = "global",
        input: Any = None,
        meta: dict[str, Any] | None = None,
        owner_pid: int | None = None,
        idle_timeout: float | None = None,
        cwd: str | None = None,
    ) -> protocol.Opened:
        """Start (or resume) a session; see ``session()`` for the arguments."""
        reply = self.request(
            protocol.Open(
                skill=skill, session_id=session_id or new_ulid(), target=target,
                cwd=cwd or current_dir(), owner_pid=owner_pid or 0,
                idle_timeout=idle_timeout or 0.0, input=input, meta=meta or {}, ts=time.time(),
            )
        )
        assert isinstance(reply, protocol.Opened)
        return reply

    @contextmanager
    def session(self, skill: str, **kwargs: Any) -> Iterator[Session]:
        """Open a session; on exit end it with ``failure`` on an exception, else ``success``.

        ``owner_pid``: the process whose exit aborts the session (default: this
        one; -1 for none). ``target``: ``global``, ``repo`` or an absolute dir.
        """
        opened = self.open(skill, **kwargs)
        s = Session(self, opened.session_id, opened.dir)
        try:
            yield s
        except BaseException as e:
            if not s.ended:
                try:
                    s.end("failure", summary=f"{type(e).__name__}: {e}"[:500])
                except (RequestError, DaemonUnavailable):
                    pass
            raise
        else:
            if not s.ended:
                s.end("success")

    def attach(self, session_id: str) -> Session:
        """A handle on a session opened elsewhere (another process), by id."""
        paths.check_name("session id", session_id)
        return Session(self, session_id, "")

    def emit(self, session_id: str, phase: str, payload: dict[str, Any], *,
             ack: bool = True, ts: float | None = None) -> int | None:
        """Append one event; returns its step (None with ``ack=False`` or while spooling)."""
        conv = self._conv
        msg = protocol.Emit(session_id=session_id, phase=phase, payload=payload,
                            ts=ts or time.time(), seq=conv.next_seq(), ack=ack)
        if ack:
            reply = self.request(msg)
            return reply.step if isinstance(reply, protocol.Ack) and reply.step else None
        if self._sock is None and not self._revive():
            self._spool(msg)
            return None
        conv.queue(msg)
        conv.unsynced += 1
        if len(conv.out) >= FLUSH_AT:
            try:
                self._flush()
            except OSError:
                if not self._reconnect(self.spool_after):
                    self._spool(None)
        if conv.unsynced >= MAX_UNSYNCED:
            self.sync()
        return None

    def sync(self, fsync: bool = False) -> None:
        """Return once everything sent before is written (fsynced if asked).

        Raises the first error that answered an earlier ``ack=False`` event.
        While spooling, returns once the events are in the spool.
        """
        self.request(protocol.Sync(fsync=fsync))
        self._conv.unsynced = 0
        self._conv.raise_pending_errors()

    def end(self, session_id: str, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
        """End a session; returns its final meta.json contents ({} while spooling)."""
        reply = self.request(protocol.Close(session_id=session_id, outcome=outcome,  # type: ignore[arg-type]
                                            summary=summary, ts=time.time()))
        assert isinstance(reply, protocol.Closed)
        self._conv.raise_pending_errors()
        return reply.meta

    def subscribe(self, skill: str = "", session_id: str = "", phase: str = "") -> Iterator[dict[str, Any] | int]:
        """Records as they land (dicts), and ints for gaps (records dropped for us).

        The connection becomes a stream: use a dedicated client for it.
        Raises DaemonUnavailable when the daemon goes away.
        """
        sock = self._socket()
        rid = self._conv.send(protocol.Subscribe(skill=skill, session_id=session_id, phase=phase))
        self._flush()
        check(self._wait(rid))  # subscribed before this returns: nothing later is missed
        sock.settimeout(None)
        return self._records(sock)

    def _records(self, sock: socket.socket) -> Iterator[dict[str, Any] | int]:
        framer = self._conv.framer
        decode_line = msgspec.json.decode
        while True:
            data = sock.recv(65536)
            if not data:
                raise DaemonUnavailable("the daemon closed the subscription")
            for body in framer.feed(data):
                msg = protocol.decode_reply(body)
                if isinstance(msg, protocol.RecordMsg):
                    yield decode_line(msg.line)
                elif isinstance(msg, protocol.Gap):
                    yield msg.dropped

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        return self._sock

    def status(self) -> dict[str, Any]:
        """The daemon's status (DaemonUnavailable when it is not running)."""
        if self.spooling and not self._revive():
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        reply = self.request(protocol.StatusRequest())
        if not isinstance(reply, protocol.Status):
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        return reply.info


def spool_pending(conv: Conversation, name: str, msg: Any, directory: Path) -> int:
    """Write ``conv``'s unconfirmed emits, then ``msg``, as one spool segment.

    Payloads are redacted here, with this process's secret env values,
    because the spool is on disk. Returns the number of events spooled.
    """
    from traced import spool
    from traced.redact import Redactor

    pending: list[Any] = conv.drain_unacked()
    if msg is not None and not (isinstance(msg, protocol.Emit) and pending and pending[-1] is msg):
        pending.append(msg)
    pending = [p for p in pending if not isinstance(p, protocol.Sync | protocol.StatusRequest)]
    if not pending:
        return 0
    redactor = Redactor(client_secrets())
    frames = encode(protocol.Hello(client=name, client_id=conv.client_id, pid=os.getpid(), cwd=current_dir()))
    first_seq = 0
    for item in pending:
        if isinstance(item, protocol.Emit):
            item.payload, _ = redactor.redact(item.payload)
            first_seq = first_seq or item.seq
        elif isinstance(item, protocol.Open) and item.input is not None:
            item.input, _ = redactor.redact(item.input)
        elif isinstance(item, protocol.Close) and item.summary:
            item.summary, _ = redactor.redact_text(item.summary)
        encode(item, frames)
    spool.write_segment(directory, conv.client_id, first_seq or conv.next_seq(), frames)
    return sum(isinstance(p, protocol.Emit) for p in pending)


def spool_reply(msg: Any) -> protocol.Reply:
    """The reply a client makes up for a request that went to the spool."""
    rid = getattr(msg, "id", 0)
    if isinstance(msg, protocol.Open):
        root = Path(msg.target) if msg.target.startswith("/") else paths.default_root()
        day = time.strftime("%Y-%m-%d", time.gmtime(msg.ts or None))
        return protocol.Opened(id=rid, session_id=msg.session_id,
                               dir=str(root / day / msg.skill / msg.session_id), step=0)
    if isinstance(msg, protocol.Close):
        return protocol.Closed(id=rid, meta={})
    if isinstance(msg, protocol.Sync):
        return protocol.Synced(id=rid)
    if isinstance(msg, protocol.Hello):
        return protocol.Welcome(id=rid)
    return protocol.Ack(id=rid, step=0)


R = TypeVar("R")


class PhaseHelpers(Generic[R]):
    """Typed helpers for the known phases, over ``event`` (sync or async)."""

    def event(self, phase: str, payload: dict[str, Any] | None = None, *, ack: bool = True,
              ts: float | None = None) -> R:
        """Append any event."""
        raise NotImplementedError

    def tool_call(self, tool: str, args: Any = None, *, call_id: str | None = None,
                  kind: str | None = None, server: str | None = None, ack: bool = True,
                  **extra: Any) -> R:
        """``tool_call {tool, args, call_id?, kind?: tool|skill|mcp|hook, server?}``."""
        return self.event("tool_call", _fields(
            tool=tool, args=args if args is not None else {}, call_id=call_id, kind=kind,
            server=server, **extra), ack=ack)

    def tool_result(self, tool: str, ok: bool = True, *, duration_ms: float | None = None,
                    result_summary: str | None = None, error: str | None = None,
                    call_id: str | None = None, ack: bool = True, **extra: Any) -> R:
        """``tool_result {tool, ok, duration_ms?, result_summary?, error?, call_id?}``."""
        return self.event("tool_result", _fields(
            tool=tool, ok=ok, duration_ms=duration_ms, result_summary=result_summary,
            error=error, call_id=call_id, **extra), ack=ack)

    def llm_call(self, model: str, *, input_tokens: int = 0, output_tokens: int = 0,
                 cache_read_tokens: int | None = None, cache_write_tokens: int | None = None,
                 provider: str | None = None, cost_usd: float | None = None,
                 latency_ms: float | None = None, finish_reason: str | None = None,
                 ack: bool = True, **extra: Any) -> R:
        """``llm_call {provider?, model, usage, cost_usd?, latency_ms?, finish_reason?}``."""
        usage = _fields(input_tokens=input_tokens, output_tokens=output_tokens,
                        cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens)
        return self.event("llm_call", _fields(
            provider=provider, model=model, usage=usage, cost_usd=cost_usd,
            latency_ms=latency_ms, finish_reason=finish_reason, **extra), ack=ack)

    def note(self, message: str, *, ack: bool = True, **extra: Any) -> R:
        """``note {message}``."""
        return self.event("note", _fields(message=message, **extra), ack=ack)

    def decision(self, decision: str, *, ack: bool = True, **extra: Any) -> R:
        """``decision {decision, …}``."""
        return self.event("decision", _fields(decision=decision, **extra), ack=ack)

    def verify(self, check: str, ok: bool, output: str | None = None, *, ack: bool = True) -> R:
        """``verify {check, ok, output?}``."""
        return self.event("verify", _fields(check=check, ok=ok, output=output), ack=ack)

    def artifact(self, path: str, kind: str | None = None, size_bytes: int | None = None, *,
                 copy: bool = False, ack: bool = True) -> R:
        """``artifact {path, kind?, size_bytes?}``; ``copy=True`` has the daemon copy the file
        into ``<session>/artifacts/`` (the record then has ``stored``, ``sha256``, ``size_bytes``)."""
        if copy:
            path = os.path.abspath(path)
        return self.event("artifact", _fields(path=path, kind=kind, size_bytes=size_bytes,
                                              attach=True if copy else None), ack=ack)

    def hook(self, event: str, name: str | None = None, ok: bool | None = None,
             duration_ms: float | None = None, *, ack: bool = True, **extra: Any) -> R:
        """``hook {event, name?, ok?, duration_ms?}``."""
        return self.event("hook", _fields(event=event, name=name, ok=ok,
                                          duration_ms=duration_ms, **extra), ack=ack)

    def user_prompt(self, prompt: str | None = None, prompt_id: str | None = None, *,
                    ack: bool = True) -> R:
        """``user_prompt {prompt_id?, prompt?}``: starts a new turn."""
        return self.event("user_prompt", _fields(prompt=prompt, prompt_id=prompt_id), ack=ack)


def _fields(**fields: Any) -> dict[str, Any]:
    """A payload from keyword fields, without the None ones."""
    return {k: v for k, v in fields.items() if v is not None}


class Session(PhaseHelpers["int | None"]):
    """One session seen from a blocking client: every helper returns the step."""

    def __init__(self, client: Client, session_id: str, dir: str) -> None:
        self.client = client
        self.id = session_id
        self.dir = dir
        self.ended = False
        self.meta: dict[str, Any] | None = None

    @property
    def trace_path(self) -> str:
        """The session's trace.jsonl."""
        return os.path.join(self.dir, "trace.jsonl") if self.dir else ""

    def event(self, phase: str, payload: dict[str, Any] | None = None, *, ack: bool = True,
              ts: float | None = None) -> int | None:
        """Append any event; the step, or None with ``ack=False``."""
        return self.client.emit(self.id, phase, payload or {}, ack=ack, ts=ts)

    def end(self, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
        """End the session; returns its final meta."""
        self.meta = self.client.end(self.id, outcome, summary)
        self.ended = True
        return self.meta

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.ended:
            self.end("failure" if exc is not None else "success")


__all__ = ["Client", "Conversation", "PhaseHelpers", "Session"]
