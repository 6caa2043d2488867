"""Usage accounting as a user who pays the bill reads it (issue #15): calls counted on the day
they were made, provider-prefixed model ids priced, partial figures never shown as exact, and
attribution to tools and MCP servers. Real files, exact values."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures_traces as fx
from tests.conftest import set_tz
from traced.cli.main import main
from traced.read.sessions import ScanStats
from traced.read.usage import (
    LlmCall,
    Pricer,
    aggregate,
    aggregate_tools,
    candidates,
    collect,
    percentile,
    price_candidates,
)
from traced.read.window import parse_window

pytestmark = pytest.mark.usefixtures("utc")

SID = "01JE0MIDN1GHT0000000000001"


def call(model: str, cost: float | None = None, provider: str | None = None, **usage: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "usage": usage or {"input_tokens": 1000, "output_tokens": 100}}
    if provider:
        payload["provider"] = provider
    if cost is not None:
        payload["cost_usd"] = cost
    return payload


def past_midnight(root: Path, *, with_meta: bool = True) -> Path:
    """Started 2026-11-20 23:30 (dir 2026-11-20): $2 before midnight, $12 after, and resumed
    on 2026-11-23 in the same directory for $5 more."""
    t0, sk = "2026-11-20T23:30:00.000000Z", "nightly"
    lines = fx.numbered([
        fx.rec(t0, sk, SID, "start", {}),
        fx.rec(fx.at(t0, 600), sk, SID, "llm_call", call("gpt-4o", 2.0)),
        fx.rec(fx.at(t0, 3000), sk, SID, "llm_call", call("gpt-4o", 12.0)),  # 00:20 on the 21st
        fx.rec(fx.at(t0, 3600), sk, SID, "end", {"outcome": "success"}),
        fx.rec("2026-11-23T10:00:00.000000Z", sk, SID, "start", {"resumed": True}),
        fx.rec("2026-11-23T10:05:00.000000Z", sk, SID, "llm_call", call("gpt-4o", 5.0)),
        fx.rec("2026-11-23T10:10:00.000000Z", sk, SID, "end", {"outcome": "success"}),
    ])
    meta = fx.traced_meta(lines) if with_meta else None
    return fx.write_session(root, "2026-11-20", sk, SID, list(lines), meta)


def usage_json(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["usage", *argv, "--json", "--root", str(root)]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


# --------------------------------------------------------------------------- calls by their own ts


@pytest.mark.parametrize("with_meta", [True, False], ids=["traced", "no-meta"])
def test_each_call_counts_on_the_day_it_was_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], with_meta: bool
) -> None:
    past_midnight(tmp_path, with_meta=with_meta)
    day = {w: usage_json(capsys, tmp_path, "--since", w)["total"] for w in
           ("2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23")}
    assert {w: (t["cost_usd"], t["llm_calls"], t["sessions"]) for w, t in day.items()} == {
        "2026-11-20": (2.0, 1, 1),
        "2026-11-21": (12.0, 1, 1),  # past midnight: not $0
        "2026-11-22": (None, 0, 0),  # no calls, and it did not start then
        "2026-11-23": (5.0, 1, 1),  # resumed days later in its old date directory
    }
    by_day = usage_json(capsys, tmp_path, "--since", "2026-11-20..2026-11-23", "--by", "day")
    assert [(r["key"], r["cost_usd"], r["sessions"]) for r in by_day["rows"]] == [
        ("2026-11-20", 2.0, 1), ("2026-11-21", 12.0, 1), ("2026-11-23", 5.0, 1)]
    assert (by_day["total"]["cost_usd"], by_day["total"]["sessions"]) == (19.0, 1)


def test_a_day_in_another_timezone_moves_with_the_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    past_midnight(tmp_path)
    set_tz("America/New_York")  # 23:30Z is 18:30 there: both first calls fall on the 20th
    assert usage_json(capsys, tmp_path, "--since", "2026-11-20")["total"]["cost_usd"] == 14.0
    assert usage_json(capsys, tmp_path, "--since", "2026-11-21")["total"]["cost_usd"] is None


def test_old_sessions_untouched_since_before_the_window_are_not_opened(tmp_path: Path) -> None:
    fx.many_sessions(tmp_path, 5, date="2026-10-01")
    old = 1_759_000_000  # 2025-09-27: last written long before the window
    for path in (tmp_path / "2026-10-01").rglob("*"):
        os.utime(path, (old, old))
    past_midnight(tmp_path)
    stats = ScanStats()
    window = parse_window("2026-11-21")
    infos = candidates([tmp_path], window, stats=stats)
    assert [i.session_id for i in infos] == [SID]
    assert stats.metas_read == 1  # the five old ones were judged by their mtimes alone
    assert [len(s.calls) for s in collect([tmp_path], window, infos=infos)] == [1]


# --------------------------------------------------------------------------- provider prefixes


@pytest.mark.parametrize(("prefixed", "bare", "provider"), [
    ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", None),
    ("openai/gpt-4o-mini", "gpt-4o-mini", None),
    ("openrouter/anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", None),
    ("openrouter/openai/gpt-4o-mini", "gpt-4o-mini", None),
    ("gemini/gemini-2.5-flash", "gemini-2.5-flash", None),
    ("vertex_ai/gemini-2.5-flash", "gemini-2.5-flash", None),
    ("azure/gpt-4o-mini", "gpt-4o-mini", None),
    ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "openrouter"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5", "aws.bedrock"),
    # AWS Bedrock ids, bare or with a cross-region prefix (kunchenguid/axi#92: priced $0 there)
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5", None),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5", None),
    ("bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5", None),
    # dated and dotted spellings (hermes-agent#101145, PR#3331)
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5", None),
    ("openrouter/anthropic/claude-sonnet-4.5", "claude-sonnet-4-5", None),
])
def test_provider_prefixed_model_ids_price_like_the_bare_id(prefixed: str, bare: str, provider: str | None) -> None:
    pricer = Pricer()
    usage = {"input_tokens": 1830, "output_tokens": 400, "cache_read_tokens": 9000, "cache_write_tokens": 500}
    want = pricer.price(LlmCall.from_payload({"model": bare, "usage": usage}))
    got = pricer.price(LlmCall.from_payload({"model": prefixed, "provider": provider, "usage": usage}))
    assert want.cost_usd is not None and want.cost_usd > 0
    assert got.cost_usd == pytest.approx(want.cost_usd, rel=0.2)  # a reseller may differ a little
    assert got.source is not None and got.source.startswith("genai-prices ")


def test_prefixed_ids_at_their_own_provider_price_exactly_like_the_bare_id() -> None:
    pricer = Pricer()
    for prefixed, bare in (("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
                           ("openai/gpt-4o-mini", "gpt-4o-mini")):
        assert (pricer.price(LlmCall.from_payload(call(prefixed))).cost_usd
                == pricer.price(LlmCall.from_payload(call(bare))).cost_usd)
    assert list(price_candidates("openrouter/anthropic/claude-sonnet-4-5", None))[:3] == [
        ("openrouter/anthropic/claude-sonnet-4-5", None),
        ("anthropic/claude-sonnet-4-5", "openrouter"),
        ("claude-sonnet-4-5", "anthropic"),
    ]


def test_local_prefixes_cost_nothing_and_unknown_prefixed_models_stay_unknown() -> None:
    pricer = Pricer()
    local = pricer.price(LlmCall.from_payload(call("ollama/llama3.1:8b")))
    assert (local.cost_usd, local.source, local.local) == (0.0, "local", True)
    assert pricer.price(LlmCall.from_payload(call("acme/acme-private-9000"))).cost_usd is None
    assert pricer.price(LlmCall.from_payload(call("openrouter/acme/acme-9"))).cost_usd is None


# --------------------------------------------------------------------------- partial figures


def two_successes(root: Path, second: dict[str, Any]) -> None:
    for sid, payload in (("01JE0PART1AL00000000000001", call("gpt-4o", 1.0)),
                         ("01JE0PART1AL00000000000002", second)):
        t0 = "2026-11-21T10:00:00.000000Z"
        lines = fx.numbered([
            fx.rec(t0, "fix", sid, "start", {}),
            fx.rec(fx.at(t0, 1), "fix", sid, "llm_call", payload),
            fx.rec(fx.at(t0, 2), "fix", sid, "end", {"outcome": "success"}),
        ])
        fx.write_session(root, "2026-11-21", "fix", sid, list(lines), fx.traced_meta(lines))


def test_a_partly_unknown_cost_is_never_shown_as_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_successes(tmp_path, call("acme-private-9000"))
    row = aggregate(collect([tmp_path], None), "skill").rows[0]
    assert (row.cost_usd, row.cost_partial, row.cost_per_success) == (1.0, True, 0.5)
    assert (row.cost_display, row.cost_per_success_display) == ("$1.0000 + unknown", "$0.5000+?")
    doc = usage_json(capsys, tmp_path, "--since", "2026-11-21")
    assert (doc["total"]["cost_partial"], doc["total"]["cost_per_success"]) == (True, 0.5)
    capsys.readouterr()
    assert main(["usage", "--since", "2026-11-21", "--root", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    fix_line = next(line for line in text.splitlines() if line.startswith("fix "))
    assert "$1.0000 + unknown" in fix_line and "$0.5000+?" in fix_line
    assert "$0.5000 " not in text and not text.rstrip().endswith("$0.5000")
    assert "+ unknown, +?: cost partly unknown; the figure is a lower bound" in text
    assert main(["ls", "--root", str(tmp_path)]) == 0
    ls = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in ls[1:]] == ["unknown", "$1.0000"]


def test_exact_when_every_cost_is_known_and_unknown_when_none_is(tmp_path: Path) -> None:
    two_successes(tmp_path, call("gpt-4o", 3.0))
    row = aggregate(collect([tmp_path], None), "skill").rows[0]
    assert (row.cost_partial, row.cost_per_success_display, row.cost_display) == (False, "$2.0000", "$4.0000")
    other = tmp_path / "other"
    for n in (1, 2):
        sid = f"01JE0UNKN0WN0000000000000{n}"
        t0 = "2026-11-21T10:00:00.000000Z"
        lines = fx.numbered([fx.rec(t0, "x", sid, "start", {}),
                             fx.rec(t0, "x", sid, "llm_call", call("acme-9")),
                             fx.rec(t0, "x", sid, "end", {"outcome": "success"})])
        fx.write_session(other, "2026-11-21", "x", sid, list(lines), fx.traced_meta(lines))
    row = aggregate(collect([other], None), "skill").rows[0]
    assert (row.cost_usd, row.cost_partial, row.cost_per_success_display) == (None, False, "unknown")


# --------------------------------------------------------------------------- tools and MCP servers


def tool_session(root: Path) -> None:
    """Builtin Bash, and two MCP servers: github (fast, one failure) and postgres (slow)."""
    t0, sk, sid = "2026-11-21T09:00:00.000000Z", "agent", "01JE0T00LS00000000000001"
    recs: list[dict[str, Any]] = [fx.rec(t0, sk, sid, "start", {})]

    def pair(n: int, t: float, tool: str, server: str | None, ms: float | None, *, ok: bool = True,
             result_first: bool = False, call_id: str | None = "c") -> None:
        cid = {"call_id": f"{call_id}{n}"} if call_id else {}
        srv = {"server": server, "kind": "mcp"} if server else {}
        c = fx.rec(fx.at(t0, t), sk, sid, "tool_call", {"tool": tool, **srv, **cid, "args": {}})
        result: dict[str, Any] = {"tool": tool, **srv, **cid, "ok": ok}
        if ms is not None:
            result["duration_ms"] = ms
        r = fx.rec(fx.at(t0, t + 5), sk, sid, "tool_result", result)
        recs.extend([r, c] if result_first else [c, r])

    pair(1, 1, "create_issue", "github", 100)
    pair(2, 10, "create_issue", "github", 300)
    pair(3, 20, "create_issue", "github", 50, ok=False)
    pair(4, 30, "query", "postgres", 2000)
    pair(5, 40, "query", "postgres", 4000, ok=False, result_first=True)  # an async hook's order
    pair(6, 50, "Bash", None, None, call_id=None)  # no id, no duration: 5 s from the ts
    recs.append(fx.rec(fx.at(t0, 60), sk, sid, "tool_call", {"tool": "Bash", "call_id": "c7"}))
    recs.append(fx.rec(fx.at(t0, 70), sk, sid, "end", {"outcome": "failure"}))
    lines = fx.numbered(recs)
    fx.write_session(root, "2026-11-21", sk, sid, list(lines), fx.traced_meta(lines))


def test_usage_by_server_and_tool_answers_which_mcp_server_is_slow_and_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tool_session(tmp_path)
    doc = usage_json(capsys, tmp_path, "--since", "2026-11-21", "--by", "server")
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["postgres"] == {
        "key": "postgres", "sessions": 1, "calls": 2, "errors": 1, "unanswered": 0, "error_rate": 0.5,
        "timed_calls": 2, "total_ms": 6000.0, "p50_ms": 2000.0, "p95_ms": 4000.0}
    assert rows["github"] == {
        "key": "github", "sessions": 1, "calls": 3, "errors": 1, "unanswered": 0, "error_rate": 0.3333,
        "timed_calls": 3, "total_ms": 450.0, "p50_ms": 100.0, "p95_ms": 300.0}
    assert rows["-"] == {
        "key": "-", "sessions": 1, "calls": 2, "errors": 0, "unanswered": 1, "error_rate": 0.0,
        "timed_calls": 1, "total_ms": 5000.0, "p50_ms": 5000.0, "p95_ms": 5000.0}
    assert [r["key"] for r in doc["rows"]] == ["github", "-", "postgres"]  # most calls first
    assert (doc["total"]["calls"], doc["total"]["errors"], doc["total"]["unanswered"]) == (7, 2, 1)
    tools = usage_json(capsys, tmp_path, "--since", "2026-11-21", "--by", "tool")
    assert {r["key"]: (r["calls"], r["errors"]) for r in tools["rows"]} == {
        "github/create_issue": (3, 1), "postgres/query": (2, 1), "Bash": (2, 0)}
    assert usage_json(capsys, tmp_path, "--since", "2026-11-22", "--by", "tool")["rows"] == []


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1.0)) == (10.0, 19.0, 20.0)
    assert percentile([7.0], 0.95) == 7.0 and percentile([], 0.5) is None


def test_tool_groupings_are_rejected_by_the_call_aggregate_and_back() -> None:
    with pytest.raises(ValueError, match="bad grouping 'tool'"):
        aggregate([], "tool")
    with pytest.raises(ValueError, match="bad grouping 'model'"):
        aggregate_tools([], "model")


def test_a_dst_day_has_no_missing_or_doubled_hour(tmp_path: Path) -> None:
    """ccusage#349 / nightscout PR#1000: local days, and the 23-hour DST day, bucket each call once."""
    sid, sk = "01JE0D5T000000000000000001", "dst"
    stamps = ["2026-03-08T07:30:00.000000Z",  # 23:30 PST, March 7
              "2026-03-08T09:30:00.000000Z",  # 01:30 PST, March 8 (clocks jump at 02:00)
              "2026-03-08T10:30:00.000000Z",  # 03:30 PDT, March 8
              "2026-03-09T06:30:00.000000Z",  # 23:30 PDT, March 8
              "2026-03-09T07:30:00.000000Z"]  # 00:30 PDT, March 9
    lines = fx.numbered([fx.rec(stamps[0], sk, sid, "start", {}),
                         *(fx.rec(t, sk, sid, "llm_call", call("gpt-4o", 1.0)) for t in stamps),
                         fx.rec(stamps[-1], sk, sid, "end", {"outcome": "success"})])
    fx.write_session(tmp_path, "2026-03-08", sk, sid, list(lines), fx.traced_meta(lines))
    set_tz("America/Los_Angeles")
    window = parse_window("2026-03-07..2026-03-09")
    report = aggregate(collect([tmp_path], window), "day", window=window)
    assert [(r.key, r.llm_calls) for r in report.rows] == [
        ("2026-03-07", 1), ("2026-03-08", 3), ("2026-03-09", 1)]
    only = parse_window("2026-03-08")
    assert aggregate(collect([tmp_path], only), "day", window=only).total.llm_calls == 3


