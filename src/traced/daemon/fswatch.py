"""File watches that report themselves ready once armed (``task_group.start``).

``watchfiles.awatch`` arms its inotify watches inside the generator, so a
caller cannot tell when a change would be seen. Here the watcher (watchfiles'
``RustNotify``, the engine under ``awatch``) is built first, which arms the
watches, and only then is ``task_status.started()`` called: ``READY=1`` after
``start`` means every watch is live, and no test has to sleep for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from watchfiles import Change
from watchfiles._rust_notify import RustNotify

WATCH_TIMEOUT_MS = 500
"""How long the watch thread may block before it looks at its stop event again: it bounds
how long a graceful stop waits for a watcher (watchfiles' default is 5 s)."""

Changes = set[tuple[Change, str]]


class Either:
    """A stop event for the watch thread that is set when any of its events is."""

    def __init__(self, *events: anyio.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        """Whether any event is set (called from the watch thread: a plain flag read)."""
        return any(e.is_set() for e in self.events)


async def watch(
    paths: Sequence[str | Path],
    on_changes: Callable[[Changes], Awaitable[None]],
    *,
    stop: anyio.Event | Either,
    recursive: bool = True,
    keep: Callable[[Change, str], bool] | None = None,
    debounce_ms: int = 200,
    step_ms: int = 50,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watch ``paths`` until ``stop`` is set, calling ``on_changes`` with each batch that ``keep`` passes.

    Reports started once the watches are armed. Raises OSError (e.g. FileNotFoundError,
    out of inotify watches) from arming, before reporting started.
    """
    with RustNotify([str(p) for p in paths], False, False, 300, recursive, False) as watcher:
        task_status.started()
        while not stop.is_set():
            raw = await anyio.to_thread.run_sync(watcher.watch, debounce_ms, step_ms, WATCH_TIMEOUT_MS, stop)
            if isinstance(raw, str):  # "stop", "timeout" or "signal"
                if raw == "stop":
                    return
                continue
            changes = {(Change(c), p) for c, p in raw}
            if keep is not None:
                changes = {(c, p) for c, p in changes if keep(c, p)}
            if changes:
                await on_changes(changes)
