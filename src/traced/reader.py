"""Tolerant reading of session directories, straight from the files (no daemon).

The layout is DESIGN §2: ``<root>/<YYYY-MM-DD>/<skill>/<session_id>/{trace.jsonl,meta.json}``.
Other writers (devboy, older traced, hand-written files) are read as well as they
can be: lines without ``step`` get their file position, ``timestamp`` stands in
for ``ts``, a devboy ``meta.json`` lacks traced's counters, and a session may have
a trace but no meta at all. Malformed lines are skipped and counted, a torn last
line (no ``\\n``, not parseable) is ignored and flagged, unknown phases and fields
are kept as they are.

Scanning is cheap by design: date directories outside a window are never opened,
and a finished traced session is summarized from its ``meta.json`` alone.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Final

import msgspec

from traced.session import add_usage

TRACE_FILE: Final = "trace.jsonl"
META_FILE: Final = "meta.json"
DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
BLOB_RE: Final = re.compile(r"sha256:([0-9a-f]{64})\Z")

_decode: Final = msgspec.json.decode


class ReadError(LookupError):
    """Base of the reader's lookup errors."""


class SessionNotFound(ReadError):
    """No session matches the id or id prefix."""


class AmbiguousSession(ReadError):
    """Several sessions match an id prefix; ``candidates`` lists them."""

    def __init__(self, ident: str, candidates: Sequence[SessionRef]) -> None:
        self.ident = ident
        self.candidates = list(candidates)
        shown = ", ".join(f"{c.session_id} ({c.date}/{c.skill})" for c in self.candidates[:10])
        more = f" and {len(self.candidates) - 10} more" if len(self.candidates) > 10 else ""
        super().__init__(
            f"ambiguous session id {ident!r}: {len(self.candidates)} sessions match: {shown}{more}"
        )


# --------------------------------------------------------------------------- time


