"""The on-disk layout of DESIGN §2, in one place: names, files, walks, the ended rule, blob refs.

```
<root>/<YYYY-MM-DD>/<skill>/<session_id>/trace.jsonl
<root>/<YYYY-MM-DD>/<skill>/<session_id>/meta.json
<root>/<YYYY-MM-DD>/<skill>/<session_id>/trace.torn        torn fragments, moved aside
<root>/<YYYY-MM-DD>/<skill>/<session_id>/blobs/<sha256>    spilled strings
<root>/<YYYY-MM-DD>/<skill>/<session_id>/artifacts/        copied files
```

Every module that names these files or walks these directories goes through
here: the daemon (writing, recovery, watchers), the readers, the forwarders
and ``prune``. Directories below a root are created and opened with
``O_NOFOLLOW`` relative to their parent's fd, so a symlink planted inside a
root can never redirect a write outside it.

Stdlib only (``os``); no pathlib and no ``re`` at import, for the shell path: names are
checked by hand, and the patterns (``NAME_RE``, ``DATE_RE``, ``BLOB_RE``) compiled on first use.
"""

from __future__ import annotations

import os
from errno import EINVAL
from stat import S_ISREG

from traced.errors import InvalidName

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    import re
    from collections.abc import Iterator
    from typing import Any, Final, TypeGuard

_PATTERNS: Final = {
    "NAME_RE": r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z",  # skill and session names: no "..", "/" or leading dot
    "DATE_RE": r"\d{4}-\d{2}-\d{2}\Z",  # a date directory's name: the UTC date of the session's start
    "BLOB_RE": r"sha256:([0-9a-f]{64})\Z",  # a blob reference
}
_NAME_HEAD: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS: Final = _NAME_HEAD | frozenset("._-")


def __getattr__(name: str) -> re.Pattern[str]:
    """``NAME_RE``, ``DATE_RE``, ``BLOB_RE`` (see ``_PATTERNS``): compiled on first use, then plain
    module attributes. ``import re`` costs the hook path about 6 ms of a 13 ms start-up."""
    source = _PATTERNS.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import re

    pattern = globals()[name] = re.compile(source)
    return pattern


def _pattern(name: str) -> re.Pattern[str]:
    found: re.Pattern[str] | None = globals().get(name)
    return found if found is not None else __getattr__(name)


TRACE: Final = "trace.jsonl"
META: Final = "meta.json"
TORN: Final = "trace.torn"
BLOBS: Final = "blobs"
ARTIFACTS: Final = "artifacts"

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600

BLOB_KEY: Final = "$blob"


