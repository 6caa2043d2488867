"""devboy compatibility, the format's first promise: devboy's own types read what traced writes.

Every test that runs a daemon is checked too (tests/conftest.py runs ``check_root`` on its root).
Here: the kinds of session the issue names, each checked field by field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, read_trace, wait_for
from tests.devboy_schema import SessionMeta, check_root, check_session

SID = "2b9e4d1c-7a3f-4e8b-9c6d-1f0a2b3c4d5e"


def _meta(sdir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((sdir / "meta.json").read_text())
    return data


def test_in_flight_and_ended_sessions_have_devboys_required_counters(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session("plain", owner_pid=-1, meta={"skill_version": "3"})
        flight = _meta(Path(s.dir))
        assert (flight["tool_calls"], flight["errors"], flight["skill_version"]) == (0, 0, 3)
        assert "ended_at" not in flight
        check_session(Path(s.dir))
        s.end()
    ended = _meta(Path(s.dir))
    assert (ended["tool_calls"], ended["errors"], ended["outcome"]) == (0, 0, "success")
    check_session(Path(s.dir))


def test_a_version_that_is_not_an_integer_stays_out_of_devboys_field(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session("versioned", owner_pid=-1, meta={"skill_version": "1.2.0-rc1"})
        s.end()
    meta = _meta(Path(s.dir))
    assert "skill_version" not in meta and meta["skill_version_text"] == "1.2.0-rc1"
    check_session(Path(s.dir))


def test_aborted_hook_made_and_spool_made_sessions(daemon: Daemon, short_tmp: Path) -> None:
    with daemon.client() as c:  # aborted by its owner's exit
        owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # the owner, kept alive
        s = c.session("aborted", owner_pid=owner.pid)
        s.tool_call("Bash", {"cmd": "ls"})
        s.tool_result("Bash", ok=False, error="no")
        owner.kill()
        owner.wait()
    wait_for(lambda: "ended_at" in _meta(Path(s.dir)), what="the session is finalized")
    aborted = _meta(Path(s.dir))
    assert (aborted["outcome"], aborted["tool_calls"], aborted["errors"]) == ("aborted", 1, 1)
    hook = {"session_id": SID, "hook_event_name": "SessionStart", "source": "startup", "cwd": "/tmp",
            "transcript_path": "/tmp/t.jsonl"}
    res = daemon.cli("hook", "claude-code", input=json.dumps(hook))
    assert res.returncode == 0, res.stderr
    # spool-made: written while no daemon runs, ingested at start
    daemon.stop()
    code = ("import sys; from traced import Client\n"
            "with Client(sys.argv[1], spool_after=0.1) as c:\n"
            "    s = c.session('spooled', owner_pid=-1); s.note('offline'); s.end()\n")
    res2 = subprocess.run([sys.executable, "-c", code, str(daemon.socket)], env=daemon.env, capture_output=True,
                          text=True, timeout=60)
    assert res2.returncode == 0, res2.stderr
    daemon.start()
    spooled = wait_for(lambda: sorted(daemon.root.glob("*/spooled/*/meta.json")), what="the spool is ingested")
    wait_for(lambda: "ended_at" in json.loads(spooled[0].read_text()), what="the spooled session ends")
    assert [r["phase"] for r in read_trace(spooled[0].parent / "trace.jsonl")] == ["start", "note", "end"]
    assert check_root(daemon.root) == 4 + 1 + 3  # every line of the three sessions, each readable by devboy


def test_the_schema_rejects_what_devboy_rejects() -> None:
    """The checker can fail: each of the old defects is a parse error for devboy's types."""
    import msgspec

    base = {"session_id": "s", "skill": "k", "devboy_version": "traced 0.1.0",
            "started_at": "2026-11-21T22:48:17.123456Z", "tool_calls": 0, "errors": 0}
    msgspec.json.decode(json.dumps(base), type=SessionMeta)
    for broken in ({k: v for k, v in base.items() if k != "tool_calls"}, {**base, "skill_version": "3"},
                   {**base, "errors": -1}, {**base, "outcome": "running"}, {**base, "started_at": "yesterday"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(json.dumps(broken), type=SessionMeta)
