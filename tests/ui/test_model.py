"""The pages' data, sans-IO: pairing, lanes, nesting, prices and the usage report (no server, no browser)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures_traces as ft
from traced.read.sessions import find_session, load_session
from traced.read.usage import Pricer
from traced.read.window import parse_window
from traced.ui import model
from traced.ui.export import embed_json

T0 = "2026-11-22T08:00:00.000000Z"


def view_of(root: Path, payloads: list[tuple[float, str, dict[str, Any], int | None]],
            end: bool = True) -> dict[str, Any]:
    sk, sid = "unit", "01JD9UN1T00000000000000000"
    lines = [ft.rec(T0, sk, sid, "start", {})]
    for t, phase, payload, turn in payloads:
        lines.append(ft.rec(ft.at(T0, t), sk, sid, phase, payload, turn=turn))
    if end:
        lines.append(ft.rec(ft.at(T0, 10), sk, sid, "end", {"outcome": "success"}))
    lines = ft.numbered(lines)
    ft.write_session(root, "2026-11-22", sk, sid, list(lines), ft.traced_meta(lines, ended=end))
    return model.session_view(load_session(find_session([root], sid)), Pricer(catalog=False))


def tools(view: dict[str, Any]) -> list[tuple[str, float, float | None, bool | None, int]]:
    return [(r["name"], round(r["t"], 3), r["ms"], r["ok"], r["depth"]) for r in view["rows"] if r["k"] == "tool"]


def test_result_before_its_call_still_pairs(tmp_path: Path) -> None:
    """Async hooks deliver PostToolUse before PreToolUse sometimes: one bar, not two."""
    view = view_of(tmp_path, [
        (1.0, "tool_result", {"tool": "Bash", "ok": True, "call_id": "a", "duration_ms": 250}, None),
        (1.1, "tool_call", {"tool": "Bash", "args": {}, "call_id": "a"}, None),
    ])
    assert tools(view) == [("Bash", 1.1, 250, True, 0)]


def test_results_without_calls_get_their_own_bar(tmp_path: Path) -> None:
    view = view_of(tmp_path, [
        (2.0, "tool_result", {"tool": "Read", "ok": False, "duration_ms": 500}, None),
        (3.0, "tool_result", {"tool": "Grep", "ok": True, "call_id": "lost"}, None),
    ])
    assert tools(view) == [("Read", 1.5, 500, False, 0), ("Grep", 3.0, None, True, 0)]
    assert [r["label"] for r in view["rows"] if r["k"] == "tool"] == ["(result without its call)"] * 2
    assert view["rows"][0]["label"] == "all steps (no turns)"


def test_open_calls_run_to_the_end_and_pending(tmp_path: Path) -> None:
    view = view_of(tmp_path, [(4.0, "tool_call", {"tool": "Bash", "args": {}, "call_id": "x"}, None)])
    row = next(r for r in view["rows"] if r["k"] == "tool")
    assert (row["open"], row["t"], row["d"], row["ok"]) == (True, 4.0, 6.0, None)


def test_lanes_per_turn_with_markers_and_nested_subagents(tmp_path: Path) -> None:
    view = view_of(tmp_path, [
        (0.1, "user_prompt", {"prompt": "one"}, 1),
        (0.2, "tool_call", {"tool": "Task", "args": {}, "call_id": "t"}, 1),
        (0.3, "tool_call", {"tool": "Grep", "args": {}, "call_id": "g", "agent_id": "A", "agent_type": "Explore"}, 1),
        (0.4, "tool_call", {"tool": "Read", "args": {}, "call_id": "r"}, 1),
        (0.5, "tool_result", {"tool": "Grep", "ok": True, "call_id": "g", "agent_id": "A"}, 1),
        (0.6, "note", {"message": "found it"}, 1),
        (0.7, "tool_result", {"tool": "Task", "ok": True, "call_id": "t"}, 1),
        (0.75, "tool_result", {"tool": "Read", "ok": True, "call_id": "r"}, 1),
        (1.0, "user_prompt", {"prompt": "two"}, 2),
        (1.5, "verify", {"check": "tests", "ok": False}, 2),
        (2.0, "hook", {"event": "Stop", "duration_ms": 100}, 2),
    ])
    shape = [(r["k"], r.get("name") or r.get("label"), r["depth"]) for r in view["rows"]]
    assert shape == [("lane", "before the first prompt", 0), ("lane", "turn 1: one", 0), ("tool", "Task", 0),
                     ("tool", "Grep", 1), ("tool", "Read", 0), ("lane", "turn 2: two", 0), ("hook", "Stop", 0)]
    grep = next(r for r in view["rows"] if r.get("name") == "Grep")
    assert grep["agent"] == "Explore"
    lanes = [r for r in view["rows"] if r["k"] == "lane"]
    assert [[(m["phase"], m["label"], m["ok"]) for m in lane["markers"]] for lane in lanes] == [
        [("start", "", None)], [("user_prompt", "one", None), ("note", "found it", None)],
        [("user_prompt", "two", None), ("verify", "tests", False), ("end", "success", None)]]
    hook = next(r for r in view["rows"] if r["k"] == "hook")
    assert (hook["t"], hook["d"]) == (pytest.approx(1.9), pytest.approx(0.1))


def test_llm_costs_known_local_and_unknown(tmp_path: Path) -> None:
    view = view_of(tmp_path, [
        (1.0, "llm_call", {"model": "m1", "usage": {"input_tokens": 100, "output_tokens": 10}, "cost_usd": 0.5,
                           "latency_ms": 800}, None),
        (2.0, "llm_call", {"model": "secret-model", "usage": {"input_tokens": 5, "output_tokens": 1}}, None),
        (3.0, "llm_call", {"provider": "ollama", "model": "llama", "usage": {"input_tokens": 7}}, None),
    ])
    llm = [(r["name"], r["cost"], round(r["t"], 3), r["in"], r["out"]) for r in view["rows"] if r["k"] == "llm"]
    assert llm == [("m1", "$0.5000", 0.2, 100, 10), ("secret-model", "unknown", 2.0, 5, 1),
                   ("llama", "$0 (local)", 3.0, 7, 0)]
    assert view["totals"]["cost"] == "$0.5000 + unknown"
    assert (view["totals"]["llm_calls"], view["totals"]["unknown_cost_calls"]) == (3, 1)


def test_usage_view_is_traced_usage(tmp_path: Path, utc: None) -> None:
    """The page's table is ``traced usage --json`` (same code), plus each row's cost text."""
    root = tmp_path / "sessions"
    ft.build_tree(root)
    window = parse_window("2026-11-19..2026-11-21")
    data = model.usage_view([root], window, "model", Pricer())
    cli = subprocess.run([sys.executable, "-m", "traced", "usage", "--root", str(root), "--since",
                          "2026-11-19..2026-11-21", "--by", "model", "--json"], capture_output=True, text=True,
                         check=True, timeout=60)
    expected = json.loads(cli.stdout)
    shown = data["report"]
    assert [(r["key"], r.pop("cost")) for r in shown["rows"]] == [
        ("-", "-"), ("acme-private-9000", "unknown"), ("claude-sonnet-4-5", "$0.0128"), ("gpt-4o", "$0.0040"),
        ("llama3.1:8b", "$0 (local)")]
    assert shown["total"].pop("cost") == "$0.0168 + unknown"
    assert shown == expected
    assert [d["day"] for d in data["days"]] == ["2026-11-19", "2026-11-20", "2026-11-21"]
    by_tool = subprocess.run([sys.executable, "-m", "traced", "usage", "--root", str(root), "--since",
                              "2026-11-19..2026-11-21", "--by", "tool", "--json"], capture_output=True, text=True,
                             check=True, timeout=60)
    assert data["tools"] == json.loads(by_tool.stdout)  # the Tools table is `traced usage --by tool`
    assert [(r["key"], r["calls"], r["errors"]) for r in data["tools"]["rows"]] == [
        ("Bash", 4, 2), ("Read", 1, 0), ("kubectl", 1, 0)]
    one_day = subprocess.run([sys.executable, "-m", "traced", "usage", "--root", str(root), "--since", "2026-11-21",
                              "--by", "model", "--json"], capture_output=True, text=True, check=True, timeout=60)
    day = json.loads(one_day.stdout)  # each bar of the chart is `traced usage --since DAY`
    assert [(r["key"], r["cost_usd"], r["input_tokens"]) for r in day["rows"] if r["llm_calls"]] == [
        (r["key"], r["cost_usd"], r["input_tokens"]) for r in data["days"][2]["rows"]]
    assert day["total"]["cost_usd"] == data["days"][2]["total"]["cost_usd"]
    assert [[(r["key"], r["cost"]) for r in d["rows"]] for d in data["days"]] == [
        [], [("acme-private-9000", "unknown"), ("llama3.1:8b", "$0 (local)")],
        [("claude-sonnet-4-5", "$0.0128"), ("gpt-4o", "$0.0040")]]
    assert [(t["session_id"], t["cost"]) for t in data["top"]] == [
        (ft.REVIEW_ID, "$0.0163"), (ft.RUNNING_ID, "$0.0005"), (ft.LOCAL_ID, "$0 (local)"),
        (ft.REVIEW2_ID, "unknown")]
    with pytest.raises(ValueError, match="too long"):
        model.usage_view([root], parse_window("2020-01-01..2026-11-21"), "model", Pricer())


@pytest.mark.parametrize("text", ["</script><script>alert(1)</script>", "<!--", "a\u2028b\u2029c", "&lt;"])
def test_embedded_json_cannot_close_its_script_block(text: str) -> None:
    out = embed_json({"x": text})
    assert "<" not in out and ">" not in out and "&" not in out and "\u2028" not in out and "\u2029" not in out
    assert json.loads(out) == {"x": text}


def test_search_reads_prompts_and_tool_names(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    ft.build_tree(root)
    from traced.read.sessions import scan

    infos = {i.session_id: i for i in scan([root])}
    hits = {q: sorted(sid for sid, i in infos.items() if model.matches(i, q))
            for q in ("kubectl", "SUMMARIZE THE", "PR #43", "approved", "")}
    assert hits["kubectl"] == [ft.DEVBOY_ID]
    assert hits["SUMMARIZE THE"] == [ft.REVIEW_ID]
    assert hits["PR #43"] == [ft.RUNNING_ID]
    assert hits["approved"] == [ft.REVIEW_ID]
    assert hits[""] == sorted(infos)