def parse_epoch(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp (``Z``, offset or naive = UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def local_midnight(day: date) -> float:
    """Epoch seconds of local midnight starting ``day``."""
    return datetime.combine(day, dtime()).timestamp()


def local_date(epoch: float) -> date:
    """The local calendar date of ``epoch``."""
    return datetime.fromtimestamp(epoch).date()


@dataclass(frozen=True, slots=True)
class Window:
    """A range of local calendar dates, both ends inclusive."""

    first: date
    last: date
    label: str = ""

    @property
    def start(self) -> float:
        """Epoch of the window's first instant (local midnight of ``first``)."""
        return local_midnight(self.first)

    @property
    def end(self) -> float:
        """Epoch just past the window (local midnight after ``last``)."""
        return local_midnight(self.last + timedelta(days=1))

    def contains(self, epoch: float) -> bool:
        """Whether ``epoch`` falls inside the window."""
        return self.start <= epoch < self.end

    def dir_range(self) -> tuple[str, str]:
        """The UTC date-directory names that can hold sessions started in the window."""
        lo = datetime.fromtimestamp(self.start, UTC).date()
        hi = datetime.fromtimestamp(self.end - 1e-6, UTC).date()
        return lo.isoformat(), hi.isoformat()

    def to_json(self) -> dict[str, str]:
        """``{"since": label, "first": date, "last": date}``."""
        return {"since": self.label, "first": self.first.isoformat(), "last": self.last.isoformat()}


def _parse_day(text: str) -> date:
    if not DATE_RE.match(text):
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}")
    return date.fromisoformat(text)


def parse_window(text: str, today: date | None = None) -> Window:
    """Parse ``today``, ``Nd`` (today and the N-1 days before), ``YYYY-MM-DD`` or ``A..B``.

    Dates are local calendar dates; ``A..B`` includes both ends. Raises ValueError.
    """
    spec = text.strip()
    today = today or date.today()
    if spec == "today":
        return Window(today, today, spec)
    if spec == "yesterday":
        day = today - timedelta(days=1)
        return Window(day, day, spec)
    match = re.fullmatch(r"(\d{1,5})d", spec)
    if match:
        days = int(match.group(1))
        if days < 1:
            raise ValueError(f"bad window {text!r}: need at least 1d")
        return Window(today - timedelta(days=days - 1), today, spec)
    if ".." in spec:
        a, _, b = spec.partition("..")
        first = _parse_day(a.strip()) if a.strip() else date(1970, 1, 2)
        last = _parse_day(b.strip()) if b.strip() else today
        if last < first:
            raise ValueError(f"bad window {text!r}: {last} is before {first}")
        return Window(first, last, spec)
    try:
        day = _parse_day(spec)
    except ValueError:
        raise ValueError(
            f"bad window {text!r}: use today, 7d, 30d, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
        ) from None
    return Window(day, day, spec)


# --------------------------------------------------------------------------- trace


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


def _num(value: object) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        num = float(value)
        return num if math.isfinite(num) else None
    return None


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
        handle = open(path, "rb")  # noqa: SIM115 - closed in finally, generator-friendly
    except FileNotFoundError:
        stats.missing = True
        return
    try:
        pos = 0
        for line in handle:
            complete = line.endswith(b"\n")
            try:
                obj = _decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError):
                obj = None
            entry = to_entry(obj, pos + 1)
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
class Tokens:
    """Token and reported-cost totals of a session's ``llm_call`` records."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    """Sum of the reported costs; None when no call reported one."""
    llm_calls: int = 0
    unknown_cost_calls: int = 0

    def add_call(self, payload: Any) -> None:
        """Add one ``llm_call`` payload, by the same rule the daemon uses for meta.json."""
        add_usage(self, payload)

    @classmethod
    def from_meta(cls, value: object) -> Tokens | None:
        """Read meta.json's ``usage`` object, or None when absent or not an object."""
        if not isinstance(value, dict):
            return None
        cost = _num(value.get("cost_usd"))
        return cls(
            input_tokens=as_int(value.get("input_tokens")),
            output_tokens=as_int(value.get("output_tokens")),
            cache_read_tokens=as_int(value.get("cache_read_tokens")),
            cache_write_tokens=as_int(value.get("cache_write_tokens")),
            cost_usd=cost if cost is not None and cost >= 0 else None,
            llm_calls=as_int(value.get("llm_calls")),
            unknown_cost_calls=as_int(value.get("unknown_cost_calls")),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of meta.json's ``usage`` (plus call counts)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
            "llm_calls": self.llm_calls,
            "unknown_cost_calls": self.unknown_cost_calls,
        }


def as_int(value: object) -> int:
    """``value`` as a non-negative int when it is a number, else 0."""
    num = _num(value)
    return 0 if num is None or not math.isfinite(num) else max(int(num), 0)


def reported_cost(payload: Any) -> float | None:
    """An ``llm_call`` payload's ``cost_usd`` when it is a number >= 0, else None (unknown)."""
    cost = _num(payload.get("cost_usd")) if isinstance(payload, dict) else None
    return cost if cost is not None and cost >= 0 else None


@dataclass(slots=True)
class TraceSummary:
    """What can be derived from a trace alone (used when meta.json is absent or partial)."""

    steps: int = 0
    turns: int = 0
    tool_calls: int = 0
    errors: int = 0
    phases: dict[str, int] = field(default_factory=dict)
    usage: Tokens = field(default_factory=Tokens)
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
        self.phases[entry.phase] = self.phases.get(entry.phase, 0) + 1
        if self.skill is None and isinstance(entry.raw.get("skill"), str):
            self.skill = entry.raw["skill"]
        if self.session_id is None and isinstance(entry.raw.get("session_id"), str):
            self.session_id = entry.raw["session_id"]
        if self.started_at is None and entry.ts is not None:
            self.started_at = entry.ts
        phase = entry.phase
        if phase == "tool_call":
            self.tool_calls += 1
        elif phase == "tool_result" and entry.get("ok") is False:
            self.errors += 1
        elif phase == "llm_call":
            self.usage.add_call(entry.payload)
        elif phase == "start":
            if entry.ts is not None and not self.saw_start:
                self.started_at = entry.ts
            self.saw_start = True
            cwd = entry.get("cwd")
            self.cwd = cwd if isinstance(cwd, str) else self.cwd
            given = entry.get("input")
            if given is not None:
                self.input_summary = one_line(given, 200)
        elif phase == "end":
            self.ended_at = entry.ts
            outcome, reason = entry.get("outcome"), entry.get("reason")
            summary = entry.get("summary")
            self.outcome = outcome if isinstance(outcome, str) else None
            self.reason = reason if isinstance(reason, str) else None
            self.summary = summary if isinstance(summary, str) else None


