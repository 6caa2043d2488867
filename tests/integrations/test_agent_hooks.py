"""``traced hook codex|gemini`` and Claude Code's newer events: real daemon, one process per hook event.

The fixtures (tests/fixtures/codex, gemini, claude_code_events) are one conversation each, one
hook payload per file in the order the agent fires them, written from the agents' documented
input formats (Codex: codex-rs/hooks ``*.command.input`` schemas; Gemini CLI:
docs/hooks/reference.md and packages/core/src/hooks/types.ts; Claude Code: the hooks reference).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced.integrations.hooks import core, run
from traced.integrations.hooks.gemini import AGENT as GEMINI

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def conversation(folder: str) -> list[tuple[str, str]]:
    return [(p.name, p.read_text()) for p in sorted((FIXTURES / folder).glob("*.json"))]


def fixture(folder: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(next((FIXTURES / folder).glob(f"*-{name}.json")).read_text())
    return data


def hook(d: Daemon, agent: str, payload: str | bytes | dict[str, Any], env: dict[str, str] | None = None,
         *args: str) -> subprocess.CompletedProcess[bytes]:
    """One hook process, as the agent runs it; the contract holds every time: exit 0, stdout empty."""
    data = payload if isinstance(payload, bytes) else (
        payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8", "surrogatepass")
    res = subprocess.run([sys.executable, "-m", "traced", "hook", agent, *args], input=data,
                         env={**d.env, **(env or {})}, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"", f"a hook must print nothing on stdout, got {res.stdout!r}"
    return res


def session_dir(d: Daemon, skill: str, sid: str) -> Path:
    found = sorted(d.root.glob(f"*/{skill}/{sid}"))
    assert len(found) == 1, f"expected one session dir for {sid}, found {found}"
    return found[0]


def record_all(d: Daemon, agent: str, folder: str, env: dict[str, str] | None = None) -> None:
    for name, text in conversation(folder):
        res = hook(d, agent, text, env)
        assert res.stderr == b"", f"{name}: {res.stderr!r}"


# ============================================================================ Codex

CODEX_SID = "019a3c5e-7b21-7d40-9f3e-2c8d1a6b4e90"


def check_codex(sdir: Path) -> None:
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == [
        "start", "user_prompt", "tool_call", "tool_result", "tool_call", "tool_result", "tool_call", "tool_result",
        "hook", "hook"]
    assert {r["skill"] for r in records} == {"codex"}
    assert [r.get("turn") for r in records] == [None] + [1] * 9
    p = [r["payload"] for r in records]
    assert p[0] == {"input": {"source": "startup"}, "cwd": "/home/dev/src/parser"}
    assert p[1] == {"prompt": "The tokenizer test fails on nested quotes; find out why and fix it."}
    assert p[2] == {"tool": "Bash", "args": {"command": "cargo test -p parser tokenizer"},
                    "call_id": "call_Xq41mR8vNn2TzL0pWb7eKd3s", "kind": "tool"}
    bash = p[3]
    assert (bash["tool"], bash["ok"], bash["call_id"]) == ("Bash", True, "call_Xq41mR8vNn2TzL0pWb7eKd3s")
    assert bash["result_summary"] == ("running 4 tests test tokenizer::nested_quotes ... FAILED failures: "
                                      "tokenizer::nested_quotes test result: FAILED. 3 passed; 1 failed; 0 ignored")
    assert bash["response"] == fixture("codex", "post-tool-use-bash")["tool_response"]
    assert p[4]["tool"] == "apply_patch" and p[4]["args"]["command"].startswith("*** Begin Patch")
    assert p[5]["result_summary"] == "Success. Updated the following files: M src/tokenizer.rs"
    assert (p[6]["tool"], p[6]["kind"], p[6]["server"]) == ("create_issue", "mcp", "linear")
    mcp = p[7]
    assert (mcp["ok"], mcp["error"], mcp["server"]) == (False, "Team PARSE not found", "linear")
    for result in (p[3], p[5], p[7]):  # Codex reports no duration: the call clock's
        assert isinstance(result["duration_ms"], float) and 0 <= result["duration_ms"] < 60_000
    assert p[8] == {"event": "Stop", "stop_hook_active": False,
                    "last_assistant_message": "Fixed: the string reader stopped at an inner quote. Tests pass."}
    assert p[9] == {"event": "StopFailure", "name": "rate_limit", "error": "rate_limit",
                    "error_details": "429 Too Many Requests"}
    assert [x["ok"] for x in (p[3], p[5], p[7])] == [True, True, False]
    meta = json.loads((sdir / "meta.json").read_text())  # written at open: counters come at the end
    assert meta["labels"] == {"transcript_path": fixture("codex", "session-start")["transcript_path"],
                              "permission_mode": "default", "model": "gpt-5.1-codex"}
    assert "ended_at" not in meta  # Codex has no SessionEnd: the idle timeout ends it


def test_codex_conversation(daemon: Daemon) -> None:
    record_all(daemon, "codex", "codex")
    check_codex(session_dir(daemon, "codex", CODEX_SID))
    # every call clock was taken (the hidden files are the delivery marks)
    left = [p.name for p in (daemon.state / "traced" / "hooks" / CODEX_SID).iterdir() if not p.name.startswith(".")]
    assert left == []


# ============================================================================ Gemini CLI

GEMINI_SID = "8c2f4a1e-3b5d-4e6f-9a7b-1c2d3e4f5a6b"


def check_gemini(sdir: Path) -> None:
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == [
        "start", "user_prompt", "llm_call", "tool_call", "tool_result", "tool_call", "tool_result", "tool_call",
        "tool_result", "llm_call", "hook", "hook", "hook", "end"]
    assert {r["skill"] for r in records} == {"gemini"}
    p = [r["payload"] for r in records]
    assert p[1] == {"prompt": "Why does `npm test` fail in the cart module?"}
    # one llm_call per response, on its last chunk; traced's input_tokens excludes the cached ones
    first, second = p[2], p[9]
    assert {k: v for k, v in first.items() if k != "latency_ms"} == {
        "provider": "google", "model": "gemini-2.5-pro", "finish_reason": "STOP",
        "usage": {"input_tokens": 12873 - 8192, "output_tokens": 211 + 96, "cache_read_tokens": 8192,
                  "cache_write_tokens": 0}}
    assert second["usage"] == {"input_tokens": 13402, "output_tokens": 58, "cache_read_tokens": 0,
                               "cache_write_tokens": 0}
    for call in (first, second):  # BeforeModel started the clock
        assert isinstance(call["latency_ms"], float) and 0 <= call["latency_ms"] < 60_000
    calls = [x for r, x in zip(records, p, strict=True) if r["phase"] == "tool_call"]
    results = [x for r, x in zip(records, p, strict=True) if r["phase"] == "tool_result"]
    # Gemini CLI sends no call id: the clock made one up at BeforeTool and AfterTool adopted it
    assert [c["call_id"] for c in calls] == [r["call_id"] for r in results]
    assert len({c["call_id"] for c in calls}) == 3 and all(c["call_id"].startswith("t") for c in calls)
    assert [(c["tool"], c["kind"], c.get("server")) for c in calls] == [
        ("run_shell_command", "tool", None), ("read_file", "tool", None), ("list_issues", "mcp", "github")]
    shell, read, mcp = results
    assert shell["ok"] is True and shell["result_summary"].startswith("Command: npm test -- cart Directory: (root)")
    assert shell["result_summary"].endswith("Exit Code: 1")
    assert (read["ok"], read["error"]) == (False, "File not found: /home/dev/src/shop/src/cart/discount.ts")
    assert (mcp["ok"], mcp["server"]) == (True, "github")
    assert mcp["result_summary"] == "#88 Discount applied twice at checkout"
    for r in results:
        assert isinstance(r["duration_ms"], float) and 0 <= r["duration_ms"] < 60_000
    hooks = [x for r, x in zip(records, p, strict=True) if r["phase"] == "hook"]
    assert [(h["event"], h.get("name")) for h in hooks] == [
        ("AfterAgent", None), ("Notification", "ToolPermission"), ("PreCompress", "manual")]
    assert hooks[0]["prompt_response"] == "total() calls applyDiscount() twice; see #88."
    assert not {"timestamp", "transcript_path", "session_id", "cwd"} & set(hooks[1])
    assert p[-1] == {"outcome": "success", "summary": "exit"}
    meta = json.loads((sdir / "meta.json").read_text())
    assert (meta["tool_calls"], meta["errors"], meta["outcome"]) == (3, 1, "success")
    assert meta["usage"] == {"input_tokens": 4681 + 13402, "output_tokens": 307 + 58, "cache_read_tokens": 8192,
                             "cache_write_tokens": 0, "cost_usd": None, "llm_calls": 2, "unknown_cost_calls": 2}


def test_gemini_conversation(daemon: Daemon) -> None:
    record_all(daemon, "gemini", "gemini")
    sdir = session_dir(daemon, "gemini", GEMINI_SID)
    check_gemini(sdir)
    assert not (daemon.state / "traced" / "hooks" / GEMINI_SID).exists()  # SessionEnd dropped the clocks
    # the tokens reach `traced usage`, priced like any other llm_call
    usage = json.loads(daemon.cli("usage", "--by", "model", "--json", check=True).stdout)
    [row] = usage["rows"]
    assert row["unknown_cost_calls"] == 0 and row["cost_usd"] > 0  # the model is in the price table
    assert (row["key"], row["llm_calls"], row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (
        "gemini-2.5-pro", 2, 4681 + 13402, 365, 8192)


def test_gemini_through_the_spool(daemon_factory: Any) -> None:
    """Daemon away (and no SessionStart ever came): each event is spooled within the budget, with
    its open first, and lands paired and timed as it would live."""
    d: Daemon = daemon_factory(start=False)
    env = {"TRACED_SPOOL_AFTER": "0.1"}
    for name in ("before-model", "after-model-final", "before-tool-read", "after-tool-read-error", "session-end"):
        started = time.monotonic()
        res = hook(d, "gemini", fixture("gemini", name), env)
        assert res.stderr == b"", f"{name}: {res.stderr!r}"
        assert time.monotonic() - started < 10
    d.start()
    found: list[Path] = wait_for(lambda: sorted(d.root.glob(f"*/gemini/{GEMINI_SID}")) if d.root.exists() else [],
                                 what="the spooled session to land")
    wait_for(lambda: json.loads((found[0] / "meta.json").read_text()).get("ended_at"), what="its end")
    records = read_trace(found[0] / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == ["start", "llm_call", "tool_call", "tool_result", "end"]
    p = [r["payload"] for r in records]
    assert p[0]["input"] == {"source": "mid_session", "event": "AfterModel"}
    assert p[1]["usage"]["input_tokens"] == 4681 and p[1]["latency_ms"] >= 0
    assert p[3]["call_id"] == p[2]["call_id"] and p[3]["ok"] is False and p[3]["duration_ms"] >= 0
    assert p[4] == {"outcome": "success", "summary": "exit"}


def test_gemini_chunks_and_model_starts_open_no_connection(daemon_factory: Any) -> None:
    """A streamed chunk before the last and a BeforeModel record nothing: no daemon, no spool."""
    d: Daemon = daemon_factory(start=False)
    for name in ("before-model", "after-model-chunk"):
        started = time.monotonic()
        hook(d, "gemini", fixture("gemini", name), {"TRACED_SPOOL_AFTER": "5"})
        assert time.monotonic() - started < 5  # it did not wait for the daemon
    assert not (d.state / "traced" / "spool").exists() or not list((d.state / "traced" / "spool").iterdir())


def test_gemini_usage_mapping_sans_io() -> None:
    """promptTokenCount includes the cached and tool-use prompt tokens; thinking is output."""
    base = {"session_id": "s", "hook_event_name": "AfterModel", "llm_request": {"model": "gemini-2.5-flash"}}
    meta = {"promptTokenCount": 1000, "cachedContentTokenCount": 1200, "toolUsePromptTokenCount": 300,
            "candidatesTokenCount": 40, "thoughtsTokenCount": 5}
    hook_in = {**base, "llm_response": {"candidates": [{"finishReason": "MAX_TOKENS"}], "usageMetadata": meta}}
    [(phase, payload)] = core.translate(hook_in, GEMINI, core.Options(), 1.0).records
    assert phase == "llm_call"
    assert payload == {"provider": "google", "model": "gemini-2.5-flash", "finish_reason": "MAX_TOKENS",
                       "usage": {"input_tokens": 100, "output_tokens": 45, "cache_read_tokens": 1200,
                                 "cache_write_tokens": 0}}
    odd = {**base, "llm_response": {"candidates": [{"finishReason": "STOP"}],
                                    "usageMetadata": {"promptTokenCount": "12", "candidatesTokenCount": -3}}}
    [(_, payload)] = core.translate(odd, GEMINI, core.Options(), 1.0).records
    assert payload["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0}
    for response in (None, "text", {"candidates": "x"}, {"candidates": [{"content": {}}]}, {"candidates": []}):
        plan = core.translate({**base, "llm_response": response}, GEMINI, core.Options(), 1.0)
        assert plan.records == [] and plan.idle and not plan.take, response


# ============================================================================ Claude Code's newer events

CLAUDE_SID = "b7e3d9a1-4c2f-4a8e-8d61-0f9e8c7b6a54"


def test_claude_code_newer_events(daemon: Daemon) -> None:
    record_all(daemon, "claude-code", "claude_code_events")
    sdir = session_dir(daemon, "claude-code", CLAUDE_SID)
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == [
        "start", "hook", "user_prompt", "hook", "tool_call", "tool_result", "tool_call", "tool_result", "tool_call",
        "tool_result", "hook", "hook", "hook", "hook", "hook", "end"]
    p = [r["payload"] for r in records]
    assert (p[1]["event"], p[1]["name"], p[1]["command_args"]) == ("UserPromptExpansion", "deploy-check", "staging")
    assert (p[3]["event"], p[3]["name"], p[3]["task_id"]) == ("TaskCreated", "Run terraform plan for staging", "1")
    # Claude Code's own duration_ms wins over traced's clock (which counts permission prompts too)
    assert (p[5]["ok"], p[5]["duration_ms"], p[5]["result_summary"]) == (
        True, 41873, "Plan: 0 to add, 1 to change, 0 to destroy.")
    # a denied call will never get a result: it is closed as denied, paired with its call
    denied = p[7]
    assert denied["call_id"] == p[6]["call_id"] == "toolu_01ApQ8sV2nXe5RtY7uJm1LoB"
    assert {k: v for k, v in denied.items() if k != "duration_ms"} == {
        "tool": "Bash", "ok": False, "call_id": "toolu_01ApQ8sV2nXe5RtY7uJm1LoB", "kind": "tool", "denied": True,
        "error": "permission denied: Auto mode classifier: applying infrastructure changes needs your approval"}
    assert isinstance(denied["duration_ms"], float) and denied["duration_ms"] >= 0  # the clock: no figure given
    assert (p[9]["ok"], p[9]["duration_ms"], p[9]["error"]) == (False, 612, "Exit code 3 envs/staging/main.tf")
    assert [(h["event"], h.get("name")) for h in (p[10], p[11], p[12], p[13], p[14])] == [
        ("TaskCompleted", "Run terraform plan for staging"), ("Notification", "permission_prompt"),
        ("StopFailure", "rate_limit"), ("PreCompact", "auto"), ("PostCompact", "auto")]
    assert p[12]["error_details"].startswith("429 rate_limit_error")
    assert p[14]["compact_summary"].startswith("Checked staging")
    assert p[-1] == {"outcome": "success", "summary": "logout"}
    meta = json.loads((sdir / "meta.json").read_text())
    assert (meta["tool_calls"], meta["errors"]) == (3, 2)
    assert meta["labels"]["permission_mode"] == "auto" and meta["labels"]["model"] == "claude-opus-4-5"


def test_on_stop_hook_point_runs_at_the_end_of_a_turn(daemon: Daemon) -> None:
    """``Agent.on_stop`` runs for a stop event before the event is sent, on a client of its own,
    with the hook, the time it may use and the session opener; what it raises costs only itself."""
    from traced.client.shell import ShellClient
    from traced.integrations.hooks.claude_code import AGENT

    seen: list[str] = []

    def on_stop(hook_in: dict[str, Any], plan: core.Plan, socket_path: str | None, deadline: float,
                opener: Any) -> None:
        seen.append(plan.event)
        assert hook_in["transcript_path"].endswith(f"{CLAUDE_SID}.jsonl") and hook_in is plan.hook
        assert 0 < deadline - time.monotonic() < 1
        if plan.event == "Stop":
            raise RuntimeError("transcript gone")
        with ShellClient(socket_path, name="test-on-stop", deadline=deadline) as client:
            opener(client, plan)
            client.emit(plan.session_id, "note", {"message": f"before {plan.event}"}, ts=plan.ts, late=plan.late)

    opts = run.options_from()
    AGENT.on_stop = on_stop
    stop = {**fixture("claude_code_events", "pre-compact"), "hook_event_name": "Stop", "stop_hook_active": False}
    try:
        for payload in (fixture("claude_code_events", "session-start"), fixture("claude_code_events", "pre-compact"),
                        stop, fixture("claude_code_events", "session-end")):
            run.run(json.dumps(payload), AGENT, opts, str(daemon.socket))
    finally:
        AGENT.on_stop = None
    assert seen == ["PreCompact", "Stop", "SessionEnd"]
    records = read_trace(session_dir(daemon, "claude-code", CLAUDE_SID) / "trace.jsonl")
    assert [(r["phase"], r["payload"].get("message") or r["payload"].get("event")) for r in records] == [
        ("start", None), ("note", "before PreCompact"), ("hook", "PreCompact"), ("hook", "Stop"),
        ("note", "before SessionEnd"), ("end", None)]


def test_on_stop_may_name_its_function() -> None:
    """A ``"module:function"`` hook point is imported only when a stop event comes."""
    plan = core.translate({"session_id": "s", "hook_event_name": "Stop"}, GEMINI, core.Options(), 1.0)
    calls: list[tuple[Any, ...]] = []
    sys.modules[__name__].__dict__["_recorded_stop"] = lambda *a: calls.append(a)
    run.stop_hook(f"{__name__}:_recorded_stop", {"x": 1}, plan, "/nowhere", 5.0)
    assert len(calls) == 1 and calls[0][:4] == ({"x": 1}, plan, "/nowhere", 5.0) and callable(calls[0][4])


# ============================================================================ the contract, for every agent


ODD_INPUTS: list[bytes] = [
    b"", b"not json at all", b"[1, 2, 3]", b"\x00\x01garbage\xff", b'{"hook_event_name": "Stop"}',
    b'{"session_id": "../../etc/passwd", "hook_event_name": "BeforeTool", "tool_name": "x"}',
    b'{"session_id": 42, "hook_event_name": "AfterModel"}', b'{"session_id": "s-1"}', b'"just a string"',
    b"{" * 100_000,  # deep nesting, truncated
]


@pytest.mark.parametrize("agent", ["claude-code", "codex", "gemini"])
def test_odd_stdin_never_blocks_and_prints_nothing(daemon: Daemon, agent: str) -> None:
    """Empty, not JSON, not an object, invalid UTF-8, no event, a bad session id, truncated deep
    nesting: exit 0, stdout exactly empty (Gemini CLI parses it as JSON), one stderr line, nothing
    recorded. Run at once, as an agent fires parallel hooks."""
    procs = []
    for data in ODD_INPUTS:
        proc = subprocess.Popen([sys.executable, "-m", "traced", "hook", agent], env=daemon.env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((data, proc))
    for data, proc in procs:
        out, err = proc.communicate(data, timeout=60)
        assert proc.returncode == 0 and out == b"", (data[:40], out, err)
        lines = err.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("traced hook: "), (data[:40], err)
    assert [p.name for p in daemon.root.iterdir()] == [".traced-daemon.lock"]


@pytest.mark.parametrize("agent", ["codex", "gemini"])
def test_unknown_events_huge_and_invalid_utf8_payloads_are_recorded(daemon: Daemon, agent: str) -> None:
    """An event the table does not know is a hook record; invalid UTF-8 becomes U+FFFD; a 9 MiB field
    (over the daemon's frame limit) is cut to a marker, the record stays."""
    sid = f"{agent}-odd-1"
    start = {"session_id": sid, "hook_event_name": "SessionStart", "source": "startup", "cwd": "/tmp"}
    hook(daemon, agent, start)
    hook(daemon, agent, json.dumps({"session_id": sid, "hook_event_name": "SomethingNew2027", "detail": "caf@"})
         .encode().replace(b"caf@", b"caf\xe9"))
    big = {"session_id": sid, "hook_event_name": "Notification", "message": "y" * (9 * 1024 * 1024)}
    hook(daemon, agent, big)
    records = read_trace(session_dir(daemon, agent, sid) / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "hook", "hook"]
    assert records[1]["payload"] == {"event": "SomethingNew2027", "detail": "caf\ufffd"}
    assert records[2]["payload"]["message"] == {"$omitted": "too_large", "bytes": 9 * 1024 * 1024 + 5}


def test_stdin_left_open_does_not_hang_a_gemini_hook(daemon: Daemon) -> None:
    """An agent may write the object and keep the pipe open: the hook reads one value and goes."""
    proc = subprocess.Popen([sys.executable, "-m", "traced", "hook", "gemini"], env=daemon.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(fixture("gemini", "session-start")).encode())
    proc.stdin.flush()
    try:
        assert proc.wait(30) == 0
    finally:
        proc.stdin.close()
    assert proc.stdout is not None and proc.stdout.read() == b""
    session_dir(daemon, "gemini", GEMINI_SID)


def test_wedged_daemon_costs_each_agent_at_most_its_budget(daemon: Daemon) -> None:
    """A daemon that accepts but never answers (SIGSTOP): each hook spools within its budget."""
    import os
    import signal

    hook(daemon, "gemini", fixture("gemini", "session-start"))
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        for agent, payload in (("gemini", fixture("gemini", "session-end")),
                               ("codex", fixture("codex", "user-prompt-submit"))):
            started = time.monotonic()
            hook(daemon, agent, payload)
            assert time.monotonic() - started < 5
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    spooled = list((daemon.state / "traced" / "spool").glob("*.spool"))
    assert spooled, "the hooks should have spooled"


@pytest.mark.parametrize(("agent", "closing"), [("claude-code", "PermissionDenied"), ("codex", "PostToolUse")])
def test_calls_without_a_tool_use_id_are_still_paired_and_timed(daemon: Daemon, agent: str, closing: str) -> None:
    """Claude Code has sent tool hooks without ``tool_use_id`` (headless, bypassPermissions:
    anthropics/claude-code#18093, #13241): the call clock pairs them by tool name and input, as for
    Gemini CLI; two calls get two ids, and a denial without an id still closes its call."""
    sid = f"{agent}-no-ids"
    base = {"session_id": sid, "cwd": "/tmp", "tool_name": "Bash", "tool_input": {"command": "make -j4"}}
    hook(daemon, agent, {**base, "hook_event_name": "PreToolUse"})
    hook(daemon, agent, {**base, "hook_event_name": "PostToolUse", "tool_response": {"stdout": "ok", "stderr": ""}})
    other = {**base, "tool_input": {"command": "rm -rf build"}}
    hook(daemon, agent, {**other, "hook_event_name": "PreToolUse"})
    hook(daemon, agent, {**other, "hook_event_name": closing, "reason": "denied by rule", "tool_response": "gone"})
    records = read_trace(session_dir(daemon, agent, sid) / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "tool_call", "tool_result", "tool_call", "tool_result"]
    p = [r["payload"] for r in records]
    assert p[1]["call_id"] == p[2]["call_id"] and p[1]["call_id"].startswith("t")
    assert p[3]["call_id"] == p[4]["call_id"] != p[1]["call_id"]
    assert p[2]["ok"] is True and p[2]["duration_ms"] >= 0 and p[4]["duration_ms"] >= 0
    if closing == "PermissionDenied":
        assert (p[4]["ok"], p[4]["denied"], p[4]["error"]) == (False, True, "permission denied: denied by rule")
    else:
        assert (p[4]["ok"], p[4]["result_summary"]) == (True, "gone")


@pytest.mark.parametrize("agent", ["codex"])  # the read and drain are shared by every agent
def test_the_agents_write_never_breaks_the_pipe(daemon: Daemon, agent: str) -> None:
    """A hook that exits before its agent finished writing makes the write fail with EPIPE, which
    Codex reports on every call ("failed to write hook stdin: Broken pipe") and some hosts crash on
    (reddb-io/red-skills#2240, mastra-ai/mastra#21796). Here the object is followed by 8 MiB the
    hook does not need: all of it is read, the object is recorded."""
    import os
    import threading

    payload = json.dumps({"session_id": f"{agent}-pipe", "hook_event_name": "SessionStart", "source": "startup",
                          "cwd": "/tmp"}).encode() + b"\n" + b" " * (8 * 1024 * 1024)
    proc = subprocess.Popen([sys.executable, "-m", "traced", "hook", agent], env=daemon.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors: list[BaseException] = []

    def write() -> None:
        assert proc.stdin is not None
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(proc.stdin.fileno(), view[:65536]):]
            proc.stdin.close()
        except OSError as e:
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(60)
    assert proc.wait(60) == 0
    assert errors == [] and proc.stdout.read() == b"" and proc.stderr.read() == b""
    assert [r["phase"] for r in read_trace(session_dir(daemon, agent, f"{agent}-pipe") / "trace.jsonl")] == ["start"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
_EVENTS = ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionDenied",
           "SessionEnd", "BeforeAgent", "BeforeTool", "AfterTool", "BeforeModel", "AfterModel", "StopFailure", "X"]
_FIELDS = ["tool_name", "tool_input", "tool_response", "tool_use_id", "duration_ms", "error", "reason", "prompt",
           "source", "llm_request", "llm_response", "mcp_context", "is_interrupt", "transcript_path", "model"]


@settings(max_examples=300, deadline=None)
@given(agent=st.sampled_from(["claude-code", "codex", "gemini"]), event=st.sampled_from(_EVENTS),
       fields=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=8))
def test_any_field_of_any_type_translates_or_is_a_hook_error(agent: str, event: str, fields: dict[str, Any]) -> None:
    """Payload shapes change between agent versions (a string where an object was, a number for a
    duration, a list for candidates): translating never fails on them, and every record is JSON."""
    hook_in = {**fields, "session_id": "s-1", "hook_event_name": event}
    plan = core.translate(hook_in, run.agent_named(agent), core.Options(), 100.0)
    plan.set_duration(99.5, "t00000000-1")
    for phase, payload in plan.records:
        assert isinstance(phase, str) and isinstance(payload, dict)
        json.dumps(payload)
        if phase == "tool_result":
            assert isinstance(payload["ok"], bool) and isinstance(payload.get("duration_ms", 0), (int, float))
