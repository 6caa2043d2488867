"""The daemon-wide write-ahead log of ``fsync = "always"`` and ``"batch"``: one fdatasync covers every session.

``<state>/wal/<seq>.log``, seq a 16-digit decimal, holds frames: a 12-byte header
(``>III``: magic ``TWL2``'s u32, payload length in bytes, CRC-32 of the payload), then
the payload: the session dir (UTF-8), ``\\0``, the trace's identity (``journal.trace_ident``:
8 hex digits, the CRC-32 of its first line), ``\\0``, then whole trace lines as written.
A *reset* frame has an empty identity and no lines: the trace at that session dir was
created again (``WriteAheadLog.reset``), so no line logged for that dir before it may go
back into it. Frames of the first format (magic ``TWAL``: no identity) are still read.

Write order, and why: a line goes to its trace first (``write(2)``, page cache: it
survives a ``kill -9`` of the daemon), then, in the next sync round, to the log,
whose one fdatasync makes every line of the round durable before any ack. So a
``kill -9`` at any moment leaves every written line in its trace; a power cut
may lose trace lines still in the page cache, and the log has every acked one.

A checkpoint (the log past ``wal_checkpoint_bytes``) starts a new segment,
fdatasyncs every trace the old one covered, then deletes the old one. Lines
written meanwhile are logged in the new segment by the next round: a trace
write always comes before its own log write.

On start, before READY, ``replay`` appends to each trace the logged lines whose
step is past the trace's last complete step (a torn tail is moved aside first,
as always), in log order: gap-free, and exactly once, since a line whose step
is already there is skipped. A torn last frame (a crash inside the log's own
write, never acked) ends a segment's replay; an entry for a session dir that
is gone is skipped and logged, and so is one whose identity is not the trace's
now: lines of an earlier trace at that path (deleted, and its session id used
again), which must not come back into the new one. The identity alone cannot tell two
traces apart whose start records are byte-identical (a client that gives the same ``open``
``ts`` twice); the reset frame written before the second one's start record does.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import structlog

from traced.daemon.journal import scan, trace_ident
from traced.format import layout
from traced.format.layout import FILE_MODE, TRACE
from traced.format.records import record_decoder

__all__ = ["Replayed", "WriteAheadLog", "replay"]

log = structlog.get_logger("traced.daemon.wal")

HEADER: Final = struct.Struct(">III")
MAGIC: Final = int.from_bytes(b"TWL2", "big")
MAGIC_V1: Final = int.from_bytes(b"TWAL", "big")
"""Frames with no trace identity (a log written before it was added): replayed by step alone."""
SUFFIX: Final = ".log"


def frame(session_dir: str, ident: str, lines: bytes | bytearray | memoryview) -> bytes:
    """One log frame: header, then ``session_dir`` NUL ``ident`` NUL ``lines`` (``ident`` "" and no
    ``lines``: a reset frame)."""
    payload = session_dir.encode() + b"\0" + ident.encode() + b"\0" + bytes(lines)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes) -> tuple[list[tuple[str, str | None, bytes]], int]:
    """Parse a segment: (entries (session dir, trace identity or None for a first-format frame,
    lines), bytes of torn or invalid tail left over)."""
    out: list[tuple[str, str | None, bytes]] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        magic, size, crc = HEADER.unpack_from(data, pos)
        payload = data[pos + HEADER.size: pos + HEADER.size + size]
        if magic not in (MAGIC, MAGIC_V1) or len(payload) != size or zlib.crc32(payload) != crc:
            break
        sdir, sep, rest = payload.partition(b"\0")
        ident: str | None = None
        if sep and magic == MAGIC:
            raw, sep, rest = rest.partition(b"\0")
            ident = raw.decode("ascii", "replace")
        if not sep:
            break
        out.append((sdir.decode(errors="surrogateescape"), ident, rest))
        pos += HEADER.size + size
    return out, len(data) - pos


def _segments(directory: Path) -> list[Path]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if n.endswith(SUFFIX) and n[: -len(SUFFIX)].isdigit())


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """The log's writer (its methods block: the sync round's worker thread calls them)."""

    def __init__(self, directory: Path, checkpoint_bytes: int) -> None:
        self.dir = directory
        self.checkpoint_bytes = checkpoint_bytes
        self._fd = -1
        self._seq = 0
        self._first = 0
        """This daemon's first segment: older ones (a replay that failed) stay for the next start."""
        self._path: Path | None = None
        self.size = 0
        """Bytes in the current segment."""
        self.covered: set[str] = set()
        """Traces (paths) with lines in the current segment: a checkpoint fdatasyncs them."""
        self._retiring: set[str] = set()
        """Traces with lines in the segments a running checkpoint has yet to delete."""
        self.held: set[str] = set()
        """Traces with lines in segments a failed replay left (``Replayed.held``): the next start replays them."""
        self._checkpointing = threading.Lock()
        """One checkpoint at a time (a round's, and one an open asked for): each deletes the segments it synced."""
        self._lock = threading.Lock()
        """Held while a frame is written and synced and while segments change: ``reset`` runs on the
        event loop, everything else on the sync round's worker thread."""
        self.checkpoints = 0
        self.resets = 0
        """Reset frames written (a trace created again where the log held an earlier one's lines)."""
        self.map: Callable[[Callable[[str], None], Iterable[str]], Iterator[None]] = map
        """How a checkpoint runs its fdatasyncs: ``map`` one after another, or a thread pool's
        ``map`` (``GroupCommit`` sets it: 3,000 traces took 0.14-0.19 s from 64 threads, 0.5-3.5 s alone)."""

    def _open(self) -> None:
        layout.ensure_private_dir(self.dir)
        existing = _segments(self.dir)
        self._seq = max(self._seq, int(existing[-1].name[: -len(SUFFIX)]) if existing else 0) + 1
        if not self._first:
            self._first = self._seq
        self._path = self.dir / f"{self._seq:016d}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        _sync_dir(self.dir)  # the segment's name must outlive a power cut as much as its bytes
        self.size = 0

    def append_sync(self, entries: Sequence[tuple[str, str, bytes]]) -> bool:
        """Append one frame per (session dir, trace identity, lines) and fdatasync.

        Returns whether the log is full (``checkpoint_bytes``): the caller then runs a
        ``checkpoint``, beside the rounds that follow (``GroupCommit``). Raises OSError
        when the log cannot be written or synced (no ack may then go out).
        """
        data = b"".join(frame(sdir, ident, lines) for sdir, ident, lines in entries)
        with self._lock:
            self._write_sync(data)
            for sdir, _ident, _lines in entries:
                self.covered.add(os.path.join(sdir, TRACE))
            return self.size >= self.checkpoint_bytes

    def _write_sync(self, data: bytes) -> None:
        """Append ``data`` (whole frames) to the current segment and fdatasync it (the lock held). Raises OSError."""
        if self._fd < 0:
            self._open()
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError:  # a full disk: cut the partial frame off, so the segment takes the next round's
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                self._abandon()  # a segment with a torn frame takes no more frames after it
            raise
        try:
            os.fdatasync(self._fd)
        except OSError:
            self._abandon()  # after a failed fdatasync what the segment holds is unknown: no more frames in it
            raise
        self.size += done

    def holds(self, path: str) -> bool:
        """Whether a segment still on disk may hold lines of the trace at ``path``.

        Takes no lock (the event loop asks while a round may be syncing): each lookup is
        atomic, and a checkpoint fills ``_retiring`` before it empties ``covered``. A round
        adds its traces after its write; ``GroupCommit`` knows the ones in flight.
        """
        return path in self.covered or path in self._retiring or path in self.held

    def reset(self, session_dir: str) -> bool:
        """Before a trace is created at ``session_dir`` (blocking: one fdatasync, only when needed).

        When the log may still hold lines of an earlier trace there (``holds``), appends and
        fdatasyncs a reset frame, so that replay puts none of them into the new trace, whatever
        its identity. Returns whether it wrote one. Raises OSError when the log cannot be
        written (the trace must then not be created).
        """
        path = os.path.join(session_dir, TRACE)
        if not self.holds(path):
            return False
        with self._lock:
            self._write_sync(frame(session_dir, "", b""))
            self.covered.discard(path)
            self._retiring.discard(path)
            self.held.discard(path)
            self.resets += 1
        log.info("wal_reset", session_dir=session_dir)
        return True

    def _abandon(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def checkpoint(self) -> None:
        """Make every covered trace durable on its own, then drop the segments that covered it.

        A new segment takes the frames that follow (the next one opens it): lines
        written while this runs are logged there, so nothing acked is ever covered
        by neither its trace's fdatasync nor a segment still on disk.
        """
        with self._checkpointing:
            self._checkpoint()

    def _checkpoint(self) -> None:
        with self._lock:
            self._abandon()
            last = self._seq
            self._retiring = set(self.covered)  # first: ``holds`` finds each trace in one of the two
            covered, self.covered = self.covered, set()
            self.size = 0
        try:
            for _ in self.map(_sync_trace, covered):
                pass
        except OSError:
            with self._lock:
                self.covered |= covered  # nothing deleted: the next checkpoint syncs them all again
                self._retiring = set()
            raise
        for old in _segments(self.dir):
            if self._first and self._first <= int(old.name[: -len(SUFFIX)]) <= last:
                old.unlink()
        with self._lock:
            self._retiring = set()
        self.checkpoints += 1

    def close(self) -> None:
        """Checkpoint what is logged (a clean stop leaves no log to replay)."""
        if self._fd >= 0 or self.covered:
            self.checkpoint()


def _sync_trace(path: str) -> None:
    """fdatasync the trace at ``path``; one that is gone (or no longer a trace) needs nothing. Raises OSError."""
    try:
        fd = layout.open_regular(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL, errno.EISDIR):
            return  # the session was deleted, or its name is no longer a trace (a dir, a FIFO): nothing to keep
        raise
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class Replayed:
    """What ``replay`` did: lines appended per trace, entries skipped, torn bytes dropped."""

    lines: dict[str, int] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Segments or session dirs that could not be read or written (the log then stays)."""
    torn_bytes: int = 0
    gaps: int = 0
    stale: int = 0
    """Logged lines not put back: they belong to an earlier trace at the same path."""
    torn_moved: int = 0
    """Traces whose torn tail was moved aside before the lines went back."""
    held: set[str] = field(default_factory=set)
    """When the log stays (``failed``): the traces it holds lines of (``WriteAheadLog.held``)."""


def _step(line: bytes) -> int | None:
    try:
        return record_decoder.decode(line).step
    except msgspec.DecodeError:
        return None


def replay(directory: Path) -> Replayed:
    """Put back into their traces the logged lines they lack, then delete the log (blocking; before READY).

    Each trace's torn tail is moved aside first (``journal.repair_tail``, through
    ``scan``), each trace written by replay is fdatasynced before the log goes.
    Never raises: a trace that cannot be written is logged (``failed``), and then
    the log stays for the next start to try again.
    """
    done = Replayed()
    segments = _segments(directory)
    pending: dict[str, list[tuple[str | None, bytes]]] = {}
    for seg in segments:
        try:
            entries, torn = read_frames(seg.read_bytes())
        except OSError as e:
            done.failed.append(str(seg))
            log.error("wal_unreadable", segment=str(seg), error=e.strerror)
            continue
        if torn:
            done.torn_bytes += torn
            log.warning("wal_torn_tail", segment=seg.name, bytes=torn)
        for sdir, ident, lines in entries:
            if ident == "" and not lines:  # a reset: the trace there was created again after these
                dropped = sum(chunk.count(b"\n") for _i, chunk in pending.pop(sdir, ()))
                done.stale += dropped
                if dropped:
                    log.warning("wal_stale_lines", session_dir=sdir, lines=dropped, reason="reset")
                continue
            pending.setdefault(sdir, []).append((ident, lines))
    for sdir, chunks in pending.items():
        if not os.path.isdir(sdir) or not _regular_or_missing(os.path.join(sdir, TRACE)):
            done.gone.append(sdir)  # deleted, or its trace is now a dir, a FIFO or a symlink: nothing to keep
            log.warning("wal_session_gone", session_dir=sdir)
            continue
        try:
            _replay_one(sdir, chunks, done)
        except OSError as e:
            done.failed.append(sdir)
            log.error("wal_replay_failed", session_dir=sdir, error=e.strerror)
    if done.failed:
        done.held = {os.path.join(sdir, TRACE) for sdir in pending}
    else:
        for seg in segments:
            seg.unlink()
        if segments:
            _sync_dir(directory)
    return done


def _regular_or_missing(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True


def _replay_one(sdir: str, chunks: list[tuple[str | None, bytes]], done: Replayed) -> None:
    path = os.path.join(sdir, TRACE)
    tail = scan(path)
    last = tail.last_step
    done.torn_moved += 1 if tail.torn_bytes else 0
    now = trace_ident(path)
    out = bytearray()
    n = stale = 0
    for ident, chunk in chunks:
        if ident is not None and ident != now:  # an earlier trace's lines (deleted, its path used again)
            stale += chunk.count(b"\n")
            continue
        for line in chunk.splitlines(keepends=True):
            step = _step(line)
            if step is None or step <= last:
                continue  # already in the trace: exactly once
            if step != last + 1:
                done.gaps += 1
                log.error("wal_gap", session_dir=sdir, after=last, step=step)
            out += line
            last = step
            n += 1
    if stale:
        done.stale += stale
        log.warning("wal_stale_lines", session_dir=sdir, lines=stale, trace_ident=now)
    if not n:
        return
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = layout.open_regular(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        view = memoryview(out)
        pos = 0
        while pos < len(view):
            pos += os.write(fd, view[pos:])
        os.fdatasync(fd)
    finally:
        os.close(fd)
    done.lines[sdir] = n
    log.warning("wal_replayed", session_dir=sdir, lines=n, last_step=last)
