"""The README's screenshot: a real Claude Code conversation, recorded by the real daemon, in the waterfall.

The hook payloads of tests/fixtures/claude_code/ go through ``traced hook claude-code`` one process
per event (as Claude Code runs them), with LLM calls emitted between the turns. The test checks
what the page shows, then saves the screenshot: always to a temp file, and to
``$TRACED_UI_SCREENSHOT`` when set (``scripts/ui-screenshot`` sets it to docs/img/ui-waterfall.png).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for
from tests.ui.conftest import login
from tests.ui.test_browser import by_css, click, text_of, texts, tool_rows

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude_code"
SID = "5f0c2b1e-8d3a-4c7e-9b21-3e6f7a9d4c10"
LLM_AFTER = {
    "02-user-prompt-submit.json": {"input_tokens": 5200, "output_tokens": 410, "cache_read_tokens": 18000},
    "06-post-tool-use-read.json": {"input_tokens": 2400, "output_tokens": 880, "cache_read_tokens": 23000},
    "08-user-prompt-submit-2.json": {"input_tokens": 1900, "output_tokens": 260, "cache_read_tokens": 26000},
    "18-post-tool-use-task.json": {"input_tokens": 3100, "output_tokens": 1250, "cache_read_tokens": 29000},
}

pytestmark = pytest.mark.timeout(120)



def test_waterfall_of_a_real_claude_code_session(page: Any, daemon: Daemon, ui_factory: Any,
                                                 tmp_path: Path) -> None:
    with daemon.client() as client:
        for hook in sorted(FIXTURES.glob("*.json")):  # one process per event, as Claude Code runs them
            res = subprocess.run([sys.executable, "-m", "traced", "hook", "claude-code"], input=hook.read_text(),
                                 env=daemon.env, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0 and res.stderr == "", (hook.name, res.stderr)
            usage = LLM_AFTER.get(hook.name)
            if usage is not None:
                client.emit(SID, "llm_call", {"provider": "anthropic", "model": "claude-sonnet-4-5",
                                              "usage": usage, "latency_ms": 180})
    ui = ui_factory([daemon.root], {"TRACED_SOCKET": str(daemon.socket)})
    page.set_window_size(1280, 760)
    try:
        login(page, ui, f"/session/{SID}")
        assert text_of(page, "#sid") == SID
        wait_for(lambda: text_of(page, "#outcome") != "running", 20, what="the ended session")
        names = [n for n, _, _ in tool_rows(page)]
        assert names == ["Bash", "Read", "create_issue", "Skill", "Task", "Grep"], names
        nested = texts(page, '.row[data-kind="tool"] .agent')
        assert nested == ["Explore"]  # the subagent's Grep, under the Task that spawned it
        assert [r[2] for r in tool_rows(page)] == [True, False, False, False, False, False]
        assert len(by_css(page, '.row[data-kind="llm"]')) == 4
        assert text_of(page, "#f-total-cost").startswith("$")
        click(page, '.row[data-kind="tool"]', 4)
        wait_for(lambda: "tool_result (paired)" in texts(page, "#detail")[0], 10, what="the Task's payload")
        shot = tmp_path / "ui-waterfall.png"
        assert page.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        target = os.environ.get("TRACED_UI_SCREENSHOT")
        if target:
            shutil.copyfile(shot, target)
    finally:
        page.set_window_size(1400, 900)
