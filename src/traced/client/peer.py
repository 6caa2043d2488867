"""Who is on the other end of the socket, checked before a client sends anything.

Without ``XDG_RUNTIME_DIR`` (ssh without pam_systemd, cron, ``sudo -u``,
containers) the socket falls back to the predictable ``/tmp/traced-$UID``:
another local user could create that directory first and listen there. A
client's ``hello`` carries its secret env values, so before it says anything
it checks that the socket's directory is its own (owned by its uid, mode
0700, not a symlink) and, once connected, that the peer (SO_PEERCRED) runs
as its uid. Stdlib only: the shell path uses it (through ``_socket``: ``socket`` would cost it
``enum`` and ``selectors``, several ms per event).
"""

from __future__ import annotations

import _socket
import os
import stat
import struct

_UCRED = struct.Struct("3i")


def check_dir(socket_path: str | os.PathLike[str]) -> None:
    """Raise PermissionError unless the socket's directory is this user's private directory."""
    directory = os.path.dirname(os.path.abspath(socket_path))
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        raise FileNotFoundError(2, "no such directory", directory) from None
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        raise PermissionError(1, f"refusing {directory}: it is a symlink")
    if st.st_uid != uid:
        raise PermissionError(1, f"refusing {directory}: owned by uid {st.st_uid}, not {uid}")
    if st.st_mode & 0o077:
        raise PermissionError(1, f"refusing {directory}: mode {stat.S_IMODE(st.st_mode):04o}, not 0700")


def check_peer(sock: _socket.socket) -> None:
    """Raise PermissionError unless the connected peer runs as this user (SO_PEERCRED).

    ``sock``: a connected Unix socket (``socket.socket`` or the bare ``_socket.socket``)."""
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size))
    if uid != os.getuid():
        raise PermissionError(1, f"refusing the daemon on {sock.getpeername() or 'the socket'}: it runs as uid "
                                 f"{uid}, not {os.getuid()}")
