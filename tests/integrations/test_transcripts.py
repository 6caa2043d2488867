"""Usage and cost from the agents' transcripts: the Claude Code hook at Stop & co, and ``traced import``.

The transcripts in tests/fixtures/ are written from the documented formats (no copied files):
tests/fixtures/claude_code/transcript/ is the same conversation as the hook fixtures (session
5f0c2b1e…, two turns, one Explore subagent); tests/fixtures/codex/sessions/ is one Codex rollout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_gap_free, read_trace
from tests.integrations.test_claude_code import REPO, SID, fixture, run_hook, session_dir, wait_meta
from traced.integrations.claude_code import transcript, usage
from traced.integrations.codex.rollout import Rollout

FIXTURES = REPO / "tests" / "fixtures"
CC = FIXTURES / "claude_code" / "transcript"
MAIN = CC / f"{SID}.jsonl"
SUB = CC / SID / "subagents" / "agent-a4f1c2e9.jsonl"
ROLLOUT = next((FIXTURES / "codex" / "sessions").rglob("rollout-*.jsonl"))
CODEX_SID = "0199f0a2-6c1e-7b42-9d3a-5e8f1c2b4a60"
TURN1 = 10
"""Lines of the main transcript up to the end of the first turn."""
PROJECT = "-home-dev-src-webapp"

# The conversation's API responses: (message id, input, output, cache read, cache write)
TURN1_CALLS = [("msg_01A7hQe2WbX4kP9sLm3Rt6Uv", 4, 186, 12744, 2318),
               ("msg_01B3kLm9NpQ2rS5tUv8Wx1Yz", 6, 97, 15062, 1150),
               ("msg_01C5nPq8RsT1uV4wXy7Za0Bc", 8, 412, 16212, 620)]
TURN2_CALLS = [("msg_01D2eFg5HiJ8kLm1NoP4qRs7", 10, 301, 16832, 3210),
               ("msg_01E8tUv1WxY4zAb7CdE0fGh3", 3, 58, 20042, 408),
               ("msg_01F4iJk7LmN0oPq3RsT6uVw9", 5, 120, 20450, 380),
               ("msg_01G6xYz9AbC2dEf5GhI8jKl1", 7, 264, 20830, 1502)]
SUB_CALLS = [("msg_01S1aBc4DeF7gHi0JkL3mNo6", 12, 88, 0, 5120), ("msg_01S2pQr5StU8vWx1YzA4bCd7", 9, 143, 5120, 640)]
TOTALS = {"input_tokens": 64, "output_tokens": 1669, "cache_read_tokens": 127292, "cache_write_tokens": 15348}
COST = 0.1031936
"""genai-prices: claude-sonnet-4-5 $3/$15 per MTok, cache $0.30 read/$3.75 write (43 in, 1,438 out,
122,172 read, 9,588 written = $0.0943056); claude-haiku-4-5 $1/$5, $0.10/$1.25 (21, 231, 5,120,
5,760 = $0.008888)."""


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def usage_of(payload: dict[str, Any]) -> tuple[int, int, int, int]:
    u = payload["usage"]
    return u["input_tokens"], u["output_tokens"], u["cache_read_tokens"], u["cache_write_tokens"]


def calls_of(records: list[dict[str, Any]]) -> list[tuple[str, int, int, int, int]]:
    return [(r["payload"]["message_id"], *usage_of(r["payload"])) for r in records if r["phase"] == "llm_call"]


# ============================================================================ sans-IO


def test_reader_counts_each_response_once_with_its_final_usage() -> None:
    """A response is several lines (one per content block, usage repeated or growing): one call, under
    the largest value of each field; replayed lines, copies from another session and Claude Code's
    own synthetic messages add nothing."""
    reader = transcript.Reader(SID)
    reader.feed_all(line.rstrip(b"\n") for line in lines(MAIN))
    calls = reader.calls()
    assert [(c.message_id, *usage_of(c.payload())) for c in calls] == TURN1_CALLS + TURN2_CALLS
    first = calls[0].payload()
    assert first == {
        "provider": "anthropic", "model": "claude-sonnet-4-5-20250929",
        "usage": {"input_tokens": 4, "output_tokens": 186, "cache_read_tokens": 12744, "cache_write_tokens": 2318},
        "latency_ms": 3902.0, "finish_reason": "tool_use",
        "message_id": "msg_01A7hQe2WbX4kP9sLm3Rt6Uv", "request_id": "req_011CUJq7aXb2Yc3Zd4Ef5Gh6",
    }
    # a resumed conversation replays lines; a fork copies its parent's lines under another sessionId;
    # an API error is a <synthetic> message with zero usage
    replay = json.loads(lines(MAIN)[2])
    copy = {**replay, "sessionId": "0b9d7a51-2f64-4c1e-8a3b-6d5c4e3f2a10",
            "message": {**replay["message"], "id": "msg_01CopyOfAnotherSession00"}}
    synthetic = {**replay, "message": {**replay["message"], "id": "msg_synth", "model": "<synthetic>",
                                       "usage": {"input_tokens": 0, "output_tokens": 0}}}
    shrunk = {**json.loads(lines(MAIN)[3]), "message": {**json.loads(lines(MAIN)[3])["message"]}}
    shrunk["message"]["usage"] = {**shrunk["message"]["usage"], "output_tokens": 1}
    for extra in (replay, copy, synthetic, shrunk):
        reader.feed(json.dumps(extra).encode())
    assert [(c.message_id, *usage_of(c.payload())) for c in reader.calls()] == TURN1_CALLS + TURN2_CALLS
    assert reader.copies == 1
    assert "cost_usd" not in calls[0].payload()  # none in the transcript: priced when read
    old_style = {**replay, "message": {**replay["message"], "id": "msg_01OldVersionWithCost0000"}, "costUSD": 0.0125}
    reader.feed(json.dumps(old_style).encode())
    reader.feed(json.dumps(old_style).encode())  # every line of the response repeats it
    assert reader.calls()[-1].payload()["cost_usd"] == 0.0125
    sub = transcript.Reader(SID, "a4f1c2e9")
    sub.feed_all(line.rstrip(b"\n") for line in lines(SUB))
    assert [(c.message_id, *usage_of(c.payload())) for c in sub.calls()] == SUB_CALLS
    assert {c.payload()["agent_id"] for c in sub.calls()} == {"a4f1c2e9"}
    assert [c.payload()["model"] for c in sub.calls()] == ["claude-haiku-4-5-20251001"] * 2


def test_reader_full_pairs_prompts_tools_and_calls() -> None:
    reader = transcript.Reader(SID, full=True)
    reader.feed_all(line.rstrip(b"\n") for line in lines(MAIN))
    items = reader.records()
    assert [i.phase for i in items][:9] == ["user_prompt", "llm_call", "tool_call", "tool_result", "llm_call",
                                            "tool_call", "tool_result", "llm_call", "user_prompt"]
    bash = items[3].payload
    assert bash == {"tool": "Bash", "ok": False, "call_id": "toolu_01HQ8vX3mZ9kLr2TnB7cYw4E", "kind": "tool",
                    "duration_ms": 1880.0, "error": bash["error"]}
    assert bash["error"].startswith("Exit code 1") and bash["error"].endswith("1 failed, 3 passed in 0.84s")
    tools = [(i.payload["tool"], i.payload["kind"], i.payload.get("server")) for i in items if i.phase == "tool_call"]
    assert tools == [("Bash", "tool", None), ("Read", "tool", None), ("create_issue", "mcp", "github"),
                     ("Skill", "skill", None), ("Task", "tool", None)]
    assert sorted(i.key for i in items) == sorted({i.key for i in items})  # every source key once
    assert reader.first_ts == transcript.parse_time("2025-10-20T09:14:02.118Z")
    assert reader.last_ts == transcript.parse_time("2025-10-20T09:21:12.004Z")
    assert reader.cwd == "/home/dev/src/webapp"


def test_rollout_calls_are_the_growth_of_the_totals() -> None:
    """Codex writes a token_count per response (sometimes twice, or with no info yet): each call is
    the growth of total_token_usage; OpenAI's input_tokens include the cached ones, traced's do not."""
    roll = Rollout()
    for line in lines(ROLLOUT):
        roll.feed(line.rstrip(b"\n"))
    items = roll.records()
    assert roll.session_id == CODEX_SID and roll.cwd == "/home/dev/src/webapp" and roll.version == "0.47.0"
    assert [i.phase for i in items] == ["user_prompt", "llm_call", "tool_call", "tool_result", "llm_call",
                                        "tool_call", "tool_result", "llm_call"]
    assert items[0].payload == {"prompt": "Make the failing API test pass."}
    assert [i.payload["usage"] for i in items if i.phase == "llm_call"] == [
        {"input_tokens": 1211, "output_tokens": 211, "cache_read_tokens": 6912, "cache_write_tokens": 0,
         "reasoning_tokens": 128},
        {"input_tokens": 1070, "output_tokens": 318, "cache_read_tokens": 7808, "cache_write_tokens": 0,
         "reasoning_tokens": 128},
        {"input_tokens": 935, "output_tokens": 272, "cache_read_tokens": 8576, "cache_write_tokens": 0,
         "reasoning_tokens": 64},
    ]
    assert {i.payload["model"] for i in items if i.phase == "llm_call"} == {"gpt-5-codex"}
    shell = items[3].payload
    assert shell["ok"] is False and shell["exit_code"] == 1 and shell["duration_ms"] == 1300.0
    assert shell["error"] == "..F. E AssertionError: 422 != 201 1 failed, 3 passed in 0.84s"
    assert items[6].payload["ok"] is True and items[6].payload["tool"] == "apply_patch"
    # newer Codex writes tool output as text
    roll.feed(json.dumps({"timestamp": "2025-10-21T14:03:00.000Z", "type": "response_item", "payload": {
        "type": "function_call_output", "call_id": "call_x", "output": "Exit code: 2\nWall time: 0.1 seconds\n"
                                                                          "Output:\nno such file\n"}}).encode())
    assert roll.records()[-1].payload["error"] == "no such file" and roll.records()[-1].payload["exit_code"] == 2


def _tc(ts: str, total: tuple[int, int, int, int, int], last: tuple[int, int, int, int, int] | None = None) -> bytes:
    keys = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens", "total_tokens")
    info = {"total_token_usage": dict(zip(keys, total, strict=True)),
            "last_token_usage": dict(zip(keys, last or total, strict=True)), "model_context_window": 272000}
    return json.dumps({"timestamp": ts, "type": "event_msg", "payload": {"type": "token_count", "info": info}}).encode()


def test_rollout_resumed_totals_and_forks() -> None:
    """A running total that drops (a resumed session) still counts its call; a fork's file replays
    its parent's history at its start (ccusage#1349): that sets the baseline, it is no call of its own."""
    def line(ts: str, kind: str, payload: dict[str, Any]) -> bytes:
        return json.dumps({"timestamp": ts, "type": kind, "payload": payload}).encode()

    child, parent = "0199f0b7-1111-7222-8333-444455556666", CODEX_SID
    roll = Rollout()
    for raw in (
        line("2025-10-22T08:00:00.000Z", "session_meta", {"id": child, "timestamp": "2025-10-22T08:00:00.000Z",
                                                          "cwd": "/w", "cli_version": "0.47.0"}),
        line("2025-10-22T08:00:00.001Z", "session_meta", {"id": parent, "timestamp": "2025-10-21T14:02:11.480Z",
                                                          "cwd": "/w", "cli_version": "0.47.0"}),
        line("2025-10-22T08:00:00.002Z", "event_msg", {"type": "user_message", "message": "the parent's prompt"}),
        _tc("2025-10-22T08:00:00.003Z", (26512, 23296, 801, 320, 27313)),
        line("2025-10-22T08:00:05.000Z", "turn_context", {"model": "gpt-5-codex", "cwd": "/w"}),
        line("2025-10-22T08:00:05.001Z", "event_msg", {"type": "user_message", "message": "now the tests"}),
        _tc("2025-10-22T08:00:09.000Z", (36512, 31296, 1001, 400, 37513)),
        _tc("2025-10-22T08:00:20.000Z", (500, 100, 50, 0, 550), (500, 100, 50, 0, 550)),  # restarted
    ):
        roll.feed(raw)
    items = roll.records()
    assert roll.session_id == child
    assert [(i.phase, i.payload.get("prompt")) for i in items] == [
        ("user_prompt", "now the tests"), ("llm_call", None), ("llm_call", None)]
    assert [i.payload["usage"] for i in items[1:]] == [
        {"input_tokens": 2000, "output_tokens": 200, "cache_read_tokens": 8000, "cache_write_tokens": 0,
         "reasoning_tokens": 80},
        {"input_tokens": 400, "output_tokens": 50, "cache_read_tokens": 100, "cache_write_tokens": 0},
    ]


