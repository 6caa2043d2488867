"""Open sessions and the one serialization point per session.

Every change to a session (open, append, close, finalize) runs here as a
synchronous critical section on the event loop's thread: ``prepare`` ->
``write(2)`` -> ``commit`` has no ``await`` inside, so no other writer,
connection or watcher can interleave with it. This replaces a per-session
actor task: same guarantee, no queue hop per event, and consecutive events
of one session coalesce into one write. Only fsync and the final meta.json
write leave the loop, to worker threads.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
import structlog

from traced import __version__, ids, paths
from traced.config import Config
from traced.errors import RequestError
from traced.journal import META, FdCache, Journal, JournalWriteError, scan, write_atomic
from traced.records import Meta, Record, format_ts, json_encoder, meta_decoder, summarize
from traced.session import Pending, SessionState

log = structlog.get_logger("traced.registry")

WRITER_ID: Final = f"traced {__version__}"
CLOSED_MEMORY: Final = 10000
HOST: Final = socket.gethostname()


@dataclass(slots=True)
class Live:
    """An open session: its state and its journal."""

    state: SessionState
    journal: Journal
    root: str
    owner_start: int | None = None
    """Start time (clock ticks since boot) of the owner, to tell pid reuse apart."""


@dataclass(slots=True)
class Stats:
    """Counters for ``traced status``."""

    started: float = field(default_factory=time.time)
    events_written: int = 0
    bytes_written: int = 0
    redactions: int = 0
    write_errors: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    finalized: dict[str, int] = field(default_factory=dict)
    torn_tails_moved: int = 0
    recent: list[tuple[float, int]] = field(default_factory=list)
    """(second, events) buckets for the last minute's rate."""

    def count_events(self, n: int) -> None:
        """Add ``n`` written events to the totals and the per-second buckets."""
        self.events_written += n
        now = int(time.monotonic())
        recent = self.recent
        if recent and recent[-1][0] == now:
            recent[-1] = (now, recent[-1][1] + n)
        else:
            recent.append((now, n))
            while recent and recent[0][0] < now - 60:
                recent.pop(0)

    def rate(self, window: float = 60.0) -> float:
        """Events per second over the last ``window`` seconds."""
        now = time.monotonic()
        total = sum(n for sec, n in self.recent if sec >= now - window)
        return total / window


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in ticks), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    return int(rest[19])


