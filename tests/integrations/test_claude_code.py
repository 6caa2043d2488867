"""``traced hook claude-code`` and ``traced hook install``: real daemon, one process per hook event.

The fixtures in tests/fixtures/claude_code/ are one Claude Code conversation,
one hook payload per file, in the order Claude Code fires them.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced.integrations.hooks import clocks, core, install
from traced.integrations.hooks.claude_code import AGENT

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude_code"
SID = "5f0c2b1e-8d3a-4c7e-9b21-3e6f7a9d4c10"
TRANSCRIPT = f"/home/dev/.claude/projects/-home-dev-src-webapp/{SID}.jsonl"
REPO = Path(__file__).resolve().parents[2]


def conversation() -> list[tuple[str, str]]:
    """(file name, payload text) of every hook of the recorded conversation, in order."""
    return [(p.name, p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(next(FIXTURES.glob(f"*-{name}.json")).read_text())
    return data


def run_hook(d: Daemon, payload: str | dict[str, Any], env: dict[str, str] | None = None,
             *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``traced hook claude-code`` as its own process; the hook contract holds every time."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    res = d.cli("hook", "claude-code", *args, input=text, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "", f"a hook must print nothing on stdout, got {res.stdout!r}"
    return res


def session_dir(d: Daemon, sid: str = SID, skill: str = "claude-code") -> Path:
    found = sorted(d.root.glob(f"*/{skill}/{sid}"))
    assert len(found) == 1, f"expected one session dir for {sid}, found {found}"
    return found[0]


def wait_meta(sdir: Path, done: Any) -> dict[str, Any]:
    """meta.json once ``done(meta)`` holds."""
    last: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        nonlocal last
        try:
            last = json.loads((sdir / "meta.json").read_text())
        except (OSError, ValueError):
            last = {}
        return last if last and done(last) else None

    meta: dict[str, Any] = wait_for(ready, what=lambda: f"meta.json to get there, now: {last}")
    return meta


EXPECTED_PHASES = [
    "start",
    "user_prompt", "tool_call", "tool_result", "tool_call", "tool_result", "hook",
    "user_prompt", "tool_call", "tool_result", "tool_call", "tool_result", "tool_call", "hook",
    "tool_call", "tool_result", "hook", "tool_result", "hook", "hook", "hook", "hook",
    "end",
]


def check_golden(sdir: Path) -> None:
    """The trace and meta.json the fixture conversation must produce (live or through the spool)."""
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == EXPECTED_PHASES
    assert {r["skill"] for r in records} == {"claude-code"}
    assert {r["session_id"] for r in records} == {SID}
    # turns: nothing before the 1st prompt, 1 up to the 2nd prompt, then 2 (the end included)
    assert "turn" not in records[0]
    assert [r.get("turn") for r in records[1:7]] == [1] * 6
    assert [r.get("turn") for r in records[7:]] == [2] * 16
    p = [r["payload"] for r in records]

    assert p[0] == {"input": {"source": "startup"}, "cwd": "/home/dev/src/webapp"}
    assert p[1]["prompt"].startswith("The API tests fail")
    assert p[1]["prompt_id"] == fixture("user-prompt-submit")["prompt_id"]
    assert p[7]["prompt"].startswith("Open a GitHub issue")

    calls = [x for r, x in zip(records, p, strict=True) if r["phase"] == "tool_call"]
    results = [x for r, x in zip(records, p, strict=True) if r["phase"] == "tool_result"]
    assert [(c["tool"], c["kind"], c.get("server")) for c in calls] == [
        ("Bash", "tool", None), ("Read", "tool", None), ("create_issue", "mcp", "github"),
        ("Skill", "skill", None), ("Task", "tool", None), ("Grep", "tool", None),
    ]
    assert calls[0]["args"] == fixture("pre-tool-use-bash")["tool_input"]
    assert calls[0]["call_id"] == "toolu_01HQ8vX3mZ9kLr2TnB7cYw4E"
    assert calls[2]["args"]["title"].startswith("POST /users")
    assert calls[3]["name"] == "release-notes"
    assert calls[5]["agent_id"] == "a4f1c2e9" and calls[5]["agent_type"] == "Explore"
    assert "agent_id" not in calls[4]
    # every call has its result, paired by call id (the Task's result comes after its subagent)
    assert sorted(c["call_id"] for c in calls) == sorted(r["call_id"] for r in results)
    assert all(c["call_id"].startswith("toolu_") for c in calls)
    by_id = {r["call_id"]: r for r in results}
    bash = by_id["toolu_01HQ8vX3mZ9kLr2TnB7cYw4E"]
    assert bash["ok"] is False and bash["tool"] == "Bash"
    assert bash["error"] == "Exit code 1 … 1 failed, 3 passed in 0.84s"
    assert bash["response"] == fixture("post-tool-use-failure-bash")["error"]  # the whole message
    read = by_id["toolu_01Kp4RtYw8NcQ2sVx6Jb9mLd"]
    assert read["ok"] is True and read["result_summary"] == "/home/dev/src/webapp/app/schemas.py (6 lines)"
    assert read["response"] == fixture("post-tool-use-read")["tool_response"]
    mcp = by_id["toolu_01MnB5vC8xZ2qW4eR7tY1uIo"]
    assert mcp["kind"] == "mcp" and mcp["server"] == "github" and mcp["tool"] == "create_issue"
    assert '"number": 342' in mcp["result_summary"]
    assert by_id["toolu_01Sk7LlPq3Wm9XzTe5Rb2NvA"]["kind"] == "skill"
    assert by_id["toolu_01Tq2AbC4dEf6GhI8jKl0MnO"]["result_summary"].startswith("UserIn is built in")
    for r in results:
        assert isinstance(r["duration_ms"], float) and 0 <= r["duration_ms"] < 60_000, r
        assert len(r.get("result_summary", "")) <= 200 and "\n" not in r.get("result_summary", "")

    hook_records = [x for r, x in zip(records, p, strict=True) if r["phase"] == "hook"]
    assert [(h["event"], h.get("name")) for h in hook_records] == [
        ("Stop", None), ("SubagentStart", "Explore"), ("SubagentStop", "Explore"),
        ("Notification", "idle_prompt"), ("Stop", None), ("PreCompact", "manual"), ("SessionStart", "compact"),
    ]
    assert hook_records[0]["stop_hook_active"] is False
    assert hook_records[1]["agent_id"] == "a4f1c2e9"
    assert hook_records[2]["agent_transcript_path"].endswith("agent-a4f1c2e9.jsonl")
    assert hook_records[3]["message"] == "Claude is waiting for your input"
    assert hook_records[5]["trigger"] == "manual"
    for h in hook_records:  # the common fields live in meta.json, not in every record
        assert not {"session_id", "transcript_path", "cwd", "hook_event_name"} & set(h)
    assert p[-1] == {"outcome": "success", "summary": "prompt_input_exit"}

    meta = json.loads((sdir / "meta.json").read_text())
    assert meta["session_id"] == SID and meta["skill"] == "claude-code"
    assert meta["tool_calls"] == 6 and meta["errors"] == 1
    assert meta["outcome"] == "success" and meta["summary"] == "prompt_input_exit" and meta["ended_at"]
    assert meta["steps"] == 23 and meta["turns"] == 2
    assert meta["phases"] == {"start": 1, "user_prompt": 2, "tool_call": 6, "tool_result": 6, "hook": 7, "end": 1}
    assert meta["labels"] == {"transcript_path": TRANSCRIPT, "permission_mode": "default",
                              "model": "claude-sonnet-4-5-20250929"}
    assert meta["cwd"] == "/home/dev/src/webapp"
    assert meta["input_summary"] == '{"source":"startup"}'
    assert "owner_pid" not in meta  # the hook process is short-lived: nobody owns the session


# ============================================================================ recording


def test_conversation_golden(daemon: Daemon) -> None:
    for name, text in conversation():
        res = run_hook(daemon, text)
        assert res.stderr == "", f"{name}: {res.stderr}"
    sdir = session_dir(daemon)
    check_golden(sdir)
    # the call clocks were all taken, and SessionEnd removed the session's clock dir
    assert not (daemon.state / "traced" / "hooks" / SID).exists()


def test_conversation_through_the_spool(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    env = {"TRACED_SPOOL_AFTER": "0.1"}
    for name, text in conversation():
        started = time.monotonic()
        res = run_hook(d, text, env)
        assert res.stderr == "", f"{name}: {res.stderr}"
        assert time.monotonic() - started < 10
    spool = d.state / "traced" / "spool"
    assert sorted(spool.glob("*.spool")), "the hooks should have spooled"
    assert not d.root.exists() or not list(d.root.glob(f"*/claude-code/{SID}"))
    d.start()
    sdir = wait_meta_dir(d)
    wait_meta(sdir, lambda m: m.get("ended_at"))
    check_golden(sdir)
    assert not list(spool.glob("*.spool"))


@pytest.mark.parametrize("no_daemon", ["no_socket_file", "nobody_listening"])
def test_hooks_after_one_that_found_no_daemon_spool_at_once(daemon_factory: Any, no_daemon: str) -> None:
    """The first hook that finds no daemon waits for it within its budget (a restart), spools, and
    leaves ``<state>/hooks/.away``; for ``AWAY_FOR`` seconds the next ones that find none spool at
    once instead of each waiting (before: every hook of a conversation paid the wait, 0.4 s each
    with the default budget). Here the second hook's budget is 600 s: only the mark ends it early.
    The daemon, once started, takes both events from the spool."""
    d: Daemon = daemon_factory(start=False)
    if no_daemon == "nobody_listening":  # a socket file left by a daemon that died
        import socket as socket_mod

        d.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        left = socket_mod.socket(socket_mod.AF_UNIX)
        left.bind(str(d.socket))
        left.close()
    away = d.state / "traced" / "hooks" / clocks.AWAY
    first = {"session_id": SID, "hook_event_name": "UserPromptSubmit", "prompt": "first", "cwd": "/tmp"}
    run_hook(d, first, {"TRACED_HOOK_BUDGET": "0.5"})
    assert away.exists()
    second = {**first, "prompt": "second"}
    res = subprocess.run([sys.executable, "-m", "traced", "hook", "claude-code"], input=json.dumps(second),
                         env={**d.env, "TRACED_HOOK_BUDGET": "600"}, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert away.exists()
    if no_daemon == "nobody_listening":
        d.socket.unlink()
    d.start()
    sdir = wait_meta_dir(d)
    prompts = wait_for(lambda: [r["payload"]["prompt"] for r in read_trace(sdir / "trace.jsonl")
                                if "prompt" in r["payload"]][1:] or None, what="the spooled prompts")
    assert prompts == ["second"]
    records = read_trace(sdir / "trace.jsonl")
    assert [(r["phase"], r["payload"].get("prompt")) for r in records] == [
        ("start", None), ("user_prompt", "first"), ("user_prompt", "second")]


@pytest.mark.timeout(20)
def test_away_lately_is_the_marks_age_within_away_for(tmp_path: Path) -> None:
    root = str(tmp_path / "hooks")
    assert not clocks.away_lately(root)  # no mark
    clocks.note_away(root, True)
    mtime = os.stat(os.path.join(root, clocks.AWAY)).st_mtime
    assert [clocks.away_lately(root, mtime + dt) for dt in (0.0, 9.9, 10.0, 60.0, -5.0)] == [
        True, True, False, False, False]
    assert oct(os.stat(os.path.join(root, clocks.AWAY)).st_mode & 0o777) == "0o600"
    clocks.note_away(root, False)
    assert not os.path.exists(os.path.join(root, clocks.AWAY))
    clocks.note_away(root, False)  # already gone: nothing raised
    fifo = os.path.join(root, clocks.AWAY)
    os.mkfifo(fifo)  # planted: no reader, so a blocking open would hang (the test's timeout fails it)
    clocks.note_away(root, True)  # returns: the open fails (ENXIO), the FIFO is left as it was
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def wait_meta_dir(d: Daemon) -> Path:
    found: list[Path] = wait_for(lambda: list(d.root.glob(f"*/claude-code/{SID}")) if d.root.exists() else [],
                                 what=lambda: f"the session to appear; daemon log:\n{d.log.read_text()}")
    return found[0]


@pytest.mark.parametrize(
    "stdin",
    [
        "",
        "not json at all",
        "[1, 2, 3]",
        "\x00\x01garbage\xff",
        '{"hook_event_name": "Stop"}',
        '{"session_id": "../../etc/passwd", "hook_event_name": "PreToolUse", "tool_name": "Bash"}',
        '{"session_id": "has space", "hook_event_name": "Stop"}',
        '{"session_id": 42, "hook_event_name": "Stop"}',
        '{"session_id": "' + "a" * 200 + '", "hook_event_name": "Stop"}',
        '{"session_id": "5f0c2b1e-8d3a-4c7e-9b21-3e6f7a9d4c10"}',
    ],
)
def test_bad_input_exits_0_silently(daemon: Daemon, stdin: str) -> None:
    res = run_hook(daemon, stdin)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("traced hook: "), res.stderr
    assert [p.name for p in daemon.root.iterdir()] == [".traced-daemon.lock"]  # no session, no date dir


def test_bad_options_exit_0_and_record_with_the_defaults(daemon: Daemon) -> None:
    """A bad option costs the option, never the event: it is recorded with the defaults."""
    payload = fixture("session-start")
    res = run_hook(daemon, payload, None, "--idle-timeout", "soon")
    assert res.stderr == "traced hook: invalid idle timeout 'soon'; recording with the defaults\n"
    assert [r["phase"] for r in read_trace(session_dir(daemon) / "trace.jsonl")] == ["start"]
    res = run_hook(daemon, fixture("user-prompt-submit"), {"TRACED_HOOK_SKILL": "../evil"})
    assert res.stderr.startswith("traced hook: invalid skill '../evil'")
    assert [r["phase"] for r in read_trace(session_dir(daemon) / "trace.jsonl")] == ["start", "user_prompt"]
    other = {**payload, "session_id": "another-session"}
    res = run_hook(daemon, other, None, "--target", str(daemon.base / "missing-dir"))
    assert "target" in res.stderr and len(res.stderr.splitlines()) == 1  # the daemon refused it


def test_hooks_installed_mid_conversation(daemon: Daemon) -> None:
    """No SessionStart ever came: the first event opens the session, then is recorded."""
    run_hook(daemon, fixture("pre-tool-use-bash"))
    run_hook(daemon, fixture("post-tool-use-failure-bash"))
    run_hook(daemon, fixture("user-prompt-submit-2"))
    sdir = session_dir(daemon)
    records = read_trace(sdir / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "tool_call", "tool_result", "user_prompt"]
    assert records[0]["payload"]["input"] == {"source": "mid_session", "event": "PreToolUse"}
    assert records[2]["payload"]["duration_ms"] >= 0
    assert records[3]["turn"] == 1
    meta = json.loads((sdir / "meta.json").read_text())
    assert meta["labels"]["transcript_path"] == TRANSCRIPT
    assert meta["labels"]["permission_mode"] == "default"


def test_custom_skill_and_target(daemon: Daemon) -> None:
    repo = daemon.base / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    start = {**fixture("session-start"), "cwd": str(repo / "src")}
    run_hook(daemon, start, {"TRACED_HOOK_SKILL": "cc-review"}, "--target", "repo")
    prompt = {**fixture("user-prompt-submit"), "cwd": str(repo / "src")}
    run_hook(daemon, prompt, None, "--skill", "cc-review", "--target", "repo")
    sdirs = list((repo / ".devboy" / "sessions").glob(f"*/cc-review/{SID}"))
    assert len(sdirs) == 1
    records = read_trace(sdirs[0] / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "user_prompt"]
    assert {r["skill"] for r in records} == {"cc-review"}


def test_resume_after_idle_timeout_and_end_reasons(daemon: Daemon) -> None:
    """A session aborted by the idle timeout is reopened by the conversation's next event."""
    run_hook(daemon, fixture("session-start"), {"TRACED_HOOK_IDLE_TIMEOUT": "0.5"})
    sdir = session_dir(daemon)
    meta = wait_meta(sdir, lambda m: m.get("ended_at"))
    assert meta["outcome"] == "aborted" and meta["reason"] == "idle_timeout"
    # the reopened session must live until SessionEnd, however slowly the hooks start
    env = {"TRACED_HOOK_IDLE_TIMEOUT": "600"}
    run_hook(daemon, fixture("user-prompt-submit"), env)
    run_hook(daemon, {**fixture("session-end"), "reason": "bypass_permissions_disabled"}, env)
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == ["start", "end", "start", "user_prompt", "end"]
    assert records[1]["payload"]["reason"] == "idle_timeout"
    assert records[2]["payload"] == {"resumed": True}
    assert records[3]["turn"] == 1
    assert records[4]["payload"] == {"outcome": "aborted", "summary": "bypass_permissions_disabled"}
    meta = json.loads((sdir / "meta.json").read_text())
    assert meta["outcome"] == "aborted" and meta["summary"] == "bypass_permissions_disabled"
    # a SessionEnd for a session that has ended already changes nothing (and is no error)
    res = run_hook(daemon, fixture("session-end"))
    assert res.stderr == ""
    assert len(read_trace(sdir / "trace.jsonl")) == 5


