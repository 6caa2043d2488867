"""Wire protocol: msgspec Structs in one tagged union (tag field ``op``).

Every request carries an ``id`` that its reply echoes, so requests can be
pipelined. New fields always get defaults and unknown fields are ignored, so
older and newer peers keep talking. See docs/protocol.md.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final, Literal

import msgspec

from traced.wire.framing import HEADER
from traced.wire.minipack import EXT_BIGINT

VERSION: Final = 1
"""Protocol version negotiated in ``hello``."""

Outcome = Literal["success", "failure", "aborted"]
Target = str  # "global", "repo" or an absolute directory


class _Msg(msgspec.Struct, tag_field="op", omit_defaults=True, kw_only=True):
    id: int = 0


# --- requests -------------------------------------------------------------


class Hello(_Msg, tag="hello"):
    """First request on a connection: version, who the client is, its secret env values."""

    version: int = VERSION
    client: str = ""
    client_id: str = ""
    pid: int = 0
    cwd: str = ""
    secrets: list[str] = []
    """Values of the client's secret-named environment variables, kept in memory for redaction."""
    lost: int = 0
    """Events this client lost while the daemon was away and its spool could not be written."""


class Open(_Msg, tag="open"):
    """Start a session, or resume one that already exists (``session_id`` given)."""

    skill: str
    session_id: str = ""
    target: Target = "global"
    cwd: str = ""
    owner_pid: int = 0
    """0: the peer owns the session; -1: nobody does (only the idle timeout applies)."""
    idle_timeout: float = 0.0
    input: Any = None
    meta: dict[str, Any] = {}
    ts: float = 0.0
    reopen: bool = True
    """False: an ended session is not reopened (for late events: ``opened`` then says ``ended``)."""


