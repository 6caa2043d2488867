"""Reading one trace.jsonl tolerantly: every readable record, every broken line counted.

Other writers (devboy, older traced, hand-written files) are read as well as
they can be: lines without ``step`` get their file position, ``timestamp``
stands in for ``ts``, unknown phases and fields are kept as they are.
Malformed lines are skipped and counted; a torn last line (no ``\\n``, not
parseable) is ignored and flagged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from traced.format import layout, vocab
from traced.format.accounting import account
from traced.format.records import Usage, summarize
from traced.read.window import parse_epoch

_decode: Final = msgspec.json.decode
BOM: Final = b"\xef\xbb\xbf"


def decode_line(line: bytes) -> Any:
    """One JSON text from another writer, read the way it was meant; None when it is not JSON.

    A leading UTF-8 BOM is skipped; invalid UTF-8 bytes become U+FFFD (the record is
    kept, never silently dropped); nesting too deep to decode counts as broken.
    """
    if line.startswith(BOM):
        line = line[3:]
    try:
        return _decode(line)
    except UnicodeDecodeError:
        pass
    except msgspec.DecodeError as e:
        if "UTF-8" not in str(e):
            return None
    except RecursionError:
        return None
    try:
        return _decode(line.decode("utf-8", "replace").encode("utf-8"))
    except (msgspec.DecodeError, RecursionError):
        return None


@dataclass(slots=True)
class Entry:
    """One valid record of a trace, as read (``raw`` is the line's object, untouched)."""

    pos: int
    """1-based position among the valid records, in file order."""
    step: int
    """The record's ``step``, or ``pos`` when the writer gave none."""
    phase: str
    ts: str | None
    epoch: float | None
    turn: int | None
    payload: Any
    raw: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        """A payload field, or ``default`` when the payload is not an object or lacks it."""
        if isinstance(self.payload, dict):
            return self.payload.get(key, default)
        return default


@dataclass(slots=True)
class TraceStats:
    """What reading a trace found besides its records."""

    records: int = 0
    malformed: int = 0
    torn: bool = False
    """The last line had no ``\\n`` and did not parse: it was ignored."""
    missing: bool = False
    """trace.jsonl does not exist."""

    def problems(self) -> list[str]:
        """Human-readable notes: ``["2 malformed lines skipped", "torn last line ignored"]``."""
        notes = []
        if self.malformed:
            plural = "line" if self.malformed == 1 else "lines"
            notes.append(f"{self.malformed} malformed {plural} skipped")
        if self.torn:
            notes.append("torn last line ignored")
        if self.missing:
            notes.append("no trace.jsonl")
        return notes


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def to_entry(obj: Any, pos: int) -> Entry | None:
    """A parsed line as an Entry, or None when it is not a record."""
    if not isinstance(obj, dict):
        return None
    phase = obj.get("phase")
    if not isinstance(phase, str) or not phase:
        return None
    ts = obj.get("ts")
    if not isinstance(ts, str):
        ts = obj.get("timestamp")
        if not isinstance(ts, str):
            ts = None
    step = _int_or_none(obj.get("step"))
    return Entry(
        pos=pos,
        step=pos if step is None else step,
        phase=phase,
        ts=ts,
        epoch=parse_epoch(ts),
        turn=_int_or_none(obj.get("turn")),
        payload=obj.get("payload"),
        raw=obj,
    )


def iter_trace(path: Path, stats: TraceStats | None = None) -> Iterator[Entry]:
    """Stream the valid records of ``path``, counting malformed lines into ``stats``.

    A last line without ``\\n`` is kept when it parses as a record and flagged as
    torn otherwise. A missing file yields nothing and sets ``stats.missing``.
    """
    stats = stats if stats is not None else TraceStats()
    try:
        handle = os.fdopen(layout.open_regular(path), "rb")  # closed in finally, generator-friendly
    except FileNotFoundError:
        stats.missing = True
        return
    except OSError:  # a FIFO, a device, a directory, unreadable: no records, never a hang
        stats.missing = True
        return
    try:
        pos = 0
        for line in handle:
            complete = line.endswith(b"\n")
            entry = to_entry(decode_line(line), pos + 1)
            if entry is None:
                if complete:
                    stats.malformed += 1
                else:
                    stats.torn = True
                continue
            pos += 1
            stats.records = pos
            yield entry
    finally:
        handle.close()


@dataclass(slots=True)
class TraceSummary:
    """What can be derived from a trace alone (used when meta.json is absent or partial)."""

    steps: int = 0
    turns: int = 0
    tool_calls: int = 0
    errors: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    skill: str | None = None
    session_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None
    reason: str | None = None
    summary: str | None = None
    cwd: str | None = None
    input_summary: str | None = None
    saw_start: bool = False

    def add(self, entry: Entry) -> None:
        """Fold one record in."""
        self.steps = max(self.steps, entry.step)
        if entry.turn is not None:
            self.turns = max(self.turns, entry.turn)
        if self.skill is None and isinstance(entry.raw.get("skill"), str):
            self.skill = entry.raw["skill"]
        if self.session_id is None and isinstance(entry.raw.get("session_id"), str):
            self.session_id = entry.raw["session_id"]
        if self.started_at is None and entry.ts is not None:
            self.started_at = entry.ts
        phase = entry.phase
        account(self, phase, entry.payload)
        if phase == vocab.START:
            if entry.ts is not None and not self.saw_start:
                self.started_at = entry.ts
            self.saw_start = True
            cwd = entry.get("cwd")
            self.cwd = cwd if isinstance(cwd, str) else self.cwd
            given = entry.get("input")
            if given is not None:
                self.input_summary = summarize(given, 200)
        elif phase == vocab.END:
            self.ended_at = entry.ts
            outcome, reason = entry.get("outcome"), entry.get("reason")
            summary = entry.get("summary")
            self.outcome = outcome if isinstance(outcome, str) else None
            self.reason = reason if isinstance(reason, str) else None
            self.summary = summary if isinstance(summary, str) else None

