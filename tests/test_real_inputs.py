"""What real agents and shells send, through the real entry points against the real daemon.

One test (or a few) per failure kind of issue #13: each asserts the exact record that lands
(step, turn, pairing, markers), never just "no crash". Sources of the kinds: agent-hook and
trace-logger bug trackers (see the closing note of issue #13).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced import AsyncClient, Client, RequestError
from traced.wire import protocol
from traced.wire.framing import Framer
from traced.wire.protocol import encode

SID = "9d3c1a7e-2b4f-4e6a-8c1d-5f7e9a0b2c3d"
HOOK_BASE = {"session_id": SID, "transcript_path": f"/home/dev/.claude/projects/x/{SID}.jsonl",
             "cwd": "/home/dev/src", "permission_mode": "default"}


def hook(d: Daemon, event: str, raw: str | bytes | None = None, *args: str, timeout: float = 30,
         **fields: Any) -> subprocess.CompletedProcess[bytes]:
    """Run ``traced hook claude-code`` as Claude Code does: one JSON object on stdin."""
    data = raw if raw is not None else json.dumps({**HOOK_BASE, "hook_event_name": event, **fields})
    body = data.encode() if isinstance(data, str) else data
    res = subprocess.run([sys.executable, "-m", "traced", "hook", "claude-code", *args], input=body,
                         env=d.env, capture_output=True, timeout=timeout)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b""
    return res


def trace_of(d: Daemon, sid: str = SID, skill: str = "claude-code") -> list[dict[str, Any]]:
    found = sorted(d.root.glob(f"*/{skill}/{sid}/trace.jsonl"))
    assert len(found) == 1, found
    records = read_trace(found[0])
    assert_gap_free(records)
    return records


def raw_trace(d: Daemon, sid: str, skill: str) -> str:
    (path,) = d.root.glob(f"*/{skill}/{sid}/trace.jsonl")
    return path.read_text()


def meta_of(d: Daemon, sid: str = SID, skill: str = "claude-code") -> dict[str, Any]:
    (path,) = d.root.glob(f"*/{skill}/{sid}/meta.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def nested(levels: int, leaf: Any = "x") -> Any:
    value: Any = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def follow_to_marker(value: Any) -> tuple[int, Any]:
    """How many ``a`` keys lead to the first non-``a`` map, and that map."""
    n = 0
    while isinstance(value, dict) and set(value) == {"a"}:
        value = value["a"]
        n += 1
    return n, value


# ---------------------------------------------------------------- 1. strings that are not valid Unicode

def test_hook_lone_surrogate_is_recorded_with_fffd_and_keeps_the_turn(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    raw = json.dumps({**HOOK_BASE, "hook_event_name": "UserPromptSubmit"})[:-1] + ', "prompt": "hi \\ud83d"}'
    hook(daemon, "UserPromptSubmit", raw)
    hook(daemon, "PreToolUse", tool_name="Bash", tool_use_id="toolu_1", tool_input={"command": "ls \ud83d\ude00"})
    records = trace_of(daemon)
    assert [(r["step"], r.get("turn"), r["phase"]) for r in records] == [
        (1, None, "start"), (2, 1, "user_prompt"), (3, 1, "tool_call")]
    assert records[1]["payload"]["prompt"] == "hi \ufffd"
    assert records[2]["payload"]["args"] == {"command": "ls \U0001f600"}  # a whole pair stays the emoji


def test_hook_invalid_utf8_and_a_bom_are_read(daemon: Daemon) -> None:
    body = ("\ufeff" + json.dumps({**HOOK_BASE, "hook_event_name": "SessionStart", "source": "startup"})).encode()
    hook(daemon, "SessionStart", body)
    text = json.dumps({**HOOK_BASE, "hook_event_name": "UserPromptSubmit", "prompt": "caf@"}).encode()
    hook(daemon, "UserPromptSubmit", text.replace(b"caf@", b"caf\xe9"))
    records = trace_of(daemon)
    assert [r["phase"] for r in records] == ["start", "user_prompt"]
    assert records[1]["payload"]["prompt"] == "caf\ufffd"


def test_traced_event_lone_surrogate_and_invalid_utf8(daemon: Daemon, short_tmp: Path) -> None:
    sid = json.loads(daemon.cli("start", "--skill", "sh", check=True).stdout)["session_id"]
    res = daemon.cli("event", sid, "--phase", "note", "--payload", '{"message":"hi \\ud83d"}')
    assert (res.returncode, res.stdout.strip()) == (0, "2"), res.stderr
    bad = short_tmp / "bad.json"
    bad.write_bytes(b'{"message":"caf\xe9"}')
    res = daemon.cli("event", sid, "--phase", "note", "--payload-file", str(bad))
    assert (res.returncode, res.stdout.strip()) == (0, "3"), res.stderr
    records = trace_of(daemon, sid, "sh")
    assert [r["payload"]["message"] for r in records[1:]] == ["hi \ufffd", "caf\ufffd"]


def test_clients_repair_lone_surrogates(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session("py", owner_pid=-1)
        assert s.note("hi \ud83d") == 2
        assert s.event("decision", {"k\udc00ey": ["v\ud800"]}) == 3
        s.end()

    async def go() -> None:
        async with AsyncClient(daemon.socket, spool=False) as ac:
            s2 = await ac.session("apy", owner_pid=-1)
            assert await s2.note("bye \udbff") == 2
            await s2.end()

    anyio.run(go)
    py = trace_of(daemon, s.session_id, "py")
    assert py[1]["payload"] == {"message": "hi \ufffd"}
    assert py[2]["payload"] == {"k\ufffdey": ["v\ufffd"]}
    (apy,) = daemon.root.glob("*/apy/*/trace.jsonl")
    assert read_trace(apy)[1]["payload"] == {"message": "bye \ufffd"}


# ---------------------------------------------------------------- 2. integers past 64 bits

def test_big_integers_land_exactly_from_every_entry_point(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "PreToolUse", tool_name="mcp__eth__transfer", tool_use_id="toolu_w",
         tool_input={"wei": 100000000000000000000, "neg": -(10**30)})
    raw = raw_trace(daemon, SID, "claude-code")
    assert '"args":{"wei":100000000000000000000,"neg":-1000000000000000000000000000000}' in raw
    sid = json.loads(daemon.cli("start", "--skill", "sh", check=True).stdout)["session_id"]
    res = daemon.cli("event", sid, "--phase", "note", "--payload", '{"n":18446744073709551616}')
    assert (res.returncode, res.stdout.strip()) == (0, "2"), res.stderr
    assert '"payload":{"n":18446744073709551616}' in raw_trace(daemon, sid, "sh")
    with daemon.client() as c:
        s = c.session("py", owner_pid=-1)
        assert s.event("note", {"n": 2**70}, ack=True) == 2
        s.event("note", {"n": -(2**80)}, ack=False)
        c.sync()
        s.end()
    text = raw_trace(daemon, s.session_id, "py")
    assert f'"payload":{{"n":{2**70}}}' in text and f'"payload":{{"n":{-(2**80)}}}' in text


# ---------------------------------------------------------------- 3. nested past the limit

@pytest.mark.parametrize("levels", [70, 200])
def test_deep_payloads_keep_the_record_with_a_marker(daemon: Daemon, levels: int) -> None:
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "PreToolUse", tool_name="Bash", tool_use_id="toolu_d", tool_input=nested(levels))
    records = trace_of(daemon)
    call = records[-1]
    assert call["phase"] == "tool_call" and call["payload"]["call_id"] == "toolu_d"
    # payload is depth 1 and args depth 2: the map at depth 65 is the marker
    assert follow_to_marker(call["payload"]["args"]) == (63, {"$omitted": "too_deep", "depth": 65})
    with daemon.client() as c:
        s = c.session("py", owner_pid=-1)
        assert s.event("note", {"deep": nested(levels)}) == 2
        s.end()
    note = trace_of(daemon, s.session_id, "py")[1]
    assert follow_to_marker(note["payload"]["deep"]) == (63, {"$omitted": "too_deep", "depth": 65})


# ---------------------------------------------------------------- 4. oversized events

def test_hook_oversized_write_keeps_its_small_fields(daemon: Daemon) -> None:
    content = "y" * (12 * 1024 * 1024)
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "PreToolUse", tool_name="Write", tool_use_id="toolu_big", timeout=60,
         tool_input={"file_path": "/home/dev/src/big.txt", "content": content})
    call = trace_of(daemon)[-1]
    assert call["payload"]["args"] == {"file_path": "/home/dev/src/big.txt",
                                       "content": {"$omitted": "too_large", "bytes": len(content) + 5}}
    assert (call["payload"]["tool"], call["payload"]["call_id"]) == ("Write", "toolu_big")


# ---------------------------------------------------------------- 5. stdin that is never closed

def test_hook_stops_reading_at_the_first_complete_json_value(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    proc = subprocess.Popen([sys.executable, "-m", "traced", "hook", "claude-code"], env=daemon.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({**HOOK_BASE, "hook_event_name": "UserPromptSubmit", "prompt": "open pipe"}).encode())
    proc.stdin.flush()  # and never closed
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.stdin.close()
    assert [(r["phase"], r["payload"].get("prompt")) for r in trace_of(daemon)] == [
        ("start", None), ("user_prompt", "open pipe")]


# ---------------------------------------------------------------- 6. a daemon that never answers

def test_wedged_daemon_hook_and_event_spool_then_land(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    sid = json.loads(daemon.cli("start", "--skill", "sh", check=True).stdout)["session_id"]
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        hook(daemon, "SessionEnd", reason="prompt_input_exit", timeout=20)  # budget-bound: never hangs
        res = daemon.cli("event", sid, "--phase", "note", "--payload", '{"message":"while wedged"}')
        assert (res.returncode, res.stdout.strip()) == (0, "0"), res.stderr  # 0: spooled
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    records = wait_for(lambda: (t := trace_of(daemon)) and t[-1]["phase"] == "end" and t, what="SessionEnd lands")
    assert [r["phase"] for r in records] == ["start", "end"]
    assert records[-1]["payload"] == {"outcome": "success", "summary": "prompt_input_exit"}
    sh = wait_for(lambda: (t := trace_of(daemon, sid, "sh")) and len(t) == 2 and t, what="the event lands")
    assert sh[1]["payload"] == {"message": "while wedged"}


# ---------------------------------------------------------------- 7. late and out-of-order hook events

def test_late_post_tool_use_after_session_end_keeps_the_outcome(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "PreToolUse", tool_name="Bash", tool_use_id="toolu_late", tool_input={"command": "sleep 1"})
    hook(daemon, "SessionEnd", reason="logout")
    ended = meta_of(daemon)
    hook(daemon, "PostToolUse", tool_name="Bash", tool_use_id="toolu_late", tool_input={"command": "sleep 1"},
         tool_response={"stdout": "done", "stderr": ""})
    records = trace_of(daemon)
    assert [(r["step"], r["phase"], r.get("late")) for r in records] == [
        (1, "start", None), (2, "tool_call", None), (3, "end", None), (4, "tool_result", True)]
    assert records[3]["payload"]["call_id"] == "toolu_late"
    meta = meta_of(daemon)
    assert (meta["outcome"], meta["ended_at"], meta["summary"]) == ("success", ended["ended_at"], "logout")
    assert (meta["steps"], meta["phases"]["end"], meta["phases"]["tool_result"]) == (4, 1, 1)


def test_late_event_after_a_daemon_restart_still_never_reopens(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "SessionEnd", reason="clear")
    daemon.stop()
    daemon.start()
    hook(daemon, "Notification", notification_type="idle_prompt", message="still there?")
    records = trace_of(daemon)
    assert [(r["phase"], r.get("late")) for r in records] == [("start", None), ("end", None), ("hook", True)]
    assert meta_of(daemon)["outcome"] == "success"


def test_new_prompt_after_session_end_resumes_the_conversation(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "SessionEnd", reason="logout")
    hook(daemon, "UserPromptSubmit", prompt="back again")
    records = trace_of(daemon)
    assert [r["phase"] for r in records] == ["start", "end", "start", "user_prompt"]
    assert records[2]["payload"] == {"resumed": True}
    assert "ended_at" not in meta_of(daemon)  # in flight again, for every reader


def test_result_before_its_call_is_paired_by_call_id(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    hook(daemon, "PostToolUse", tool_name="Read", tool_use_id="toolu_r", tool_input={"file_path": "/a"},
         tool_response={"file": {"filePath": "/a", "numLines": 3}})
    hook(daemon, "PreToolUse", tool_name="Read", tool_use_id="toolu_r", tool_input={"file_path": "/a"})
    res = daemon.cli("show", SID, "--json", check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    by_phase = {r["phase"]: r for r in rows if r["phase"] in ("tool_call", "tool_result")}
    assert (by_phase["tool_result"]["step"], by_phase["tool_call"]["step"]) == (2, 3)
    from traced.format.pairing import pair_positions

    pairs = pair_positions((r["step"], r["phase"], r["payload"]) for r in trace_of(daemon))
    assert pairs == {2: 3, 3: 2}


# ---------------------------------------------------------------- 8. one unencodable value in a client

def test_one_unencodable_event_fails_alone(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session("py", owner_pid=-1)
        with pytest.raises(RequestError) as e:
            s.note("x", extra=object())
        assert e.value.code == "invalid_event"
        assert s.note("next") == 2
        with pytest.raises(RequestError):
            s.event("note", {"bad": object()}, ack=False)
        s.event("note", {"message": "batched"}, ack=False)
        c.sync()
        s.end()
    records = trace_of(daemon, s.session_id, "py")
    assert [(r["step"], r["phase"], r["payload"].get("message")) for r in records] == [
        (1, "start", None), (2, "note", "next"), (3, "note", "batched"), (4, "end", None)]


# ---------------------------------------------------------------- 9. poison events

@pytest.mark.parametrize("ts", [float("nan"), float("inf"), -1.0, 1e20])
def test_poison_timestamps_are_recorded_at_receipt_and_the_connection_lives(daemon: Daemon, ts: float) -> None:
    with daemon.client() as c:
        s = c.session("py", owner_pid=-1)
    sock = __import__("socket").socket(__import__("socket").AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    before = time.time()
    sock.sendall(bytes(encode(protocol.Emit(id=7, session_id=s.session_id, phase="note", payload={"m": 1}, ts=ts)))
                 + bytes(encode(protocol.StatusRequest(id=8))))
    framer, replies = Framer(), []
    while len(replies) < 2:
        replies += [protocol.decode_reply(b) for b in framer.feed(sock.recv(65536))]
    sock.close()
    assert isinstance(replies[0], protocol.Ack) and (replies[0].id, replies[0].step) == (7, 2)
    assert isinstance(replies[1], protocol.Status) and replies[1].id == 8
    note = trace_of(daemon, s.session_id, "py")[1]
    from traced.format.records import parse_ts

    assert before - 1 <= parse_ts(note["ts"]) <= time.time() + 1


# ---------------------------------------------------------------- 10. a long secret in the environment

def test_long_env_secrets_start_the_daemon_and_are_redacted(daemon_factory: Any) -> None:
    long_token = "IQoJb3JpZ2luX2VjE" + "A" * 1200
    d: Daemon = daemon_factory(env={"AWS_SESSION_TOKEN": long_token})
    client_secret = "sso" + "B" * 1500
    env = {**d.env, "MY_SSO_TOKEN": client_secret}
    code = ("import sys; from traced import Client\n"
            "with Client(sys.argv[1]) as c:\n"
            "    s = c.session('env', owner_pid=-1)\n"
            "    s.note('a ' + sys.argv[2] + ' b ' + sys.argv[3]); s.end()\n")
    res = subprocess.run([sys.executable, "-c", code, str(d.socket), long_token, client_secret], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (path,) = d.root.glob("*/env/*/trace.jsonl")
    note = read_trace(path)[1]
    assert note["payload"]["message"] == "a <redacted:env-value> b <redacted:env-value>"


# ---------------------------------------------------------------- 11. a spool that cannot be written

def test_unwritable_spool_loses_events_without_raising_and_is_reported(daemon_factory: Any,
                                                                     short_tmp: Path) -> None:
    d: Daemon = daemon_factory(start=False)
    not_a_dir = short_tmp / "spool-file"
    not_a_dir.write_text("")
    code = ("import sys; from traced import Client\n"
            "c = Client(sys.argv[1], spool_after=0.1, spool_dir=sys.argv[2])\n"
            "with c:\n"
            "    s = c.session('lossy', owner_pid=-1)\n"
            "    print(s.note('one'), s.note('two'), c.lost)\n")
    res = subprocess.run([sys.executable, "-c", code, str(d.socket), str(not_a_dir / "sub")], env=d.env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["None", "None", "2"]
    assert res.stderr.count("cannot write the spool") == 1
    d.start()
    with Client(d.socket, spool_dir=not_a_dir / "sub") as c:
        c._conv.lost = 2  # the same client process would say so in its next hello
        c._drop()
        c.connect()
        assert c.status()["client_events_lost"] == 2


# ---------------------------------------------------------------- 12. one long-lived client, many sessions

def test_a_long_lived_client_opens_and_closes_past_the_per_connection_limit(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    with d.client() as c:
        for i in range(1100):
            s = c.session("many", owner_pid=-1)
            if i % 100 == 0:
                s.note(f"session {i}")
            s.end()
        assert c.status()["sessions_closed"] == 1100


# ---------------------------------------------------------------- 13. a bad or misplaced hook option

@pytest.mark.parametrize("args", [["--bogus", "x"], ["--socket"], ["--idle-timeout", "soon"], ["extra"]])
def test_hook_never_exits_2_whatever_its_arguments(daemon: Daemon, args: list[str]) -> None:
    res = hook(daemon, "SessionStart", None, *args, source="startup")
    assert res.stderr.startswith(b"traced hook: ")


def test_hook_socket_option_after_the_agent_and_unknown_agent(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", None, "--socket", str(daemon.socket), source="startup")
    assert [r["phase"] for r in trace_of(daemon)] == ["start"]
    res = subprocess.run([sys.executable, "-m", "traced", "hook", "claude-codex"], input=b"{}", env=daemon.env,
                         capture_output=True, timeout=30)
    assert (res.returncode, res.stdout) == (0, b"") and b"unknown agent" in res.stderr


# ---------------------------------------------------------------- 14. no XDG_RUNTIME_DIR

@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory another uid owns")
def test_clients_never_talk_into_another_users_directory(short_tmp: Path) -> None:
    import socket

    squat = short_tmp / "squat"
    squat.mkdir(mode=0o777)
    os.chown(squat, 65534, 65534)
    os.chmod(short_tmp, 0o755)
    path = squat / "traced.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(0.5)
    env = {**os.environ, "TRACED_SOCKET": str(path), "MY_API_TOKEN": "sk-live-0123456789abcdef",
           "XDG_STATE_HOME": str(short_tmp / "state")}  # the refused event spools here, not in the real state
    res = subprocess.run([sys.executable, "-m", "traced", "event", "01JD0000000000000000000000", "--phase", "note"],
                         env=env, capture_output=True, text=True, timeout=60)
    code = ("import sys; from traced import Client\n"
            "c = Client(sys.argv[1], spool=False)\n"
            "try:\n    c.connect()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    res2 = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                          timeout=60)
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody connected: not a byte, not a secret, went to the squatter
    listener.close()
    assert "owned by uid 65534" in res2.stdout
    assert res.returncode == 0 and res.stdout.strip() == "0"  # spooled, in the user's own state dir


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory another uid owns")
def test_daemon_refuses_a_foreign_runtime_directory(daemon_factory: Any, short_tmp: Path) -> None:
    d: Daemon = daemon_factory(start=False)
    squat = short_tmp / "squat"
    squat.mkdir(mode=0o777)
    os.chown(squat, 65534, 65534)
    res = subprocess.run([sys.executable, "-m", "traced", "--socket", str(squat / "traced.sock"), "serve"],
                         env=d.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "owned by uid 65534" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------- more of the same families, from other trackers

def test_hook_raw_control_characters_and_unescaped_windows_paths(daemon: Daemon) -> None:
    """claude-code#53463 (literal newlines/tabs inside JSON strings), claude-plugins-official#1211 (C:\\Users…)."""
    hook(daemon, "SessionStart", source="startup")
    raw = ('{"session_id": "' + SID + '", "hook_event_name": "UserPromptSubmit", "cwd": "C:\\Users\\dev\\src",'
           ' "prompt": "line one\nline\ttwo"}')
    hook(daemon, "UserPromptSubmit", raw)
    records = trace_of(daemon)  # the whole object parsed: the odd path did not cost the event
    assert [(r["phase"], r.get("turn")) for r in records] == [("start", None), ("user_prompt", 1)]
    assert records[1]["payload"]["prompt"] == "line one\nline\ttwo"


