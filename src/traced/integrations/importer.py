"""``traced import``: the agents' own transcripts of past sessions -> traced sessions.

Sources (``find``):

- ``claude-code``: ``<config>/projects/**/<session_id>.jsonl``, ``<config>`` being each directory
  of ``$CLAUDE_CONFIG_DIR`` (comma-separated), else ``~/.claude``; a session's subagents are
  ``<session_id>/subagents/agent-<id>.jsonl`` beside it, or, from older versions,
  ``agent-<id>.jsonl`` files whose lines name the session (``transcript.Reader``).
- ``codex``: ``$CODEX_HOME/sessions/**/rollout-*.jsonl`` (``CODEX_HOME`` defaults to ``~/.codex``;
  ``codex.rollout.Rollout``).

Everything goes through the daemon (or the client's spool while it is away), so steps and turns
are assigned in the one place that assigns them; the session id is the agent's own, the skill
the one its hook records under, the start and end times the transcript's.

Idempotent, durably: every record is sent under the client id ``transcript.CLIENT_ID`` with a
seq hashed from its source id (the response's ``message.id``, the tool call's id, the prompt's
line), so the daemon drops a record it already wrote; and before sending, the session's trace
on disk is read, and a record whose ``client_seq`` (or, for an LLM call, ``message_id``) is
already there is not sent at all, whatever the daemon remembers. A session recorded by the hooks
(its ``start`` does not say ``import``) only gets the LLM calls it lacks: its prompts and tool
calls are the hooks'. A transcript written to in the last ``LIVE_AFTER`` seconds belongs to a
conversation that may still be going on: its session is left open (the hooks, or the idle
timeout, end it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from traced.format import layout, vocab
from traced.integrations.claude_code.transcript import CLIENT_ID, Item, Reader, complete_lines, source_seq

AGENTS: Final = ("claude-code", "codex")
SKILLS: Final = {"claude-code": "claude-code", "codex": "codex"}
"""The skill each agent's sessions are recorded under: the one its hook uses."""
WORKERS: Final = 4
"""Connections an import uses side by side."""
LIVE_AFTER: Final = 300.0
"""Seconds since a transcript's last write under which its conversation may still be going on."""


@dataclass(slots=True)
class Source:
    """One session's transcript(s) on disk."""

    agent: str
    path: Path
    session_id: str = ""
    subagents: list[tuple[Path, str]] = field(default_factory=list)
    """(path, agent_id) of its subagents' transcripts (Claude Code)."""


@dataclass(slots=True)
class Loaded:
    """A transcript read: the session's records and what the session needs."""

    session_id: str
    cwd: str = ""
    started: float | None = None
    ended: float | None = None
    items: list[Item] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    mtime: float = 0.0
    malformed: int = 0


@dataclass(slots=True)
class Existing:
    """What a session's trace on disk already holds."""

    keys: set[str] = field(default_factory=set)
    """``client_seq`` of every record."""
    message_ids: set[str] = field(default_factory=set)
    imported: bool = False
    """Its ``start`` was written by an import (else the hooks recorded it)."""


@dataclass(slots=True)
class Totals:
    """What an import did."""

    found: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    records: int = 0
    llm_calls: int = 0
    spooled: bool = False
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The totals as a JSON object (``traced import --json``)."""
        return {"found": self.found, "new": self.new, "updated": self.updated, "unchanged": self.unchanged,
                "failed": self.failed, "records": self.records, "llm_calls": self.llm_calls,
                "spooled": self.spooled, "errors": self.errors[:20]}


# ============================================================================ finding transcripts


def claude_dirs() -> list[Path]:
    """Claude Code's config dirs: ``$CLAUDE_CONFIG_DIR`` (comma-separated), else ``~/.claude``."""
    raw = os.environ.get("CLAUDE_CONFIG_DIR", "")
    dirs = [Path(p.strip()).expanduser() for p in raw.split(",") if p.strip()]
    return dirs or [Path.home() / ".claude"]


def codex_home() -> Path:
    """``$CODEX_HOME``, else ``~/.codex``."""
    raw = os.environ.get("CODEX_HOME", "")
    return Path(raw).expanduser() if raw else Path.home() / ".codex"


def default_paths(agent: str) -> list[Path]:
    """Where ``agent`` keeps its transcripts."""
    if agent == "codex":
        return [codex_home() / "sessions"]
    return [d / "projects" for d in claude_dirs()]


def _files(paths: Iterable[Path], pattern: str) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(p for p in path.rglob(pattern) if p.is_file())
        elif path.is_file():
            out.append(path)
    return out