def test_read_new_survives_partial_lines_truncation_rotation_rewrites_and_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    got, state, more = usage.read_new(str(path), None, 1 << 20)
    assert got == [b'{"a":1}'] and state[0] == 8 and more is True  # the half line waits
    with path.open("ab") as f:
        f.write(b'2}\n{"c":3}\n')
    got, state, more = usage.read_new(str(path), state, 1 << 20)
    assert got == [b'{"b":2}', b'{"c":3}'] and state[0] == 24 and more is False
    got, state2, more = usage.read_new(str(path), state, 1 << 20)
    assert got == [] and state2 == state
    got, capped, more = usage.read_new(str(path), None, 10)  # the cap: whole lines only, the rest later
    assert got == [b'{"a":1}'] and more is True
    got, _, _ = usage.read_new(str(path), capped, 10)
    assert got == [b'{"b":2}']
    got, _, _ = usage.read_new(str(path), None, 3)  # one line longer than the cap is still read whole
    assert got == [b'{"a":1}']
    path.write_bytes(b'{"z":9}\n')  # truncated: shorter than the offset
    assert usage.read_new(str(path), state, 1 << 20)[0] == [b'{"z":9}']
    path.write_bytes(b'{"A":1}\n{"B":2}\n{"C":3}\n{"D":4}\n')  # rewritten in place, longer: other bytes
    assert usage.read_new(str(path), state, 1 << 20)[0][0] == b'{"A":1}'
    other = tmp_path / "u.jsonl"
    other.write_bytes(b'{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n')
    os.replace(other, path)  # rotated: another inode with the same name
    assert usage.read_new(str(path), state, 1 << 20)[0] == [b'{"a":1}', b'{"b":2}', b'{"c":3}', b'{"d":4}']


