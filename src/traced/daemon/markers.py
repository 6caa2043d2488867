"""Open markers: ``<state>/open/<session_id>.json``, one per session this daemon holds open.

Restart recovery reads exactly these (O(open sessions), not O(every session
ever)): each names the session's directory, root, skill, owner pid and the
owner's start time, and its idle timeout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import structlog

from traced.format.files import write_atomic
from traced.format.layout import ensure_private_dir

log = structlog.get_logger("traced.daemon.markers")


class Markers:
    """The open markers under ``<state>/open``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def mark(self, session_id: str, marker: dict[str, Any]) -> None:
        """Write (or replace) the marker of ``session_id``; a failure is logged, never raised."""
        try:
            ensure_private_dir(self.dir)
            write_atomic(str(self.dir), f"{session_id}.json", msgspec.json.encode(marker), sync=False)
        except OSError as e:
            log.error("marker_write_failed", session_id=session_id, error=e.strerror)

    def unmark(self, session_id: str) -> None:
        """Remove the marker of ``session_id`` (absent is fine)."""
        try:
            os.unlink(self.dir / f"{session_id}.json")
        except FileNotFoundError:
            pass

    def read(self) -> list[dict[str, Any]]:
        """Every readable marker, each with its ``session_id`` added."""
        out: list[dict[str, Any]] = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                marker = msgspec.json.decode((self.dir / name).read_bytes())
            except (OSError, msgspec.DecodeError):
                continue
            if isinstance(marker, dict):
                marker["session_id"] = name[: -len(".json")]
                out.append(marker)
        return out
