"""Live pages: a running session gains steps on the open page without a reload.

Through the daemon's bus when it runs, through watchfiles on the trace files when it does not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures_traces as ft
from tests.conftest import Daemon, wait_for
from tests.ui.conftest import login
from tests.ui.test_browser import attrs, click, text_of, texts, tool_rows

pytestmark = pytest.mark.timeout(120)


def mark_page(page: Any) -> None:
    """A flag that a reload would wipe."""
    page.execute_script("window.__still_here = 42")


def not_reloaded(page: Any) -> bool:
    return bool(page.execute_script("return window.__still_here === 42"))


def test_running_session_grows_live_through_the_daemon(page: Any, daemon: Daemon, ui_factory: Any) -> None:
    ui = ui_factory([daemon.root], {"TRACED_SOCKET": str(daemon.socket)})
    with daemon.client() as client:
        s = client.session("live", owner_pid=-1)
        s.event("user_prompt", {"prompt": "go"})
        login(page, ui, f"/session/{s.session_id}")
        assert text_of(page, "#outcome") == "running"
        wait_for(lambda: page.find_element("id", "live").text == "live (daemon)", 20, what="the daemon feed")
        mark_page(page)
        assert tool_rows(page) == []
        secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
        s.event("tool_call", {"tool": "Bash", "args": {"cmd": "make", "env": {"GITHUB_TOKEN": secret}},
                              "call_id": "b1"})
        wait_for(lambda: tool_rows(page) == [("Bash", "pending", False)], 20, what="the new call, pending")
        click(page, '.row[data-kind="tool"]')
        wait_for(lambda: "<redacted:" in texts(page, "#detail")[0], 10, what="the payload, redacted")
        assert secret not in texts(page, "#detail")[0] and secret not in page.page_source
        s.event("tool_result", {"tool": "Bash", "ok": False, "call_id": "b1", "duration_ms": 1500})
        wait_for(lambda: tool_rows(page) == [("Bash", "1.50 s", True)], 20, what="the call's result")
        # a steady stream of records (no pause for a debounce to fire) still shows while it flows
        sent = 0
        while len(tool_rows(page)) == 1:
            assert sent < 2000, "the page never updated during a steady stream of records"
            sent += 1
            s.event("note", {"message": f"tick {sent}"})
            if sent % 5 == 0:
                s.event("tool_call", {"tool": f"Step{sent}", "args": {}, "call_id": f"s{sent}"})
        s.event("llm_call", {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 10, "output_tokens": 5},
                             "cost_usd": 0.25})
        wait_for(lambda: text_of(page, "#f-total-cost") == "$0.2500", 20, what="the cost to update")
        assert not_reloaded(page)
        # the sessions page: a new session shows up, and the first one's outcome changes when it ends
        login(page, ui, "/")
        wait_for(lambda: s.session_id in attrs(page, "#sessions tbody tr", "data-session"), 20, what="the row")
        mark_page(page)
        other = client.session("live2", owner_pid=-1)
        wait_for(lambda: other.session_id in attrs(page, "#sessions tbody tr", "data-session"), 20,
                 what="a session opened after the page")
        s.end("success")
        wait_for(lambda: s.session_id not in attrs(page, "#sessions tbody tr.running", "data-session"), 20,
                 what="the ended session to lose its running mark")
        assert not_reloaded(page)
        sdir = Path(other.dir)
    # the daemon goes away: the page says so and follows the files (another writer appends)
    daemon.kill9()
    wait_for(lambda: page.find_element("id", "live").text == "live (files)", 20, what="the switch to the files")
    login(page, ui, f"/session/{other.session_id}")
    mark_page(page)
    with open(sdir / "trace.jsonl", "ab") as f:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        f.write(ft.encode(ft.rec(now, "live2", other.session_id, "tool_call",
                                 {"tool": "Late", "args": {}, "call_id": "l"}, step=2)))
    wait_for(lambda: [n for n, _, _ in tool_rows(page)] == ["Late"], 20, what="the record written by hand")
    assert not_reloaded(page)


def test_running_session_grows_live_from_the_files(page: Any, ui_factory: Any, tmp_path: Path) -> None:
    """No daemon: another writer appends to trace.jsonl, the page follows."""
    root = tmp_path / "sessions"
    t0, sk, sid = "2026-11-24T08:00:00.000000Z", "files", "01JD8F1LES000000000000000F"
    lines = ft.numbered([ft.rec(t0, sk, sid, "start", {}),
                         ft.rec(ft.at(t0, 0.5), sk, sid, "tool_call", {"tool": "Read", "args": {}, "call_id": "r"})])
    sdir = ft.write_session(root, "2026-11-24", sk, sid, list(lines), ft.traced_meta(lines, ended=False))
    ui = ui_factory([root])
    login(page, ui, f"/session/{sid}")
    wait_for(lambda: page.find_element("id", "live").text == "live (files)", 20, what="the file feed")
    wait_for(lambda: tool_rows(page) == [("Read", "pending", False)], 20, what="the pending call")
    mark_page(page)
    more = ft.numbered([*lines, ft.rec(ft.at(t0, 0.8), sk, sid, "tool_result", {"tool": "Read", "ok": True,
                                                                              "call_id": "r"})])
    with open(sdir / "trace.jsonl", "ab") as f:
        f.write(ft.encode(more[-1]))
    wait_for(lambda: tool_rows(page) == [("Read", "300 ms", False)], 20, what="the appended result")
    assert not_reloaded(page)
