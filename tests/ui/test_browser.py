"""The UI in a real headless Chromium: what a person sees on each page, and on an exported file.

One ``traced ui`` serves the generated fixture tree for the whole module; one browser
serves every test (tests/ui/conftest.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures_traces as ft
from tests.conftest import wait_for
from tests.ui.conftest import Ui, login, start_ui

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "sessions"
    ft.build_tree(root)
    xss_session(root)
    big_blob_session(root)
    return root


BIG_ID = "01JD4B1GB10B000000000000BB"
BIG_TEXT = "".join(f"{i:07d} " + "x" * 56 + "\n" for i in range(48_000))  # 3 MB


def big_blob_session(root: Path) -> Path:
    """One tool result of 3 MB, spilled to a blob (a span "with lots of data": Arize-ai/phoenix#13124)."""
    import hashlib

    t0, sk, sid = "2026-11-21T12:00:00.000000Z", "bulk", BIG_ID
    digest = hashlib.sha256(BIG_TEXT.encode()).hexdigest()
    lines = ft.numbered([
        ft.rec(t0, sk, sid, "start", {}),
        ft.rec(ft.at(t0, 0.1), sk, sid, "tool_call", {"tool": "Read", "args": {"path": "dump.txt"}, "call_id": "r"}),
        ft.rec(ft.at(t0, 0.4), sk, sid, "tool_result", {"tool": "Read", "ok": True, "call_id": "r",
               "result_summary": {"$blob": f"sha256:{digest}", "size": len(BIG_TEXT)}}),
        ft.rec(ft.at(t0, 0.5), sk, sid, "end", {"outcome": "success"}),
    ])
    sdir = ft.write_session(root, "2026-11-21", sk, sid, list(lines), ft.traced_meta(lines))
    (sdir / "blobs").mkdir()
    (sdir / "blobs" / digest).write_text(BIG_TEXT)
    return sdir


@pytest.fixture(scope="module")
def ui(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    server = start_ui([tree], tmp_path_factory.mktemp("ui"), {"TZ": "UTC"})
    yield server
    server.stop()


XSS_ID = "01JD4XSS0000000000000000XS"
XSS_TOOL = '<img src=x onerror="window.__xss=1">'
XSS_PROMPT = "</script><script>window.__xss=2</script><b>bold</b>"
XSS_SUMMARY = '<svg onload="window.__xss=3">'


def xss_session(root: Path) -> Path:
    """Attacker-controlled text everywhere a page shows it: tool name, args, prompt, summary, model."""
    t0, sk, sid = "2026-11-21T10:00:00.000000Z", "review", XSS_ID
    lines = ft.numbered([
        ft.rec(t0, sk, sid, "start", {"input": XSS_PROMPT}),
        ft.rec(ft.at(t0, 0.1), sk, sid, "user_prompt", {"prompt": XSS_PROMPT}, turn=1),
        ft.rec(ft.at(t0, 0.2), sk, sid, "tool_call", {"tool": XSS_TOOL, "args": {"x": XSS_PROMPT},
                                                     "call_id": "x1", "server": XSS_SUMMARY}, turn=1),
        ft.rec(ft.at(t0, 0.5), sk, sid, "tool_result", {"tool": XSS_TOOL, "ok": False, "call_id": "x1",
                                                       "error": XSS_SUMMARY}, turn=1),
        ft.rec(ft.at(t0, 0.9), sk, sid, "llm_call", {"model": XSS_TOOL, "usage": {"input_tokens": 1,
                                                    "output_tokens": 1}}, turn=1),
        ft.rec(ft.at(t0, 1.0), sk, sid, "note", {"message": XSS_PROMPT}, turn=1),
        ft.rec(ft.at(t0, 1.2), sk, sid, "end", {"outcome": "failure", "summary": XSS_SUMMARY}, turn=1),
    ])
    return ft.write_session(root, "2026-11-21", sk, sid, list(lines), ft.traced_meta(lines))


def by_css(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def attrs(driver: Any, css: str, attr: str) -> list[str]:
    """``attr`` of every element matching ``css``, read in one go inside the page (no stale handles)."""
    got: list[str] = driver.execute_script(
        "var a = arguments[1]; return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(function (e) { return e.getAttribute(a); })", css, attr)
    return got


def texts(driver: Any, css: str) -> list[str]:
    """``innerText`` of every element matching ``css``, read in one go inside the page."""
    got: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (e) { return e.innerText; })", css)
    return got


def click(driver: Any, css: str, index: int = 0) -> None:
    """A real click on the ``index``-th element matching ``css`` (again if a repaint replaced it first)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(5):
        try:
            by_css(driver, css)[index].click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css}[{index}] kept being replaced")


def text_of(driver: Any, css: str) -> str:
    """The text of the first element matching ``css``, once there is one (read inside the page)."""
    found = wait_for(lambda: texts(driver, css), 15, what=f"{css} on the page")
    return str(found[0])


def tool_rows(driver: Any) -> list[tuple[str, str, bool]]:
    """(tool name, duration text, failed) per tool row on the waterfall (read in one go, in the page)."""
    rows: list[list[Any]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('.row[data-kind=\"tool\"]')).map(function (r) {"
        " return [r.querySelector('.name').textContent, r.querySelector('.dur').textContent,"
        " r.querySelector('.bar').classList.contains('fail')]; })")
    return [(str(n), str(d), bool(f)) for n, d, f in rows]


# --------------------------------------------------------------------------- sessions page


def test_sessions_page_lists_sorts_filters_and_searches(page: Any, ui: Ui) -> None:
    from selenium.webdriver.support.ui import Select

    login(page, ui)
    all_ids = {ft.REVIEW_ID, ft.REVIEW2_ID, ft.LOCAL_ID, ft.DEVBOY_ID, ft.TORN_ID, ft.ODD_ID, ft.RUNNING_ID, XSS_ID,
               BIG_ID}
    ids = wait_for(lambda: set(attrs(page, "#sessions tbody tr", "data-session")) or None,
                   15, what="session rows")
    assert ids == all_ids
    assert page.current_url == ui.base + "/", "the token must leave the address bar"
    assert attrs(page, "#sessions tbody tr.running", "data-session") == [ft.RUNNING_ID]
    assert "running" in texts(page, "#sessions tbody tr.running")[0]
    cells = texts(page, f'#sessions tr[data-session="{ft.REVIEW_ID}"] td')
    assert cells[1:] == ["review", ft.REVIEW_ID, "17", "2", "10.50 s", "success", "3", "1", "2,000/540",
                         "$0.0163"]  # priced like `traced ls` prices it (read.usage.session_cost)
    # newest first, then by clicking "Steps" twice: ascending
    assert attrs(page, "#sessions tbody tr", "data-session")[0] == ft.RUNNING_ID
    click(page, 'th[data-key="steps"]', 0)
    click(page, 'th[data-key="steps"]', 0)
    steps = texts(page, "#sessions tbody tr td:nth-child(4)")
    assert steps == sorted(steps, key=lambda s: -1 if s == "-" else int(s))
    Select(by_css(page, "#f-outcome")[0]).select_by_value("failure")
    assert set(attrs(page, "#sessions tbody tr", "data-session")) == {ft.REVIEW2_ID, XSS_ID}
    Select(by_css(page, "#f-outcome")[0]).select_by_value("")
    set_date = ("var e = document.getElementById(arguments[0]); e.value = arguments[1];"
                " e.dispatchEvent(new Event('change'))")
    page.execute_script(set_date, "f-from", "2026-11-20")
    page.execute_script(set_date, "f-to", "2026-11-20")  # started that day (local time; all mid-day)
    assert set(attrs(page, "#sessions tbody tr", "data-session")) == {ft.REVIEW2_ID, ft.LOCAL_ID, ft.ODD_ID}
    page.execute_script(set_date, "f-from", "")
    page.execute_script(set_date, "f-to", "")
    search = by_css(page, "#f-q")[0]
    search.send_keys("kubectl")  # a tool name: only in the devboy session's trace
    wait_for(lambda: set(attrs(page, "#sessions tbody tr", "data-session")) == {ft.DEVBOY_ID},
             15, what="the search to keep only the devboy session")
    assert text_of(page, "#count") == "1 of 1 sessions"


def test_long_session_lists_render_in_pages(page: Any, ui_factory: Any, tmp_path: Path) -> None:
    """A list of every session must not freeze the tab either: 500 rows, then more on demand."""
    root = tmp_path / "sessions"
    ft.many_sessions(root, 1200)
    ui = ui_factory([root])
    login(page, ui)
    wait_for(lambda: len(attrs(page, "#sessions tbody tr", "data-session")) == 500, 20, what="the first 500 rows")
    assert text_of(page, "#count") == "1200 of 1200 sessions"
    assert text_of(page, "#more") == "show 500 more of 700"
    click(page, "#more")
    assert len(attrs(page, "#sessions tbody tr", "data-session")) == 1000
    click(page, "#more")
    assert len(attrs(page, "#sessions tbody tr", "data-session")) == 1200
    assert attrs(page, "#more", "hidden") == [""]


# --------------------------------------------------------------------------- one session


def test_session_waterfall_shows_id_outcome_bars_cost_and_payloads(page: Any, ui: Ui) -> None:
    login(page, ui, f"/session/{ft.REVIEW_ID}")
    assert text_of(page, "#sid") == ft.REVIEW_ID
    assert text_of(page, "#outcome") == "success"
    # one bar per tool call, call -> result paired by call_id (the third has none: by tool, in order)
    assert tool_rows(page) == [("Bash", "330 ms", False), ("Read", "12 ms", False), ("Bash", "2.10 s", True)]
    assert text_of(page, "#f-tool-calls") == "3"
    assert text_of(page, "#f-errors") == "1"
    # LLM calls: model, tokens, cost (reported; gpt-4o priced by genai-prices, like `traced usage`)
    llm = texts(page, '.row[data-kind="llm"]')
    assert llm == ["claude-sonnet-4-5 1,200 in / 340 out · $0.0123\n4.20 s",
                   "gpt-4o 800 in / 200 out · $0.0040\n1.50 s"]
    assert text_of(page, "#f-total-cost") == "$0.0163"
    assert texts(page, "#summary") == [f"{ft.REVIEW_ID} success\nskill\nreview\nstarted\n2026-11-21 22:48:17\n"
                                       "duration\n10.50 s\nsteps\n17\ntool calls\n3\nerrors\n1\nLLM calls\n2\n"
                                       "tokens in/out\n2,000 / 540\ncost\n$0.0163\n\napproved with 2 nits"]
    assert texts(page, '.row[data-kind="lane"]') == [
        "before the first prompt", "turn 1: Please review PR 42", "turn 2: Summarize the review"]
    markers = sorted(m.get_attribute("class") for m in by_css(page, ".marker"))
    assert markers == ["marker m-artifact", "marker m-decision", "marker m-end", "marker m-note", "marker m-start",
                       "marker m-user_prompt", "marker m-user_prompt", "marker m-verify"]
    # a bar's width is its duration on the session's scale: 2.1 s of 10.5 s
    track = by_css(page, '.row[data-kind="tool"] .track')[2]
    bar = by_css(page, '.row[data-kind="tool"] .bar')[2]
    assert bar.size["width"] / track.size["width"] == pytest.approx(2.1 / 10.5, abs=0.01)
    # clicking the Read bar shows its call and its result, the spilled blob read back
    click(page, '.row[data-kind="tool"]', 1)
    wait_for(lambda: "line 79: def handler" in by_css(page, "#detail")[0].text, 15, what="the blob in the detail")
    detail = by_css(page, "#detail")[0].text
    assert detail.startswith("step 4 · tool_call")
    assert '"path": "src/app.py"' in detail and "tool_result (paired)" in detail


def test_broken_traces_and_unknown_ids_say_so(page: Any, ui: Ui) -> None:
    login(page, ui, f"/session/{ft.TORN_ID[:12]}")  # a prefix is enough
    assert text_of(page, "#sid") == ft.TORN_ID
    assert text_of(page, "#outcome") == "aborted"
    assert texts(page, ".summary .warn") == ["3 malformed lines skipped", "torn last line ignored"]
    assert tool_rows(page) == [("Bash", "pending", False)]
    login(page, ui, "/session/01NOSUCHSESSION")
    assert text_of(page, ".summary .error").startswith("no session matching '01NOSUCHSESSION' under ")


def test_a_3_mb_payload_shows_its_start_at_once(page: Any, ui: Ui) -> None:
    login(page, ui, f"/session/{BIG_ID}")
    wait_for(lambda: tool_rows(page) == [("Read", "300 ms", False)], 15, what="the Read row")
    click(page, '.row[data-kind="tool"]', 0)
    wait_for(lambda: by_css(page, "#detail .payload button"), 15, what="the 'show all' button")
    shown = page.execute_script("return Array.from(document.querySelectorAll('#detail pre'))"
                                ".map(function (p) { return p.textContent.length; })")
    assert shown[0] < 2000 and shown[1] == 100_000  # the call whole; the result's first 100,000 characters
    click(page, "#detail .payload button", 0)
    full = page.execute_script("return document.querySelectorAll('#detail pre')[1].textContent.length")
    assert full > len(BIG_TEXT)
    assert by_css(page, "#detail .payload button") == []


def test_session_subagent_rows_nest_under_their_task(page: Any, ui_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    t0, sk, sid = "2026-11-22T08:00:00.000000Z", "cc", "01JD5SUBAGENT0000000000001"
    lines = ft.numbered([
        ft.rec(t0, sk, sid, "start", {}),
        ft.rec(ft.at(t0, 0.1), sk, sid, "user_prompt", {"prompt": "find usages"}, turn=1),
        ft.rec(ft.at(t0, 0.2), sk, sid, "tool_call", {"tool": "Task", "args": {}, "call_id": "t1"}, turn=1),
        ft.rec(ft.at(t0, 0.4), sk, sid, "tool_call", {"tool": "Grep", "args": {}, "call_id": "g1", "agent_id": "a1",
                                                     "agent_type": "Explore"}, turn=1),
        ft.rec(ft.at(t0, 0.5), sk, sid, "tool_call", {"tool": "mcp__gh__search", "args": {}, "call_id": "m1",
                                                     "kind": "mcp", "server": "gh"}, turn=1),
        ft.rec(ft.at(t0, 0.6), sk, sid, "tool_result", {"tool": "Grep", "ok": True, "call_id": "g1",
                                                       "agent_id": "a1"}, turn=1),
        ft.rec(ft.at(t0, 0.9), sk, sid, "tool_result", {"tool": "Task", "ok": True, "call_id": "t1"}, turn=1),
        ft.rec(ft.at(t0, 1.0), sk, sid, "end", {"outcome": "success"}, turn=1),
    ])  # m1 never answers: pending to the end
    ft.write_session(root, "2026-11-22", sk, sid, list(lines), ft.traced_meta(lines))
    ui = ui_factory([root])
    login(page, ui, f"/session/{sid}")
    wait_for(lambda: len(tool_rows(page)) == 3, 15, what="three tool rows")
    rows = texts(page, '.row[data-kind="tool"]')
    assert [r.split("\n")[0] for r in rows] == ["Task {}", "ExploreGrep {}", "mcp__gh__search @gh {}"]
    pads = page.execute_script("return Array.from(document.querySelectorAll('.row[data-kind=\"tool\"] .label'))"
                               ".map(function (l) { return getComputedStyle(l).paddingLeft; })")
    assert pads == ["6px", "22px", "6px"]
    assert texts(page, '.row[data-kind="tool"] .dur') == ["700 ms", "200 ms", "pending"]
    assert attrs(page, '.row[data-kind="tool"] .bar', "class") == ["bar k-tool", "bar k-tool", "bar k-mcp open"]


def test_5000_steps_render_lazily_and_stay_usable(page: Any, ui_factory: Any, tmp_path: Path) -> None:
    """Big traces froze other viewers (jaeger-ui#630, zipkin#1460, signoz#4490): only the rows in view exist."""
    root = tmp_path / "sessions"
    t0, sk, sid = "2026-11-23T08:00:00.000000Z", "big", "01JD6B1G00000000000000005K"
    lines = [ft.rec(t0, sk, sid, "start", {})]
    turn = 0
    for i in range(2499):
        if i % 50 == 0:
            turn += 1
        lines.append(ft.rec(ft.at(t0, 0.1 + i * 0.2), sk, sid, "tool_call",
                            {"tool": f"T{i}", "args": {"i": i}, "call_id": f"c{i}"}, turn=turn))
        lines.append(ft.rec(ft.at(t0, 0.15 + i * 0.2), sk, sid, "tool_result",
                            {"tool": f"T{i}", "ok": i % 97 != 0, "call_id": f"c{i}"}, turn=turn))
    lines.append(ft.rec(ft.at(t0, 600), sk, sid, "end", {"outcome": "success"}, turn=turn))
    lines = ft.numbered(lines)
    assert len(lines) == 5000
    ft.write_session(root, "2026-11-23", sk, sid, list(lines), ft.traced_meta(lines))
    ui = ui_factory([root])
    login(page, ui)  # the cookie first, so the timing below is the waterfall's alone
    began = time.monotonic()
    page.get(f"{ui.base}/session/{sid}")
    wait_for(lambda: by_css(page, '.row[data-kind="tool"]'), 20, what="the first rows")
    elapsed = time.monotonic() - began
    assert elapsed < 8, f"the 5,000-step waterfall took {elapsed:.1f}s to show"
    assert text_of(page, "#f-steps") == "5000"
    in_dom = len(by_css(page, ".row"))
    assert 10 < in_dom < 120, f"{in_dom} rows in the DOM for 2,549 waterfall rows"
    page.execute_script("document.getElementById('waterfall').scrollTop = 1e9")
    wait_for(lambda: any(t.startswith("T2498 ") for t in texts(page, '.row[data-kind="tool"]')), 10,
             what="the last tool row after scrolling to the bottom")
    assert len(by_css(page, ".row")) < 120
    # still usable: a click shows that step's payload
    click(page, '.row[data-kind="tool"]', -1)
    wait_for(lambda: "step 4998 · tool_call" in by_css(page, "#detail")[0].text, 10, what="the last call's payload")


# --------------------------------------------------------------------------- usage


def test_usage_page_shows_the_numbers_of_traced_usage(page: Any, ui: Ui, tree: Path) -> None:
    from selenium.webdriver.support.ui import Select

    login(page, ui, "/usage")
    Select(wait_for(lambda: by_css(page, "#u-since"), 10, what="the window select")[0]).select_by_value("30d")
    cli = subprocess.run([sys.executable, "-m", "traced", "usage", "--root", str(tree), "--since", "30d",
                          "--by", "model", "--json"], capture_output=True, text=True, env=ui.env, check=True)
    report = json.loads(cli.stdout)
    wait_for(lambda: len(by_css(page, "#usage-table tbody tr")) == len(report["rows"]) + 1, 20,
             what="the usage table for 30d")
    cells: list[list[str]] = page.execute_script(
        "return Array.from(document.querySelectorAll('#usage-table tbody tr')).map(function (r) {"
        " return [r.getAttribute('data-key')].concat(Array.from(r.cells).slice(1).map(function (c) {"
        " return c.innerText; })); })")
    rows = {row[0]: row[1:] for row in cells}
    for row in report["rows"]:
        shown = rows[row["key"]]
        assert shown[:6] == [row["key"], str(row["sessions"]), f"{row['llm_calls']:,}", f"{row['input_tokens']:,}",
                             f"{row['output_tokens']:,}", f"{row['cache_read_tokens']:,}"]
    assert rows["acme-private-9000"][6] == "unknown"
    assert rows["llama3.1:8b"][6] == "$0 (local)"
    assert rows["gpt-4o"][6] == "$0.0040"
    total = report["total"]
    assert text_of(page, "#total-cost") == f"${total['cost_usd']:.4f} + unknown"
    assert total["unknown_cost_calls"] == 2
    # the chart: one segment per (day, model) with calls; days with unknown costs carry a "?"
    segs = set(zip(attrs(page, "rect.seg", "data-day"), attrs(page, "rect.seg", "data-key"), strict=True))
    assert ("2026-11-21", "claude-sonnet-4-5") in segs and ("2026-11-20", "llama3.1:8b") in segs
    assert len(by_css(page, "text.unknown-mark")) == 2
    tools = subprocess.run([sys.executable, "-m", "traced", "usage", "--root", str(tree), "--since", "30d",
                            "--by", "tool", "--json"], capture_output=True, text=True, env=ui.env, check=True)
    by_tool = json.loads(tools.stdout)
    assert attrs(page, "#tools-table tbody tr", "data-key") == [r["key"] for r in by_tool["rows"]] + ["total"]
    bash = [texts(page, '#tools-table tr[data-key="Bash"] td')]
    assert bash[0][:4] == ["Bash", str(by_tool["rows"][0]["sessions"]), "4", "2"]
    top = attrs(page, "#top li", "data-session")
    assert top[0] == ft.REVIEW_ID


# --------------------------------------------------------------------------- export


def export(tree: Path, sid: str, out: Path, env: dict[str, str] | None = None) -> Path:
    """``traced show SID --html > out`` (as a process when ``env`` is given, else in this one)."""
    if env is None:
        from traced.read.sessions import find_session, load_session
        from traced.ui.export import render

        out.write_text(render(load_session(find_session([tree], sid))))
        return out
    res = subprocess.run([sys.executable, "-m", "traced", "show", sid, "--root", str(tree), "--html"],
                         capture_output=True, env=env, check=True)
    out.write_bytes(res.stdout)
    return out


RESOURCE_URL = re.compile(rb"""(?:src|href|action|poster|data)\s*=\s*["']?\s*https?:|url\(\s*["']?https?:|@import""",
                          re.IGNORECASE)


def test_export_is_one_self_contained_file(page: Any, ui: Ui, tree: Path, tmp_path: Path) -> None:
    path = export(tree, ft.REVIEW_ID, tmp_path / "session.html", ui.env)
    data = path.read_bytes()
    assert RESOURCE_URL.search(data) is None
    assert re.search(rb"https?://", data) is None, "no http(s) URL at all in the export"
    page.get_log("browser")  # drop what earlier pages logged
    page.get(path.as_uri())
    assert text_of(page, "#sid") == ft.REVIEW_ID
    assert text_of(page, "#outcome") == "success"
    assert tool_rows(page) == [("Bash", "330 ms", False), ("Read", "12 ms", False), ("Bash", "2.10 s", True)]
    assert text_of(page, "#f-total-cost") == "$0.0163"
    click(page, '.row[data-kind="tool"]', 1)
    wait_for(lambda: "line 79: def handler" in by_css(page, "#detail")[0].text, 10, what="the blob, offline")
    assert page.execute_script("return performance.getEntriesByType('resource').length") == 0
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], "the CSP blocked something the page needs"


def test_export_network_payloads_stay_text(page: Any, tree: Path, tmp_path: Path, ui: Ui) -> None:
    """URLs inside payloads are text, not resources: the page makes no request at all."""
    root = tmp_path / "sessions"
    t0, sk, sid = "2026-11-21T11:00:00.000000Z", "fetch", "01JD7NET0000000000000000NT"
    evil = '<img src="https://tracker.example/p.png"><link rel=stylesheet href="http://x.example/a.css">'
    lines = ft.numbered([
        ft.rec(t0, sk, sid, "start", {}),
        ft.rec(ft.at(t0, 0.1), sk, sid, "tool_call", {"tool": "WebFetch", "args": {"url": evil}, "call_id": "w"}),
        ft.rec(ft.at(t0, 0.3), sk, sid, "tool_result", {"tool": "WebFetch", "ok": True, "call_id": "w",
                                                       "result_summary": evil}),
        ft.rec(ft.at(t0, 0.4), sk, sid, "end", {"outcome": "success"}),
    ])
    ft.write_session(root, "2026-11-21", sk, sid, list(lines), ft.traced_meta(lines))
    path = export(root, sid, tmp_path / "net.html")
    assert RESOURCE_URL.search(path.read_bytes()) is None
    page.get(path.as_uri())
    wait_for(lambda: by_css(page, '.row[data-kind="tool"]'), 10, what="the tool row")
    click(page, '.row[data-kind="tool"]', 0)
    wait_for(lambda: "tracker.example" in by_css(page, "#detail")[0].text, 10, what="the URL as text")
    assert page.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert by_css(page, "#detail img") == [] and by_css(page, "link[href*='x.example']") == []


# --------------------------------------------------------------------------- XSS


def test_xss_in_trace_text_renders_as_text(page: Any, ui: Ui, tree: Path, tmp_path: Path) -> None:
    """claude-code-log#244, langfuse#7113: trace text must never become markup, served or exported."""
    login(page, ui, f"/session/{XSS_ID}")
    wait_for(lambda: tool_rows(page), 15, what="the tool row")
    assert tool_rows(page) == [(XSS_TOOL, "300 ms", True)]
    lanes = texts(page, '.row[data-kind="lane"]')
    assert lanes[1] == "turn 1: " + XSS_PROMPT
    assert texts(page, '.row[data-kind="llm"] .name') == [XSS_TOOL]
    assert text_of(page, ".summary .sum") == XSS_SUMMARY
    click(page, '.row[data-kind="tool"]', 0)
    shown = json.dumps(XSS_SUMMARY)[1:-1]  # as JSON text: quotes escaped
    wait_for(lambda: shown in texts(page, "#detail")[0], 10, what="the payload")
    assert page.execute_script("return window.__xss === undefined")
    assert by_css(page, "#app img") == [] and by_css(page, "#app svg") == [] and by_css(page, "#app script") == []
    login(page, ui, "/")
    wait_for(lambda: by_css(page, f'#sessions tr[data-session="{XSS_ID}"]'), 15, what="the XSS session row")
    assert page.execute_script("return window.__xss === undefined")
    path = export(tree, XSS_ID, tmp_path / "xss.html")
    assert b"</script><script>window.__xss" not in path.read_bytes()
    page.get(path.as_uri())
    assert tool_rows(page) == [(XSS_TOOL, "300 ms", True)]
    assert page.execute_script("return window.__xss === undefined")
    assert by_css(page, "#app img") == [] and by_css(page, "#app script") == []


# --------------------------------------------------------------------------- opening the browser


def test_the_browser_opens_a_redirect_file_not_the_token(page: Any, tree: Path, tmp_path: Path) -> None:
    """The token never goes on a command line (``ps`` shows it to everyone: jupyter/notebook#4260,
    jamie8johnson/cqs#1337); the 0600 file it opens instead still logs the browser in."""
    import os
    import stat

    argv_file = tmp_path / "argv"
    fake = tmp_path / "browser.sh"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv_file}\n')
    fake.chmod(0o755)
    ui = start_ui([tree], tmp_path, {"BROWSER": str(fake), "DISPLAY": ""}, no_open=False)
    try:
        args = wait_for(lambda: argv_file.exists() and argv_file.read_text().split(), 15, what="the browser's argv")
        assert len(args) == 1 and args[0].startswith("file:///") and ui.token not in args[0]
        opener = Path(args[0].removeprefix("file://"))
        assert stat.S_IMODE(opener.stat().st_mode) == 0o600
        assert stat.S_IMODE(opener.parent.stat().st_mode) == 0o700
        assert ui.url in opener.read_text().replace("&amp;", "&")
        page.get(args[0])  # from file:// to the server: a cross-site start, and the cookie still works
        wait_for(lambda: page.current_url == ui.base + "/", 15, what="the sessions page")
        wait_for(lambda: ft.REVIEW_ID in attrs(page, "#sessions tbody tr", "data-session"), 15, what="the sessions")
    finally:
        ui.stop()
    assert not opener.exists() and not os.path.exists(opener.parent)


def test_sigterm_removes_the_redirect_file_too(tree: Path, tmp_path: Path) -> None:
    """systemd and ``kill`` stop with SIGTERM: the 0600 file holding the token goes as with Ctrl-C."""
    import signal

    argv_file = tmp_path / "argv"
    fake = tmp_path / "browser.sh"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv_file}\n')
    fake.chmod(0o755)
    ui = start_ui([tree], tmp_path, {"BROWSER": str(fake), "DISPLAY": ""}, no_open=False)
    try:
        args = wait_for(lambda: argv_file.exists() and argv_file.read_text().split(), 15, what="the browser's argv")
        opener = Path(args[0].removeprefix("file://"))
        assert opener.exists()
        ui.proc.send_signal(signal.SIGTERM)
        assert ui.proc.wait(15) == 0
    finally:
        ui.stop()
    assert not opener.parent.exists()
