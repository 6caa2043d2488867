"""A minimal MessagePack codec for the shell path (``traced event``, hooks).

Why not msgspec here: importing msgspec pulls typing_extensions and inspect,
several times the whole start-up budget of a command that runs once per event
from shell skills. This covers exactly what those frames hold (maps with
string keys, arrays, str, int, float, bool, nil, bin); everything else in
traced uses msgspec, and a Hypothesis test keeps the two byte-compatible.

Two things JSON can hold and MessagePack cannot, carried without loss:

- a string with a lone UTF-16 surrogate (half an emoji, cut by truncation)
  is sent with U+FFFD in its place, never as invalid UTF-8;
- an integer past 64 bits travels as extension type ``EXT_BIGINT`` holding
  its decimal digits; the daemon turns it back into the same integer, and
  the JSON line holds the number itself.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Any

_pack_d = struct.Struct(">Bd").pack

EXT_BIGINT = 1
"""MessagePack extension type of an integer past 64 bits: its decimal digits in ASCII."""


def text_bytes(text: str) -> bytes:
    """``text`` as UTF-8, with U+FFFD for each lone surrogate (which UTF-8 cannot hold)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def packb(obj: Any) -> bytes:
    """Encode ``obj`` as MessagePack."""
    out = bytearray()
    _pack(obj, out)
    return bytes(out)


def _pack(obj: Any, out: bytearray) -> None:
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        out += _pack_d(0xCB, obj)
    elif isinstance(obj, str):
        data = text_bytes(obj)
        _header(out, len(data), _STR)
        out += data
    elif isinstance(obj, dict):
        _header(out, len(obj), _MAP)
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError("map keys must be strings")
            _pack(k, out)
            _pack(v, out)
    elif isinstance(obj, list | tuple):
        _header(out, len(obj), _ARRAY)
        for v in obj:
            _pack(v, out)
    elif isinstance(obj, bytes | bytearray):
        _header(out, len(obj), _BIN)
        out += obj
    else:
        raise TypeError(f"cannot encode {type(obj).__name__}")


# (fixed-size type byte, largest fixed length, 8-bit, 16-bit, 32-bit length type bytes); 0: none
_STR = (0xA0, 31, 0xD9, 0xDA, 0xDB)
_MAP = (0x80, 15, 0, 0xDE, 0xDF)
_ARRAY = (0x90, 15, 0, 0xDC, 0xDD)
_BIN = (0, -1, 0xC4, 0xC5, 0xC6)


def _header(out: bytearray, n: int, kind: tuple[int, int, int, int, int]) -> None:
    """The type byte(s) and length of a str, map, array or bin of ``n`` items/bytes."""
    fix, fix_max, b8, b16, b32 = kind
    if n <= fix_max:
        out.append(fix | n)
    elif b8 and n < 0x100:
        out += bytes((b8, n))
    elif n < 0x10000:
        out.append(b16)
        out += n.to_bytes(2, "big")
    else:
        out.append(b32)
        out += n.to_bytes(4, "big")


def _pack_int(n: int, out: bytearray) -> None:
    if 0 <= n < 0x80:
        out.append(n)
    elif -32 <= n < 0:
        out.append(n & 0xFF)
    elif 0 <= n < 2**64:
        out.append(0xCF)
        out += n.to_bytes(8, "big")
    elif -(2**63) <= n < 0:
        out.append(0xD3)
        out += n.to_bytes(8, "big", signed=True)
    else:  # past 64 bits: an extension holding the digits (ext 8: 0xC7, length, type)
        digits = str(n).encode("ascii")
        if len(digits) < 0x100:
            out += bytes((0xC7, len(digits), EXT_BIGINT))
        else:
            out.append(0xC8)
            out += len(digits).to_bytes(2, "big")
            out.append(EXT_BIGINT)
        out += digits


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("truncated MessagePack")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def value(self) -> Any:
        b = self.take(1)[0]
        if b < 0x80:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F)
        if 0x90 <= b <= 0x9F:
            return [self.value() for _ in range(b & 0x0F)]
        if 0xA0 <= b <= 0xBF:
            return self.take(b & 0x1F).decode("utf-8", "surrogatepass")
        simple = _SIMPLE.get(b, _NONE)
        if simple is not _NONE:
            return simple
        if b in _UINTS:
            return self.uint(_UINTS[b])
        if b in _INTS:
            return int.from_bytes(self.take(_INTS[b]), "big", signed=True)
        if b == 0xCA:
            return struct.unpack(">f", self.take(4))[0]
        if b == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if b in _STRS:
            return self.take(self.uint(_STRS[b])).decode("utf-8", "surrogatepass")
        if b in _BINS:
            return self.take(self.uint(_BINS[b]))
        if b in _ARRAYS:
            return [self.value() for _ in range(self.uint(_ARRAYS[b]))]
        if b in _MAPS:
            return self.map(self.uint(_MAPS[b]))
        if b in _EXTS:
            size = self.uint(_EXTS[b])
            kind = self.take(1)[0]
            data = self.take(size)
            if kind == EXT_BIGINT:
                return int(data.decode("ascii"))
            raise ValueError(f"unsupported MessagePack extension type {kind}")
        raise ValueError(f"unsupported MessagePack byte 0x{b:02x}")

    def map(self, n: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(n):
            key = self.value()
            if isinstance(key, list | dict):
                raise ValueError("MessagePack map key is not a scalar")
            out[key] = self.value()
        return out


_NONE = object()
_SIMPLE: dict[int, Any] = {0xC0: None, 0xC2: False, 0xC3: True}
_UINTS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_INTS = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_STRS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BINS = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_ARRAYS = {0xDC: 2, 0xDD: 4}
_MAPS = {0xDE: 2, 0xDF: 4}
_EXTS = {0xC7: 1, 0xC8: 2, 0xC9: 4}


def unpackb(data: bytes) -> Any:
    """Decode one MessagePack value that fills ``data`` exactly."""
    reader = _Reader(data)
    value = reader.value()
    if reader.pos != len(data):
        raise ValueError("trailing bytes after MessagePack value")
    return value

