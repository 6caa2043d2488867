"""Reading records to forward straight from the trace files, by byte offset.

The files are the outbox: nothing is buffered in memory beyond "session X has new
data up to step N". Every function here blocks: call it from a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from traced.format import layout
from traced.forward.cursor import Cursor

TAIL_CHUNK: Final = 64 * 1024
LOOKBACK_DAYS: Final = 7
MTIME_SLACK: Final = 5.0


class Head(msgspec.Struct):
    """The two fields the forwarder needs from every line (the rest is skipped unparsed)."""

    step: int | None = None
    phase: str = ""


head_decoder: Final = msgspec.json.Decoder(Head)


class Decoded(msgspec.Struct):
    """A line's head, and its bytes as they are to be forwarded."""

    step: int | None
    phase: str
    body: bytes


def decode_head(body: bytes) -> Decoded | None:
    """The head of one line as the readers read it (``read.trace.decode_line``): a leading BOM
    is dropped and invalid UTF-8 becomes U+FFFD (the forwarded bytes are fixed likewise);
    None when the line is not a JSON object or is nested too deep."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        head = head_decoder.decode(body)  # skips the payload unparsed: its UTF-8 is not checked
    except (msgspec.DecodeError, RecursionError):
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        body = body.decode("utf-8", "replace").encode("utf-8")
    return Decoded(head.step, head.phase, body)


@dataclass(slots=True)
class Line:
    """One complete trace line to forward."""

    step: int
    phase: str
    start: int
    """Byte offset of the line in trace.jsonl."""
    end: int
    """Byte offset just past its newline."""
    raw: bytes
    """The line exactly as on disk, without the newline."""


@dataclass(slots=True)
class ReadResult:
    """What one read of a session's file found after its cursor."""

    lines: list[Line] = field(default_factory=list)
    offset: int = 0
    """Where the read stopped: past the last line looked at (forwarded or skipped)."""
    last_step: int = 0
    """The highest step seen, forwarded or not."""
    malformed: int = 0
    eof: bool = False
    partial: bool = False
    """The read stopped at a line still being written (no newline yet)."""
    missing: bool = False
    error: str | None = None


def trace_path(session_dir: str) -> str:
    """The trace.jsonl of a session directory."""
    return os.path.join(session_dir, layout.TRACE)


def read_after(session_dir: str, offset: int, after_step: int, max_records: int, max_bytes: int, *,
               upto_step: int | None = None, records_before: int | None = None) -> ReadResult:
    """Complete lines from byte ``offset`` on whose step is above ``after_step`` (and at most ``upto_step``).

    A line without ``step`` (another writer's, e.g. devboy's CLI) gets its position among
    the file's records, as the readers number it (:mod:`traced.read.trace`); ``records_before`` is
    the number of records before ``offset`` (default ``after_step``: exact for traced's
    files, whose steps are their positions, and for files with no steps at all).

    ``upto_step`` is the last step the daemon said is durable: a record after it
    is written but not yet synced under the fsync policy, and is left for later.

    Stops after ``max_records`` lines or ``max_bytes`` bytes (at least one line is
    returned when there is one). A malformed line is skipped and counted; a line
    without its newline (being written right now) ends the read. If the file is
    shorter than ``offset`` (it was replaced), reading restarts at 0 and the step
    filter keeps already delivered records out.
    """
    res = ReadResult(offset=offset, last_step=after_step)
    try:
        f = os.fdopen(layout.open_regular(trace_path(session_dir)), "rb")
    except OSError as e:  # gone (pruned), or unreadable: nothing can be sent from it
        res.missing = True
        res.eof = True
        res.error = f"{type(e).__name__}: {e.strerror or e}"
        return res
    with f:
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            offset = 0
        count = (after_step if records_before is None else records_before) if offset else 0
        f.seek(offset)
        pos = offset
        taken = 0
        while len(res.lines) < max_records and (taken < max_bytes or not res.lines):
            raw = f.readline()
            if not raw or not raw.endswith(b"\n"):
                res.eof = True
                res.partial = bool(raw)
                break
            start = pos
            pos += len(raw)
            body = raw[:-1]
            if not body.strip():
                continue
            head = decode_head(body)
            if head is None:  # skipped and counted, never retried forever
                res.malformed += 1
                continue
            body = head.body
            if not head.phase:  # not a record (readers skip it too), and no position
                res.malformed += 1
                continue
            count += 1
            step = count if head.step is None else head.step
            if step <= after_step:
                continue
            if upto_step is not None and step > upto_step:
                pos = start  # not durable yet: read again from here next time
                res.eof = True
                break
            res.last_step = max(res.last_step, step)
            res.lines.append(Line(step, head.phase, start, pos, body))
            taken += len(raw)
        else:
            res.eof = pos >= size
        res.offset = pos
    return res