def check_name(kind: str, value: Any) -> str:
    """``value`` when it is a valid skill or session name.

    Raises ``InvalidName`` unless it matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
    """
    if not valid_name(value):
        raise InvalidName(f"invalid {kind} {value!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    return value


def valid_name(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a valid skill or session name (``NAME_RE``, checked by hand)."""
    return (isinstance(value, str) and 0 < len(value) <= 128 and value[0] in _NAME_HEAD
            and _NAME_CHARS.issuperset(value))


# --------------------------------------------------------------------------- directories


def ensure_private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` (and parents) with mode 0700 regardless of umask."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE)


def open_dir_nofollow(root: str | os.PathLike[str], parts: tuple[str, ...], create: bool = True) -> int:
    """Open (and create) ``root/parts…`` without following symlinks below ``root``.

    Returns a directory fd the caller must close. Each component is created
    with mode 0700 and opened with ``O_NOFOLLOW`` relative to its parent's fd,
    so a symlink planted anywhere below ``root`` makes this fail with ELOOP or
    ENOTDIR instead of writing elsewhere. Raises ``InvalidName`` for a
    component such as ``..``, and ``OSError`` from the filesystem.
    """
    if create:
        os.makedirs(root, mode=DIR_MODE, exist_ok=True)
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


def subdirs(path: str | os.PathLike[str]) -> list[str]:
    """Names of the real (not symlinked, not hidden) subdirectories of ``path``, sorted; [] on error."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def date_dirs(root: str | os.PathLike[str], lo: str = "", hi: str = "9999-99-99") -> list[str]:
    """The date directories of ``root`` whose names are within ``lo..hi`` (inclusive), newest first."""
    date_re = _pattern("DATE_RE")
    return sorted((d for d in subdirs(root) if date_re.match(d) and lo <= d <= hi), reverse=True)


def walk_sessions(root: str, lo: str = "", hi: str = "9999-99-99",
                  skill: str | None = None) -> Iterator[tuple[str, str, str]]:
    """``(date, skill, session_id)`` of every session directory under ``root``, newest date first.

    Only names are read (no file is opened): ``lo``/``hi`` bound the date
    directories, ``skill`` keeps one skill.
    """
    for day in date_dirs(root, lo, hi):
        day_dir = os.path.join(root, day)
        for sk in [skill] if skill is not None else subdirs(day_dir):
            for sid in subdirs(os.path.join(day_dir, sk)):
                yield day, sk, sid


def session_dir(root: str, date: str, skill: str, session_id: str) -> str:
    """``<root>/<date>/<skill>/<session_id>``."""
    return os.path.join(root, date, skill, session_id)


def is_session_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a trace.jsonl or a meta.json."""
    return os.path.isfile(os.path.join(path, TRACE)) or os.path.isfile(os.path.join(path, META))


def find_session_dir(root: str | os.PathLike[str], skill: str, session_id: str) -> str | None:
    """An existing session directory (with a trace) for (skill, id) under ``root``, newest date first."""
    for day in date_dirs(root):
        candidate = os.path.join(root, day, skill, session_id)
        if os.path.isfile(os.path.join(candidate, TRACE)):
            return candidate
    return None


def _in_flight_first(dirs: list[str]) -> str:
    """Of one id's session dirs on one date (under several skills), the first in flight (its meta.json
    not ended), else the first: what a close by id alone means."""
    if len(dirs) > 1:
        for d in dirs:
            if not ended(d):
                return d
    return dirs[0]


def sessions_by_id(root: str, lo: str = "") -> dict[str, str]:
    """Session id -> its newest session directory under ``root`` (date directories from ``lo`` on),
    whatever its skill (one walk of names, ``walk_sessions``: no symlinked directory; when two skills
    share an id on its newest date, the first in flight by skill name, else the first: ``meta.json``
    is read for those only). A ``close`` names no skill: this is how one is found by its id alone."""
    index: dict[str, str] = {}
    shared: dict[str, list[str]] = {}
    newest: dict[str, str] = {}
    for day, skill, sid in walk_sessions(root, lo):
        path = session_dir(root, day, skill, sid)
        if sid not in index:
            index[sid], newest[sid] = path, day
        elif newest[sid] == day:
            shared.setdefault(sid, [index[sid]]).append(path)
    for sid, dirs in shared.items():
        index[sid] = _in_flight_first(dirs)
    return index


# --------------------------------------------------------------------------- the ended rule


def meta_ended(meta: Any) -> bool:
    """Whether a meta.json object says its session ended: ``ended_at`` is a non-empty string.

    The one rule: ``"ended_at": null``, a missing key or a non-object meta all mean in flight.
    """
    return isinstance(meta, dict) and isinstance(meta.get("ended_at"), str) and bool(meta["ended_at"])


# --------------------------------------------------------------------------- opening files


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """An fd on ``path`` when it is a regular file (a symlink to one is followed unless
    ``flags`` has ``O_NOFOLLOW``); OSError otherwise.

    Files in a root are other writers' too: a FIFO named ``meta.json`` or ``trace.jsonl``
    would block a plain ``open`` (and the daemon's loop, or a reader) forever, and a device
    would read without end. ``O_NONBLOCK`` makes the open return at once (it changes nothing
    for a regular file), and ``fstat`` refuses what is not a regular file (``EINVAL``).
    """
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not S_ISREG(os.fstat(fd).st_mode):
            raise OSError(EINVAL, f"not a regular file: {os.fspath(path)!s}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The whole content of a regular file (see ``open_regular``); OSError otherwise."""
    with os.fdopen(open_regular(path), "rb") as f:
        return f.read()


def read_meta_object(session: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A session directory's meta.json as a dict; None when missing, unreadable or not an object."""
    import json

    try:
        data = read_regular(os.path.join(session, META))
        value = json.loads(data.decode("utf-8", "replace"))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def ended(session: str | os.PathLike[str]) -> bool:
    """Whether the session at ``session`` ended, by its meta.json (see ``meta_ended``)."""
    return meta_ended(read_meta_object(session))


# --------------------------------------------------------------------------- blob references


def blob_ref(digest: str, size: int) -> dict[str, Any]:
    """The reference that stands for a spilled string: ``{"$blob": "sha256:<hex>", "size": n}``.

    ``size`` is the blob's length in bytes (UTF-8).
    """
    return {BLOB_KEY: f"sha256:{digest}", "size": size}


def blob_digest(value: Any) -> str | None:
    """The sha256 hex digest when ``value`` is a blob reference, else None.

    The one rule: a map with a ``$blob`` string ``sha256:<64 hex>`` and no keys
    besides ``$blob`` and ``size``.
    """
    if type(value) is not dict or BLOB_KEY not in value:
        return None
    ref = value[BLOB_KEY]
    match = _pattern("BLOB_RE").match(ref) if isinstance(ref, str) else None
    if match is None or not set(value) <= {BLOB_KEY, "size"}:
        return None
    return match.group(1)


def read_blob(session: str | os.PathLike[str], value: Any) -> bytes | None:
    """The bytes of the blob ``value`` refers to, or None (not a reference, or missing)."""
    digest = blob_digest(value)
    if digest is None:
        return None
    try:
        return read_regular(os.path.join(session, BLOBS, digest))
    except OSError:
        return None


def resolve_blobs(value: Any, session: str | os.PathLike[str]) -> Any:
    """``value`` with every blob reference replaced by its text (invalid UTF-8 as U+FFFD).

    A reference whose blob is missing stays a reference.
    """
    if isinstance(value, dict):
        data = read_blob(session, value)
        if data is not None:
            return data.decode("utf-8", "replace")
        return {k: resolve_blobs(v, session) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_blobs(v, session) for v in value]
    return value


def dir_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total



ROOTS_FILE: Final = "roots.json"
"""In the state dir: every root the daemon has written to (a JSON list of paths)."""


def read_roots(state_dir: str | os.PathLike[str]) -> list[str]:
    """The roots listed in ``<state_dir>/roots.json``; [] when missing or unreadable."""
    import json

    try:
        roots = json.loads(read_regular(os.path.join(state_dir, ROOTS_FILE)))
    except (OSError, ValueError):
        return []
    return [str(r) for r in roots if isinstance(r, str)] if isinstance(roots, list) else []
