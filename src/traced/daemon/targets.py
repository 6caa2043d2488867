"""Targets and roots: where a session's directory goes, and the registry of roots written to.

A target (DESIGN §2) is ``global`` (the daemon's root), ``repo`` (the first
directory above the client's cwd holding ``.git`` or ``.devboy.toml``, then
``.devboy/sessions``; global with a recorded reason when there is none) or an
absolute directory owned by the client. ``roots.json`` in the state dir lists
every root this daemon has written to, so the readers, the watchers and the
forwarders find every session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec
import structlog

from traced.errors import RequestError
from traced.format.files import write_atomic
from traced.format.layout import ROOTS_FILE, ensure_private_dir, read_roots

log = structlog.get_logger("traced.daemon.targets")

REPO_MARKERS: Final = (".git", ".devboy.toml")


def find_repo(start: str | os.PathLike[str]) -> Path | None:
    """Walk up from ``start`` to the first directory holding ``.git`` or ``.devboy.toml``."""
    here = Path(start)
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in REPO_MARKERS):
            return candidate
    return None


def resolve(target: str, cwd: str, peer_uid: int, global_root: Path) -> tuple[Path, tuple[str, ...], str | None]:
    """Where a target's sessions go: (trusted base, components below it, fallback reason).

    The components are created without following symlinks, so a repo that
    ships ``.devboy/sessions`` as a symlink cannot redirect writes. The base is
    the directory's real path (no ``..``, no symlink): a session dir has one
    name however the client spells it, which the write-ahead log's per-path
    bookkeeping relies on. Raises RequestError ``invalid_name`` (not a target)
    or ``forbidden`` (a directory another uid owns).
    """
    if target in ("", "global"):
        return global_root, (), None
    if target == "repo":
        repo = find_repo(cwd) if cwd else None
        if repo is None:
            return global_root, (), f"no .git or .devboy.toml above {cwd or '(unknown cwd)'}"
        return Path(os.path.realpath(repo)), (".devboy", "sessions"), None
    if not os.path.isabs(target):
        raise RequestError("invalid_name", f"target must be global, repo or an absolute dir: {target!r}")
    path = Path(os.path.realpath(target))
    try:
        st = os.stat(path)
    except OSError as e:
        raise RequestError("invalid_name", f"target {target!r}: {e.strerror}") from e
    if not os.path.isdir(path):
        raise RequestError("invalid_name", f"target {target!r} is not a directory")
    if st.st_uid != peer_uid:
        raise RequestError("forbidden", f"target {target!r} is not owned by uid {peer_uid}")
    return path, (), None


class Roots:
    """Every root this daemon has written to, kept in ``<state>/roots.json``."""

    def __init__(self, state_dir: Path, global_root: Path) -> None:
        self.state_dir = state_dir
        self.global_root = global_root
        self.known: set[str] = {str(global_root)}

    def __iter__(self) -> Iterator[str]:
        return iter(self.known)

    def load(self) -> None:
        """Read ``roots.json`` (a missing or broken file is an empty list); each root by its real path,
        so one written under another spelling (before targets were taken by real path) is one root."""
        self.known.update(os.path.realpath(r) for r in read_roots(self.state_dir))

    def note(self, root: str) -> None:
        """Remember ``root`` (written at once, atomically, when it is new)."""
        if root in self.known:
            return
        self.known.add(root)
        try:
            ensure_private_dir(self.state_dir)
            write_atomic(str(self.state_dir), ROOTS_FILE, msgspec.json.encode(sorted(self.known)), sync=False)
        except OSError as e:
            log.error("roots_write_failed", error=e.strerror)