def iter_lines(session_dir: str, upto: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(start, end, position, line without newline) of every complete record line before byte ``upto``.

    The position counts the lines that are records (a JSON object with a ``phase``),
    from 1, as the readers number a line without ``step``.
    """
    try:
        f = os.fdopen(layout.open_regular(trace_path(session_dir)), "rb")
    except OSError:
        return
    with f:
        pos = end = 0
        for raw in f:
            start, end = end, end + len(raw)
            if end > upto or not raw.endswith(b"\n"):
                return
            head = decode_head(raw[:-1])
            if head is None or not head.phase:
                continue
            pos += 1
            yield start, end, pos, head.body


def read_line(session_dir: str, start: int, end: int) -> bytes:
    """The bytes of one line (without newline) at a known position; b'' if gone."""
    try:
        with os.fdopen(layout.open_regular(trace_path(session_dir)), "rb") as f:
            f.seek(start)
            return f.read(end - start).rstrip(b"\n")
    except OSError:
        return b""


def tail_step(session_dir: str) -> int:
    """The step of the last complete line of a trace (0 when empty or unreadable)."""
    try:
        f = os.fdopen(layout.open_regular(trace_path(session_dir)), "rb")
    except OSError:
        return 0
    with f:
        size = os.fstat(f.fileno()).st_size
        chunk = TAIL_CHUNK
        while True:
            start = max(0, size - chunk)
            f.seek(start)
            data = f.read(size - start)
            end = data.rfind(b"\n")
            lines = data[: end + 1].splitlines() if end >= 0 else []
            if start > 0 and lines:
                lines = lines[1:]  # the first one may be cut
            for line in reversed(lines):
                try:
                    head = head_decoder.decode(line)
                except (msgspec.DecodeError, RecursionError):
                    continue
                if head.step is not None:
                    return head.step
                if head.phase:  # another writer's line: its step is its position
                    return sum(1 for _ in iter_lines(session_dir, size))
            if start == 0:
                return 0
            chunk *= 4


@dataclass(slots=True)
class Work:
    """A session found to hold records a destination has not acknowledged."""

    dir: str
    skill: str
    session_id: str
    last_step: int
    mtime: float


def find_behind(roots: Iterable[str], cursors: list[Cursor], since: float,
                lookback_days: int = LOOKBACK_DAYS) -> list[Work]:
    """Sessions whose file holds more than their cursor, or, without a cursor, modified since ``since``.

    Every cursor is checked (one stat each); the roots are scanned only in the date
    directories from ``lookback_days`` before ``since`` on.
    """
    found: dict[str, Work] = {}
    known: dict[str, Cursor] = {}
    for cur in cursors:
        known[cur.dir] = cur
        try:
            size = os.stat(trace_path(cur.dir)).st_size
        except OSError:
            continue
        if size > cur.offset:
            step = tail_step(cur.dir)
            if step > cur.step:
                found[cur.dir] = Work(cur.dir, cur.skill, cur.session_id, step, cur.updated)
    cutoff = (datetime.fromtimestamp(since, UTC) - timedelta(days=lookback_days)).strftime("%Y-%m-%d")
    for root in roots:
        for date, skill, sid in layout.walk_sessions(root, lo=cutoff):
            sdir = layout.session_dir(root, date, skill, sid)
            if sdir in known or sdir in found:
                continue
            try:
                mtime = os.stat(trace_path(sdir)).st_mtime
            except OSError:
                continue
            if mtime >= since - MTIME_SLACK:
                step = tail_step(sdir)
                if step > 0:
                    found[sdir] = Work(sdir, skill, sid, step, mtime)
    return list(found.values())
