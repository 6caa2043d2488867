"""Watchers that finalize abandoned sessions.

They never write files: they call the server's ``end_session``, the same
path a client's ``close`` takes, so a late event can never interleave with
finalization.

- owner exit: one ``pidfd`` per owner pid, readable the moment it exits
  (immediate, and safe against pid reuse);
- idle timeout: a sweep every second;
- restart recovery: markers in ``<state>/open/`` name the sessions a previous
  daemon left open; each is re-adopted (owner still alive) or finalized.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import TaskGroup

from traced.errors import RequestError
from traced.registry import Live, Registry, proc_start_time

log = structlog.get_logger("traced.watchers")

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
            except ProcessLookupError:
                fd = -1
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
                    await self._finalize(sid, "owner_exited")

    async def _finalize(self, sid: str, reason: str) -> None:
        if sid not in self.registry.sessions:
            return
        try:
            await self.end_session(sid, "aborted", None, reason, 0.0)
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
                        await self._finalize(sid, "idle_timeout")

    async def recover(self) -> tuple[int, int]:
        """Re-adopt or finalize the sessions a previous daemon left open.

        Returns (re-adopted, finalized).
        """
        adopted = finalized = 0
        for marker in self.registry.markers():
            pid = marker.get("owner_pid")
            start = marker.get("owner_start")
            alive = (
                isinstance(pid, int) and pid > 0
                and proc_start_time(pid) is not None
                and (start is None or proc_start_time(pid) == start)
            )
            ownerless = not (isinstance(pid, int) and pid > 0)
            try:
                live = self.registry.adopt_marker(marker)
            except OSError as e:
                log.error("recover_failed", session_id=marker.get("session_id"), error=str(e))
                continue
            if live is None:
                continue
            if alive or ownerless:
                adopted += 1
                log.info("session_readopted", session_id=live.state.session_id, owner_pid=pid,
                         step=live.state.step)
            else:
                await self._finalize(live.state.session_id, "recovered_after_restart")
                finalized += 1
        return adopted, finalized
