"""Daemon-wide group commit: one sync round covers every session its waiters touched.

Every caller that needs durability (a connection's acks under ``fsync =
"always"``, a ``sync {fsync}``, the spool, the ``batch`` tick) asks here. While
one round is in flight, the next round collects requests and the traces they
touched; it starts two turns of the loop after the round in flight finishes. Requests are
callbacks on the loop (``request``; ``Registry.durable`` awaits one), so an acked event
under ``always`` costs no task switch of its own.

A round makes its traces durable in one of two ways. With a write-ahead log
(``fsync = "always"`` or ``"batch"``, see ``wal``), every line written since the
trace's last sync goes into the log, and ONE fdatasync of the log covers every
session of the round. A trace that has lines the log never saw (its first sync,
or a ``sync {fsync}`` under ``never``) is fdatasynced itself, all such traces at
once from a pool of threads; from then on its writes are kept for the log. Under
``batch``, a trace that wrote more than ``log_max`` bytes since its last round is
fdatasynced itself too, and its writes are no longer kept until a round finds it
small again: a large trace costs one fdatasync whatever its lines, while the log
would write them twice (and hold a copy in memory until the round).
docs/benchmarks.md ("Durable acks", "Spread over many sessions") has the numbers.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Final

import anyio
import structlog

from traced.daemon.journal import Journal, trace_gone
from traced.daemon.wal import WriteAheadLog

__all__ = ["GroupCommit"]

log = structlog.get_logger("traced.daemon.groupcommit")

LOG_TRACE_MAX: Final = 256 * 1024
"""Under ``batch``: bytes a trace may write between two rounds and still be logged (see the module doc)."""
SYNC_THREADS: Final = 64
"""fdatasyncs one round runs at once; more traces wait for a free thread in the same round."""


_Logged = tuple[int, Journal, int, tuple[str, str, bytes]]
"""A trace's lines for the log: its round key, its journal, the size its file has at least (bytes),
and the log entry (session dir, trace identity, lines)."""


Done = Callable[[OSError | None], None]
"""Called on the loop when a ``request`` is answered: None once its writes are durable, else the
OSError that keeps one of them from being so."""


class _Round:
    """The traces one sync covers (journal id -> (journal, generation to reach)), its waiters, its outcome."""

    __slots__ = ("done", "errors", "targets", "waiters")

    def __init__(self) -> None:
        self.targets: dict[int, tuple[Journal, int]] = {}
        self.waiters: list[tuple[list[tuple[Journal, int]], Done]] = []
        """Each request's (journal, generation it needs) and its callback."""
        self.done = anyio.Event()
        self.errors: dict[int, OSError] = {}


