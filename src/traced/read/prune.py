"""Retention: which sessions go, removing them safely, and how much disk a root uses.

One home for the decision, shared by ``traced prune`` and the daemon's daily
``retention`` pass. ``judge`` is the rule (pure); ``plan`` reads the files and
applies it; ``remove`` deletes what a plan chose; ``disk_usage`` sizes a root.

The rule, for a session directory ``<root>/<date>/<skill>/<id>`` (DESIGN §2):

- **ended** (``meta.json`` has ``ended_at``; without a meta.json, the trace's
  last record is ``end``): removed when it ended before the cutoff (its
  ``ended_at``, else ``started_at``, else its last write);
- **abandoned** (not ended): removed when its *last write* (the newest mtime
  of anything in the directory: trace.jsonl, meta.json, blobs, artifacts) is
  before the cutoff and at least ``ABANDONED_FLOOR_S`` (1 day) ago, and no
  running daemon holds it (open, recently ended, or another writer's it watches).

Safety: only real directories below a root are walked (symlinks are never
followed, a root reached twice through a symlink is read once); files are read
with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO never blocks); a session is first
renamed aside to a hidden name (readers skip it), judged again, then deleted
with ``shutil.rmtree(dir_fd=…)``, or renamed back when it changed meanwhile.
A session that vanished (another prune) is skipped, not an error; an aside
directory an interrupted removal left for an hour is removed as a ``leftover``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from traced.format import layout
from traced.read.trace import decode_line
from traced.read.window import parse_epoch

DAY: Final = 86400.0
ABANDONED_FLOOR_S: Final = DAY
"""An unfinished session is never abandoned before a day without writes, whatever the cutoff."""
MAX_META: Final = 16 * 1024 * 1024
"""Largest meta.json read (bytes); a bigger one counts as unreadable."""
TAIL: Final = 64 * 1024
"""Bytes read from a trace's end to find its last record."""
ASIDE_PREFIX: Final = ".prune-"
"""Hidden name a session takes while it is being removed."""
AGE_RE: Final = re.compile(r"\s*(\d{1,6})\s*([hdw])\s*\Z")
UNITS: Final = {"h": 3600.0, "d": DAY, "w": 7 * DAY}

Reason = Literal["ended", "abandoned", "leftover"]
"""``leftover``: a session renamed aside by a removal that did not finish (a crash, a power cut)."""
LEFTOVER_AFTER_S: Final = 3600.0
"""An aside directory untouched this long is a leftover (a removal in progress takes seconds)."""
Held = Callable[[str, str], bool]
"""``held(session_id, path)``: whether a running daemon holds that session."""
Claim = Callable[[Callable[[], bool]], bool]
"""Runs the "not held? then rename aside" step; the daemon runs it on its event loop, so that no
session can be opened between the check and the rename."""


def _direct(step: Callable[[], bool]) -> bool:
    return step()


def _never(_sid: str, _path: str) -> bool:
    return False


def parse_age(text: str) -> float:
    """Seconds in an age such as ``30d``, ``2w`` or ``12h``. Raises ValueError."""
    match = AGE_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"bad age {text!r}: use a number of hours, days or weeks, e.g. 12h, 30d, 2w")
    return int(match.group(1)) * UNITS[match.group(2)]


def parse_retention(text: str) -> float | None:
    """The ``retention`` setting in seconds; None when off (``""`` or ``"off"``).

    Raises ValueError for anything else but an age of at least one day: a zero
    retention would delete every finished session at each pass (Claude Code's
    ``cleanupPeriodDays = 0`` did just that to its users' transcripts).
    """
    if not isinstance(text, str):
        raise ValueError(f'retention must be a string such as "90d" or "off", not {text!r}')
    if text.strip().lower() in ("", "off"):
        return None
    try:
        seconds = parse_age(text)
    except ValueError:
        raise ValueError(f'bad retention {text!r}: use "off" or an age such as "90d", "12w"') from None
    if seconds < DAY:
        raise ValueError(f'retention {text!r} is under a day: it would delete sessions hours after they end; '
                         'use at least "1d", or "off" to keep everything')
    return seconds


# --------------------------------------------------------------------------- the rule


@dataclass(frozen=True, slots=True)
class Facts:
    """What a session's files say, for the rule (epoch seconds)."""

    ended: bool
    ended_at: float | None
    started_at: float | None
    last_write: float
    """Newest mtime in the session directory (lstat: symlinks are not followed)."""


