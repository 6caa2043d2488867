"""A one-shot client for the shell path (``traced event``, the agent hooks).

Stdlib + ``minipack`` only: no msgspec, anyio, typing or pathlib, because
these commands run once per event and their start-up is the cost. The socket
is the bare ``_socket.socket``: ``import socket`` costs ``enum``, ``selectors``
and ``array``, about half of an interpreter's start-up. It has the
``open``/``emit``/``end`` surface of ``Client`` but no reconnect or spool:
when the daemon is unreachable or the connection breaks it raises OSError,
and the caller hands over to the full ``Client`` with the same ``client_id``,
so the (client_id, seq) keys repeat and the daemon drops what it already wrote.

Its messages are plain dicts (``MESSAGES`` names each op's builder); a test
checks every one of them against the Structs of ``wire.protocol``, the one
place the schema is written.
"""

from __future__ import annotations

import _socket
import os
import time

from traced.errors import RequestError
from traced.format.ids import new_ulid
from traced.locations import current_dir, socket_location
from traced.wire import minipack
from traced.wire.framing import Framer, frame

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

VERSION = 1
"""The protocol version this client speaks (``wire.protocol.VERSION``)."""
SPOOL_AFTER = 2.0
"""Seconds the daemon may stay away (or silent) before events go to the spool (``TRACED_SPOOL_AFTER``)."""


def spool_after_default() -> float:
    """``$TRACED_SPOOL_AFTER`` in seconds, else ``SPOOL_AFTER``: every client's patience with the daemon."""
    try:
        return float(os.environ.get("TRACED_SPOOL_AFTER") or SPOOL_AFTER)
    except ValueError:
        return SPOOL_AFTER


def hello_msg(name: str, client_id: str) -> dict[str, Any]:
    """``hello``, with this process's secret env values for the daemon's redaction."""
    from traced.redaction.names import secret_env_values

    return {"op": "hello", "version": VERSION, "client": name, "client_id": client_id, "pid": os.getpid(),
            "cwd": current_dir(), "secrets": secret_env_values(os.environ)}


def open_msg(skill: str, *, session_id: str | None = None, target: str = "global", input: Any = None,
             meta: dict[str, Any] | None = None, owner_pid: int | None = None, idle_timeout: float | None = None,
             cwd: str | None = None, reopen: bool = True) -> dict[str, Any]:
    """``open`` (see ``Client.session``)."""
    return {"op": "open", "skill": skill, "session_id": session_id or new_ulid(), "target": target,
            "cwd": current_dir() if cwd is None else cwd, "owner_pid": owner_pid or 0,
            "idle_timeout": idle_timeout or 0.0, "input": input, "meta": meta or {}, "ts": time.time(),
            "reopen": reopen}


def emit_msg(session_id: str, phase: str, payload: dict[str, Any], seq: int, *, ts: float | None = None,
             late: bool = False) -> dict[str, Any]:
    """``emit``, always acknowledged on this path."""
    return {"op": "emit", "session_id": session_id, "phase": phase, "payload": payload, "ts": ts or time.time(),
            "seq": seq, "ack": True, "late": late}


