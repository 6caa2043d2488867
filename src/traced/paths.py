"""Where things live: socket, state, roots, session directories; name validation.

The one place that decides paths. Session directories are created with
``openat``-style directory fds and ``O_NOFOLLOW`` so that a symlink planted
inside a root cannot redirect a write outside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from traced import locations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Final

NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
"""Skill and session names (no ``..``, no ``/``, no leading dot)."""

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
REPO_MARKERS: Final = (".git", ".devboy.toml")


class InvalidName(ValueError):
    """A skill or session name outside ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid skill/session name, else raise InvalidName."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidName(
            f"invalid {kind} {value!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
        )
    return value


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/traced``, else ``/tmp/traced-$UID`` (see ``locations``)."""
    return Path(locations.runtime_location())


def socket_path() -> Path:
    """The daemon's socket: ``$TRACED_SOCKET``, else ``<runtime_dir>/traced.sock``."""
    return Path(locations.socket_location())


def state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME/traced``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "traced"


def default_root() -> Path:
    """The global root of session directories."""
    explicit = os.environ.get("TRACED_ROOT")
    if explicit:
        return Path(explicit)
    return state_dir() / "sessions"


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/traced/config.toml``."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "traced" / "config.toml"


def spool_dir() -> Path:
    """Where clients spool frames while the daemon is unreachable."""
    return state_dir() / "spool"


def find_repo(start: str | os.PathLike[str]) -> Path | None:
    """Walk up from ``start`` to the first directory holding ``.git`` or ``.devboy.toml``."""
    here = Path(start)
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in REPO_MARKERS):
            return candidate
    return None


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 regardless of umask."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)


def open_dir_nofollow(root: Path, parts: tuple[str, ...], create: bool = True) -> int:
    """Open (and create) ``root/parts…`` without following symlinks below ``root``.

    Returns a directory fd the caller must close. Each component is created
    with mode 0700 and opened with ``O_NOFOLLOW`` relative to its parent's fd,
    so a symlink planted anywhere below ``root`` makes this fail with ELOOP or
    ENOTDIR instead of writing elsewhere.
    """
    if create:
        root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open(root, flags)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise InvalidName(f"invalid path component {part!r}")
            created = False
            if create:
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
            child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
            if created:
                os.fchmod(fd, DIR_MODE)  # umask-independent
    except BaseException:
        os.close(fd)
        raise
    return fd
