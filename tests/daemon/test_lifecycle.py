"""Property tests of the sans-IO session state and lifecycle (``traced.daemon.session``).

A Hypothesis state machine drives ``SessionState.prepare``/``commit``/``steps_of``/
``remember`` and ``transition`` the way the registry does, with partial writes
(only the first k records of a batch reach the file, as after a failed write(2)),
replays of already-written (client_id, seq) keys, duplicates inside one batch,
restarts (the state rebuilt from the committed records with ``remember``) and
every lifecycle request in every state. A model kept here, independently of the
code under test, says what must have happened.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from traced.daemon.session import (
    IDEMPOTENCY_WINDOW,
    RESUMED_PAYLOAD,
    TRANSITIONS,
    Pending,
    SessionState,
    end_payload,
    start_payload,
    transition,
)
from traced.errors import RequestError
from traced.format.accounting import account
from traced.format.records import Meta, Record

STARTED = "2026-01-01T00:00:00.000000Z"
SESSION_IDS = ("01SESSIONAAAAAAAAAAAAAAAAA", "01SESSIONBBBBBBBBBBBBBBBBB")
CLIENTS = ("ca", "cb", "cc")
OPS = ("open", "open_from_spool", "open_ended", "emit", "emit_late", "close", "finalize", "adopt")

# The lifecycle as the README and docs/protocol.md describe it, written out here on its own:
# (state, op) -> (action, next state), or the error code of the refusal.
EXPECTED: dict[tuple[str, str], tuple[str, str] | str] = {
    ("absent", "open"): ("create", "open"),
    ("absent", "open_from_spool"): ("create", "open"),
    ("absent", "emit"): "unknown_session",
    ("absent", "close"): "unknown_session",
    ("absent", "finalize"): "unknown_session",
    ("absent", "adopt"): "unknown_session",
    ("open", "open"): ("resume", "open"),
    ("open", "open_from_spool"): ("resume", "open"),
    ("open", "emit"): ("write", "open"),
    ("open", "close"): ("end", "ended"),
    ("open", "finalize"): ("end", "ended"),
    ("open", "adopt"): ("adopt", "open"),
    ("ended", "open"): ("reopen", "open"),
    ("ended", "open_from_spool"): "session_closed",
    ("ended", "emit"): "session_closed",
    ("ended", "close"): ("ended_already", "ended"),  # a resent close: the recorded ending, no second end
    ("ended", "finalize"): "session_closed",
    ("ended", "adopt"): "session_closed",
    # late events (an async hook's result after the session ended): recorded, the ending stays
    ("absent", "open_ended"): ("create", "open"),
    ("open", "open_ended"): ("resume", "open"),
    ("ended", "open_ended"): ("peek", "ended"),
    ("absent", "emit_late"): "unknown_session",
    ("open", "emit_late"): ("write", "open"),
    ("ended", "emit_late"): ("write_late", "ended"),
}

PAYLOADS: dict[str, Any] = {
    "note": {"message": "m"},
    "tool_call": {"tool": "Bash", "args": {"cmd": "ls"}},
    "tool_result_ok": {"tool": "Bash", "ok": True},
    "tool_result_err": {"tool": "Bash", "ok": False, "error": "boom"},
    "llm_call": {"model": "m", "usage": {"input_tokens": 7, "output_tokens": 3}, "cost_usd": 0.25},
    "user_prompt": {"prompt": "hi"},
    "decision": {"choice": "a"},
}


def _phase_of(kind: str) -> str:
    return "tool_result" if kind.startswith("tool_result") else kind


@dataclass
class Model:
    """What the test knows about one session, independently of SessionState."""

    lifecycle: str = "absent"
    state: SessionState | None = None
    committed: list[Record] = field(default_factory=list)
    """Every record that reached the "file", in order."""
    keys: dict[tuple[str, int], int] = field(default_factory=dict)
    """(client_id, seq) -> the step it was written with."""
    uncommitted: list[tuple[str, int]] = field(default_factory=list)
    """Keys that were prepared but never reached the file (never written since)."""
    turn: int = 0
    closes: int = 0
    """Close/finalize requests whose end record was written."""
    starts: int = 0


def recount(records: list[Record]) -> Meta:
    """meta counters recomputed from the committed records, by hand (not with ``account``)."""
    meta = Meta(session_id="x", skill="s", devboy_version="", started_at=STARTED)
    phases = Counter(r.phase for r in records)
    meta.phases = dict(phases)
    meta.tool_calls = phases["tool_call"]
    meta.errors = sum(1 for r in records if r.phase == "tool_result" and r.payload.get("ok") is False)
    meta.usage.llm_calls = phases["llm_call"]
    meta.usage.input_tokens = 7 * phases["llm_call"]
    meta.usage.output_tokens = 3 * phases["llm_call"]
    return meta


def rebuild(model: Model, sid: str, meta: Meta) -> SessionState:
    """The state a daemon rebuilds from the file: last step and turn from the lines, keys with ``remember``."""
    last = model.committed[-1]
    turn = max((r.turn or 0 for r in model.committed), default=0)
    state = SessionState(skill="s", session_id=sid, dir="/d", started_at=STARTED, step=last.step or 0,
                         turn=turn, meta=meta)
    for rec in model.committed:
        if rec.client_seq:
            state.remember(rec.client_seq, rec.step or 0)
    meta.steps = state.step
    meta.turns = state.turn
    return state


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.models = {sid: Model() for sid in SESSION_IDS}
        self.next_seq = dict.fromkeys(CLIENTS, 0)

    # --- writing helpers -------------------------------------------------------------

    def _write_one(self, model: Model, phase: str, payload: dict[str, Any], written: bool,
                   late: bool = False) -> list[int | None]:
        state = model.state
        assert state is not None
        before = state.step
        prepared = state.prepare([Pending(phase, payload, 1.0, late=late)])
        assert [r.step for r in prepared.records] == [before + 1]
        assert prepared.records[0].payload == payload and prepared.records[0].client_seq is None
        assert prepared.records[0].late is (True if late else None)
        k = 1 if written else 0
        state.commit(prepared, k)
        steps = state.steps_of(prepared, k)
        if written:
            model.committed.append(prepared.records[0])
            assert steps == [before + 1]
        else:
            assert steps == [None]
            assert state.step == before, "a failed write never consumes a step"
        return steps

    # --- lifecycle ----------------------------------------------------------------------

    @rule(sid=st.sampled_from(SESSION_IDS), op=st.sampled_from(OPS), data=st.data())
    def lifecycle(self, sid: str, op: str, data: st.DataObject) -> None:
        model = self.models[sid]
        expected = EXPECTED[(model.lifecycle, op)]
        try:
            got = transition(model.lifecycle, op, sid)  # type: ignore[arg-type]
        except RequestError as e:
            assert expected == e.code, (model.lifecycle, op, e.code)
            assert sid in e.message
            return
        assert got == expected, (model.lifecycle, op, got)
        action, nxt = got
        steps_before = len(model.committed)
        if action == "create":
            inp = data.draw(st.sampled_from([None, {"pr": 42}, "text"]))
            cwd = data.draw(st.sampled_from(["", "/work"]))
            payload = start_payload(inp, cwd)
            expected_payload: dict[str, Any] = {}
            if inp is not None:
                expected_payload["input"] = inp
            if cwd:
                expected_payload["cwd"] = cwd
            assert payload == expected_payload
            model.state = SessionState(skill="s", session_id=sid, dir="/d", started_at=STARTED)
            self._write_one(model, "start", payload, written=True)
            assert model.committed[-1].step == 1 and model.committed[-1].turn is None
            model.starts += 1
        elif action in ("resume", "peek", "ended_already"):
            pass  # no record
        elif action == "reopen":
            assert model.state is not None
            model.state = rebuild(model, sid, model.state.m)  # meta.json of the ended session
            self._write_one(model, "start", dict(RESUMED_PAYLOAD), written=True)
            assert model.committed[-1].payload == {"resumed": True}
            model.starts += 1
        elif action == "adopt":
            fresh = Meta(session_id=sid, skill="s", devboy_version="", started_at=STARTED)
            for rec in model.committed:
                account(fresh, rec.phase, rec.payload)
            model.state = rebuild(model, sid, fresh)
        elif action == "end":
            outcome = data.draw(st.sampled_from(["success", "failure", "aborted"]))
            reason = "idle_timeout" if op == "finalize" else None
            summary = data.draw(st.sampled_from([None, "done"]))
            payload = end_payload(outcome, summary, reason)
            expected_end: dict[str, Any] = {"outcome": outcome}
            if summary is not None:
                expected_end["summary"] = summary
            if reason is not None:
                expected_end["reason"] = reason
            assert payload == expected_end
            written = data.draw(st.booleans(), label="end record written")
            self._write_one(model, "end", payload, written)
            if not written:  # the registry answers io_error and the session stays open
                return
            model.closes += 1
        else:
            assert action in ("write", "write_late")
            note_written = data.draw(st.booleans(), label="note written")
            self._write_one(model, "note", {"message": "one"}, note_written, late=op == "emit_late")
            assert len(model.committed) == steps_before + note_written
        if action in ("resume", "adopt", "peek"):
            assert len(model.committed) == steps_before, f"{action} writes no record"
        model.lifecycle = nxt

    # --- events ------------------------------------------------------------------------

    @rule(sid=st.sampled_from(SESSION_IDS), data=st.data())
    def emit_batch(self, sid: str, data: st.DataObject) -> None:
        model = self.models[sid]
        late = data.draw(st.booleans(), label="late events")
        try:
            transition(model.lifecycle, "emit_late" if late else "emit", sid)  # type: ignore[arg-type]
        except RequestError as e:
            assert model.lifecycle == "absent" or (model.lifecycle == "ended" and not late)
            assert e.code == ("unknown_session" if model.lifecycle == "absent" else "session_closed")
            return
        assert model.lifecycle == "open" or late
        state = model.state
        assert state is not None

        n = data.draw(st.integers(1, 8), label="batch size")
        batch: list[Pending] = []
        keys: list[tuple[str, int] | None] = []
        for _ in range(n):
            kind = data.draw(st.sampled_from(["new", "new", "replay", "retry", "dup", "nokey"]))
            phase_kind = data.draw(st.sampled_from(sorted(PAYLOADS)))
            key: tuple[str, int] | None
            if kind == "replay" and model.keys:
                key = data.draw(st.sampled_from(sorted(model.keys)))
            elif kind == "retry" and model.uncommitted:
                key = data.draw(st.sampled_from(model.uncommitted))
            elif kind == "dup" and any(keys):
                key = data.draw(st.sampled_from([k for k in keys if k is not None]))
            elif kind == "nokey":
                key = None
            else:
                client = data.draw(st.sampled_from(CLIENTS))
                self.next_seq[client] += 1
                key = (client, self.next_seq[client])
            keys.append(key)
            client_id, seq = key if key is not None else ("", 0)
            batch.append(Pending(_phase_of(phase_kind), dict(PAYLOADS[phase_kind]), 2.0, client_id, seq, late=late))

        base = state.step
        assert base == len(model.committed)
        prepared = state.prepare(batch)

        # What must be written: keyed events never written before, once each; unkeyed ones always.
        expected_records: list[int] = []  # index into batch of each new record
        first_in_batch: dict[tuple[str, int], int] = {}
        for i, key in enumerate(keys):
            if key is not None and (key in model.keys or key in first_in_batch):
                continue
            if key is not None:
                first_in_batch[key] = len(expected_records)
            expected_records.append(i)
        records = prepared.records
        assert len(records) == len(expected_records)
        assert [r.step for r in records] == list(range(base + 1, base + 1 + len(records)))
        turn = model.turn
        for rec, i in zip(records, expected_records, strict=True):
            ev = batch[i]
            if ev.phase == "user_prompt":
                turn += 1
            assert rec.phase == ev.phase and rec.payload == ev.payload
            assert rec.turn == (turn or None)
            assert rec.client_seq == (f"{ev.client_id}:{ev.seq}" if keys[i] is not None else None)
            assert (rec.skill, rec.session_id, rec.late) == ("s", sid, True if late else None)

        k = data.draw(st.integers(0, len(records)), label="records that reached the file")
        state.commit(prepared, k)
        steps = state.steps_of(prepared, k)

        # The expected step of every event, from the model alone.
        assert len(steps) == len(batch)
        for i, key in enumerate(keys):
            if key is not None and key in model.keys:
                assert steps[i] == model.keys[key], "a replay answers the step it was first written with"
            elif i in expected_records:
                idx = expected_records.index(i)
                assert steps[i] == (base + 1 + idx if idx < k else None)
            else:  # a duplicate of a key first seen earlier in this batch
                assert key is not None
                idx = first_in_batch[key]
                assert steps[i] == (base + 1 + idx if idx < k else None), "a copy shares its first copy's fate"

        written = records[:k]
        for rec in written:
            model.committed.append(rec)
            if rec.phase == "user_prompt":
                model.turn += 1
            if rec.client_seq:
                cid, _, seq_text = rec.client_seq.rpartition(":")
                model.keys[(cid, int(seq_text))] = rec.step or 0
        model.uncommitted = [key for key in {*model.uncommitted, *(k2 for k2 in keys if k2 is not None)}
                             if key not in model.keys]
        model.uncommitted.sort()

    @precondition(lambda self: any(m.lifecycle != "absent" for m in self.models.values()))
    @rule(data=st.data())
    def replay_everything_written(self, data: st.DataObject) -> None:
        """A client resending every key it ever had written (after a reconnect) writes nothing."""
        sid = data.draw(st.sampled_from([s for s, m in self.models.items() if m.lifecycle != "absent"]))
        model = self.models[sid]
        state = model.state
        assert state is not None
        keys = sorted(model.keys)
        before = state.step
        prepared = state.prepare([Pending("note", {"message": "again"}, 3.0, cid, seq) for cid, seq in keys])
        assert prepared.records == []
        state.commit(prepared, 0)
        assert state.steps_of(prepared, 0) == [model.keys[key] for key in keys]
        assert state.step == before

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def steps_are_gap_free(self) -> None:
        for model in self.models.values():
            steps = [r.step for r in model.committed]
            assert steps == list(range(1, len(steps) + 1))
            if model.state is not None:
                assert model.state.step == len(steps)
                assert model.state.m.steps == len(steps) or not steps

    @invariant()
    def keys_are_written_once(self) -> None:
        for model in self.models.values():
            written = [r.client_seq for r in model.committed if r.client_seq]
            assert len(written) == len(set(written)), "a key is written at most once"
            assert len(written) == len(model.keys)

    @invariant()
    def turns_count_committed_prompts(self) -> None:
        for model in self.models.values():
            prompts = 0
            for rec in model.committed:
                if rec.phase == "user_prompt":
                    prompts += 1
                assert rec.turn == (prompts or None)
            assert model.turn == prompts
            if model.state is not None:
                assert model.state.turn == prompts
                assert model.state.m.turns == prompts

    @invariant()
    def meta_matches_a_recount(self) -> None:
        for model in self.models.values():
            if model.state is None:
                continue
            meta, expect = model.state.m, recount(model.committed)
            assert meta.steps == len(model.committed)
            assert (meta.tool_calls, meta.errors, meta.phases) == (expect.tool_calls, expect.errors, expect.phases)
            assert (meta.usage.llm_calls, meta.usage.input_tokens, meta.usage.output_tokens) == (
                expect.usage.llm_calls, expect.usage.input_tokens, expect.usage.output_tokens)

    @invariant()
    def one_end_per_close_and_ends_end(self) -> None:
        for model in self.models.values():
            phases = [r.phase for r in model.committed]
            assert phases.count("end") == model.closes
            assert phases.count("start") == model.starts
            on_time = [r for r in model.committed if not r.late]
            assert (model.lifecycle == "ended") == bool(on_time and on_time[-1].phase == "end")
            for i, rec in enumerate(on_time):
                if rec.phase == "end" and i + 1 < len(on_time):  # after an end: late records, or a reopen
                    assert on_time[i + 1].phase == "start"
                    assert on_time[i + 1].payload == {"resumed": True}
            if phases:
                assert model.committed[0].phase == "start"
                assert model.committed[0].payload != {"resumed": True}


LifecycleMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLifecycle = LifecycleMachine.TestCase


# --- the table and payloads, exactly -----------------------------------------------------


def test_transition_table_is_exactly_the_documented_lifecycle() -> None:
    allowed = {key: value for key, value in EXPECTED.items() if isinstance(value, tuple)}
    assert dict(TRANSITIONS) == allowed
    for (state, op), expected in EXPECTED.items():
        if isinstance(expected, tuple):
            assert transition(state, op, "S1") == expected  # type: ignore[arg-type]
        else:
            with pytest.raises(RequestError) as exc:
                transition(state, op, "S1")  # type: ignore[arg-type]
            assert exc.value.code == expected


def test_refusal_messages_name_the_session() -> None:
    with pytest.raises(RequestError) as exc:
        transition("absent", "emit", "01ABC")
    assert (exc.value.code, exc.value.message) == ("unknown_session", "no open session '01ABC'")
    with pytest.raises(RequestError) as exc:
        transition("ended", "open_from_spool", "01ABC")
    assert (exc.value.code, exc.value.message) == ("session_closed", "session 01ABC is closed")


def test_start_and_end_payloads() -> None:
    assert start_payload() == {}
    assert start_payload({"pr": 1}, "/w") == {"input": {"pr": 1}, "cwd": "/w"}
    assert start_payload(0) == {"input": 0}
    assert end_payload("success") == {"outcome": "success"}
    assert end_payload("aborted", "s", "owner_exited") == {"outcome": "aborted", "summary": "s",
                                                           "reason": "owner_exited"}
    assert RESUMED_PAYLOAD == {"resumed": True}
    with pytest.raises(RequestError) as exc:
        end_payload("crashed")
    assert exc.value.code == "invalid_event"
    assert exc.value.message == "invalid outcome 'crashed': one of success, failure, aborted"


# --- pinned cases -------------------------------------------------------------------------


def _state() -> SessionState:
    return SessionState(skill="s", session_id="id1", dir="/d", started_at=STARTED)


def test_duplicate_of_an_unwritten_event_is_not_acked() -> None:
    st_ = _state()
    prepared = st_.prepare([Pending("note", {}, client_id="c", seq=1), Pending("note", {}, client_id="c", seq=1)])
    assert [r.step for r in prepared.records] == [1]
    st_.commit(prepared, 0)  # the write failed: nothing reached the file
    assert st_.step == 0
    assert st_.steps_of(prepared, 0) == [None, None]


def test_duplicate_of_a_written_event_gets_its_step() -> None:
    st_ = _state()
    prepared = st_.prepare([Pending("note", {}, client_id="c", seq=1), Pending("note", {}, client_id="c", seq=1),
                            Pending("note", {}, client_id="c", seq=2)])
    assert [(r.step, r.client_seq) for r in prepared.records] == [(1, "c:1"), (2, "c:2")]
    st_.commit(prepared, 1)
    assert st_.steps_of(prepared, 1) == [1, 1, None]
    again = st_.prepare([Pending("note", {}, client_id="c", seq=2)])
    assert [(r.step, r.client_seq) for r in again.records] == [(2, "c:2")], "an unwritten key is written anew"


def test_remember_rebuilds_the_window_and_prunes_to_the_newest() -> None:
    st_ = _state()
    st_.remember("01CLIENT:7", 3)
    st_.remember("odd:client:9", 4)  # the key is split at its last colon
    st_.remember("noseq:", 5)
    st_.remember("bad:x1", 6)
    assert st_.seen == {"01CLIENT": {7: 3}, "odd:client": {9: 4}}
    assert st_.replayed_step("01CLIENT", 7) == 3
    assert st_.replayed_step("01CLIENT", 8) is None
    for seq in range(1, 2 * IDEMPOTENCY_WINDOW + 2):
        st_.remember(f"w:{seq}", seq)
    # two generations: 1..W dropped whole once W+1..2W filled up; 2W+1 starts the next one
    assert st_.seen["w"] == {2 * IDEMPOTENCY_WINDOW + 1: 2 * IDEMPOTENCY_WINDOW + 1}
    assert sorted(st_.seen_before["w"]) == list(range(IDEMPOTENCY_WINDOW + 1, 2 * IDEMPOTENCY_WINDOW + 1))
    assert st_.replayed_step("w", 2 * IDEMPOTENCY_WINDOW + 1) == 2 * IDEMPOTENCY_WINDOW + 1
    assert st_.replayed_step("w", IDEMPOTENCY_WINDOW + 1) == IDEMPOTENCY_WINDOW + 1
    assert st_.replayed_step("w", IDEMPOTENCY_WINDOW) is None
    prepared = st_.prepare([Pending("note", {}, client_id="w", seq=IDEMPOTENCY_WINDOW + 1),
                            Pending("note", {}, client_id="w", seq=IDEMPOTENCY_WINDOW)])
    assert prepared.outcome == [-(IDEMPOTENCY_WINDOW + 1), 0], "the older generation still drops its replays"


def test_unkeyed_events_are_never_deduplicated() -> None:
    st_ = _state()
    prepared = st_.prepare([Pending("note", {"message": "a"}), Pending("note", {"message": "a"}),
                            Pending("note", {}, client_id="c", seq=0), Pending("note", {}, client_id="", seq=5)])
    assert [(r.step, r.client_seq) for r in prepared.records] == [(1, None), (2, None), (3, None), (4, None)]
    st_.commit(prepared, 4)
    assert st_.steps_of(prepared, 4) == [1, 2, 3, 4]
    assert st_.seen == {}
