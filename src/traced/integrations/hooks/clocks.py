"""Call clocks: how long a tool call (or a model request) took, measured across two hook processes.

A tool call's hook (``PreToolUse``, ``BeforeTool``) leaves its wall-clock time
in ``<state>/hooks/<session_id>/<key>`` (0600, in 0700 dirs), with the call id
it made up when the agent sends none (Gemini CLI); the matching result's hook
takes it (and removes it) for ``duration_ms``. The key is the agent's call id,
or a digest of the tool's name and input. Only a fallback for durations: the
agent's own ``duration_ms``, where a hook carries it, is preferred (traced's
clock also counts the time a permission prompt waited). The hook never writes
session files: the daemon does. Stdlib only (hot path).
"""

from __future__ import annotations

import os
import stat
import time

from traced.format.layout import valid_name

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Final

AWAY_FOR: Final = 10.0
"""Seconds after a hook found no daemon and spooled during which the next hooks that find none
(no socket file, or nobody listening on it) spool at once (``away_lately``): the first one waits for
the daemon within its budget, which covers a restart; the ones after it do not each pay that wait."""
AWAY: Final = ".away"
STAMP_MAX_AGE: Final = 7 * 86400
"""Call clocks of sessions untouched this long are swept (their PostToolUse never came)."""


def stamps_root() -> str:
    """``<state>/hooks``: the hook's own small state (never session files)."""
    from traced.locations import state_location

    return os.path.join(state_location(), "hooks")


def put_stamp(root: str, session_id: str, key: str, ts: float, call_id: str = "") -> None:
    """Keep the start time (epoch seconds) of the call ``key`` (and the call id made up for it).
    Raises OSError."""
    if not (valid_name(session_id) and valid_name(key)) or (call_id and not valid_name(call_id)):
        return
    put_stamp_bytes(root, session_id, key, f"{ts!r} {call_id}".strip().encode())


def take_stamp(root: str, session_id: str, key: str) -> tuple[float, str] | None:
    """(start time, call id or "") of the call ``key``, removing it; None when there is none."""
    if not (valid_name(session_id) and valid_name(key)):
        return None
    path = os.path.join(root, session_id, key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 256)
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass
    ts, _, call_id = data.decode("ascii", "replace").partition(" ")
    try:
        return float(ts), call_id if valid_name(call_id) else ""
    except ValueError:
        return None


def drop_stamps(root: str, session_id: str) -> None:
    """Remove a session's clocks (calls that never got a result) at SessionEnd."""
    if not valid_name(session_id):
        return
    directory = os.path.join(root, session_id)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


def sweep_stamps(root: str, max_age: float = STAMP_MAX_AGE, now: float | None = None) -> None:
    """Remove the clocks of sessions untouched for ``max_age`` seconds (they never ended)."""
    cutoff = (now if now is not None else time.time()) - max_age
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        try:
            if os.stat(os.path.join(root, name)).st_mtime < cutoff:
                drop_stamps(root, name)
        except OSError:
            pass


def delivered_before(root: str, session_id: str, key: str, digest: int) -> bool:
    """Whether this exact delivery (``key``: event and call id; ``digest``: of its bytes) came before.

    Claude Code runs a hook registered twice (settings and a plugin, a hooks file loaded twice)
    twice with the same stdin. The first delivery leaves ``<state>/hooks/<session>/.<key>``
    holding its digest; a later one with the same digest is a duplicate. Errors answer False:
    when in doubt, record.
    """
    if not (valid_name(session_id) and valid_name(key)):
        return False
    path = os.path.join(root, session_id, f".{key}")
    mark = f"{digest:08x}".encode()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    else:
        try:
            if os.read(fd, 16) == mark:
                return True
        finally:
            os.close(fd)
    try:
        put_stamp_bytes(root, session_id, f".{key}", mark)
    except OSError:
        pass
    return False


def put_stamp_bytes(root: str, session_id: str, name: str, data: bytes) -> None:
    """Write ``data`` to ``<root>/<session_id>/<name>`` (0600, in 0700 dirs). Raises OSError."""
    directory = os.path.join(root, session_id)
    os.makedirs(os.path.dirname(os.path.dirname(root)), exist_ok=True)  # $XDG_STATE_HOME
    for level in (os.path.dirname(root), root, directory):  # each one 0700, unlike makedirs
        if not os.path.isdir(level):
            try:
                os.mkdir(level, 0o700)
            except FileExistsError:
                pass
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def away_lately(root: str, now: float | None = None) -> bool:
    """Whether a hook found no daemon less than ``AWAY_FOR`` seconds ago (``<state>/hooks/.away``'s
    mtime, epoch seconds); False when unknown or in the future (a clock set back)."""
    try:
        age = (time.time() if now is None else now) - os.stat(os.path.join(root, AWAY)).st_mtime
    except OSError:
        return False
    return 0.0 <= age < AWAY_FOR


def note_away(root: str, away: bool) -> None:
    """Remember that this hook found no daemon (``away``: touch ``.away``) or reached it (remove it).
    Errors are ignored: the next hook then waits as if none came before."""
    path = os.path.join(root, AWAY)
    try:
        if away:
            os.makedirs(root, mode=0o700, exist_ok=True)
            # O_NONBLOCK: a FIFO planted there must not hang the hook; only a regular file is touched
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.utime(fd)
            finally:
                os.close(fd)
        else:
            os.unlink(path)
    except OSError:
        pass
