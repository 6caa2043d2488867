"""The spool: where clients put frames while the daemon is unreachable.

A segment is a file of complete frames (the same bytes as on the socket),
named ``<client_id>-<first seq:012d>.spool`` so that sorting names orders
clients by start time (ULIDs) and each client's segments by sequence. A
segment is written to a temp name and renamed, so the daemon only ever sees
whole segments. It starts with a ``hello`` (without secret values: the client
redacts spooled events itself, before they reach the disk).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from traced.format import layout
from traced.format.files import write_atomic

SUFFIX: Final = ".spool"


def segment_name(client_id: str, first_seq: int) -> str:
    """The file name of a spool segment."""
    return f"{client_id}-{first_seq:012d}{SUFFIX}"


def write_segment(directory: Path, client_id: str, first_seq: int, frames: bytes | bytearray) -> Path:
    """Write one sealed segment atomically (temp + fsync + rename); return its path."""
    layout.ensure_private_dir(directory)
    name = segment_name(client_id, first_seq)
    write_atomic(str(directory), name, bytes(frames))
    return directory / name


def segments(directory: Path, client_id: str = "") -> list[Path]:
    """Sealed segments in ingest order (all, or one client's)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [directory / n for n in sorted(names)
            if n.endswith(SUFFIX) and not n.startswith(".") and n.startswith(client_id)]


def backlog(directory: Path) -> tuple[int, int]:
    """(segments, bytes) waiting in the spool."""
    files = segments(directory)
    size = 0
    for f in files:
        try:
            size += f.stat().st_size
        except OSError:
            pass
    return len(files), size
