"""Readers never fall over on what other writers leave: each kind counted where broken, kept where readable."""

from __future__ import annotations

import json
from pathlib import Path

from traced.cli.main import main
from traced.read.sessions import SessionRef, load_info, load_session, scan

DAY = "2026-11-20"


def _session(root: Path, sid: str, lines: list[bytes], meta: bytes | None = None) -> SessionRef:
    sdir = root / DAY / "odd" / sid
    sdir.mkdir(parents=True)
    (sdir / "trace.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    if meta is not None:
        (sdir / "meta.json").write_bytes(meta)
    return SessionRef(root, DAY, "odd", sid)


def _line(step: int, phase: str, payload: dict[str, object], ts: str = "2026-11-20T10:00:00Z") -> bytes:
    return json.dumps({"ts": ts, "skill": "odd", "session_id": "s", "step": step, "phase": phase,
                       "payload": payload}).encode()


def test_a_line_nested_1000_deep_is_counted_not_fatal(tmp_path: Path, capsys: object) -> None:
    deep = b'{"ts":"2026-11-20T10:00:01Z","phase":"note","payload":' + b'{"a":' * 1000 + b"1" + b"}" * 1001
    deep_meta = b'{"session_id":"deep","skill":"odd","v":' + b"[" * 1000 + b"]" * 1000 + b"}"
    ref = _session(tmp_path, "deep", [_line(1, "start", {}), deep, _line(3, "end", {"outcome": "success"})],
                   meta=deep_meta)
    session = load_session(ref)
    assert [e.phase for e in session.entries] == ["start", "end"]
    assert session.stats.malformed == 1
    info = load_info(ref)
    assert info is not None and info.malformed_lines == 1 and info.outcome == "success"
    for argv in (["ls"], ["usage", "--since", "2026-11-19..2026-11-21"], ["show", "deep"], ["replay", "deep"],
                 ["tail"]):
        assert main([*argv, "--root", str(tmp_path)]) == 0, argv


def test_an_invalid_utf8_byte_keeps_the_record_with_fffd(tmp_path: Path) -> None:
    bad = _line(2, "tool_result", {"tool": "Bash", "ok": False, "error": "caf@"}).replace(b"caf@", b"caf\xe9")
    ref = _session(tmp_path, "utf8", [_line(1, "start", {}), bad])
    session = load_session(ref)
    assert [e.phase for e in session.entries] == ["start", "tool_result"]
    assert session.entries[1].payload["error"] == "caf\ufffd"
    assert session.stats.malformed == 0 and session.info.errors == 1


def test_a_bom_before_the_first_line_keeps_the_start(tmp_path: Path) -> None:
    ref = _session(tmp_path, "bom", [b"\xef\xbb\xbf" + _line(1, "start", {"input": {"pr": 42}}),
                                      _line(2, "end", {"outcome": "success"}, ts="2026-11-20T10:00:05Z")])
    info = load_info(ref)
    assert info is not None
    assert (info.started_at, info.ended_at, info.duration, info.input_summary) == (
        "2026-11-20T10:00:00Z", "2026-11-20T10:00:05Z", 5.0, '{"pr":42}')


def test_scan_over_a_root_with_every_kind_at_once(tmp_path: Path) -> None:
    _session(tmp_path, "a", [b"\xef\xbb\xbf" + _line(1, "start", {})])
    _session(tmp_path, "b", [_line(1, "start", {}), b"{" * 2000 + b"}" * 2000])
    _session(tmp_path, "c", [_line(1, "start", {})], meta=b"\xff\xfe not json")
    infos = scan([tmp_path])
    assert sorted(i.ref.session_id for i in infos) == ["a", "b", "c"]
    assert {i.ref.session_id: i.malformed_lines for i in infos} == {"a": 0, "b": 1, "c": 0}


def test_a_date_directory_that_is_no_date_is_listed_not_fatal(tmp_path: Path) -> None:
    """A crafted or corrupt ``9999-99-99`` directory (issue #17's adversary, through the mirror)."""
    import json as _json

    sdir = tmp_path / "9999-99-99" / "evil" / "e3b"
    sdir.mkdir(parents=True)
    (sdir / "trace.jsonl").write_text(_json.dumps({"skill": "evil", "session_id": "e3b", "step": 1,
                                                   "phase": "start", "payload": {}}) + "\n")
    from traced.cli.main import main

    assert main(["ls", "--json", "--root", str(tmp_path)]) == 0