def find(agent: str, paths: Sequence[str | Path] = ()) -> list[Source]:
    """The sessions to import from ``paths`` (files or directories; default: the agent's own dir),
    oldest transcript first, each session once."""
    given = [Path(p).expanduser() for p in paths] or default_paths(agent)
    found: dict[str, Source] = {}
    if agent == "codex":
        for f in _files(given, "rollout-*.jsonl"):
            stem = f.stem
            sid = stem[-36:] if len(stem) > 44 and stem[-37] == "-" else ""
            found.setdefault(sid or str(f), Source(agent, f, sid))
    else:
        legacy: list[Path] = []
        for f in _files(given, "*.jsonl"):
            if f.parent.name == "subagents":
                continue  # a subagent's: read with its session
            if f.name.startswith("agent-"):
                legacy.append(f)  # older versions: <project>/agent-<id>.jsonl, its session in its lines
                continue
            src = found.setdefault(f.stem, Source(agent, f, f.stem))
            sub = f.parent / f.stem / "subagents"
            if sub.is_dir() and not src.subagents:
                src.subagents = [(p, p.stem[6:]) for p in sorted(sub.glob("agent-*.jsonl"))]
        for f in legacy:
            parent = found.get(_first_session_id(f))
            if parent is not None and all(p != f for p, _ in parent.subagents):
                parent.subagents.append((f, f.stem[6:]))
    sources = list(found.values())
    sources.sort(key=lambda s: _mtime(s.path))
    return sources


def _first_session_id(path: Path) -> str:
    """The ``sessionId`` of the first line of ``path`` that has one ('' if none in the first 64 KiB)."""
    import json

    try:
        with os.fdopen(layout.open_regular(path), "rb") as f:
            head = f.read(65536)
    except OSError:
        return ""
    for line in head.split(b"\n")[:20]:
        try:
            sid = json.loads(line).get("sessionId")
        except (ValueError, AttributeError):
            continue
        if isinstance(sid, str) and sid:
            return sid
    return ""


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ============================================================================ reading them


def load(source: Source) -> Loaded:
    """Read a source's transcript(s) whole. Raises OSError."""
    if source.agent == "codex":
        return _load_codex(source)
    return _load_claude(source)


def _lines(path: Path) -> list[bytes]:
    lines, _ = complete_lines(layout.read_regular(path))
    return lines


def _load_claude(source: Source) -> Loaded:
    sid = source.session_id
    main = Reader(sid, full=True)
    main.feed_all(_lines(source.path))
    loaded = Loaded(sid, cwd=main.cwd, started=main.first_ts, ended=main.last_ts, mtime=_mtime(source.path),
                    malformed=main.malformed)
    loaded.labels = {"transcript_path": str(source.path)}
    if main.version:
        loaded.labels["agent_version"] = main.version
    items = _settled(main, source.path)
    for path, agent in source.subagents:
        sub = Reader(sid, agent, full=True)
        sub.feed_all(_lines(path))
        items.extend(_settled(sub, path))
        loaded.malformed += sub.malformed
        loaded.mtime = max(loaded.mtime, _mtime(path))
        for ts in (sub.first_ts, sub.last_ts):
            if ts is not None:
                loaded.started = ts if loaded.started is None else min(loaded.started, ts)
                loaded.ended = ts if loaded.ended is None else max(loaded.ended, ts)
    if source.subagents:  # interleave the subagents' records with the main ones by time (stable)
        items.sort(key=lambda i: i.ts if i.ts is not None else float("inf"))
    loaded.items = items
    return loaded


def _settled(reader: Reader, path: Path) -> list[Item]:
    """The reader's records, less the LLM call of a response that ends a transcript still being
    written (its next lines may hold its final usage; the hook counts it, whole, at its next event)."""
    items = reader.records()
    if reader.tail is not None and time.time() - _mtime(path) < LIVE_AFTER:
        items = [i for i in items if i.key != "llm:" + reader.tail.key]
    return items


def _load_codex(source: Source) -> Loaded:
    from traced.integrations.codex.rollout import Rollout

    roll = Rollout()
    for line in _lines(source.path):
        roll.feed(line)
    sid = roll.session_id or source.session_id
    loaded = Loaded(sid, cwd=roll.cwd, started=roll.first_ts, ended=roll.last_ts, items=roll.records(),
                    mtime=_mtime(source.path), malformed=roll.malformed)
    loaded.labels = {"transcript_path": str(source.path)}
    if roll.version:
        loaded.labels["agent_version"] = roll.version
    return loaded


# ============================================================================ what is there already


def session_index(roots: Sequence[Path]) -> dict[str, Path]:
    """session id -> its directory, for every session under ``roots`` (the first one found)."""
    from traced.read.sessions import iter_refs

    index: dict[str, Path] = {}
    for ref in iter_refs(roots):
        index.setdefault(ref.session_id, ref.path)
    return index


