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
import time
from pathlib import Path
from typing import Final

from traced.format import layout
from traced.format.files import write_atomic

SUFFIX: Final = ".spool"
_last_sealed = 0
"""The mtime (ns) given to this process's last sealed segment."""


def segment_name(client_id: str, first_seq: int) -> str:
    """The file name of a spool segment."""
    return f"{client_id}-{first_seq:012d}{SUFFIX}"


def write_segment(directory: Path, client_id: str, first_seq: int, frames: bytes | bytearray) -> Path:
    """Write one sealed segment atomically (temp + fsync + link); return its path.

    A segment never replaces another: processes sharing a client id (the agents' transcript
    records, sent under one id for idempotency) may pick the same name, and the later one
    then gets ``<client_id>-<first seq>-<n>.spool``.
    """
    from traced.format.ids import new_ulid

    global _last_sealed
    layout.ensure_private_dir(directory)
    hidden = f".{client_id}-{new_ulid()}.seal"  # hidden: the daemon skips it
    write_atomic(str(directory), hidden, bytes(frames))
    # the ingest order (see ``segments``): an exact, per-process increasing mtime, since the
    # kernel's own is only as fine as its clock tick and two segments of one hook share a tick
    _last_sealed = max(time.time_ns(), _last_sealed + 1)
    os.utime(directory / hidden, ns=(_last_sealed, _last_sealed))
    try:
        for n in range(1000):
            name = segment_name(client_id, first_seq) if not n else f"{client_id}-{first_seq:012d}-{n}{SUFFIX}"
            try:
                os.link(directory / hidden, directory / name)
            except FileExistsError:
                continue
            return directory / name
        raise FileExistsError(f"no free spool segment name for {client_id}-{first_seq}")
    finally:
        os.unlink(directory / hidden)


def segments(directory: Path, client_id: str = "") -> list[Path]:
    """Sealed segments in ingest order (all, or one client's): the order they were sealed in
    (mtime, then name), across clients. Several processes spool for one session while the daemon
    is away (a hook's events, and the transcript's calls it sends first under their own client
    id): by name, every ``transcript-…`` segment would come after the hook's ``close`` and be
    refused, or land in the wrong turn."""
    try:
        names = [n for n in os.listdir(directory)
                 if n.endswith(SUFFIX) and not n.startswith(".") and n.startswith(client_id)]
    except OSError:
        return []
    keyed = []
    for n in names:
        try:
            sealed = os.lstat(directory / n).st_mtime_ns
        except OSError:
            continue  # taken meanwhile
        keyed.append((sealed, n))
    return [directory / n for _, n in sorted(keyed)]


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
