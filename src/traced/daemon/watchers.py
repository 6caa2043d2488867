"""Watchers that finalize abandoned sessions.

They never write files: they call the server's ``end_session``, the same
path a client's ``close`` takes, so a late event can never interleave with
finalization.

- owner exit: one ``pidfd`` per owner pid, readable the moment it exits
  (immediate, and safe against pid reuse);
- idle timeout: a sweep every second;
- other writers: session directories that devboy's own CLI creates under the
  global root, finalized once their trace has been idle for the timeout.

Restart recovery (``recovery``) hands them what a previous daemon left open.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from traced.daemon import fswatch
from traced.daemon.procfs import proc_start_time
from traced.daemon.registry import Live, Registry
from traced.errors import RequestError
from traced.format import layout, vocab

log = structlog.get_logger("traced.daemon.watchers")

Finalize = Callable[[str, str, "str | None", "str | None", float], Awaitable[Live]]


class Watchers:
    """Owner-exit and idle-timeout watchers over the registry's open sessions."""

    def __init__(self, registry: Registry, end_session: Finalize, tg: TaskGroup,
                 quiet: anyio.Lock | None = None) -> None:
        self.registry = registry
        self.quiet = quiet or anyio.Lock()
        """Held while the spool replays, so finalization waits for a whole pass."""
        self.end_session = end_session
        self.tg = tg
        self._owners: dict[int, tuple[set[str], anyio.CancelScope]] = {}
        self.foreign: dict[str, tuple[int, int, float]] = {}
        """Other writers' session dirs: (trace size, mtime ns, monotonic time it last changed)."""
        self.sweeps = 0
        """Idle sweeps done (``traced status``)."""
        """Session dirs seen under the global root that this daemon did not open."""
        registry.on_open.append(self.watch)
        registry.on_close.append(self._forget)

    def watch(self, live: Live) -> None:
        """Start watching the owner of ``live`` (called on open and re-adoption)."""
        pid = live.state.owner_pid
        if not pid or pid < 0:
            return
        sid = live.state.session_id
        for other_pid, (sids, scope) in list(self._owners.items()):
            if sid in sids and other_pid != pid:
                sids.discard(sid)
                if not sids:
                    scope.cancel()
                    del self._owners[other_pid]
        entry = self._owners.get(pid)
        if entry is not None:
            entry[0].add(sid)
            return
        scope = anyio.CancelScope()
        self._owners[pid] = ({sid}, scope)
        self.tg.start_soon(self._watch_pid, pid, live.owner_start, scope)

    def _forget(self, live: Live) -> None:
        pid = live.state.owner_pid
        entry = self._owners.get(pid) if pid else None
        if entry is None or pid is None:
            return
        entry[0].discard(live.state.session_id)
        if not entry[0]:
            entry[1].cancel()
            del self._owners[pid]

    async def _watch_pid(self, pid: int, start: int | None, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                fd = os.pidfd_open(pid)
            except (ProcessLookupError, OverflowError, ValueError):  # gone, or never a pid at all
                fd = -1
            except OSError as e:  # no pidfd here (EPERM, ENOSYS…): never take the daemon down for it
                log.error("owner_watch_failed", owner_pid=pid, error=str(e))
                return
            try:
                if fd >= 0 and (start is None or proc_start_time(pid) == start):
                    await anyio.wait_readable(fd)
            finally:
                if fd >= 0:
                    os.close(fd)
            entry = self._owners.pop(pid, None)
            sids = entry[0] if entry else set()
            async with self.quiet:
                for sid in sorted(sids):
                    await self._finalize(sid, vocab.OWNER_EXITED)

    async def finalize(self, sid: str, reason: str) -> None:
        """End an open session ``aborted`` with ``reason``, holding the quiet lock."""
        async with self.quiet:
            await self._finalize(sid, reason)

    async def _finalize(self, sid: str, reason: str) -> None:
        if sid not in self.registry.sessions:
            return
        try:
            await self.end_session(sid, vocab.ABORTED, None, reason, 0.0)
            log.info("session_finalized", session_id=sid, reason=reason)
        except RequestError as e:
            log.error("finalize_failed", session_id=sid, reason=reason, error=e.message)

    async def idle_sweeper(self, every: float = 1.0) -> None:
        """Finalize sessions idle past their timeout, forever."""
        while True:
            await anyio.sleep(every)
            now = time.monotonic()
            expired = [
                sid for sid, live in self.registry.sessions.items()
                if live.state.idle_timeout > 0 and now - live.state.last_activity > live.state.idle_timeout
            ]
            if expired:
                async with self.quiet:
                    for sid in expired:
                        await self._finalize(sid, vocab.IDLE_TIMEOUT)
            await self._sweep_foreign(now)
            self.sweeps += 1

    async def _sweep_foreign(self, now: float) -> None:
        """Finalize other writers' sessions whose trace has not changed for the idle timeout.

        Idleness is the file's own progress seen on the monotonic clock (its size and
        mtime unchanged since ``now - idle``), so a wall-clock jump finalizes nothing.
        """
        timeout = self.registry.config.idle_timeout
        for sdir, (size, mtime_ns, since) in list(self.foreign.items()):
            path = Path(sdir)
            if path.name in self.registry.sessions or path.name in self.registry.closed or layout.ended(path):
                self.foreign.pop(sdir, None)
                continue
            try:
                st = (path / layout.TRACE).stat()
            except OSError:
                continue  # no trace yet
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                self.foreign[sdir] = (st.st_size, st.st_mtime_ns, now)  # it moved: idle from now
                continue
            if timeout <= 0 or now - since <= timeout:
                continue
            self.foreign.pop(sdir, None)
            try:
                live = self.registry.adopt_foreign(path)
            except (OSError, RequestError) as e:
                log.error("foreign_adopt_failed", session_dir=sdir, error=str(e))
                continue
            async with self.quiet:
                await self._finalize(live.state.session_id, vocab.IDLE_TIMEOUT)

    async def watch_other_writers(self, stop: anyio.Event,
                                  *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Notice session dirs that other writers (devboy's CLI) create under the global root.

        Non-recursive watches on today's and yesterday's date dirs and their
        skill dirs see new session dirs only, never the daemon's own appends.
        Idleness comes from the trace's mtime at sweep time. Reports started
        once the first watches are armed.
        """
        root = self.registry.root
        started = False
        while not stop.is_set():
            now = datetime.now(UTC)
            layout.ensure_private_dir(root)
            days = [root / (now - timedelta(days=d)).strftime("%Y-%m-%d") for d in (0, 1)]
            days = [d for d in days if d.is_dir()]
            skills = [d / k for d in days for k in layout.subdirs(d)]
            for skill_dir in skills:  # sessions that appeared while nobody watched
                for sid in layout.subdirs(skill_dir):
                    self._note_foreign(skill_dir / sid)
            rewatch = anyio.Event()
            until = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)

            async def changed(changes: fswatch.Changes, dirs: list[Path] = days, ev: anyio.Event = rewatch) -> None:
                for _change, raw in changes:
                    path = Path(raw)
                    if path.parent == root or (path.parent in dirs and path.is_dir()):
                        ev.set()  # a new date or skill dir: watch it too
                    elif path.parent.parent in dirs and path.is_dir():
                        self._note_foreign(path)

            async def rearm(at: datetime = until, ev: anyio.Event = rewatch) -> None:
                await anyio.sleep((at - datetime.now(UTC)).total_seconds())
                ev.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(rearm)
                try:
                    await tg.start(partial(fswatch.watch, [root, *days, *skills], changed,
                                           stop=fswatch.Either(stop, rewatch), recursive=False))
                except (OSError, RuntimeError) as e:  # e.g. out of inotify watches: degrade, never die
                    log.error("other_writers_watch_failed", error=str(e))
                if not started:
                    task_status.started()
                    started = True
                await _first(rewatch, stop)
                tg.cancel_scope.cancel()
        if not started:
            task_status.started()

    def _note_foreign(self, sdir: Path) -> None:
        """Remember a session dir this daemon did not open (the sweep finalizes it when idle)."""
        sid = sdir.name
        if sid not in self.registry.sessions and sid not in self.registry.closed:
            self.foreign.setdefault(str(sdir), (-1, -1, time.monotonic()))


async def _first(*events: anyio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with anyio.create_task_group() as tg:
        for ev in events:
            async def wait(e: anyio.Event = ev) -> None:
                await e.wait()
                tg.cancel_scope.cancel()
            tg.start_soon(wait)
