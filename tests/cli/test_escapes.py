"""Text from a trace never drives the terminal (issue #15's adversary pass): a note, an error or a
tool name holding ESC sequences, BEL, NUL, CR or a bidi override is shown escaped by show,
replay, tail and ls, on a pipe and on a TTY; ``--json`` keeps the exact text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import fixtures_traces as fx
from traced.cli.main import main
from traced.cli.render import visible

pytestmark = pytest.mark.usefixtures("utc")
SID = "01JE0ESC000000000000000001"
EVIL = "ok\x1b]0;PWNED\x07\x1b[2J\x1b[1A\x1b[2Khidden\x00\r\u202eevil\x9b31m"
SHOWN = "ok\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[1A\\x1b[2Khidden\\x00\\x0d\\u202eevil\\x9b31m"


def evil_session(root: Path) -> None:
    t0 = "2026-11-21T10:00:00.000000Z"
    lines = fx.numbered([
        fx.rec(t0, "esc", SID, "start", {"input": EVIL}),
        fx.rec(fx.at(t0, 1), "esc", SID, "note", {"message": EVIL}),
        fx.rec(fx.at(t0, 2), "esc", SID, "tool_call", {"tool": "T" + EVIL, "call_id": "c1", "args": {"x": EVIL}}),
        fx.rec(fx.at(t0, 3), "esc", SID, "tool_result", {"tool": "T" + EVIL, "call_id": "c1", "ok": False,
                                                         "error": EVIL}),
        fx.rec(fx.at(t0, 4), "esc", SID, "end", {"outcome": "failure", "summary": EVIL}),
    ])
    fx.write_session(root, "2026-11-21", "esc", SID, list(lines), fx.traced_meta(lines))


def test_visible_escapes_controls_and_keeps_text() -> None:
    assert visible(EVIL, cell=True) == SHOWN
    assert visible("line one\n\tline two é 日本") == "line one\n\tline two é 日本"
    assert visible("a\nb", cell=True) == "a\\x0ab"


@pytest.mark.parametrize("argv", [["show", SID[:8]], ["show", SID[:8], "--full"], ["replay", SID[:8]],
                                  ["replay", SID[:8], "--full"], ["tail"], ["ls"]])
def test_no_control_character_reaches_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   argv: list[str]) -> None:
    evil_session(tmp_path)
    assert main([*argv, "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    bad = {c for c in out if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 or c == "\u202e"}
    assert not bad, sorted(bad)
    if argv[0] != "ls":
        assert "\\x1b]0;PWNED\\x07" in out


def test_json_keeps_the_exact_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil_session(tmp_path)
    assert main(["show", SID[:8], "--json", "--root", str(tmp_path)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[1]["payload"]["message"] == EVIL
