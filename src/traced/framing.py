"""Sans-IO framing: a 4-byte big-endian length, then a MessagePack body.

``Framer.feed`` takes bytes as they arrive, in chunks of any size, and returns
the complete frame bodies. Reading big chunks and framing here is several times
faster than reading each frame exactly (measured in shared/peerbench).
"""

from __future__ import annotations

from typing import Final

import msgspec

from traced import protocol

HEADER: Final = 4
MAX_FRAME: Final = 8 * 1024 * 1024
"""Default frame limit (8 MiB); configurable with ``max_frame``."""


class FrameTooLarge(Exception):
    """A frame header announced more than the limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


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

        Raises ``FrameTooLarge`` when a header announces more than ``limit``.
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


_encode_into = protocol.encoder.encode_into


def encode(msg: msgspec.Struct, buf: bytearray | None = None) -> bytearray:
    """Append one framed message to ``buf`` (a new buffer when None) and return it."""
    if buf is None:
        buf = bytearray()
    start = len(buf)
    buf += b"\0\0\0\0"
    _encode_into(msg, buf, -1)
    buf[start : start + HEADER] = (len(buf) - start - HEADER).to_bytes(HEADER, "big")
    return buf
