"""Large payloads spill to blobs (after redaction); artifacts are copied; limits hold."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import Daemon, assert_gap_free, read_trace
from traced import RequestError


def test_five_megabyte_output_is_spilled_redacted_and_read_back_whole(daemon: Daemon) -> None:
    secret = "ghp_" + "Z9y8X7w6" * 5
    big = ("line of tool output\n" * 260_000) + f"token={secret}\n"
    assert len(big) > 5_000_000
    with daemon.client() as c, c.session(skill="spill") as s:
        step = s.tool_result("Bash", ok=True, output=big)
        s.tool_result("Bash", ok=True, output=big)  # the same text again: one blob
        s.note("small stays inline")
    sdir = Path(s.dir)
    records = read_trace(sdir / "trace.jsonl")
    assert_gap_free(records)
    ref = records[step - 1]["payload"]["output"]
    assert set(ref) == {"$blob", "size"} and ref["$blob"].startswith("sha256:")
    blob = sdir / "blobs" / ref["$blob"][7:]
    data = blob.read_bytes()
    assert hashlib.sha256(data).hexdigest() == ref["$blob"][7:] and len(data) == ref["size"]
    assert secret.encode() not in data and b"<redacted:" in data, "redacted before it was spilled"
    assert data.startswith(b"line of tool output\n") and data.count(b"\n") == 260_001
    assert len(list((sdir / "blobs").iterdir())) == 1, "blobs dedupe by hash"
    assert max(len(line) for line in (sdir / "trace.jsonl").read_bytes().splitlines()) < 1000
    assert oct(blob.stat().st_mode & 0o777) == "0o600"
    shown = daemon.cli("show", s.id, "--full", "--json", "--root", str(daemon.root), check=True).stdout
    full = [json.loads(x) for x in shown.splitlines()]
    assert full[step - 1]["payload"]["output"] == data.decode()


def test_attach_copies_the_file(daemon: Daemon, short_tmp: Path) -> None:
    report = short_tmp / "report.md"
    report.write_text("# findings\n")
    with daemon.client() as c, c.session(skill="artifacts", target=str(short_tmp)) as s:
        step = s.artifact(str(report), kind="report", copy=True)
    rec = read_trace(Path(s.dir) / "trace.jsonl")[step - 1]["payload"]
    assert rec["path"] == str(report) and rec["kind"] == "report" and rec["size_bytes"] == 11
    assert rec["sha256"] == hashlib.sha256(b"# findings\n").hexdigest()
    assert (Path(s.dir) / rec["stored"]).read_text() == "# findings\n"
    assert "attach" not in rec
    # from a shell too
    sid = json.loads(daemon.cli("start", "--skill", "artifacts", "--target", str(short_tmp), check=True).stdout)
    out = daemon.cli("event", sid["session_id"], "--phase", "artifact", "--attach", str(report), check=True)
    assert out.stdout.strip() == "2"


def test_attach_refuses_symlinks_devices_and_oversize(daemon_factory: object, short_tmp: Path) -> None:
    d: Daemon = daemon_factory(env={"TRACED_ARTIFACT_MAX_BYTES": "100"})  # type: ignore[operator]
    real = short_tmp / "real.txt"
    real.write_text("x")
    link = short_tmp / "link.txt"
    link.symlink_to(real)
    big = short_tmp / "big.bin"
    big.write_bytes(b"0" * 101)
    outside = Path("/etc/hostname")
    with d.client() as c:
        opened = c.open("refuse", target=str(short_tmp))
        s = c.attach(opened.session_id)
        cases = {str(link): "symlink", "/dev/zero": "outside", str(big): "cap", str(short_tmp): "regular"}
        if outside.exists() and not str(outside).startswith(os.path.expanduser("~")):
            cases[str(outside)] = "outside"
        for path, why in cases.items():
            with pytest.raises(RequestError) as e:
                s.artifact(path, copy=True)
            assert e.value.code == "forbidden" and why in e.value.message, (path, e.value.message)
        assert s.note("the session goes on") == 2
    assert not (Path(opened.dir) / "artifacts").exists() or not any(
        p.name[0] != "." for p in (Path(opened.dir) / "artifacts").iterdir())


def test_too_large_event_fails_locally_and_is_not_resent(daemon_factory: object) -> None:
    d: Daemon = daemon_factory("--max-frame", "20000")  # type: ignore[operator]
    with d.client() as c:
        opened = c.open("big")
        with pytest.raises(RequestError) as e:
            c.emit(opened.session_id, "note", {"message": "x" * 30000})
        assert e.value.code == "too_large"
        assert c._conv.unacked == {}
        d.stop()
        d.start()  # a reconnect must not replay the refused event
        assert c.emit(opened.session_id, "note", {"message": "fine"}) == 2
        c.end(opened.session_id)
    assert [r["phase"] for r in read_trace(Path(opened.dir) / "trace.jsonl")] == ["start", "note", "end"]


def test_transcript_path_and_labels_merge_on_resume(daemon: Daemon) -> None:
    with daemon.client() as c:
        first = c.open("claude-code", session_id="3f1c2a9e-1b2c-4d5e-8f90-aabbccddeeff", owner_pid=-1)
        again = c.open("claude-code", session_id=first.session_id,
                       meta={"transcript_path": "/home/u/.claude/projects/p/x.jsonl"})
        assert again.resumed and again.dir == first.dir
        meta = c.end(first.session_id)
    assert meta["transcript_path"] == "/home/u/.claude/projects/p/x.jsonl"
    assert json.loads((Path(first.dir) / "meta.json").read_text())["transcript_path"].endswith("x.jsonl")