def test_parallel_tool_calls(daemon: Daemon) -> None:
    """Claude Code runs the hooks of parallel tool calls at the same time."""
    run_hook(daemon, fixture("session-start"))
    run_hook(daemon, fixture("user-prompt-submit"))
    base = fixture("pre-tool-use-read")
    ids = [f"toolu_01Par{i:02d}xxxxxxxxxxxxxxxxx" for i in range(8)]

    def spawn(event: str, extra: dict[str, Any]) -> list[subprocess.Popen[str]]:
        procs = []
        for cid in ids:
            payload = {**base, "hook_event_name": event, "tool_use_id": cid, **extra}
            proc = subprocess.Popen([sys.executable, "-m", "traced", "hook", "claude-code"], env=daemon.env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(payload))
            proc.stdin.close()
            procs.append(proc)
        return procs

    for event, extra in (("PreToolUse", {}), ("PostToolUse", {"tool_response": "ok"})):
        for proc in spawn(event, extra):
            assert proc.wait(60) == 0
            assert proc.stdout is not None and proc.stdout.read() == ""
    records = read_trace(session_dir(daemon) / "trace.jsonl")
    assert_gap_free(records)
    calls = [r["payload"]["call_id"] for r in records if r["phase"] == "tool_call"]
    results = [r["payload"] for r in records if r["phase"] == "tool_result"]
    assert sorted(calls) == sorted(ids) == sorted(r["call_id"] for r in results)
    assert all(r["duration_ms"] >= 0 for r in results)
    assert {r["turn"] for r in records[1:]} == {1}
    left = [p.name for p in (daemon.state / "traced" / "hooks" / SID).iterdir() if not p.name.startswith(".")]
    assert left == []  # every clock was taken (the hidden files are the delivery marks)


