"""On-disk Structs (trace.jsonl lines and meta.json) and their JSON codecs.

Field order in ``Record`` is the contract of DESIGN §2: ts, skill, session_id,
step, turn (only when set), phase, payload. ``client_seq`` (the idempotency
key of the emit that produced the line) comes last, only when sent.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

__all__ = ["Meta", "Record", "Usage", "count", "format_ts", "number", "parse_ts", "summarize"]


class Record(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One line of trace.jsonl."""

    ts: str
    skill: str
    session_id: str
    step: int | None = None
    turn: int | None = None
    phase: str
    payload: Any
    """Always written, ``{}`` included: devboy's ``TraceRecord`` requires it."""
    client_seq: str | None = None
    late: bool | None = None
    """True on a record appended after the session's ``end`` (an async hook's late result)."""


class Usage(msgspec.Struct, kw_only=True):
    """Token and cost totals of a session's ``llm_call`` records."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    """Sum of the costs that were reported; null when no call reported one."""
    llm_calls: int = 0
    unknown_cost_calls: int = 0


class Meta(msgspec.Struct, omit_defaults=True, kw_only=True):
    """meta.json: devboy's fields first, then traced's additions."""

    session_id: str
    skill: str
    devboy_version: str
    started_at: str
    ended_at: str | None = None
    outcome: str | None = None
    summary: str | None = None
    input_summary: str | None = None
    skill_version: int | None = None
    """devboy's ``Option<u32>``: an integer or absent (a non-integer version goes to
    ``skill_version_text``)."""
    tool_calls: int = 0
    """Always written, 0 included (devboy's ``u64``, a required field): see ``meta_json``."""
    errors: int = 0
    # traced's additions
    steps: int = 0
    turns: int = 0
    phases: dict[str, int] = {}
    usage: Usage = msgspec.field(default_factory=Usage)
    reason: str | None = None
    owner_pid: int | None = None
    host: str = ""
    cwd: str | None = None
    target: str | None = None
    labels: dict[str, str] = {}
    transcript_path: str | None = None
    """The agent's own transcript (e.g. Claude Code's), when a hook gave it."""
    skill_version_text: str | None = None
    """A skill version that is not an unsigned 32-bit integer (``"1.2.0"``), kept as given."""
    redactions: int = 0
    malformed_lines: int = 0


json_encoder: Final = msgspec.json.Encoder()

DEVBOY_REQUIRED: Final = ("tool_calls", "errors")
"""devboy's required ``u64`` fields: written even when 0 (``omit_defaults`` would drop them)."""


def decode_meta(raw: bytes) -> Meta:
    """meta.json read tolerantly, keeping every field another writer set.

    A ``skill_version`` that is not an unsigned integer moves to ``skill_version_text``;
    numbers written as strings are converted. Raises ``msgspec.DecodeError`` (not JSON)
    and ``msgspec.ValidationError`` (not a meta: a required field missing or of no usable type).
    """
    obj = msgspec.json.decode(raw)
    if not isinstance(obj, dict):
        raise msgspec.ValidationError("meta.json is not an object")
    version = obj.get("skill_version")
    if version is not None and not (type(version) is int and 0 <= version < 2**32):
        text = str(version).strip()
        obj["skill_version"] = int(text) if text.isdigit() and int(text) < 2**32 else None
        if obj["skill_version"] is None:
            obj.setdefault("skill_version_text", text)
    return msgspec.convert(obj, Meta, strict=False)


def meta_dict(meta: Meta) -> dict[str, Any]:
    """meta.json's object: devboy's fields first, the required counters always present."""
    raw: dict[str, Any] = msgspec.to_builtins(meta)
    out: dict[str, Any] = {}
    for name in meta.__struct_fields__:
        if name in raw:
            out[name] = raw[name]
        elif name in DEVBOY_REQUIRED:
            out[name] = getattr(meta, name)
    return out


def meta_json(meta: Meta) -> bytes:
    """meta.json's bytes (see ``meta_dict``): what devboy's own ``SessionMeta`` reads."""
    return json_encoder.encode(meta_dict(meta))
record_decoder: Final = msgspec.json.Decoder(Record)

_sec_cache: list[Any] = [-1, ""]


def format_ts(epoch: float | None = None) -> str:
    """UTC ISO-8601 with microseconds and a ``Z``: ``2026-11-21T22:48:17.123456Z``."""
    if epoch is None or epoch <= 0:
        epoch = time.time()
    micros = int(epoch * 1_000_000)
    sec = micros // 1_000_000
    if _sec_cache[0] != sec:  # one strftime per second, not per record
        _sec_cache[0] = sec
        _sec_cache[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    prefix: str = _sec_cache[1]
    return prefix + str(micros - sec * 1_000_000 + 1_000_000)[1:] + "Z"  # (faster than :06d)


def parse_ts(text: str) -> float:
    """Parse a trace timestamp (``Z`` or an offset) into epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def summarize(value: Any, limit: int = 200) -> str | None:
    """A value on one line, at most ``limit`` characters (cut with ``…``); None for None.

    Strings as they are, anything else as compact JSON (``repr`` when it has no
    JSON form); whitespace runs become one space. meta.json's ``input_summary``
    and the readers' one-line cells use it.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json_encoder.encode(value).decode()
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"

def number(value: object) -> float | None:
    """The tolerant number rule: a finite JSON number (not a bool) as a float, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            num = float(value)
        except OverflowError:  # an integer past float range
            return None
        return num if math.isfinite(num) else None
    return None


MAX_COUNT = 1 << 53
"""The largest counter a record may carry (tokens of one call): beyond it a figure is a writer's
error, counted as 0, so that sums stay exact in JSON and within meta.json's u64 (devboy)."""


def count(value: object) -> int:
    """A counter (tokens, calls): a finite number in ``[0, MAX_COUNT]`` as an int, anything else 0."""
    if type(value) is int:
        return value if 0 < value <= MAX_COUNT else 0
    num = number(value)
    return 0 if num is None or not 0 < num <= MAX_COUNT else int(num)