def one_line(value: Any, limit: int) -> str:
    """A value as one line of text (strings as they are, others as compact JSON), cut with ``…``."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, msgspec.EncodeError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class SessionRef:
    """Where a session lives: ``<root>/<date>/<skill>/<session_id>``."""

    root: Path
    date: str
    skill: str
    session_id: str

    @property
    def path(self) -> Path:
        """The session directory."""
        return self.root / self.date / self.skill / self.session_id

    @property
    def trace_path(self) -> Path:
        """``<session>/trace.jsonl``."""
        return self.path / TRACE_FILE

    @property
    def meta_path(self) -> Path:
        """``<session>/meta.json``."""
        return self.path / META_FILE


@dataclass(slots=True)
class ScanStats:
    """How much a scan touched (for tests and ``--json`` diagnostics)."""

    date_dirs: int = 0
    sessions: int = 0
    metas_read: int = 0
    traces_read: int = 0


def _subdirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name
                for e in it
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def date_dirs(
    roots: Sequence[Path],
    window: Window | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
) -> list[tuple[str, list[Path]]]:
    """Date directory names across ``roots`` (newest first), each with the roots holding it.

    Only names are compared: ``window`` (and ``since``/``until``, inclusive
    bounds on the names) keep directories out of the scan without opening them.
    """
    lo, hi = window.dir_range() if window is not None else ("", "9999-99-99")
    if since is not None:
        lo = max(lo, since)
    if until is not None:
        hi = min(hi, until)
    found: dict[str, list[Path]] = {}
    for root in roots:
        for name in _subdirs(root):
            if DATE_RE.match(name) and lo <= name <= hi:
                found.setdefault(name, []).append(root)
    return sorted(found.items(), reverse=True)


def iter_refs(
    roots: Sequence[Path],
    window: Window | None = None,
    *,
    skill: str | None = None,
    since: str | None = None,
    until: str | None = None,
    stats: ScanStats | None = None,
) -> Iterator[SessionRef]:
    """Session directories under ``roots``, newest date first, pre-filtered by date and skill."""
    for day, holders in date_dirs(roots, window, since=since, until=until):
        for root in holders:
            if stats is not None:
                stats.date_dirs += 1
            skills = [skill] if skill is not None else _subdirs(root / day)
            for sk in skills:
                for sid in _subdirs(root / day / sk):
                    if stats is not None:
                        stats.sessions += 1
                    yield SessionRef(root, day, sk, sid)


@dataclass(slots=True)
class SessionInfo:
    """A session's summary: meta.json where it suffices, completed from the trace otherwise."""

    ref: SessionRef
    session_id: str
    skill: str
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None
    reason: str | None = None
    summary: str | None = None
    input_summary: str | None = None
    writer: str | None = None
    skill_version: str | None = None
    host: str | None = None
    cwd: str | None = None
    steps: int | None = None
    turns: int | None = None
    tool_calls: int = 0
    errors: int = 0
    phases: dict[str, int] | None = None
    usage: Tokens | None = None
    malformed_lines: int = 0
    torn: bool = False
    has_meta: bool = False
    trace_read: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def started(self) -> float | None:
        """Epoch of ``started_at``."""
        return parse_epoch(self.started_at)

    @property
    def ended(self) -> float | None:
        """Epoch of ``ended_at``."""
        return parse_epoch(self.ended_at)

    @property
    def running(self) -> bool:
        """In flight: meta has no ``ended_at`` (or, without meta, the trace has no ``end``)."""
        return self.ended_at is None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, None while running."""
        start, end = self.started, self.ended
        if start is None or end is None:
            return None
        return max(end - start, 0.0)

    @property
    def sort_key(self) -> tuple[float, str]:
        """Newest-first ordering key (start time, then id)."""
        start = self.started
        if start is None:
            start = datetime.fromisoformat(self.ref.date).replace(tzinfo=UTC).timestamp()
        return (start, self.session_id)

    def to_json(self) -> dict[str, Any]:
        """The ``ls --json`` shape of one session."""
        return {
            "session_id": self.session_id,
            "skill": self.skill,
            "date": self.ref.date,
            "root": str(self.ref.root),
            "path": str(self.ref.path),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "running": self.running,
            "outcome": self.outcome,
            "reason": self.reason,
            "duration_s": None if self.duration is None else round(self.duration, 6),
            "steps": self.steps,
            "turns": self.turns,
            "tool_calls": self.tool_calls,
            "errors": self.errors,
            "phases": self.phases,
            "usage": None if self.usage is None else self.usage.to_json(),
            "summary": self.summary,
            "input_summary": self.input_summary,
            "cwd": self.cwd,
            "host": self.host,
            "writer": self.writer,
            "malformed_lines": self.malformed_lines,
            "has_meta": self.has_meta,
        }


def read_meta(path: Path) -> dict[str, Any] | None:
    """meta.json as a dict; None when missing, unreadable or not a JSON object."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        obj = _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _info_from_meta(ref: SessionRef, meta: dict[str, Any]) -> SessionInfo:
    phases = meta.get("phases")
    labels = meta.get("labels")
    return SessionInfo(
        ref=ref,
        session_id=_str(meta, "session_id") or ref.session_id,
        skill=_str(meta, "skill") or ref.skill,
        started_at=_str(meta, "started_at"),
        ended_at=_str(meta, "ended_at"),
        outcome=_str(meta, "outcome"),
        reason=_str(meta, "reason"),
        summary=_str(meta, "summary"),
        input_summary=_str(meta, "input_summary"),
        writer=_str(meta, "devboy_version"),
        skill_version=_str(meta, "skill_version"),
        host=_str(meta, "host"),
        cwd=_str(meta, "cwd"),
        steps=as_int(meta["steps"]) if "steps" in meta else None,
        turns=as_int(meta["turns"]) if "turns" in meta else None,
        tool_calls=as_int(meta.get("tool_calls")),
        errors=as_int(meta.get("errors")),
        phases={str(k): as_int(v) for k, v in phases.items()} if isinstance(phases, dict) else None,
        usage=Tokens.from_meta(meta.get("usage")),
        malformed_lines=as_int(meta.get("malformed_lines")),
        has_meta=True,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
    )


