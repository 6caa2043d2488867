"""Open sessions and the one serialization point per session: the critical section.

Every change to a session (open, append, close, finalize) runs here as a
synchronous critical section on the event loop's thread: ``prepare`` ->
``write(2)`` -> ``commit`` has no ``await`` inside, so no other writer,
connection or watcher can interleave with it. This replaces a per-session
actor task: same guarantee, no queue hop per event, and consecutive events
of one session coalesce into one write. Only fsync and the final meta.json
write leave the loop, to worker threads.

What is legal in which state comes from ``session.transition``; where a
session goes from ``targets``; restart bookkeeping from ``markers``.
Listeners (the bus, the forwarders) hear of records once they are durable
under the active fsync policy (``on_durable``), never before.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import structlog

from traced import __version__, locations
from traced.daemon import targets
from traced.daemon.config import Config
from traced.daemon.groupcommit import LOG_TRACE_MAX, Done, GroupCommit
from traced.daemon.journal import FdCache, Journal, JournalWriteError, TailState, line_bytes, scan
from traced.daemon.markers import Markers
from traced.daemon.procfs import proc_start_time
from traced.daemon.session import (
    RESUMED_PAYLOAD,
    Op,
    Pending,
    SessionState,
    end_payload,
    start_payload,
    transition,
)
from traced.daemon.status import Stats
from traced.daemon.wal import WriteAheadLog
from traced.errors import InvalidName, RequestError
from traced.format import ids, layout, vocab
from traced.format.files import write_atomic
from traced.format.records import Meta, Record, Usage, decode_meta, format_ts, json_encoder, meta_json, summarize

log = structlog.get_logger("traced.daemon.registry")

WRITER_ID: Final = f"traced {__version__}"
CLOSED_MEMORY: Final = 10000
ID_INDEX_TTL: Final = 10.0
"""Seconds the id -> session dir index of a whole root (``_find_by_id``) is used before it is walked again."""
RECENT_INDEX_TTL: Final = 1.0
"""The same for the index of its recent dates, walked again only when a close finds nothing in flight."""
ENDED_MEMORY: Final = 256
HOST: Final = socket.gethostname()

Listener = Callable[["Live", list[Record]], None]


class Deferred(Exception):
    """``Registry.open`` cannot create the trace yet: await ``until()`` on the loop, then call it again.

    Raised before anything is written: a round in flight is logging an earlier trace's lines at
    that path (the reset must follow them), or the log is too full for the reset (a checkpoint
    makes it needless)."""

    def __init__(self, until: Callable[[], Awaitable[Any]], why: str, *, checkpoint: bool = False) -> None:
        super().__init__(why)
        self.until = until
        self.checkpoint = checkpoint
        """``until`` runs a checkpoint (after which a reset that still fails is an ``io_error``)."""


@dataclass(slots=True)
class Loaded:
    """A session read from disk: its meta (counted again) and its trace's tail state."""

    sdir: Path
    size: int
    """The trace's size when it was read (bytes)."""
    meta: Meta
    tail: TailState
    file_id: tuple[int, int] | None = None
    """The trace's (st_dev, st_ino) when it was read (``Journal.file_id``)."""

    def unchanged(self) -> bool:
        """Whether the trace is still as it was read."""
        try:
            return (self.sdir / layout.TRACE).stat().st_size == self.size
        except OSError:
            return self.size == -1


@dataclass(slots=True, eq=False)
class Live:
    """An open session: its state and its journal."""

    state: SessionState
    journal: Journal
    root: str
    owner_start: int | None = None
    """Start time (clock ticks since boot) of the owner, to tell pid reuse apart."""
    unpublished: list[tuple[int, list[Record]]] = field(default_factory=list)
    """(journal generation, records) written but not yet durable under the fsync policy."""


def _name(kind: str, value: str) -> None:
    try:
        layout.check_name(kind, value)
    except InvalidName as e:
        raise RequestError("invalid_name", str(e)) from e


