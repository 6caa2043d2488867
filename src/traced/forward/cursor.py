"""Durable per-session cursors of one destination: an append-only log, compacted.

``<state>/forward/<dest-key>/`` holds:

- ``cursors.log``: one JSON array per line,
  ``[session_dir, skill, session_id, step, offset, ended, updated]``: the session's
  records up to ``step`` (the line ending at byte ``offset`` of its trace.jsonl) are
  acknowledged by the destination; ``ended`` says the last one delivered was ``end``.
  The last line for a session wins. One ``write(2)`` appends the cursors of a whole
  delivered batch (however many sessions it held); the file is fdatasynced at most
  once per second, and rewritten (temp file, fsync, rename) when it grows past a few
  times its live size. A torn last line, or one lost to a power cut, only means a
  few records are sent again: the destination deduplicates by (session, step).
- ``state.json``: ``{"url", "first_run", "last_active"}``, rewritten every 30 s while
  the forwarder is healthy. ``last_active`` tells the next start which session
  files may hold records it never saw (modified since then).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from traced.format import layout
from traced.format.files import write_atomic
from traced.format.layout import FILE_MODE, ensure_private_dir

LOG: Final = "cursors.log"
STATE: Final = "state.json"
MIN_COMPACT_BYTES: Final = 1 << 20
ENDED_RETENTION: Final = 30 * 86400.0
"""A cursor of an ended session is forgotten this long after its last update."""
_encoder: Final = msgspec.json.Encoder()
_row_decoder: Final = msgspec.json.Decoder(tuple[str, str, str, int, int, int, float])


@dataclass(slots=True)
class Cursor:
    """How far one session has been delivered to one destination."""

    dir: str
    skill: str
    session_id: str
    step: int = 0
    offset: int = 0
    ended: bool = False
    updated: float = 0.0

    def row(self) -> bytes:
        """This cursor as one log line."""
        return _encoder.encode([self.dir, self.skill, self.session_id, self.step, self.offset,
                                int(self.ended), round(self.updated, 3)]) + b"\n"


class CursorStore:
    """The cursors of one destination, in memory and in ``cursors.log``."""

    def __init__(self, dir: Path, url: str) -> None:
        self.dir = dir
        self.url = url
        self.cursors: dict[str, Cursor] = {}
        self.first_run = 0.0
        self.last_active = 0.0
        """When the previous run was last known healthy (0: never ran)."""
        self.log_bytes = 0
        self.bad_lines = 0
        self._fd = -1
        self._staged: list[bytes] = []
        self._dirty = False
        self._last_sync = 0.0

    # --- loading ------------------------------------------------------------

    def load(self) -> None:
        """Read state.json and replay cursors.log (tolerating a torn or bad line)."""
        ensure_private_dir(self.dir)
        try:
            state = msgspec.json.decode((self.dir / STATE).read_bytes())
            if isinstance(state, dict):
                self.first_run = float(state.get("first_run") or 0.0)
                self.last_active = float(state.get("last_active") or 0.0)
        except (OSError, msgspec.DecodeError, TypeError, ValueError):
            pass
        path = self.dir / LOG
        try:
            with open(path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        self.bad_lines += 1  # torn by a crash: the previous cursor stands
                        continue
                    try:
                        d, skill, sid, step, offset, ended, updated = _row_decoder.decode(line)
                    except msgspec.DecodeError:
                        self.bad_lines += 1
                        continue
                    old = self.cursors.get(d)
                    if old is not None and old.step > step:
                        continue  # never move back
                    self.cursors[d] = Cursor(d, skill, sid, step, offset, bool(ended), updated)
        except FileNotFoundError:
            pass
        self._open()
        if self.first_run == 0.0:
            self.first_run = time.time()
            self.write_state(self.first_run)
        if self.bad_lines or self.log_bytes > MIN_COMPACT_BYTES:
            self.compact()

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.dir / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                           FILE_MODE)
        self.log_bytes = os.fstat(self._fd).st_size
        if self.log_bytes:  # a torn tail must not glue itself to the next line
            with open(self.dir / LOG, "rb") as f:
                f.seek(self.log_bytes - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")
                    self.log_bytes += 1

    # --- updating -----------------------------------------------------------

    def get(self, session_dir: str) -> Cursor | None:
        """The cursor of a session, if any record of it was ever delivered."""
        return self.cursors.get(session_dir)

    def stage(self, cursor: Cursor) -> None:
        """Take a new cursor position (in memory now, in the log at ``write_staged``)."""
        cursor.updated = time.time()
        self.cursors[cursor.dir] = cursor
        self._staged.append(cursor.row())

    def write_staged(self) -> None:
        """Append every staged cursor with one write(2) (no fsync: see ``sync``)."""
        if not self._staged:
            return
        data = b"".join(self._staged)
        self._staged.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.log_bytes += len(data)
        self._dirty = True

    def sync(self) -> None:
        """fdatasync the log if it changed (blocking: call from a worker thread)."""
        if self._dirty and self._fd >= 0:
            self._dirty = False
            os.fdatasync(self._fd)
        self._last_sync = time.monotonic()

    def sync_due(self, interval: float) -> bool:
        """True when there is something to fsync and ``interval`` has passed."""
        return self._dirty and time.monotonic() - self._last_sync >= interval

    def needs_compaction(self) -> bool:
        """True when the log is mostly superseded lines."""
        return self.log_bytes > max(MIN_COMPACT_BYTES, 4 * 200 * len(self.cursors))

    def compact(self, prune: bool = True) -> int:
        """Rewrite the log with one line per session (blocking). Returns cursors pruned.

        With ``prune``, a cursor is dropped when its trace.jsonl no longer exists
        (``traced prune`` removed it), or when its session ended more than
        ``ENDED_RETENTION`` ago (were it resumed later, it would be sent again from
        step 1: the destination deduplicates what it still remembers).
        """
        rows: list[bytes] = []
        gone: list[str] = []
        horizon = time.time() - ENDED_RETENTION
        for cur in list(self.cursors.values()):
            if prune and ((cur.ended and cur.updated < horizon)
                          or not os.path.exists(os.path.join(cur.dir, layout.TRACE))):
                gone.append(cur.dir)
                continue
            rows.append(cur.row())
        for d in gone:
            self.cursors.pop(d, None)
        write_atomic(str(self.dir), LOG, b"".join(rows))
        self._open()
        self._dirty = False
        self.bad_lines = 0
        return len(gone)

    def write_state(self, now: float | None = None) -> None:
        """Record that this destination's forwarder is healthy as of ``now``."""
        self.last_active = now if now is not None else time.time()
        data: dict[str, Any] = {"url": self.url, "first_run": round(self.first_run, 3),
                                "last_active": round(self.last_active, 3)}
        with contextlib.suppress(OSError):
            write_atomic(str(self.dir), STATE, _encoder.encode(data), sync=False)

    def close(self) -> None:
        """Write what is staged, fsync and close the log."""
        if self._fd < 0:
            return
        try:
            self.write_staged()
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1
