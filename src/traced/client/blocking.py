"""The blocking client: stdlib ``socket`` + msgspec, no anyio; a thin loop over ``Conversation``.

Every decision (numbering, encoding, batching, resend, backoff, spooling) is
the conversation's; this module moves bytes and sleeps.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from traced.client.common import ClientBase
from traced.client.conversation import (
    FLUSH_AT,
    MAX_UNSYNCED,
    READ_SIZE,
    Backoff,
    check,
    records,
)
from traced.client.peer import check_dir, check_peer
from traced.client.session import Session
from traced.errors import DaemonUnavailable, RequestError
from traced.format import layout
from traced.wire import protocol


class Client(ClientBase):
    """A blocking connection to the daemon, which survives daemon restarts.

    When the connection breaks, it reconnects with backoff and sends every
    unconfirmed event again (the daemon drops the ones it already wrote). When
    the daemon stays unreachable for ``spool_after`` seconds, events go to the
    local spool (redacted here first) and the calls return at once: steps are
    then None. The daemon ingests the spool when it is back.

    ``timeout``: seconds one socket operation may block. ``offline=True``
    starts in spooling mode without touching the socket (for callers that just
    saw the daemon time out). Raises DaemonUnavailable (no daemon and
    ``spool=False``) and RequestError.

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
        offline: bool = False,
    ) -> None:
        super().__init__(socket_path, name=name or f"python:{os.getpid()}", timeout=timeout,
                         send_secrets=send_secrets, spool_after=spool_after, spool=spool, spool_dir=spool_dir,
                         client_id=client_id)
        self._sock: socket.socket | None = None
        if offline:  # the daemon is known to be wedged or away: spool at once, touch no socket
            self._conv.spooling = True
            self._conv.last_attempt = time.monotonic()

    # --- connection ---------------------------------------------------------

    def _dial(self) -> None:
        """Open the socket and exchange hello (raises OSError/RequestError)."""
        check_dir(self.socket_path)  # secrets never go to another uid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.op_timeout)
        try:
            sock.connect(str(self.socket_path))
            check_peer(sock)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        conv = self._conv
        conv.reset_transport()
        try:
            rid = conv.send(conv.hello())
            self._flush()
            self.server = conv.welcome(self._wait(rid))
        except RequestError as e:  # a full daemon turns us away: as good as away (retry, then spool)
            if e.code != "overloaded":
                raise
            raise ConnectionRefusedError(111, e.message) from e

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
        backoff = Backoff(budget)
        while True:
            self._conv.last_attempt = time.monotonic()
            try:
                self._dial()
                self._conv.requeue()
                self.reconnects += 1
                return True
            except (OSError, DaemonUnavailable):
                self._drop()
            delay = backoff.next()
            if delay is None:
                return False
            time.sleep(delay)

    def _revive(self) -> bool:
        """Whether a connection is (again) available; cheap while spooling."""
        if not self._conv.spooling:
            return self._reconnect(self._conv.spool_after)
        return self._conv.revive_due() and self._reconnect(0.0)

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
                if not self.spool_enabled:
                    raise
                if not self._reconnect(self._conv.spool_after):
                    self._conv.spooling = True
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
            while data := self._sock.recv(READ_SIZE):
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
            data = self._sock.recv(READ_SIZE)
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
                if not self._reconnect(conv.spool_after):
                    return self._spool(None if isinstance(msg, protocol.Emit) else msg)
                if conv.retry_after_loss(msg):
                    rid = conv.send(msg)

    # --- sessions -------------------------------------------------------------

    def open(self, skill: str, **kwargs: Any) -> protocol.Opened:
        """Start (or resume) a session; see ``session()`` for the arguments."""
        reply = self.request(self._conv.open_msg(skill, **kwargs))
        assert isinstance(reply, protocol.Opened)
        return reply

    def session(self, skill: str, **kwargs: Any) -> Session:
        """Open a session and return its handle, its own context manager.

        ``with client.session(skill="x") as s:`` ends it ``failure`` on an
        exception, else ``success``; without ``with``, call ``s.end()``.
        Keywords: ``session_id`` (resume one, e.g. an agent's own id),
        ``target`` (``global``, ``repo`` or an absolute dir), ``input``,
        ``meta`` (labels), ``owner_pid`` (default: this process; -1 for none),
        ``idle_timeout`` (seconds), ``cwd``.
        """
        opened = self.open(skill, **kwargs)
        return Session(self, opened.session_id, opened.dir)

    def attach(self, session_id: str) -> Session:
        """A handle on a session opened elsewhere (another process), by id. Raises InvalidName."""
        layout.check_name("session id", session_id)
        return Session(self, session_id, "")

    def emit(self, session_id: str, phase: str, payload: dict[str, Any], *,
             ack: bool = True, ts: float | None = None, late: bool = False, seq: int | None = None) -> int | None:
        """Append one event; returns its step (None with ``ack=False`` or while spooling).

        ``seq``: the idempotency key to send instead of the next one, for events with a stable
        source id (a transcript's record, under a client id of their own): the daemon writes an
        event with a (client id, seq) it already holds only once, whoever sends it.
        Raises RequestError for this event alone (``invalid_event`` when it
        cannot be encoded, ``too_large``, or the daemon's refusal).
        """
        conv = self._conv
        msg = conv.emit_msg(session_id, phase, payload, ack=ack, ts=ts, late=late, seq=seq)
        if ack:
            reply = self.request(msg)
            return reply.step if isinstance(reply, protocol.Ack) and reply.step else None
        if self._sock is None and not self._revive():
            conv.queue(msg)
            self._spool(None)
            return None
        conv.queue(msg)
        if len(conv.out) >= FLUSH_AT:
            try:
                self._flush()
            except OSError:
                if not self._reconnect(conv.spool_after):
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

    def end(self, session_id: str, outcome: str = "success", summary: str | None = None, *,
            ts: float | None = None) -> dict[str, Any]:
        """End a session (``ts``: when it ended, default now); returns its final meta.json contents
        ({} while spooling)."""
        reply = self.request(self._conv.close_msg(session_id, outcome, summary, ts))
        assert isinstance(reply, protocol.Closed)
        self._conv.raise_pending_errors()
        return reply.meta

    def subscribe(self, skill: str = "", session_id: str = "", phase: str = "") -> Iterator[dict[str, Any] | int]:
        """Records as they land (dicts), and ints for gaps (records dropped for us).

        The connection becomes a stream: use a dedicated client for it.
        Raises DaemonUnavailable when the daemon goes away.
        """
        if self._sock is None:
            self.connect()
        sock = self._sock
        assert sock is not None
        rid = self._conv.send(protocol.Subscribe(skill=skill, session_id=session_id, phase=phase))
        self._flush()
        check(self._wait(rid))  # subscribed before this returns: nothing later is missed
        sock.settimeout(None)
        return self._records(sock)

    def _records(self, sock: socket.socket) -> Iterator[dict[str, Any] | int]:
        while True:
            data = sock.recv(READ_SIZE)
            if not data:
                raise DaemonUnavailable("the daemon closed the subscription")
            yield from records(self._conv.framer, data)

    def status(self, held: bool = False) -> dict[str, Any]:
        """The daemon's status (DaemonUnavailable when it is not running).

        ``held``: also ``held_sessions`` and ``held_dirs``, every session the daemon holds (see ``prune``).
        """
        if self.spooling and not self._revive():
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        reply = self.request(protocol.StatusRequest(held=held))
        if not isinstance(reply, protocol.Status):
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        return reply.info


__all__ = ["Client", "Session"]