def test_cut_keeps_whole_responses_and_bounds_the_calls_per_invocation() -> None:
    reader = transcript.Reader(SID)
    reader.feed_all(line.rstrip(b"\n") for line in lines(MAIN))
    calls = reader.calls()
    assert [c.first_line for c in calls] == [2, 5, 8, 11, 13, 15, 17]
    assert usage.cut_at(calls, 18, False, 500) == 18  # the whole file was read: all of it
    assert usage.cut_at(calls, 18, True, 500) == 17  # more to come: the last response waits
    assert usage.cut_at(calls, 18, False, 3) == 11  # at most 3 calls: up to the 4th's first line
    assert usage.cut_at(calls[:1], 4, True, 500) == 2  # the lines before it are taken
    alone = transcript.Reader(SID)
    alone.feed_all(line.rstrip(b"\n") for line in lines(MAIN)[2:4])
    assert usage.cut_at(alone.calls(), 2, True, 500) == 2  # a response alone in the read: taken, progress


# ============================================================================ the hook


def home(tmp: Path) -> tuple[Path, Path, Path]:
    """A Claude Code config dir with the conversation's project dir: (config dir, main, subagent path)."""
    project = tmp / "claude" / "projects" / PROJECT
    (project / SID / "subagents").mkdir(parents=True)
    return tmp / "claude", project / f"{SID}.jsonl", project / SID / "subagents" / SUB.name


