"""Writing a whole file atomically: temp file, fsync, rename, directory fsync.

The one place for it: meta.json, open markers, blobs and spool segments all
go through ``write_atomic``. Stdlib only, so the client's spool path can use it.
"""

from __future__ import annotations

import itertools
import os

from traced.format.layout import FILE_MODE

_tmp_counter = itertools.count()


def write_atomic(dir_path: str, name: str, data: bytes, sync: bool = True, *, dir_fd: int | None = None) -> None:
    """Write ``dir_path/name`` as temp file + fsync + rename + directory fsync.

    With ``sync=False`` the rename is still atomic but nothing is fsynced. The
    directory is opened without following a symlink (ELOOP if ``dir_path`` is
    one), or given as ``dir_fd`` (then ``dir_path`` is only for messages).
    Raises OSError.
    """
    dfd = dir_fd if dir_fd is not None else os.open(
        dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    tmp = f".{name}.{os.getpid()}.{next(_tmp_counter)}.tmp"  # hidden: readers skip it
    try:
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            FILE_MODE,
            dir_fd=dfd,
        )
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        if sync:
            os.fsync(dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        if dir_fd is None:
            os.close(dfd)
