"""Resuming a long trace: state from the file, read off the event loop, memory bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, assert_gap_free, read_trace
from traced.daemon.journal import KEYS_KEPT, scan


def _write_trace(path: Path, sid: str, n: int, client: str = "c") -> None:
    with open(path, "w") as f:
        f.write(json.dumps({"ts": "2026-11-01T00:00:00.000000Z", "skill": "long", "session_id": sid, "step": 1,
                            "phase": "start", "payload": {}}) + "\n")
        for step in range(2, n + 1):
            phase = "tool_call" if step % 10 == 0 else "note"
            f.write(json.dumps({"ts": "2026-11-01T00:00:01.000000Z", "skill": "long", "session_id": sid,
                                "step": step, "phase": phase, "payload": {"message": "m", "tool": "Bash"},
                                "client_seq": f"{client}:{step}"}) + "\n")
        f.write(json.dumps({"ts": "2026-11-01T00:00:02.000000Z", "skill": "long", "session_id": sid,
                            "step": n + 1, "phase": "end", "payload": {"outcome": "success"}}) + "\n")


def test_scan_memory_is_bounded_whatever_the_trace_length(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    _write_trace(trace, "s", 3 * KEYS_KEPT)
    st = scan(str(trace))
    assert st.last_step == 3 * KEYS_KEPT + 1 and st.ended
    assert KEYS_KEPT // 2 <= len(st.keys) <= KEYS_KEPT
    assert st.keys[f"c:{3 * KEYS_KEPT}"] == 3 * KEYS_KEPT  # the newest are the ones kept


def test_resuming_a_long_ended_session_continues_its_steps_and_counts(daemon: Daemon) -> None:
    sid = "01JDLONGSESSION00000000000"
    sdir = daemon.root / "2026-11-01" / "long" / sid
    sdir.mkdir(parents=True)
    n = 200_000
    _write_trace(sdir / "trace.jsonl", sid, n)
    meta: dict[str, Any] = {"session_id": sid, "skill": "long", "devboy_version": "traced 0.1.0",
                            "started_at": "2026-11-01T00:00:00.000000Z", "ended_at": "2026-11-01T00:00:02.000000Z",
                            "outcome": "success", "tool_calls": 0, "errors": 0}
    (sdir / "meta.json").write_text(json.dumps(meta))
    with daemon.client() as c:
        s = c.session("long", session_id=sid, owner_pid=-1)
        assert s.note("resumed") == n + 3  # start {resumed} was n + 2
        s.end()
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    assert records[n + 1]["payload"] == {"resumed": True}
    final = json.loads((sdir / "meta.json").read_text())
    assert (final["steps"], final["tool_calls"], final["phases"]["note"], final["phases"]["end"]) == (
        n + 4, n // 10, n - 1 - n // 10 + 1, 2)