def close_msg(session_id: str, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
    """``close``."""
    return {"op": "close", "session_id": session_id, "outcome": outcome, "summary": summary, "ts": time.time()}


MESSAGES = {"hello": hello_msg, "open": open_msg, "emit": emit_msg, "close": close_msg}


class ShellClient:
    """Blocking, one connection, no retries; raises OSError when the daemon is away.

    ``timeout``: seconds any one socket operation may block. ``deadline``
    (``time.monotonic()`` seconds): when everything must be done; every
    operation gets only the time left, and TimeoutError follows past it.
    """

    spooling = False

    def __init__(self, socket_path: str | None = None, *, name: str = "traced-shell",
                 client_id: str | None = None, timeout: float = 30.0, deadline: float | None = None) -> None:
        self.socket_path = socket_path or socket_location()
        self.name = name
        self.client_id = client_id or new_ulid()
        self.timeout = timeout
        self.deadline = deadline
        self.frame_limit = 0
        self.max_keys = 0
        self._sock: _socket.socket | None = None
        self._framer = Framer(64 * 1024 * 1024)
        self._ready: list[bytes] = []
        self._id = 0
        self._seq = 0

    def connect(self) -> None:
        """Connect and say hello; learn the daemon's frame limit."""
        from traced.client.peer import check_dir, check_peer

        check_dir(self.socket_path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._sock = sock
        try:
            self._arm()
            sock.connect(self.socket_path)
            check_peer(sock)
        except OSError:
            self.close()
            raise
        try:
            welcome = self.request(hello_msg(self.name, self.client_id))
        except OSError:
            self.close()
            raise
        except RequestError as e:  # a full daemon turns us away: as good as away
            if e.code != "overloaded":
                raise
            self.close()
            raise ConnectionRefusedError(111, e.message) from e
        self.frame_limit = int(welcome.get("max_frame") or 0)
        self.max_keys = int(welcome.get("max_keys") or 0)

    def _arm(self) -> None:
        """Give the next socket operation the time left (TimeoutError when none is)."""
        assert self._sock is not None
        wait = self.timeout
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("the hook's time budget is spent")
        self._sock.settimeout(wait)

    def close(self) -> None:
        """Close the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ShellClient:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its reply.

        Raises RequestError for an ``error`` reply to it, or for a
        connection-level one (no id, or id 0); OSError when the connection breaks.
        """
        assert self._sock is not None
        self._id += 1
        msg["id"] = self._id
        body = minipack.packb(msg)
        if self.frame_limit and len(body) > self.frame_limit:
            raise RequestError("too_large", f"event of {len(body)} bytes exceeds the daemon's limit of "
                               f"{self.frame_limit} bytes")
        self._arm()
        self._sock.sendall(frame(body))
        while True:
            reply = self._next()
            if reply.get("id", 0) in (self._id, 0):
                break
        if reply.get("op") == "error":
            raise RequestError(str(reply.get("code")), str(reply.get("message")))
        return reply

    def request_many(self, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``msgs`` pipelined (all written, then every reply read) and return their replies in
        order; an ``error`` reply is returned, not raised. Raises OSError when the connection breaks."""
        assert self._sock is not None
        out = bytearray()
        ids = []
        for msg in msgs:
            self._id += 1
            msg["id"] = self._id
            ids.append(self._id)
            out += frame(minipack.packb(msg))
        self._arm()
        self._sock.sendall(out)
        replies: dict[int, dict[str, Any]] = {}
        while len(replies) < len(ids):
            reply = self._next()
            rid = reply.get("id", 0)
            if rid == 0 and reply.get("op") == "error":  # about the connection, not one request
                raise RequestError(str(reply.get("code")), str(reply.get("message")))
            replies[rid] = reply
        return [replies[i] for i in ids]

    def _next(self) -> dict[str, Any]:
        assert self._sock is not None
        while True:
            while self._ready:
                value = minipack.unpackb(self._ready.pop(0))
                if isinstance(value, dict):
                    return value
            self._arm()
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionResetError("the daemon closed the connection")
            self._ready.extend(self._framer.feed(data))

    def open(self, skill: str, **kwargs: Any) -> dict[str, Any]:
        """Start or resume a session (see ``Client.open``); returns the ``opened`` reply."""
        return self.request(open_msg(skill, **kwargs))

    def emit(self, session_id: str, phase: str, payload: dict[str, Any], *, ack: bool = True,
             ts: float | None = None, late: bool = False, seq: int | None = None) -> int | None:
        """Append one event and return its step (always acknowledged on this path); ``seq``: see
        ``Client.emit``."""
        if not seq:
            self._seq += 1
        step = self.request(emit_msg(session_id, phase, payload, seq or self._seq, ts=ts, late=late)).get("step")
        return step if isinstance(step, int) else None

    def end(self, session_id: str, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
        """End a session; returns its final meta."""
        meta = self.request(close_msg(session_id, outcome, summary)).get("meta")
        return meta if isinstance(meta, dict) else {}
