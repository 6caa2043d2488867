"""Tool call <-> result pairing, one rule for ``show``/``replay``, the web views and the OTLP spans.

A ``tool_result`` answers the ``tool_call`` with the same ``call_id``, in
either order: async agent hooks can deliver the result first, and it then
waits for its call. A record without a ``call_id`` pairs with the oldest
open record of the same tool that has none either (devboy's own CLI writes
no ids).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Pairer(Generic[T]):
    """Sans-IO pairing state over items of any type (positions, spans' open calls…)."""

    __slots__ = ("_anon_calls", "_calls", "_early")

    def __init__(self) -> None:
        self._calls: dict[str, T] = {}
        """call_id -> a call still waiting for its result."""
        self._early: dict[str, T] = {}
        """call_id -> a result that arrived before its call."""
        self._anon_calls: dict[str, deque[T]] = {}
        """tool -> calls without a call_id, oldest first."""

    def call(self, tool: str, call_id: str, item: T) -> T | None:
        """Take a ``tool_call``: the result it completes if that came first, else None (it waits)."""
        if call_id:
            early = self._early.pop(call_id, None)
            if early is None:
                self._calls[call_id] = item
            return early
        self._anon_calls.setdefault(tool, deque()).append(item)
        return None

    def result(self, tool: str, call_id: str, item: T) -> T | None:
        """Take a ``tool_result``: the call it answers, or None (with a call_id, it waits for its call)."""
        if call_id:
            call = self._calls.pop(call_id, None)
            if call is None:
                self._early[call_id] = item
            return call
        waiting = self._anon_calls.get(tool)
        return waiting.popleft() if waiting else None

    def open_calls(self) -> list[T]:
        """Calls still without a result."""
        return [*self._calls.values(), *(c for q in self._anon_calls.values() for c in q)]

    def early_results(self) -> list[T]:
        """Results still waiting for their call (by ``call_id``)."""
        return list(self._early.values())

    def clear(self) -> None:
        """Forget everything open (the session ended)."""
        self._calls.clear()
        self._early.clear()
        self._anon_calls.clear()

    def copy(self) -> Pairer[T]:
        """An independent copy (items are shared, containers are not)."""
        other: Pairer[T] = Pairer()
        other._calls = dict(self._calls)
        other._early = dict(self._early)
        other._anon_calls = {k: deque(v) for k, v in self._anon_calls.items()}
        return other


def tool_key(payload: Any) -> tuple[str, str]:
    """(tool, call_id) of a tool_call/tool_result payload, '' for what is missing or not a string."""
    if not isinstance(payload, dict):
        return "", ""
    tool, call_id = payload.get("tool"), payload.get("call_id")
    return (tool if isinstance(tool, str) else "", call_id if isinstance(call_id, str) else "")


def pair_positions(records: Iterable[tuple[int, str, Any]]) -> dict[int, int]:
    """Pair ``(position, phase, payload)`` records; ``{pos: paired pos}`` in both directions."""
    pairer: Pairer[int] = Pairer()
    pairs: dict[int, int] = {}
    for pos, phase, payload in records:
        if phase == "tool_call":
            other = pairer.call(*tool_key(payload), pos)
        elif phase == "tool_result":
            other = pairer.result(*tool_key(payload), pos)
        else:
            continue
        if other is not None:
            pairs[pos], pairs[other] = other, pos
    return pairs