def hooked(name: str, main: Path, sub: Path) -> dict[str, Any]:
    payload = fixture(name)
    payload["transcript_path"] = str(main)
    if "agent_transcript_path" in payload:
        payload["agent_transcript_path"] = str(sub)
    return payload


def test_hooks_record_each_response_once_in_its_turn(daemon: Daemon) -> None:
    """The conversation as Claude Code runs it: the transcript grows, Stop/SubagentStop/PreCompact/
    SessionEnd read the new part. Each response is one llm_call, in its turn, before the event; the
    session then shows its tokens and cost in ls, show, replay and usage, and an import of the same
    transcript adds nothing."""
    config, main, sub = home(daemon.base)
    all_main = lines(MAIN)
    run_hook(daemon, hooked("session-start", main, sub))
    run_hook(daemon, hooked("user-prompt-submit", main, sub))
    main.write_bytes(b"".join(all_main[:TURN1]))
    run_hook(daemon, hooked("stop-1", main, sub))
    run_hook(daemon, hooked("user-prompt-submit-2", main, sub))
    main.write_bytes(b"".join(all_main[: TURN1 + 7]))  # up to the Task call
    sub.write_bytes(SUB.read_bytes())
    run_hook(daemon, hooked("subagent-stop", main, sub))
    main.write_bytes(b"".join(all_main))
    for name in ("stop-2", "pre-compact", "session-end"):
        res = run_hook(daemon, hooked(name, main, sub))
        assert res.stderr == ""
    sdir = session_dir(daemon)
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert [(r["phase"], r["payload"].get("event")) for r in records if r["phase"] in ("llm_call", "hook")] == [
        *[("llm_call", None)] * 3, ("hook", "Stop"),
        *[("llm_call", None)] * 2, ("hook", "SubagentStop"),
        *[("llm_call", None)] * 4, ("hook", "Stop"), ("hook", "PreCompact"),
    ]
    turn1 = [r for r in records if r.get("turn") == 1]
    turn2 = [r for r in records if r.get("turn") == 2]
    assert calls_of(turn1) == TURN1_CALLS
    assert calls_of(turn2) == SUB_CALLS + TURN2_CALLS
    assert {r["payload"].get("agent_id") for r in records if r["phase"] == "llm_call"} == {None, "a4f1c2e9"}
    assert all(r["client_seq"].startswith("transcript:") for r in records if r["phase"] == "llm_call")
    meta = wait_meta(sdir, lambda m: m.get("ended_at"))
    assert {k: meta["usage"][k] for k in TOTALS} == TOTALS
    assert meta["usage"]["llm_calls"] == 9 and meta["usage"]["cost_usd"] is None
    check_surfaces(daemon, SID)

    # the same transcript imported afterwards: nothing is added
    before = (sdir / "trace.jsonl").read_bytes()
    res = daemon.cli("import", "claude-code", "--json", env={"CLAUDE_CONFIG_DIR": str(config)}, check=True)
    assert json.loads(res.stdout)["unchanged"] == 1 and json.loads(res.stdout)["records"] == 0
    assert (sdir / "trace.jsonl").read_bytes() == before


