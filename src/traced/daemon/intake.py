"""Intake: the one place client data is made safe, before a session sees it.

Validate -> redact -> spill/attach, for every source alike: socket
connections, spool replays (and, later, the OTLP receiver and the mirror).

- ``check_phase``/``check_payload`` (sans-IO): phase names and the payload's
  shape and limits, in one walk that also finds the longest string; a payload
  nested too deep is kept with its deep subtrees marked, never refused;
- ``Intake.event``: a validated, redacted ``Pending`` and whether it needs
  file work;
- ``Intake.offload``: that file work (artifact copies, blob spills) in a
  worker thread, outside the session's critical section.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from traced.daemon import spill
from traced.daemon.config import Config
from traced.daemon.session import Pending
from traced.errors import ArtifactRefused, InvalidEvent, RequestError
from traced.format import vocab
from traced.redaction.redactor import Redactor
from traced.wire.fit import cut_depth


def check_phase(phase: str) -> None:
    """Raise InvalidEvent unless ``phase`` is snake_case and not reserved (``start``/``end``)."""
    if not isinstance(phase, str) or not vocab.PHASE_RE.match(phase):
        raise InvalidEvent(f"invalid phase {phase!r}: must match [a-z][a-z0-9_]{{0,63}}")
    if phase in vocab.RESERVED_PHASES:
        raise InvalidEvent(f"phase {phase!r} is written by the daemon: use open/close")


def check_payload(payload: Any, max_depth: int, max_keys: int, max_string: int) -> tuple[int, bool]:
    """(length of the longest string in characters, whether it nests deeper than ``max_depth``).

    Raises InvalidEvent unless ``payload`` is a map within the key and string
    limits. Depth is not refused: the caller marks the too-deep subtrees
    (``wire.fit.cut_depth``) and keeps the record. One walk also finds the
    longest string, so the caller knows whether it spills without walking the
    payload again. Hot path: a recursive walk that dispatches on exact types
    (payloads come from msgpack, so no subclasses), never below ``max_depth``.
    """
    if type(payload) is not dict:
        if not isinstance(payload, dict):
            raise InvalidEvent(f"payload must be a map, not {type(payload).__name__}")
        payload = dict(payload)
    budget = [max_keys, max_keys, 0]  # [keys left, the limit, 1 when too deep]
    longest = _map(payload, 1, max_depth, budget)
    if longest > max_string:
        raise InvalidEvent(f"payload string of {longest} chars exceeds {max_string}")
    return longest, bool(budget[2])


def _map(d: dict[Any, Any], depth: int, max_depth: int, budget: list[int]) -> int:
    if depth > max_depth:
        budget[2] = 1
        return 0
    budget[0] -= len(d)
    if budget[0] < 0:
        raise InvalidEvent(f"payload has more than {budget[1]} keys")
    longest = 0
    for k, v in d.items():
        if type(k) is not str:
            raise InvalidEvent("payload keys must be strings")
        t = type(v)
        if t is str:
            longest = max(longest, len(v))
        elif t is dict or t is list:
            n = _map(v, depth + 1, max_depth, budget) if t is dict else _seq(v, depth + 1, max_depth, budget)
            longest = max(longest, n)
    return longest


def _seq(items: list[Any], depth: int, max_depth: int, budget: list[int]) -> int:
    if depth > max_depth:
        budget[2] = 1
        return 0
    longest = 0
    for v in items:
        t = type(v)
        if t is str:
            longest = max(longest, len(v))
        elif t is dict or t is list:
            n = _map(v, depth + 1, max_depth, budget) if t is dict else _seq(v, depth + 1, max_depth, budget)
            longest = max(longest, n)
    return longest


PHASES_KEPT = 4096
"""Phase names ``Intake.phase_ok`` remembers (then it forgets them all at once)."""
MAX_TS = 253402300799.0
"""9999-12-31T23:59:59Z, the last second a trace timestamp can spell."""


def event_time(ts: object) -> float:
    """A client's event time (epoch seconds) if it is usable, else 0.0 (the time of receipt).

    NaN, infinities, negatives and anything past year 9999 are not times: the
    record is kept and stamped when it was received (DESIGN §2's rule for no ts).
    """
    if type(ts) is not float and type(ts) is not int:
        return 0.0
    return float(ts) if 0.0 < ts <= MAX_TS else 0.0


class Intake:
    """Validation, redaction and file work under the daemon's config (reloaded in place)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._phases: dict[str, bool] = {}

    def phase_ok(self, phase: str) -> bool:
        """Whether a client may write ``phase`` (``check_phase`` passes); remembered, as phases recur."""
        ok = self._phases.get(phase)
        if ok is None:
            try:
                check_phase(phase)
                ok = True
            except InvalidEvent:
                ok = False
            if len(self._phases) >= PHASES_KEPT:
                self._phases.clear()
            self._phases[phase] = ok
        return ok

    def event(self, redactor: Redactor, phase: str, payload: Any, *, ts: float, client_id: str,
              seq: int) -> tuple[Pending, bool]:
        """A validated, redacted event, and whether it needs file work (spill, attach).

        Raises RequestError ``invalid_event`` for a phase or payload that breaks a rule.
        """
        cfg = self.config
        try:
            check_phase(phase)
            longest, too_deep = check_payload(payload, cfg.max_payload_depth, cfg.max_payload_keys, cfg.max_string)
            if too_deep:  # kept, with {"$omitted": "too_deep", "depth": N} where it went too deep
                payload = cut_depth(payload, cfg.max_payload_depth)
        except InvalidEvent as e:
            raise RequestError("invalid_event", str(e)) from e
        count = 0
        if cfg.redaction:
            payload, count = redactor.redact(payload)
        heavy = longest > cfg.spill_threshold or (phase == vocab.ARTIFACT and bool(payload.get("attach")))
        return Pending(phase, payload, event_time(ts), client_id, seq, count), heavy

    def value(self, redactor: Redactor, value: Any) -> Any:
        """Any other client value bound for disk (an ``open``'s input and labels), checked as a
        payload is (key and string limits: RequestError ``invalid_event``; subtrees past
        ``max_payload_depth`` become ``too_deep`` markers), then redacted."""
        if value is None:
            return value
        cfg = self.config
        try:
            _longest, too_deep = check_payload({"value": value}, cfg.max_payload_depth + 1, cfg.max_payload_keys,
                                               cfg.max_string)
        except InvalidEvent as e:
            raise RequestError("invalid_event", str(e)) from e
        if too_deep:
            value = cut_depth({"value": value}, cfg.max_payload_depth + 1)["value"]
        if not cfg.redaction:
            return value
        return redactor.redact(value)[0]

    def text(self, redactor: Redactor, text: str | None) -> str | None:
        """A client string bound for disk (a close's summary), redacted."""
        if text is None or not self.config.redaction:
            return text
        return redactor.redact_text(text)[0]

    async def offload(self, pend: Pending, session_dir: str, roots: list[str]) -> None:
        """Copy an attached artifact and spill large strings, in a worker thread.

        ``roots``: where an attached file may live (the peer's home, the session's
        root). Raises RequestError ``forbidden`` (refused artifact) or ``io_error``.
        """
        payload: dict[str, Any] = dict(pend.payload)
        if pend.phase == vocab.ARTIFACT and payload.pop("attach", None):
            source = str(payload.get("path", ""))
            try:
                stored = await anyio.to_thread.run_sync(
                    spill.attach, source, session_dir, roots, self.config.artifact_max_bytes)
            except ArtifactRefused as e:
                raise RequestError("forbidden", str(e)) from e
            except OSError as e:
                raise RequestError("io_error", f"cannot copy {source}: {e.strerror}") from e
            payload.update(stored)
        threshold = self.config.spill_threshold
        if spill.has_large_string(payload, threshold):
            try:
                payload, _ = await anyio.to_thread.run_sync(spill.spill, payload, session_dir, threshold)
            except OSError as e:
                raise RequestError("io_error", f"cannot write a blob: {e.strerror}") from e
        pend.payload = payload


def home() -> str:
    """The daemon user's home: artifacts may be attached from below it."""
    return os.path.expanduser("~")