def test_large_response_is_spilled_and_oversized_one_trimmed(daemon: Daemon) -> None:
    """A 2.4 MB tool_response is kept whole in a blob; one over the frame limit loses its largest
    leaf only: the file's content becomes a marker, its path and line count stay."""
    run_hook(daemon, fixture("session-start"))
    run_hook(daemon, fixture("pre-tool-use-read"))
    post = fixture("post-tool-use-read")
    content = "x = 1\n" * 400_000  # 2.4 MB
    post["tool_response"]["file"]["content"] = content
    run_hook(daemon, post)
    post["tool_response"]["file"]["content"] = "y" * (9 * 1024 * 1024)  # over the 8 MiB frame limit
    run_hook(daemon, post)
    sdir = session_dir(daemon)
    records = read_trace(sdir / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "tool_call", "tool_result", "tool_result"]
    kept, trimmed = records[2]["payload"], records[3]["payload"]
    assert kept["ok"] is True and kept["call_id"] == post["tool_use_id"]
    ref = kept["response"]["file"]["content"]
    assert (sdir / "blobs" / ref["$blob"][7:]).read_text() == content
    big = 9 * 1024 * 1024
    assert trimmed["response"]["file"]["content"] == {"$omitted": "too_large", "bytes": big + 5}
    assert trimmed["response"]["file"]["filePath"] == post["tool_response"]["file"]["filePath"]
    assert trimmed["response"]["file"]["numLines"] == post["tool_response"]["file"]["numLines"]
    assert trimmed["tool"] == "Read" and trimmed["ok"] is True and "$omitted" not in json.dumps(kept)