def check_surfaces(d: Daemon, sid: str, tokens: dict[str, int] = TOTALS, cost: float = COST,
                   calls: int = 9) -> None:
    """The session's tokens and cost in ls, show, replay and usage (text and JSON)."""
    env = {"TZ": "UTC"}
    tin, tout = tokens["input_tokens"], tokens["output_tokens"]
    money = f"${cost:.4f}"
    ls = d.cli("ls", env=env, check=True).stdout
    row = next(line for line in ls.splitlines()[1:] if sid.startswith(line.split()[3]))  # a unique id prefix
    assert f"{tin:,}/{tout:,}" in row and row.rstrip().endswith(money), row
    show = d.cli("show", sid[:8], env=env, check=True).stdout
    assert f"{calls} llm calls, tokens {tin:,} in / {tout:,} out, cost {money}" in show
    replay = d.cli("replay", sid[:8], env=env, check=True).stdout
    assert f"Tokens: {tin:,} in / {tout:,} out | Cost: {money}" in replay
    report = json.loads(d.cli("usage", "--since", "3000d", "--json", env=env, check=True).stdout)
    total = report["total"]
    assert {k: total[k] for k in tokens} == tokens
    assert total["llm_calls"] == calls and total["cost_usd"] == pytest.approx(cost, abs=1e-9)
    assert total["unknown_cost_calls"] == 0


def test_appended_while_read_capped_resumed_and_rotated(daemon: Daemon) -> None:
    """Half a line waits for its end (and the response it may belong to with it); a small cap
    records the rest at the next events, never a response cut short by the cap; a resumed
    conversation that replays old lines, and a transcript replaced under the same name, add only
    the new responses."""
    _config, main, sub = home(daemon.base)
    all_main = lines(MAIN)
    stop = hooked("stop-1", main, sub)
    del stop["last_assistant_message"]  # as older Claude Code versions send it (see the next test)
    run_hook(daemon, hooked("user-prompt-submit", main, sub))
    half = len(all_main[3]) // 2
    main.write_bytes(b"".join(all_main[:3]) + all_main[3][:half])  # msg A's second line, half written
    run_hook(daemon, stop)
    trace = session_dir(daemon) / "trace.jsonl"
    # msg A waits: the half line may be its own, with its final usage (and it is)
    assert calls_of(read_trace(trace)) == []
    with main.open("ab") as f:
        f.write(all_main[3][half:])
    run_hook(daemon, stop)
    assert calls_of(read_trace(trace)) == [TURN1_CALLS[0]]
    run_hook(daemon, stop)
    assert calls_of(read_trace(trace)) == [TURN1_CALLS[0]]

    with main.open("ab") as f:
        f.write(b"".join(all_main[4:]))
    env = {"TRACED_TRANSCRIPT_CAP": "3000"}  # about two lines per invocation
    counts = []
    for _ in range(8):
        run_hook(daemon, stop, env)
        counts.append(len(calls_of(read_trace(trace))))
    assert counts[0] < 7 and counts == sorted(counts) and counts[-1] == 7
    assert calls_of(read_trace(trace)) == TURN1_CALLS + TURN2_CALLS  # each with its final usage

    # resumed (claude --resume): old lines replayed after the end, then one new response
    new = json.loads(all_main[-1])
    new["message"] = {**new["message"], "id": "msg_01H9NewAfterResume0000000", "usage": {
        **new["message"]["usage"], "input_tokens": 11, "output_tokens": 77}}
    new["requestId"] = "req_011CUJqHNewAfterResume000"
    with main.open("ab") as f:
        f.write(b"".join(all_main[2:6]) + json.dumps(new, separators=(",", ":")).encode() + b"\n")
    run_hook(daemon, stop)
    got = calls_of(read_trace(trace))
    assert len(got) == 8 and got[-1] == ("msg_01H9NewAfterResume0000000", 11, 77, 20830, 1502)
    # rotated: a new file under the same name, read from its start; the daemon drops what it has
    rotated = main.with_suffix(".tmp")
    rotated.write_bytes(main.read_bytes())
    os.replace(rotated, main)
    run_hook(daemon, stop)
    assert len(calls_of(read_trace(trace))) == 8
    assert_gap_free(read_trace(trace))


