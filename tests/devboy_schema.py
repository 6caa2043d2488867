"""devboy's on-disk types, written from its published source, to check traced's files against.

Source: meteora-pro/devboy-tools, crates/devboy-skills/src/trace.rs (``Phase``, ``Outcome``,
``TraceRecord``, ``SessionMeta``; serde derives, ``rename_all = "snake_case"``). Field by field:
required unless ``#[serde(default)]`` / ``Option``; ``u64``/``u32`` as bounded non-negative ints;
``DateTime<Utc>`` as an RFC 3339 timestamp with a zone. Unknown keys are ignored (serde's default),
so traced's additions are fine; a wrong type for one of these fields is a parse error in devboy.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

U64 = Annotated[int, msgspec.Meta(ge=0)]  # u64 (msgspec bounds stop at int64, far past any count)
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Phase = Literal["start", "decision", "tool_call", "tool_result", "verify", "artifact", "note", "end"]
Outcome = Literal["success", "failure", "aborted"]


class SessionMeta(msgspec.Struct, kw_only=True):
    session_id: str
    skill: str
    skill_version: U32 | None = None
    devboy_version: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    input_summary: str | None = None
    tool_calls: U64
    errors: U64
    summary: str | None = None


class TraceRecord(msgspec.Struct, kw_only=True):
    ts: datetime
    skill: str
    session_id: str
    phase: Phase
    payload: Any


class OtherRecord(msgspec.Struct, kw_only=True):
    """A line with a phase devboy does not know: devboy's counter skips it, never fails on it."""

    ts: datetime
    skill: str
    session_id: str
    phase: str
    payload: Any


_meta = msgspec.json.Decoder(SessionMeta)
_record = msgspec.json.Decoder(TraceRecord)
_other = msgspec.json.Decoder(OtherRecord)


def check_session(sdir: Path) -> int:
    """Check one session dir written by traced; returns the lines checked. AssertionError names the defect."""
    meta_path = sdir / "meta.json"
    if meta_path.exists():
        raw = meta_path.read_bytes()
        try:
            meta = _meta.decode(raw)
        except msgspec.ValidationError as e:
            raise AssertionError(f"devboy cannot read {meta_path}: {e}\n{raw[:400]!r}") from None
        assert _aware(meta.started_at) and (meta.ended_at is None or _aware(meta.ended_at)), meta_path
        assert meta.started_at.utcoffset().total_seconds() == 0, f"{meta_path}: started_at is not UTC"  # type: ignore[union-attr]
    lines = 0
    trace = sdir / "trace.jsonl"
    if trace.exists():
        for n, line in enumerate(trace.read_bytes().splitlines(), 1):
            phase = json.loads(line).get("phase")
            decoder = _record if phase in Phase.__args__ else _other  # type: ignore[attr-defined]
            try:
                decoder.decode(line)
            except msgspec.ValidationError as e:
                raise AssertionError(f"devboy cannot read {trace}:{n}: {e}\n{line[:400]!r}") from None
            lines += 1
    return lines


def _aware(value: datetime) -> bool:
    return value.tzinfo is not None


def check_root(root: Path) -> int:
    """Check every session under ``root`` that traced wrote (devboy_version "traced …"); the lines checked."""
    total = 0
    if not root.is_dir():
        return 0
    for meta_path in root.glob("*/*/*/meta.json"):
        if not meta_path.is_file():  # a FIFO or a directory planted by a test: not traced's
            continue
        try:
            writer = json.loads(meta_path.read_bytes()).get("devboy_version", "")
        except ValueError:
            continue
        if isinstance(writer, str) and writer.startswith("traced "):
            total += check_session(meta_path.parent)
    return total
