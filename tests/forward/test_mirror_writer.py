"""The mirror's writer without a broker: redeliveries, restarts, other writers' lines, garbage."""

from __future__ import annotations

import json
from pathlib import Path

from traced.forward.mirror import Incoming, MirrorWriter


def _line(sid: str, step: int | None, phase: str, payload: dict[str, object], skill: str = "sk") -> bytes:
    rec: dict[str, object] = {"ts": f"2026-11-29T08:00:{step or 0:02d}.000000Z", "skill": skill, "session_id": sid,
                              "phase": phase, "payload": payload}
    if step is not None:
        rec["step"] = step
    return json.dumps(rec).encode()


def _msgs(sid: str, lines: list[bytes], first: int = 1, host: str = "box-1") -> list[Incoming]:
    return [Incoming(data, f"{sid}:{first + i}", host) for i, data in enumerate(lines)]


def test_redelivery_and_restart_write_each_step_once(tmp_path: Path) -> None:
    lines = [_line("s1", 1, "start", {"cwd": "/w"}),
             _line("s1", 2, "llm_call", {"model": "m", "usage": {"input_tokens": 10, "output_tokens": 2,
                                                                "cache_read_tokens": 100}, "cost_usd": 0.5}),
             _line("s1", 3, "tool_call", {"tool": "Bash"}),
             _line("s1", 4, "tool_result", {"tool": "Bash", "ok": False}),
             _line("s1", 5, "end", {"outcome": "failure", "summary": "no"})]
    w = MirrorWriter(str(tmp_path))
    first = w.apply(_msgs("s1", lines[:3]))
    assert (first.ok, first.written, first.duplicates) == ([True] * 3, 3, 0)
    again = w.apply(_msgs("s1", lines[:4]))  # an ack was lost: 1-3 come again with 4
    assert (again.ok, again.written, again.duplicates) == ([True] * 4, 1, 3)
    w.close()
    w2 = MirrorWriter(str(tmp_path))  # the mirror restarted: the file says how far it got
    res = w2.apply(_msgs("s1", lines[2:], first=3))
    assert (res.written, res.duplicates) == (1, 2)
    w2.close()
    sdir = tmp_path / "2026-11-29" / "sk" / "s1"
    assert (sdir / "trace.jsonl").read_bytes() == b"".join(x + b"\n" for x in lines)
    meta = json.loads((sdir / "meta.json").read_text())
    assert (meta["steps"], meta["tool_calls"], meta["errors"], meta["outcome"], meta["host"]) == (5, 1, 1, "failure",
                                                                                                 "box-1")
    assert meta["usage"]["input_tokens"] == 10 and meta["usage"]["cache_read_tokens"] == 100
    assert (meta["started_at"], meta["ended_at"], meta["cwd"]) == ("2026-11-29T08:00:01.000000Z",
                                                                   "2026-11-29T08:00:05.000000Z", "/w")


def test_stepless_lines_take_their_step_from_the_message_id(tmp_path: Path) -> None:
    lines = [_line("d1", None, "start", {}), _line("d1", None, "note", {"message": "x"})]
    w = MirrorWriter(str(tmp_path))
    assert w.apply(_msgs("d1", lines)).written == 2
    assert w.apply(_msgs("d1", lines)).duplicates == 2
    w.close()
    w2 = MirrorWriter(str(tmp_path))  # positions count as steps after a restart too
    assert w2.apply(_msgs("d1", [*lines, _line("d1", None, "end", {"outcome": "success"})])).written == 1
    w2.close()


def test_garbage_is_acknowledged_and_counted_not_written(tmp_path: Path) -> None:
    w = MirrorWriter(str(tmp_path))
    res = w.apply([Incoming(b"not json", "x:1"), Incoming(_line("../evil", 1, "start", {}), "../evil:1"),
                   Incoming(_line("s2", 1, "start", {}, skill="a/b"), "s2:1"),
                   Incoming(_line("s3", 1, "start", {}), "other:1"),
                   Incoming(_line("s4", 1, "start", {}), "s4:1"),
                   Incoming(json.dumps({"ts": "../../../x", "skill": "sk", "session_id": "s6", "step": 1,
                                        "phase": "start", "payload": {}}).encode(), "s6:1")])
    assert (res.ok, res.rejected, res.written) == ([True] * 6, 5, 1)
    assert sorted(p.name for p in tmp_path.glob("*/*/*")) == ["s4"]  # a bad ts is rejected, never a path
    assert all(p.parent.parent.parent == tmp_path for p in tmp_path.glob("*/*/*"))
    w.close()


def test_a_record_before_its_predecessor_waits_for_it(tmp_path: Path) -> None:
    """JetStream can redeliver out of order (nats-io/nats-server#6114): step 3 before step 2 is
    held (not acknowledged), written after 2. A gap is never forced in, however often it comes:
    a crafted far step would make every later real record look like a duplicate."""
    lines = [_line("s5", n, "note", {"message": str(n)}) for n in (1, 2, 3)]
    w = MirrorWriter(str(tmp_path))
    assert w.apply(_msgs("s5", lines[:1])).written == 1
    early = w.apply([Incoming(lines[2], "s5:3", "h")])
    assert (early.ok, early.held, early.written) == ([False], 1, 0)
    res = w.apply([Incoming(lines[1], "s5:2", "h"), Incoming(lines[2], "s5:3", "h", delivered=2)])
    assert (res.ok, res.written) == ([True, True], 2)
    def at(step: int) -> bytes:
        return json.dumps({"ts": "2026-11-29T08:01:00.000000Z", "skill": "sk", "session_id": "s5",
                           "step": step, "phase": "note", "payload": {}}).encode()

    far = w.apply([Incoming(at(999_999), "s5:999999", "h", delivered=500)])
    assert (far.ok, far.held, far.written) == ([False], 1, 0)
    real = w.apply([Incoming(_line("s5", 4, "end", {"outcome": "success"}), "s5:4", "h")])
    assert (real.ok, real.written, real.duplicates) == ([True], 1, 0)  # not taken for a duplicate
    bad = w.apply([Incoming(at(5), "s5:6", "h"),  # step and msg id disagree
                   Incoming(at(1 << 60), f"s5:{1 << 60}", "h")])
    assert (bad.ok, bad.rejected) == ([True, True], 2)
    w.close()
    trace = tmp_path / "2026-11-29" / "sk" / "s5" / "trace.jsonl"
    steps = [json.loads(x)["step"] for x in trace.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_ts_that_names_no_date_is_rejected(tmp_path: Path) -> None:
    w = MirrorWriter(str(tmp_path))
    for n, ts in enumerate(("9999-99-99T00:00:00Z", "../../../../tmp/x", "", "2026-02-30T00:00:00Z"), 1):
        line = json.dumps({"ts": ts, "skill": "evil", "session_id": f"e{n}", "step": 1, "phase": "start",
                           "payload": {}}).encode()
        res = w.apply([Incoming(line, f"e{n}:1", "h")])
        assert (res.ok, res.rejected, res.written) == ([True], 1, 0), ts
    w.close()
    assert list(tmp_path.iterdir()) == []