def judge(facts: Facts, *, cutoff: float, now: float, held: bool) -> Reason | None:
    """Why the session goes (``ended`` or ``abandoned``), or None when it stays."""
    if held:
        return None
    if facts.ended:
        when = facts.ended_at or facts.started_at or facts.last_write
        return "ended" if when < cutoff else None
    if facts.last_write < min(cutoff, now - ABANDONED_FLOOR_S):
        return "abandoned"
    return None


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read(path: str, limit: int, tail: bool = False) -> bytes | None:
    """Up to ``limit`` bytes of a regular file (its end with ``tail``); None when not one or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (not tail and st.st_size > limit):
            return None
        offset = max(st.st_size - limit, 0) if tail else 0
        return os.pread(fd, limit, offset)
    except OSError:
        return None
    finally:
        os.close(fd)


def last_write(path: str) -> float:
    """Newest mtime of ``path`` and everything below it (not following symlinks); 0.0 when unreadable."""
    newest = 0.0
    try:
        newest = os.lstat(path).st_mtime
    except OSError:
        return newest
    for dirpath, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                pass
    return newest


def _trace_facts(trace: str) -> tuple[bool, float | None, float | None]:
    """(ended, ended_at, started_at) from a trace alone: its last record is ``end``?"""
    head = _read(trace, TAIL) if _regular(trace) else None
    started = None
    if head:
        first = decode_line(head.split(b"\n", 1)[0])
        if isinstance(first, dict):
            started = parse_epoch(first.get("ts") or first.get("timestamp"))
    data = _read(trace, TAIL, tail=True)
    if not data:
        return False, None, started
    for line in reversed(data.rstrip(b"\n").split(b"\n")):
        rec = decode_line(line)
        if not isinstance(rec, dict):
            continue  # a torn or broken last line: look at the one before
        if rec.get("phase") == "end":
            return True, parse_epoch(rec.get("ts") or rec.get("timestamp")), started
        return False, None, started
    return False, None, started


SESSION_ENTRIES = frozenset({layout.TRACE, layout.META, layout.TORN, layout.BLOBS, layout.ARTIFACTS})
"""What a session directory holds (besides hidden temp files): anything else means it is not
only a session's, e.g. a directory that became a root (``--target DIR``) with files of its own."""


def only_session_files(path: str) -> bool:
    """Whether every entry of ``path`` is a session's (``SESSION_ENTRIES`` or a hidden temp file)
    or a symlink (removed as a link: what it points to stays)."""
    try:
        with os.scandir(path) as entries:
            return all(e.name in SESSION_ENTRIES or (e.name.startswith(".") and e.name.endswith(".tmp"))
                       or e.is_symlink() for e in entries)
    except OSError:
        return False


def facts_of(path: str) -> Facts | None:
    """The facts of the session directory ``path``; None when it holds neither meta.json nor trace.jsonl."""
    meta_path = os.path.join(path, layout.META)
    trace_path = os.path.join(path, layout.TRACE)
    has_meta, has_trace = _regular(meta_path), _regular(trace_path)
    if not has_meta and not has_trace:
        return None
    written = last_write(path)
    data = _read(meta_path, MAX_META) if has_meta else None
    meta = decode_line(data) if data else None
    if isinstance(meta, dict):
        return Facts(
            ended=layout.meta_ended(meta),
            ended_at=parse_epoch(meta.get("ended_at")),
            started_at=parse_epoch(meta.get("started_at")),
            last_write=written,
        )
    # no meta.json, or one that cannot be read: the trace decides, as for every reader
    ended, ended_at, started = _trace_facts(trace_path)
    return Facts(ended=ended, ended_at=ended_at, started_at=started, last_write=written)


# --------------------------------------------------------------------------- planning


@dataclass(slots=True)
class Candidate:
    """A session a plan removes."""

    root: str
    date: str
    skill: str
    session_id: str
    reason: Reason
    at: float
    """Epoch the rule went by: when it ended, or its last write (abandoned)."""
    bytes: int
    """Apparent size of its files (sum of st_size, symlinks not followed)."""

    @property
    def path(self) -> str:
        """The session directory."""
        return os.path.join(self.root, self.date, self.skill, self.session_id)

    def to_json(self) -> dict[str, Any]:
        """``{session_id, skill, date, root, path, bytes, reason, at}`` (``at`` in ISO 8601 UTC)."""
        return {
            "session_id": self.session_id, "skill": self.skill, "date": self.date, "root": self.root,
            "path": self.path, "bytes": self.bytes, "reason": self.reason, "at": iso(self.at),
        }