class Registry:
    """Session id -> open session; the only writer of session files."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = Path(os.path.realpath(config.root_path()))  # one name per session dir (``targets.resolve``)
        self.state_dir = locations.state_dir()
        self.markers = Markers(self.state_dir / "open")
        self.roots = targets.Roots(self.state_dir, self.root)
        self.sessions: dict[str, Live] = {}
        self.closed: OrderedDict[str, str] = OrderedDict()
        self.ended: OrderedDict[str, Live] = OrderedDict()
        """Recently ended sessions kept loaded for late records (an LRU of ``ENDED_MEMORY``)."""
        self.evicted: list[Live] = []
        """Ended sessions forgotten (past ``ENDED_MEMORY``) while late records of theirs were not yet
        synced: ``sync_dirty`` still covers them, then lets them go."""
        self._id_index: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        """Root -> (when walked, ``layout.sessions_by_id``): ``_by_id``."""
        self.fds = FdCache(config.fd_cache)
        self.stats = Stats()
        self._fsyncs = 0
        self.commit_log_dir = self.state_dir / "wal"
        self.commit = GroupCommit(WriteAheadLog(self.commit_log_dir, config.wal_checkpoint_bytes),
                                  lambda: self.config.fsync != "never" and self.config.wal,
                                  lambda: None if self.config.fsync == "always" else LOG_TRACE_MAX)
        """The daemon-wide group commit every durability wait goes through."""
        self.sync_wanted = anyio.Event()
        """Set when a listener waits for records that are written but not yet durable."""
        self.on_durable: list[Listener] = []
        """Called once records are durable under the fsync policy (the bus, the forwarders)."""
        self.listening: list[Callable[[], bool]] = []
        """Whether one of them waits for records now (a subscriber is connected, a forwarder runs):
        only then does a write keep its records for them and ask the ``batch`` policy to sync at once.
        Empty: they always wait."""
        self.on_open: list[Callable[[Live], None]] = []
        """Called when a session opens or is re-adopted (the watchers)."""
        self.on_close: list[Callable[[Live], None]] = []
        """Called when a session's end record is written (the watchers)."""

    # --- opening ----------------------------------------------------------

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
        from_spool: bool = False,
        reopen: bool = True,
        loaded: Loaded | None = None,
        settled: bool = False,
    ) -> tuple[Live, bool, str | None]:
        """Start or resume a session. Returns (live, resumed, root fallback reason).

        Resuming an ended session reopens it (a ``start {resumed: true}``
        record), unless the request replays a spool: then it is refused with
        ``session_closed``; with ``reopen`` false it stays ended and ``live``
        can take late records (see ``session.TRANSITIONS``). Raises ``Deferred`` when the trace
        cannot be created yet (``settled``: the caller already waited once; the log's reset then
        fails with ``io_error`` instead).
        """
        _name("skill", skill)
        if session_id:
            _name("session id", session_id)
        op: Op = "open_ended" if not reopen else "open_from_spool" if from_spool else "open"
        if session_id and not reopen and session_id in self.ended:
            known = self.ended[session_id]
            if not known.journal.gone():
                return known, True, None
            self._forget_gone(known)  # deleted or replaced since: load what is there now, if anything
        timeout = idle_timeout if idle_timeout > 0 else self.config.idle_timeout
        live = self.sessions.get(session_id) if session_id else None
        if live is not None and live.journal.gone():  # deleted or replaced while open: its writes would be lost
            self._forget_gone(live)
            live = None
        if live is not None:
            transition("open", op, session_id)
            if live.state.skill != skill:
                raise RequestError("invalid_name", f"session {session_id} belongs to skill {live.state.skill!r}")
            self._update(live, owner_pid, labels)
            return live, True, None
        if len(self.sessions) >= self.config.max_open_sessions:
            raise RequestError("overloaded", f"{len(self.sessions)} sessions open: the limit")
        base, sub, fallback = targets.resolve(target, cwd, peer_uid, self.root)
        root = base.joinpath(*sub)
        sid = session_id or ids.new_ulid()
        found = layout.find_session_dir(root, skill, sid) if session_id else None
        if found is not None:
            existing = Path(found)
            try:  # resuming must not follow a symlink planted below the root either
                os.close(layout.open_dir_nofollow(base, existing.relative_to(base).parts, create=False))
            except OSError as e:
                raise RequestError("forbidden", f"refusing {existing}: {e.strerror}") from e
            live = self._adopt(existing, root, op, loaded)
            if live.state.closed:  # peeked, stays ended (reopen false): only late records may follow
                return live, True, fallback
            live.state.idle_timeout = timeout
            self._update(live, owner_pid, labels)
            self._after_open(live)
            return live, True, fallback
        transition("absent", op, sid)
        now = ts if ts > 0 else time.time()
        started = format_ts(now)
        date = started[:10]
        sdir = root / date / skill / sid
        if self.commit.logging(str(sdir)):
            raise Deferred(self.commit.settled, "a round in flight logs an earlier trace's lines there")
        try:
            dfd = layout.open_dir_nofollow(base, (*sub, date, skill, sid))
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RequestError("forbidden", f"refusing a symlink below {base}: {e.strerror}") from e
            raise RequestError("io_error", f"cannot create session dir under {root}: {e.strerror}") from e
        os.close(dfd)
        meta = Meta(
            session_id=sid, skill=skill, devboy_version=WRITER_ID, started_at=started,
            input_summary=summarize(input), host=HOST, cwd=cwd or None, target=target or "global",
        )
        apply_labels(meta, labels)
        state = SessionState(skill=skill, session_id=sid, dir=str(sdir), started_at=started, meta=meta,
                             idle_timeout=timeout)
        live = Live(state=state, journal=Journal(str(sdir), self.fds), root=str(root))
        try:  # an earlier trace's logged lines here must not come back into this one
            self.commit.reset_log(str(sdir))
        except OSError as e:
            _remove_empty(sdir)
            if not settled:  # a checkpoint syncs those traces and deletes their segments: no reset needed
                raise Deferred(lambda: anyio.to_thread.run_sync(self.commit.checkpoint), "the log is full",
                               checkpoint=True) from e
            raise RequestError("io_error", f"cannot write the write-ahead log: {e.strerror}") from e
        steps, error = self.append(live, [Pending(vocab.START, start_payload(input, cwd), now)])
        if steps[0] is None:  # no start record, no session: step 1 is always the start
            self.fds.drop(live.journal.path, live.journal)
            _remove_empty(sdir)
            raise RequestError("io_error", f"cannot write the start record under {root}: "
                               f"{error.strerror if error is not None else 'not written'}")
        if owner_pid:
            self.set_owner(live, owner_pid)
        self.sessions[sid] = live
        self.closed.pop(sid, None)
        gone = self.ended.pop(sid, None)
        if gone is not None:  # kept for late records, its trace since deleted (a new one is made here)
            self._retire(gone)
        self._write_meta_fast(live)
        self._mark_open(live)
        self.stats.sessions_opened += 1
        self._after_open(live)
        return live, False, fallback

    def _forget_gone(self, live: Live) -> None:
        """Let go of a session, open or ended, whose trace was deleted or replaced under it (the next
        open makes a new trace there, or loads the one found)."""
        sid = live.state.session_id
        self._retire(live)  # (also when already forgotten: no round syncs it, a sync reports it once)
        if self.sessions.get(sid) is live:
            del self.sessions[sid]
        elif self.ended.get(sid) is live:
            del self.ended[sid]
            self.closed.pop(sid, None)
        else:
            return
        log.warning("session_dir_gone", session_id=sid, session_dir=live.state.dir)
        self.markers.unmark(sid)
        for hook in self.on_close:
            hook(live)

    def _retire(self, live: Live) -> None:
        """A session whose trace is gone: rounds skip it and fail its waiters (``GroupCommit``), its fd
        is closed, and records it held reach no subscriber."""
        live.journal.retired = True
        live.unpublished = []
        self.fds.drop(live.journal.path, live.journal)

    def _update(self, live: Live, owner_pid: int | None, labels: dict[str, Any] | None) -> None:
        apply_labels(live.state.m, labels)
        if owner_pid:
            self.set_owner(live, owner_pid)

    def _after_open(self, live: Live) -> None:
        self.roots.note(live.root)
        for hook in self.on_open:
            hook(live)

    def set_owner(self, live: Live, pid: int) -> None:
        """Record ``pid`` as the session's owner (the watchers watch it)."""
        live.state.owner_pid = pid
        live.state.m.owner_pid = pid
        live.owner_start = proc_start_time(pid)

    def load(self, sdir: Path) -> Loaded:
        """Read what adopting a session needs from its files: meta.json and the trace, counted again.

        Blocking and O(trace length) in time, O(1) in memory: call it in a worker
        thread (``preload``) for a session that may be large.
        """
        try:
            meta = decode_meta(layout.read_regular(sdir / layout.META))
        except (OSError, ValueError, RecursionError):  # msgspec's errors are ValueErrors
            meta = Meta(
                session_id=sdir.name, skill=sdir.parent.name, devboy_version=WRITER_ID,
                started_at=f"{sdir.parent.parent.name}T00:00:00.000000Z",
            )
        # the trace is the truth: meta.json's counters are counted again from it
        meta.tool_calls = meta.errors = 0
        meta.phases = {}
        meta.usage = Usage()
        trace = sdir / layout.TRACE
        try:
            tail = scan(str(trace), counters=meta)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EINVAL):  # a symlink, a FIFO or a device planted as the trace
                raise RequestError("forbidden", f"refusing {trace}: not a regular file") from e
            raise
        try:
            st = trace.stat(follow_symlinks=False)
            size, file_id = st.st_size, (st.st_dev, st.st_ino)
        except OSError:
            size, file_id = -1, None
        return Loaded(sdir, size, meta, tail, file_id)

    def preload(self, skill: str, session_id: str, target: str, cwd: str, peer_uid: int) -> Loaded | None:
        """``load`` the session an ``open`` will resume, if it is on disk and not live (worker thread).

        Reading a 1,000,000-line trace then costs no other client any wait.
        """
        if not session_id or session_id in self.sessions or session_id in self.ended:
            return None
        try:
            layout.check_name("skill", skill)
            layout.check_name("session id", session_id)
            base, sub, _fallback = targets.resolve(target, cwd, peer_uid, self.root)
        except (InvalidName, RequestError):
            return None
        found = layout.find_session_dir(base.joinpath(*sub), skill, session_id)
        if found is None:
            return None
        sdir = Path(found)
        try:  # never read through a symlink planted below the root
            os.close(layout.open_dir_nofollow(base, sdir.relative_to(base).parts, create=False))
        except (OSError, ValueError):
            return None
        return self.load(sdir)

    def preload_ended(self, session_id: str) -> Loaded | None:
        """``load`` a session this daemon does not know, found by its id alone under any of its roots
        (worker thread), for a ``close``: one resent after a restart, whose first copy ended it and lost
        its reply, or one for a session that never ended and whose open marker was lost (recovery did not
        load either). None when not found."""
        if session_id in self.sessions or session_id in self.ended:
            return None
        try:
            layout.check_name("session id", session_id)
        except InvalidName:
            return None
        for root in list(self.roots):
            found = self._find_by_id(root, session_id)
            if found is None or not os.path.isfile(os.path.join(found, layout.TRACE)):
                continue
            try:  # never read through a symlink planted below the root
                os.close(layout.open_dir_nofollow(Path(root), Path(found).relative_to(root).parts, create=False))
                return self.load(Path(found))
            except (OSError, RequestError) as e:
                log.warning("recall_refused", session_dir=found, error=str(e))
        return None

    def _find_by_id(self, root: str, session_id: str) -> str | None:
        """The session dir a close of ``session_id`` alone means under ``root`` (worker thread): the
        newest one in flight, else the newest. Two indexes (``layout.sessions_by_id``): the whole
        root's, walked again at most every ``ID_INDEX_TTL`` seconds, and the recent dates' (yesterday
        on, UTC, future dates included), walked again at most every ``RECENT_INDEX_TTL`` seconds when
        the id is in neither (at once when the one found ended), so that a session another writer just
        made is found: closes of many ids this daemon does not know cost a walk each interval, not one
        each."""
        lo = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
        whole = self._index(root, "", ID_INDEX_TTL)

        def pick(recent: dict[str, str]) -> tuple[str | None, bool]:
            """(the dir to take, whether it is in flight): the newest in flight, else the newest."""
            found = [d for d in dict.fromkeys((recent.get(session_id), whole.get(session_id))) if d is not None]
            for d in found:
                if not layout.ended(d):
                    return d, True
            return (found[0] if found else None), False

        found, in_flight = pick(self._index(root, lo, math.inf))
        if not in_flight:
            # none in flight: the recent dates again, at once when an ended one was found (an old ending
            # must not answer the close of a session just made), else at most every RECENT_INDEX_TTL
            found, _ = pick(self._index(root, lo, 0.0 if found else RECENT_INDEX_TTL))
        return found

    def _index(self, root: str, lo: str, ttl: float) -> dict[str, str]:
        """``layout.sessions_by_id(root, lo)``, walked again once it is ``ttl`` seconds old."""
        now = time.monotonic()
        got = self._id_index.get((root, lo))
        if got is None or now - got[0] > ttl:
            index = layout.sessions_by_id(root, lo)
            for key in [k for k in self._id_index if k[0] == root and k[1] not in ("", lo)]:
                del self._id_index[key]  # yesterday's recent index
            got = self._id_index[(root, lo)] = (now, index)
            log.info("session_index_built", root=root, since=lo or None, sessions=len(index),
                     ms=round((time.monotonic() - now) * 1e3, 1))
        return got[1]

    def _adopt(self, sdir: Path, root: Path, op: Op, loaded: Loaded | None = None) -> Live:
        """Load a session from disk for ``op``: last step from the file's tail, never from memory.

        A session whose trace ends with ``end`` (or that this daemon closed) is
        ended, whatever its meta.json says; ``session.transition`` decides
        whether ``op`` may reopen it (RequestError ``session_closed`` if not).
        ``loaded``: what ``preload`` read off the loop, used while the trace is unchanged.
        """
        if loaded is None or loaded.sdir != sdir or not loaded.unchanged():
            loaded = self.load(sdir)
        meta, tail = loaded.meta, loaded.tail
        self.stats.torn_tails_moved += 1 if tail.torn_bytes else 0
        if tail.torn_bytes:
            log.warning("torn_tail_moved", session_dir=str(sdir), bytes=tail.torn_bytes)
        ended = tail.ended or meta.ended_at is not None or sdir.name in self.closed
        action, _ = transition("ended" if ended else "open", op, sdir.name)
        if ended and action != "reopen":
            meta.ended_at = meta.ended_at or (tail.end.ts if tail.end is not None else format_ts())
        if tail.malformed:
            meta.malformed_lines = tail.malformed
        state = SessionState(
            skill=meta.skill, session_id=meta.session_id, dir=str(sdir),
            started_at=meta.started_at, step=tail.last_step, turn=tail.last_turn, meta=meta,
            owner_pid=meta.owner_pid,
        )
        meta.steps = tail.last_step
        state.last_ts = tail.last_ts
        for key, step in tail.keys.items():
            state.remember(key, step)
        for key, (client, step, rid) in tail.requests.items():
            state.remember_request(key, client, step, rid)
        live = Live(state=state, journal=Journal(str(sdir), self.fds), root=str(root))
        if loaded.file_id is not None:
            live.journal.file_id, live.journal.size = loaded.file_id, loaded.size
        if action == "peek":  # stays ended: it can take late records, nothing else
            state.closed = True
            self._remember_ended(live)
            return live
        self.sessions[state.session_id] = live
        self.closed.pop(state.session_id, None)
        self.ended.pop(state.session_id, None)
        if action == "reopen":
            meta.ended_at = meta.outcome = meta.reason = None
            self.append(live, [Pending(vocab.START, dict(RESUMED_PAYLOAD), 0.0)])
            self._write_meta_fast(live)  # in flight again, for every reader
        self._mark_open(live)
        return live

    def _remember_ended(self, live: Live) -> None:
        sid = live.state.session_id
        self.closed[sid] = live.state.dir
        self.closed.move_to_end(sid)
        self.ended[sid] = live
        self.ended.move_to_end(sid)
        while len(self.ended) > ENDED_MEMORY:
            _sid, old = self.ended.popitem(last=False)
            if self.config.fsync == "batch" and (old.journal.dirty or old.unpublished):  # not synced yet:
                self.evicted.append(old)  # the batch tick still syncs them

    # --- writing ----------------------------------------------------------

    def live(self, session_id: str) -> Live:
        """The open session ``session_id``, or a RequestError saying why not."""
        live = self.sessions.get(session_id)
        if live is not None:
            return live
        _name("session id", session_id)
        transition("ended" if session_id in self.closed else "absent", "emit", session_id)
        raise AssertionError("unreachable: emit is legal only on an open session")  # pragma: no cover

    def late(self, session_id: str) -> Live:
        """The session ``session_id`` for late records: open, or ended and still known.

        RequestError ``unknown_session`` when this daemon does not know it (the
        client then opens it with ``reopen`` false, which loads it from disk).
        """
        live = self.sessions.get(session_id) or self.ended.get(session_id)
        if live is None:
            _name("session id", session_id)
            transition("absent", "emit_late", session_id)
        assert live is not None
        return live

    def append(self, live: Live, batch: Iterable[Pending]) -> tuple[list[int | None], OSError | None]:
        """Write ``batch`` to the session with one write(2).

        Returns each event's step (None where it was not written) and the
        write error, if any. The critical section: no await in here. An ended
        session takes only late events (marked ``late``, its ending unchanged).
        """
        state = live.state
        batch = list(batch)
        if state.closed:
            transition("ended", "emit_late" if all(p.late for p in batch) else "emit", state.session_id)
        else:
            for p in batch:  # "may be late", and it is not: an ordinary record
                p.late = False
        lead = 0
        if state.step == 0 and batch and batch[0].phase != vocab.START:  # an empty trace (a power cut took it)
            batch.insert(0, Pending(vocab.START, dict(RESUMED_PAYLOAD), 0.0))
            lead = 1  # step 1 is always a start
        prepared = state.prepare(batch)
        records = prepared.records
        if not records:
            steps = state.steps_of(prepared, 0)
            return (steps[1:] if lead else steps), None
        buf = json_encoder.encode_lines(records)  # one C call: every line, each ending in "\n"
        error: OSError | None = None
        try:
            written = live.journal.append(buf, len(records))
        except JournalWriteError as e:
            written = e.lines
            error = e
            self.stats.write_errors += 1
            if e.errno == errno.ENOENT and live.journal.gone():  # deleted or replaced under it: let it go
                self._forget_gone(live)
            log.error(
                "write_failed", session_id=state.session_id, errno=e.errno, error=e.strerror,
                lines_written=written, lines_failed=len(records) - written,
            )
        redactions = state.commit(prepared, written)
        if written:
            stats = self.stats
            stats.redactions += redactions
            stats.count_events(written)
            if written == len(records):
                stats.bytes_written += len(buf)
            else:
                stats.bytes_written += line_bytes(buf, written)
                records = records[:written]
            if self.on_durable:
                self._written(live, records)
        steps = state.steps_of(prepared, written)
        return (steps[1:] if lead else steps), error

    def _written(self, live: Live, records: list[Record]) -> None:
        """Hand written records to the listeners now (fsync=never) or once they are durable."""
        if not self.on_durable:
            return
        if self.config.fsync == "never":
            for hook in self.on_durable:
                hook(live, records)
            return
        if self.listening and not any(waits() for waits in self.listening):
            return  # nobody to tell: the tick syncs within fsync_interval, not an fdatasync per write
        live.unpublished.append((live.journal.written_gen, records))
        if self.config.fsync == "batch":  # (under always, the acks' sync round publishes them)
            self.sync_wanted.set()

    def _publish_durable(self, live: Live) -> None:
        """Hand the listeners every record of ``live`` that its last fdatasync covered."""
        synced = live.journal.synced_gen
        pending = live.unpublished
        n = 0
        while n < len(pending) and pending[n][0] <= synced:
            n += 1
        if not n:
            return
        ready, live.unpublished = pending[:n], pending[n:]
        for _gen, records in ready:
            for hook in self.on_durable:
                hook(live, records)

    # --- closing ----------------------------------------------------------

    def close(
        self, session_id: str, outcome: str, summary: str | None = None,
        reason: str | None = None, ts: float = 0.0,
    ) -> tuple[Live, bool]:
        """Append ``end``, mark the session closed and update its meta (not yet on disk).

        Returns (live, ended before): a close resent for a session that already
        ended writes nothing and gives that session, whose meta holds the
        recorded ending. Otherwise the caller runs ``finish(live)`` in a worker
        thread to fsync and write meta.json atomically, and ``finished(live)``
        back on the loop.
        """
        payload = end_payload(outcome, summary, reason)
        known = self.ended.get(session_id)
        if known is not None and session_id not in self.sessions and not reason:  # watchers never end twice
            transition("ended", "close", session_id)
            return known, True
        live = self.live(session_id)
        transition("open", "finalize" if reason else "close", session_id)
        steps, error = self.append(live, [Pending(vocab.END, payload, ts)])
        if error is not None or steps[0] is None:
            raise RequestError("io_error", f"cannot write end record: {error}")
        state = live.state
        state.closed = True
        meta = state.m
        meta.ended_at = format_ts(state.last_ts)  # the end record's own time: never before started_at
        meta.outcome = outcome
        meta.summary = summary if summary is not None else meta.summary
        meta.reason = reason
        del self.sessions[session_id]
        self._remember_ended(live)
        while len(self.closed) > CLOSED_MEMORY:
            self.closed.popitem(last=False)
        self.stats.sessions_closed += 1
        if reason:
            self.stats.finalized[reason] = self.stats.finalized.get(reason, 0) + 1
        for hook in self.on_close:
            hook(live)
        return live, False

    def peek(self, sdir: Path, loaded: Loaded | None = None, *, adopt_open: bool = False) -> Live | None:
        """Load an ended session (to answer resent closes and take late records); None if it is not ended.
        ``loaded``: what ``preload_ended`` read off the loop. ``adopt_open`` (a ``close`` for it): a session
        whose trace never ended and that no open marker named (so recovery never adopted it) is adopted
        open, with an open marker, so that the close ends it; only under the daemon's own root, which
        its lock keeps from other daemons (a repo's or a client's dir may be another daemon's)."""
        try:
            live = self._adopt(sdir, sdir.parents[2], "open_ended", loaded)
        except (OSError, RequestError) as e:
            log.error("peek_failed", session_dir=str(sdir), error=str(e))
            return None
        if not live.state.closed:
            if adopt_open and str(sdir.parents[2]) == str(self.root):  # the root lock: no other daemon writes it
                log.warning("session_adopted_for_close", session_id=live.state.session_id, step=live.state.step)
                return live
            self.sessions.pop(live.state.session_id, None)  # it was open after all: not ours to load here
            self.markers.unmark(live.state.session_id)
            return None
        return live

    def write_meta(self, live: Live) -> None:
        """Rewrite meta.json atomically from the state (after late records). Blocking: a worker thread."""
        write_atomic(live.state.dir, layout.META, meta_json(live.state.m))

    def finish(self, live: Live) -> None:
        """Blocking tail of close: fsync the trace (unless fsync=never), write meta.json."""
        if self.config.fsync != "never":
            try:
                live.journal.fdatasync()
                self._fsyncs += 1
            except OSError as e:
                log.error("fsync_failed", session_id=live.state.session_id, error=e.strerror)
        write_atomic(live.state.dir, layout.META, meta_json(live.state.m))
        self.markers.unmark(live.state.session_id)

    def finished(self, live: Live) -> None:
        """Back on the loop after ``finish``: the end record is durable, tell the listeners, close its fd.

        The fd is closed here, on the loop, never in ``finish``'s worker thread: closed there, its
        number could be reused by the thread's own meta.json temp file while the loop, between
        ``FdCache.get`` and ``write(2)``, still held it (a trace line landed in the temp file)."""
        self._publish_durable(live)
        if live.state.closed:  # not reopened meanwhile
            self.fds.drop(live.journal.path, live.journal)

    def _write_meta_fast(self, live: Live) -> None:
        """The meta.json skeleton at start: atomic rename, no fsync (the trace is the truth)."""
        try:
            write_atomic(live.state.dir, layout.META, meta_json(live.state.m), sync=False)
        except OSError as e:
            log.error("meta_write_failed", session_id=live.state.session_id, error=e.strerror)

    # --- durability -------------------------------------------------------

    @property
    def fsyncs(self) -> int:
        """Traces made durable: by sync rounds (each by its own fdatasync or by the log's) and at close
        (``status``'s ``fsyncs``; tests check that every durable ack was covered)."""
        return self._fsyncs + self.commit.fsyncs

    def when_durable(self, lives: Iterable[Live], done: Done) -> bool:
        """Ask that every write so far to ``lives`` be fdatasynced (daemon-wide group commit; never blocks).

        Returns True when they already are (``done`` is then never called). Else
        ``done(error)`` is called on the loop once the round that covers them is over:
        error None, or the OSError of a failed fdatasync (FileNotFoundError: a trace
        deleted or replaced under its open session, which is then let go; the next open
        makes a new one). Listeners hear of the records each sync covered before ``done``,
        whatever the outcome.
        """
        lives = list(lives)

        def finished(error: OSError | None) -> None:
            if isinstance(error, FileNotFoundError):
                for live in lives:
                    if live.journal.gone():
                        self._forget_gone(live)
            self._publish_all(lives)
            done(error)

        if self.commit.request([live.journal for live in lives], finished):
            self._publish_all(lives)
            return True
        return False

    async def durable(self, lives: Iterable[Live]) -> None:
        """``when_durable``, awaited: returns once every write so far to ``lives`` is fdatasynced.

        All callers waiting at the same moment share one sync round that covers
        every session they touched (``groupcommit``). Raises the OSError of a failed
        fdatasync; what did sync is published all the same.
        """
        fut: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()
        if self.when_durable(lives, lambda error: None if fut.done() else fut.set_result(error)):
            return
        error = await fut
        if error is not None:
            raise error

    def _publish_all(self, lives: list[Live]) -> None:
        for live in lives:
            if live.unpublished:
                self._publish_durable(live)

    async def sync_dirty(self) -> None:
        """fdatasync every session with unsynced data in one round (the ``batch`` policy's tick), those
        forgotten with unsynced late records (``evicted``) included."""
        self.sync_wanted = anyio.Event()
        lives = [*self.sessions.values(), *self.ended.values(), *self.evicted]
        try:
            await self.durable([lv for lv in lives if lv.journal.dirty or lv.unpublished])
        except OSError as e:  # the others of the round are synced and published; the next tick retries
            log.error("fsync_failed", error=e.strerror, filename=e.filename)
        finally:
            self.evicted = [lv for lv in self.evicted
                            if (lv.journal.dirty or lv.unpublished) and not lv.journal.retired]

    def let_go_gone(self) -> int:
        """Under ``fsync = "never"``, where no sync round looks at a trace: let go of every session
        written since the last look whose trace was deleted or replaced (one ``stat`` each), as a
        round does under the other policies, so its writer hears ``unknown_session`` instead of
        writing on into a deleted file. Returns how many were let go."""
        gone = []
        for live in [*self.sessions.values(), *self.ended.values()]:
            journal = live.journal
            if journal.looked_gen != journal.written_gen:
                journal.looked_gen = journal.written_gen
                if journal.gone():
                    gone.append(live)
        for live in gone:
            self._forget_gone(live)
        return len(gone)

    # --- restart recovery and other writers ---------------------------------

    def _mark_open(self, live: Live) -> None:
        state = live.state
        self.markers.mark(state.session_id, {
            "dir": state.dir, "root": live.root, "skill": state.skill, "owner_pid": state.owner_pid,
            "owner_start": live.owner_start, "idle_timeout": state.idle_timeout})

    def adopt_marker(self, marker: dict[str, Any]) -> Live | None:
        """Re-adopt a session left open by a previous daemon (step from the file's tail)."""
        sdir = Path(str(marker.get("dir", "")))
        if not (sdir / layout.TRACE).is_file():
            self.markers.unmark(str(marker.get("session_id")))
            return None
        live = self._adopt(sdir, Path(str(marker.get("root") or sdir.parents[2])), "adopt")
        live.state.idle_timeout = float(marker.get("idle_timeout") or self.config.idle_timeout)
        pid = marker.get("owner_pid")
        if isinstance(pid, int) and 0 < pid <= 4194304:
            live.state.owner_pid = pid
            start = marker.get("owner_start")
            live.owner_start = start if isinstance(start, int) else None
        self._after_open(live)
        return live

    def adopt_foreign(self, sdir: Path) -> Live:
        """Take over a session another writer left (to finalize it): no owner, step from the file."""
        root = sdir.parents[2]
        try:
            os.close(layout.open_dir_nofollow(root, sdir.relative_to(root).parts, create=False))
        except OSError as e:
            raise RequestError("forbidden", f"refusing {sdir}: {e.strerror}") from e
        live = self._adopt(sdir, root, "adopt")
        self._after_open(live)
        return live

    def shutdown(self) -> None:
        """Close every fd (open sessions stay open on disk for the next daemon)."""
        self.commit.close()
        self.fds.close_all()


def apply_labels(meta: Meta, labels: dict[str, Any] | None) -> None:
    """Merge a session's labels into its meta; some name first-class fields."""
    if not labels:
        return
    meta.labels.update({str(k): str(v) for k, v in labels.items()})
    if "skill_version" in labels:
        version = str(labels["skill_version"]).strip()
        if version.isdigit() and int(version) < 2**32:  # devboy's Option<u32>
            meta.skill_version, meta.skill_version_text = int(version), None
        else:
            meta.skill_version, meta.skill_version_text = None, version
    if labels.get("transcript_path"):
        meta.transcript_path = str(labels["transcript_path"])


def _remove_empty(sdir: Path) -> None:
    """Remove a session dir that a failed open left without a record (and emptied parents)."""
    try:
        trace = sdir / layout.TRACE
        if trace.exists() and trace.stat().st_size == 0:
            trace.unlink()
        for path in (sdir, sdir.parent, sdir.parent.parent):
            path.rmdir()  # only empty ones go
    except OSError:
        pass
