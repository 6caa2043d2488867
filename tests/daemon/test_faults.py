"""Every promise under faults (issue #14): full disks, crashes mid-close, two daemons, clock jumps,
idle connections, hostile trees, labels that carry secrets. Each test asserts the bytes on disk."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced import RequestError
from traced.daemon import wal

ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="needs root (a tmpfs mount)")
FAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)


@pytest.fixture
def tiny_fs(short_tmp: Path) -> Any:
    """A 2 MiB tmpfs: a real full disk (ENOSPC)."""
    if os.getuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = short_tmp / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# ---------------------------------------------------------------- 1, 2. a full disk


@contextmanager
def _log_on_a_tmpfs(d: Daemon) -> Iterator[Path]:
    """Start ``d`` with its write-ahead log on its own 1 MiB tmpfs (yielded); kill it and unmount after."""
    wal_dir = d.state / "traced" / "wal"
    wal_dir.mkdir(parents=True, mode=0o700)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(wal_dir)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        d.start()
        yield wal_dir
    finally:
        if d.alive():
            d.stop(signal.SIGKILL)
        subprocess.run(["umount", "-l", str(wal_dir)], check=False)


def _fill(blocker: Path) -> Path:
    """Fill the file system of ``blocker`` to the last byte with it (ENOSPC from then on)."""
    fd = os.open(blocker, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return blocker

@ROOT_ONLY
def test_full_disk_never_leaves_a_fragment_and_writes_resume(daemon_factory: Any, tiny_fs: Path) -> None:
    d: Daemon = daemon_factory("--root", str(tiny_fs / "root"))
    acked: list[int] = []
    failed = 0
    with d.client() as c:
        s = c.session("full", owner_pid=-1)
        filler = "z" * 20_000  # under the spill threshold: the lines themselves fill the disk
        for i in range(400):
            try:
                step = s.note(f"{i} {filler}")
                assert step is not None
                acked.append(step)
            except RequestError as e:
                assert e.code == "io_error"
                failed += 1
                if failed >= 3:
                    break
        assert failed >= 3, "the disk never filled"
        trace = Path(s.dir) / "trace.jsonl"
        data = trace.read_bytes()
        assert data.endswith(b"\n"), "no fragment in front of later lines, even with no room left"
        records = read_trace(trace)
        assert_gap_free(records)
        assert [r["step"] for r in records[1:]] == acked
        # room comes back: the next events land right after the last acknowledged one
        subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_fs)], check=True)
        assert s.note("after the disk had room again") == acked[-1] + 1
        s.end()
    records = read_trace(trace)
    assert_gap_free(records)
    assert records[-2]["payload"] == {"message": "after the disk had room again"}
    assert records[-1]["phase"] == "end"


@ROOT_ONLY
def test_a_full_disk_under_the_log_falls_back_to_syncing_each_trace(daemon_factory: Any, short_tmp: Path) -> None:
    """The write-ahead log is on its own full disk (ENOSPC) while the traces have room: durable acks
    still come, each trace fdatasynced on its own; the log takes no new segment per round meanwhile;
    once it has room, rounds log again; a kill -9 loses nothing acked either way."""
    d: Daemon = daemon_factory("--fsync", "always", start=False)
    with _log_on_a_tmpfs(d) as wal_dir:
        blocker = _fill(wal_dir / "fill")
        with d.client() as c:
            s = c.session("logfull", owner_pid=-1)
            before = c.status()
            steps = [s.note(f"while full {i}") for i in range(20)]
            assert steps == list(range(2, 22))
            during = c.status()
            assert during["wal_syncs"] == before["wal_syncs"]
            assert during["fsyncs"] - before["fsyncs"] >= 20, "each ack was covered by the trace's own fdatasync"
            assert sorted(p.name for p in wal_dir.iterdir() if p.name != "fill") in ([], [f"{1:016d}.log"]), \
                "no new segment per failed round"
            assert [e["event"] for e in d.logs() if e.get("event", "").startswith("wal_")] == ["wal_write_failed"]
            blocker.unlink()
            wait_for(lambda: (s.note("room again"), c.status()["wal_syncs"] > during["wal_syncs"])[1],
                     what="rounds logging again once the log has room")
            last = s.note("last")
            for seg in wal_dir.iterdir():
                assert wal.read_frames(seg.read_bytes())[1] == 0, "no partial frame left in a segment"
        assert [e["event"] for e in d.logs() if e.get("event", "").startswith("wal_")] == \
            ["wal_write_failed", "wal_writable_again"]
        d.kill9()
        d.start()
        records = read_trace(Path(s.dir) / "trace.jsonl")
        assert_gap_free(records)
        assert records[-1]["step"] == last and records[-1]["payload"] == {"message": "last"}


@ROOT_ONLY
def test_a_session_id_used_again_while_the_log_is_full_is_opened_after_a_checkpoint(daemon_factory: Any,
                                                                                    short_tmp: Path) -> None:
    """The reset frame cannot be written (the log's disk is full): the open waits for a checkpoint, which
    makes the earlier trace's logged lines needless (synced, their segment deleted), instead of failing;
    after a kill -9 the new trace holds only its own lines."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"}, start=False)
    sid, ts = "full-reuse-1", 1764547200.75
    with _log_on_a_tmpfs(d) as wal_dir:
        with d.client() as c:
            first = c.open("fullreuse", session_id=sid, owner_pid=-1, ts=ts)
            for i in range(2):
                c.emit(sid, "note", {"message": f"old-{i}"})
                c.sync(fsync=True)  # the first: the trace's own fdatasync; then logged
            # fill the segment's last page to within a few bytes, so that no reset frame fits in it
            seg = wal_dir / f"{1:016d}.log"
            size = seg.stat().st_size
            for _ in range(10):
                if 0 < -size % 4096 < 32:
                    break
                before = size
                c.emit(sid, "note", {"message": "pad", "pad": "p" * 64})
                c.sync(fsync=True)
                size = seg.stat().st_size
                overhead = size - before - 64  # one frame, less its pad
                want = -size % 4096 - 16 - overhead
                c.emit(sid, "note", {"message": "pad", "pad": "p" * (want if want > 0 else want + 4096)})
                c.sync(fsync=True)
                size = seg.stat().st_size
            assert 0 < -size % 4096 < 32, size
            c.end(sid, "success")
            shutil.rmtree(first.dir)
            _fill(wal_dir / "fill")
            again = c.open("fullreuse", session_id=sid, owner_pid=-1, ts=ts)
            assert (again.dir, again.step) == (first.dir, 1)
            c.emit(sid, "note", {"message": "new-0"})
            c.sync(fsync=True)
            assert (c.status()["wal_checkpoints"], c.status()["wal_resets"]) == (1, 0)
        assert [e["why"] for e in d.logs() if e.get("event") == "open_deferred"] == ["the log is full"]
        d.kill9()
        d.start()
        records = read_trace(Path(first.dir) / "trace.jsonl")
        assert_gap_free(records)
        assert [r["payload"].get("message") for r in records] == [None, "new-0"]