class Event(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One event inside ``emit`` or ``emit_batch``."""

    phase: str
    payload: Any = {}
    ts: float = 0.0
    seq: int = 0
    """Client sequence number; with the hello's client_id it is the idempotency key."""


class Emit(_Msg, tag="emit"):
    """Append one event; replies ``ack {step}`` unless ``ack`` is false."""

    session_id: str
    phase: str
    payload: Any = {}
    ts: float = 0.0
    seq: int = 0
    ack: bool = True
    late: bool = False
    """The event completes something from before the session ended (an async hook's result):
    it is appended as a ``late`` record, and the session stays ended with its outcome."""


class EmitBatch(_Msg, tag="emit_batch"):
    """Append several events to one session in order; replies ``ack`` with the last step."""

    session_id: str
    events: list[Event]
    ack: bool = True
    late: bool = False


class EmitBatchEncoded(_Msg, tag="emit_batch"):
    """``emit_batch`` as the clients send it: each event already encoded once (an ``Event``).

    The same bytes on the wire as ``EmitBatch``; not part of ``Request``.
    """

    session_id: str
    events: list[msgspec.Raw]
    ack: bool = True
    late: bool = False


class Close(_Msg, tag="close"):
    """End a session: append ``end`` and finalize meta.json."""

    session_id: str
    outcome: Outcome = "success"
    summary: str | None = None
    ts: float = 0.0


class Sync(_Msg, tag="sync"):
    """Reply once everything earlier on this connection is written (and fsynced if asked)."""

    fsync: bool = False


class StatusRequest(_Msg, tag="status"):
    """Ask for the daemon's status."""

    held: bool = False
    """Also list every session the daemon holds (``held_sessions`` ids, ``held_dirs`` paths): open, recently
    ended, or another writer's it watches. ``traced prune`` never removes those; an older daemon ignores it."""


class Subscribe(_Msg, tag="subscribe"):
    """Turn this connection into a stream of records as they land (after redaction).

    Empty filter fields match everything. Replies ``subscribed``, then
    ``record`` messages in step order per session, and ``gap`` when this
    subscriber fell behind and records were dropped for it.
    """

    skill: str = ""
    session_id: str = ""
    phase: str = ""


Request = Hello | Open | Emit | EmitBatch | Close | Sync | StatusRequest | Subscribe


# --- replies --------------------------------------------------------------


class Welcome(_Msg, tag="welcome"):
    """Reply to ``hello``."""

    version: int = VERSION
    server: str = ""
    pid: int = 0
    max_frame: int = 0
    """The daemon's frame limit: a client refuses larger events itself (``too_large``)."""
    max_depth: int = 0
    """The daemon's payload depth limit (0: not said); deeper subtrees are kept as markers."""
    max_keys: int = 0
    """The daemon's limit on map keys in one payload (0: not said)."""


class Opened(_Msg, tag="opened"):
    session_id: str
    dir: str
    step: int
    """The last step on disk: 1 for a new session (its start record)."""
    resumed: bool = False
    ended: bool = False
    """The session had ended and was not reopened (``open`` with ``reopen`` false)."""
    root_fallback: str | None = None
    """Why a ``repo`` target fell back to the global root, if it did."""


class Ack(_Msg, tag="ack"):
    step: int


class Closed(_Msg, tag="closed"):
    meta: dict[str, Any]


class Synced(_Msg, tag="synced"):
    pass


class Status(_Msg, tag="status_reply"):
    info: dict[str, Any]


class Subscribed(_Msg, tag="subscribed"):
    buffer: int = 0
    """How many records the daemon holds for this subscriber before it drops."""


class RecordMsg(_Msg, tag="record"):
    """One record as it landed: its trace.jsonl line, without the newline."""

    line: str


class Gap(_Msg, tag="gap"):
    """This subscriber was too slow: ``dropped`` records were skipped here."""

    dropped: int


ErrorCode = Literal[
    "bad_frame",
    "too_large",
    "unknown_session",
    "session_closed",
    "invalid_name",
    "invalid_event",
    "forbidden",
    "overloaded",
    "io_error",
    "internal",
]


class Error(_Msg, tag="error"):
    code: ErrorCode
    message: str


Reply = Welcome | Opened | Ack | Closed | Synced | Status | Subscribed | RecordMsg | Gap | Error

MAX_BIGINT_DIGITS: Final = 4300
"""Python's own limit on int <-> str conversion (sys.int_info.default_max_str_digits)."""


def _ext(code: int, data: memoryview) -> Any:
    """Extension types in payloads: ``EXT_BIGINT`` becomes its integer; anything else a marker."""
    if code == EXT_BIGINT and 0 < len(data) <= MAX_BIGINT_DIGITS:
        text = bytes(data).decode("ascii", "replace")
        if text.lstrip("-").isdigit():
            return int(text)
    return {"$omitted": "msgpack_ext", "type": code, "bytes": len(data)}


def bigint(n: int) -> msgspec.msgpack.Ext:
    """An integer past 64 bits as the wire carries it (``EXT_BIGINT``: its decimal digits)."""
    return msgspec.msgpack.Ext(EXT_BIGINT, str(n).encode("ascii"))


request_decoder: Final[msgspec.msgpack.Decoder[Request]] = msgspec.msgpack.Decoder(Request, ext_hook=_ext)
reply_decoder: Final[msgspec.msgpack.Decoder[Reply]] = msgspec.msgpack.Decoder(Reply, ext_hook=_ext)
encoder: Final = msgspec.msgpack.Encoder()


def decode_request(body: bytes | memoryview) -> Request:
    """Decode one request body; raises ``msgspec.ValidationError``/``DecodeError`` only."""
    try:
        return request_decoder.decode(body)
    except UnicodeDecodeError as e:  # msgspec lets invalid UTF-8 in keys through as this
        raise msgspec.DecodeError(f"invalid UTF-8: {e.reason}") from e
    except RecursionError as e:  # nested past the interpreter's recursion limit (~1,000 levels)
        raise msgspec.DecodeError("nested too deep to decode") from e


# --- checked decoding: the payload rules in msgspec's C decoder -------------------

CHECKED_DEPTH: Final = 10
"""Deepest payload the checked decoder takes (its type tree doubles with each level: 10 levels
build in ~10 ms). A deeper payload is not refused: it takes the walked path (``daemon.intake``)."""

_Scalar = str | int | float | bool | None


def _value_type(depth: int, max_depth: int) -> Any:
    """A payload value at ``depth``: any JSON value, containers only down to ``max_depth``."""
    if depth > max_depth:
        return _Scalar
    inner = _value_type(depth + 1, max_depth)
    return str | int | float | bool | None | list[inner] | dict[str, inner]  # type: ignore[valid-type]


class Checked:
    """The checked decoder of one depth limit and the Struct types its emits decode to."""

    __slots__ = ("decoder", "emit", "emit_batch", "event")

    def __init__(self, decoder: msgspec.msgpack.Decoder[Any], emit: type, emit_batch: type,
                 event: msgspec.msgpack.Decoder[Any]) -> None:
        self.decoder = decoder
        self.emit = emit
        self.emit_batch = emit_batch
        self.event = event
        """Decodes one of ``emit_batch``'s events (they come as ``msgspec.Raw``: each is checked,
        and measured against the limits, on its own)."""


@lru_cache(maxsize=4)
def checked(max_depth: int) -> Checked:
    """A request decoder whose ``emit``/``emit_batch`` payloads are checked as they are decoded.

    Such a payload is a map with string keys, holding only JSON values (no bytes, no
    extension types) nested at most ``min(max_depth, CHECKED_DEPTH)`` deep (the payload
    itself is depth 1, as in ``daemon.intake.check_payload``). Its emits decode to
    ``CheckedEmit``/``CheckedEmitBatch`` (fields as ``Emit``/``EmitBatch``, the batch's events
    undecoded: ``Checked.event`` decodes each); every other request
    as ``decode_request`` gives it. A frame it refuses (``msgspec.ValidationError``) may still
    be a good request: decode it with ``decode_request`` and check it the walked way.
    """
    depth = min(max_depth, CHECKED_DEPTH)
    payload = dict[str, _value_type(2, depth)] if depth >= 1 else dict[str, _Scalar]  # type: ignore[misc]
    empty: Any = msgspec.field(default_factory=dict)
    event: Any = msgspec.defstruct("CheckedEvent", [("phase", str), ("payload", payload, empty), ("ts", float, 0.0),
                                               ("seq", int, 0)], omit_defaults=True, kw_only=True)
    emit: Any = msgspec.defstruct("CheckedEmit", [
        ("session_id", str), ("phase", str), ("payload", payload, empty), ("ts", float, 0.0),
        ("seq", int, 0), ("ack", bool, True), ("late", bool, False)],
        bases=(_Msg,), tag="emit")
    batch: Any = msgspec.defstruct("CheckedEmitBatch", [
        ("session_id", str), ("events", list[msgspec.Raw]), ("ack", bool, True), ("late", bool, False)],
        bases=(_Msg,), tag="emit_batch")
    union: Any = Hello | Open | emit | batch | Close | Sync | StatusRequest | Subscribe
    return Checked(msgspec.msgpack.Decoder(union), emit, batch, msgspec.msgpack.Decoder(event))


def decode_reply(body: bytes | memoryview) -> Reply:
    """Decode one reply body; raises ``msgspec.ValidationError``/``DecodeError`` only."""
    try:
        return reply_decoder.decode(body)
    except UnicodeDecodeError as e:
        raise msgspec.DecodeError(f"invalid UTF-8: {e.reason}") from e


_encode_into: Final = encoder.encode_into


def encode(msg: msgspec.Struct, buf: bytearray | None = None) -> bytearray:
    """Append one framed message (4-byte length + MessagePack body) to ``buf`` (a new buffer
    when None) and return it."""
    if buf is None:
        buf = bytearray()
    start = len(buf)
    buf += b"\0\0\0\0"
    _encode_into(msg, buf, -1)
    buf[start : start + HEADER] = (len(buf) - start - HEADER).to_bytes(HEADER, "big")
    return buf
