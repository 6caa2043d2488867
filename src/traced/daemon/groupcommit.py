"""Daemon-wide group commit: one sync round covers every session its waiters touched.

Every caller that needs durability (a connection's acks under ``fsync =
"always"``, a ``sync {fsync}``, the spool, the ``batch`` tick) waits here. While
one round is in flight, the next round collects waiters and the traces they
touched; when the round in flight finishes, the first waiter to wake leads the
next one (leader/follower group commit).

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

import errno
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Final

import anyio
import structlog

from traced.daemon.journal import Journal
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


class _Round:
    """The traces one sync covers (journal id -> (journal, generation to reach)) and its outcome."""

    __slots__ = ("done", "errors", "targets")

    def __init__(self) -> None:
        self.targets: dict[int, tuple[Journal, int]] = {}
        self.done = anyio.Event()
        self.errors: dict[int, OSError] = {}


class GroupCommit:
    """The leader/follower sync coordinator of one daemon (one per Registry)."""

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
        self._pool: ThreadPoolExecutor | None = None
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

    async def wait(self, journals: list[Journal]) -> None:
        """Return once every write so far to ``journals`` is fdatasynced.

        Raises the OSError of a failed fdatasync of one of them (the others of
        its round are synced all the same).
        """
        want = [(j, j.written_gen) for j in journals if j.synced_gen < j.written_gen]
        while want:
            current = self._inflight
            if current is None:  # lead: this round takes everyone who joined while none ran
                rnd = self._next
                self._add(rnd, want)
                await self._run(rnd)
            else:  # follow: join the next round, wait for the one in flight, then lead or wait again
                rnd = current
                self._add(self._next, [(j, t) for j, t in want if id(j) not in current.targets])
                await current.done.wait()
            for j, _t in want:
                err = rnd.errors.get(id(j))
                if err is not None:
                    raise err
            want = [(j, t) for j, t in want if j.synced_gen < t]

    @staticmethod
    def _add(rnd: _Round, want: list[tuple[Journal, int]]) -> None:
        for j, _t in want:
            rnd.targets[id(j)] = (j, max(j.written_gen, rnd.targets.get(id(j), (j, 0))[1]))

    async def _run(self, rnd: _Round) -> None:
        self._inflight, self._next = rnd, _Round()
        try:
            logged: list[_Logged] = []
            by_log: list[int] = []
            by_sync: list[tuple[int, tuple[Journal, int]]] = []
            wal = self.wal if self.wal is not None and self.log_wanted() else None
            cap = self.log_max() if wal is not None else None
            for key, (j, _t) in list(rnd.targets.items()):  # the targets as of now: all written so far
                gen = j.written_gen
                rnd.targets[key] = (j, gen)
                if j.retired:  # its file is gone (deleted, the session let go): nothing to sync or log
                    j.wal, j.synced_gen = None, gen
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
            log_synced = await anyio.to_thread.run_sync(partial(self._sync_all, retire=retire),
                                                        rnd, logged, by_log, by_sync)
            for key in by_log:
                j, gen = rnd.targets[key]
                if key in rnd.errors:
                    j.wal = None  # what the failed round held is in no log: the next round syncs the trace
                else:
                    j.synced_gen = max(j.synced_gen, gen)
            self.rounds += 1
            self.fsyncs += len(rnd.targets) - len(rnd.errors)
            self.log_syncs += 1 if log_synced else 0
        finally:
            self._logging = set()
            self._inflight = None
            rnd.done.set()

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
                rnd.errors[key] = FileNotFoundError(errno.ENOENT, "the trace was deleted or replaced", journal.path)
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
                self.wal.append_sync(entries)
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

    def checkpoint(self) -> None:
        """Checkpoint the log now (blocking: a worker thread), for an open whose reset could not be
        written; a failure is logged (the open then reports it)."""
        if self.wal is not None:
            try:
                self.wal.checkpoint()
            except OSError as e:
                log.error("wal_checkpoint_failed", error=e.strerror, filename=e.filename)

    def close(self) -> None:
        """Checkpoint the log and stop the sync threads (the daemon is stopping; blocking)."""
        if self.wal is not None:
            try:
                self.wal.close()
            except OSError as e:  # the log stays: the next start replays it
                log.error("wal_checkpoint_failed", error=e.strerror)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
