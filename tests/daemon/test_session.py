"""Sans-IO session state: the only place steps and turns are assigned."""

from __future__ import annotations

from traced.daemon.session import Pending, SessionState
from traced.format.accounting import add_usage
from traced.format.records import Usage


def _state() -> SessionState:
    return SessionState(skill="s", session_id="id1", dir="/x", started_at="2026-01-01T00:00:00.000000Z")


def test_steps_follow_commit_not_prepare() -> None:
    st = _state()
    p = st.prepare([Pending("start", {}), Pending("note", {"message": "a"})])
    assert [r.step for r in p.records] == [1, 2]
    st.commit(p, 1)  # only the first line reached the file
    assert st.step == 1
    assert st.steps_of(p, 1) == [1, None]
    p2 = st.prepare([Pending("note", {"message": "b"})])
    assert p2.records[0].step == 2, "a failed write never consumes a step"


def test_replays_are_dropped_with_their_original_step() -> None:
    st = _state()
    p = st.prepare([Pending("note", {}, client_id="c", seq=1), Pending("note", {}, client_id="c", seq=2)])
    st.commit(p, 2)
    again = st.prepare([Pending("note", {}, client_id="c", seq=2), Pending("note", {}, client_id="c", seq=3)])
    assert len(again.records) == 1 and again.records[0].step == 3
    st.commit(again, 1)
    assert st.steps_of(again, 1) == [2, 3]
    assert again.records[0].client_seq == "c:3"
    dup = st.prepare([Pending("note", {}, client_id="d", seq=1), Pending("note", {}, client_id="d", seq=1)])
    assert len(dup.records) == 1


def test_turns_advance_on_user_prompt() -> None:
    st = _state()
    p = st.prepare([Pending("start", {}), Pending("user_prompt", {"prompt": "hi"}), Pending("tool_call", {"tool": "x"}),
                    Pending("user_prompt", {}), Pending("note", {"message": "m"})])
    assert [r.turn for r in p.records] == [None, 1, 1, 2, 2]
    st.commit(p, 5)
    assert st.turn == 2 and st.m.turns == 2


def test_meta_accounting() -> None:
    st = _state()
    p = st.prepare([
        Pending("tool_call", {"tool": "a"}), Pending("tool_result", {"tool": "a", "ok": False}),
        Pending("tool_result", {"tool": "a", "ok": True}),
        Pending("llm_call", {"model": "m", "usage": {"input_tokens": 5, "output_tokens": 2}, "cost_usd": 0.5}),
        Pending("llm_call", {"model": "m", "usage": {"input_tokens": 1, "output_tokens": True}}),
    ])
    st.commit(p, 5)
    m = st.m
    assert (m.tool_calls, m.errors, m.steps) == (1, 1, 5)
    assert m.phases == {"tool_call": 1, "tool_result": 2, "llm_call": 2}
    assert m.usage.input_tokens == 6 and m.usage.output_tokens == 2
    assert m.usage.cost_usd == 0.5 and m.usage.unknown_cost_calls == 1 and m.usage.llm_calls == 2


def test_usage_cost_stays_null_when_unknown() -> None:
    u = Usage()
    add_usage(u, {"model": "x", "usage": {"input_tokens": 1}})
    assert u.cost_usd is None and u.unknown_cost_calls == 1
    add_usage(u, {"model": "local", "cost_usd": 0})
    assert u.cost_usd == 0.0


def test_one_api_call_from_two_sources_is_written_once() -> None:
    """Claude Code's transcript (read at Stop, client ``transcript``) and its OTLP ``api_request``
    (client ``otlp``) report the same API call under its ``request_id``: one record, one cost."""
    st = _state()
    otlp = {"model": "claude-sonnet-4-5", "request_id": "req_011A", "cost_usd": 0.02,
            "usage": {"input_tokens": 4, "output_tokens": 186}}
    transcript = {"model": "claude-sonnet-4-5", "request_id": "req_011A", "message_id": "msg_01A",
                  "usage": {"input_tokens": 4, "output_tokens": 186}}
    p = st.prepare([Pending("llm_call", otlp, client_id="otlp", seq=7)])
    st.commit(p, 1)
    again = st.prepare([Pending("llm_call", transcript, client_id="transcript", seq=99),
                        Pending("llm_call", {**transcript, "request_id": "req_011B"}, client_id="transcript", seq=98),
                        Pending("llm_call", {**transcript, "request_id": "req_011B"}, client_id="otlp", seq=8)])
    assert [r.payload["request_id"] for r in again.records] == ["req_011B"]
    st.commit(again, 1)
    assert st.steps_of(again, 1) == [1, 2, 2]
    assert (st.m.usage.llm_calls, st.m.usage.output_tokens, st.m.usage.cost_usd) == (2, 372, 0.02)
    # a restart rebuilds it from the lines on disk; other phases and odd ids are not keys
    fresh = _state()
    fresh.remember_request("rid:req_011A", "otlp", 1)
    assert fresh.prepare([Pending("llm_call", transcript)]).outcome == [-1]
    for payload in ({"request_id": ""}, {"request_id": 5}, {"request_id": "r" * 300}, {"model": "m"}):
        assert len(fresh.prepare([Pending("llm_call", payload), Pending("llm_call", payload)]).records) == 2
    assert len(fresh.prepare([Pending("note", {"request_id": "req_011A"})]).records) == 1


def test_claude_codes_otlp_call_matches_the_transcripts_by_its_token_counts() -> None:
    """Claude Code's ``api_request`` log has no request id: the same model and exact token counts
    from another source are the same call; within one source they never are."""
    st = _state()
    usage = {"input_tokens": 4, "output_tokens": 186, "cache_read_tokens": 12744, "cache_write_tokens": 2318}
    transcript = {"model": "claude-sonnet-4-5-20250929", "request_id": "req_1", "usage": usage}
    p = st.prepare([Pending("llm_call", transcript, client_id="transcript", seq=1),
                    Pending("llm_call", {**transcript, "request_id": "req_2"}, client_id="transcript", seq=2)])
    assert len(p.records) == 2  # two responses of one transcript with equal counts: two calls
    st.commit(p, 2)
    otlp = {"model": "claude-sonnet-4-5-20250929", "usage": dict(usage), "cost_usd": 0.05}
    again = st.prepare([Pending("llm_call", otlp, client_id="otlp", seq=9),
                        Pending("llm_call", {**otlp, "usage": {**usage, "output_tokens": 187}}, client_id="otlp",
                                seq=10)])
    assert [r.payload["usage"]["output_tokens"] for r in again.records] == [187]
    assert again.outcome[0] < 0  # the first: already written, from the transcript
