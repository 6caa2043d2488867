"""Intake's file work: large strings spill to blobs; artifacts are copied into the session directory.

A payload string over the spill threshold is written once to
``<session>/blobs/<sha256>`` and replaced in the line by
``{"$blob": "sha256:<hex>", "size": n}`` (n in UTF-8 bytes). Redaction runs
before this, so a blob never holds what a line may not. Blobs dedupe by hash.
Both run in a worker thread, outside the session's critical section.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any, Final

from traced.errors import ArtifactRefused
from traced.format.files import write_atomic
from traced.format.layout import ARTIFACTS, BLOBS, FILE_MODE, blob_ref, open_dir_nofollow

_COPY_CHUNK: Final = 1 << 20


def has_large_string(value: Any, threshold: int) -> bool:
    """Whether any string inside ``value`` is longer than ``threshold`` characters."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if len(v) > threshold:
                return True
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _store(session_dir: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    dfd = open_dir_nofollow(session_dir, (BLOBS,))  # a symlinked blobs/ is refused (ELOOP), never followed
    try:
        try:
            os.stat(digest, dir_fd=dfd, follow_symlinks=False)  # content-addressed: same name, same bytes
        except FileNotFoundError:
            write_atomic(os.path.join(session_dir, BLOBS), digest, data, dir_fd=dfd)
    finally:
        os.close(dfd)
    return digest


def spill(value: Any, session_dir: str, threshold: int) -> tuple[Any, int]:
    """A copy of ``value`` with strings over ``threshold`` chars replaced by blob refs.

    Returns (new value, blobs referenced). Blocking: run it in a worker thread.
    """
    count = 0

    def walk(v: Any) -> Any:
        nonlocal count
        if isinstance(v, str):
            if len(v) <= threshold:
                return v
            data = v.encode("utf-8", "surrogatepass")
            count += 1
            return blob_ref(_store(session_dir, data), len(data))
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value), count


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots if r)


def attach(source: str, session_dir: str, allowed_roots: list[str], max_bytes: int) -> dict[str, Any]:
    """Copy a file into ``<session>/artifacts/``; returns the fields for the record.

    Refuses a symlink at ``source``, a path that resolves outside
    ``allowed_roots`` (the peer's home, the session's root), anything but a
    regular file, and files over ``max_bytes``. Blocking: run it in a worker thread.
    """
    if not os.path.isabs(source):
        raise ArtifactRefused(f"attach needs an absolute path, got {source!r}")
    real = os.path.realpath(source)
    if not _under(real, [os.path.realpath(r) for r in allowed_roots]):
        raise ArtifactRefused(f"{source} resolves outside the home and the session root")
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = "is a symlink" if e.errno == 40 else e.strerror
        raise ArtifactRefused(f"cannot attach {source}: {why}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactRefused(f"{source} is not a regular file")
        if st.st_size > max_bytes:
            raise ArtifactRefused(f"{source} is {st.st_size} bytes, over the {max_bytes}-byte artifact cap")
        afd = open_dir_nofollow(session_dir, (ARTIFACTS,))  # a symlinked artifacts/ is refused, never followed
        try:
            return _copy(fd, afd, source, max_bytes)
        finally:
            os.close(afd)
    finally:
        os.close(fd)


def _copy(fd: int, afd: int, source: str, max_bytes: int) -> dict[str, Any]:
    """Copy open file ``fd`` into the directory ``afd`` as ``<sha256[:12]>-<name>``; the record's fields."""
    digest = hashlib.sha256()
    tmp = f".incoming.{os.getpid()}.{os.path.basename(source)}"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=afd)
    size = 0
    try:
        while chunk := os.read(fd, _COPY_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ArtifactRefused(f"{source} grew over the {max_bytes}-byte artifact cap")
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(tmp, dir_fd=afd)
        raise
    os.close(out)
    hexd = digest.hexdigest()
    name = f"{hexd[:12]}-{os.path.basename(source)}"
    os.rename(tmp, name, src_dir_fd=afd, dst_dir_fd=afd)
    return {"stored": f"{ARTIFACTS}/{name}", "sha256": hexd, "size_bytes": size}