def test_secrets_in_tool_io_are_redacted(daemon: Daemon) -> None:
    run_hook(daemon, fixture("session-start"))
    pre = {**fixture("pre-tool-use-bash"),
           "tool_input": {"command": "curl -H 'Authorization: Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789' x"}}
    run_hook(daemon, pre)
    post = {**fixture("post-tool-use-read"), "tool_use_id": pre["tool_use_id"], "tool_name": "Bash",
            "tool_response": {"stdout": "token=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "stderr": ""}}
    run_hook(daemon, post)
    text = (session_dir(daemon) / "trace.jsonl").read_text()
    assert "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in text
    assert "<redacted:" in text


def test_hook_path_stays_light(daemon: Daemon) -> None:
    """``traced hook claude-code`` runs per event: no argparse, msgspec, anyio, rich… on its path."""
    code = (
        "import sys, traced\n"
        "before = set(sys.modules)\n"
        "import traced.cli.hook\n"
        "print(sorted(set(sys.modules) - before - {'traced.cli', 'traced.cli.hook'}))\n"
        "from traced.cli.main import main\n"
        "sys.argv = ['traced', 'hook', 'claude-code']\n"
        "main()\n"
        "heavy = ['argparse', 'msgspec', 'typing', 'anyio', 'structlog', 'watchfiles', 'rich', 'genai_prices',\n"
        "         'uvloop', 'difflib', 'traced.read.sessions', 'traced.read.usage', 'traced.daemon.handler',\n"
        "         'traced.daemon.registry']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(fixture("session-start")),
                         env=daemon.env, capture_output=True, text=True, timeout=60, cwd=REPO)
    # the hook points the process's stdout at stderr: the second print lands there
    assert res.returncode == 0, res.stderr
    assert res.stdout == "[]\n"  # cli.hook itself imports nothing
    assert res.stderr == "[]\n"
    session_dir(daemon)


# ============================================================================ sans-IO mapping


def test_split_tool() -> None:
    assert core.split_tool("mcp__github__create_issue") == ("create_issue", "mcp", "github")
    assert core.split_tool("mcp__plugin_acme_db__run__query") == ("run__query", "mcp", "plugin_acme_db")
    assert core.split_tool("mcp__broken") == ("mcp__broken", "tool", None)
    assert core.split_tool("Skill") == ("Skill", "skill", None)
    assert core.split_tool("Bash") == ("Bash", "tool", None)


def test_end_outcomes() -> None:
    for reason in ("prompt_input_exit", "logout", "clear", "resume"):
        plan = core.translate({**fixture("session-end"), "reason": reason}, AGENT, core.Options(), 1.0)
        assert plan.end == ("success", reason)
    for reason in ("other", "bypass_permissions_disabled", "something_new"):
        plan = core.translate({**fixture("session-end"), "reason": reason}, AGENT, core.Options(), 1.0)
        assert plan.end == ("aborted", reason)
    plan = core.translate({"session_id": SID, "hook_event_name": "SessionEnd"}, AGENT, core.Options(), 1.0)
    assert plan.end == ("aborted", None)


def test_translate_unknown_event_and_mcp_error() -> None:
    plan = core.translate({"session_id": SID, "hook_event_name": "PermissionRequest", "cwd": "/x",
                            "tool_name": "Bash", "tool_input": {"command": "rm -rf build"}}, AGENT, core.Options(), 5.0)
    assert plan.records == [("hook", {"event": "PermissionRequest", "name": "Bash", "tool_name": "Bash",
                                      "tool_input": {"command": "rm -rf build"}})]
    assert plan.open["input"] == {"source": "mid_session", "event": "PermissionRequest"}
    assert plan.open["owner_pid"] == -1 and plan.open["session_id"] == SID
    post = {**fixture("post-tool-use-mcp"),
            "tool_response": {"isError": True, "content": [{"type": "text", "text": "422 Validation Failed"}]}}
    plan = core.translate(post, AGENT, core.Options(), 5.0)
    assert plan.take == post["tool_use_id"]
    plan.set_duration(4.75)
    [(phase, payload)] = plan.records
    assert phase == "tool_result" and payload["ok"] is False
    assert payload["error"] == "422 Validation Failed" and payload["duration_ms"] == 250.0


def test_call_clocks(tmp_path: Path) -> None:
    root = tmp_path / "state" / "traced" / "hooks"
    clocks.put_stamp(root, SID, "toolu_01A", 100.25)
    path = root / SID / "toolu_01A"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert {oct(p.stat().st_mode & 0o777) for p in (root.parent, root, root / SID)} == {"0o700"}
    assert clocks.take_stamp(root, SID, "toolu_01A") == (100.25, "")
    assert not path.exists() and clocks.take_stamp(root, SID, "toolu_01A") is None
    clocks.put_stamp(root, SID, "../escape", 1.0)  # not a name: ignored
    assert not (root / "escape").exists() and clocks.take_stamp(root, SID, "../escape") is None
    clocks.put_stamp(root, "old-session", "toolu_01B", 1.0)
    clocks.put_stamp(root, SID, "toolu_01C", 2.0)
    os.utime(root / "old-session", (0, 0))
    clocks.sweep_stamps(root)
    assert sorted(p.name for p in root.iterdir()) == [SID]
    clocks.drop_stamps(root, SID)
    assert not list(root.iterdir())


@given(st.text(max_size=2000))
def test_one_line_fits(text: str) -> None:
    line = core.one_line(text)
    assert len(line) <= core.SUMMARY_LIMIT
    assert "\n" not in line and "\r" not in line
    if len(" ".join(text.split())) <= core.SUMMARY_LIMIT:
        assert line == " ".join(text.split())


def test_summaries_of_common_tools() -> None:
    s = core.summarize_response
    assert s({"stdout": "", "stderr": "", "interrupted": False, "isImage": False}) == "(no output)"
    assert s({"stdout": "", "stderr": "warn: x", "interrupted": True}) == "[interrupted] warn: x"
    assert s({"type": "update", "filePath": "/a/b.py", "oldString": "x", "newString": "y"}) == "update /a/b.py"
    assert s([{"type": "image", "source": {}}]) == "[image]"
    assert s(None) is None
    assert s("a\n\n b") == "a b"


# ============================================================================ install


def cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "traced", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    # no `claude` on PATH: install registers every event (tests/integrations/test_hook_install.py
    # covers the version detection)
    return {**env, "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO / "src"),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"}


ORIGINAL = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test:*)"], "deny": ["Read(./.env)"]},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/guard.sh", "timeout": 5}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"},
}


