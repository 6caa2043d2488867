"""The async client (anyio): the same conversation core, reconnect and spool as ``Client``."""

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
from traced.client import (
    FLUSH_AT,
    MAX_UNSYNCED,
    Conversation,
    PhaseHelpers,
    check,
    client_secrets,
    spool_pending,
    spool_reply,
)
from traced.errors import DaemonUnavailable, RequestError
from traced.ids import new_ulid
from traced.locations import current_dir

_LOST = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class AsyncClient:
    """An anyio connection to the daemon; it reconnects and spools like ``Client``.

    >>> async with AsyncClient() as client, client.session(skill="review") as s:
    ...     await s.tool_call("Bash", {"cmd": "ls"})
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *, name: str = "",
                 send_secrets: bool = True, spool_after: float | None = None,
                 spool: bool = True, spool_dir: str | os.PathLike[str] | None = None) -> None:
        self.socket_path = Path(socket_path) if socket_path else paths.socket_path()
        self.name = name or f"python-async:{os.getpid()}"
        self.send_secrets = send_secrets
        self.spool_after = spool_after if spool_after is not None else float(
            os.environ.get("TRACED_SPOOL_AFTER", "2"))
        self.spool_enabled = spool
        self.spool_dir = Path(spool_dir) if spool_dir else paths.spool_dir()
        self.spooling = False
        self.spooled = 0
        self._stream: SocketStream | None = None
        self._conv = Conversation()
        self._lock = anyio.Lock()
        self._last_attempt = 0.0
        self.server = ""

    # --- connection ---------------------------------------------------------

    async def _dial(self) -> None:
        self._stream = await anyio.connect_unix(self.socket_path)
        conv = self._conv
        conv.reset_transport()
        rid = conv.send(protocol.Hello(
            client=self.name, client_id=conv.client_id, pid=os.getpid(), cwd=current_dir(),
            secrets=client_secrets() if self.send_secrets else []))
        await self._flush()
        welcome = await self._wait(rid)
        if isinstance(welcome, protocol.Error):
            raise RequestError(welcome.code, welcome.message)
        assert isinstance(welcome, protocol.Welcome)
        self.server = welcome.server
        conv.frame_limit = welcome.max_frame
        self.spooling = False

    async def connect(self) -> None:
        """Connect and say hello; raises DaemonUnavailable when nothing listens."""
        try:
            await self._dial()
        except _LOST as e:
            await self._drop()
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}: {e}") from e

    async def _drop(self) -> None:
        if self._stream is not None:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
            self._stream = None

    async def _reconnect(self, budget: float) -> bool:
        await self._drop()
        deadline = time.monotonic() + budget
        delay = 0.01
        while True:
            self._last_attempt = time.monotonic()
            try:
                await self._dial()
                self._conv.requeue()
                return True
            except (*_LOST, DaemonUnavailable):
                await self._drop()
            if time.monotonic() + delay > deadline:
                return False
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _revive(self) -> bool:
        if not self.spooling:
            return await self._reconnect(self.spool_after)
        if time.monotonic() - self._last_attempt < 1.0:
            return False
        return await self._reconnect(0.0)

    async def aclose(self) -> None:
        """Flush buffered events and close."""
        if self._stream is not None:
            try:
                if self._conv.unacked:
                    await self.sync()
            except (*_LOST, RequestError, DaemonUnavailable):
                pass
            await self._drop()

    async def __aenter__(self) -> AsyncClient:
        if self._stream is None and not self.spooling:
            try:
                await self.connect()
            except DaemonUnavailable:
                if not self.spool_enabled:
                    raise
                if not await self._reconnect(self.spool_after):
                    self.spooling = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _flush(self) -> None:
        self._conv.flush_batch()
        out = self._conv.out
        if out and self._stream is not None:
            data = bytes(out)
            out.clear()
            await self._stream.send(data)

    async def _wait(self, rid: int) -> protocol.Reply:
        assert self._stream is not None
        conv = self._conv
        while True:
            reply = conv.take(rid)
            if reply is not None:
                return reply
            try:
                data = await self._stream.receive(65536)
            except anyio.EndOfStream:
                conv.take(-1)  # raises the daemon's parting error, if it sent one
                raise
            conv.feed(data)

    def _spool(self, msg: Any) -> protocol.Reply:
        if not self.spool_enabled:
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        self.spooled += spool_pending(self._conv, self.name, msg, self.spool_dir)
        self.spooling = True
        return spool_reply(msg)

    async def request(self, msg: Any) -> protocol.Reply:
        """Send ``msg`` and wait for its reply; raise RequestError on ``error``."""
        async with self._lock:
            conv = self._conv
            if self._stream is None and not await self._revive():
                return self._spool(msg)
            rid = conv.send(msg)
            while True:
                try:
                    await self._flush()
                    return check(await self._wait(rid))
                except _LOST:
                    if not await self._reconnect(self.spool_after):
                        return self._spool(None if isinstance(msg, protocol.Emit) else msg)
                    if not isinstance(msg, protocol.Emit):
                        rid = conv.send(msg)

    # --- sessions -------------------------------------------------------------

    async def open(self, skill: str, *, session_id: str | None = None, target: str = "global",
                   input: Any = None, meta: dict[str, Any] | None = None,
                   owner_pid: int | None = None, idle_timeout: float | None = None,
                   cwd: str | None = None) -> protocol.Opened:
        """Start (or resume) a session."""
        reply = await self.request(protocol.Open(
            skill=skill, session_id=session_id or new_ulid(), target=target,
            cwd=cwd or current_dir(), owner_pid=owner_pid or 0, idle_timeout=idle_timeout or 0.0,
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
        """Append one event; its step (None with ``ack=False`` or while spooling)."""
        conv = self._conv
        msg = protocol.Emit(session_id=session_id, phase=phase, payload=payload,
                            ts=ts or time.time(), seq=conv.next_seq(), ack=ack)
        if ack:
            reply = await self.request(msg)
            return reply.step if isinstance(reply, protocol.Ack) and reply.step else None
        async with self._lock:
            if self._stream is None and not await self._revive():
                self._spool(msg)
                return None
            conv.queue(msg)
            conv.unsynced += 1
            if len(conv.out) >= FLUSH_AT:
                try:
                    await self._flush()
                except _LOST:
                    if not await self._reconnect(self.spool_after):
                        self._spool(None)
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
        """End a session; returns its final meta ({} while spooling)."""
        reply = await self.request(protocol.Close(session_id=session_id, outcome=outcome,  # type: ignore[arg-type]
                                                  summary=summary, ts=time.time()))
        assert isinstance(reply, protocol.Closed)
        self._conv.raise_pending_errors()
        return reply.meta

    async def status(self) -> dict[str, Any]:
        """The daemon's status."""
        reply = await self.request(protocol.StatusRequest())
        if not isinstance(reply, protocol.Status):
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
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
