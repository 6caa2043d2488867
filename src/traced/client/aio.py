"""The async client (anyio): the same ``Conversation`` and surface as ``Client``, as a thin loop.

Every decision (numbering, encoding, batching, resend, backoff, spooling) is
the conversation's; this module moves bytes and sleeps, on any anyio backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Generator
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream

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
from traced.client.session import AsyncSession
from traced.errors import DaemonUnavailable, RequestError
from traced.format import layout
from traced.wire import protocol

_LOST = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class _Opening:
    """``client.session(...)``: awaitable for the handle, or an ``async with`` block around it."""

    def __init__(self, client: AsyncClient, skill: str, kwargs: dict[str, Any]) -> None:
        self.client = client
        self.skill = skill
        self.kwargs = kwargs
        self.session: AsyncSession | None = None

    async def _open(self) -> AsyncSession:
        opened = await self.client.open(self.skill, **self.kwargs)
        self.session = AsyncSession(self.client, opened.session_id, opened.dir)
        return self.session

    def __await__(self) -> Generator[Any, None, AsyncSession]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncSession:
        return await self._open()

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None
        await self.session.__aexit__(*exc)


class AsyncClient(ClientBase):
    """An anyio connection to the daemon; it reconnects and spools like ``Client``.

    ``timeout``: seconds one receive may wait for the daemon before the
    connection counts as lost. Raises DaemonUnavailable and RequestError.

    >>> async with AsyncClient() as client, client.session(skill="review") as s:
    ...     await s.tool_call("Bash", {"cmd": "ls"})
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, *, name: str = "",
                 timeout: float = 30.0, send_secrets: bool = True, spool_after: float | None = None,
                 spool: bool = True, spool_dir: str | os.PathLike[str] | None = None,
                 client_id: str | None = None) -> None:
        super().__init__(socket_path, name=name or f"python-async:{os.getpid()}", timeout=timeout,
                         send_secrets=send_secrets, spool_after=spool_after, spool=spool, spool_dir=spool_dir,
                         client_id=client_id)
        self._stream: SocketStream | None = None
        self._lock = anyio.Lock()

    # --- connection ---------------------------------------------------------

    async def _dial(self) -> None:
        check_dir(self.socket_path)  # secrets never go to another uid
        with anyio.fail_after(self.timeout):
            self._stream = await anyio.connect_unix(self.socket_path)
        check_peer(self._stream.extra(SocketAttribute.raw_socket))
        conv = self._conv
        conv.reset_transport()
        try:
            rid = conv.send(conv.hello())
            await self._flush()
            self.server = conv.welcome(await self._wait(rid))
        except RequestError as e:  # a full daemon turns us away: as good as away (retry, then spool)
            if e.code != "overloaded":
                raise
            raise ConnectionRefusedError(111, e.message) from e

    async def connect(self) -> None:
        """Connect and say hello; raises DaemonUnavailable when nothing listens."""
        try:
            await self._dial()
        except (*_LOST, TimeoutError) as e:
            await self._drop()
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}: {e}") from e

    async def _drop(self) -> None:
        if self._stream is not None:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
            self._stream = None

    async def _reconnect(self, budget: float) -> bool:
        await self._drop()
        backoff = Backoff(budget)
        while True:
            self._conv.last_attempt = time.monotonic()
            try:
                await self._dial()
                self._conv.requeue()
                self.reconnects += 1
                return True
            except (*_LOST, TimeoutError, DaemonUnavailable):
                await self._drop()
            delay = backoff.next()
            if delay is None:
                return False
            await anyio.sleep(delay)

    async def _revive(self) -> bool:
        if not self._conv.spooling:
            return await self._reconnect(self._conv.spool_after)
        return self._conv.revive_due() and await self._reconnect(0.0)

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
                if not await self._reconnect(self._conv.spool_after):
                    self._conv.spooling = True
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

    async def _receive(self) -> bytes:
        assert self._stream is not None
        try:
            with anyio.fail_after(self.op_timeout):
                return await self._stream.receive(READ_SIZE)
        except TimeoutError as e:
            raise ConnectionError(f"no reply from the daemon in {self.op_timeout:g}s") from e

    async def _wait(self, rid: int) -> protocol.Reply:
        conv = self._conv
        while True:
            reply = conv.take(rid)
            if reply is not None:
                return reply
            try:
                data = await self._receive()
            except anyio.EndOfStream:
                conv.take(-1)  # raises the daemon's parting error, if it sent one
                raise
            conv.feed(data)

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
                    if not await self._reconnect(conv.spool_after):
                        return self._spool(None if isinstance(msg, protocol.Emit) else msg)
                    if conv.retry_after_loss(msg):
                        rid = conv.send(msg)

    # --- sessions -------------------------------------------------------------

    async def open(self, skill: str, **kwargs: Any) -> protocol.Opened:
        """Start (or resume) a session; see ``Client.session`` for the arguments."""
        reply = await self.request(self._conv.open_msg(skill, **kwargs))
        assert isinstance(reply, protocol.Opened)
        return reply

    def session(self, skill: str, **kwargs: Any) -> _Opening:
        """Open a session: ``s = await client.session(...)``, or ``async with client.session(...) as s``.

        The handle is its own async context manager; see ``Client.session``.
        """
        return _Opening(self, skill, kwargs)

    def attach(self, session_id: str) -> AsyncSession:
        """A handle on a session opened elsewhere, by id. Raises InvalidName."""
        layout.check_name("session id", session_id)
        return AsyncSession(self, session_id, "")

    async def emit(self, session_id: str, phase: str, payload: dict[str, Any], *,
                   ack: bool = True, ts: float | None = None, late: bool = False,
                   seq: int | None = None) -> int | None:
        """Append one event; its step (None with ``ack=False`` or while spooling).

        ``seq``: a stable idempotency key, as ``Client.emit``. Raises RequestError for this
        event alone, as ``Client.emit``.
        """
        conv = self._conv
        msg = conv.emit_msg(session_id, phase, payload, ack=ack, ts=ts, late=late, seq=seq)
        if ack:
            reply = await self.request(msg)
            return reply.step if isinstance(reply, protocol.Ack) and reply.step else None
        async with self._lock:
            if self._stream is None and not await self._revive():
                conv.queue(msg)
                self._spool(None)
                return None
            conv.queue(msg)
            if len(conv.out) >= FLUSH_AT:
                try:
                    await self._flush()
                except _LOST:
                    if not await self._reconnect(conv.spool_after):
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
        reply = await self.request(self._conv.close_msg(session_id, outcome, summary))
        assert isinstance(reply, protocol.Closed)
        self._conv.raise_pending_errors()
        return reply.meta

    async def subscribe(self, skill: str = "", session_id: str = "",
                        phase: str = "") -> AsyncIterator[dict[str, Any] | int]:
        """Records as they land (dicts), and ints for gaps; see ``Client.subscribe``."""
        if self._stream is None:
            await self.connect()
        rid = self._conv.send(protocol.Subscribe(skill=skill, session_id=session_id, phase=phase))
        await self._flush()
        check(await self._wait(rid))
        return self._records()

    async def _records(self) -> AsyncIterator[dict[str, Any] | int]:
        assert self._stream is not None
        while True:
            try:
                data = await self._stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
                raise DaemonUnavailable("the daemon closed the subscription") from e
            for item in records(self._conv.framer, data):
                yield item

    async def status(self, held: bool = False) -> dict[str, Any]:
        """The daemon's status (DaemonUnavailable when it is not running).

        ``held``: also ``held_sessions`` and ``held_dirs``, every session the daemon holds (see ``prune``).
        """
        if self.spooling and not await self._revive():
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        reply = await self.request(protocol.StatusRequest(held=held))
        if not isinstance(reply, protocol.Status):
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        return reply.info


__all__ = ["AsyncClient", "AsyncSession"]
