"""The reading commands (traced.cli.read), run in-process on generated session trees.

Goldens are the piped (plain) output, with TZ=UTC. The genai-prices version in
usage output is normalized so that a catalog upgrade does not break them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import fixtures_traces as fx
from tests.conftest import run_in_pty
from traced.cli.main import main

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("utc")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def golden(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def norm_prices(text: str) -> str:
    return re.sub(r"genai-prices \d[\w.]*", "genai-prices X", text)


# --------------------------------------------------------------------------- show

SHOW_REVIEW = golden("""
    session 01JD3QA8XK6T2M9V4B7C5N1P0R  skill review  started 2026-11-21 22:48:17 UTC  success after 10.50s
    STEP      TIME  PHASE        NAME                           DUR  OK       PAIR  DETAIL
       1   +0.000s  start                                                           input=review PR #42 cwd=/home/dev/proj
       2   +0.105s  user_prompt                                                     Please review PR 42
       3   +0.300s  tool_call    Bash                                         ->6   cmd=git diff main
       4   +0.310s  tool_call    Read                                         ->5   path=src/app.py
       5   +0.322s  tool_result  Read                          12ms  ok       <-4   <blob 4390 bytes>
       6   +0.630s  tool_result  Bash                         330ms  ok       <-3   diff --git a/src/app.py b/src/app.py + handle_case_0(request, response, context) + handle_case_1(re…
       7   +4.900s  llm_call     anthropic/claude-sonnet-4-5  4.20s                 1,200 in / 340 out, cache 3,000r/500w, $0.0123
       8   +5.000s  tool_call    Bash                                         ->9   cmd=pytest -q
       9   +7.100s  tool_result  Bash                         2.10s  error    <-8   1 failed, 11 passed
      10   +7.200s  hook         PostToolUse:lint              45ms  ok
      11   +8.000s  user_prompt                                                     Summarize the review
      12   +9.600s  llm_call     openai/gpt-4o                1.50s                 800 in / 200 out, $0.0040
      13  +10.000s  verify       tests                               ok             12 passed
      14  +10.100s  artifact     report                                             review.md (2,048 bytes)
      15  +10.200s  note                                                            LGTM with two nits
      16  +10.300s  decision                                                        {"choice":"approve","why":"tests pass"}
      17  +10.500s  end                                              success        approved with 2 nits
    17 records, 3 tool calls (1 error), 2 llm calls, tokens 2,000 in / 540 out, cost $0.0163
    outcome success after 10.50s
    """)  # noqa: E501


def test_show_golden(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", fx.REVIEW_ID[:10], "--root", str(root))
    assert (code, err) == (0, "")
    assert out == SHOW_REVIEW
    assert "\x1b" not in out


SHOW_TORN = golden("""
    session 01JCZZ1T0RN000000000000002  skill review  started 2026-11-19 21:00:00 UTC  aborted after 30m00s
    STEP     TIME  PHASE      NAME  DUR  OK       PAIR  DETAIL
       1  +0.000s  start
       2  +1.000s  note                                 before the crash
       3  +2.000s  tool_call  Bash       pending  ->?   cmd=sleep 99
    3 records, 1 tool call (0 errors), 0 llm calls
    outcome aborted after 30m00s (reason recovered_after_restart)
    3 malformed lines skipped
    torn last line ignored
    """)


def test_show_reports_malformed_and_torn_lines(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "show", fx.TORN_ID, "--root", str(root))
    assert code == 0
    assert out == SHOW_TORN


def test_show_turn_keeps_only_that_turn(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", fx.REVIEW_ID, "--turn", "2", "--root", str(root))
    assert code == 0
    steps = [int(m) for m in re.findall(r"^\s+(\d+)\s+\+", out, re.M)]
    assert steps == list(range(11, 18))
    assert "7 records, 0 tool calls (0 errors), 1 llm call" in out


def test_show_json_prints_the_records_as_jsonl(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", fx.TORN_ID, "--json", "--root", str(root))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert list(records[2]) == ["ts", "skill", "session_id", "step", "phase", "payload"]
    assert "3 malformed lines skipped" in err  # stdout stays pure JSONL
    code, out, _ = run(capsys, "show", fx.REVIEW_ID, "--json", "--turn", "1", "--root", str(root))
    assert {json.loads(line)["turn"] for line in out.splitlines()} == {1}
    assert len(out.splitlines()) == 9


def test_show_full_keeps_whole_payloads(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "show", fx.REVIEW_ID, "--full", "--root", str(root))
    assert '"finish_reason":"tool_use"' in out
    assert "+    handle_case_5(request, response, context)\\n" in out
    assert '"result_summary":"<blob' not in out  # --full reads spilled blobs back
    assert '"$blob"' not in out


def test_show_devboy_and_foreign_sessions(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", fx.DEVBOY_ID, "--root", str(root))
    assert code == 0
    assert "   3  +3.377s  tool_result  kubectl  2.50s  ok       <-2   deployment configured" in out
    code, out, _ = run(capsys, "show", "foreign", "--root", str(root))
    assert code == 0
    assert '   2  +2.000s  telemetry                            {"cpu":0.93,"rss_mb":512}' in out


# --------------------------------------------------------------------------- ids and errors


def test_unknown_id_exits_1_with_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("show", "replay"):
        code, out, err = run(capsys, cmd, "NOPE", "--root", str(root))
        assert (code, out) == (1, "")
        assert err.startswith(f"traced {cmd}: no session matching 'NOPE'")
        assert err.count("\n") == 1


def test_ambiguous_prefix_exits_2_listing_candidates(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", "01JD3QA8X", "--root", str(root))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert fx.REVIEW_ID in err and fx.REVIEW2_ID in err and "2 sessions match" in err


def test_bad_arguments_exit_2(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ls", "--since", "last-tuesday", "--root", str(root))
    assert code == 2 and err.startswith("traced ls: error: bad window 'last-tuesday'")
    code, _, err = run(capsys, "prune", "--older-than", "soon", "--root", str(root))
    assert code == 2 and "bad --older-than" in err
    with pytest.raises(SystemExit) as exc:
        main(["ls", "--limit", "0", "--root", str(root)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["usage", "--by", "colour", "--root", str(root)])
    assert exc.value.code == 2


def test_default_root_comes_from_paths(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACED_ROOT", str(root))
    monkeypatch.setenv("XDG_STATE_HOME", str(root.parent / "state"))  # no roots.json of this machine's
    code, out, _ = run(capsys, "ls", "--json")
    assert code == 0 and len(out.splitlines()) == 7


# --------------------------------------------------------------------------- ls

LS_ALL = golden("""
    STARTED              SKILL      ID          STEPS  TURNS  DURATION  OUTCOME  TOOLS  ERRORS  TOKENS IN/OUT        COST
    2026-11-21 23:10:00  review     01JD3R0R        3      -         -  running      1       0         100/10     $0.0005
    2026-11-21 22:48:17  review     01JD3QA8XK     17      2    10.50s  success      3       1      2,000/540     $0.0163
    2026-11-20 14:30:00  summarize  01JD2B5W        4      -     5.00s  success      0       0      3,000/500  $0 (local)
    2026-11-20 12:00:00  misc       foreign-        3      -     3.00s  success      0       0              -           -
    2026-11-20 09:00:00  review     01JD3QA8XM      5      -     4.00s  failure      1       1         500/50     unknown
    2026-11-19 21:00:00  review     01JCZZ1T        3      -    30m00s  aborted      0       0              -           -
    2026-11-19 08:00:00  deploy     01JCZZ0D        4      -     3.88s  success      1       0              -           -
    """)  # noqa: E501


def test_ls_golden(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "--root", str(root))
    assert code == 0
    assert out == LS_ALL


def ls_ids(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> list[str]:
    code, out, _ = run(capsys, "ls", "--json", "--root", str(root), *extra)
    assert code == 0
    return [json.loads(line)["session_id"] for line in out.splitlines()]


def test_ls_filters(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ls_ids(capsys, root, "--skill", "deploy") == [fx.DEVBOY_ID]
    assert ls_ids(capsys, root, "--outcome", "failure") == [fx.REVIEW2_ID]
    assert ls_ids(capsys, root, "--outcome", "aborted") == [fx.TORN_ID]
    assert ls_ids(capsys, root, "--running") == [fx.RUNNING_ID]
    assert ls_ids(capsys, root, "--outcome", "running") == [fx.RUNNING_ID]
    assert ls_ids(capsys, root, "--limit", "2") == [fx.RUNNING_ID, fx.REVIEW_ID]
    assert ls_ids(capsys, root, "--since", "2026-11-20") == [
        fx.LOCAL_ID, fx.ODD_ID, fx.REVIEW2_ID]
    assert ls_ids(capsys, root, "--since", "2026-11-19..2026-11-20", "--skill", "review") == [
        fx.REVIEW2_ID, fx.TORN_ID]
    assert ls_ids(capsys, root, "--since", "today") == []


def test_ls_since_today_and_7d(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx.aged_session(tmp_path, "fresh", 0.0001)
    fx.aged_session(tmp_path, "lastweek", 5)
    fx.aged_session(tmp_path, "ancient", 40)
    assert ls_ids(capsys, tmp_path, "--since", "today") == ["fresh"]
    assert ls_ids(capsys, tmp_path, "--since", "7d") == ["fresh", "lastweek"]
    assert ls_ids(capsys, tmp_path, "--since", "30d") == ["fresh", "lastweek"]


def test_ls_json_shape(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "ls", "--json", "--root", str(root), "--skill", "summarize")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["session_id"] == fx.LOCAL_ID and row["skill"] == "summarize"
    assert row["date"] == "2026-11-20" and row["running"] is False
    assert row["outcome"] == "success" and row["duration_s"] == 5.0
    assert row["steps"] == 4 and row["tool_calls"] == 0 and row["errors"] == 0
    assert row["usage"] == {
        "input_tokens": 3000, "output_tokens": 500, "cache_read_tokens": 0,
        "cache_write_tokens": 0, "cost_usd": 0.0, "llm_calls": 2, "unknown_cost_calls": 1,
    }
    assert row["path"].endswith("/2026-11-20/summarize/" + fx.LOCAL_ID)


def test_ls_across_several_roots(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo" / ".devboy" / "sessions"
    fx.aged_session(repo, "in-repo", 0.0001, skill="repo-skill")
    ids = ls_ids(capsys, root, "--root", str(repo))
    assert ids[0] == "in-repo" and len(ids) == 8


# --------------------------------------------------------------------------- replay

REPLAY_REVIEW = golden("""
    === Session 01JD3QA8XK6T2M9V4B7C5N1P0R ===
    Skill:    review
    Started:  2026-11-21 22:48:17 UTC
    Cwd:      /home/dev/proj
    Model(s): claude-sonnet-4-5 (anthropic), gpt-4o (openai)
    Input:    review PR #42

    [1 +0.000s] [Start]
      Input: review PR #42

    [2 +0.105s turn 1] [User]
      Please review PR 42

    [3 +0.300s turn 1] > Bash -> [6]
      Input: {"cmd":"git diff main"}

    [4 +0.310s turn 1] > Read -> [5]
      Input: {"path":"src/app.py"}

    [5 +0.322s turn 1] < Read (ok, 12ms)
      Output: line 0: def handler(request): return respond(request)
              line 1: def handler(reques…[truncated]

    [6 +0.630s turn 1] < Bash (ok, 330ms)
      Output: diff --git a/src/app.py b/src/app.py
              +    handle_case_0(request, response, conte…[truncated]

    [7 +4.900s turn 1] [LLM] anthropic/claude-sonnet-4-5 (4.20s, 1,200 in / 340 out, cache 3,000r/500w, $0.0123)

    [8 +5.000s turn 1] > Bash -> [9]
      Input: {"cmd":"pytest -q"}

    [9 +7.100s turn 1] < Bash (error, 2.10s)
      Error: 1 failed, 11 passed

    [10 +7.200s turn 1] [Hook] PostToolUse:lint (ok, 45ms)

    [11 +8.000s turn 2] [User]
      Summarize the review

    [12 +9.600s turn 2] [LLM] openai/gpt-4o (1.50s, 800 in / 200 out, $0.0040)

    [13 +10.000s turn 2] [Verify] tests: ok
      Output: 12 passed

    [14 +10.100s turn 2] [Artifact] review.md (2,048 bytes) (report)

    [15 +10.200s turn 2] [Note]
      LGTM with two nits

    [16 +10.300s turn 2] [Decision]
      {"choice":"approve","why":"tests pass"}

    === End (success) ===
    Duration: 10.50s | Tokens: 2,000 in / 540 out | Cost: $0.0163
    Summary: approved with 2 nits
    """)


def test_replay_golden(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "replay", fx.REVIEW_ID, "--width", "80", "--root", str(root))
    assert (code, err) == (0, "")
    assert out == REPLAY_REVIEW


def test_replay_default_width_is_200(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "replay", fx.REVIEW_ID, "--root", str(root))
    blob_block = out.split("[5 +0.322s turn 1]")[1].split("\n\n")[0]
    shown = blob_block.split("Output: ", 1)[1].split("…[truncated]")[0]
    assert len(re.sub(r"\n {10}", "\n", shown)) == 200


def test_replay_end_line_costs(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "replay", fx.LOCAL_ID, "--root", str(root))
    assert out.endswith(
        "=== End (success) ===\nDuration: 5.00s | Tokens: 3,000 in / 500 out | Cost: $0 (local)\n"
    )
    _, out, _ = run(capsys, "replay", fx.REVIEW2_ID, "--root", str(root))
    assert "Duration: 4.00s | Tokens: 500 in / 50 out | Cost: unknown\n" in out
    _, out, _ = run(capsys, "replay", fx.RUNNING_ID, "--root", str(root))
    assert out.endswith(
        "=== Running (no end yet) ===\nTokens: 100 in / 10 out | Cost: $0.0005\n"
    )
    assert "> Bash (no result)" in out


def test_replay_json_shape(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", fx.TORN_ID, "--json", "--root", str(root))
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"session", "records", "malformed_lines", "torn"}
    assert doc["malformed_lines"] == 3 and doc["torn"] is True
    assert doc["session"]["outcome"] == "aborted"
    assert [r["phase"] for r in doc["records"]] == ["start", "note", "tool_call"]


# --------------------------------------------------------------------------- usage

USAGE_BY_SKILL = golden("""
    usage 2026-11-19..2026-11-21 by skill
    SKILL      SESSIONS  OK  FAIL  ABORT  RUN     IN    OUT  CACHE R  CACHE W    HIT               COST  UNKNOWN       $/OK  TOK/S
    deploy            1   1     0      0    0      0      0        0        0      -                  -        0          -      -
    misc              1   1     0      0    0      0      0        0        0      -                  -        0          -      -
    review            4   1     1      1    1  2,600    600    3,000      500  49.2%  $0.0168 + unknown        1  $0.0168+?   95.2
    summarize         1   1     0      0    0  3,000    500        0        0   0.0%         $0 (local)        0         $0  200.0
    TOTAL             7   4     1      1    1  5,600  1,100    3,000      500  33.0%  $0.0168 + unknown        1  $0.0042+?  125.3
    prices: genai-prices X, local, reported
    + unknown, +?: cost partly unknown; the figure is a lower bound
    """)  # noqa: E501

USAGE_BY_PROVIDER = golden("""
    usage 2026-11-19..2026-11-21 by provider
    PROVIDER   SESSIONS  OK  FAIL  ABORT  RUN     IN    OUT  CACHE R  CACHE W    HIT               COST  UNKNOWN       $/OK  TOK/S
    -                 3   2     0      1    0      0      0        0        0      -                  -        0          -      -
    acme              1   0     1      0    0    500     50        0        0   0.0%            unknown        1          -  100.0
    anthropic         2   1     0      0    1  1,300    350    3,000      500  62.5%            $0.0128        0    $0.0128   81.0
    ollama            1   1     0      0    0  3,000    500        0        0   0.0%         $0 (local)        0         $0  200.0
    openai            1   1     0      0    0    800    200        0        0   0.0%            $0.0040        0    $0.0040  133.3
    TOTAL             7   4     1      1    1  5,600  1,100    3,000      500  33.0%  $0.0168 + unknown        1  $0.0042+?  125.3
    prices: genai-prices X, local, reported
    + unknown, +?: cost partly unknown; the figure is a lower bound
    """)  # noqa: E501


def test_usage_golden(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "usage", "--since", "2026-11-19..2026-11-21", "--root", str(root))
    assert (code, err) == (0, "")
    assert norm_prices(out) == USAGE_BY_SKILL
    code, out, _ = run(capsys, "usage", "--since", "2026-11-19..2026-11-21", "--by", "provider",
                       "--root", str(root))
    assert norm_prices(out) == USAGE_BY_PROVIDER


def test_usage_json_shape(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "usage", "--since", "2026-11-01..2026-11-30", "--by", "model",
                       "--json", "--root", str(root))
    assert code == 0
    doc = json.loads(out)
    assert doc["by"] == "model"
    assert doc["window"] == {"since": "2026-11-01..2026-11-30", "first": "2026-11-01",
                             "last": "2026-11-30"}
    rows = {r["key"]: r for r in doc["rows"]}
    assert set(rows) == {"-", "acme-private-9000", "claude-sonnet-4-5", "gpt-4o", "llama3.1:8b"}
    assert rows["gpt-4o"]["price_source"].startswith("genai-prices ")
    assert rows["gpt-4o"]["cost_usd"] == pytest.approx(0.004)
    assert rows["claude-sonnet-4-5"]["price_source"] == "reported"
    assert rows["llama3.1:8b"]["price_source"] == "local, reported"
    assert rows["llama3.1:8b"]["local"] is True and rows["llama3.1:8b"]["cost_usd"] == 0
    unknown = rows["acme-private-9000"]
    assert unknown["cost_usd"] is None and unknown["unknown_cost_sessions"] == 1
    assert unknown["price_source"] is None
    assert set(unknown) == {
        "key", "sessions", "success", "failure", "aborted", "running", "llm_calls",
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
        "cost_partial", "local", "unknown_cost_sessions", "unknown_cost_calls", "price_source",
        "cache_hit_rate", "cost_per_success", "tokens_per_s",
    }
    assert doc["total"]["sessions"] == 7


def test_usage_by_day_uses_local_dates(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "usage", "--since", "2026-11-19..2026-11-21", "--by", "day",
                    "--json", "--root", str(root))
    rows = {r["key"]: r["sessions"] for r in json.loads(out)["rows"]}
    assert rows == {"2026-11-19": 2, "2026-11-20": 3, "2026-11-21": 2}


def test_usage_empty_window(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "usage", "--since", "2020-01-01", "--root", str(root))
    assert code == 0
    assert out.splitlines()[-1].split()[:3] == ["TOTAL", "0", "0"]


# --------------------------------------------------------------------------- tail


def test_tail_last_records_across_sessions(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tail", "-n", "5", "--root", str(root))
    assert code == 0
    assert out == golden("""
        2026-11-21 22:48:27.300 review 01JD3QA8XK #16 decision {"choice":"approve","why":"tests pass"}
        2026-11-21 22:48:27.500 review 01JD3QA8XK #17 end success approved with 2 nits
        2026-11-21 23:10:00.000 review 01JD3R0RUN #1 start input=review PR #43
        2026-11-21 23:10:01.000 review 01JD3R0RUN #2 tool_call Bash cmd=ls
        2026-11-21 23:10:02.000 review 01JD3R0RUN #3 llm_call anthropic/claude-sonnet-4-5 100 in / 10 out, $0.0005
        """)


def test_tail_filters_and_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "tail", "--phase", "llm_call", "--json", "--root", str(root))
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["session_id"][:10] for r in records] == [
        "01JD3QA8XM", "01JD2B5W7Y", "01JD2B5W7Y", "01JD3QA8XK", "01JD3QA8XK", "01JD3R0RUN"]
    assert all(r["phase"] == "llm_call" for r in records)
    _, out, _ = run(capsys, "tail", "--skill", "deploy", "-n", "2", "--json", "--root", str(root))
    assert [json.loads(x)["phase"] for x in out.splitlines()] == ["tool_result", "end"]
    _, out, _ = run(capsys, "tail", "--session", "01JCZZ1", "--root", str(root))
    assert len(out.splitlines()) == 3 and "before the crash" in out
    code, _, err = run(capsys, "tail", "--session", "missing", "--root", str(root))
    assert code == 1 and "no session matching" in err


def test_tail_stops_at_old_finished_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx.many_sessions(tmp_path, 50, date="2026-11-01")
    fx.review_session(tmp_path)
    fx.running_session(tmp_path)
    # A record that would be the newest of all, in a session that meta.json says ended on
    # 2026-11-01: tail trusts meta.json and never opens that trace.
    bulk = tmp_path / "2026-11-01" / "bulk" / "01JC0000000000000000000007" / "trace.jsonl"
    with open(bulk, "ab") as f:
        f.write(fx.encode(fx.rec("2026-11-30T00:00:00Z", "bulk", "x", "note", {})))
    _, out, _ = run(capsys, "tail", "-n", "3", "--root", str(tmp_path))
    assert [line.split()[4] for line in out.splitlines()] == ["#1", "#2", "#3"]
    _, out, _ = run(capsys, "tail", "-n", "3", "--skill", "bulk", "--root", str(tmp_path))
    assert "2026-11-30 00:00:00.000 bulk" in out  # read when it is among the newest


# --------------------------------------------------------------------------- prune


@pytest.fixture
def no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No daemon and an empty spool for ``prune`` (it asks the daemon what it holds, and looks at the spool)."""
    for var in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRACED_SOCKET", str(tmp_path / "no-daemon.sock"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def prune_tree(tmp_path: Path) -> dict[str, Path]:
    return {
        "old": fx.aged_session(tmp_path, "old-done", 60),
        "old_running": fx.aged_session(tmp_path, "old-running", 61, running=True),
        "recent": fx.aged_session(tmp_path, "recent-done", 5),
    }


@pytest.mark.usefixtures("no_daemon")
def test_prune_dry_run_removes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = prune_tree(tmp_path)
    size = sum(p.stat().st_size for p in dirs["old"].iterdir())
    code, out, _ = run(capsys, "prune", "--older-than", "30d", "--dry-run", "--root", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("would remove ") and lines[0].split()[2].endswith("/old/old-done")
    assert lines[1].startswith("would remove 1 sessions, would free")
    assert f"({size:,} bytes)" in lines[1]
    assert all(p.exists() for p in dirs.values())


@pytest.mark.usefixtures("no_daemon")
def test_prune_removes_old_finished_sessions_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = prune_tree(tmp_path)
    size = sum(p.stat().st_size for p in dirs["old"].iterdir())
    code, out, _ = run(capsys, "prune", "--older-than", "30d", "--json", "--root", str(tmp_path))
    assert code == 0
    doc = json.loads(out)
    assert doc["dry_run"] is False and doc["sessions"] == 1 and doc["bytes_freed"] == size
    assert [r["session_id"] for r in doc["removed"]] == ["old-done"]
    assert not dirs["old"].exists()
    assert not dirs["old"].parent.parent.exists()  # its emptied date dir went too
    assert dirs["old_running"].exists() and dirs["recent"].exists()
    assert str(dirs["old"].parent.parent) in doc["dirs_removed"]
    # a second run finds nothing; 0d takes every finished session but never a running one
    code, out, _ = run(capsys, "prune", "--older-than", "0d", "--root", str(tmp_path))
    assert code == 0 and "removed 1 sessions" in out.splitlines()[-1]
    assert dirs["old_running"].exists() and not dirs["recent"].exists()


# --------------------------------------------------------------------------- process-level


def test_module_import_is_light() -> None:
    code = (
        "import sys, traced.cli.read\n"
        "heavy = ['rich', 'genai_prices', 'traced.read.sessions', 'traced.read.usage']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_price_catalog_loads_only_for_costs_not_reported(tmp_path: Path) -> None:
    """ls/show/replay price what the records leave unpriced, as usage does; the catalog
    (genai-prices, ~0.2 s to import) loads only when some call read has no reported cost."""
    code = (
        "import sys\n"
        "from traced.cli.main import main\n"
        "import io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['ls'], ['show', sys.argv[2]], ['replay', sys.argv[2]], ['tail']):\n"
        "        main([*argv, '--root', sys.argv[1]])\n"
        "    print('genai_prices' in sys.modules, file=sys.stderr)\n"
        "    main(['usage', '--since', '2026-11-21', '--root', sys.argv[1]])\n"
        "print('genai_prices' in sys.modules, file=sys.stderr)\n"
    )
    reported = tmp_path / "reported"
    fx.running_session(reported)  # its one call reports cost_usd
    out = subprocess.run([sys.executable, "-c", code, str(reported), fx.RUNNING_ID],
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stderr.split() == ["False", "False"]  # usage too: every cost was reported
    unpriced = tmp_path / "unpriced"
    fx.review_session(unpriced)  # a gpt-4o call without cost_usd
    out = subprocess.run([sys.executable, "-c", code, str(unpriced), fx.REVIEW_ID],
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stderr.split() == ["True", "True"]


def test_tty_output_uses_rich_colours_and_pipes_stay_plain(root: Path) -> None:
    env = {**os.environ, "TZ": "UTC", "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    code, tty_out = run_in_pty(["ls", "--root", str(root)], env, REPO)
    assert code == 0
    assert "\x1b[" in tty_out and fx.REVIEW_ID[:10] + " " in tty_out
    piped = subprocess.run(
        [sys.executable, "-m", "traced", "ls", "--root", str(root)],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )
    assert "\x1b" not in piped.stdout and piped.stdout == LS_ALL