@dataclass(slots=True)
class Plan:
    """What ``plan`` chose, and what it kept for a reason worth telling."""

    cutoff: float
    candidates: list[Candidate] = field(default_factory=list)
    held: int = 0
    """Sessions the rule would take but a running daemon holds."""
    foreign: list[str] = field(default_factory=list)
    """Session directories the rule would take that hold files no session has: kept."""
    scanned: int = 0


def iso(epoch: float) -> str:
    """ISO 8601 UTC with a ``Z``, to the second."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def real_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """``roots`` as absolute paths, each real directory once (a root reached through a symlink counts once)."""
    seen: set[str] = set()
    out: list[str] = []
    for root in roots:
        absolute = os.path.abspath(root)
        real = os.path.realpath(absolute)
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        out.append(absolute)
    return out


def plan(
    roots: Sequence[str | os.PathLike[str]],
    older_than: float,
    *,
    now: float | None = None,
    held: Held = _never,
    abandoned: bool = True,
) -> Plan:
    """The sessions under ``roots`` that the rule removes at ``older_than`` seconds of age, oldest first.

    ``held`` tells the sessions a running daemon holds (always kept);
    ``abandoned`` False keeps every unfinished session (when whether the
    daemon holds them is unknown). Only date directories up to the cutoff's
    date (plus a day for writers that name them in local time) are opened.
    """
    now = time.time() if now is None else now
    cutoff = now - older_than
    until = datetime.fromtimestamp(cutoff + DAY, UTC).date().isoformat()
    result = Plan(cutoff=cutoff)
    for root in real_roots(roots):
        for day, skill, sid in layout.walk_sessions(root, hi=until):
            path = layout.session_dir(root, day, skill, sid)
            facts = facts_of(path)
            if facts is None:
                continue
            result.scanned += 1
            if not facts.ended and not abandoned:
                continue
            reason = judge(facts, cutoff=cutoff, now=now, held=False)
            if reason is None:
                continue
            if held(sid, path):
                result.held += 1
                continue
            if not only_session_files(path):  # never delete what traced did not write
                result.foreign.append(path)
                continue
            at = facts.last_write if reason == "abandoned" else (
                facts.ended_at or facts.started_at or facts.last_write)
            result.candidates.append(Candidate(root, day, skill, sid, reason, at, layout.dir_size(path)))
        result.candidates += _leftovers(root, until, now)
    result.candidates.sort(key=lambda c: (c.date, c.root, c.skill, c.session_id))  # oldest first
    return result


def _leftovers(root: str, until: str, now: float) -> list[Candidate]:
    """Aside directories that an interrupted removal left (hidden: no reader sees them, but they use disk)."""
    found = []
    for day in layout.date_dirs(root, hi=until):
        for skill in layout.subdirs(os.path.join(root, day)):
            try:
                with os.scandir(os.path.join(root, day, skill)) as it:
                    names = [e.name for e in it if e.name.startswith(ASIDE_PREFIX) and e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for name in names:
                path = os.path.join(root, day, skill, name)
                written = last_write(path)
                if written < now - LEFTOVER_AFTER_S:
                    found.append(Candidate(root, day, skill, name, "leftover", written, layout.dir_size(path)))
    return found


# --------------------------------------------------------------------------- removing


@dataclass(slots=True)
class Removal:
    """What ``remove`` did."""

    removed: list[Candidate] = field(default_factory=list)
    kept: list[Candidate] = field(default_factory=list)
    """Chosen, but written to or held by the time it was removed: left in place."""
    vanished: int = 0
    """Gone before it could be removed (another prune): not an error."""
    dirs_removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        """Sum of the removed sessions' sizes (bytes)."""
        return sum(c.bytes for c in self.removed)


def remove(
    candidates: Iterable[Candidate],
    older_than: float,
    *,
    now: float | None = None,
    held: Held = _never,
    claim: Claim = _direct,
) -> Removal:
    """Delete the ``candidates`` of a plan, judging each again right before; then empty skill and date dirs.

    Never raises for one session: failures are collected in ``errors``. ``claim`` runs the held
    check and the rename aside together (see ``Claim``).
    """
    now = time.time() if now is None else now
    cutoff = now - older_than
    out = Removal()
    touched: set[tuple[str, str, str]] = set()
    for cand in candidates:
        touched.add((cand.root, cand.date, cand.skill))
        try:
            _remove_one(cand, cutoff, now, out, held=held, claim=claim)
        except OSError as e:
            out.errors.append(f"{cand.path}: {e.strerror or e}")
    for root, day, skill in sorted(touched):
        for parts in ((day, skill), (day,)):
            _rmdir_empty(root, parts, out)
    return out