class GroupCommit:
    """The sync coordinator of one daemon (one per Registry), driven by callbacks on the event loop.

    A request joins the next round; a round starts two turns of the loop after the request
    (or after the round in flight ends), so the requests that the reads already in hand carry
    share it. Its blocking part (the log's write and
    fdatasync, the traces' own fdatasyncs) runs on one thread; its end is back on the loop,
    where each waiter is answered or joins the next round. No task waits per request: a
    connection's acks under ``fsync = "always"`` cost one callback.
    """

    def __init__(self, wal: WriteAheadLog | None = None, log_wanted: Callable[[], bool] = lambda: True,
                 log_max: Callable[[], int | None] = lambda: None) -> None:
        self.wal = wal
        """The write-ahead log rounds may write to; None: fdatasync every trace."""
        self.log_wanted = log_wanted
        """Whether rounds use the log now (``fsync = "always"`` or ``"batch"``, which a reload may change)."""
        self.log_max = log_max
        """Bytes a trace may write between rounds and still be logged (None: any, as under ``always``)."""
        self._inflight: _Round | None = None
        self._next = _Round()
        self._starting = False
        """A round's start is scheduled on the loop (``_start``)."""
        self._closed = False
        """``close`` ran: a round that would start now fails its waiters instead."""
        self._pool: ThreadPoolExecutor | None = None
        self._runner: ThreadPoolExecutor | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_queued = threading.Lock()
        """Held from a full log's checkpoint request until that checkpoint is over."""
        if wal is not None:
            wal.map = lambda fn, items: self._threads().map(fn, items)
        self.rounds = 0
        """Sync rounds run (each covers every trace its waiters touched)."""
        self.fsyncs = 0
        """Traces made durable by sync rounds: each by its own fdatasync or by the log's (``log_syncs``)."""
        self.log_syncs = 0
        """fdatasyncs of the write-ahead log (one per round that logged lines)."""
        self._logging: set[str] = set()
        """Session dirs whose lines the round in flight is logging (``reset_log``)."""
        self._log_failing = False
        """The last round could not write the log (logged once per streak)."""

    def request(self, journals: list[Journal], done: Done) -> bool:
        """Ask that every write so far to ``journals`` be fdatasynced (on the loop, never blocks).

        Returns True when they already are (``done`` is then never called); else ``done``
        is called later on the loop, with None or the OSError of a failed fdatasync of one
        of them (the others of its round are synced all the same).
        """
        want = [(j, j.written_gen) for j in journals if j.synced_gen < j.written_gen]
        if not want:
            return True
        self._enlist(want, done)
        return False

    def _enlist(self, want: list[tuple[Journal, int]], done: Done) -> None:
        current = self._inflight
        if current is not None and any(id(j) in current.targets for j, _t in want):
            # the round in flight covers some of them: its outcome is theirs first, the rest go next
            current.waiters.append((want, done))
            self._add(self._next, [(j, t) for j, t in want if id(j) not in current.targets])
        else:
            self._next.waiters.append((want, done))
            self._add(self._next, want)
        if current is None:
            self._schedule()

    def _schedule(self) -> None:
        """Start the next round two turns of the loop from now: after the I/O that the next turn
        polls, so every request that reads already hold joins it."""
        if not self._starting:
            self._starting = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._start)

    @staticmethod
    def _add(rnd: _Round, want: list[tuple[Journal, int]]) -> None:
        for j, _t in want:
            rnd.targets[id(j)] = (j, max(j.written_gen, rnd.targets.get(id(j), (j, 0))[1]))

    def _start(self) -> None:
        """(on the loop) Run the next round: snapshot its traces' lines, then its blocking part on a thread."""
        self._starting = False
        rnd = self._next
        if self._inflight is not None or not (rnd.targets or rnd.waiters):
            return
        self._inflight, self._next = rnd, _Round()
        if self._closed:  # the daemon is stopping: no round after ``close``, and no waiter left hanging
            stopping = OSError(errno.ESHUTDOWN, "the daemon is stopping: nothing more is synced")
            rnd.errors = dict.fromkeys(rnd.targets, stopping)
            self._finish(rnd, [], [], None)
            return
        logged: list[_Logged] = []
        by_log: list[int] = []
        by_sync: list[tuple[int, tuple[Journal, int]]] = []
        wal = self.wal if self.wal is not None and self.log_wanted() else None
        cap = self.log_max() if wal is not None else None
        for key, (j, _t) in list(rnd.targets.items()):  # the targets as of now: all written so far
            gen = j.written_gen
            rnd.targets[key] = (j, gen)
            if j.retired:  # its file is gone (deleted or replaced, the session let go): nothing to sync or log,
                j.wal = None  # and what it wrote since its last sync is in no file: no waiter may hear otherwise
                if j.synced_gen < gen:
                    rnd.errors[key] = trace_gone(j.path)
                continue
            small = cap is None or j.bytes_written - j.round_bytes <= cap
            j.round_bytes = j.bytes_written
            if wal is not None and j.wal is not None and j.wal_base <= j.synced_gen and small and j.ident:
                if j.wal:
                    logged.append((key, j, j.size, (j.dir, j.ident, b"".join(j.wal))))
                    j.wal = []
                by_log.append(key)
            else:  # lines the log never saw (or a large trace): fdatasync it; the log keeps what follows
                by_sync.append((key, (j, gen)))
                j.wal, j.wal_base = ([] if wal is not None and small else None), gen
        retire = wal is None and self.wal is not None and bool(self.wal.covered)
        self._logging = {entry[0] for _key, _j, _size, entry in logged}
        if self._runner is None:
            self._runner = ThreadPoolExecutor(1, thread_name_prefix="traced-commit")
        work = partial(self._sync_all, rnd, logged, by_log, by_sync, retire=retire)
        fut = asyncio.get_running_loop().run_in_executor(self._runner, work)
        fut.add_done_callback(partial(self._finish, rnd, by_log, by_log + [key for key, _target in by_sync]))

    def _finish(self, rnd: _Round, by_log: list[int], tried: list[int], fut: asyncio.Future[bool] | None) -> None:
        """(on the loop) A round is over (``fut``: its blocking part; None: it never ran; ``tried``: the
        traces it logged or fdatasynced): advance its traces, answer its waiters, start the next one."""
        log_synced = False
        try:
            log_synced = fut.result() if fut is not None else False
        except Exception as e:  # a bug: no waiter may be told its writes are durable
            log.exception("sync_round_failed")
            for key in rnd.targets:
                rnd.errors.setdefault(key, OSError(errno.EIO, f"sync round failed: {e!r}"))
        for key in by_log:
            j, gen = rnd.targets[key]
            if key in rnd.errors:
                j.wal = None  # what the failed round held is in no log: the next round syncs the trace
            else:
                j.synced_gen = max(j.synced_gen, gen)
        self.rounds += 1 if fut is not None else 0
        self.fsyncs += sum(1 for key in tried if key not in rnd.errors)
        self.log_syncs += 1 if log_synced else 0
        self._logging = set()
        self._inflight = None
        rnd.done.set()
        errors = rnd.errors
        for want, done in rnd.waiters:
            error = next((errors[id(j)] for j, _t in want if id(j) in errors), None)
            if error is None:
                rest = [(j, t) for j, t in want if j.synced_gen < t]
                if rest:  # written after this round's snapshot: the next round
                    self._enlist(rest, done)
                    continue
            try:
                done(error)
            except Exception:  # a waiter's bug must not cost the others their answer
                log.exception("sync_waiter_failed")
        if self._next.targets or self._next.waiters:
            self._schedule()

    def logging(self, session_dir: str) -> bool:
        """Whether the round in flight is logging lines of ``session_dir`` (a reset must come after them)."""
        return session_dir in self._logging

    async def settled(self) -> None:
        """Return once the round in flight (if any) is done."""
        current = self._inflight
        if current is not None:
            await current.done.wait()

    def reset_log(self, session_dir: str) -> bool:
        """Before a trace is created at ``session_dir``: ``WriteAheadLog.reset`` (blocking, one
        fdatasync, only when the log may hold an earlier trace's lines there). The caller first
        waits out a round in flight that logs lines there (``logging``, ``settled``): a reset
        must follow them in the log. Raises OSError."""
        if self.wal is None:
            return False
        return self.wal.reset(session_dir)

    def _sync_all(self, rnd: _Round, logged: list[_Logged], by_log: list[int],
                  by_sync: list[tuple[int, tuple[Journal, int]]], *, retire: bool) -> bool:
        """Log and fdatasync ``logged`` once, fdatasync every trace of ``by_sync`` at once (a worker thread).

        ``retire``: the log is no longer wanted; checkpoint what it covers. When the log cannot
        be written or synced (its disk is full), the traces of ``by_log`` are fdatasynced on
        their own instead, in this round. Lines of a trace that is no longer at its path
        (``Journal.gone``: deleted or replaced under its session) are not logged: that trace's
        waiters get FileNotFoundError. Returns whether the log was synced.
        """
        entries = []
        for key, journal, size, entry in logged:
            if journal.gone(size):
                rnd.errors[key] = trace_gone(journal.path)
            else:
                entries.append(entry)
        if retire and self.wal is not None:
            try:
                self.wal.close()
            except OSError as e:
                log.error("wal_checkpoint_failed", error=e.strerror)
        synced = False
        if entries and self.wal is not None:
            try:
                if self.wal.append_sync(entries):
                    self._checkpoint_beside()
                synced = True
                if self._log_failing:
                    self._log_failing = False
                    log.warning("wal_writable_again")
            except OSError as e:  # each trace's own fdatasync makes it durable all the same
                if not self._log_failing:
                    self._log_failing = True
                    log.error("wal_write_failed", error=e.strerror, fallback="each trace's own fdatasync")
                by_sync = by_sync + [(key, rnd.targets[key]) for key in by_log if key not in rnd.errors]
        if len(by_sync) == 1:
            self._sync_one(rnd, *by_sync[0])
        elif by_sync:
            for _ in self._threads().map(lambda item: self._sync_one(rnd, *item), by_sync):
                pass
        return synced

    def _threads(self) -> ThreadPoolExecutor:
        """The pool the fdatasyncs of traces run on (started when first needed)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="traced-fsync")
        return self._pool

    def _sync_one(self, rnd: _Round, key: int, target: tuple[Journal, int]) -> None:
        journal, gen = target
        try:
            journal.fdatasync(gen)
        except OSError as e:
            rnd.errors[key] = e

    def _checkpoint_beside(self) -> None:
        """The log is full: checkpoint it on a thread of its own, so the rounds (and their acks) go on
        meanwhile in a new segment. One at a time; while one runs, a full log asks for none."""
        if self._checkpoint_queued.acquire(blocking=False):
            if self._checkpointer is None:
                self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="traced-checkpoint")
            self._checkpointer.submit(self._checkpoint_queued_run)

    def _checkpoint_queued_run(self) -> None:
        try:
            self.checkpoint()
        finally:
            self._checkpoint_queued.release()

    def checkpoint(self) -> None:
        """Checkpoint the log now (blocking: a worker thread): when it is full (``_checkpoint_beside``),
        or for an open whose reset could not be written. A failure is logged (the segments stay,
        replay covers them; the next full round, or the open, tries again)."""
        if self.wal is not None:
            try:
                self.wal.checkpoint()
            except OSError as e:
                log.error("wal_checkpoint_failed", error=e.strerror, filename=e.filename)

    def close(self) -> None:
        """Wait for the round in flight, checkpoint the log and stop the sync threads (the daemon is
        stopping; blocking)."""
        self._closed = True
        for pool in (self._runner, self._checkpointer):
            if pool is not None:
                pool.shutdown(wait=True)
        self._runner = self._checkpointer = None
        if self.wal is not None:
            try:
                self.wal.close()
            except OSError as e:  # the log stays: the next start replays it
                log.error("wal_checkpoint_failed", error=e.strerror)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
