"""One destination's forwarder: notifications in, batches read from the files, cursors out.

Memory holds only, per session with undelivered records, "new data up to step N"
(:class:`Behind`) and, per session ever delivered, its cursor. The records
themselves are read back from trace.jsonl by byte offset when a batch is built,
so a destination that is down for hours costs no memory beyond that.

The loop: pick the sessions that are behind (oldest notification first), read up
to ``max_records`` lines after their cursors in a worker thread, hand them to the
sink, then move each session's cursor past its longest acknowledged prefix (one
``write(2)`` for the whole batch). A failure backs off exponentially (0.5 s
doubling to 30 s, with jitter), or for as long as the destination's
``Retry-After`` asks.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
import structlog

from traced.forward.cursor import Cursor, CursorStore
from traced.forward.source import Line, ReadResult, find_behind, read_after
from traced.forward.urls import Destination

log = structlog.get_logger("traced.forward")

SYNC_EVERY: Final = 1.0
STATE_EVERY: Final = 30.0
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 30.0
RETRY_AFTER_CAP: Final = 3600.0
SALVAGE_GRACE: Final = 3.0


@dataclass(slots=True)
class BatchSession:
    """Which session a batch line belongs to (not :class:`traced.read.sessions.SessionRef`: a reader's handle)."""

    dir: str
    skill: str
    session_id: str


@dataclass(slots=True)
class Batch:
    """Lines of one or more sessions, each session's lines in step order."""

    sessions: list[BatchSession] = field(default_factory=list)
    lines: list[tuple[int, Line]] = field(default_factory=list)
    """(index into ``sessions``, line)."""
    reads: list[ReadResult] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(slots=True)
class SendResult:
    """Which lines of a batch the destination acknowledged, and why not the rest."""

    acked: list[bool]
    error: str | None = None
    retry_after: float | None = None
    dropped: int = 0
    """Lines the destination refused for good (counted as delivered: retrying cannot help)."""
    duplicates: int = 0
    config_error: bool = False
    """The destination refused the request as misconfigured (bad endpoint, credentials): retrying soon cannot help."""


class Sink(Protocol):
    """A destination's protocol: NATS JetStream or OTLP/HTTP."""

    max_records: int
    max_bytes: int

    async def send(self, batch: Batch) -> SendResult:
        """Deliver a batch; never raises for destination errors (they go in the result)."""
        ...

    async def salvage(self, grace: float) -> list[bool] | None:
        """After a cancelled ``send``: what was acknowledged within ``grace`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(slots=True)
class Behind:
    """A session with records the destination has not acknowledged yet."""

    skill: str
    session_id: str
    last_step: int
    since: float
    """Wall time of the first notification not yet delivered."""
    closed: bool = False


class Backoff:
    """Exponential backoff with jitter; ``Retry-After`` wins when given."""

    def __init__(self, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self, retry_after: float | None = None) -> float:
        """The delay before the next try."""
        self.attempt += 1
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, RETRY_AFTER_CAP)
        delay: float = min(self.cap, self.base * 2.0 ** (self.attempt - 1))
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """After a success."""
        self.attempt = 0


class Forwarder:
    """Forwards every session's records to one destination, in step order, at least once."""

    def __init__(self, dest: Destination, sink: Sink, store: CursorStore,
                 roots: Callable[[], Iterable[str]]) -> None:
        self.dest = dest
        self.sink = sink
        self.store = store
        self.roots = roots
        self.behind: dict[str, Behind] = {}
        self.ready: OrderedDict[str, None] = OrderedDict()
        """Sessions to read next, oldest first (a set with order)."""
        self.backoff = Backoff()
        self.sent = 0
        self.retries = 0
        self.dropped = 0
        self.duplicates = 0
        self.malformed = 0
        self.last_error: str | None = None
        self.config_error: str | None = None
        """Set while the destination answers with a configuration error (HTTP 400/401/403/404)."""
        self.last_error_at: float | None = None
        self.last_sent_at: float | None = None
        self.caught_up = False
        self.state = "starting"
        """starting (catch-up scan), idle, sending, backoff or misconfigured."""
        self._wake: anyio.Event | None = None
        self._stopping = False

    # --- notifications (sync, O(1), on the event loop) -------------------------

    def notify(self, session_dir: str, skill: str, session_id: str, last_step: int, closed: bool,
               *, since: float | None = None) -> None:
        """Session ``session_dir`` has records up to ``last_step`` on disk."""
        b = self.behind.get(session_dir)
        if b is None:
            cur = self.store.get(session_dir)
            if cur is not None and cur.step >= last_step:
                return
            when = time.time() if since is None else min(since, time.time())
            self.behind[session_dir] = Behind(skill, session_id, last_step, when, closed)
        else:
            b.last_step = max(b.last_step, last_step)
            b.closed = b.closed or closed
        if session_dir not in self.ready:
            self.ready[session_dir] = None
        if self._wake is not None:
            self._wake.set()

    # --- the loop -------------------------------------------------------------

    async def run(self) -> None:
        """Catch up on what a previous run left behind, then forward forever.

        An unexpected error is logged and the loop starts again after a pause:
        forwarding never takes the daemon down.
        """
        self._wake = anyio.Event()
        try:
            while True:
                try:
                    await self._loop()
                except Exception as e:
                    self.last_error = f"internal: {type(e).__name__}: {e}"
                    self.last_error_at = time.time()
                    log.exception("forward_crashed", dest=self.dest.display)
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                        await self.sink.aclose()
                    await anyio.sleep(self.backoff.next())
        finally:
            with anyio.CancelScope(shield=True):
                self._stopping = True
                with anyio.move_on_after(2.0):
                    await self.sink.aclose()
                self.store.write_state(self._covered_until())
                self.store.close()

    async def _loop(self) -> None:
        assert self._wake is not None
        self.state = "starting"
        await self._catch_up()
        last_state = time.monotonic()
        while True:
            if not self.ready:
                self.caught_up = True
                self.state = "idle"
                with anyio.move_on_after(SYNC_EVERY):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = anyio.Event()
            if self.ready:
                self.caught_up = False
                await self._step()
            now = time.monotonic()
            if self.store.sync_due(SYNC_EVERY):
                await anyio.to_thread.run_sync(self.store.sync)
            if now - last_state >= STATE_EVERY:
                self.store.write_state(self._covered_until())
                last_state = now
            if self.store.needs_compaction():
                pruned = await anyio.to_thread.run_sync(self.store.compact)
                log.info("forward_cursors_compacted", dest=self.dest.display, sessions=len(self.store.cursors),
                         pruned=pruned)

    def _covered_until(self) -> float:
        """A time before which every session file change is either delivered or has a cursor.

        A session behind without a cursor was last notified after ``since`` and so
        was modified after it: the next start finds it by mtime.
        """
        now = time.time()
        pending = (b.since for d, b in self.behind.items() if self.store.get(d) is None)
        return min(now, min(pending, default=now))

    async def _catch_up(self) -> None:
        since = self.store.last_active or self.store.first_run
        cursors = list(self.store.cursors.values())
        roots = list(self.roots())
        work = await anyio.to_thread.run_sync(find_behind, roots, cursors, since)
        for w in work:
            self.notify(w.dir, w.skill, w.session_id, w.last_step, False, since=w.mtime)
        if work:
            log.info("forward_catch_up", dest=self.dest.display, sessions=len(work),
                     records=self.lag_records())

    async def _step(self) -> None:
        batch = await self._read_batch()
        if not batch.lines:
            if self.ready:
                await anyio.sleep(0.05)  # only lines being written: do not spin
            return
        self.state = "sending"
        try:
            result = await self.sink.send(batch)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                acked = await self.sink.salvage(SALVAGE_GRACE)
                if acked:
                    self._commit(batch, SendResult(acked))
                    self.store.write_staged()
            raise
        self._commit(batch, result)
        self.store.write_staged()
        if result.error is None:
            self.backoff.reset()
            self.last_error = None
            self.config_error = None
            return
        self.config_error = result.error if result.config_error else None
        self.retries += 1
        self.last_error = result.error
        self.last_error_at = time.time()
        delay = self.backoff.next(result.retry_after)
        log.warning("forward_failed", dest=self.dest.display, error=result.error, retry_in=round(delay, 3),
                    acked=sum(result.acked), batch=len(batch))
        self.state = "misconfigured" if result.config_error else "backoff"
        await anyio.sleep(delay)

    async def _read_batch(self) -> Batch:
        """Lines after the cursors of the sessions that are behind, oldest first."""
        plan: list[tuple[str, int, int, int | None]] = []
        budget = self.sink.max_records
        for d in self.ready:
            if len(plan) >= budget:
                break
            cur = self.store.get(d)
            known = self.behind.get(d)
            plan.append((d, cur.step if cur else 0, cur.offset if cur else 0, known.last_step if known else None))
        max_records, max_bytes = self.sink.max_records, self.sink.max_bytes

        def read() -> list[ReadResult]:
            out: list[ReadResult] = []
            records = nbytes = 0
            for d, step, offset, upto in plan:
                if records >= max_records or nbytes >= max_bytes:
                    break
                res = read_after(d, offset, step, max_records - records, max(1, max_bytes - nbytes), upto_step=upto)
                records += len(res.lines)
                nbytes += sum(len(line.raw) for line in res.lines)
                out.append(res)
            return out

        results = await anyio.to_thread.run_sync(read)
        batch = Batch()
        for (d, step, _offset, _upto), res in zip(plan, results, strict=False):
            b = self.behind.get(d)
            if res.malformed:
                self.malformed += res.malformed
                log.warning("forward_malformed_lines", session_dir=d, count=res.malformed)
            if not res.lines:
                self._settle_empty(d, b, step, res)
                continue
            if b is not None and res.last_step > b.last_step:
                b.last_step = res.last_step
            ref = BatchSession(d, b.skill if b else "", b.session_id if b else "")
            batch.sessions.append(ref)
            batch.reads.append(res)
            index = len(batch.sessions) - 1
            batch.lines.extend((index, line) for line in res.lines)
        return batch

    def _settle_empty(self, d: str, b: Behind | None, step: int, res: ReadResult) -> None:
        """A session whose file holds nothing new after its cursor."""
        if res.missing and b is not None:
            log.warning("forward_trace_unreadable", session_dir=d, error=res.error, unsent=b.last_step - step)
        cur = self.store.get(d)
        if b is not None and res.offset != (cur.offset if cur else 0) and not res.missing:
            # skipped lines only (malformed, or already delivered): remember the offset
            self.store.stage(Cursor(d, b.skill, b.session_id, step, res.offset, cur.ended if cur else False))
        if b is not None and b.last_step > step and not res.missing:
            if res.partial or not res.eof:
                return  # a line is being written right now: look again soon
            log.warning("forward_notified_beyond_file", session_dir=d, notified=b.last_step, on_disk=step)
        self.behind.pop(d, None)
        self.ready.pop(d, None)

    def _commit(self, batch: Batch, result: SendResult) -> None:
        """Move cursors past each session's acknowledged prefix; requeue what is left."""
        self.dropped += result.dropped
        self.duplicates += result.duplicates
        n = len(batch.sessions)
        blocked = [False] * n
        acked = [0] * n
        last: list[Line | None] = [None] * n
        for (index, ln), ok in zip(batch.lines, result.acked, strict=False):
            if blocked[index]:
                continue
            if not ok:
                blocked[index] = True
                continue
            acked[index] += 1
            last[index] = ln
        for index in range(len(result.acked), len(batch.lines)):
            blocked[batch.lines[index][0]] = True
        now = time.time()
        for index, ref in enumerate(batch.sessions):
            line = last[index]
            res = batch.reads[index]
            if line is not None:
                whole = not blocked[index] and line is res.lines[-1]
                offset = res.offset if whole else line.end
                self.store.stage(Cursor(ref.dir, ref.skill, ref.session_id, line.step, offset, line.phase == "end"))
            b = self.behind.get(ref.dir)
            if b is None:
                continue
            cur = self.store.get(ref.dir)
            if cur is not None and cur.step >= b.last_step:
                self.behind.pop(ref.dir, None)
                self.ready.pop(ref.dir, None)
            else:
                if line is not None:
                    b.since = now
                self.ready.move_to_end(ref.dir)  # others get their turn
        sent = sum(acked)
        self.sent += sent
        if sent:
            self.last_sent_at = now

    # --- status ------------------------------------------------------------------

    def lag_records(self) -> int:
        """Records on disk not yet acknowledged by the destination."""
        total = 0
        for d, b in self.behind.items():
            cur = self.store.get(d)
            total += max(0, b.last_step - (cur.step if cur else 0))
        return total

    def status(self) -> dict[str, Any]:
        """This destination's line in ``traced status``."""
        oldest = min((b.since for b in self.behind.values()), default=None)
        return {
            "url": self.dest.display,
            "kind": self.dest.kind,
            "state": self.state,
            "lag_records": self.lag_records(),
            "lag_seconds": round(time.time() - oldest, 3) if oldest is not None else 0.0,
            "sessions_behind": len(self.behind),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "config_error": self.config_error,
            "sent": self.sent,
            "retries": self.retries,
            "dropped": self.dropped,
            "duplicates": self.duplicates,
            "malformed_lines": self.malformed,
            "cursors": len(self.store.cursors),
        }