def ours(settings: dict[str, Any]) -> dict[str, list[str]]:
    """event -> commands of our entries."""
    out: dict[str, list[str]] = {}
    for event, groups in settings.get("hooks", {}).items():
        for group in groups:
            for entry in group["hooks"]:
                if install.is_ours(entry):
                    out.setdefault(event, []).append(entry["command"])
    return out


def test_install_user_idempotent_and_uninstall_restores(home: dict[str, str]) -> None:
    settings = Path(home["HOME"]) / ".claude" / "settings.json"
    settings.parent.mkdir()
    original = json.dumps(ORIGINAL, indent=2) + "\n"
    settings.write_text(original)

    res = cli("hook", "install", "claude-code", env=home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"--- a/{settings}\n+++ b/{settings}\n")
    assert any(line.startswith("+") and "hook claude-code" in line for line in res.stdout.splitlines())
    data = json.loads(settings.read_text())
    for key in ("model", "permissions", "statusLine"):
        assert data[key] == ORIGINAL[key]
    installed = ours(data)
    assert set(installed) == set(install.install_events("claude-code"))
    command = installed["PreToolUse"][0]
    argv = shlex.split(command)
    assert argv[-2:] == ["hook", "claude-code"]
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    assert all(cmds == [command] for cmds in installed.values())
    # the user's own hooks are untouched and stay first; tool events match every tool
    assert data["hooks"]["PreToolUse"][0] == ORIGINAL["hooks"]["PreToolUse"][0]  # type: ignore[index]
    assert data["hooks"]["PreToolUse"][1] == {"matcher": "*", "hooks": [
        {"type": "command", "command": command, "timeout": 2}]}
    assert data["hooks"]["Stop"][0] == ORIGINAL["hooks"]["Stop"][0]  # type: ignore[index]
    assert data["hooks"]["Stop"][1] == {"hooks": [{"type": "command", "command": command, "timeout": 2}]}
    assert data["hooks"]["SessionEnd"] == [{"hooks": [{"type": "command", "command": command, "timeout": 1}]}]
    assert "WorktreeCreate" not in data["hooks"]
    assert "matcher" not in data["hooks"]["SessionStart"][0]
    assert data["hooks"]["PostToolUseFailure"][0]["matcher"] == "*"

    installed_text = settings.read_text()
    res = cli("hook", "install", "claude-code", "--user", env=home)
    assert res.returncode == 0 and res.stdout == ""
    assert "already up to date" in res.stderr
    assert settings.read_text() == installed_text

    res = cli("hook", "install", "claude-code", "--uninstall", "--dry-run", env=home)
    assert res.returncode == 0 and res.stdout.count("\n-") > 10
    assert settings.read_text() == installed_text

    res = cli("hook", "install", "claude-code", "--uninstall", env=home)
    assert res.returncode == 0, res.stderr
    assert settings.read_text() == original
    res = cli("hook", "install", "claude-code", "--uninstall", env=home)
    assert res.returncode == 0 and res.stdout == "" and settings.read_text() == original