def _remove_one(cand: Candidate, cutoff: float, now: float, out: Removal, *, held: Held, claim: Claim) -> None:
    try:
        dfd = layout.open_dir_nofollow(cand.root, (cand.date, cand.skill), create=False)
    except FileNotFoundError:
        out.vanished += 1
        return
    try:
        aside = f"{ASIDE_PREFIX}{cand.session_id}.{os.getpid()}"
        try:
            st = os.stat(cand.session_id, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            out.vanished += 1
            return
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(0, "not a directory (a symlink?): left alone")
        if cand.reason == "leftover":  # already aside: finish the job
            aside = cand.session_id
            errors = _rmtree(aside, dfd)
            if errors:
                out.errors.append(f"{cand.path}: {errors[0]}")
            else:
                out.removed.append(cand)
            return

        def take() -> bool:
            if held(cand.session_id, cand.path):
                return False
            os.rename(cand.session_id, aside, src_dir_fd=dfd, dst_dir_fd=dfd)
            return True

        try:
            taken = claim(take)
        except FileNotFoundError:  # another prune took it between the stat and here
            out.vanished += 1
            return
        if not taken:
            out.kept.append(cand)
            return
        aside_path = os.path.join(cand.root, cand.date, cand.skill, aside)
        facts = facts_of(aside_path)
        still = facts is not None and judge(facts, cutoff=cutoff, now=now, held=False) is not None
        if not still:  # a writer came back meanwhile: put it back as it was
            os.rename(aside, cand.session_id, src_dir_fd=dfd, dst_dir_fd=dfd)
            out.kept.append(cand)
            return
        size = layout.dir_size(aside_path)
        errors = _rmtree(aside, dfd)
        if errors:
            out.errors.append(f"{cand.path}: partly removed, the rest left at {aside_path}: {errors[0]}")
            return
        cand.bytes = size
        out.removed.append(cand)
    finally:
        os.close(dfd)


def _rmtree(name: str, dfd: int) -> list[str]:
    """``shutil.rmtree`` of ``name`` in the directory ``dfd`` (fd-based: symlinks are unlinked, never followed)."""
    errors: list[str] = []
    if sys.version_info >= (3, 12):
        shutil.rmtree(name, dir_fd=dfd, onexc=lambda _f, p, e: errors.append(f"{p}: {e}"))
    else:
        shutil.rmtree(name, dir_fd=dfd, onerror=lambda _f, p, e: errors.append(f"{p}: {e[1]}"))
    return errors


def _rmdir_empty(root: str, parts: tuple[str, ...], out: Removal) -> None:
    """Remove ``root/parts…`` when empty (never following a symlink)."""
    try:
        pfd = layout.open_dir_nofollow(root, parts[:-1], create=False)
    except OSError:
        return
    try:
        os.rmdir(parts[-1], dir_fd=pfd)
        out.dirs_removed.append(os.path.join(root, *parts))
    except OSError:
        pass  # not empty, gone, or not ours to remove
    finally:
        os.close(pfd)


# --------------------------------------------------------------------------- disk usage


@dataclass(slots=True)
class RootUsage:
    """Disk used by one root: its session directories and every regular file's size."""

    root: str
    sessions: int = 0
    bytes: int = 0
    """Apparent size (sum of st_size; ``du -sb`` counts the same), symlinks not followed."""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{root, sessions, bytes, error}``."""
        return {"root": self.root, "sessions": self.sessions, "bytes": self.bytes, "error": self.error}


def disk_usage(root: str | os.PathLike[str]) -> RootUsage:
    """Sessions and bytes under ``root`` (one scandir walk; never follows a symlink)."""
    usage = RootUsage(os.path.abspath(root))
    try:
        st = os.stat(root)
    except OSError as e:
        usage.error = e.strerror or str(e)
        return usage
    if not stat.S_ISDIR(st.st_mode):
        usage.error = "not a directory"
        return usage
    stack: list[tuple[str, int, bool]] = [(os.fspath(root), 0, True)]
    while stack:
        path, depth, in_layout = stack.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            hidden = entry.name.startswith(".")
                            ok = in_layout and not hidden and (depth > 0 or bool(layout.DATE_RE.match(entry.name)))
                            if ok and depth == 2:
                                usage.sessions += 1
                            stack.append((entry.path, depth + 1, ok and depth < 2))
                        elif entry.is_file(follow_symlinks=False):
                            usage.bytes += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
        except OSError:
            pass
    return usage