def test_stop_before_claude_code_wrote_the_final_message(daemon: Daemon) -> None:
    """Claude Code may run Stop hooks before it has written the turn's last lines
    (anthropics/claude-code#15813, #40655): while the transcript lacks the event's
    ``last_assistant_message``, the response it ends with may be incomplete, so it waits for the
    next event; the responses before it are recorded."""
    _config, main, sub = home(daemon.base)
    all_main = lines(MAIN)
    stop = hooked("stop-1", main, sub)
    run_hook(daemon, hooked("user-prompt-submit", main, sub))
    main.write_bytes(b"".join(all_main[:3]))  # msg A's first line only (output_tokens 3 so far)
    run_hook(daemon, stop)
    trace = session_dir(daemon) / "trace.jsonl"
    assert calls_of(read_trace(trace)) == []
    main.write_bytes(b"".join(all_main[:8]))  # A and B with their tool results; C not yet
    run_hook(daemon, stop)
    assert calls_of(read_trace(trace)) == TURN1_CALLS[:2]
    main.write_bytes(b"".join(all_main[:TURN1]))
    run_hook(daemon, stop)
    records = read_trace(trace)
    assert calls_of(records) == TURN1_CALLS and {r["turn"] for r in records if r["phase"] == "llm_call"} == {1}


def test_hook_reading_the_transcript_stays_light(daemon: Daemon) -> None:
    """Stop with a real transcript: no msgspec, argparse, typing, pathlib, dataclasses… on the path."""
    _config, main, sub = home(daemon.base)
    main.write_bytes(MAIN.read_bytes())
    code = (
        "import sys\n"
        "from traced.cli.main import main\n"
        "sys.argv = ['traced', 'hook', 'claude-code']\n"
        "main()\n"
        "heavy = ['argparse', 'msgspec', 'typing', 'anyio', 'pathlib', 'dataclasses', 'hashlib', 'rich',\n"
        "         'genai_prices', 'traced.read.sessions', 'traced.daemon.handler']\n"
        "print([m for m in heavy if m in sys.modules], file=sys.__stderr__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(hooked("stop-2", main, sub)),
                         env=daemon.env, capture_output=True, text=True, timeout=60, cwd=REPO)
    # the hook points its stdout at stderr while it runs (an agent reads stdout): the pin is there
    assert res.returncode == 0 and res.stdout == "", res.stdout
    assert res.stderr.strip() == "[]"
    assert len(calls_of(read_trace(session_dir(daemon) / "trace.jsonl"))) == 7


# ============================================================================ import


def test_import_claude_code_twice_adds_nothing(daemon: Daemon) -> None:
    config, main, sub = home(daemon.base)
    shutil.copyfile(MAIN, main)
    shutil.copyfile(SUB, sub)
    old = 1_700_000_000  # written long ago: the conversation is over, the session is ended
    for path in (main, sub):
        os.utime(path, (old, old))
    env = {"CLAUDE_CONFIG_DIR": str(config)}
    res = daemon.cli("import", "claude-code", env=env, check=True)
    assert res.stdout == "1 sessions found: 1 new, 0 updated, 0 unchanged, 0 failed; 23 records (9 LLM calls) sent\n"
    assert res.stderr == "traced import: 1/1 sessions\n"
    sdir = session_dir(daemon)
    assert sdir.parent.parent.name == "2025-10-20"  # the transcript's start date
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert records[0]["ts"] == "2025-10-20T09:14:02.118000Z" and records[-1]["ts"] == "2025-10-20T09:21:12.004000Z"
    assert records[0]["payload"] == {"input": {"source": "import"}, "cwd": "/home/dev/src/webapp"}
    assert [r["phase"] for r in records].count("user_prompt") == 2 and records[-1]["phase"] == "end"
    assert calls_of(records) == TURN1_CALLS + TURN2_CALLS[:3] + SUB_CALLS + TURN2_CALLS[3:]  # by time
    calls = {r["payload"]["call_id"] for r in records if r["phase"] == "tool_call"}
    assert calls == {r["payload"]["call_id"] for r in records if r["phase"] == "tool_result"} and len(calls) == 6
    meta = json.loads((sdir / "meta.json").read_text())
    assert meta["outcome"] == "success" and meta["turns"] == 2 and meta["tool_calls"] == 6 and meta["errors"] == 1
    assert meta["labels"] == {"transcript_path": str(main), "agent_version": "2.0.21"}
    check_surfaces(daemon, SID)
    before = (sdir / "trace.jsonl").read_bytes()
    res = daemon.cli("import", "claude-code", str(main.parent), env=env, check=True)
    assert res.stdout.startswith("1 sessions found: 0 new, 0 updated, 1 unchanged, 0 failed; 0 records")
    assert (sdir / "trace.jsonl").read_bytes() == before


