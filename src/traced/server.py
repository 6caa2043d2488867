"""The socket side of the daemon: peer checks, the per-connection loop, dispatch.

Fast path, and why it is shaped this way: each connection reads up to 64 KiB
at a time and frames it itself (anyio's receive_exactly per frame is ~8x
slower). All frames of one read are handled before one ``send`` of all their
replies, and consecutive emits to the same session within a read become one
journal write. Backpressure is natural: while a client does not read its
replies, ``send`` blocks and we stop reading from it.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import SocketAttribute, SocketStream

from traced import __version__, blobs, protocol
from traced.bus import Bus, Subscriber
from traced.config import Config
from traced.errors import RequestError
from traced.framing import Framer, FrameTooLarge, encode
from traced.journal import Journal
from traced.redact import Redactor
from traced.registry import Live, Registry, peer_cwd
from traced.session import Pending
from traced.validate import InvalidEvent, check_outcome, check_payload, check_phase

log = structlog.get_logger("traced.server")

_UCRED = struct.Struct("3i")
READ_SIZE = 65536


@dataclass(slots=True)
class Peer:
    """Who is on the other end, from SO_PEERCRED."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    """Read the peer's credentials of a connected Unix socket."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


@dataclass(slots=True)
class Connection:
    """Per-connection state."""

    peer: Peer
    redactor: Redactor
    client_id: str = ""
    client: str = ""
    cwd: str = ""
    opened: int = 0
    touched: set[Journal] = field(default_factory=set)
    events: int = 0
    from_spool: bool = False
    """Replayed from a spool segment: a closed session is never reopened by it."""
    subscription: tuple[int, Subscriber] | None = None
    """(request id, subscriber) once the connection became a record stream."""


@dataclass(slots=True)
class _Run:
    """Consecutive emits to one session, written with one write(2)."""

    session_id: str = ""
    pending: list[Pending] = field(default_factory=list)
    replies: list[tuple[int, bool, int]] = field(default_factory=list)
    """(request id, wants ack, number of events) in request order."""


