"""Tables that fit the terminal (issue #15): ``ls`` and ``usage`` at 80 and 120 columns drop
and compact the less important columns first, never cutting the ID, outcome or cost; IDs are
shown as git-style unique prefixes that every command accepts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests import fixtures_traces as fx
from tests.conftest import run_in_pty
from traced.cli.main import main
from traced.read.sessions import unique_prefixes

pytestmark = pytest.mark.usefixtures("utc")
REPO = Path(__file__).resolve().parents[2]


def table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int,
          *argv: str) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(width))
    capsys.readouterr()
    assert main(list(argv)) == 0
    lines = capsys.readouterr().out.splitlines()
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"wider than {width}: {too_wide}"
    return lines


def heads(line: str) -> list[str]:
    return line.replace("TOKENS IN/OUT", "TOKENS").replace("CACHE R", "CACHE_R").split()


def test_ls_at_80_and_120_columns(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = table(capsys, monkeypatch, 80, "ls", "--root", str(root))
    assert heads(narrow[0]) == ["STARTED", "SKILL", "ID", "STEPS", "DURATION", "OUTCOME", "ERRORS", "COST"]
    assert narrow[2].split() == ["11-21", "22:48", "review", "01JD3QA8XK", "17", "10.50s", "success", "1",
                                 "$0.0163"]
    wide = table(capsys, monkeypatch, 120, "ls", "--root", str(root))
    assert heads(wide[0]) == ["STARTED", "SKILL", "ID", "STEPS", "TURNS", "DURATION", "OUTCOME", "TOOLS",
                              "ERRORS", "TOKENS", "COST"]
    assert wide[2].split()[:3] == ["2026-11-21", "22:48:17", "review"]
    # each shown id is a prefix that show/replay accept
    for line in narrow[1:]:
        short = line.split()[3]
        assert main(["show", short, "--json", "--root", str(root)]) == 0
    capsys.readouterr()


def test_usage_at_80_and_120_columns(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ("usage", "--since", "2026-11-19..2026-11-21", "--by", "model", "--root", str(root))
    narrow = table(capsys, monkeypatch, 80, *argv)
    assert heads(narrow[1]) == ["MODEL", "SESSIONS", "OK", "FAIL", "IN", "OUT", "HIT", "COST", "$/OK"]
    rows = {line.split()[0]: line.split() for line in narrow[2:8]}
    assert rows["claude-sonnet-4-5"] == ["claude-sonnet-4-5", "2", "1", "0", "1.3k", "350", "62.5%", "$0.0128",
                                         "$0.0128"]
    assert rows["TOTAL"][-2:] == ["$0.0168+?", "$0.0042+?"]
    wide = table(capsys, monkeypatch, 120, *argv)
    assert heads(wide[1]) == ["MODEL", "SESSIONS", "OK", "FAIL", "RUN", "IN", "OUT", "CACHE_R", "CACHE", "W",
                              "HIT", "COST", "UNKNOWN", "$/OK"]
    assert "1,300" in wide[4] and "$0.0168 + unknown" in wide[-3]


def test_a_long_key_is_cut_last_and_the_cost_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    t0, sid = "2026-11-21T10:00:00.000000Z", "01JE0L0NG000000000000001"
    model = "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0-with-a-very-long-deployment-suffix"
    lines = fx.numbered([
        fx.rec(t0, "s", sid, "start", {}),
        fx.rec(t0, "s", sid, "llm_call", {"model": model, "usage": {"input_tokens": 12_345_678},
                                          "cost_usd": 1.5}),
        fx.rec(t0, "s", sid, "end", {"outcome": "success"}),
    ])
    fx.write_session(tmp_path, "2026-11-21", "s", sid, list(lines), fx.traced_meta(lines))
    out = table(capsys, monkeypatch, 80, "usage", "--since", "2026-11-21", "--by", "model",
                "--root", str(tmp_path))
    row = out[2].split()
    assert row[0].endswith("…") and model.startswith(row[0][:-1])
    assert row[-2:] == ["$1.5000", "$1.5000"] and "12.3M" in row


def test_unique_prefixes_are_git_style() -> None:
    ids = ["01JE0AAAA00000000000000001", "01JE0AAAA00000000000000002", "01JE0BBBB0000000000000000X"]
    assert unique_prefixes(ids, ids) == {
        ids[0]: ids[0], ids[1]: ids[1], ids[2]: "01JE0BBB"}
    assert unique_prefixes(["abc"], ["abc", "abcdef"]) == {"abc": "abc"}
    assert unique_prefixes(["01JE0AAAA1"], ["01je0aaaa2", "01JE0AAAA1"]) == {"01JE0AAAA1": "01JE0AAAA1"}


def test_a_real_terminal_of_80_columns_gets_the_fitted_table(root: Path) -> None:
    env = {**os.environ, "TZ": "UTC", "TERM": "xterm-256color", "COLUMNS": "80"}
    code, out = run_in_pty(["ls", "--root", str(root)], env, REPO)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 0 and len(lines) >= 8
    assert max(len(line) for line in lines) <= 80
    assert "01JD3QA8XK" in text and "$0.0163" in text and "…" not in text
