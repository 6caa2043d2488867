"""The shell path: minipack stays byte-compatible with msgspec; `traced event` stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import Daemon
from traced.wire import minipack, protocol

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=300) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=40), inner, max_size=20),
    max_leaves=60,
)


@settings(max_examples=500, deadline=None)
@given(value=values)
def test_minipack_and_msgspec_agree(value: Any) -> None:
    ours = minipack.packb(value)
    assert msgspec.msgpack.decode(ours) == value
    assert minipack.unpackb(msgspec.msgpack.encode(value)) == value
    assert minipack.unpackb(ours) == value


def test_minipack_frames_decode_as_protocol_messages() -> None:
    body = minipack.packb({"op": "emit", "id": 2, "session_id": "s", "phase": "note",
                           "payload": {"message": "é" * 40}, "ts": 1.5, "seq": 1, "ack": True})
    assert protocol.decode_request(body) == protocol.Emit(id=2, session_id="s", phase="note",
                                                          payload={"message": "é" * 40}, ts=1.5, seq=1)
    reply = minipack.unpackb(msgspec.msgpack.encode(protocol.Ack(id=2, step=7)))
    assert reply == {"op": "ack", "id": 2, "step": 7}


def test_traced_event_imports_nothing_heavy(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("light", owner_pid=-1)
    code = (
        "import sys; from traced.cli.main import main\n"
        f"rc = main(['event', {opened.session_id!r}, '--phase', 'note', '--payload', '{{\"message\": \"hi\"}}'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('msgspec', 'anyio', 'structlog', 'watchfiles', 'rich', 'typing_extensions', 'genai_prices', "
        "'typing', 'pathlib', 'argparse', 'gettext'))\n"
        "print(rc, heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=daemon.env, capture_output=True, text=True, timeout=30)
    assert res.stdout.splitlines() == ["2", "0 []"], res.stderr


def test_traced_event_falls_back_with_the_same_key(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    env = {**d.env, "TRACED_SPOOL_AFTER": "5"}
    d.start()
    with d.client() as c:
        opened = c.open("fallback", owner_pid=-1)
    d.stop()
    proc = subprocess.Popen([sys.executable, "-m", "traced", "event", opened.session_id, "--phase", "note",
                             "--payload", '{"message": "while restarting"}'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    d.start()  # comes back within the client's retry window
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "2", err


def test_claude_code_hook_imports_nothing_heavy(daemon: Daemon) -> None:
    hook = {"session_id": "9a3e0d5c-6f1b-4b8e-9d2a-0c1e2f3a4b5c", "hook_event_name": "SessionStart",
            "source": "startup", "cwd": "/tmp", "transcript_path": "/tmp/t.jsonl"}
    code = (
        "import sys; from traced.cli.main import main\n"
        "rc = main(['hook', 'claude-code'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('msgspec', 'anyio', 'structlog', 'watchfiles', 'rich', 'typing_extensions', 'genai_prices'))\n"
        "print(rc, heavy, file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=daemon.env, input=json.dumps(hook),
                         capture_output=True, text=True, timeout=30)
    assert res.stdout == "" and res.stderr.splitlines() == ["0 []"], res.stderr
    assert next(daemon.root.glob(f"*/claude-code/{hook['session_id']}/trace.jsonl")).read_text().count("\n") == 1


def test_quick_args_take_plain_lines_and_leave_the_rest_to_argparse() -> None:
    from traced.cli.event import quick_args

    a = quick_args(["--socket", "/s", "event", "ID", "--phase", "note", "--payload", "{}"])
    assert a is not None and (a.socket, a.session_id, a.phase, a.payload) == ("/s", "ID", "note", "{}")
    b = quick_args(["event", "ID", "--phase", "note", "-"])
    assert b is not None and b.payload == "-"
    c = quick_args(["event", "ID", "--phase", "artifact", "--attach", "/tmp/x"])
    assert c is not None and c.attach == "/tmp/x"
    for odd in (["event", "ID", "--phase", "note", "--help"], ["event", "ID"], ["event", "--phase", "note"],
                ["event", "ID", "--phase", "note", "--payload", "{}", "--payload-file", "f"],
                ["event", "ID", "--phase"], ["event", "ID", "extra", "--phase", "note"],
                ["event", "ID", "--phase", "note", "--bogus"]):
        assert quick_args(odd) is None, odd


def test_unusual_event_lines_get_argparse_messages(daemon: Daemon) -> None:
    res = daemon.cli("event", "ID", "--phase", "note", "--bogus")
    assert res.returncode == 2 and "unrecognized arguments: --bogus" in res.stderr
    res = daemon.cli("event", "--help")
    assert res.returncode == 0 and "--payload-file" in res.stdout
