"""Sans-IO session state: the ONLY code that assigns ``step`` and ``turn``.

A write happens in two halves so that a failed write never consumes a step:
``prepare`` builds the records with the next steps, the journal writes them,
and ``commit`` advances the counters for the records that reached the file.
Nothing here does I/O; the registry drives it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from traced.records import Meta, Record, format_ts

IDEMPOTENCY_WINDOW: Final = 16384
"""How many recent client sequence numbers a session remembers per client (at least;
pruned in bulk at twice this). A client never has more than ``MAX_UNSYNCED`` unconfirmed."""


@dataclass(slots=True)
class Pending:
    """One event on its way into a session: what the client sent, after redaction."""

    phase: str
    payload: Any
    ts: float = 0.0
    client_id: str = ""
    seq: int = 0
    redactions: int = 0


@dataclass(slots=True)
class Prepared:
    """Records built by ``prepare``, waiting for the journal.

    ``outcome[i]`` is, for the i-th pending event, the index of its record in
    ``records``, or ``-(step)`` when it was a replay of an already written event.
    """

    records: list[Record]
    pending: list[Pending]
    outcome: list[int]


@dataclass(slots=True)
class SessionState:
    """Everything the daemon knows about one session, in memory."""

    skill: str
    session_id: str
    dir: str
    started_at: str
    step: int = 0
    """The last step written to the file (0 before the start record)."""
    turn: int = 0
    closed: bool = False
    meta: Meta | None = None
    owner_pid: int | None = None
    idle_timeout: float = 0.0
    last_activity: float = field(default_factory=time.monotonic)
    seen: dict[str, dict[int, int]] = field(default_factory=dict)
    """client_id -> {seq: step} of recent writes, to drop replays."""

    def __post_init__(self) -> None:
        if self.meta is None:
            self.meta = Meta(
                session_id=self.session_id,
                skill=self.skill,
                devboy_version="",
                started_at=self.started_at,
            )

    @property
    def m(self) -> Meta:
        """The meta.json contents kept up to date by ``commit``."""
        assert self.meta is not None
        return self.meta

    def replayed_step(self, client_id: str, seq: int) -> int | None:
        """The step already written for (client_id, seq), if it is a replay."""
        if not client_id or not seq:
            return None
        seen = self.seen.get(client_id)
        return None if seen is None else seen.get(seq)

    def prepare(self, batch: Iterable[Pending]) -> Prepared:
        """Build records for ``batch`` with consecutive steps after the last written one."""
        records: list[Record] = []
        pend: list[Pending] = []
        outcome: list[int] = []
        step = self.step
        turn = self.turn
        skill = self.skill
        sid = self.session_id
        batch_keys: dict[tuple[str, int], int] = {}
        for ev in batch:
            if ev.seq and ev.client_id:
                done = self.replayed_step(ev.client_id, ev.seq)
                if done is not None:
                    outcome.append(-done)
                    continue
                key = (ev.client_id, ev.seq)
                if key in batch_keys:
                    outcome.append(-batch_keys[key])
                    continue
                batch_keys[key] = step + 1
            step += 1
            if ev.phase == "user_prompt":
                turn += 1
            records.append(
                Record(
                    ts=format_ts(ev.ts),
                    skill=skill,
                    session_id=sid,
                    step=step,
                    turn=turn or None,
                    phase=ev.phase,
                    payload=ev.payload,
                    client_seq=f"{ev.client_id}:{ev.seq}" if ev.seq and ev.client_id else None,
                )
            )
            outcome.append(len(pend))
            pend.append(ev)
        return Prepared(records, pend, outcome)

    def commit(self, prepared: Prepared, written: int) -> None:
        """Advance the state for the first ``written`` records of ``prepared``."""
        meta = self.m
        for rec, ev in zip(prepared.records[:written], prepared.pending[:written], strict=True):
            assert rec.step == self.step + 1, "steps are assigned in order"
            self.step = rec.step
            if rec.turn:
                self.turn = rec.turn
            account(meta, rec.phase, rec.payload)
            if ev.seq and ev.client_id:
                seen = self.seen.get(ev.client_id)
                if seen is None:
                    seen = self.seen[ev.client_id] = {}
                seen[ev.seq] = rec.step
                if len(seen) > 2 * IDEMPOTENCY_WINDOW:
                    self.seen[ev.client_id] = _newest(seen)
        meta.steps = self.step
        meta.turns = self.turn
        self.last_activity = time.monotonic()

    def steps_of(self, prepared: Prepared, written: int) -> list[int | None]:
        """For each pending event: its step, or None when its record was not written."""
        steps: list[int | None] = []
        for idx in prepared.outcome:
            if idx < 0:
                steps.append(-idx)
            elif idx < written:
                steps.append(prepared.records[idx].step)
            else:
                steps.append(None)
        return steps

    def remember(self, client_seq: str, step: int) -> None:
        """Rebuild the idempotency window from a line read back from disk."""
        client_id, _, seq = client_seq.rpartition(":")
        if client_id and seq.isdigit():
            seen = self.seen.setdefault(client_id, {})
            seen[int(seq)] = step
            if len(seen) > 2 * IDEMPOTENCY_WINDOW:
                self.seen[client_id] = _newest(seen)


def _newest(seen: dict[int, int]) -> dict[int, int]:
    """The newest IDEMPOTENCY_WINDOW entries: pruned in bulk (deleting a dict's oldest key
    one at a time makes every next lookup of "the oldest" skip the deleted slots)."""
    items = list(seen.items())
    return dict(items[-IDEMPOTENCY_WINDOW:])


def _count(value: Any) -> int:
    """A token count: a finite number as a non-negative int, anything else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


_INF = float("inf")


class UsageTotals(Protocol):
    """What ``add_usage`` folds into: meta.json's ``Usage`` and the reader's ``Tokens``."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None
    llm_calls: int
    unknown_cost_calls: int


def account(meta: Meta, phase: str, payload: Any) -> None:
    """Fold one written record into meta.json's counters (DESIGN §2)."""
    phases = meta.phases
    phases[phase] = phases.get(phase, 0) + 1
    if not isinstance(payload, dict):
        return
    if phase == "tool_call":
        meta.tool_calls += 1
    elif phase == "tool_result":
        if payload.get("ok") is False:
            meta.errors += 1
    elif phase == "llm_call":
        add_usage(meta.usage, payload)


def add_usage(usage: UsageTotals, payload: Any) -> None:
    """Add one ``llm_call`` payload's tokens and cost: the one rule, for the daemon and readers.

    Tolerant: odd or missing fields count as 0; a cost that is not a number >= 0 is unknown.
    """
    if not isinstance(payload, dict):
        payload = {}
    u = payload.get("usage")
    if isinstance(u, dict):
        usage.input_tokens += _count(u.get("input_tokens"))
        usage.output_tokens += _count(u.get("output_tokens"))
        usage.cache_read_tokens += _count(u.get("cache_read_tokens"))
        usage.cache_write_tokens += _count(u.get("cache_write_tokens"))
    usage.llm_calls += 1
    cost = payload.get("cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and 0 <= cost < _INF:
        usage.cost_usd = round((usage.cost_usd or 0.0) + float(cost), 10)
    else:
        usage.unknown_cost_calls += 1