def existing(sdir: Path) -> Existing:
    """What the trace in ``sdir`` holds (tolerant: unreadable lines are skipped)."""
    from traced.read.trace import iter_trace

    found = Existing()
    for entry in iter_trace(sdir / layout.TRACE):
        key = entry.raw.get("client_seq")
        if isinstance(key, str):
            found.keys.add(key)
        if entry.phase == vocab.LLM_CALL:
            mid = entry.get("message_id")
            if isinstance(mid, str):
                found.message_ids.add(mid)
        elif entry.phase == vocab.START and entry.pos == 1:
            value = entry.get("input")
            found.imported = isinstance(value, dict) and value.get("source") == "import"
    return found


def missing(loaded: Loaded, have: Existing | None) -> list[tuple[Item, int]]:
    """(record, seq) of what ``loaded`` has and the trace lacks."""
    out = []
    for item in loaded.items:
        seq = source_seq(item.key)
        if have is not None:
            if not have.imported and item.phase != vocab.LLM_CALL:
                continue  # the hooks recorded the prompts and tool calls
            if f"{CLIENT_ID}:{seq}" in have.keys:
                continue
            mid = item.payload.get("message_id")
            if item.phase == vocab.LLM_CALL and isinstance(mid, str) and mid in have.message_ids:
                continue
        out.append((item, seq))
    return out


# ============================================================================ importing


def import_one(client: Any, loaded: Loaded, skill: str, have: Existing | None, *, target: str = "global",
               now: float | None = None) -> tuple[str, int, int]:
    """Send one session's missing records; (outcome, records sent, llm_calls sent).

    outcome: ``new`` (the session did not exist), ``updated``, ``unchanged``. Raises
    RequestError and DaemonUnavailable.
    """
    if not layout.valid_name(loaded.session_id):
        raise ValueError(f"invalid session id {loaded.session_id!r}")
    now = time.time() if now is None else now
    live = now - loaded.mtime < LIVE_AFTER
    todo = missing(loaded, have)
    if have is not None and not todo:
        return "unchanged", 0, 0
    sid = loaded.session_id
    opened = client.open(
        skill, session_id=sid, target=target, cwd=loaded.cwd or "/", owner_pid=-1,
        input={"source": "import"}, meta=loaded.labels, ts=loaded.started, reopen=False,
    )
    late = bool(getattr(opened, "ended", False))
    calls = 0
    for item, seq in todo:
        client.emit(sid, item.phase, item.payload, ts=item.ts, late=late, seq=seq, ack=False)
        calls += item.phase == vocab.LLM_CALL
    if late or live:
        client.sync()
    else:
        client.end(sid, vocab.SUCCESS, None, ts=loaded.ended)
    return ("new" if have is None else "updated"), len(todo), calls


def run_import(agent: str, paths: Sequence[str | Path], connect: Callable[[], Any], roots: Sequence[Path], *,
               skill: str | None = None, target: str = "global", workers: int = WORKERS,
               progress: Callable[[int, int], None] | None = None) -> Totals:
    """Import every session of ``agent`` found under ``paths``; never raises for one bad transcript
    (it is counted in ``failed`` and named in ``errors``).

    ``connect()`` makes a client (a ``traced.Client``, entered here); ``workers`` of them import
    sessions side by side, since the daemon's time goes to each session's files (its start, its
    ``meta.json``), which it writes in parallel. Returns the totals; ``spooled`` in them says
    whether the daemon was away (the records then wait in the spool).
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from traced.errors import DaemonUnavailable, RequestError

    sources = find(agent, paths)
    totals = Totals(found=len(sources))
    index = session_index(roots)
    skill = skill or SKILLS[agent]
    lock = threading.Lock()
    local = threading.local()
    clients: list[Any] = []
    done = 0

    def one(source: Source) -> None:
        nonlocal done
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = connect().__enter__()
            with lock:
                clients.append(client)
        try:
            loaded = load(source)
            if not loaded.items and loaded.started is None:
                if loaded.malformed:  # not a transcript at all (random bytes, another format)
                    raise ValueError(f"no transcript records: {loaded.malformed} lines unreadable")
                outcome, records, calls = "unchanged", 0, 0
            else:
                sdir = index.get(loaded.session_id)
                have = existing(sdir) if sdir is not None else None
                outcome, records, calls = import_one(client, loaded, skill, have, target=target)
        except (OSError, ValueError, RequestError, DaemonUnavailable) as e:
            with lock:
                totals.failed += 1
                totals.errors.append(f"{source.path}: {e}")
        else:
            with lock:
                setattr(totals, outcome, getattr(totals, outcome) + 1)
                totals.records += records
                totals.llm_calls += calls
        with lock:
            done += 1
            if progress is not None:
                progress(done, len(sources))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="traced-import") as pool:
            for future in [pool.submit(one, s) for s in sources]:
                future.result()
    finally:
        for client in clients:
            totals.spooled = totals.spooled or bool(client.spooling)
            client.__exit__(None, None, None)
    return totals
