"""Where things are on this machine, decided from the environment: socket, state, roots.

The one home for these decisions, for the daemon, the clients and the readers.
The string functions use ``os`` only: the shell path (``traced event``, the
hooks) needs the socket and nothing else, and pays for no pathlib import.
The ``Path`` functions import pathlib when first called.

Sources: DESIGN §2 (roots) and §4 (socket); systemd's ``$RUNTIME_DIRECTORY`` and
``$STATE_DIRECTORY``; the XDG base directory specification.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from pathlib import Path


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


def state_location() -> str:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME/traced`` (``~/.local/state/traced``)."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return state.split(":")[0]
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(xdg, "traced")


def current_dir() -> str:
    """The working directory, or '' when it was removed under us."""
    try:
        return os.getcwd()
    except OSError:
        return ""


def socket_path() -> Path:
    """``socket_location()`` as a Path."""
    from pathlib import Path

    return Path(socket_location())


def state_dir() -> Path:
    """``state_location()`` as a Path: open markers, roots.json, spool, hook clocks, locks."""
    from pathlib import Path

    return Path(state_location())


def default_root() -> Path:
    """The global root of session directories: ``$TRACED_ROOT``, else ``<state dir>/sessions``."""
    from pathlib import Path

    explicit = os.environ.get("TRACED_ROOT")
    if explicit:
        return Path(explicit)
    return state_dir() / "sessions"


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/traced/config.toml`` (``~/.config/traced/config.toml``)."""
    from pathlib import Path

    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "traced" / "config.toml"


def otlp_token_path() -> Path:
    """The OTLP receiver's bearer token, made by the daemon (0600) unless ``$TRACED_OTLP_TOKEN`` is set."""
    return state_dir() / "otlp-token"


def spool_dir() -> Path:
    """Where clients spool frames while the daemon is unreachable: ``<state dir>/spool``."""
    return state_dir() / "spool"
