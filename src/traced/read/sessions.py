"""Finding and summarizing session directories, straight from the files (no daemon).

The layout is DESIGN §2 (walked through ``format.layout``). A session may
have a trace but no meta, or a devboy ``meta.json`` that lacks traced's
counters: the trace then completes it. Scanning is cheap by design: date
directories outside a window are never opened, and a finished traced session
is summarized from its ``meta.json`` alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from traced.errors import AmbiguousSession, SessionNotFound
from traced.format import layout
from traced.format.accounting import usage_from_meta
from traced.format.records import Usage, count
from traced.read.trace import Entry, TraceStats, TraceSummary, decode_line, iter_trace
from traced.read.window import Window, parse_epoch

_decode = msgspec.json.decode


def reading_roots(given: Sequence[str | Path] | None = None) -> list[Path]:
    """The roots the reading commands read: ``given`` (``--root``), else every root the daemon has
    written to (its global root and those in ``roots.json``: ``--target repo``, a dir, ``serve --root``).
    Absolute: the file watcher reports absolute paths, and ``tail -f`` keys its offsets by them.
    One directory is read once, however many spellings name it (a symlink, ``..``, a name kept
    from before the daemon took targets by their real path): the first spelling is kept."""
    if given:
        return _one_each([Path(v).expanduser().absolute() for v in given])
    from traced.locations import default_root, state_dir

    extra = [Path(p).absolute() for p in layout.read_roots(state_dir())]
    return _one_each([default_root().absolute(), *(p for p in extra if p.is_dir())])


def _one_each(roots: list[Path]) -> list[Path]:
    """``roots`` without a directory named twice (compared by real path), in order."""
    seen: set[str] = set()
    out = []
    for root in roots:
        real = os.path.realpath(root)
        if real not in seen:
            seen.add(real)
            out.append(root)
    return out


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
        return self.path / layout.TRACE

    @property
    def meta_path(self) -> Path:
        """``<session>/meta.json``."""
        return self.path / layout.META


@dataclass(slots=True)
class ScanStats:
    """How much a scan touched (for tests and ``--json`` diagnostics)."""

    date_dirs: int = 0
    sessions: int = 0
    metas_read: int = 0
    traces_read: int = 0


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
        for name in layout.date_dirs(root, lo, hi):
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
            skills = [skill] if skill is not None else layout.subdirs(root / day)
            for sk in skills:
                for sid in layout.subdirs(root / day / sk):
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
    usage: Usage | None = None
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
            try:
                start = datetime.fromisoformat(self.ref.date).replace(tzinfo=UTC).timestamp()
            except ValueError:  # a directory named like a date that is none (9999-99-99)
                start = 0.0
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
            "usage": None if self.usage is None else msgspec.to_builtins(self.usage),
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
        data = layout.read_regular(path)
    except OSError:
        return None
    obj = decode_line(data)
    return obj if isinstance(obj, dict) else None


def _str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _version(meta: dict[str, Any]) -> str | None:
    """The skill's version: devboy's integer ``skill_version``, else traced's ``skill_version_text``."""
    value = meta.get("skill_version")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _str(meta, "skill_version") or _str(meta, "skill_version_text")


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
        skill_version=_version(meta),
        host=_str(meta, "host"),
        cwd=_str(meta, "cwd"),
        steps=count(meta["steps"]) if "steps" in meta else None,
        turns=count(meta["turns"]) if "turns" in meta else None,
        tool_calls=count(meta.get("tool_calls")),
        errors=count(meta.get("errors")),
        phases={str(k): count(v) for k, v in phases.items()} if isinstance(phases, dict) else None,
        usage=usage_from_meta(meta.get("usage")),
        malformed_lines=count(meta.get("malformed_lines")),
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


SHORT_ID = 8
"""Fewest characters of a session id shown in tables (ULIDs share their first ~6 within a day)."""


def all_session_ids(roots: Sequence[Path]) -> list[str]:
    """Every session directory name under ``roots`` (names only: nothing is opened)."""
    ids = []
    for day, holders in date_dirs(roots):
        for root in holders:
            for sk in layout.subdirs(root / day):
                ids.extend(layout.subdirs(root / day / sk))
    return ids


def unique_prefixes(ids: Iterable[str], universe: Iterable[str], least: int = SHORT_ID) -> dict[str, str]:
    """The shortest prefix of each of ``ids`` (at least ``least`` chars) that no other id of
    ``universe`` shares, case-insensitively, as ``find_session`` matches them (git-style)."""
    ordered = sorted({u.lower() for u in universe} | {i.lower() for i in ids})
    index = {u: n for n, u in enumerate(ordered)}

    def common(a: str, b: str) -> int:
        n = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            n += 1
        return n

    out = {}
    for ident in ids:
        low = ident.lower()
        n = index[low]
        need = 0
        if n > 0:
            need = max(need, common(low, ordered[n - 1]) + 1)
        if n + 1 < len(ordered):
            need = max(need, common(low, ordered[n + 1]) + 1)
        out[ident] = ident[: max(need, least)]
    return out


def find_session(roots: Sequence[Path], ident: str) -> SessionRef:
    """The session whose id is ``ident`` or starts with it (case-insensitively), across roots.

    An exact id wins over prefixes. ``ident`` may also be a session directory's path.
    Raises SessionNotFound or AmbiguousSession.
    """
    if not ident:
        raise SessionNotFound("empty session id")
    if "/" in ident:
        path = Path(ident).absolute()
        if path.is_dir() and layout.is_session_dir(path):
            return SessionRef(path.parents[2], path.parent.parent.name, path.parent.name, path.name)
        raise SessionNotFound(f"no session directory at {ident}")
    exact: list[SessionRef] = []
    prefixed: list[SessionRef] = []
    lowered = ident.lower()
    for day, holders in date_dirs(roots):
        for root in holders:
            for sk in layout.subdirs(root / day):
                base = root / day / sk
                for sid in layout.subdirs(base):
                    if not sid.lower().startswith(lowered) or not layout.is_session_dir(base / sid):
                        continue
                    (exact if sid == ident else prefixed).append(SessionRef(root, day, sk, sid))
    matches = exact or prefixed
    if not matches:
        where = ", ".join(str(r) for r in roots)
        raise SessionNotFound(f"no session matching {ident!r} under {where}")
    if len(matches) > 1:
        raise AmbiguousSession(ident, matches)
    return matches[0]
