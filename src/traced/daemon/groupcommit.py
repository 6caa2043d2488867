"""Daemon-wide group commit: one sync round covers every session its waiters touched.

Every caller that needs durability (a connection's acks under ``fsync =
"always"``, a ``sync {fsync}``, the spool, the ``batch`` tick) waits here. While
one round is in flight, the next round collects waiters and the traces they
touched; when the round in flight finishes, the first waiter to wake leads the
next one (leader/follower group commit). A round fdatasyncs all its traces
concurrently, from a small pool of threads: ext4's jbd2 (data=ordered) then
folds them into one journal commit and one device flush, so 64 sessions cost
about what one does. Why not a daemon-wide write-ahead log: docs/benchmarks.md
("Durable acks") has the numbers of both designs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Final

import anyio

from traced.daemon.journal import Journal

__all__ = ["GroupCommit"]

SYNC_THREADS: Final = 64
"""fdatasyncs one round runs at once; more traces wait for a free thread in the same round."""


class _Round:
    """The traces one sync covers (journal id -> (journal, generation to reach)) and its outcome."""

    __slots__ = ("done", "errors", "targets")

    def __init__(self) -> None:
        self.targets: dict[int, tuple[Journal, int]] = {}
        self.done = anyio.Event()
        self.errors: dict[int, OSError] = {}


class GroupCommit:
    """The leader/follower sync coordinator of one daemon (one per Registry)."""

    def __init__(self) -> None:
        self._inflight: _Round | None = None
        self._next = _Round()
        self._pool: ThreadPoolExecutor | None = None
        self.rounds = 0
        """Sync rounds run (each covers every trace its waiters touched)."""
        self.fsyncs = 0
        """fdatasync calls made on traces."""

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
            for key, (j, _t) in list(rnd.targets.items()):  # the targets as of now: all written so far
                rnd.targets[key] = (j, j.written_gen)
            await anyio.to_thread.run_sync(self._sync_all, rnd)
            self.rounds += 1
            self.fsyncs += len(rnd.targets) - len(rnd.errors)
        finally:
            self._inflight = None
            rnd.done.set()

    def _sync_all(self, rnd: _Round) -> None:
        """fdatasync every trace of ``rnd`` at once (a worker thread)."""
        items = list(rnd.targets.items())
        if len(items) == 1:
            self._sync_one(rnd, *items[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="traced-fsync")
        for _ in self._pool.map(lambda item: self._sync_one(rnd, *item), items):
            pass

    def _sync_one(self, rnd: _Round, key: int, target: tuple[Journal, int]) -> None:
        journal, gen = target
        try:
            journal.fdatasync(gen)
        except OSError as e:
            rnd.errors[key] = e

    def close(self) -> None:
        """Stop the sync threads (the daemon is stopping)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