# --------------------------------------------------------------------------- the adversary's cases


def test_windows_at_the_edges_are_clear_errors_or_clamped() -> None:
    from datetime import date

    today = date(2026, 11, 30)
    assert (parse_window("2w", today).first, parse_window("2w", today).last) == (date(2026, 11, 17), today)
    assert parse_window("..today", today).first == date(1970, 1, 2)
    assert parse_window("99999d", today).first == date(1970, 1, 2)  # clamped, no OverflowError
    assert (parse_window("yesterday..today", today).first, parse_window("yesterday", today).last) == (
        date(2026, 11, 29), date(2026, 11, 29))
    for bad in ("9999-12-31", "0001-01-01", "..9999-12-31", "2026-02-30", "0d", "1y", "today.."):
        if bad == "today..":
            assert parse_window(bad, today).first == today  # "from today on" is fine
            continue
        with pytest.raises(ValueError):
            parse_window(bad, today)


def test_a_result_without_call_or_id_counts_as_one(tmp_path: Path) -> None:
    t0, sid = "2026-11-21T10:00:00.000000Z", "01JE0RPHAN000000000000001"
    lines = fx.numbered([
        fx.rec(t0, "o", sid, "start", {}),
        fx.rec(t0, "o", sid, "tool_result", {"tool": "NoId", "ok": False, "duration_ms": 30}),
        fx.rec(t0, "o", sid, "tool_result", {"tool": "WithId", "ok": False, "call_id": "zz"}),
        fx.rec(t0, "o", sid, "end", {"outcome": "failure"}),
    ])
    fx.write_session(tmp_path, "2026-11-21", "o", sid, list(lines), fx.traced_meta(lines))
    report = aggregate_tools(collect([tmp_path], None, tools=True), "tool")
    assert {r.key: (r.calls, r.errors, r.durations) for r in report.rows} == {
        "NoId": (1, 1, [30.0]), "WithId": (1, 1, [])}
    assert report.total.errors == 2  # as ls's ERRORS (meta.json) counts them


def test_absurd_reported_costs_are_unknown_never_inf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two_successes(tmp_path, call("acme-private-9000", 1e308))
    doc = usage_json(capsys, tmp_path, "--since", "2026-11-21")
    assert (doc["total"]["cost_usd"], doc["total"]["unknown_cost_calls"]) == (1.0, 1)
    assert main(["ls", "--root", str(tmp_path)]) == 0
    assert "inf" not in capsys.readouterr().out


def test_absurd_token_counts_count_as_zero_and_the_session_still_ends(daemon: Any) -> None:
    """A writer's 1e30 tokens once broke meta.json's encoding (u64) and the end's reply."""
    res = daemon.cli("start", "--skill", "huge", check=True)
    sid = json.loads(res.stdout)["session_id"]
    daemon.cli("event", sid, "--phase", "llm_call", "--payload",
               '{"model": "m2", "usage": {"input_tokens": 1e30, "output_tokens": 1}}', check=True)
    end = daemon.cli("end", sid, "--outcome", "success", "--json", check=True)
    meta = json.loads(end.stdout)
    assert (meta["usage"]["input_tokens"], meta["usage"]["output_tokens"], meta["usage"]["llm_calls"]) == (0, 1, 1)
