"""The O_APPEND writer of trace.jsonl, tail recovery, and atomic meta.json writes.

One ``write(2)`` per batch of whole lines. A write that fails part-way
(ENOSPC, EFBIG, EIO) keeps the complete lines it wrote and moves the torn
fragment aside to ``trace.torn``, so trace.jsonl is valid JSONL at all times.
File descriptors live in a small LRU so 10,000 open sessions never exhaust
``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import errno
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import msgspec

from traced.format import layout, vocab
from traced.format.accounting import Counters, account, call_keys
from traced.format.layout import FILE_MODE, TORN, TRACE
from traced.format.records import Record, parse_ts, record_decoder

__all__ = ["FdCache", "Journal", "JournalWriteError", "TailState", "line_bytes", "repair_tail", "scan"]

TAIL_CHUNK: Final = 64 * 1024
KEYS_KEPT: Final = 4 * 16384
"""Idempotency keys a scan keeps (the newest): twice the window a session remembers per client."""


class JournalWriteError(OSError):
    """A write failed; ``lines`` complete lines of the batch did reach the file.

    Internal to the daemon: a client sees it as ``io_error``.
    """

    def __init__(self, err: OSError, lines: int) -> None:
        super().__init__(err.errno, err.strerror)
        self.lines = lines


def trace_gone(path: str) -> FileNotFoundError:
    """The error for a trace no longer at ``path`` (deleted, or another file put there): ENOENT, one
    message whichever check finds it (the fd cache, an fdatasync, a sync round)."""
    return FileNotFoundError(errno.ENOENT, "the trace was deleted or replaced", path)

class FdCache:
    """An LRU of open trace fds, capped (fdatasync opens its own fd, so eviction is always safe)."""

    def __init__(self, cap: int = 512) -> None:
        self.cap = cap
        self._fds: OrderedDict[str, tuple[int, Journal | None]] = OrderedDict()
        """path -> (fd, the journal it was opened for)."""

    def __len__(self) -> int:
        return len(self._fds)

    def get(self, path: str, owner: Journal | None = None) -> int:
        """The fd of ``path`` opened for appending (0600, no symlink follow).

        ``owner``: the journal writing it. An fd is only ever handed to the journal it was
        opened for: one a session let go or forgotten left open (its file since deleted or
        replaced, maybe) is closed, never inherited by the next journal at that path. Once
        the owner has written (its ``file_id`` and ``size`` known: device, inode, bytes), an fd
        opened again (evicted, or never opened by this daemon) must be that file, at least that
        long (another writer may have appended): none is created, and another file at the path
        (deleted and made again, or a shorter one on a reused inode number) raises
        FileNotFoundError. Raises OSError.
        """
        fds = self._fds
        entry = fds.get(path)
        if entry is not None:
            if entry[1] is owner:
                fds.move_to_end(path)
                return entry[0]
            del fds[path]
            os.close(entry[0])
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        known = owner if owner is not None and owner.size >= 0 else None
        try:
            fd = layout.open_regular(path, flags)  # a FIFO or device planted there: OSError, never a hang
        except FileNotFoundError:
            if known is not None:
                raise
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
            os.fchmod(fd, FILE_MODE)  # umask-independent, once, when it is created
        if known is not None and not known.is_its_file(os.fstat(fd)):
            os.close(fd)
            raise trace_gone(path)
        fds[path] = (fd, owner)
        while len(fds) > max(self.cap, 1):  # O(1) per eviction: the oldest first
            os.close(fds.popitem(last=False)[1][0])
        return fd

    def drop(self, path: str, owner: Journal | None = None) -> None:
        """Close the fd of ``path`` if open (``owner``: only if it was opened for that journal)."""
        entry = self._fds.get(path)
        if entry is not None and (owner is None or entry[1] is owner):
            del self._fds[path]
            os.close(entry[0])

    def close_all(self) -> None:
        """Close every fd."""
        while self._fds:
            os.close(self._fds.popitem()[1][0])


@dataclass(slots=True, eq=False)
class Journal:
    """Append-only access to one session's trace.jsonl."""

    dir: str
    fds: FdCache
    path: str = ""
    written_gen: int = 0
    """Bumped by every successful write; compared against ``synced_gen``."""
    synced_gen: int = 0
    bytes_written: int = 0
    torn_moved: int = field(default=0)
    wal: list[bytes] | None = None
    """Lines written since ``wal_base`` and not yet in the write-ahead log (None: not logged, see ``wal``)."""
    wal_base: int = 0
    """The write generation from which every write is kept in ``wal``."""
    looked_gen: int = 0
    """``written_gen`` as of the last look for its file under ``fsync = "never"`` (``Registry.let_go_gone``)."""
    round_bytes: int = 0
    """``bytes_written`` as of its last sync round (how much it wrote since: ``GroupCommit``)."""
    ident: str = ""
    """The trace file's identity (``trace_ident``), read by its first fdatasync; "" until then.
    The write-ahead log tags this trace's lines with it."""
    file_id: tuple[int, int] | None = None
    """(st_dev, st_ino) of the file this journal writes, read at its first write or load: ``gone``."""
    size: int = -1
    """That file's size as this journal knows it (bytes; -1: unknown). With ``file_id`` it tells the
    file apart from another one on a reused inode number."""
    retired: bool = False
    """Its file was deleted or replaced and the session let go (``Registry``): rounds skip it."""

    def __post_init__(self) -> None:
        self.path = os.path.join(self.dir, TRACE)

    @property
    def dirty(self) -> bool:
        """True when written data awaits fdatasync."""
        return self.written_gen != self.synced_gen

    def append(self, data: bytes | bytearray, lines: int) -> int:
        """Write ``data`` (``lines`` whole JSON lines, each ending in ``\\n``) with one write(2).

        Retries short writes. Returns ``lines`` (all were written); on failure raises
        JournalWriteError carrying how many complete lines reached the file, after
        moving any torn fragment aside. A JSON line holds no raw newline, so the
        lines are found by their ``\\n`` only when a write fails.
        """
        view = memoryview(data)
        total = len(view)
        done = 0
        try:
            fd = self.fds.get(self.path, self)
            if self.size < 0:  # the first write: which file this journal writes (``gone``)
                st = os.fstat(fd)
                self.file_id, self.size = (st.st_dev, st.st_ino), st.st_size
            while done < total:
                n = os.write(fd, view[done:])
                if n <= 0:  # pragma: no cover - write(2) never returns 0 for regular files
                    raise OSError(errno.EIO, "write returned 0")
                done += n
        except OSError as err:
            kept = data.rfind(b"\n", 0, done) + 1
            complete = data.count(b"\n", 0, kept)
            if done:
                self.bytes_written += done
                self.written_gen += 1
                self.size += kept
                if done != kept:
                    self.fds.drop(self.path, self)
                    self.torn_moved += cut_fragment(self.path, done - kept)
                if self.wal is not None and kept:
                    self.wal.append(bytes(view[:kept]))
            raise JournalWriteError(err, complete) from err
        self.bytes_written += total
        self.written_gen += 1
        self.size += total
        if self.wal is not None:
            self.wal.append(bytes(view))
        return lines

    def gone(self, size: int | None = None) -> bool:
        """Whether the file this journal writes is no longer at its path (deleted, or replaced by
        another file or by a symlinked dir, or a shorter file on a reused inode number). One
        ``stat``; a journal that never wrote compares by existence only. ``size``: the least size
        the file must have (default: the known size; another writer may have appended)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return True
        return not self.is_its_file(st, size)

    def is_its_file(self, st: os.stat_result, size: int | None = None) -> bool:
        """Whether ``st`` is the file this journal writes: the same device and inode, and at least
        ``size`` bytes (default: the known size). True while the journal knows no file yet."""
        if self.file_id is None:
            return True
        return (st.st_dev, st.st_ino) == self.file_id and st.st_size >= (self.size if size is None else size)

    def fdatasync(self, target: int | None = None) -> None:
        """fdatasync the trace (blocking; call from a worker thread).

        ``target``: the write generation read on the loop before the call (default: now).
        Raises OSError; FileNotFoundError when the file written is no longer at the path.
        """
        target = self.written_gen if target is None else target
        try:
            fd = layout.open_regular(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:  # one message for a trace that is gone, whichever check finds it
            raise trace_gone(self.path) from None
        try:
            if not self.is_its_file(os.fstat(fd), 0):  # another file at the path: ours was deleted
                raise trace_gone(self.path)
            os.fdatasync(fd)
            if not self.ident:
                self.ident = ident_of(fd)
        finally:
            os.close(fd)
        self.synced_gen = max(self.synced_gen, target)


IDENT_READ: Final = 65536
"""Bytes read for a trace's first line (a start record is far shorter)."""


