"""The daemon's daily retention pass: the ``retention`` setting, applied to every root it writes to.

The rule and the removal are ``read.prune``'s (the same as ``traced prune
--older-than``). A pass runs once shortly after start, then every
``INTERVAL`` seconds, and at once when a reload changes the setting. It runs
in a worker thread (``anyio.to_thread``), off the loop that writes sessions,
and never touches a session this daemon holds: open, recently ended, or
another writer's it watches (checked again right before each removal).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import anyio
import structlog
from anyio.abc import TaskStatus

from traced.daemon.config import Config
from traced.daemon.registry import Registry
from traced.read import prune

log = structlog.get_logger("traced.daemon.retention")

INTERVAL: Final = 86400.0
"""Seconds between passes."""
CHECK_EVERY: Final = 60.0
"""Seconds between looks at the setting (a reload that turns retention on runs a pass within this)."""
ERRORS_KEPT: Final = 10


class Retention:
    """Runs the passes and remembers the last one for ``traced status``."""

    def __init__(self, config: Config, registry: Registry, foreign: Callable[[], Iterable[str]]) -> None:
        self.config = config
        self.registry = registry
        self.foreign = foreign
        """The session dirs of other writers that the watchers follow."""
        self.last: dict[str, Any] | None = None
        self.running = False
        self._applied: tuple[str, bool] | None = None
        self._last_mono = 0.0
        self._wake = anyio.Event()

    def poke(self) -> None:
        """Look at the setting now (after a reload) rather than within ``CHECK_EVERY``."""
        self._wake.set()

    # --- what the daemon holds -----------------------------------------------

    def held_now(self) -> dict[str, Any]:
        """``held_sessions`` (ids) and ``held_dirs`` (paths): every session this daemon holds (on the loop)."""
        reg = self.registry
        lives = [*reg.sessions.values(), *reg.ended.values()]
        return {
            "held_sessions": sorted({lv.state.session_id for lv in lives}),
            "held_dirs": sorted({*(lv.state.dir for lv in lives), *self._foreign_dirs()}),
        }

    def _foreign_dirs(self) -> list[str]:
        return [str(d) for d in list(self.foreign())]

    def _held(self, snapshot: set[str]) -> prune.Held:
        """``held(id, path)`` for the worker thread: the snapshot taken on the loop, and plain dict
        lookups of the live registry (atomic) for sessions opened since."""
        reg = self.registry

        def held(sid: str, path: str) -> bool:
            return sid in snapshot or path in snapshot or sid in reg.sessions or sid in reg.ended

        return held

    def _held_live(self, sid: str, path: str) -> bool:
        """``held`` on the loop, right before a rename aside (through ``claim``): the registry as it is now."""
        reg = self.registry
        return sid in reg.sessions or sid in reg.ended or path in self.foreign()

    # --- the passes -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``retention`` for the status: the setting and the last pass (None before the first)."""
        return {"retention": {
            "setting": self.config.retention or "off",
            "dry_run": self.config.retention_dry_run,
            "every_s": INTERVAL,
            "running": self.running,
            "last_run": self.last,
        }}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Pass at once when retention is on, then every ``INTERVAL`` or when the setting changes."""
        task_status.started()
        while True:
            setting = (self.config.retention, self.config.retention_dry_run)
            due = time.monotonic() - self._last_mono >= INTERVAL
            if self.config.retention_seconds() is not None and (setting != self._applied or due):
                self._applied = setting
                self._last_mono = time.monotonic()
                await self.pass_once()
            with anyio.move_on_after(CHECK_EVERY):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def pass_once(self) -> dict[str, Any] | None:
        """One pass over every root (in a worker thread); returns what it did, as ``last_run``."""
        age = self.config.retention_seconds()
        if age is None:
            return None
        dry = self.config.retention_dry_run
        snapshot = {*self.registry.sessions, *self.registry.ended, *self._foreign_dirs()}
        for lv in [*self.registry.sessions.values(), *self.registry.ended.values()]:
            snapshot.add(lv.state.dir)
        roots = sorted(self.registry.roots)
        self.running = True
        try:
            self.last = await anyio.to_thread.run_sync(self._pass, roots, age, dry, self._held(snapshot))
        except Exception as e:  # a bug here must cost the pass, never the daemon
            log.exception("retention_failed", error=repr(e))
            self.last = {"at": prune.iso(time.time()), "dry_run": dry, "removed": 0, "bytes_freed": 0,
                         "errors": 1, "first_errors": [repr(e)]}
        finally:
            self.running = False
        return self.last

    def _pass(self, roots: list[str], age: float, dry: bool, held: prune.Held) -> dict[str, Any]:
        """Blocking: plan, then remove (or only log, when ``dry``)."""
        started = time.time()
        errors: list[str] = []
        try:
            chosen = prune.plan(roots, age, now=started, held=held)
        except OSError as e:  # a root gone unreadable: report, try again tomorrow
            chosen = prune.Plan(cutoff=started - age)
            errors.append(str(e))
        result: dict[str, Any] = {
            "at": prune.iso(started), "dry_run": dry, "roots": roots, "cutoff": prune.iso(chosen.cutoff),
            "scanned": chosen.scanned, "held": chosen.held, "kept_foreign": len(chosen.foreign),
        }
        for path in chosen.foreign:
            log.warning("retention_kept_foreign", path=path, why="holds files that are not a session's")
        if dry:
            for c in chosen.candidates:
                log.info("retention_would_remove", path=c.path, bytes=c.bytes, reason=c.reason)
            result.update(removed=0, bytes_freed=0, would_remove=len(chosen.candidates),
                          would_free=sum(c.bytes for c in chosen.candidates))
        else:
            done = prune.remove(chosen.candidates, age, now=started, held=self._held_live,
                                claim=anyio.from_thread.run_sync)
            for c in done.removed:
                log.info("retention_removed", path=c.path, bytes=c.bytes, reason=c.reason)
            errors += done.errors
            result.update(removed=len(done.removed), bytes_freed=done.bytes_freed, kept_changed=len(done.kept),
                          dirs_removed=len(done.dirs_removed))
        result.update(errors=len(errors), first_errors=errors[:ERRORS_KEPT],
                      duration_s=round(time.time() - started, 3))
        for err in errors[:ERRORS_KEPT]:
            log.error("retention_error", error=err)
        log.info("retention_pass", **{k: v for k, v in result.items() if k not in ("first_errors", "roots")})
        return result
