"""What /proc says about a process: its start time (against pid reuse) and its working directory."""

from __future__ import annotations

import os


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``: the start time in clock ticks since boot; None if gone.

    Source: proc(5). Together with the pid it names one process, even after the pid is reused.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    return int(rest[19])


def alive(pid: object, start: object = None) -> bool:
    """Whether process ``pid`` runs and, when ``start`` is given, is the same process as then."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= 4194304:
        return False
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def peer_cwd(pid: int) -> str:
    """The working directory of a process (``/proc/<pid>/cwd``), or '' when not readable."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""