class Server:
    """Serves connections; all session changes go through the registry."""

    def __init__(self, config: Config, registry: Registry, redactor: Redactor, bus: Bus | None = None) -> None:
        self.config = config
        self.registry = registry
        self.redactor = redactor
        self.bus = bus or Bus()
        self.uid = os.getuid()
        self.connections = 0
        self.accepting = True
        self.status_extra: Callable[[], dict[str, Any]] = dict
        self.on_hello: Callable[[str], Awaitable[None]] | None = None
        """Runs before ``welcome`` (the spool ingests that client's segments first)."""

    # --- lifecycle of one connection --------------------------------------

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
                await self._send_error(stream, 0, "forbidden", why)
                return
            if self.connections >= self.config.max_connections:
                log.warning("connection_refused", reason="max_connections", peer_pid=peer.pid)
                await self._send_error(stream, 0, "overloaded", f"{self.connections} connections: the limit")
                return
            self.connections += 1
            try:
                await self._loop(stream, Connection(peer=peer, redactor=self.redactor))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass
            except Exception:  # a bug may cost this connection, never the daemon
                log.exception("connection_failed", peer_pid=peer.pid)
            finally:
                self.connections -= 1

    async def _send_error(self, stream: SocketStream, rid: int, code: str, message: str) -> None:
        try:
            await stream.send(bytes(encode(protocol.Error(id=rid, code=code, message=message))))  # type: ignore[arg-type]
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _loop(self, stream: SocketStream, conn: Connection) -> None:
        framer = Framer(self.config.max_frame)
        partial_timeout = self.config.partial_frame_timeout
        while True:
            if framer.buffered:
                with anyio.move_on_after(partial_timeout) as scope:
                    data = await stream.receive(READ_SIZE)
                if scope.cancelled_caught:
                    log.warning("partial_frame_timeout", peer_pid=conn.peer.pid, buffered=framer.buffered)
                    await self._send_error(stream, 0, "bad_frame", f"partial frame stalled for {partial_timeout:g}s")
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
                await self._send_error(stream, 0, "too_large", str(e))
                return
            if not frames:
                continue
            out = bytearray()
            touched: set[Journal] = set()
            await self.process(conn, frames, out, touched)
            if touched and self.config.fsync == "always":
                await self.registry.durable(touched)
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
            self.bus.unsubscribe(sub)

    # --- dispatch -----------------------------------------------------------

    async def process(self, conn: Connection, frames: list[bytes], out: bytearray, touched: set[Journal]) -> None:
        """Handle the frames of one read, appending their replies to ``out``."""
        run = _Run()
        for body in frames:
            try:
                req = protocol.decode_request(body)
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                self._flush(conn, run, out, touched)
                encode(protocol.Error(id=_peek_id(body), code="bad_frame", message=f"bad request: {e}"), out)
                continue
            try:
                if isinstance(req, protocol.Emit):
                    pend, heavy = self._pending(conn, req.phase, req.payload, req.ts, req.seq)
                    if heavy:
                        await self._offload(conn, req.session_id, pend)
                    if req.session_id != run.session_id:
                        self._flush(conn, run, out, touched)
                        run.session_id = req.session_id
                    run.pending.append(pend)
                    run.replies.append((req.id, req.ack, 1))
                elif isinstance(req, protocol.EmitBatch):
                    batch = []
                    for ev in req.events:
                        pend, heavy = self._pending(conn, ev.phase, ev.payload, ev.ts, ev.seq)
                        if heavy:
                            await self._offload(conn, req.session_id, pend)
                        batch.append(pend)
                    if req.session_id != run.session_id:
                        self._flush(conn, run, out, touched)
                        run.session_id = req.session_id
                    run.pending.extend(batch)
                    run.replies.append((req.id, req.ack, len(batch)))
                else:
                    self._flush(conn, run, out, touched)
                    reply = await self._request(conn, req, touched)
                    encode(reply, out)
            except RequestError as e:
                self._flush(conn, run, out, touched)
                encode(protocol.Error(id=req.id, code=e.code, message=e.message), out)  # type: ignore[arg-type]
            except Exception as e:  # a bug must cost one request, not the daemon
                log.exception("request_failed", op=type(req).__name__)
                self._flush(conn, run, out, touched)
                encode(protocol.Error(id=req.id, code="internal", message=f"internal error: {e!r}"), out)
        self._flush(conn, run, out, touched)

    def _pending(self, conn: Connection, phase: str, payload: Any, ts: float, seq: int) -> tuple[Pending, bool]:
        """Validate and redact one event; also say whether it needs file work (spill, attach)."""
        cfg = self.config
        try:
            check_phase(phase)
            longest = check_payload(payload, cfg.max_payload_depth, cfg.max_payload_keys, cfg.max_string)
        except InvalidEvent as e:
            raise RequestError("invalid_event", str(e)) from e
        count = 0
        if cfg.redaction:
            payload, count = conn.redactor.redact(payload)
        heavy = longest > cfg.spill_threshold or (phase == "artifact" and bool(payload.get("attach")))
        return Pending(phase, payload, ts, conn.client_id, seq, count), heavy

    async def _offload(self, conn: Connection, session_id: str, pend: Pending) -> None:
        """Copy an attached artifact and spill large strings, in a worker thread."""
        live = self.registry.live(session_id)
        sdir = live.state.dir
        payload: dict[str, Any] = dict(pend.payload)
        if pend.phase == "artifact" and payload.pop("attach", None):
            source = str(payload.get("path", ""))
            roots = [os.path.expanduser("~"), live.root]
            try:
                stored = await anyio.to_thread.run_sync(
                    blobs.attach, source, sdir, roots, self.config.artifact_max_bytes)
            except blobs.ArtifactRefused as e:
                raise RequestError("forbidden", str(e)) from e
            except OSError as e:
                raise RequestError("io_error", f"cannot copy {source}: {e.strerror}") from e
            payload.update(stored)
        threshold = self.config.spill_threshold
        if blobs.has_large_string(payload, threshold):
            try:
                payload, _ = await anyio.to_thread.run_sync(blobs.spill, payload, sdir, threshold)
            except OSError as e:
                raise RequestError("io_error", f"cannot write a blob: {e.strerror}") from e
        pend.payload = payload

    def _flush(self, conn: Connection, run: _Run, out: bytearray, touched: set[Journal]) -> None:
        """Write the pending run with one write(2) and encode its acks/errors."""
        if not run.pending:
            run.replies.clear()
            return
        pending, replies, sid = run.pending, run.replies, run.session_id
        run.pending, run.replies, run.session_id = [], [], ""
        try:
            live = self.registry.live(sid)
            steps, error = self.registry.append(live, pending)
        except RequestError as e:
            for rid, _ack, _n in replies:
                encode(protocol.Error(id=rid, code=e.code, message=e.message), out)  # type: ignore[arg-type]
            return
        touched.add(live.journal)
        conn.touched.add(live.journal)
        conn.events += len(pending)
        i = 0
        for rid, ack, n in replies:
            chunk = steps[i : i + n]
            i += n
            if any(s is None for s in chunk):
                why = error.strerror if error is not None else "not written"
                encode(protocol.Error(id=rid, code="io_error", message=f"write failed: {why}"), out)
            elif ack:
                encode(protocol.Ack(id=rid, step=chunk[-1] or 0), out)

    async def _request(self, conn: Connection, req: protocol.Request, touched: set[Journal]) -> msgspec.Struct:
        if isinstance(req, protocol.Hello):
            conn.client_id = req.client_id
            conn.client = req.client
            conn.cwd = req.cwd
            if req.secrets and self.config.redaction:
                conn.redactor = self.redactor.with_values(req.secrets)
            if self.on_hello is not None and req.client_id:
                await self.on_hello(req.client_id)
            return protocol.Welcome(id=req.id, server=f"traced {__version__}", pid=os.getpid(),
                                    max_frame=self.config.max_frame)
        if isinstance(req, protocol.Open):
            return self._open(conn, req)
        if isinstance(req, protocol.Close):
            try:
                check_outcome(req.outcome)
            except InvalidEvent as e:
                raise RequestError("invalid_event", str(e)) from e
            summary = req.summary
            if summary is not None and self.config.redaction:
                summary, _ = conn.redactor.redact_text(summary)
            live = await self.end_session(req.session_id, req.outcome, summary, None, req.ts)
            return protocol.Closed(id=req.id, meta=msgspec.to_builtins(live.state.m))
        if isinstance(req, protocol.Sync):
            if req.fsync or self.config.fsync == "always":
                await self.registry.durable(conn.touched | touched)
            return protocol.Synced(id=req.id)
        if isinstance(req, protocol.StatusRequest):
            return protocol.Status(id=req.id, info=self.status())
        if isinstance(req, protocol.Subscribe):
            sub = self.bus.subscribe(Subscriber(skill=req.skill, session_id=req.session_id, phase=req.phase,
                                                capacity=self.config.subscriber_buffer))
            conn.subscription = (req.id, sub)
            return protocol.Subscribed(id=req.id, buffer=sub.capacity)
        raise RequestError("bad_frame", f"unexpected request {type(req).__name__}")

    def _open(self, conn: Connection, req: protocol.Open) -> protocol.Opened:
        if conn.opened >= self.config.max_sessions_per_connection:
            raise RequestError("overloaded", f"{conn.opened} sessions opened on this connection: the limit")
        owner: int | None
        if req.owner_pid == 0:
            owner = conn.peer.pid
        elif req.owner_pid < 0:
            owner = None
        else:
            owner = req.owner_pid
        cwd = req.cwd or conn.cwd or peer_cwd(conn.peer.pid)
        value = req.input
        if value is not None and self.config.redaction:
            value, _ = conn.redactor.redact(value)
        live, resumed, fallback = self.registry.open(
            skill=req.skill, session_id=req.session_id, target=req.target, cwd=cwd,
            owner_pid=owner, peer_uid=conn.peer.uid, idle_timeout=req.idle_timeout,
            input=value, labels=req.meta, ts=req.ts, reopen_closed=not conn.from_spool,
        )
        conn.opened += 1
        if fallback:
            log.info("target_fallback", session_id=live.state.session_id, reason=fallback)
        return protocol.Opened(
            id=req.id, session_id=live.state.session_id, dir=live.state.dir,
            step=live.state.step, resumed=resumed, root_fallback=fallback,
        )

    async def end_session(self, session_id: str, outcome: str, summary: str | None,
                          reason: str | None, ts: float = 0.0) -> Live:
        """Close a session: end record now, then fsync + meta.json in a worker thread.

        The one path for clients' ``close`` and for the watchers' finalize.
        """
        live = self.registry.close(session_id, outcome, summary, reason, ts)
        try:
            await anyio.to_thread.run_sync(self.registry.finish, live)
        except OSError as e:
            log.error("meta_write_failed", session_id=session_id, error=e.strerror)
            raise RequestError("io_error", f"end written, meta.json failed: {e.strerror}") from e
        log.info("session_closed", session_id=session_id, skill=live.state.skill,
                 outcome=outcome, reason=reason, steps=live.state.step)
        return live

    def status(self) -> dict[str, Any]:
        """The daemon's status for ``traced status``."""
        reg = self.registry
        st = reg.stats
        now = time.monotonic()
        open_sessions = sorted(reg.sessions.values(), key=lambda lv: lv.state.last_activity, reverse=True)
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.time() - st.started, 3),
            "root": str(reg.root),
            "roots": sorted(reg.roots),
            "connections": self.connections,
            "open_sessions": len(reg.sessions),
            "sessions": [
                {
                    "skill": lv.state.skill,
                    "session_id": lv.state.session_id,
                    "steps": lv.state.step,
                    "idle_s": round(now - lv.state.last_activity, 3),
                    "owner_pid": lv.state.owner_pid,
                }
                for lv in open_sessions[:10]
            ],
            "events_written": st.events_written,
            "events_per_s_1m": round(st.rate(), 3),
            "bytes_written": st.bytes_written,
            "redactions": st.redactions,
            "write_errors": st.write_errors,
            "sessions_opened": st.sessions_opened,
            "sessions_closed": st.sessions_closed,
            "finalized": dict(st.finalized),
            "torn_tails_moved": st.torn_tails_moved,
            "fsync": self.config.fsync,
            "open_fds": len(reg.fds),
            **self.bus.status(),
        }
        info.update(self.status_extra())
        return info


def _peek_id(body: bytes) -> int:
    """The ``id`` of an undecodable request, if its map has one."""
    try:
        raw = msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, ValueError):  # untyped decoding raises UnicodeDecodeError too
        return 0
    rid = raw.get("id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
