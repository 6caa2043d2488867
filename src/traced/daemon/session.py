"""Sans-IO session state and lifecycle: the ONLY code that assigns ``step`` and ``turn``.

A write happens in two halves so that a failed write never consumes a step:
``prepare`` builds the records with the next steps, the journal writes them,
and ``commit`` advances the counters for the records that reached the file.

The lifecycle is a small transition table (``transition``): which request is
legal in which state, which record it writes (``start``, ``start {resumed}``,
``end``) and the state after it. Nothing here does I/O; the registry drives it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from traced.errors import RequestError
from traced.format import vocab
from traced.format.accounting import CALL_SOURCES, account, call_keys
from traced.format.records import Meta, Record, format_ts

# --- lifecycle ----------------------------------------------------------------------

State = Literal["absent", "open", "ended"]
"""``absent``: nothing on disk; ``open``: live in this daemon; ``ended``: its trace ends (or it was closed)."""
Op = Literal["open", "open_from_spool", "open_ended", "emit", "emit_late", "close", "finalize", "adopt"]
Action = Literal["create", "resume", "reopen", "peek", "write", "write_late", "end", "ended_already", "adopt"]

TRANSITIONS: Final[dict[tuple[State, Op], tuple[Action, State]]] = {
    ("absent", "open"): ("create", "open"),  # writes start {input?, cwd?}
    ("absent", "open_from_spool"): ("create", "open"),
    ("open", "open"): ("resume", "open"),  # no record; labels and owner update
    ("open", "open_from_spool"): ("resume", "open"),
    ("ended", "open"): ("reopen", "open"),  # writes start {resumed: true}
    ("open", "emit"): ("write", "open"),
    ("open", "close"): ("end", "ended"),  # writes end {outcome, summary?}
    ("open", "finalize"): ("end", "ended"),  # writes end {outcome: aborted, reason}
    ("open", "adopt"): ("adopt", "open"),  # restart recovery, another writer's session: no record
    # late events (an async hook's result after SessionEnd): recorded, the ending stays
    ("absent", "open_ended"): ("create", "open"),
    ("open", "open_ended"): ("resume", "open"),
    ("ended", "open_ended"): ("peek", "ended"),  # no record: the session stays ended
    ("open", "emit_late"): ("write", "open"),
    ("ended", "emit_late"): ("write_late", "ended"),  # a record marked late after the end
    # a close resent after a reconnect (or a restart) finds the session ended: its recorded ending
    ("ended", "close"): ("ended_already", "ended"),
}
"""(state, request) -> (action, next state). Anything missing is refused (see ``transition``)."""

_REFUSALS: Final[dict[State, tuple[str, str]]] = {
    "absent": ("unknown_session", "no open session {sid!r}"),
    "ended": ("session_closed", "session {sid} is closed"),
    "open": ("invalid_event", "session {sid} is open"),
}


def transition(state: State, op: Op, session_id: str = "") -> tuple[Action, State]:
    """The action and next state for ``op`` on a session in ``state``.

    Raises RequestError ``unknown_session`` / ``session_closed`` for a request
    the state does not allow (an emit to an ended session, a spool replay that
    would reopen an ended one).
    """
    step = TRANSITIONS.get((state, op))
    if step is None:
        code, message = _REFUSALS[state]
        raise RequestError(code, message.format(sid=session_id))
    return step


def start_payload(input: Any = None, cwd: str = "") -> dict[str, Any]:
    """The ``start {input?, cwd?}`` payload of a new session."""
    payload: dict[str, Any] = {}
    if input is not None:
        payload["input"] = input
    if cwd:
        payload["cwd"] = cwd
    return payload


RESUMED_PAYLOAD: Final = {"resumed": True}
"""The payload of the ``start`` record that reopens an ended session."""


def end_payload(outcome: str, summary: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """The ``end {outcome, summary?, reason?}`` payload; InvalidEvent-style RequestError for a bad outcome."""
    if outcome not in vocab.OUTCOMES:
        raise RequestError("invalid_event", f"invalid outcome {outcome!r}: one of {', '.join(vocab.OUTCOMES)}")
    payload: dict[str, Any] = {"outcome": outcome}
    if summary is not None:
        payload["summary"] = summary
    if reason is not None:
        payload["reason"] = reason
    return payload


# --- state ----------------------------------------------------------------------------

IDEMPOTENCY_WINDOW: Final = 16384
"""How many recent client sequence numbers a session remembers per client (at least: two
generations of this many, the older dropped whole). A client never has more than
``MAX_UNSYNCED`` unconfirmed."""


class Pending(msgspec.Struct):
    """One event on its way into a session: what the client sent, after redaction.

    A Struct, not a dataclass: built once per event, and msgspec's ``__init__`` is C.
    """

    phase: str
    payload: Any
    ts: float = 0.0
    client_id: str = ""
    seq: int = 0
    redactions: int = 0
    late: bool = False
    wire: bytes | msgspec.Raw = b""
    """The msgpack it was decoded from (its frame, or its event in a batch), for ``Redactor.redactions``'
    prefilter (b"": not known)."""


class Prepared(msgspec.Struct):
    """Records built by ``prepare``, waiting for the journal.

    ``outcome[i]`` is, for the i-th pending event, the index of its record in
    ``records`` (a copy of an earlier event of the same batch shares its index),
    or ``-(step)`` when it was a replay of an already written event.
    """

    records: list[Record]
    pending: list[Pending]
    outcome: list[int]
    times: list[float] = []
    """Each record's time (epoch seconds), never before the one before it."""


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
    last_ts: float = 0.0
    """The time of the last record written (epoch seconds): no record's ``ts`` goes before it."""
    seen: dict[str, dict[int, int]] = field(default_factory=dict)
    """client_id -> {seq: step} of recent writes, to drop replays (the current generation)."""
    seen_before: dict[str, dict[int, int]] = field(default_factory=dict)
    """client_id -> the generation before ``seen``'s: together at least the newest
    ``IDEMPOTENCY_WINDOW`` keys, with no copying when a generation fills up."""
    requests: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    """``call_keys`` of recent ``llm_call`` records -> (client id, step, request id): one API call
    reported by two sources (the transcript read at Stop and Claude Code's OTLP ``api_request``, each under
    its own client id) is written once."""

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
        done = None if seen is None else seen.get(seq)
        if done is None and (seen := self.seen_before.get(client_id)) is not None:
            done = seen.get(seq)
        return done

    def prepare(self, batch: Iterable[Pending]) -> Prepared:
        """Build records for ``batch`` with consecutive steps after the last written one."""
        records: list[Record] = []
        pend: list[Pending] = []
        outcome: list[int] = []
        times: list[float] = []
        step = self.step
        turn = self.turn
        skill = self.skill
        sid = self.session_id
        seen_by_client = self.seen
        seen_before = self.seen_before
        batch_keys: dict[tuple[str, int], int] = {}
        batch_requests: dict[str, tuple[str, int, str]] = {}
        last = self.last_ts
        now = 0.0
        llm_call, user_prompt = vocab.LLM_CALL, vocab.USER_PROMPT
        for ev in batch:
            seq = ev.seq
            client_id = ev.client_id
            client_seq = None
            if seq and client_id:
                seen = seen_by_client.get(client_id)
                done = None if seen is None else seen.get(seq)
                if done is None and seen_before:
                    seen = seen_before.get(client_id)
                    done = None if seen is None else seen.get(seq)
                if done is not None:  # a replay of an event already written
                    outcome.append(-done)
                    continue
                key = (client_id, seq)
                if key in batch_keys:  # a copy inside this batch: it shares its first copy's fate
                    outcome.append(batch_keys[key])
                    continue
                batch_keys[key] = len(pend)
                client_seq = f"{client_id}:{seq}"
            phase = ev.phase
            if phase == llm_call:
                taken = self._same_call(ev, batch_requests, len(pend))
                if taken is not None:  # the same API call, already taken from another source
                    outcome.append(taken)
                    continue
            elif phase == user_prompt:
                turn += 1
            step += 1
            t = ev.ts
            if t <= 0:
                t = now = now or time.time()
            t = last = max(t, last)  # a clock moved back, or a client's is behind: time never runs backwards
            times.append(t)
            records.append(Record(ts=format_ts(t), skill=skill, session_id=sid, step=step, turn=turn or None,
                                  phase=phase, payload=ev.payload, client_seq=client_seq,
                                  late=True if ev.late else None))
            outcome.append(len(pend))
            pend.append(ev)
        return Prepared(records, pend, outcome, times)

    def commit(self, prepared: Prepared, written: int) -> int:
        """Advance the state for the first ``written`` records of ``prepared``; returns their
        events' redactions (a count)."""
        meta = self.m
        records = prepared.records
        pending = prepared.pending
        redactions = 0
        if written:
            assert records[0].step == self.step + 1 and records[written - 1].step == self.step + written, (
                "steps are assigned in order")
            self.step = records[written - 1].step or 0
            self.turn = records[written - 1].turn or self.turn
            if written < len(records):
                records, pending = records[:written], pending[:written]
            seen_by_client = self.seen
            llm_call = vocab.LLM_CALL
            for rec, ev in zip(records, pending, strict=True):
                phase = rec.phase
                account(meta, phase, rec.payload)
                redactions += ev.redactions
                if phase == llm_call:
                    keys = call_keys(rec.payload)
                    rid = keys[0][0][4:] if keys and keys[0][1] else ""
                    for key, _any in keys:
                        self.remember_request(key, ev.client_id, rec.step or 0, rid)
                if rec.client_seq is not None:
                    self._seen(ev.client_id, ev.seq, rec.step or 0, seen_by_client)
            self.last_ts = prepared.times[written - 1]
            meta.redactions += redactions
        meta.steps = self.step
        meta.turns = self.turn
        self.last_activity = time.monotonic()
        return redactions

    def steps_of(self, prepared: Prepared, written: int) -> list[int | None]:
        """For each pending event: its step, or None when its record was not written."""
        records = prepared.records
        outcome = prepared.outcome
        if written == len(records) == len(outcome):  # no replay, no copy: one record per event
            return [r.step for r in records]
        steps: list[int | None] = []
        for idx in outcome:
            if idx < 0:
                steps.append(-idx)
            elif idx < written:
                steps.append(records[idx].step)
            else:
                steps.append(None)
        return steps

    def remember(self, client_seq: str, step: int) -> None:
        """Rebuild the idempotency window from a line read back from disk."""
        client_id, _, seq = client_seq.rpartition(":")
        if client_id and seq.isdigit():
            self._seen(client_id, int(seq), step, self.seen)

    def _seen(self, client_id: str, seq: int, step: int, seen_by_client: dict[str, dict[int, int]]) -> None:
        """Remember (client_id, seq) -> step; a full generation becomes the one before."""
        seen = seen_by_client.get(client_id)
        if seen is None:
            seen = seen_by_client[client_id] = {}
        seen[seq] = step
        if len(seen) >= IDEMPOTENCY_WINDOW:
            self.seen_before[client_id] = seen
            seen_by_client[client_id] = {}


    def _same_call(self, ev: Pending, batch: dict[str, tuple[str, int, str]], index: int) -> int | None:
        """The ``prepare`` outcome of an ``llm_call`` that is a call already taken (``-step``, or
        the index of its copy in this batch), else None (and the batch remembers its keys)."""
        keys = call_keys(ev.payload)
        rid = keys[0][0][4:] if keys and keys[0][1] else ""
        for key, any_client in keys:
            for seen, done in ((self.requests.get(key), True), (batch.get(key), False)):
                if seen is None:
                    continue
                client, at, other_rid = seen
                if any_client or (client != ev.client_id and {client, ev.client_id} == CALL_SOURCES
                                  and not (rid and other_rid and rid != other_rid)):
                    return -at if done else at
        for key, _any in keys:
            batch[key] = (ev.client_id, index, rid)
        return None

    def remember_request(self, key: str, client_id: str, step: int, rid: str = "") -> None:
        """Note an ``llm_call``'s key (``call_keys``) and request id, written now or read back."""
        self.requests[key] = (client_id, step, rid)
        if len(self.requests) > 2 * IDEMPOTENCY_WINDOW:
            self.requests = dict(list(self.requests.items())[-IDEMPOTENCY_WINDOW:])