def test_install_project_at_git_root_with_options(home: dict[str, str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pkg" / "sub").mkdir(parents=True)
    res = cli("hook", "install", "claude-code", "--project", "--dry-run", env=home, cwd=repo / "pkg" / "sub")
    assert res.returncode == 0 and res.stdout.startswith("--- /dev/null\n")
    settings = repo / ".claude" / "settings.json"
    assert not settings.exists()
    res = cli("hook", "install", "claude-code", "--project", "--skill", "cc", "--target", "repo",
              env=home, cwd=repo / "pkg" / "sub")
    assert res.returncode == 0, res.stderr
    data = json.loads(settings.read_text())
    assert set(data) == {"hooks"}
    [command] = ours(data)["UserPromptSubmit"]
    assert shlex.split(command)[-6:] == ["hook", "claude-code", "--skill", "cc", "--target", "repo"]
    assert not (Path(home["HOME"]) / ".claude").exists()
    # a reinstall with other options replaces our entries instead of adding more
    res = cli("hook", "install", "claude-code", "--project", env=home, cwd=repo)
    data = json.loads(settings.read_text())
    assert all(len(cmds) == 1 and cmds[0].endswith(" hook claude-code") for cmds in ours(data).values())
    res = cli("hook", "install", "claude-code", "--project", "--uninstall", env=home, cwd=repo)
    assert res.returncode == 0 and json.loads(settings.read_text()) == {}


def test_install_replaces_stale_entries_and_keeps_symlinks(home: dict[str, str], tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude-settings.json"
    real.parent.mkdir()
    stale = {"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [
        {"type": "command", "command": "/old/venv/bin/traced hook claude-code"},
        {"type": "command", "command": "~/bin/audit.sh"},
    ]}]}}
    real.write_text(json.dumps(stale, indent=4) + "\n")
    link = Path(home["HOME"]) / ".claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    res = cli("hook", "install", "claude-code", env=home)
    assert res.returncode == 0, res.stderr
    assert link.is_symlink()
    data = json.loads(real.read_text())
    assert real.read_text().startswith('{\n    "hooks"')  # the file's own indentation is kept
    groups = data["hooks"]["PreToolUse"]
    assert groups[0] == {"matcher": "*", "hooks": [{"type": "command", "command": "~/bin/audit.sh"}]}
    assert len(ours(data)["PreToolUse"]) == 1 and not ours(data)["PreToolUse"][0].startswith("/old/")
    res = cli("hook", "install", "claude-code", "--uninstall", env=home)
    assert json.loads(real.read_text()) == {"hooks": {"PreToolUse": [groups[0]]}}