@ROOT_ONLY
def test_open_on_a_full_disk_is_refused_and_leaves_no_session(daemon_factory: Any, tiny_fs: Path) -> None:
    d: Daemon = daemon_factory("--root", str(tiny_fs / "root"))
    (tiny_fs / "root").mkdir(exist_ok=True)
    blocker = _fill(tiny_fs / "fill")
    with d.client() as c, pytest.raises(RequestError) as e:
        c.open("nospace", owner_pid=-1)
    assert e.value.code == "io_error"
    assert list((tiny_fs / "root").rglob("trace.jsonl")) == []
    blocker.unlink()
    with d.client() as c:
        s = c.session("nospace", owner_pid=-1)
        assert s.note("now it fits") == 2
        s.end()
    assert [r["phase"] for r in read_trace(Path(s.dir) / "trace.jsonl")] == ["start", "note", "end"]


# ---------------------------------------------------------------- 3. kill -9 between end and the marker's removal

def test_a_session_whose_trace_ends_is_never_ended_twice(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session("crashy", owner_pid=-1)
        s.note("work")
    marker = daemon.state / "traced" / "open" / f"{s.session_id}.json"
    saved = marker.read_text()
    meta_at_open = (Path(s.dir) / "meta.json").read_text()
    with daemon.client() as c:
        c.end(s.session_id, "success", "done")
    # the daemon died after the end record, before meta.json and the marker were settled
    daemon.kill9()
    marker.write_text(saved)
    (Path(s.dir) / "meta.json").write_text(meta_at_open)
    daemon.start()
    wait_for(lambda: not marker.exists(), what="the marker is settled")
    with daemon.client() as c:  # the client resends its close after the restart
        meta = c.end(s.session_id, "success", "done")
    records = read_trace(Path(s.dir) / "trace.jsonl")
    assert [r["phase"] for r in records] == ["start", "note", "end"]
    disk = json.loads((Path(s.dir) / "meta.json").read_text())
    for m in (meta, disk):
        assert (m["outcome"], m["summary"], m["ended_at"], m["steps"]) == ("success", "done", records[-1]["ts"], 3)
        assert m["phases"] == {"start": 1, "note": 1, "end": 1}


# ---------------------------------------------------------------- 4. two daemons, one state directory

def test_a_second_daemon_on_the_same_state_dir_refuses(daemon: Daemon) -> None:
    other = dict(daemon.env, TRACED_SOCKET=str(daemon.base / "run2" / "traced.sock"))
    res = subprocess.run([sys.executable, "-m", "traced", "serve", "--log-format", "json"], env=other,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert daemon.proc is not None
    assert f"another daemon (pid {daemon.proc.pid}) holds the state directory" in res.stderr


# ---------------------------------------------------------------- 6. clock jumps

@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime (Debian: apt-get install libfaketime)")
def test_clock_jumps_neither_finalize_early_nor_run_time_backwards(daemon_factory: Any, short_tmp: Path) -> None:
    clock = short_tmp / "faketime"
    clock.write_text("+0s\n")
    d: Daemon = daemon_factory(
        "--idle-timeout", "3600", start=False,
        env={"LD_PRELOAD": str(FAKETIME), "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
             "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    d.start()
    # another writer's session, idle a moment ago
    other = d.root / time.strftime("%Y-%m-%d", time.gmtime()) / "devboy-skill" / "01JDOTHERWRITER00000000000"
    other.mkdir(parents=True)
    (other / "trace.jsonl").write_text(json.dumps({"ts": "2026-01-01T00:00:00Z", "skill": "devboy-skill",
                                                   "session_id": other.name, "phase": "start", "payload": {}}) + "\n")
    with d.client() as c:
        wait_for(lambda: c.status().get("foreign_sessions") == 1, what="the other writer's session is seen")
        s = c.session("clock", owner_pid=-1)
        s.note("before the jump")
        clock.write_text("+2d\n")  # the wall clock leaps two days ahead
        sweeps = c.status()["idle_sweeps"]
        wait_for(lambda: c.status()["idle_sweeps"] >= sweeps + 3, what="three idle sweeps")
        assert c.status()["foreign_sessions"] == 1, "not finalized: it was not idle for an hour of real time"
        clock.write_text("-1d\n")  # and back, behind where the session started
        s.note("after the jump back")
        s.end()
    records = read_trace(Path(s.dir) / "trace.jsonl")
    stamps = [r["ts"] for r in records]
    assert stamps == sorted(stamps), "timestamps never run backwards within a session"
    meta = json.loads((Path(s.dir) / "meta.json").read_text())
    assert meta["ended_at"] >= meta["started_at"] and meta["ended_at"] == records[-1]["ts"]
    assert not (other / "meta.json").exists()


# ---------------------------------------------------------------- 7. idle connections

def test_idle_connections_make_room_for_newcomers(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    (d.base / "config").mkdir(parents=True, exist_ok=True)
    (d.base / "config" / "traced").mkdir(exist_ok=True)
    (d.base / "config" / "traced" / "config.toml").write_text("max_connections = 4\n")
    d.start()
    idle = []
    for _ in range(4):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(d.socket))
        idle.append(sock)
    # the daemon is full of silent connections: once they have been silent a moment, one makes room
    status = wait_for(lambda: _try_status(d), timeout=30, what="a newcomer is served")
    assert status["connections_reaped"] == 1
    # the one reaped was closed before the newcomer was admitted: its end is already readable
    assert sum(1 for sock in idle if _closed(sock)) == 1
    for sock in idle:
        sock.close()


def _try_status(d: Daemon) -> dict[str, Any] | None:
    try:
        with d.client() as c:
            return c.status()  # type: ignore[no-any-return]
    except RequestError as e:
        assert e.code == "overloaded"
        return None


def _closed(sock: socket.socket) -> bool:
    """Whether the daemon has closed ``sock`` (its end readable now: EOF or a reset; no waiting)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_silent_connections_are_closed_after_the_idle_timeout(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    (d.base / "config" / "traced").mkdir(parents=True, exist_ok=True)
    (d.base / "config" / "traced" / "config.toml").write_text("connection_idle_timeout = 0.5\n")
    d.start()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(d.socket))
    sock.settimeout(30)
    assert sock.recv(1) == b"", "the daemon closed the silent connection"
    sock.close()
    with d.client() as c:  # and a client whose connection was reaped between two events reconnects
        s = c.session("patient", owner_pid=-1)
        before = c.reconnects
        wait_for(lambda: _reaped_since(d, 2), timeout=30, what="the client's connection to be reaped")
        assert s.note("after a pause") == 2
        assert c.reconnects == before + 1
        s.end()


def _reaped_since(d: Daemon, n: int) -> bool:
    return sum(1 for e in d.logs() if e.get("event") == "connection_reaped") >= n


# ---------------------------------------------------------------- 8. symlinks planted in a session dir

@pytest.mark.parametrize("which", ["blobs", "artifacts"])
def test_symlinked_blobs_or_artifacts_are_never_followed(daemon: Daemon, short_tmp: Path, which: str) -> None:
    outside = short_tmp / "outside"
    outside.mkdir()
    with daemon.client() as c:
        s = c.session("planted", owner_pid=-1)
        src = daemon.root / "report.txt"  # below the session's root: an artifact it may attach
        src.write_text("the artifact")
        os.symlink(outside, Path(s.dir) / which)
        with pytest.raises(RequestError) as e:
            if which == "blobs":
                s.note("x" * 100_000)  # over the spill threshold: it would go to blobs/
            else:
                s.artifact(str(src), copy=True)
        assert e.value.code == "io_error"
        assert s.note("still fine") == 2
        s.end()
    assert list(outside.iterdir()) == [], "nothing was written outside the session dir"


# ---------------------------------------------------------------- 9. labels and transcript paths carry secrets

def test_labels_summaries_and_transcript_paths_are_redacted(daemon: Daemon) -> None:
    stripe = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    gh = "ghp_" + "a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8"
    with daemon.client() as c:
        s = c.session("labels", owner_pid=-1, input={"note": f"deploy with {gh}"},
                      meta={"deploy_key": stripe, "transcript_path": f"/tmp/{gh}/t.jsonl", "team": "web"})
        s.end("failure", summary=f"token {gh} was revoked")
    text = (Path(s.dir) / "meta.json").read_text() + (Path(s.dir) / "trace.jsonl").read_text()
    assert stripe not in text and gh not in text
    meta = json.loads((Path(s.dir) / "meta.json").read_text())
    assert meta["labels"]["deploy_key"] == "<redacted:secret-key>"
    assert meta["labels"]["team"] == "web"
    assert meta["transcript_path"] == "/tmp/<redacted:github-token>/t.jsonl"
    assert meta["summary"] == "token <redacted:github-token> was revoked"
    logs = daemon.log.read_text()  # the daemon's logs carry ids and counts, never values
    assert stripe not in logs and gh not in logs
