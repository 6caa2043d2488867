"""Sans-IO framing, codec-free: a 4-byte big-endian length, then the body (DESIGN §4).

``Framer.feed`` takes bytes as they arrive, in chunks of any size, and returns
the complete frame bodies. Reading big chunks and framing here is several times
faster than reading each frame exactly (measured in shared/peerbench). No
codec is imported here: the daemon and the Python clients pair it with
msgspec (``wire.protocol``), the shell path with ``wire.minipack``.
"""

from __future__ import annotations

from traced.errors import FrameTooLarge

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Final

HEADER: Final = 4
"""Bytes of the length prefix."""
MAX_FRAME: Final = 8 * 1024 * 1024
"""Default frame limit (8 MiB); configurable with ``max_frame``."""

__all__ = ["HEADER", "MAX_FRAME", "FrameTooLarge", "Framer", "frame"]


def frame(body: bytes | bytearray) -> bytes:
    """One frame: ``body`` behind its 4-byte big-endian length."""
    return len(body).to_bytes(HEADER, "big") + bytes(body)


class Framer:
    """Splits a byte stream into frame bodies."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.limit = limit

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame (a partial frame)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return every frame body now complete, in order.

        Raises ``FrameTooLarge`` when a header announces more than ``limit`` bytes.
        """
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER:
            size = int.from_bytes(buf[pos : pos + HEADER], "big")
            if size > self.limit:
                del buf[:pos]
                raise FrameTooLarge(size, self.limit)
            stop = pos + HEADER + size
            if stop > end:
                break
            frames.append(bytes(buf[pos + HEADER : stop]))
            pos = stop
        if pos:
            del buf[:pos]
        return frames
