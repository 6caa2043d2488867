"""The async client (anyio): the same conversation core and session API as ``Client``."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream

from traced import paths, protocol
from traced.client import FLUSH_AT, MAX_UNSYNCED, Conversation, PhaseHelpers, check, client_secrets
from traced.errors import DaemonUnavailable, RequestError
from traced.ids import new_ulid


class AsyncClient:
    """An anyio connection to the daemon; one request at a time per client.

    >>> async with AsyncClient() as client, client.session(skill="review") as s:
    ...     await s.tool_call("Bash", {"cmd": "ls"})
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *, name: str = "",
                 send_secrets: bool = True) -> None:
        self.socket_path = Path(socket_path) if socket_path else paths.socket_path()
        self.name = name or f"python-async:{os.getpid()}"
        self.send_secrets = send_secrets
        self._stream: SocketStream | None = None
        self._conv = Conversation()
        self._lock = anyio.Lock()
        self.server = ""

    async def connect(self) -> None:
        """Connect and say hello; raises DaemonUnavailable when nothing listens."""
        try:
            self._stream = await anyio.connect_unix(self.socket_path)
        except OSError as e:
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}: {e.strerror or e}") from e
        welcome = await self.request(protocol.Hello(
            client=self.name, client_id=self._conv.client_id, pid=os.getpid(), cwd=os.getcwd(),
            secrets=client_secrets() if self.send_secrets else []))
        assert isinstance(welcome, protocol.Welcome)
        self.server = welcome.server

    async def aclose(self) -> None:
        """Flush buffered events and close."""
        if self._stream is not None:
            try:
                await self._flush()
            except DaemonUnavailable:
                pass
            await self._stream.aclose()
            self._stream = None

    async def __aenter__(self) -> AsyncClient:
        if self._stream is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _flush(self) -> None:
        out = self._conv.out
        if out and self._stream is not None:
            data = bytes(out)
            out.clear()
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as e:
                raise DaemonUnavailable(f"connection to the daemon lost: {e}") from e

    async def request(self, msg: Any) -> protocol.Reply:
        """Send ``msg`` and wait for its reply; raise RequestError on ``error``."""
        if self._stream is None:
            await self.connect()
        assert self._stream is not None
        async with self._lock:
            conv = self._conv
            rid = conv.send(msg)
            await self._flush()
            while True:
                reply = conv.take(rid)
                if reply is not None:
                    return check(reply)
                try:
                    data = await self._stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as e:
                    conv.take(-1)  # raises the daemon's parting error, if it sent one
                    raise DaemonUnavailable("the daemon closed the connection") from e
                conv.feed(data)

    async def open(self, skill: str, *, session_id: str | None = None, target: str = "global",
                   input: Any = None, meta: dict[str, Any] | None = None,
                   owner_pid: int | None = None, idle_timeout: float | None = None,
                   cwd: str | None = None) -> protocol.Opened:
        """Start (or resume) a session."""
        reply = await self.request(protocol.Open(
            skill=skill, session_id=session_id or new_ulid(), target=target,
            cwd=cwd or os.getcwd(), owner_pid=owner_pid or 0, idle_timeout=idle_timeout or 0.0,
            input=input, meta=meta or {}, ts=time.time()))
        assert isinstance(reply, protocol.Opened)
        return reply

    @asynccontextmanager
    async def session(self, skill: str, **kwargs: Any) -> AsyncIterator[AsyncSession]:
        """Open a session; end it with ``failure`` on an exception, else ``success``."""
        opened = await self.open(skill, **kwargs)
        s = AsyncSession(self, opened.session_id, opened.dir)
        try:
            yield s
        except BaseException as e:
            if not s.ended:
                with anyio.CancelScope(shield=True):
                    try:
                        await s.end("failure", summary=f"{type(e).__name__}: {e}"[:500])
                    except (RequestError, DaemonUnavailable):
                        pass
            raise
        else:
            if not s.ended:
                await s.end("success")

    def attach(self, session_id: str) -> AsyncSession:
        """A handle on a session opened elsewhere, by id."""
        paths.check_name("session id", session_id)
        return AsyncSession(self, session_id, "")

    async def emit(self, session_id: str, phase: str, payload: dict[str, Any], *,
                   ack: bool = True, ts: float | None = None) -> int | None:
        """Append one event; its step, or None at once with ``ack=False``."""
        conv = self._conv
        msg = protocol.Emit(session_id=session_id, phase=phase, payload=payload,
                            ts=ts or time.time(), seq=conv.next_seq(), ack=ack)
        if ack:
            reply = await self.request(msg)
            assert isinstance(reply, protocol.Ack)
            return reply.step
        if self._stream is None:
            await self.connect()
        conv.send(msg, want_reply=False)
        conv.unsynced += 1
        if len(conv.out) >= FLUSH_AT:
            async with self._lock:
                await self._flush()
        if conv.unsynced >= MAX_UNSYNCED:
            await self.sync()
        return None

    async def sync(self, fsync: bool = False) -> None:
        """Return once everything sent before is written (fsynced if asked)."""
        await self.request(protocol.Sync(fsync=fsync))
        self._conv.unsynced = 0
        self._conv.raise_pending_errors()

    async def end(self, session_id: str, outcome: str = "success",
                  summary: str | None = None) -> dict[str, Any]:
        """End a session; returns its final meta."""
        reply = await self.request(protocol.Close(session_id=session_id, outcome=outcome,  # type: ignore[arg-type]
                                                  summary=summary, ts=time.time()))
        assert isinstance(reply, protocol.Closed)
        self._conv.raise_pending_errors()
        return reply.meta

    async def status(self) -> dict[str, Any]:
        """The daemon's status."""
        reply = await self.request(protocol.StatusRequest())
        assert isinstance(reply, protocol.Status)
        return reply.info


class AsyncSession(PhaseHelpers[Any]):
    """One session seen from an async client: every helper is awaited for the step."""

    def __init__(self, client: AsyncClient, session_id: str, dir: str) -> None:
        self.client = client
        self.id = session_id
        self.dir = dir
        self.ended = False
        self.meta: dict[str, Any] | None = None

    def event(self, phase: str, payload: dict[str, Any] | None = None, *, ack: bool = True,
              ts: float | None = None) -> Any:
        """Append any event: ``await s.event(...)`` gives the step (None with ack=False)."""
        return self.client.emit(self.id, phase, payload or {}, ack=ack, ts=ts)

    async def end(self, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
        """End the session; returns its final meta."""
        self.meta = await self.client.end(self.id, outcome, summary)
        self.ended = True
        return self.meta
