"""OTLP trace protobuf, encoded by hand: ``ExportTraceServiceRequest`` bytes from plain spans.

Building ``opentelemetry-proto`` message objects costs more than the rest of the
exporter together (one Python object per attribute, value and span), so spans are
plain dataclasses here and are written straight to the protobuf wire format of
``opentelemetry/proto/trace/v1/trace.proto`` and ``common/v1/common.proto`` (field
numbers below). The tests decode every body with the official generated classes.

Limits (:class:`Limits`) cap string attributes, event payloads and the number of
events; a capped string ends with ``…``. Every function here is pure.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

_json: Final = msgspec.json.Encoder()
_double: Final = struct.Struct("<d").pack
_fixed64: Final = struct.Struct("<Q").pack

SPAN_KIND_INTERNAL: Final = 1
SPAN_KIND_CLIENT: Final = 3
STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2


@dataclass(slots=True, frozen=True)
class Limits:
    """How large one span may get: characters per string attribute, per event payload, events per span."""

    attr: int = 16 * 1024
    event_payload: int = 2 * 1024
    events: int = 1000


FULL: Final = Limits()
SHRUNK: Final = Limits(attr=1024, event_payload=256, events=100)
"""After a 413 for one record: what is large gets small, the span still goes."""
MINIMAL: Final = Limits(attr=256, event_payload=64, events=0)
"""After a second 413: no events at all, short strings."""


@dataclass(slots=True)
class Event:
    """A span event."""

    time: int
    name: str
    attrs: dict[str, Any]


@dataclass(slots=True)
class Span:
    """One span, ids as raw bytes, times in Unix nanoseconds, ``attrs`` values None are left out."""

    trace_id: bytes
    span_id: bytes
    parent: bytes | None
    name: str
    kind: int
    start: int
    end: int
    attrs: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    dropped_events: int = 0
    status_code: int = STATUS_UNSET
    status_message: str = ""


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL: Final = [_varint(n) for n in range(1 << 14)]


def _vl(n: int) -> bytes:
    """A length (or any non-negative int) as a varint, from a table when small."""
    return _SMALL[n] if n < 16384 else _varint(n)


def _ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the field number)."""
    return _SMALL[tag << 3 | 2] + _vl(len(payload)) + payload


def cap(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one ``…`` when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def to_json(value: Any, limit: int) -> str:
    """A value as JSON text (a str stays as it is), capped."""
    if isinstance(value, str):
        return cap(value, limit)
    return cap(_json.encode(value).decode(), limit)


_key_cache: dict[str, bytes] = {}
_kv_cache: dict[tuple[int, str, str], bytes] = {}
"""Whole KeyValue fields of short string attributes (operation names, kinds, session ids), by (field, key, value)."""


def _key(key: str) -> bytes:
    b = _key_cache.get(key)
    if b is None:
        b = _ld(1, key.encode())
        if len(_key_cache) < 4096:
            _key_cache[key] = b
    return b


def _any(value: Any, limit: int) -> bytes:
    """An AnyValue message's bytes: string 1, bool 2, int 3, double 4, array 5."""
    if isinstance(value, str):
        b: bytes = (value if len(value) <= limit else cap(value, limit)).encode("utf-8", "replace")
        return b"\x0a" + _vl(len(b)) + b
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:  # int_value is an int64: a larger number goes as text
            return _any(str(value), limit)
        return b"\x18" + (_SMALL[value] if 0 <= value < 16384 else _varint(value))
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return _ld(5, b"".join(_ld(1, _any(v, limit)) for v in value))
    return _ld(1, to_json(value, limit).encode("utf-8", "replace"))


def attributes(tag: int, attrs: Mapping[str, Any], limit: int) -> bytes:
    """Repeated ``KeyValue`` field ``tag`` for the non-None entries of ``attrs``.

    The hot loop of the exporter: pieces go to one list joined once, and whole fields
    of short strings come from a cache.
    """
    t = _SMALL[tag << 3 | 2]
    small = _SMALL
    cache = _kv_cache
    out: list[bytes] = []
    add = out.append
    for k, v in attrs.items():
        if v is None:
            continue
        kind = type(v)
        if kind is str:
            if len(v) <= 64:
                field_bytes = cache.get((tag, k, v))
                if field_bytes is None:
                    field_bytes = _ld(tag, _key(k) + _ld(2, _any(v, limit)))
                    if len(cache) >= 65536:
                        cache.clear()
                    cache[(tag, k, v)] = field_bytes
                add(field_bytes)
                continue
            sb = (v if len(v) <= limit else cap(v, limit)).encode("utf-8", "replace")
            n = len(sb)
            sl = small[n] if n < 16384 else _varint(n)
            av_len = 1 + len(sl) + n
            kb = _key_cache.get(k) or _key(k)
            al = small[av_len] if av_len < 16384 else _varint(av_len)
            kv_len = len(kb) + 1 + len(al) + av_len
            out += (t, small[kv_len] if kv_len < 16384 else _varint(kv_len), kb, b"\x12", al, b"\x0a", sl, sb)
            continue
        av = b"\x18" + small[v] if kind is int and 0 <= v < 16384 else _any(v, limit)
        kb = _key_cache.get(k) or _key(k)
        n = len(av)
        al = small[n] if n < 16384 else _varint(n)
        kv_len = len(kb) + 1 + len(al) + n
        out += (t, small[kv_len] if kv_len < 16384 else _varint(kv_len), kb, b"\x12", al, av)
    return b"".join(out)


def span(s: Span, limits: Limits = FULL) -> bytes:
    """A ``Span`` message's bytes (trace.proto field numbers)."""
    parts = [_ld(1, s.trace_id), _ld(2, s.span_id)]
    if s.parent:
        parts.append(_ld(4, s.parent))
    parts.append(_ld(5, s.name.encode("utf-8", "replace")))
    parts.append(b"\x30" + _varint(s.kind))
    parts.append(b"\x39" + _fixed64(max(0, s.start)))
    parts.append(b"\x41" + _fixed64(max(0, s.start, s.end)))
    parts.append(attributes(9, s.attrs, limits.attr))
    events = s.events[: limits.events]
    for e in events:
        ev = b"\x09" + _fixed64(max(0, e.time)) + _ld(2, e.name.encode()) + attributes(3, e.attrs, limits.event_payload)
        parts.append(_ld(11, ev))
    dropped = s.dropped_events + len(s.events) - len(events)
    if dropped:
        parts.append(b"\x60" + _varint(dropped))
    if s.status_code or s.status_message:
        status = b""
        if s.status_message:
            status += _ld(2, cap(s.status_message, 1024).encode("utf-8", "replace"))
        if s.status_code:
            status += b"\x18" + _varint(s.status_code)
        parts.append(_ld(15, status))
    return b"".join(parts)


def request(spans: Iterable[bytes], resource: Mapping[str, Any], scope_name: str, scope_version: str) -> bytes:
    """``ExportTraceServiceRequest`` bytes: one ResourceSpans, one ScopeSpans holding the encoded ``spans``."""
    scope = _ld(1, scope_name.encode()) + _ld(2, scope_version.encode())
    scope_spans = _ld(1, scope) + b"".join(_ld(2, s) for s in spans)
    resource_spans = _ld(1, attributes(1, resource, FULL.attr)) + _ld(2, scope_spans)
    return _ld(1, resource_spans)
