"""The tolerant reader (traced.read.sessions) and the usage aggregation (traced.read.usage), on real files."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tests import fixtures_traces as fx
from tests.conftest import set_tz
from traced.errors import AmbiguousSession, SessionNotFound
from traced.format.layout import read_blob
from traced.read.sessions import ScanStats, SessionRef, find_session, load_info, load_session, scan
from traced.read.trace import TraceStats, iter_trace
from traced.read.usage import LlmCall, Pricer, aggregate, collect, cost_text
from traced.read.window import parse_window

pytestmark = pytest.mark.usefixtures("utc")


def ref_of(root: Path, sid: str) -> SessionRef:
    return find_session([root], sid)


# --------------------------------------------------------------------------- trace lines


def test_malformed_and_torn_lines_are_skipped_and_counted(root: Path) -> None:
    stats = TraceStats()
    entries = list(iter_trace(ref_of(root, fx.TORN_ID).trace_path, stats))
    assert [e.phase for e in entries] == ["start", "note", "tool_call"]
    assert [e.step for e in entries] == [1, 2, 3]
    assert stats.malformed == 3  # bad JSON, a non-object, a record without phase
    assert stats.torn is True
    assert stats.problems() == ["3 malformed lines skipped", "torn last line ignored"]


def test_unterminated_last_line_that_parses_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_bytes(
        b'{"ts":"2026-01-01T00:00:00Z","phase":"start","payload":{}}\n'
        b'{"ts":"2026-01-01T00:00:01Z","phase":"note","payload":{"message":"hi"}}'
    )
    stats = TraceStats()
    assert [e.phase for e in iter_trace(path, stats)] == ["start", "note"]
    assert (stats.malformed, stats.torn) == (0, False)


def test_blank_and_binary_lines_count_as_malformed(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_bytes(
        b"\n\xff\xfe\n"
        b'{"phase":"note","payload":{},"step":true}\n'
        b'{"phase":"","payload":{}}\n'
    )
    stats = TraceStats()
    entries = list(iter_trace(path, stats))
    assert stats.malformed == 3
    assert len(entries) == 1 and entries[0].step == 1  # a bool is not a step


def test_missing_trace_is_reported_not_raised(tmp_path: Path) -> None:
    stats = TraceStats()
    assert list(iter_trace(tmp_path / "nope.jsonl", stats)) == []
    assert stats.missing and stats.problems() == ["no trace.jsonl"]


def test_records_without_step_get_their_file_position(root: Path) -> None:
    session = load_session(ref_of(root, fx.DEVBOY_ID))
    assert [e.step for e in session.entries] == [1, 2, 3, 4]
    assert all("step" not in e.raw for e in session.entries)
    first = session.entries[0]
    assert first.epoch is not None  # nanosecond RFC 3339 parses
    assert session.entries[1].epoch is not None
    assert round(session.entries[1].epoch - first.epoch, 6) == 0.876544


def test_timestamp_key_and_unknown_phase_and_fields_are_kept(root: Path) -> None:
    session = load_session(ref_of(root, fx.ODD_ID))
    phases = [e.phase for e in session.entries]
    assert phases == ["start", "telemetry", "end"]
    odd = session.entries[1]
    assert odd.ts == "2026-11-20T12:00:02Z"
    assert odd.raw["host"] == "ci-7" and odd.raw["extra_field"] == [1, 2]
    assert odd.payload == {"cpu": 0.93, "rss_mb": 512}


# --------------------------------------------------------------------------- session info


def test_finished_traced_session_is_summarized_from_meta_alone(root: Path) -> None:
    stats = ScanStats()
    info = load_info(ref_of(root, fx.REVIEW_ID), stats=stats)
    assert info is not None
    assert stats.traces_read == 0 and not info.trace_read
    assert (info.steps, info.turns, info.tool_calls, info.errors) == (17, 2, 3, 1)
    assert info.outcome == "success" and not info.running
    assert info.duration == pytest.approx(10.5)
    assert info.usage is not None
    assert info.usage.cost_usd == pytest.approx(0.0123)
    assert info.usage.unknown_cost_calls == 1
    assert info.cwd == "/home/dev/proj" and info.writer == "traced 0.1.0"


def test_devboy_meta_is_completed_from_the_trace(root: Path) -> None:
    info = load_info(ref_of(root, fx.DEVBOY_ID))
    assert info is not None
    assert info.trace_read and info.has_meta
    assert info.writer == "0.9.1"
    assert (info.steps, info.tool_calls, info.errors) == (4, 1, 0)
    assert info.outcome == "success" and info.summary == "deployed to staging"
    assert info.usage is not None and info.usage.llm_calls == 0


def test_session_without_meta_is_derived_from_its_trace(root: Path) -> None:
    info = load_info(ref_of(root, fx.ODD_ID))
    assert info is not None
    assert not info.has_meta
    assert info.started_at == "2026-11-20T12:00:00Z"
    assert info.ended_at == "2026-11-20T12:00:03Z"
    assert info.outcome == "success" and not info.running
    assert info.phases == {"start": 1, "telemetry": 1, "end": 1}
    assert info.cwd == "/srv/job"


def test_no_ended_at_means_running_and_counts_come_from_the_trace(root: Path) -> None:
    info = load_info(ref_of(root, fx.RUNNING_ID))
    assert info is not None
    assert info.running and info.duration is None and info.outcome is None
    assert (info.steps, info.tool_calls) == (3, 1)
    assert info.usage is not None and info.usage.llm_calls == 1


def test_trace_without_end_and_without_meta_is_running(tmp_path: Path) -> None:
    fx.write_session(tmp_path, "2026-11-21", "x", "s1", [
        fx.rec("2026-11-21T10:00:00Z", "x", "s1", "start", {}, step=1)], None)
    info = load_info(SessionRef(tmp_path, "2026-11-21", "x", "s1"))
    assert info is not None and info.running


def test_empty_directory_is_not_a_session(tmp_path: Path) -> None:
    (tmp_path / "2026-11-21" / "x" / "empty").mkdir(parents=True)
    assert load_info(SessionRef(tmp_path, "2026-11-21", "x", "empty")) is None
    assert scan([tmp_path]) == []


def test_corrupt_meta_falls_back_to_the_trace(root: Path) -> None:
    ref = ref_of(root, fx.REVIEW2_ID)
    ref.meta_path.write_text("{not json")
    info = load_info(ref)
    assert info is not None and not info.has_meta
    assert info.outcome == "failure" and info.errors == 1


# --------------------------------------------------------------------------- windows and scans


def test_parse_window_forms() -> None:
    today = date(2026, 11, 21)
    w = parse_window("today", today)
    assert (w.first, w.last) == (today, today)
    w = parse_window("7d", today)
    assert (w.first, w.last) == (date(2026, 11, 15), today)
    w = parse_window("30d", today)
    assert w.first == date(2026, 10, 23)
    w = parse_window("2026-11-02", today)
    assert (w.first, w.last) == (date(2026, 11, 2), date(2026, 11, 2))
    w = parse_window("2026-11-01..2026-11-03", today)
    assert (w.first, w.last) == (date(2026, 11, 1), date(2026, 11, 3))
    assert w.contains(w.end - 1) and not w.contains(w.end)
    for bad in ("soon", "2026-13-01", "2026-11-05..2026-11-01", "0d", "2026/11/01"):
        with pytest.raises(ValueError):
            parse_window(bad, today)


def test_window_dir_range_follows_the_local_timezone() -> None:
    w = parse_window("2026-11-20", date(2026, 11, 21))
    assert w.dir_range() == ("2026-11-20", "2026-11-20")
    set_tz("America/New_York")
    # local 2026-11-20 runs 05:00Z on the 20th to 04:59Z on the 21st
    assert w.dir_range() == ("2026-11-20", "2026-11-21")
    set_tz("Asia/Tokyo")
    assert w.dir_range() == ("2026-11-19", "2026-11-20")


def test_scan_opens_only_the_date_dirs_in_the_window(root: Path) -> None:
    stats = ScanStats()
    infos = scan([root], parse_window("2026-11-21", date(2026, 11, 22)), stats=stats)
    assert [i.session_id for i in infos] == [fx.RUNNING_ID, fx.REVIEW_ID]
    assert stats.date_dirs == 1
    assert stats.traces_read == 1  # only the running one


def test_scan_is_newest_first_across_roots(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "repo" / ".devboy" / "sessions"
    fx.write_session(other, "2026-11-22", "x", "newest", [
        fx.rec("2026-11-22T00:00:01Z", "x", "newest", "start", {})], None)
    fx.write_session(other, "2026-11-19", "x", "older", [
        fx.rec("2026-11-19T00:00:01Z", "x", "older", "start", {})], None)
    ids = [i.session_id for i in scan([root, other])]
    assert ids[:2] == ["newest", fx.RUNNING_ID]
    assert ids[-1] == "older"
    assert len(ids) == 9
    assert ids == [i.session_id for i in sorted(scan([root, other]), key=lambda i: i.sort_key,
                                                 reverse=True)]


def test_scan_skill_filter(root: Path) -> None:
    assert {i.session_id for i in scan([root], skill="review")} == {
        fx.REVIEW_ID, fx.REVIEW2_ID, fx.TORN_ID, fx.RUNNING_ID}


def test_thousands_of_finished_sessions_read_only_their_meta(tmp_path: Path) -> None:
    fx.many_sessions(tmp_path, 1500)
    stats = ScanStats()
    infos = scan([tmp_path], stats=stats)
    assert len(infos) == 1500
    assert stats.metas_read == 1500 and stats.traces_read == 0  # the cost is files opened; bench times it


def test_scan_tolerates_junk_in_the_root(root: Path) -> None:
    (root / "notes.txt").write_text("hello")
    (root / "not-a-date").mkdir()
    (root / "2026-11-21" / "stray.json").write_text("{}")
    (root / "2026-11-21" / "review" / "file-not-dir").write_text("x")
    assert len(scan([root])) == 7
    assert scan([root / "missing"]) == []


# --------------------------------------------------------------------------- finding sessions


def test_find_by_exact_id_prefix_and_any_case(root: Path) -> None:
    assert find_session([root], fx.REVIEW_ID).session_id == fx.REVIEW_ID
    assert find_session([root], "01JD3QA8XK").session_id == fx.REVIEW_ID
    assert find_session([root], "01jd3qa8xm").session_id == fx.REVIEW2_ID
    assert find_session([root], "foreign").skill == "misc"


def test_find_ambiguous_prefix_lists_candidates(root: Path) -> None:
    with pytest.raises(AmbiguousSession) as err:
        find_session([root], "01JD3QA8X")
    assert {c.session_id for c in err.value.candidates} == {fx.REVIEW_ID, fx.REVIEW2_ID}
    assert fx.REVIEW_ID in str(err.value) and "2026-11-20/review" in str(err.value)


def test_find_exact_id_wins_over_longer_ids(tmp_path: Path) -> None:
    for sid in ("abc", "abcdef"):
        fx.write_session(tmp_path, "2026-11-21", "x", sid, [
            fx.rec("2026-11-21T10:00:00Z", "x", sid, "start", {})], None)
    assert find_session([tmp_path], "abc").session_id == "abc"
    with pytest.raises(AmbiguousSession):
        find_session([tmp_path], "ab")


def test_find_unknown_id(root: Path) -> None:
    with pytest.raises(SessionNotFound):
        find_session([root], "ZZZZ")
    with pytest.raises(SessionNotFound):
        find_session([root], "")


def test_find_by_directory_path(root: Path) -> None:
    path = ref_of(root, fx.LOCAL_ID).path
    ref = find_session([Path("/nonexistent")], str(path))
    assert (ref.root, ref.date, ref.skill, ref.session_id) == (
        root, "2026-11-20", "summarize", fx.LOCAL_ID)


def test_read_blob_and_refuses_bad_refs(root: Path) -> None:
    session = load_session(ref_of(root, fx.REVIEW_ID))
    value = session.entries[4].get("result_summary")
    data = read_blob(session.info.ref.path, value)
    assert data is not None and data.decode() == fx.BLOB_TEXT
    assert read_blob(session.info.ref.path, {"$blob": "sha256:../../etc/passwd"}) is None
    assert read_blob(session.info.ref.path, "plain") is None


# --------------------------------------------------------------------------- usage


def call(**kw: object) -> LlmCall:
    payload = {"usage": {}}
    payload.update(kw)
    return LlmCall.from_payload(payload)


def test_pricer_reported_local_catalog_and_unknown() -> None:
    pricer = Pricer()
    reported = pricer.price(call(model="gpt-4o", cost_usd=0.5))
    assert (reported.cost_usd, reported.source, reported.local) == (0.5, "reported", False)
    local = pricer.price(call(model="llama3.1", provider="ollama"))
    assert (local.cost_usd, local.source, local.local) == (0.0, "local", True)
    zero_local = pricer.price(call(model="x", provider="lmstudio", cost_usd=0))
    assert zero_local.local and zero_local.cost_usd == 0
    zero_remote = pricer.price(call(model="gpt-4o", provider="openai", cost_usd=0))
    assert zero_remote.cost_usd == 0 and not zero_remote.local
    unknown = pricer.price(call(model="acme-private-9000", provider="acme",
                                usage={"input_tokens": 10}))
    assert unknown.cost_usd is None and unknown.source is None
    assert pricer.price(call(usage={"input_tokens": 10})).cost_usd is None  # no model
    negative = pricer.price(call(model="acme-private-9000", cost_usd=-1))
    assert negative.cost_usd is None  # fizeau's "negative means unknown"


def test_pricer_uses_genai_prices_offline_with_cache_tokens_folded_in() -> None:
    pricer = Pricer()
    gpt = pricer.price(call(model="gpt-4o", provider="openai",
                            usage={"input_tokens": 800, "output_tokens": 200}))
    assert gpt.cost_usd == pytest.approx(0.004)  # $2.50/M in, $10/M out
    assert gpt.source is not None and gpt.source.startswith("genai-prices ")
    sonnet = pricer.price(call(model="claude-sonnet-4-5", provider="anthropic",
                               usage={"input_tokens": 1200, "output_tokens": 340,
                                      "cache_read_tokens": 3000, "cache_write_tokens": 500}))
    # 1200*3 + 3000*0.30 + 500*3.75 + 340*15, per million
    assert sonnet.cost_usd == pytest.approx(0.011475)
    # a provider the catalog does not know falls back to the model alone
    proxied = pricer.price(call(model="gpt-4o", provider="my-proxy",
                                usage={"input_tokens": 800, "output_tokens": 200}))
    assert proxied.cost_usd == pytest.approx(0.004)


def test_pricer_without_catalog_leaves_unreported_costs_unknown() -> None:
    assert Pricer(catalog=False).price(call(model="gpt-4o")).cost_usd is None


def test_cost_text() -> None:
    assert cost_text(None, calls=0, unknown=0, local=False) == "-"
    assert cost_text(None, calls=2, unknown=2, local=False) == "unknown"
    assert cost_text(0.0, calls=2, unknown=0, local=True) == "$0 (local)"
    assert cost_text(0.0, calls=2, unknown=0, local=False) == "$0"
    assert cost_text(0.0123, calls=2, unknown=1, local=False) == "$0.0123 + unknown"
    assert cost_text(123.456, calls=2, unknown=0, local=False) == "$123.46"


def test_aggregate_by_skill(root: Path) -> None:
    window = parse_window("2026-11-19..2026-11-21")
    report = aggregate(collect([root], window), "skill", window=window)
    rows = {r.key: r for r in report.rows}
    assert list(rows) == ["deploy", "misc", "review", "summarize"]
    review = rows["review"]
    assert (review.sessions, review.success, review.failure, review.aborted, review.running) == (
        4, 1, 1, 1, 1)
    assert (review.input_tokens, review.output_tokens) == (2600, 600)
    assert (review.cache_read_tokens, review.cache_write_tokens) == (3000, 500)
    assert review.cost_usd == pytest.approx(0.0123 + 0.004 + 0.0005)
    assert review.unknown_cost_sessions == 1 and review.unknown_cost_calls == 1
    assert review.cache_hit_rate == pytest.approx(3000 / 6100)
    assert review.cost_per_success == pytest.approx(0.0168)
    assert review.tokens_per_s == pytest.approx(590 / 6.2)
    assert review.price_source is not None and "reported" in review.price_source
    local = rows["summarize"]
    assert local.cost_usd == 0 and local.local and local.cost_display == "$0 (local)"
    assert rows["deploy"].cost_usd is None and rows["deploy"].cost_display == "-"
    assert report.total.sessions == 7


def test_aggregate_by_model_counts_a_session_in_each_of_its_models(tmp_path: Path) -> None:
    t0 = "2026-11-21T10:00:00.000000Z"
    lines = fx.numbered([
        fx.rec(t0, "mix", "m1", "start", {}),
        fx.rec(t0, "mix", "m1", "llm_call", {"provider": "openai", "model": "gpt-4o",
               "usage": {"input_tokens": 10, "output_tokens": 1}, "cost_usd": 0.25}),
        fx.rec(t0, "mix", "m1", "llm_call", {"provider": "acme", "model": "acme-9",
               "usage": {"input_tokens": 10, "output_tokens": 1}}),
        fx.rec(t0, "mix", "m1", "end", {"outcome": "success"}),
    ])
    fx.write_session(tmp_path, "2026-11-21", "mix", "m1", list(lines), fx.traced_meta(lines))
    report = aggregate(collect([tmp_path], None), "model")
    rows = {r.key: r for r in report.rows}
    assert rows["gpt-4o"].sessions == rows["acme-9"].sessions == 1
    assert rows["gpt-4o"].cost_usd == 0.25 and rows["gpt-4o"].unknown_cost_sessions == 0
    assert rows["acme-9"].cost_usd is None and rows["acme-9"].cost_display == "unknown"
    assert report.total.sessions == 1 and report.total.cost_usd == 0.25
    assert report.total.unknown_cost_sessions == 1
    assert report.total.cost_display == "$0.2500 + unknown"


def test_aggregate_rejects_unknown_grouping() -> None:
    with pytest.raises(ValueError):
        aggregate([], "colour")


def test_usage_skips_traces_without_llm_calls(root: Path) -> None:
    stats = ScanStats()
    infos = scan([root], stats=stats)
    assert stats.traces_read == 3  # running, devboy's meta, no meta: the others are meta-only
    data = collect([root], None, infos=infos)
    assert len(data) == 7
    calls = {d.info.session_id: len(d.calls) for d in data}
    assert calls[fx.REVIEW_ID] == 2 and calls[fx.DEVBOY_ID] == 0 and calls[fx.RUNNING_ID] == 1
    # a finished session whose meta.json counts no llm_call is not opened at all
    fx.many_sessions(root, 1, date="2026-11-18")
    (sid_dir,) = (root / "2026-11-18" / "bulk").iterdir()
    with open(sid_dir / "trace.jsonl", "ab") as f:
        f.write(fx.encode(fx.rec("2026-11-18T10:00:00Z", "bulk", sid_dir.name, "llm_call",
                                 {"model": "gpt-4o", "usage": {"input_tokens": 1}})))
    data = collect([root], parse_window("2026-11-18"))
    assert [len(d.calls) for d in data] == [0]


def test_symlinked_dirs_inside_a_root_are_not_followed(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    fx.write_session(elsewhere, "2026-11-23", "x", "planted", [
        fx.rec("2026-11-23T10:00:00Z", "x", "planted", "start", {})], None)
    (root / "2026-11-23").symlink_to(elsewhere / "2026-11-23")
    (root / "2026-11-21" / "linked").symlink_to(elsewhere / "2026-11-23" / "x")
    assert "planted" not in {i.session_id for i in scan([root])}
    with pytest.raises(SessionNotFound):
        find_session([root], "planted")