def needs_trace(meta: dict[str, Any] | None) -> bool:
    """Whether meta.json alone cannot summarize the session (absent, running, or devboy's)."""
    return (
        meta is None
        or not isinstance(meta.get("ended_at"), str)
        or "steps" not in meta
        or "usage" not in meta
    )


def _apply_trace(info: SessionInfo, summary: TraceSummary, stats: TraceStats) -> None:
    info.trace_read = True
    info.steps = summary.steps
    info.turns = summary.turns
    info.tool_calls = summary.tool_calls
    info.errors = summary.errors
    info.phases = summary.phases
    info.usage = summary.usage
    info.malformed_lines = stats.malformed
    info.torn = stats.torn
    info.started_at = info.started_at or summary.started_at
    info.cwd = info.cwd or summary.cwd
    info.input_summary = info.input_summary or summary.input_summary
    if not info.has_meta:
        # No meta: the trace is all there is, and its `end` record decides.
        info.session_id = summary.session_id or info.session_id
        info.skill = summary.skill or info.skill
        info.ended_at = summary.ended_at
        info.outcome = summary.outcome
        info.reason = summary.reason
        info.summary = summary.summary


def load_info(
    ref: SessionRef,
    *,
    stats: ScanStats | None = None,
    with_trace: bool | None = None,
) -> SessionInfo | None:
    """Summarize one session; None when the directory holds neither meta.json nor trace.jsonl.

    ``with_trace``: None reads the trace only when meta.json cannot answer
    (see ``needs_trace``); True always; False never.
    """
    meta = read_meta(ref.meta_path)
    if stats is not None:
        stats.metas_read += 1
    if meta is not None:
        info = _info_from_meta(ref, meta)
    elif ref.trace_path.is_file():
        info = SessionInfo(ref=ref, session_id=ref.session_id, skill=ref.skill)
    else:
        return None
    read = needs_trace(meta) if with_trace is None else with_trace
    if read:
        if stats is not None:
            stats.traces_read += 1
        tstats = TraceStats()
        summary = TraceSummary()
        for entry in iter_trace(ref.trace_path, tstats):
            summary.add(entry)
        _apply_trace(info, summary, tstats)
    return info


