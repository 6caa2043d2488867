"""Live pages: which sessions changed, from the daemon's bus when it runs, else from the files.

``Hub`` fans change notices out to the open pages (each has a small bounded
queue; a page that falls behind gets one ``resync`` notice instead of the ones
it missed). ``follow`` feeds it: it subscribes to the daemon (``AsyncClient.subscribe``,
records after redaction, as they land) and, while no daemon answers, watches the
roots' ``trace.jsonl``/``meta.json`` files with watchfiles, trying the daemon again
every ``retry`` seconds. A notice is ``{"session_id", "skill", "step", "phase"}``
(from the bus; the files give only ``session_id``) or ``{"resync": true}`` (with
``"live": "daemon"|"files"`` when the feed switched).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from traced.errors import TracedError
from traced.format import layout

QUEUE: Final = 256
"""Notices buffered per page before it is told to resync."""
RESYNC: Final = {"resync": True}


class Hub:
    """The open pages' queues, and where notices come from (``mode``: ``daemon`` or ``files``)."""

    def __init__(self) -> None:
        self._queues: set[MemoryObjectSendStream[dict[str, Any]]] = set()
        self._behind: set[MemoryObjectSendStream[dict[str, Any]]] = set()
        self.mode = "files"
        self.published = 0

    def set_mode(self, mode: str) -> None:
        """Switch the feed (``daemon`` or ``files``); pages hear of it, and re-read what they show."""
        if mode != self.mode:
            self.mode = mode
            self.publish({"resync": True, "live": mode})

    def publish(self, notice: dict[str, Any]) -> None:
        """Offer a notice to every page; never waits."""
        self.published += 1
        for queue in list(self._queues):
            try:
                if queue in self._behind:
                    queue.send_nowait(RESYNC)
                    self._behind.discard(queue)
                queue.send_nowait(notice)
            except anyio.WouldBlock:
                self._behind.add(queue)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._queues.discard(queue)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[dict[str, Any]]]:
        """A page's queue of notices, for as long as the context lasts."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](QUEUE)
        self._queues.add(send)
        try:
            yield receive
        finally:
            self._queues.discard(send)
            self._behind.discard(send)
            send.close()
            receive.close()

    @property
    def pages(self) -> int:
        """Pages listening now."""
        return len(self._queues)


def _notice(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("session_id", "skill", "step", "phase")}


async def from_daemon(hub: Hub, socket: str | Path | None) -> None:
    """Forward the daemon's records as notices until it goes away (raises DaemonUnavailable)."""
    from traced.client.aio import AsyncClient

    client = AsyncClient(socket, name="traced-ui", spool=False, send_secrets=False, timeout=5.0)
    try:
        await client.connect()
        records = await client.subscribe()
        hub.set_mode("daemon")
        hub.publish(RESYNC)  # anything written while no one listened
        async for item in records:
            hub.publish(RESYNC if isinstance(item, int) else _notice(item))
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


def _session_of(path: str, roots: Sequence[Path]) -> str | None:
    """The session id of a changed ``<root>/<date>/<skill>/<id>/<file>``."""
    p = Path(path)
    if p.name not in (layout.TRACE, layout.META):
        return None
    for root in roots:
        try:
            parts = p.relative_to(root).parts
        except ValueError:
            continue
        if len(parts) == 4:
            return parts[2]
    return None


async def from_files(hub: Hub, roots: Sequence[Path]) -> None:
    """Notices from file changes under ``roots`` (those that exist; a missing one is waited for)."""
    import watchfiles

    while True:
        present = [r for r in roots if r.is_dir()]
        if not present:
            await anyio.sleep(1.0)
            continue
        hub.set_mode("files")
        async for changes in watchfiles.awatch(*present, debounce=50, step=20, recursive=True, rust_timeout=500):
            seen: set[str] = set()
            for _change, path in changes:
                sid = _session_of(path, present)
                if sid is not None and sid not in seen:
                    seen.add(sid)
                    hub.publish({"session_id": sid})
        return


async def follow(hub: Hub, roots: Sequence[Path], socket: str | Path | None, retry: float = 3.0) -> None:
    """Feed ``hub`` forever: the daemon's bus while it answers, the files otherwise."""
    while True:
        try:
            await from_daemon(hub, socket)
        except (TracedError, OSError):  # not running, gone, or refusing us: the files will do
            pass
        hub.set_mode("files")
        with anyio.move_on_after(retry):
            await from_files(hub, roots)