def test_import_after_hooks_adds_only_the_calls_they_missed(daemon: Daemon) -> None:
    """The hooks recorded the first turn and the end, not the responses written after the last
    Stop: the import adds those calls, as late records of the ended session, and nothing else."""
    config, main, sub = home(daemon.base)
    all_main = lines(MAIN)
    run_hook(daemon, hooked("user-prompt-submit", main, sub))
    main.write_bytes(b"".join(all_main[:TURN1]))
    run_hook(daemon, hooked("stop-1", main, sub))
    run_hook(daemon, hooked("session-end", main, sub))
    main.write_bytes(b"".join(all_main))  # the rest, e.g. written by a later resumed run of the agent
    sub.write_bytes(SUB.read_bytes())
    for path in (main, sub):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    sdir = session_dir(daemon)
    before = read_trace(sdir / "trace.jsonl")
    res = daemon.cli("import", "claude-code", "--json", env={"CLAUDE_CONFIG_DIR": str(config)})
    assert json.loads(res.stdout) == {"found": 1, "new": 0, "updated": 1, "unchanged": 0, "failed": 0,
                                      "records": 6, "llm_calls": 6, "spooled": False, "errors": []}
    records = read_trace(sdir / "trace.jsonl")
    assert records[: len(before)] == before and before[-1]["phase"] == "end"
    added = records[len(before):]
    assert [r["phase"] for r in added] == ["llm_call"] * 6 and all(r["late"] is True for r in added)
    assert calls_of(added) == TURN2_CALLS[:3] + SUB_CALLS + TURN2_CALLS[3:]
    meta = json.loads((sdir / "meta.json").read_text())
    assert meta["outcome"] == "success" and [r["phase"] for r in records].count("end") == 1
    assert {k: meta["usage"][k] for k in TOTALS} == TOTALS and meta["usage"]["llm_calls"] == 9
    res = daemon.cli("import", "claude-code", "--json", env={"CLAUDE_CONFIG_DIR": str(config)}, check=True)
    assert json.loads(res.stdout)["unchanged"] == 1 and read_trace(sdir / "trace.jsonl") == records


def test_import_of_a_live_conversation_leaves_it_to_the_hooks(daemon: Daemon) -> None:
    """A transcript written to just now: the session stays open, and a response the transcript
    ends with (maybe half-written) is left to the hook, which counts it whole at its next event."""
    config, main, sub = home(daemon.base)
    all_main = lines(MAIN)
    main.write_bytes(b"".join(all_main[:3]))  # the prompt, then msg A's first line (output_tokens 3 so far)
    res = daemon.cli("import", "claude-code", "--json", env={"CLAUDE_CONFIG_DIR": str(config)}, check=True)
    assert json.loads(res.stdout)["new"] == 1 and json.loads(res.stdout)["llm_calls"] == 0
    trace = session_dir(daemon) / "trace.jsonl"
    assert [r["phase"] for r in read_trace(trace)] == ["start", "user_prompt"]  # no end: still going
    main.write_bytes(b"".join(all_main[:TURN1]))
    run_hook(daemon, hooked("stop-1", main, sub))
    records = read_trace(trace)
    assert calls_of(records) == TURN1_CALLS and records[-1]["payload"]["event"] == "Stop"
    assert [r["phase"] for r in records].count("start") == 1


def test_find_reads_subagents_of_both_layouts_with_their_session(tmp_path: Path) -> None:
    """Subagent transcripts: ``<session>/subagents/agent-<id>.jsonl``, or (older Claude Code)
    ``agent-<id>.jsonl`` in the project dir, which only its lines tie to a session."""
    from traced.integrations import importer

    project = tmp_path / "projects" / PROJECT
    project.mkdir(parents=True)
    shutil.copyfile(MAIN, project / MAIN.name)
    shutil.copyfile(SUB, project / "agent-a4f1c2e9.jsonl")
    other = SUB.read_bytes().replace(SID.encode(), b"0b9d7a51-2f64-4c1e-8a3b-6d5c4e3f2a10")
    (project / "agent-b7c8d9e0.jsonl").write_bytes(other)  # another session's, not here
    for path in project.iterdir():
        os.utime(path, (1_700_000_000, 1_700_000_000))  # a past conversation
    [source] = importer.find("claude-code", [tmp_path])
    assert source.session_id == SID and source.subagents == [(project / "agent-a4f1c2e9.jsonl", "a4f1c2e9")]
    loaded = importer.load(source)
    calls = [i.payload for i in loaded.items if i.phase == "llm_call"]
    assert len(calls) == 9 and [c.get("agent_id") for c in calls].count("a4f1c2e9") == 2
    assert sum(c["usage"]["output_tokens"] for c in calls) == TOTALS["output_tokens"]