def peer_cwd(pid: int) -> str:
    """The working directory of a process, or '' when not readable."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


class Registry:
    """Session id -> open session; the only writer of session files."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.root_path()
        self.state_dir = paths.state_dir()
        self.open_dir = self.state_dir / "open"
        self.sessions: dict[str, Live] = {}
        self.closed: OrderedDict[str, str] = OrderedDict()
        self.fds = FdCache(config.fd_cache)
        self.stats = Stats()
        self.roots: set[str] = set()
        self._syncing: dict[str, anyio.Event] = {}
        self.on_write: list[Callable[[Live, list[Record]], None]] = []
        """Called after records reach the file (the event bus hooks in here)."""
        self.on_open: list[Callable[[Live], None]] = []
        """Called when a session opens or is re-adopted (watchers hook in here)."""
        self.on_close: list[Callable[[Live], None]] = []
        self.wedge_seconds = float(os.environ.get("TRACED_FAULT_WEDGE_SECONDS") or 0)
        """Test-only fault: a ``fault_wedge`` event blocks the writer this long."""

    # --- opening ----------------------------------------------------------

    def resolve_root(self, target: str, cwd: str, peer_uid: int) -> tuple[Path, tuple[str, ...], str | None]:
        """Where a target's sessions go: (trusted base, components below it, fallback reason).

        The components are created without following symlinks, so a repo that
        ships ``.devboy/sessions`` as a symlink cannot redirect writes.
        """
        if target in ("", "global"):
            return self.root, (), None
        if target == "repo":
            repo = paths.find_repo(cwd) if cwd else None
            if repo is None:
                return self.root, (), f"no .git or .devboy.toml above {cwd or '(unknown cwd)'}"
            return repo, (".devboy", "sessions"), None
        path = Path(target)
        if not path.is_absolute():
            raise RequestError("invalid_name", f"target must be global, repo or an absolute dir: {target!r}")
        try:
            st = os.stat(path)
        except OSError as e:
            raise RequestError("invalid_name", f"target {target!r}: {e.strerror}") from e
        if not os.path.isdir(path):
            raise RequestError("invalid_name", f"target {target!r} is not a directory")
        if st.st_uid != peer_uid:
            raise RequestError("forbidden", f"target {target!r} is not owned by uid {peer_uid}")
        return path, (), None

    def find_on_disk(self, root: Path, skill: str, session_id: str) -> Path | None:
        """An existing session directory for (skill, id) under ``root``, newest date first."""
        try:
            dates = sorted((d for d in os.listdir(root) if len(d) == 10), reverse=True)
        except OSError:
            return None
        for date in dates:
            candidate = root / date / skill / session_id
            if os.path.isfile(candidate / "trace.jsonl"):
                return candidate
        return None

    def open(
        self,
        *,
        skill: str,
        session_id: str = "",
        target: str = "global",
        cwd: str = "",
        owner_pid: int | None = None,
        peer_uid: int,
        idle_timeout: float = 0.0,
        input: Any = None,
        labels: dict[str, Any] | None = None,
        ts: float = 0.0,
        reopen_closed: bool = True,
    ) -> tuple[Live, bool, str | None]:
        """Start or resume a session. Returns (live, resumed, root fallback reason).

        Resuming a closed session reopens it (a ``start {resumed: true}``
        record), unless ``reopen_closed`` is false: then it is refused with
        ``session_closed``.
        """
        try:
            paths.check_name("skill", skill)
            if session_id:
                paths.check_name("session id", session_id)
        except paths.InvalidName as e:
            raise RequestError("invalid_name", str(e)) from e
        timeout = idle_timeout if idle_timeout > 0 else self.config.idle_timeout
        if session_id and session_id in self.sessions:
            live = self.sessions[session_id]
            if live.state.skill != skill:
                raise RequestError(
                    "invalid_name", f"session {session_id} belongs to skill {live.state.skill!r}"
                )
            if owner_pid:
                self.set_owner(live, owner_pid)
            apply_labels(live.state.m, labels)
            return live, True, None
        if len(self.sessions) >= self.config.max_open_sessions:
            raise RequestError("overloaded", f"{len(self.sessions)} sessions open: the limit")
        base, sub, fallback = self.resolve_root(target, cwd, peer_uid)
        root = base.joinpath(*sub)
        sid = session_id or ids.new_ulid()
        existing = self.find_on_disk(root, skill, sid) if session_id else None
        if existing is not None:
            if not reopen_closed and (sid in self.closed or _ended(existing)):
                raise RequestError("session_closed", f"session {sid} is closed")
            try:  # resuming must not follow a symlink planted below the root either
                os.close(paths.open_dir_nofollow(base, existing.relative_to(base).parts, create=False))
            except OSError as e:
                raise RequestError("forbidden", f"refusing {existing}: {e.strerror}") from e
            live = self._adopt(existing, root, reopen=True)
            live.state.idle_timeout = timeout
            apply_labels(live.state.m, labels)
            if owner_pid:
                self.set_owner(live, owner_pid)
            self._after_open(live)
            return live, True, fallback
        now = ts if ts > 0 else time.time()
        started = format_ts(now)
        date = started[:10]
        try:
            dfd = paths.open_dir_nofollow(base, (*sub, date, skill, sid))
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RequestError("forbidden", f"refusing a symlink below {base}: {e.strerror}") from e
            raise RequestError("io_error", f"cannot create session dir under {root}: {e.strerror}") from e
        os.close(dfd)
        sdir = root / date / skill / sid
        meta = Meta(
            session_id=sid,
            skill=skill,
            devboy_version=WRITER_ID,
            started_at=started,
            input_summary=summarize(input),
            host=HOST,
            cwd=cwd or None,
            target=target or "global",
        )
        apply_labels(meta, labels)
        state = SessionState(
            skill=skill, session_id=sid, dir=str(sdir), started_at=started, meta=meta,
            idle_timeout=timeout,
        )
        live = Live(state=state, journal=Journal(str(sdir), self.fds), root=str(root))
        start_payload: dict[str, Any] = {}
        if input is not None:
            start_payload["input"] = input
        if cwd:
            start_payload["cwd"] = cwd
        self.append(live, [Pending("start", start_payload, now)])
        if owner_pid:
            self.set_owner(live, owner_pid)
        self.sessions[sid] = live
        self.closed.pop(sid, None)
        self._write_meta_fast(live)
        self._mark_open(live)
        self.stats.sessions_opened += 1
        self._after_open(live)
        return live, False, fallback

    def _after_open(self, live: Live) -> None:
        self._note_root(live.root)
        for hook in self.on_open:
            hook(live)

    def set_owner(self, live: Live, pid: int) -> None:
        """Record ``pid`` as the session's owner (the watchers watch it)."""
        live.state.owner_pid = pid
        live.state.m.owner_pid = pid
        live.owner_start = proc_start_time(pid)

    def _adopt(self, sdir: Path, root: Path, *, reopen: bool) -> Live:
        """Load a session from disk: last step from the file's tail, never from memory."""
        tail = scan(str(sdir / "trace.jsonl"))
        self.stats.torn_tails_moved += 1 if tail.torn_bytes else 0
        if tail.torn_bytes:
            log.warning("torn_tail_moved", session_dir=str(sdir), bytes=tail.torn_bytes)
        try:
            meta = meta_decoder.decode((sdir / META).read_bytes())
        except (OSError, msgspec.DecodeError):
            meta = Meta(
                session_id=sdir.name, skill=sdir.parent.name, devboy_version=WRITER_ID,
                started_at=f"{sdir.parent.parent.name}T00:00:00.000000Z",
            )
        if tail.malformed:
            meta.malformed_lines = tail.malformed
        state = SessionState(
            skill=meta.skill, session_id=meta.session_id, dir=str(sdir),
            started_at=meta.started_at, step=tail.last_step, turn=tail.last_turn, meta=meta,
            owner_pid=meta.owner_pid,
        )
        meta.steps = tail.last_step
        for key, step in tail.keys:
            state.remember(key, step)
        live = Live(state=state, journal=Journal(str(sdir), self.fds), root=str(root))
        self.sessions[state.session_id] = live
        self.closed.pop(state.session_id, None)
        if reopen and (meta.ended_at or tail.ended):
            meta.ended_at = meta.outcome = meta.reason = None
            self.append(live, [Pending("start", {"resumed": True}, 0.0)])
        self._mark_open(live)
        return live

    # --- writing ----------------------------------------------------------

    def live(self, session_id: str) -> Live:
        """The open session ``session_id`` or a RequestError saying why not."""
        live = self.sessions.get(session_id)
        if live is not None:
            return live
        try:
            paths.check_name("session id", session_id)
        except paths.InvalidName as e:
            raise RequestError("invalid_name", str(e)) from e
        if session_id in self.closed:
            raise RequestError("session_closed", f"session {session_id} is closed")
        raise RequestError("unknown_session", f"no open session {session_id!r}")

    def append(self, live: Live, batch: Iterable[Pending]) -> tuple[list[int | None], OSError | None]:
        """Write ``batch`` to the session with one write(2).

        Returns each event's step (None where it was not written) and the
        write error, if any. The critical section: no await in here.
        """
        state = live.state
        if state.closed:
            raise RequestError("session_closed", f"session {state.session_id} is closed")
        prepared = state.prepare(batch)
        if self.wedge_seconds and any(p.phase == "fault_wedge" for p in prepared.pending):
            time.sleep(self.wedge_seconds)  # a hung write(2), as on a dead NFS mount
        records = prepared.records
        if not records:
            return state.steps_of(prepared, 0), None
        buf = bytearray()
        ends: list[int] = []
        encode_into = json_encoder.encode_into
        for rec in records:
            encode_into(rec, buf, -1)
            buf += b"\n"
            ends.append(len(buf))
        error: OSError | None = None
        try:
            written = live.journal.append(buf, ends)
        except JournalWriteError as e:
            written = e.lines
            error = e
            self.stats.write_errors += 1
            log.error(
                "write_failed", session_id=state.session_id, errno=e.errno, error=e.strerror,
                lines_written=written, lines_failed=len(records) - written,
            )
        state.commit(prepared, written)
        if written:
            redactions = sum(p.redactions for p in prepared.pending[:written])
            state.m.redactions += redactions
            self.stats.redactions += redactions
            self.stats.count_events(written)
            self.stats.bytes_written += ends[written - 1]
            done = records[:written]
            for hook in self.on_write:
                hook(live, done)
        return state.steps_of(prepared, written), error

    # --- closing ----------------------------------------------------------

    def close(
        self, session_id: str, outcome: str, summary: str | None = None,
        reason: str | None = None, ts: float = 0.0,
    ) -> Live:
        """Append ``end``, mark the session closed and update its meta (not yet on disk).

        The caller then runs ``finish(live)`` in a worker thread to fsync and
        write meta.json atomically.
        """
        live = self.live(session_id)
        payload: dict[str, Any] = {"outcome": outcome}
        if summary is not None:
            payload["summary"] = summary
        if reason is not None:
            payload["reason"] = reason
        steps, error = self.append(live, [Pending("end", payload, ts)])
        if error is not None or steps[0] is None:
            raise RequestError("io_error", f"cannot write end record: {error}")
        state = live.state
        state.closed = True
        meta = state.m
        meta.ended_at = format_ts(ts) if ts > 0 else format_ts()
        meta.outcome = outcome
        meta.summary = summary if summary is not None else meta.summary
        meta.reason = reason
        del self.sessions[session_id]
        self.closed[session_id] = state.dir
        while len(self.closed) > CLOSED_MEMORY:
            self.closed.popitem(last=False)
        self.stats.sessions_closed += 1
        if reason:
            self.stats.finalized[reason] = self.stats.finalized.get(reason, 0) + 1
        for hook in self.on_close:
            hook(live)
        return live

    def finish(self, live: Live) -> None:
        """Blocking tail of close: fsync the trace (unless fsync=never), write meta.json."""
        if self.config.fsync != "never":
            try:
                live.journal.fdatasync()
            except OSError as e:
                log.error("fsync_failed", session_id=live.state.session_id, error=e.strerror)
        self.fds.drop(live.journal.path)
        write_atomic(live.state.dir, META, json_encoder.encode(live.state.m))
        self._unmark_open(live.state.session_id)

    def _write_meta_fast(self, live: Live) -> None:
        """The meta.json skeleton at start: atomic rename, no fsync (the trace is the truth)."""
        try:
            write_atomic(live.state.dir, META, json_encoder.encode(live.state.m), sync=False)
        except OSError as e:
            log.error("meta_write_failed", session_id=live.state.session_id, error=e.strerror)

    # --- durability -------------------------------------------------------

    async def durable(self, journals: Iterable[Journal]) -> None:
        """Return once every write so far to ``journals`` is fdatasynced (group commit)."""
        for journal in journals:
            target = journal.written_gen
            while journal.synced_gen < target:
                pending = self._syncing.get(journal.path)
                if pending is not None:
                    await pending.wait()
                    continue
                done = self._syncing[journal.path] = anyio.Event()
                try:
                    await anyio.to_thread.run_sync(journal.fdatasync)
                finally:
                    del self._syncing[journal.path]
                    done.set()

    async def sync_dirty(self) -> None:
        """fdatasync every open session with unsynced data (the ``batch`` policy's tick)."""
        dirty = [live.journal for live in self.sessions.values() if live.journal.dirty]
        for journal in dirty:
            try:
                await self.durable([journal])
            except OSError as e:
                log.error("fsync_failed", path=journal.path, error=e.strerror)

    # --- open markers and roots (restart recovery reads these) --------------

    def _mark_open(self, live: Live) -> None:
        state = live.state
        marker = {"dir": state.dir, "root": live.root, "skill": state.skill,
                  "owner_pid": state.owner_pid, "owner_start": live.owner_start,
                  "idle_timeout": state.idle_timeout}
        try:
            paths.ensure_private_dir(self.open_dir)
            write_atomic(str(self.open_dir), f"{state.session_id}.json",
                         json_encoder.encode(marker), sync=False)
        except OSError as e:
            log.error("marker_write_failed", session_id=state.session_id, error=e.strerror)

    def _unmark_open(self, session_id: str) -> None:
        try:
            os.unlink(self.open_dir / f"{session_id}.json")
        except FileNotFoundError:
            pass

    def _note_root(self, root: str) -> None:
        if root in self.roots:
            return
        self.roots.add(root)
        try:
            paths.ensure_private_dir(self.state_dir)
            write_atomic(str(self.state_dir), "roots.json",
                         json_encoder.encode(sorted(self.roots)), sync=False)
        except OSError as e:
            log.error("roots_write_failed", error=e.strerror)

    def load_roots(self) -> None:
        """Read the registry of roots this daemon has written to."""
        try:
            roots = msgspec.json.decode((self.state_dir / "roots.json").read_bytes())
            self.roots.update(str(r) for r in roots)
        except (OSError, msgspec.DecodeError):
            pass
        self.roots.add(str(self.root))

    def markers(self) -> list[dict[str, Any]]:
        """The open markers left by a previous daemon."""
        out: list[dict[str, Any]] = []
        try:
            names = os.listdir(self.open_dir)
        except OSError:
            return out
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                marker = msgspec.json.decode((self.open_dir / name).read_bytes())
            except (OSError, msgspec.DecodeError):
                continue
            if isinstance(marker, dict):
                marker["session_id"] = name[: -len(".json")]
                out.append(marker)
        return out

    def adopt_marker(self, marker: dict[str, Any]) -> Live | None:
        """Re-adopt a session left open by a previous daemon (step from the file's tail)."""
        sdir = Path(str(marker.get("dir", "")))
        if not (sdir / "trace.jsonl").is_file():
            self._unmark_open(str(marker.get("session_id")))
            return None
        live = self._adopt(sdir, Path(str(marker.get("root") or sdir.parents[2])), reopen=False)
        live.state.idle_timeout = float(marker.get("idle_timeout") or self.config.idle_timeout)
        pid = marker.get("owner_pid")
        if isinstance(pid, int) and pid > 0:
            live.state.owner_pid = pid
            start = marker.get("owner_start")
            live.owner_start = start if isinstance(start, int) else None
        self._after_open(live)
        return live

    def adopt_foreign(self, sdir: Path) -> Live:
        """Take over a session another writer left (to finalize it): no owner, step from the file."""
        root = sdir.parents[2]
        try:
            os.close(paths.open_dir_nofollow(root, sdir.relative_to(root).parts, create=False))
        except OSError as e:
            raise RequestError("forbidden", f"refusing {sdir}: {e.strerror}") from e
        live = self._adopt(sdir, root, reopen=False)
        self._after_open(live)
        return live

    def shutdown(self) -> None:
        """Close every fd (open sessions stay open on disk for the next daemon)."""
        self.fds.close_all()


def apply_labels(meta: Meta, labels: dict[str, Any] | None) -> None:
    """Merge a session's labels into its meta; some name first-class fields."""
    if not labels:
        return
    meta.labels.update({str(k): str(v) for k, v in labels.items()})
    if "skill_version" in labels:
        meta.skill_version = str(labels["skill_version"])
    if labels.get("transcript_path"):
        meta.transcript_path = str(labels["transcript_path"])


def _ended(sdir: Path) -> bool:
    try:
        return meta_decoder.decode((sdir / META).read_bytes()).ended_at is not None
    except (OSError, msgspec.DecodeError):
        return False

