"""Sans-IO checks on what a client sends: phase names and payload shape and limits."""

from __future__ import annotations

from typing import Any

from traced.records import OUTCOMES, PHASE_RE

RESERVED_PHASES = frozenset({"start", "end"})
"""Written by the daemon itself, on open and close."""


class InvalidEvent(ValueError):
    """The event breaks a rule; the message says which."""


def check_phase(phase: str) -> None:
    """Raise InvalidEvent unless ``phase`` is snake_case and not reserved."""
    if not isinstance(phase, str) or not PHASE_RE.match(phase):
        raise InvalidEvent(f"invalid phase {phase!r}: must match [a-z][a-z0-9_]{{0,63}}")
    if phase in RESERVED_PHASES:
        raise InvalidEvent(f"phase {phase!r} is written by the daemon: use open/close")


def check_outcome(outcome: str) -> None:
    """Raise InvalidEvent unless ``outcome`` is success, failure or aborted."""
    if outcome not in OUTCOMES:
        raise InvalidEvent(f"invalid outcome {outcome!r}: one of {', '.join(OUTCOMES)}")


def check_payload(payload: Any, max_depth: int, max_keys: int, max_string: int) -> int:
    """Raise InvalidEvent unless ``payload`` is a map within the depth/key/string limits.

    Returns the length of its longest string, so the caller knows whether it
    spills without walking the payload again. Hot path: a recursive walk that
    dispatches on exact types (payloads come from msgpack, so no subclasses).
    """
    if type(payload) is not dict:
        if not isinstance(payload, dict):
            raise InvalidEvent(f"payload must be a map, not {type(payload).__name__}")
        payload = dict(payload)
    budget = [max_keys, max_keys]  # [keys left, the limit]
    longest = _map(payload, 1, max_depth, budget)
    if longest > max_string:
        raise InvalidEvent(f"payload string of {longest} chars exceeds {max_string}")
    return longest


def _map(d: dict[Any, Any], depth: int, max_depth: int, budget: list[int]) -> int:
    if depth > max_depth:
        raise InvalidEvent(f"payload nested deeper than {max_depth}")
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
        raise InvalidEvent(f"payload nested deeper than {max_depth}")
    longest = 0
    for v in items:
        t = type(v)
        if t is str:
            longest = max(longest, len(v))
        elif t is dict or t is list:
            n = _map(v, depth + 1, max_depth, budget) if t is dict else _seq(v, depth + 1, max_depth, budget)
            longest = max(longest, n)
    return longest