def ident_of(fd: int) -> str:
    """A trace's identity: the CRC-32 of its first line (its ``start`` record, whose ``ts`` has
    microseconds), 8 hex digits; "" when the file holds no whole first line. A trace deleted and
    written again at the same path (a session id reused) gets another one unless its start record
    is byte-identical (a client that sends the same ``open`` ``ts`` twice); the log's reset frame
    (``WriteAheadLog.reset``) covers that case. Raises OSError."""
    head = os.pread(fd, IDENT_READ, 0)
    end = head.find(b"\n")
    return f"{zlib.crc32(head[: end + 1]):08x}" if end >= 0 else ""


def trace_ident(path: str) -> str:
    """``ident_of`` the trace at ``path``; "" when it is missing or unreadable."""
    try:
        fd = layout.open_regular(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return ident_of(fd)
    except OSError:
        return ""
    finally:
        os.close(fd)


def line_bytes(data: bytes | bytearray, lines: int) -> int:
    """Bytes of the first ``lines`` lines of ``data`` (each ending in ``\\n``)."""
    end = 0
    for _ in range(lines):
        end = data.index(b"\n", end) + 1
    return end


def cut_fragment(path: str, size: int) -> int:
    """Take the last ``size`` bytes (a line cut short by ENOSPC, EFBIG or EIO) off the trace.

    The fragment is kept in ``trace.torn`` when that can be written; the trace
    is truncated back to its last complete line either way, so a later line is
    never glued onto it, even on a disk with no room left. The fragment belongs
    to an event that was answered ``io_error``, never acknowledged. Returns the
    bytes taken off (0 when the trace is gone).
    """
    try:
        fd = layout.open_regular(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0
    try:
        end = os.fstat(fd).st_size
        keep = max(end - size, 0)
        fragment = os.pread(fd, end - keep, keep)
        try:
            _save_torn(os.path.dirname(path), fragment)
        except OSError:
            pass  # no room for it either: the acknowledged lines before it matter more
        os.ftruncate(fd, keep)
        return len(fragment)
    finally:
        os.close(fd)


def _save_torn(directory: str, fragment: bytes) -> None:
    """Append a torn fragment (and a newline) to ``<directory>/trace.torn``."""
    tfd = os.open(os.path.join(directory, TORN),
                  os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(tfd, fragment + b"\n")
        os.fsync(tfd)
    finally:
        os.close(tfd)


def repair_tail(path: str) -> int:
    """Move a torn last line (no trailing newline) to ``trace.torn``; return bytes moved."""
    try:
        fd = layout.open_regular(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0
        start = max(0, size - TAIL_CHUNK)
        tail = os.pread(fd, size - start, start)
        if tail.endswith(b"\n"):
            return 0
        while True:
            cut = tail.rfind(b"\n")
            if cut >= 0 or start == 0:
                break
            # no newline in this chunk: the torn line is longer; read further back
            start = max(0, start - TAIL_CHUNK)
            tail = os.pread(fd, size - start, start)
        keep = start + cut + 1  # cut == -1 -> keep == start == 0
        fragment = os.pread(fd, size - keep, keep)
        _save_torn(os.path.dirname(path), fragment)  # a torn tail found on start is kept: nothing silently lost
        os.ftruncate(fd, keep)
        return len(fragment)
    finally:
        os.close(fd)


@dataclass(slots=True)
class TailState:
    """What a trace file says about where a session stands."""

    last_step: int = 0
    last_turn: int = 0
    lines: int = 0
    malformed: int = 0
    torn_bytes: int = 0
    ended: bool = False
    """The last record is ``end``, late records after it aside."""
    end: Record | None = None
    """That ``end`` record, when the session ended."""
    last_ts: float = 0.0
    """The last record's time (epoch seconds; 0 when none parses)."""
    keys: dict[str, int] = field(default_factory=dict)
    """client_seq -> step of the newest lines that carry an idempotency key (bounded: ``KEYS_KEPT``)."""
    requests: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    """``llm_call`` keys (``session.call_keys``) -> (client id, step) of the newest such lines
    (bounded: ``KEYS_KEPT``)."""


def scan(path: str, counters: Counters | None = None) -> TailState:
    """Repair a torn tail, then read the whole trace: last step, turn, keys, counts.

    With ``counters``, every record is also accounted into it (meta.json's counters).
    """
    state = TailState(torn_bytes=repair_tail(path))
    last_ts = ""
    try:
        with os.fdopen(layout.open_regular(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                state.lines += 1
                try:
                    rec = record_decoder.decode(raw)
                except msgspec.DecodeError:
                    state.malformed += 1
                    continue
                if rec.step is not None:
                    state.last_step = max(state.last_step, rec.step)
                else:
                    state.last_step += 1
                if rec.turn:
                    state.last_turn = max(state.last_turn, rec.turn)
                last_ts = rec.ts
                if rec.client_seq:
                    keys = state.keys
                    keys[rec.client_seq] = rec.step or state.last_step
                    if len(keys) > KEYS_KEPT:  # memory independent of the trace's length
                        state.keys = keys = dict(list(keys.items())[-KEYS_KEPT // 2 :])
                if rec.phase == vocab.LLM_CALL:
                    client = rec.client_seq.rpartition(":")[0] if rec.client_seq else ""
                    names = call_keys(rec.payload)
                    rid = names[0][0][4:] if names and names[0][1] else ""
                    for key, _any in names:
                        state.requests[key] = (client, rec.step or state.last_step, rid)
                    if len(state.requests) > KEYS_KEPT:
                        state.requests = dict(list(state.requests.items())[-KEYS_KEPT // 2 :])
                if rec.phase == vocab.END:
                    state.ended, state.end = True, rec
                elif not rec.late:
                    state.ended, state.end = False, None
                if counters is not None:
                    account(counters, rec.phase, rec.payload)
    except FileNotFoundError:
        pass
    if last_ts:
        try:
            state.last_ts = parse_ts(last_ts)
        except ValueError:
            pass
    return state
