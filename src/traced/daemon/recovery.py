"""Restart recovery: what a previous daemon left open is re-adopted or finalized.

Each open marker names a session. A session whose trace already ends with
``end`` (the daemon died between writing it and removing the marker) is
ended: its meta.json is completed from that record and it is never adopted
again, so it keeps exactly one ``end``. Otherwise it is re-adopted when its
owner still runs (or it has none), and finalized ``aborted /
recovered_after_restart`` when its owner is gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from traced.daemon.journal import scan
from traced.daemon.procfs import alive
from traced.daemon.registry import Registry
from traced.daemon.watchers import Watchers
from traced.errors import RequestError
from traced.format import layout, vocab
from traced.format.files import write_atomic
from traced.format.records import Usage, decode_meta, meta_json

log = structlog.get_logger("traced.daemon.recovery")


async def recover(registry: Registry, watchers: Watchers) -> tuple[int, int]:
    """Re-adopt or finalize every session a previous daemon left open.

    Returns (re-adopted, finalized).
    """
    adopted = finalized = 0
    for marker in registry.markers.read():
        sid = str(marker.get("session_id"))
        pid = marker.get("owner_pid")
        ownerless = not (isinstance(pid, int) and pid > 0)
        try:
            live = registry.adopt_marker(marker)
        except RequestError as e:  # its trace already ends: complete meta.json, forget the marker
            if e.code == "session_closed":
                sdir = Path(str(marker.get("dir", "")))
                complete_ended(sdir)
                registry.peek(sdir)  # a close its client resends finds the recorded ending
            else:
                log.error("recover_failed", session_id=sid, error=e.message)
            registry.markers.unmark(sid)
            continue
        except OSError as e:
            log.error("recover_failed", session_id=sid, error=str(e))
            continue
        if live is None:
            continue
        if ownerless or alive(pid, marker.get("owner_start")):
            adopted += 1
            log.info("session_readopted", session_id=live.state.session_id, owner_pid=pid, step=live.state.step)
        else:
            await watchers.finalize(live.state.session_id, vocab.RECOVERED_AFTER_RESTART)
            finalized += 1
    return adopted, finalized


def complete_ended(sdir: Path) -> None:
    """Fill meta.json's ending (ended_at, outcome, summary, reason) and counters from the trace."""
    try:
        meta = decode_meta(layout.read_regular(sdir / layout.META))
    except (OSError, ValueError, RecursionError):
        return
    if meta.ended_at is not None:
        return
    meta.tool_calls = meta.errors = 0
    meta.phases = {}
    meta.usage = Usage()
    tail = scan(str(sdir / layout.TRACE), counters=meta)
    end = tail.end
    if end is None:
        return
    payload: Any = end.payload if isinstance(end.payload, dict) else {}
    meta.ended_at = end.ts
    meta.outcome = payload.get("outcome") if payload.get("outcome") in vocab.OUTCOMES else vocab.ABORTED
    if isinstance(payload.get("summary"), str):
        meta.summary = payload["summary"]
    if isinstance(payload.get("reason"), str):
        meta.reason = payload["reason"]
    meta.steps = tail.last_step
    try:
        write_atomic(str(sdir), layout.META, meta_json(meta))
    except OSError as e:
        log.error("meta_write_failed", session_dir=str(sdir), error=e.strerror)
    log.info("session_end_completed", session_dir=str(sdir), outcome=meta.outcome)

