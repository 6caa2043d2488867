"""Where the runtime dir and the socket are: strings from the environment, ``os`` only.

The shell path (``traced event``, hooks) needs the socket and nothing else,
so these decisions live here without pathlib; ``paths`` wraps them.
"""

from __future__ import annotations

import os


def runtime_location() -> str:
    """``$RUNTIME_DIRECTORY`` (systemd), else ``$XDG_RUNTIME_DIR/traced``, else ``/tmp/traced-$UID``."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return runtime.split(":")[0]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "traced")
    return f"/tmp/traced-{os.getuid()}"


def socket_location() -> str:
    """The daemon's socket: ``$TRACED_SOCKET``, else ``<runtime dir>/traced.sock``."""
    return os.environ.get("TRACED_SOCKET") or os.path.join(runtime_location(), "traced.sock")


def current_dir() -> str:
    """The working directory, or '' when it was removed under us."""
    try:
        return os.getcwd()
    except OSError:
        return ""
