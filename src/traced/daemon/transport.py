"""The socket side of the daemon: accept, peer credentials, reads, backpressure, subscriptions.

Why it is shaped this way: each connection is an ``asyncio.Protocol`` on the
running loop (uvloop or asyncio), served from the listener's socket with
``loop.create_unix_server``. Per read there is no task switch, no cancel scope
and no add_reader/remove_reader (what anyio's streams cost per request, issue
#19): ``data_received`` frames the bytes (``Framer``), lets the handler answer
the leading frames that need no ``await`` (``Handler.process_now``) and sends
their replies with one ``write``. Under ``fsync = "always"`` those replies wait for
the sync round that covers their records (``Registry.when_durable``, a callback:
no task per acked event), and the frames read meanwhile queue behind them.

The rest go to the connection's *lane*: one task per connection, started the
first time it is needed, that runs ``Handler.process`` on up to ``LANE_BATCH`` frames
(and, under ``fsync = "always"``, waits for the records to be durable) before it writes.
Replies keep request order: while the lane has work, every new frame queues behind it.

Backpressure: reading pauses while the lane holds more than ``LANE_BYTES``, and
while the transport's write buffer is over its high-water mark (a client that
does not read its replies). Either way the daemon buffers a bounded amount per
connection and the other connections go on. Timeouts (a silent connection, a
stalled partial frame) are checked by one sweeper for all connections, not
armed per read.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import time
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, TaskGroup

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
IDLE_REAP_AFTER = 1.0
"""A connection silent this long (seconds) may be closed to admit a newcomer when the daemon is full."""
LANE_BYTES = 256 * 1024
"""Bytes of frames queued for a connection's lane beyond which its reading pauses."""
LANE_BATCH = 256
"""Frames the lane hands to ``Handler.process`` at a time: the replies of one batch are all the
daemon holds for a connection before it looks at the client's reading again (a status is ~1 KB)."""
BACKLOG = 4096
"""listen(2) backlog of the served socket (the kernel caps it at ``net.core.somaxconn``)."""
CLOSE_GRACE = 5.0
"""Seconds a closing connection may take to flush its last bytes before it is aborted."""