def test_a_tool_event_delivered_twice_is_recorded_once(daemon: Daemon) -> None:
    """claude-code#76297 and #10871: the same hook registered twice runs twice with the same stdin."""
    hook(daemon, "SessionStart", source="startup")
    pre = {"tool_name": "Bash", "tool_use_id": "toolu_dup", "tool_input": {"command": "ls"}}
    post = {**pre, "tool_response": {"stdout": "a", "stderr": ""}}
    for _ in range(2):
        hook(daemon, "PreToolUse", **pre)
    for _ in range(2):
        hook(daemon, "PostToolUse", **post)
    records = trace_of(daemon)
    assert [r["phase"] for r in records] == ["start", "tool_call", "tool_result"]
    assert records[2]["payload"]["call_id"] == "toolu_dup"


# ---------------------------------------------------------------- what the adversarial review found

def test_an_owner_pid_past_any_pid_is_refused_and_the_daemon_lives(daemon: Daemon) -> None:
    res = daemon.cli("start", "--skill", "poison", "--pid", "2147483648")
    assert res.returncode == 1 and "owner_pid 2147483648 is not a process id" in res.stderr
    assert daemon.alive()
    daemon.stop()
    daemon.start()  # and nothing left behind makes it crash on start
    with daemon.client() as c:
        assert c.status()["open_sessions"] == 0


