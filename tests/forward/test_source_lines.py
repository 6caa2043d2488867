"""What the forwarders read from trace files other writers made (issue #15): a line they cannot
parse is skipped and counted once, never retried forever; a BOM or an invalid UTF-8 byte keeps
the record, forwarded as valid UTF-8 (U+FFFD), as the readers keep it."""

from __future__ import annotations

from pathlib import Path

import msgspec

from traced.forward.source import read_after


def test_odd_lines_are_kept_or_skipped_once(tmp_path: Path) -> None:
    sdir = tmp_path / "2026-11-21" / "s" / "sid"
    sdir.mkdir(parents=True)
    lines = [
        b'\xef\xbb\xbf{"ts":"2026-11-21T10:00:00Z","session_id":"sid","step":1,"phase":"start","payload":{}}',
        b'{"ts":"2026-11-21T10:00:01Z","session_id":"sid","step":2,"phase":"tool_result",'
        b'"payload":{"tool":"Read","ok":false,"error":"caf\xe9"}}',
        b'{"step":3,"phase":"note","payload":' + b"[" * 1000 + b"]" * 1000 + b"}",
        b"not json at all",
        b'{"ts":"2026-11-21T10:00:03Z","session_id":"sid","step":4,"phase":"end","payload":{"outcome":"success"}}',
    ]
    (sdir / "trace.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    res = read_after(str(sdir), 0, 0, 100, 1 << 20)
    assert [(line.step, line.phase) for line in res.lines] == [(1, "start"), (2, "tool_result"), (4, "end")]
    assert res.malformed == 2 and res.eof and res.offset == (sdir / "trace.jsonl").stat().st_size
    assert msgspec.json.decode(res.lines[0].raw)["phase"] == "start"  # the BOM is not forwarded
    assert msgspec.json.decode(res.lines[1].raw)["payload"]["error"] == "caf\ufffd"
    again = read_after(str(sdir), res.offset, res.last_step, 100, 1 << 20)
    assert (again.lines, again.malformed, again.offset) == ([], 0, res.offset)  # not retried