def peer_of(sock: Any) -> Peer:
    """The peer's credentials of a connected Unix socket (SO_PEERCRED). Raises OSError."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


class Transport:
    """Serves connections: the peer check, the fast path and the lanes, timeouts, subscriptions.

    Room for newcomers: a connection silent for ``connection_idle_timeout`` is
    closed, and when ``max_connections`` are in use the one silent longest (for
    ``IDLE_REAP_AFTER`` seconds at least) makes room. Our clients reconnect on
    their own and resend what was not acknowledged.
    """

    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self.uid = os.getuid()
        self.conns: dict[_Conn, None] = {}
        """Connections being served (insertion-ordered set)."""
        self.reaped = 0
        self.tg: TaskGroup | None = None

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self.conns)

    def _make_room(self) -> bool:
        """Close the longest-silent connection to admit a new one; whether there is room."""
        if len(self.conns) < self.config.max_connections:
            return True
        self._drop_hung_up()
        if len(self.conns) < self.config.max_connections:
            return True
        now = time.monotonic()
        idle = [(c.last, n, c) for n, c in enumerate(self.conns) if c.reapable() and now - c.last >= IDLE_REAP_AFTER]
        if not idle:
            return False
        last, _n, victim = min(idle)
        self._reap(victim, "make_room", now - last)
        return True

    def _drop_hung_up(self) -> None:
        """Forget connections whose peer has closed but whose hang-up the loop has not read yet
        (one poll(2) over all of them; only when the daemon is full)."""
        poller = select.poll()
        by_fd = {}
        for conn in self.conns:
            if conn.fd >= 0 and not conn.busy:
                poller.register(conn.fd, select.POLLHUP)
                by_fd[conn.fd] = conn
        for fd, events in poller.poll(0):
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):  # gone both ways: nobody to answer
                by_fd[fd].abort()

    def _reap(self, conn: _Conn, reason: str, idle_s: float) -> None:
        self.conns.pop(conn, None)
        self.reaped += 1
        log.info("connection_reaped", reason=reason, peer_pid=conn.conn.peer.pid if conn.conn else 0,
                 idle_s=round(idle_s, 3))
        conn.abort()

    async def accept(self, listener: SocketListener, scope: anyio.CancelScope) -> None:
        """Serve connections on ``listener``'s socket until ``scope`` is cancelled.

        The loop's server gets a duplicate of the socket, so closing the listener
        and closing the server each close their own descriptor.
        """
        sock: socket.socket = listener.extra(SocketAttribute.raw_socket).dup()
        loop = asyncio.get_running_loop()
        with scope:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                try:
                    server = await loop.create_unix_server(lambda: _Conn(self), sock=sock, backlog=BACKLOG)
                except BaseException:
                    sock.close()
                    raise
                try:
                    tg.start_soon(self._sweep)
                    await anyio.sleep_forever()
                finally:
                    self.tg = None
                    server.close()
                    for conn in list(self.conns):
                        conn.close()
                    self.conns.clear()

    async def _sweep(self) -> None:
        """Close connections silent for ``connection_idle_timeout`` and those stalled mid-frame."""
        while True:
            cfg = self.config
            limits = [t for t in (cfg.partial_frame_timeout, cfg.connection_idle_timeout) if t > 0]
            await anyio.sleep(min(1.0, max(0.02, min(limits) / 5)) if limits else 1.0)
            now = time.monotonic()
            partial, idle_limit = cfg.partial_frame_timeout, cfg.connection_idle_timeout
            for conn in list(self.conns):
                if not conn.reapable():
                    continue
                silent = now - conn.last
                if conn.framer.buffered and not conn.reading_paused:
                    if silent >= partial:
                        log.warning("partial_frame_timeout", peer_pid=conn.conn.peer.pid if conn.conn else 0,
                                    buffered=conn.framer.buffered)
                        self.conns.pop(conn, None)
                        conn.fail("bad_frame", f"partial frame stalled for {partial:g}s")
                elif idle_limit > 0 and silent >= idle_limit:  # silent too long (or half-open): the client reconnects
                    self._reap(conn, "idle", idle_limit)


class _Conn(asyncio.Protocol):
    """One connection: its framer, its lane of frames that need an ``await``, its flow control."""

    def __init__(self, server: Transport) -> None:
        self.server = server
        self.handler = server.handler
        self.config = server.config
        self.framer = Framer(server.config.max_frame)
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.conn: Connection | None = None
        self.last = time.monotonic()
        self.closed = False
        self.eof = False
        self.queue: list[bytes] = []
        self.queued = 0
        self.busy = False
        """The lane has work (frames, or a write it has not finished), or the fast path's replies wait
        for durability."""
        self.working = False
        """Inside the handler or waiting for durability (not waiting for the client)."""
        self.lane_started = False
        self.wake: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.write_paused = False
        self.reading_paused = False
        self.streaming = False
        self.scope: anyio.CancelScope | None = None
        """The record stream's (the lane's work is never cancelled half-way)."""

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]
        server = self.server
        try:
            sock = t.get_extra_info("socket")
            peer = peer_of(sock)
            self.fd = sock.fileno()
        except OSError:
            self.abort()
            return
        if peer.uid != server.uid and not (peer.uid == 0 and self.config.allow_root):
            log.warning("peer_refused", peer_uid=peer.uid, peer_pid=peer.pid)
            self.fail("forbidden", f"uid {peer.uid} may not connect to the daemon of uid {server.uid}")
            return
        if not server._make_room():
            log.warning("connection_refused", reason="max_connections", peer_pid=peer.pid)
            self.fail("overloaded", f"{server.connections} connections: the limit")
            return
        self.conn = Connection(peer=peer, redactor=self.handler.redactor)
        server.conns[self] = None

    def data_received(self, data: bytes) -> None:
        if self.closed or self.streaming or self.conn is None:
            return  # a record stream's input is ignored; so is anything after we closed
        self.last = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except FrameTooLarge as e:
            log.warning("frame_too_large", peer_pid=self.conn.peer.pid, size=e.size, limit=e.limit)
            self.server.conns.pop(self, None)
            self.fail("too_large", str(e))
            return
        if not frames:
            return
        if self.busy:  # replies go out in request order: behind the lane's work
            self.queue += frames
            self.queued += sum(map(len, frames))
            if self.queued > LANE_BYTES:
                self._flow()
            return
        out = bytearray()
        touched: set[Live] = set()
        try:
            n = self.handler.process_now(self.conn, frames, out, touched)
        except Exception:  # a bug may cost this connection, never the daemon
            log.exception("connection_failed", peer_pid=self.conn.peer.pid)
            self.abort()
            return
        if touched and self.config.fsync == "always":  # the replies go out once the records are durable
            self.queue = frames[n:]
            self.queued = sum(map(len, self.queue))
            self.busy = self.working = True
            if not self.handler.registry.when_durable(touched, partial(self._durable, out)):
                return
            self._durable(out, None)
            return
        if out:
            self._write(out)
        if n >= len(frames):
            if self.conn.subscription is not None:
                self.streaming = True
                self._start_lane()  # the lane becomes the record stream
            return
        self.queue = frames[n:]
        self.queued = sum(map(len, self.queue))
        self.busy = True
        self._start_lane()

    def _durable(self, out: bytearray, error: OSError | None) -> None:
        """(on the loop) The records the fast path wrote are durable (``error`` None): send its
        replies, then let the lane take the frames queued meanwhile."""
        self.working = False
        if self.closed:
            return
        if error is not None:
            self._durable_failed(error)
            return
        self.last = time.monotonic()
        if out:
            self._write(out)
        if self.queue:
            self._start_lane()
            return
        self.busy = False
        if self.eof:
            self.close()

    def eof_received(self) -> bool:
        self.eof = True  # nothing more will be answered once the lane's work is done
        return self.busy and not self.streaming  # True: stay half-open until the lane has written

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow()
        self._resolve("drained")

    # ---------------------------------------------------------------- helpers

    def reapable(self) -> bool:
        """Whether a timeout or a newcomer may close it: not a record stream, not inside the handler."""
        return not (self.streaming or self.working or self.closed)

    def _flow(self) -> None:
        """Pause reading while the client does not read or the lane is full; resume once neither holds."""
        t = self.transport
        if t is None or self.closed:
            return
        want = self.write_paused or self.queued > LANE_BYTES
        if want and not self.reading_paused:
            self.reading_paused = True
            t.pause_reading()
        elif not want and self.reading_paused:
            self.reading_paused = False
            self.last = time.monotonic()  # silence while paused was ours, not the client's
            t.resume_reading()

    def _resolve(self, name: str) -> None:
        fut: asyncio.Future[None] | None = getattr(self, name)
        if fut is not None:
            setattr(self, name, None)
            if not fut.done():
                fut.set_result(None)

    def _write(self, data: bytes | bytearray) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(bytes(data))

    def _durable_failed(self, e: OSError) -> None:
        """No ack may claim durability: none is sent, the connection is closed, and the client resends."""
        log.error("durable_ack_failed", peer_pid=self.conn.peer.pid if self.conn else 0, error=e.strerror,
                  filename=e.filename)
        self.abort()

    def fail(self, code: str, message: str) -> None:
        """A connection-level error (id 0), then close."""
        self._write(encode(protocol.Error(id=0, code=code, message=message)))  # type: ignore[arg-type]
        self.close()

    def close(self) -> None:
        """Close after the buffered bytes are sent (aborted if the client does not take them soon)."""
        t = self.transport
        if t is None or self.closed:
            return
        self._closing()
        t.close()
        if t.get_write_buffer_size():
            asyncio.get_running_loop().call_later(CLOSE_GRACE, t.abort)

    def abort(self) -> None:
        """Close now, dropping what is buffered."""
        t = self.transport
        self._closing()
        if t is not None:
            t.abort()

    def _closing(self) -> None:
        """No more work for it: the lane stops after what it is doing (never mid-request), a stream at once."""
        self.closed = True
        self.server.conns.pop(self, None)
        if self.scope is not None:
            self.scope.cancel()
        self._resolve("wake")
        self._resolve("drained")

    # ---------------------------------------------------------------- the lane

    def _start_lane(self) -> None:
        if self.lane_started:
            self._resolve("wake")
            return
        tg = self.server.tg
        if tg is None:  # shutting down
            self.abort()
            return
        self.lane_started = True
        tg.start_soon(self._lane)

    async def _lane(self) -> None:
        conn = self.conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        try:
            while not self.closed:
                if conn.subscription is not None:
                    with anyio.CancelScope() as self.scope:
                        await self._stream_records(*conn.subscription)
                    return
                if self.busy:
                    await self._drain_lane(conn)
                else:
                    self.wake = loop.create_future()
                    await self.wake
        except Exception:  # a bug may cost this connection, never the daemon
            log.exception("connection_failed", peer_pid=conn.peer.pid)
            self.abort()
        finally:
            self.working = False
            if conn.subscription is not None:
                self.handler.bus.unsubscribe(conn.subscription[1])

    async def _drain_lane(self, conn: Connection) -> None:
        """Handle what is queued, in order, writing each batch's replies; then the lane is idle."""
        handler = self.handler
        while self.queue:
            if self.write_paused:  # the client is not reading: take no more until it does
                self.drained = asyncio.get_running_loop().create_future()
                await self.drained
                if self.closed:
                    return
                continue
            out: bytearray = bytearray()
            touched: set[Live] = set()
            frames, self.queue = self.queue[:LANE_BATCH], self.queue[LANE_BATCH:]
            self.queued = self.queued - sum(map(len, frames)) if self.queue else 0
            self._flow()
            self.working = True
            if frames:
                await handler.process(conn, frames, out, touched)
            if touched and self.config.fsync == "always":
                try:
                    await handler.registry.durable(touched)
                except OSError as e:
                    self._durable_failed(e)
                    return
            self.working = False
            self.last = time.monotonic()
            if self.closed:
                return
            if out:
                self._write(out)
            if conn.subscription is not None:  # a record stream from now on; later input is ignored
                self.streaming = True
                self.queue, self.queued = [], 0
                self._flow()
                break
        self.busy = False
        if self.eof and not self.streaming:
            self.close()

    async def _stream_records(self, rid: int, sub: Subscriber) -> None:
        """Send records as they land until the subscriber hangs up; its input is ignored."""
        self.streaming = True
        self.busy = False
        if self.eof:
            self.close()
            return
        loop = asyncio.get_running_loop()
        while not self.closed:
            if self.write_paused:  # a slow reader: the bus drops for it and sends a gap later
                self.drained = loop.create_future()
                await self.drained
                continue
            await sub.wake.wait()
            out = bytearray()
            for item in sub.take():
                if isinstance(item, int):
                    encode(protocol.Gap(id=rid, dropped=item), out)
                else:
                    encode(protocol.RecordMsg(id=rid, line=item.decode()), out)
            self._write(out)