def test_big_integers_survive_the_spool(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    res = subprocess.run([sys.executable, "-m", "traced", "hook", "claude-code"], env=d.env, capture_output=True,
                         timeout=60, input=json.dumps({**HOOK_BASE, "hook_event_name": "PreToolUse",
                                                       "tool_name": "mcp__eth__send", "tool_use_id": "toolu_s",
                                                       "tool_input": {"wei": 10**20}}).encode())
    assert (res.returncode, res.stderr) == (0, b"")
    d.start()
    records = wait_for(lambda: (t := list(d.root.glob(f"*/claude-code/{SID}/trace.jsonl"))) and read_trace(t[0]),
                       what="the spooled hook event lands")
    assert records[-1]["payload"]["args"] == {"wei": 10**20}


def test_a_hook_payload_over_the_key_limit_keeps_its_record(daemon: Daemon) -> None:
    hook(daemon, "SessionStart", source="startup")
    rows = [{"id": i, "name": f"row {i}", "state": "open", "owner": "dev"} for i in range(2600)]
    hook(daemon, "PostToolUse", tool_name="mcp__db__query", tool_use_id="toolu_k", tool_input={"q": "select"},
         tool_response={"rows": rows, "count": 2600})
    result = trace_of(daemon)[-1]
    assert (result["phase"], result["payload"]["call_id"], result["payload"]["server"]) == (
        "tool_result", "toolu_k", "db")
    assert result["payload"]["response"]["count"] == 2600  # the small sibling stays
    assert result["payload"]["response"]["rows"]["$omitted"] == "too_large"


def test_a_target_the_daemon_refuses_costs_the_target_not_the_event(daemon: Daemon) -> None:
    res = hook(daemon, "SessionStart", None, "--target", "/nonexistent/dir", source="startup")
    assert b"recording under the global root" in res.stderr
    assert [r["phase"] for r in trace_of(daemon)] == ["start"]


def test_a_second_daemon_on_the_same_root_refuses(daemon: Daemon, short_tmp: Path) -> None:
    other = dict(daemon.env, XDG_STATE_HOME=str(short_tmp / "other-state"),
                 TRACED_SOCKET=str(short_tmp / "run2" / "t.sock"))
    res = subprocess.run([sys.executable, "-m", "traced", "serve", "--root", str(daemon.root)], env=other,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert daemon.proc is not None and f"(pid {daemon.proc.pid}) holds the sessions root" in res.stderr


def test_a_full_daemon_makes_the_hook_spool_not_lose(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    (d.base / "config" / "traced").mkdir(parents=True, exist_ok=True)
    (d.base / "config" / "traced" / "config.toml").write_text("max_connections = 1\n")
    d.start()
    import socket

    holder = socket.socket(socket.AF_UNIX)
    holder.connect(str(d.socket))
    holder.sendall(b"\0\0\0")  # busy mid-frame: never silent long enough to be reaped
    try:
        res = hook(d, "SessionStart", source="startup")
    finally:
        holder.close()
    assert res.stderr == b"", res.stderr
    records = wait_for(lambda: (t := list(d.root.glob(f"*/claude-code/{SID}/trace.jsonl"))) and read_trace(t[0]),
                       what="the spooled event lands")
    assert [r["phase"] for r in records] == ["start"]