def test_install_refuses_broken_settings(home: dict[str, str]) -> None:
    settings = Path(home["HOME"]) / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text('{"model": "opus",}\n')
    res = cli("hook", "install", "claude-code", env=home)
    assert res.returncode == 1 and "not valid JSON" in res.stderr
    assert settings.read_text() == '{"model": "opus",}\n'


def test_installed_command_records(daemon: Daemon, tmp_path: Path) -> None:
    """The command written to settings.json is what Claude Code runs: run it through a shell."""
    settings = tmp_path / "settings.json"
    res = daemon.cli("hook", "install", "claude-code", "--settings", str(settings))
    assert res.returncode == 0, res.stderr
    data = json.loads(settings.read_text())
    for name in ("session-start", "user-prompt-submit", "session-end"):
        event = fixture(name)["hook_event_name"]
        [command] = ours(data)[event]
        run = subprocess.run(["/bin/sh", "-c", command], input=json.dumps(fixture(name)), env=daemon.env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and run.stdout == "" and run.stderr == "", run.stderr
    records = read_trace(session_dir(daemon) / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "user_prompt", "end"]


def test_merge_settings_round_trip() -> None:
    cmd = "/opt/traced/bin/traced hook claude-code"
    user_group = {"hooks": [{"type": "command", "command": "say done"}]}
    for original in ({}, ORIGINAL, {"hooks": {"Stop": [user_group], "Custom": []}, "env": {"A": "1"}}):
        merged = install.merge_settings(original, cmd)
        assert install.merge_settings(merged, cmd) == merged
        assert install.merge_settings(merged, None) == original
        assert install.merge_settings(original, None) == original
    # the one shape uninstall cannot tell apart: an empty container we filled, then emptied
    assert install.merge_settings({"hooks": {}}, None) == {"hooks": {}}
    assert install.merge_settings(install.merge_settings({"hooks": {}}, cmd), None) == {}
    assert install.merge_settings(install.merge_settings({"hooks": {"Stop": []}}, cmd), None) == {}
    with pytest.raises(ValueError):
        install.merge_settings({"hooks": []}, cmd)
