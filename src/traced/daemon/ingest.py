"""The daemon's side of the spool: ingest sealed segments in order, then remove them.

A segment is replayed through the same ``Server.process`` path as a live
connection, so its events get steps, redaction and idempotency like any
other. It is removed only after its records are written and fdatasynced;
a crash before that replays it, and the idempotency keys drop what was
already written. A segment whose records could not be made durable (a trace
deleted under its session, a failed fdatasync) stays for the next pass.
Segments run on start (before READY), when their client says hello again
(so its live events land after its spooled ones), and when watchfiles sees
a new one.
"""

from __future__ import annotations

import os
import stat
from functools import partial
from pathlib import Path

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from watchfiles import Change

from traced.daemon import fswatch
from traced.daemon.handler import Connection, Handler, Peer
from traced.daemon.registry import Live
from traced.errors import FrameTooLarge
from traced.format import layout, spool
from traced.wire import protocol
from traced.wire.framing import Framer

log = structlog.get_logger("traced.daemon.ingest")


class SpoolIngest:
    """Replays spool segments into the registry."""

    def __init__(self, handler: Handler, directory: Path) -> None:
        self.handler = handler
        self.dir = directory
        self.lock = anyio.Lock()
        """Held for a whole pass; watchers take it too, so a spooled session is never
        finalized between two of its segments (its writer has often exited already)."""
        self.segments = 0
        self.events = 0
        self.rejected = 0

    def backlog(self) -> dict[str, int]:
        """Segments and bytes waiting, for ``traced status``."""
        count, size = spool.backlog(self.dir)
        return {"spool_backlog": count, "spool_backlog_bytes": size,
                "spool_ingested_segments": self.segments, "spool_rejected": self.rejected}

    async def ingest_all(self) -> None:
        """Ingest every sealed segment, oldest client first."""
        async with self.lock:
            for path in spool.segments(self.dir):
                await self._ingest(path)

    async def ingest_client(self, client_id: str) -> None:
        """Ingest one client's segments (called when it says hello again)."""
        if client_id and "/" not in client_id:
            async with self.lock:
                for path in spool.segments(self.dir, client_id + "-"):
                    await self._ingest(path)

    def _reject(self, path: Path, why: str) -> None:
        self.rejected += 1
        log.error("spool_segment_rejected", segment=path.name, reason=why)
        bad = self.dir / "rejected"
        try:
            layout.ensure_private_dir(bad)
            os.rename(path, bad / path.name)
        except OSError:
            pass

    async def _ingest(self, path: Path) -> None:
        """Replay one segment, then remove it (the caller holds ``lock``)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # another pass took it
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            self._reject(path, "not a regular file of the daemon's uid")
            return
        data = path.read_bytes()
        framer = Framer(max(self.handler.config.max_frame, 64 * 1024 * 1024))
        try:
            frames = framer.feed(data)
        except FrameTooLarge as e:
            self._reject(path, str(e))
            return
        if framer.buffered:
            log.warning("spool_segment_torn", segment=path.name, bytes=framer.buffered)
        try:
            hello = protocol.decode_request(frames[0]) if frames else None
        except (msgspec.ValidationError, msgspec.DecodeError):
            hello = None
        if not isinstance(hello, protocol.Hello):
            self._reject(path, "does not start with hello")
            return
        conn = Connection(peer=Peer(hello.pid, st.st_uid, st.st_gid), redactor=self.handler.redactor,
                          client_id=hello.client_id, client=hello.client, cwd=hello.cwd,
                          from_spool=True)
        out = bytearray()
        touched: set[Live] = set()
        await self.handler.process(conn, frames[1:], out, touched)
        if touched:
            try:
                await self.handler.registry.durable(touched)
            except OSError as e:  # a trace deleted under its session, a failed fdatasync: the next pass
                log.error("spool_segment_not_durable", segment=path.name, error=e.strerror,  # replays it
                          filename=e.filename)  # (idempotent: what is durable is not written twice)
                return
        errors = [r for r in _replies(out) if isinstance(r, protocol.Error)]
        for err in errors[:5]:
            log.warning("spool_event_refused", segment=path.name, code=err.code, message=err.message)
        os.unlink(path)
        self.segments += 1
        self.events += conn.events
        log.info("spool_segment_ingested", segment=path.name, frames=len(frames) - 1,
                 events=conn.events, errors=len(errors))

    async def watch(self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Ingest new segments as they are sealed, until ``stop`` is set; started once armed.

        A pass over the directory follows the arming, so a segment sealed just
        before it is not missed either.
        """
        layout.ensure_private_dir(self.dir)

        async def changed(_changes: fswatch.Changes) -> None:
            await self.ingest_all()

        async with anyio.create_task_group() as tg:
            await tg.start(partial(fswatch.watch, [self.dir], changed, stop=stop, keep=_sealed_segment,
                                   debounce_ms=50, step_ms=20))
            await self.ingest_all()
            task_status.started()


def _sealed_segment(change: Change, path: str) -> bool:
    name = os.path.basename(path)
    return name.endswith(spool.SUFFIX) and not name.startswith(".") and change != Change.deleted


def _replies(out: bytearray) -> list[protocol.Reply]:
    try:
        return [protocol.decode_reply(b) for b in Framer(len(out) + 8).feed(bytes(out))]
    except (msgspec.ValidationError, msgspec.DecodeError, FrameTooLarge):
        return []