def test_import_codex_through_the_spool_then_again(daemon_factory: Any) -> None:
    """With the daemon away the import spools; the daemon ingests it; a second import adds nothing."""
    d: Daemon = daemon_factory(start=False)
    codex = d.base / "codex"
    target = codex / "sessions" / "2025" / "10" / "21" / ROLLOUT.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(ROLLOUT, target)
    os.utime(target, (1_700_000_000, 1_700_000_000))
    env = {"CODEX_HOME": str(codex), "TRACED_SPOOL_AFTER": "0.1"}
    res = d.cli("import", "codex", "--json", env=env, check=True)
    assert json.loads(res.stdout)["spooled"] is True and json.loads(res.stdout)["new"] == 1
    d.start()
    sdir = wait_meta_dir(d, "codex", CODEX_SID)
    meta = wait_meta(sdir, lambda m: m.get("ended_at"))
    assert meta["usage"]["input_tokens"] == 3216 and meta["usage"]["output_tokens"] == 801
    assert meta["usage"]["cache_read_tokens"] == 23296 and meta["usage"]["llm_calls"] == 3
    tokens = {"input_tokens": 3216, "output_tokens": 801, "cache_read_tokens": 23296, "cache_write_tokens": 0}
    check_surfaces(d, CODEX_SID, tokens, 0.014942, 3)  # gpt-5-codex: $1.25 in, $0.125 cached, $10 out per MTok
    before = (sdir / "trace.jsonl").read_bytes()
    res = d.cli("import", "codex", "--json", env=env, check=True)
    assert json.loads(res.stdout)["unchanged"] == 1
    assert (sdir / "trace.jsonl").read_bytes() == before


def wait_meta_dir(d: Daemon, skill: str, sid: str) -> Path:
    from tests.conftest import wait_for

    found: list[Path] = wait_for(lambda: list(d.root.glob(f"*/{skill}/{sid}")) if d.root.exists() else [],
                                 what=lambda: f"the session to appear; daemon log:\n{d.log.read_text()}")
    return found[0]


def test_the_daemon_away_at_the_end_of_a_turn_loses_no_call_and_no_turn(daemon: Daemon) -> None:
    """The daemon is away from turn 1's Stop to SessionEnd: the hook spools the transcript's calls
    (client ``transcript``) before its own events; replayed in the order they were sealed, every
    call lands, in its turn, before the session's end (not refused as closed, not after it)."""
    _config, main, sub = home(daemon.base)
    all_main = lines(MAIN)
    run_hook(daemon, hooked("session-start", main, sub))
    daemon.stop()
    run_hook(daemon, hooked("user-prompt-submit", main, sub))
    main.write_bytes(b"".join(all_main[:TURN1]))
    run_hook(daemon, hooked("stop-1", main, sub))
    run_hook(daemon, hooked("user-prompt-submit-2", main, sub))
    main.write_bytes(b"".join(all_main))
    sub.write_bytes(SUB.read_bytes())
    for name in ("stop-2", "session-end"):
        run_hook(daemon, hooked(name, main, sub))
    daemon.start()
    sdir = session_dir(daemon)
    meta = wait_meta(sdir, lambda m: m.get("ended_at") and m["usage"]["llm_calls"] == 9)
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert records[-1]["phase"] == "end" and not any(r.get("late") for r in records)
    assert calls_of([r for r in records if r.get("turn") == 1]) == TURN1_CALLS
    assert sorted(calls_of([r for r in records if r.get("turn") == 2])) == sorted(SUB_CALLS + TURN2_CALLS)
    assert {k: meta["usage"][k] for k in TOTALS} == TOTALS


def test_import_names_a_file_that_is_no_transcript_as_failed(daemon: Daemon) -> None:
    """A .jsonl of garbage, or of another format, is a failure named on stderr, not "unchanged";
    the good transcript beside it is imported all the same."""
    config, main, sub = home(daemon.base)
    shutil.copyfile(MAIN, main)
    shutil.copyfile(SUB, sub)
    bad = main.parent / "0badf11e-0000-4000-8000-000000000000.jsonl"
    bad.write_bytes(b"\x00\xff\xfe garbage\nnot json either\n[1, 2, 3]\n")
    for path in (main, sub, bad):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    res = daemon.cli("import", "claude-code", env={"CLAUDE_CONFIG_DIR": str(config)})
    assert res.stdout.startswith("2 sessions found: 1 new, 0 updated, 0 unchanged, 1 failed;"), res.stdout
    assert f"{bad}: no transcript records: 3 lines unreadable" in res.stderr