@dataclass(slots=True)
class Session:
    """A session fully read: its summary, every valid record, and what reading found."""

    info: SessionInfo
    entries: list[Entry]
    stats: TraceStats


def load_session(ref: SessionRef) -> Session:
    """Read a whole session (meta.json and every record of trace.jsonl)."""
    meta = read_meta(ref.meta_path)
    info = (
        _info_from_meta(ref, meta)
        if meta is not None
        else SessionInfo(ref=ref, session_id=ref.session_id, skill=ref.skill)
    )
    tstats = TraceStats()
    summary = TraceSummary()
    entries = []
    for entry in iter_trace(ref.trace_path, tstats):
        summary.add(entry)
        entries.append(entry)
    _apply_trace(info, summary, tstats)
    return Session(info, entries, tstats)


def scan(
    roots: Sequence[Path],
    window: Window | None = None,
    *,
    skill: str | None = None,
    stats: ScanStats | None = None,
    refs: Iterable[SessionRef] | None = None,
) -> list[SessionInfo]:
    """Summaries of the sessions in ``window`` (by start time), newest first."""
    infos = []
    source = refs if refs is not None else iter_refs(roots, window, skill=skill, stats=stats)
    for ref in source:
        info = load_info(ref, stats=stats)
        if info is None:
            continue
        if skill is not None and info.skill != skill:
            continue
        if window is not None:
            start = info.started
            if start is not None and not window.contains(start):
                continue
        infos.append(info)
    infos.sort(key=lambda i: i.sort_key, reverse=True)
    return infos


def _is_session_dir(path: Path) -> bool:
    return (path / META_FILE).is_file() or (path / TRACE_FILE).is_file()


def find_session(roots: Sequence[Path], ident: str) -> SessionRef:
    """The session whose id is ``ident`` or starts with it (case-insensitively), across roots.

    An exact id wins over prefixes. ``ident`` may also be a session directory's path.
    Raises SessionNotFound or AmbiguousSession.
    """
    if not ident:
        raise SessionNotFound("empty session id")
    if "/" in ident:
        path = Path(ident).absolute()
        if path.is_dir() and _is_session_dir(path):
            return SessionRef(path.parents[2], path.parent.parent.name, path.parent.name, path.name)
        raise SessionNotFound(f"no session directory at {ident}")
    exact: list[SessionRef] = []
    prefixed: list[SessionRef] = []
    lowered = ident.lower()
    for day, holders in date_dirs(roots):
        for root in holders:
            for sk in _subdirs(root / day):
                base = root / day / sk
                for sid in _subdirs(base):
                    if not sid.lower().startswith(lowered) or not _is_session_dir(base / sid):
                        continue
                    (exact if sid == ident else prefixed).append(SessionRef(root, day, sk, sid))
    matches = exact or prefixed
    if not matches:
        where = ", ".join(str(r) for r in roots)
        raise SessionNotFound(f"no session matching {ident!r} under {where}")
    if len(matches) > 1:
        raise AmbiguousSession(ident, matches)
    return matches[0]


def read_blob(session_dir: Path, value: Any) -> bytes | None:
    """The content of a spilled string ``{"$blob": "sha256:<hex>", "size": n}``, if present."""
    if not isinstance(value, dict):
        return None
    ref = value.get("$blob")
    match = BLOB_RE.match(ref) if isinstance(ref, str) else None
    if match is None:
        return None
    try:
        return (session_dir / "blobs" / match.group(1)).read_bytes()
    except OSError:
        return None


def is_blob(value: Any) -> bool:
    """Whether ``value`` is a spilled-string reference."""
    return isinstance(value, dict) and isinstance(value.get("$blob"), str)


def dir_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total

