"""The socket side of the daemon: accept, peer credentials, reads, backpressure, subscriptions.

Fast path, and why it is shaped this way: each connection reads up to 64 KiB
at a time and frames it itself (anyio's receive_exactly per frame is ~8x
slower). All frames of one read go to the handler before one ``send`` of all
their replies. Backpressure is natural: while a client does not read its
replies, ``send`` blocks and we stop reading from it.
"""

from __future__ import annotations

import os
import socket
import struct

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


def peer_of(sock: socket.socket) -> Peer:
    """The peer's credentials of a connected Unix socket (SO_PEERCRED). Raises OSError."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


class Transport:
    """Serves connections: the peer check, the read loop, subscriptions."""

    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self.uid = os.getuid()
        self.connections = 0

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
            if self.connections >= self.config.max_connections:
                log.warning("connection_refused", reason="max_connections", peer_pid=peer.pid)
                await self._send_error(stream, "overloaded", f"{self.connections} connections: the limit")
                return
            self.connections += 1
            try:
                await self._loop(stream, Connection(peer=peer, redactor=self.handler.redactor))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass
            except Exception:  # a bug may cost this connection, never the daemon
                log.exception("connection_failed", peer_pid=peer.pid)
            finally:
                self.connections -= 1

    async def _send_error(self, stream: SocketStream, code: str, message: str) -> None:
        """A connection-level error (id 0) before the connection closes."""
        try:
            await stream.send(bytes(encode(protocol.Error(id=0, code=code, message=message))))  # type: ignore[arg-type]
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _loop(self, stream: SocketStream, conn: Connection) -> None:
        framer = Framer(self.config.max_frame)
        partial_timeout = self.config.partial_frame_timeout
        handler = self.handler
        while True:
            if framer.buffered:
                with anyio.move_on_after(partial_timeout) as scope:
                    data = await stream.receive(READ_SIZE)
                if scope.cancelled_caught:
                    log.warning("partial_frame_timeout", peer_pid=conn.peer.pid, buffered=framer.buffered)
                    await self._send_error(stream, "bad_frame", f"partial frame stalled for {partial_timeout:g}s")
                    return
            else:
                try:
                    data = await stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    return
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
