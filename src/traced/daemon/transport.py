"""The socket side of the daemon: accept, peer credentials, reads, backpressure, subscriptions.

Fast path, and why it is shaped this way: each connection reads up to 64 KiB
at a time and frames it itself (anyio's receive_exactly per frame is ~8x
slower). All frames of one read go to the handler before one ``send`` of all
their replies. Backpressure is natural: while a client does not read its
replies, ``send`` blocks and we stop reading from it.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from traced.daemon.bus import Subscriber
from traced.daemon.config import Config
from traced.daemon.handler import Connection, Handler, Peer
from traced.daemon.registry import Live
from traced.errors import FrameTooLarge
from traced.wire import protocol
from traced.wire.framing import Framer
from traced.wire.protocol import encode

log = structlog.get_logger("traced.daemon.transport")

_UCRED = struct.Struct("3i")
READ_SIZE = 65536
IDLE_REAP_AFTER = 1.0
"""A connection silent this long (seconds) may be closed to admit a newcomer when the daemon is full."""


def peer_of(sock: socket.socket) -> Peer:
    """The peer's credentials of a connected Unix socket (SO_PEERCRED). Raises OSError."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


class _Slot:
    """A served connection: when it last sent something, and how to end it."""

    __slots__ = ("last", "scope", "streaming")

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.last = time.monotonic()
        self.scope = scope
        self.streaming = False


class Transport:
    """Serves connections: the peer check, the read loop, subscriptions.

    Room for newcomers: a connection silent for ``connection_idle_timeout`` is
    closed, and when ``max_connections`` are in use the one silent longest (for
    ``IDLE_REAP_AFTER`` seconds at least) makes room. Our clients reconnect on
    their own and resend what was not acknowledged.
    """

    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self.uid = os.getuid()
        self.slots: dict[int, _Slot] = {}
        self.reaped = 0

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self.slots)

    def _make_room(self) -> bool:
        """Close the longest-silent connection to admit a new one; whether there is room."""
        if len(self.slots) < self.config.max_connections:
            return True
        now = time.monotonic()
        idle = [(slot.last, key) for key, slot in self.slots.items()
                if not slot.streaming and now - slot.last >= IDLE_REAP_AFTER]
        if not idle:
            return False
        _last, key = min(idle)
        self.slots.pop(key).scope.cancel()
        self.reaped += 1
        log.info("connection_reaped", reason="make_room", idle_s=round(now - _last, 3))
        return True

    async def accept(self, listener: SocketListener, scope: anyio.CancelScope) -> None:
        """Accept connections until ``scope`` is cancelled or the listener closes."""
        with scope:
            async with anyio.create_task_group() as conns:
                while True:
                    try:
                        stream = await listener.accept()
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                    except OSError as e:  # EMFILE and friends: back off, keep serving
                        log.error("accept_failed", error=str(e))
                        await anyio.sleep(0.1)
                        continue
                    conns.start_soon(self.handle, stream)

    async def handle(self, stream: SocketStream) -> None:
        """Serve one connection until it closes or breaks a frame rule."""
        async with stream:
            try:
                peer = peer_of(stream.extra(SocketAttribute.raw_socket))
            except OSError:
                return
            if peer.uid != self.uid and not (peer.uid == 0 and self.config.allow_root):
                log.warning("peer_refused", peer_uid=peer.uid, peer_pid=peer.pid)
                why = f"uid {peer.uid} may not connect to the daemon of uid {self.uid}"
                await self._send_error(stream, "forbidden", why)
                return
            if not self._make_room():
                log.warning("connection_refused", reason="max_connections", peer_pid=peer.pid)
                await self._send_error(stream, "overloaded", f"{self.connections} connections: the limit")
                return
            key = id(stream)
            with anyio.CancelScope() as scope:
                slot = self.slots[key] = _Slot(scope)
                try:
                    await self._loop(stream, Connection(peer=peer, redactor=self.handler.redactor), slot)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                    pass
                except Exception:  # a bug may cost this connection, never the daemon
                    log.exception("connection_failed", peer_pid=peer.pid)
                finally:
                    self.slots.pop(key, None)

    async def _send_error(self, stream: SocketStream, code: str, message: str) -> None:
        """A connection-level error (id 0) before the connection closes."""
        try:
            await stream.send(bytes(encode(protocol.Error(id=0, code=code, message=message))))  # type: ignore[arg-type]
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _loop(self, stream: SocketStream, conn: Connection, slot: _Slot) -> None:
        framer = Framer(self.config.max_frame)
        partial_timeout = self.config.partial_frame_timeout
        handler = self.handler
        while True:
            if framer.buffered:
                with anyio.move_on_after(partial_timeout) as scope:
                    try:
                        data = await stream.receive(READ_SIZE)
                    except anyio.EndOfStream:  # gone mid-frame: nothing to answer
                        return
                if scope.cancelled_caught:
                    log.warning("partial_frame_timeout", peer_pid=conn.peer.pid, buffered=framer.buffered)
                    await self._send_error(stream, "bad_frame", f"partial frame stalled for {partial_timeout:g}s")
                    return
            else:
                idle_limit = self.config.connection_idle_timeout
                with anyio.move_on_after(idle_limit if idle_limit > 0 else math.inf) as scope:
                    try:
                        data = await stream.receive(READ_SIZE)
                    except anyio.EndOfStream:
                        return
                if scope.cancelled_caught:  # silent too long (or half-open): make room, the client reconnects
                    self.reaped += 1
                    log.info("connection_reaped", reason="idle", peer_pid=conn.peer.pid, idle_s=idle_limit)
                    return
            slot.last = time.monotonic()
            try:
                frames = framer.feed(data)
            except FrameTooLarge as e:
                log.warning("frame_too_large", peer_pid=conn.peer.pid, size=e.size, limit=e.limit)
                await self._send_error(stream, "too_large", str(e))
                return
            if not frames:
                continue
            out = bytearray()
            touched: set[Live] = set()
            await handler.process(conn, frames, out, touched)
            if touched and self.config.fsync == "always":
                await handler.registry.durable(touched)
            if out:
                await stream.send(bytes(out))
            if conn.subscription is not None:
                slot.streaming = True
                await self._stream_records(stream, *conn.subscription)
                return

    async def _stream_records(self, stream: SocketStream, rid: int, sub: Subscriber) -> None:
        """Send records as they land until the subscriber hangs up; its input is ignored."""

        async def until_eof(scope: anyio.CancelScope) -> None:
            try:
                while await stream.receive(READ_SIZE):
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(until_eof, tg.cancel_scope)
                while True:
                    await sub.wake.wait()
                    out = bytearray()
                    for item in sub.take():
                        if isinstance(item, int):
                            encode(protocol.Gap(id=rid, dropped=item), out)
                        else:
                            encode(protocol.RecordMsg(id=rid, line=item.decode()), out)
                    await stream.send(bytes(out))
        finally:
            self.handler.bus.unsubscribe(sub)
