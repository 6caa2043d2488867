"""Durable acks: one daemon-wide sync round covers every session its waiters touched."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import Daemon, assert_gap_free, await_for, read_trace, wait_for
from traced.daemon import targets, wal
from traced.daemon.config import Config
from traced.daemon.groupcommit import LOG_TRACE_MAX
from traced.daemon.journal import trace_ident
from traced.daemon.registry import ENDED_MEMORY, Deferred, Live, Registry
from traced.daemon.session import Pending
from traced.errors import RequestError
from traced.format import spool
from traced.read.sessions import reading_roots
from traced.wire import protocol

TS = 1_700_000_000.0


@pytest.fixture
def registry(private_env: Path) -> Iterator[Registry]:
    """Under ``batch`` with no log: every round fdatasyncs each trace it covers (``wal = false``)."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="batch", wal=False))
    try:
        yield reg
    finally:
        reg.shutdown()


def _open(reg: Registry, k: int) -> Live:
    live, _resumed, _fallback = reg.open(skill="gc", session_id=f"01JDSESSION{k:015d}", cwd="/w",
                                         peer_uid=os.getuid(), ts=TS)
    return live


@pytest.mark.anyio
async def test_waiters_on_different_sessions_share_one_sync_round(registry: Registry) -> None:
    heard: list[tuple[str, list[int | None]]] = []
    registry.on_durable.append(lambda live, recs: heard.append((live.state.session_id, [r.step for r in recs])))
    lives = [_open(registry, k) for k in range(8)]
    await registry.durable(lives)  # the start records
    assert (registry.commit.rounds, registry.fsyncs) == (1, 8), "one round, one fdatasync per trace"
    heard.clear()
    for live in lives:
        registry.append(live, [Pending("note", {"message": "x"}, TS)])
    assert heard == [] and all(live.journal.dirty for live in lives)
    async with anyio.create_task_group() as tg:  # 8 connections, each waiting for its own session
        for live in lives:
            tg.start_soon(registry.durable, [live])
    # the 8 requests of one turn of the loop share one round
    assert (registry.commit.rounds, registry.fsyncs) == (2, 16)
    assert not any(live.journal.dirty for live in lives)
    assert sorted(heard) == sorted((live.state.session_id, [2]) for live in lives)
    await registry.durable(lives)  # nothing new: no round at all
    assert (registry.commit.rounds, registry.fsyncs) == (2, 16)


@pytest.mark.anyio
async def test_a_request_while_a_round_is_in_flight_joins_the_next_one(registry: Registry) -> None:
    lives = [_open(registry, k) for k in range(4)]
    await registry.durable(lives)
    assert (registry.commit.rounds, registry.fsyncs) == (1, 4)
    answers: list[tuple[str, OSError | None]] = []
    registry.append(lives[0], [Pending("note", {"message": "a"}, TS)])
    assert not registry.when_durable([lives[0]], lambda e: answers.append(("first", e)))
    for _ in range(2):  # the round starts two turns of the loop later (``GroupCommit._schedule``)...
        await anyio.lowlevel.checkpoint()
    assert registry.commit._inflight is not None and answers == [], "...and its sync runs on a thread"
    for live in lives:  # written after that round took its snapshot
        registry.append(live, [Pending("note", {"message": "b"}, TS)])
    assert not registry.when_durable(lives, lambda e: answers.append(("rest", e)))
    assert registry.when_durable([], lambda e: answers.append(("none", e))), "nothing to sync: answered at once"
    await await_for(lambda: len(answers) == 2, what="both answers")
    # the first round covered lives[0]'s first note; the next one every trace's second
    assert answers == [("first", None), ("rest", None)]
    assert (registry.commit.rounds, registry.fsyncs) == (3, 4 + 1 + 4)
    assert not any(live.journal.dirty for live in lives)


@pytest.mark.anyio
async def test_a_wait_on_a_trace_let_go_before_its_round_fails_and_an_earlier_synced_one_does_not(
        private_env: Path) -> None:
    """Lines written into a trace deleted under its session (through the open fd), then the session let
    go by an open of the same id before the round starts: they are in no file, so their waiters get
    FileNotFoundError (the client resends into the new trace), never an ack. A request with nothing
    unsynced is answered at once."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="always"))
    try:
        live = _open(reg, 1)
        await reg.durable([live])
        shutil.rmtree(live.state.dir)
        steps, error = reg.append(live, [Pending("note", {"message": "into the deleted file"}, TS)])
        assert (steps, error) == ([2], None), "the fd still writes the unlinked file"
        answers: list[OSError | None] = []
        assert not reg.when_durable([live], answers.append)
        again = _open(reg, 1)  # the same id, in the same turn: the old session is let go
        assert again is not live and live.journal.retired
        await await_for(lambda: answers != [], what="the waiter's answer")
        assert [type(a) for a in answers] == [FileNotFoundError]
        assert [r["step"] for r in read_trace(Path(again.state.dir) / "trace.jsonl")] == [1]
        assert reg.fsyncs == 1, "a trace let go is not counted as made durable"
        await reg.durable([again])
        assert reg.fsyncs == 2
    finally:
        reg.shutdown()


@pytest.mark.parametrize("how", ["replaced by a copy", "dir deleted"])
def test_a_session_loaded_again_never_writes_through_an_fd_left_by_the_one_before(
        private_env: Path, how: str) -> None:
    """An ended session kept for late records leaves its trace's fd in the cache after a late record.
    When its trace is then replaced (a restore: cp + rename) or its dir deleted, the next open of the
    id writes through a new fd to the file at the path: the old fd is closed, never inherited (it
    still points at the old inode, and lines written there are in no file)."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="batch"))
    try:
        old = _open(reg, 1)
        sid, trace = old.state.session_id, Path(old.journal.path)
        reg.close(sid, "success")
        assert reg.append(reg.late(sid), [Pending("note", {"message": "late"}, TS, late=True)]) == ([3], None)
        if how == "dir deleted":
            shutil.rmtree(trace.parent)
        else:
            shutil.copyfile(trace, trace.with_name("copy"))
            os.rename(trace.with_name("copy"), trace)
        again = _open(reg, 1)
        assert again is not old and again.journal.retired is False
        reg.append(again, [Pending("note", {"message": "after"}, TS)])
        records = read_trace(trace)
        if how == "dir deleted":  # a new trace; the session kept for late records is let go
            assert ([r["step"] for r in records], old.journal.retired) == ([1, 2], True)
        else:  # the copy, resumed
            assert [(r["step"], r["phase"]) for r in records] == [
                (1, "start"), (2, "end"), (3, "note"), (4, "start"), (5, "note")]
        assert records[-1]["payload"] == {"message": "after"}
    finally:
        reg.shutdown()


@pytest.mark.anyio
async def test_the_batch_tick_syncs_late_records_of_an_ended_session_it_no_longer_keeps(private_env: Path) -> None:
    """A late record into an ended session, then ``ENDED_MEMORY`` more sessions end: the first is no
    longer kept for late records, and the next tick still fdatasyncs its trace (then lets it go)."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="batch", wal=False))
    try:
        first = _open(reg, 0)
        await reg.durable([first])
        sid = first.state.session_id
        reg.close(sid, "success")
        await reg.sync_dirty()
        reg.append(reg.late(sid), [Pending("note", {"message": "late"}, TS, late=True)])
        for k in range(1, ENDED_MEMORY + 1):
            reg.close(_open(reg, k).state.session_id, "success")
        assert sid not in reg.ended and reg.evicted == [first] and first.journal.dirty
        await reg.sync_dirty()
        assert (first.journal.dirty, reg.evicted) == (False, [])
    finally:
        reg.shutdown()


def test_a_connection_that_wrote_a_let_go_trace_hears_it_once_then_syncs(daemon_factory: Any) -> None:
    """A late record into an ended session, its dir deleted, its id opened again by another connection:
    the writer's ``sync {fsync}`` answers ``io_error`` once (that line is in no file), then ``synced``,
    also for a session it writes after; the other session's lines are on disk."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    sid = "01JDWEDGE00000000000000001"
    with d.client() as a, d.client() as b:
        first = a.open("wedge", session_id=sid, owner_pid=-1)
        a.end(sid, "success")
        a.emit(sid, "note", {"message": "late"}, late=True)
        shutil.rmtree(first.dir)
        b.open("wedge", session_id=sid, owner_pid=-1)
        with pytest.raises(RequestError, match=r"^io_error: fsync failed: the trace was deleted or replaced$"):
            a.sync(fsync=True)
        a.sync(fsync=True)
        healthy = a.open("healthy", owner_pid=-1)
        a.emit(healthy.session_id, "note", {"message": "kept"})
        a.sync(fsync=True)
        a.sync(fsync=True)
    assert _notes(healthy.dir) == ["kept"]
    assert [e for e in d.logs() if e.get("level") in ("error", "critical") and e.get("event") != "write_failed"] == []


def test_a_spool_segment_into_a_deleted_trace_is_kept_and_the_daemon_goes_on(daemon_factory: Any) -> None:
    """The spool replays into a session whose trace was deleted under it: the records cannot be made
    durable, so the segment stays (``spool_segment_not_durable``) and the daemon keeps serving; the next
    pass finds the session let go (``unknown_session``: refused, logged) and removes it."""
    d: Daemon = daemon_factory()
    sid, client_id = "01JDSPOOLGONE0000000000000", "01JDSPOOLCLIENT00000000000"
    with d.client() as c:
        first = c.open("sg", session_id=sid, owner_pid=-1)
        c.emit(sid, "note", {"message": "x"})
        shutil.rmtree(first.dir)
        buf = bytearray()
        protocol.encode(protocol.Hello(client="test", client_id=client_id, pid=os.getpid()), buf)
        for k in range(3):
            protocol.encode(protocol.Emit(id=k + 1, session_id=sid, phase="note", payload={"message": f"sp{k}"},
                                          seq=k + 1), buf)
        sp = d.state / "traced" / "spool"
        seg = spool.write_segment(sp, client_id, 1, bytes(buf))
        wait_for(lambda: any(e.get("event") == "spool_segment_not_durable" for e in d.logs()),
                 what="the ingest to find the trace gone")
        assert seg.exists() and c.status()["spool_ingested_segments"] == 0
        other, healthy = "01JDSPOOLCLIENT00000000001", "01JDSPOOLHEALTHY0000000000"
        buf = bytearray()
        protocol.encode(protocol.Hello(client="test", client_id=other, pid=os.getpid()), buf)
        protocol.encode(protocol.Open(id=1, skill="sg", session_id=healthy, owner_pid=-1), buf)
        protocol.encode(protocol.Emit(id=2, session_id=healthy, phase="note", payload={"message": "h"}), buf)
        seg2 = spool.write_segment(sp, other, 1, bytes(buf))  # a new segment: the next pass
        wait_for(lambda: not seg.exists() and not seg2.exists(), what="the next pass to take both segments")
        assert c.status()["spool_ingested_segments"] == 2
    refused = [e for e in d.logs() if e.get("event") == "spool_event_refused"]
    assert [e["code"] for e in refused] == ["unknown_session"] * 3
    assert not Path(first.dir).exists()
    (hdir,) = d.root.glob(f"*/sg/{healthy}")
    assert _notes(str(hdir)) == ["h"]


@pytest.mark.anyio
async def test_after_close_no_round_runs_and_every_waiter_is_answered(private_env: Path) -> None:
    """What asks for durability once the daemon stopped its group commit (a request scheduled before,
    one made after) gets ESHUTDOWN: no round writes the log again, none waits forever."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="always"))
    lives = [_open(reg, k) for k in range(2)]
    await reg.durable(lives)
    reg.append(lives[0], [Pending("note", {"message": "late"}, TS)])
    answers: list[OSError | None] = []
    assert not reg.when_durable([lives[0]], answers.append)  # its round is not started yet...
    reg.shutdown()  # ...when the daemon stops
    reg.append(lives[1], [Pending("note", {"message": "later"}, TS)])
    with anyio.fail_after(10), pytest.raises(OSError) as e:
        await reg.durable([lives[1]])
    assert e.value.errno == errno.ESHUTDOWN
    assert [a.errno if a else None for a in answers] == [errno.ESHUTDOWN]
    assert (reg.commit.rounds, sorted(reg.commit_log_dir.glob("*.log"))) == (1, [])


@pytest.mark.anyio
async def test_a_round_that_fails_on_a_bug_acks_nothing_and_the_next_round_works(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    live = _open(registry, 1)
    monkeypatch.setattr(registry.commit, "_sync_all", lambda *a, **k: 1 / 0)
    with pytest.raises(OSError, match=r"sync round failed: ZeroDivisionError") as e:
        await registry.durable([live])
    assert e.value.errno == errno.EIO and live.journal.dirty and registry.fsyncs == 0
    monkeypatch.undo()
    await registry.durable([live])
    assert not live.journal.dirty and (registry.commit.rounds, registry.fsyncs) == (2, 1)


@pytest.mark.anyio
async def test_a_failed_fdatasync_fails_its_waiter_and_no_other(registry: Registry) -> None:
    good, bad = _open(registry, 1), _open(registry, 2)
    await registry.durable([good, bad])
    registry.append(good, [Pending("note", {"message": "g"}, TS)])
    registry.append(bad, [Pending("note", {"message": "b"}, TS)])
    os.unlink(bad.journal.path)  # its fdatasync cannot open the trace: ENOENT
    errors: list[OSError] = []

    async def wait(live: Live) -> None:
        try:
            await registry.durable([live])
        except OSError as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, good)
        tg.start_soon(wait, bad)
    assert [e.filename for e in errors] == [bad.journal.path]
    assert not good.journal.dirty and bad.journal.dirty
    await registry.sync_dirty()  # the batch tick logs it and goes on
    assert bad.journal.dirty


# --- the write-ahead log of fsync = "always", proven with kill -9 and a simulated power cut -----------------


def _segments(d: Daemon) -> list[Path]:
    return sorted((d.state / "traced" / "wal").glob("*.log"))


def _frames(d: Daemon) -> list[tuple[str, str | None, bytes]]:
    """Every frame of the log, in log order."""
    return [entry for seg in _segments(d) for entry in wal.read_frames(seg.read_bytes())[0]]


def _logged(d: Daemon) -> dict[str, list[int]]:
    """Session dir -> steps the log holds, in log order."""
    out: dict[str, list[int]] = {}
    for seg in _segments(d):
        entries, _torn = wal.read_frames(seg.read_bytes())
        for sdir, _ident, lines in entries:
            out.setdefault(sdir, []).extend(json.loads(line)["step"] for line in lines.splitlines())
    return out


def _acked(d: Daemon, sessions: int, each: int, skill: str = "wal") -> list[tuple[str, str, list[int]]]:
    """Open ``sessions`` sessions, emit ``each`` acked notes to each in turn: (id, dir, acked steps) each."""
    with d.client() as c:
        opened = [c.open(f"{skill}{k}", owner_pid=-1) for k in range(sessions)]
        steps: list[list[int]] = [[] for _ in opened]
        for i in range(each):
            for k, o in enumerate(opened):
                steps[k].append(c.emit(o.session_id, "note", {"message": f"{k}-{i}"}))
    return [(o.session_id, o.dir, s) for o, s in zip(opened, steps, strict=True)]


def _truncate_lines(trace: Path, keep: int, torn: bytes = b"") -> None:
    """Lose every line after the first ``keep`` (a power cut took them from the page cache), plus a torn piece."""
    lines = trace.read_bytes().splitlines(keepends=True)
    trace.write_bytes(b"".join(lines[:keep]) + torn)


def _notes(sdir: str) -> list[str]:
    records = read_trace(Path(sdir) / "trace.jsonl")
    assert_gap_free(records)
    return [r["payload"]["message"] for r in records if r["phase"] == "note"]


def test_power_cut_after_the_log_sync_restores_every_acked_line_once(daemon_factory: Any) -> None:
    """The trace is written before the log, so kill -9 alone loses nothing; a power cut can still take
    trace lines the log holds (the page cache): after the kill, the traces are cut back to simulate
    it, and the next start puts back exactly the acked lines, gap-free, each once, before READY."""
    d: Daemon = daemon_factory("--fsync", "always")
    runs = _acked(d, sessions=4, each=12)
    assert [steps for _sid, _dir, steps in runs] == [list(range(2, 14))] * 4
    d.kill9()
    logged = _logged(d)
    # a session's first sync (its start and first note) fdatasyncs its trace; every later acked note is logged
    assert logged == {sdir: list(range(3, 14)) for _s, sdir, _st in runs}
    traces = [Path(sdir) / "trace.jsonl" for _sid, sdir, _steps in runs]
    _truncate_lines(traces[0], 2)  # every logged note lost: only what its trace's own fdatasync covered
    _truncate_lines(traces[1], 5)  # the first 4 notes made it
    _truncate_lines(traces[2], 7, torn=b'{"ts":"2026-')  # 6 notes and a torn piece of the 7th
    # traces[3] kept everything: replay must add nothing to it
    d.start()
    assert [_notes(sdir) for _sid, sdir, _steps in runs] == [[f"{k}-{i}" for i in range(12)] for k in range(4)]
    assert (Path(runs[2][1]) / "trace.torn").read_bytes() == b'{"ts":"2026-\n'
    replayed = {e["session_dir"]: e["lines"] for e in d.logs() if e.get("event") == "wal_replayed"}
    assert replayed == {runs[0][1]: 11, runs[1][1]: 8, runs[2][1]: 6}
    assert _segments(d) == [], "replayed, the log is gone"
    with d.client() as c:  # the sessions go on from the restored step
        c.open("wal0", session_id=runs[0][0], owner_pid=-1)
        assert c.emit(runs[0][0], "note", {"message": "after"}) == 14


def test_torn_log_tail_and_a_session_dir_that_is_gone(daemon_factory: Any) -> None:
    """A crash inside the log's own write leaves a torn frame (never acked: not replayed), and a
    session deleted since (retention, a user) has entries with no dir: both are skipped and logged."""
    d: Daemon = daemon_factory("--fsync", "always")
    runs = _acked(d, sessions=2, each=5)
    d.kill9()
    (seg,) = _segments(d)
    kept, gone = runs[0][1], runs[1][1]
    unacked = json.dumps({"ts": "2026-01-01T00:00:00.000000Z", "skill": "wal0", "session_id": runs[0][0],
                          "step": 7, "phase": "note", "payload": {"message": "never acked"}}).encode() + b"\n"
    torn = wal.frame(kept, trace_ident(str(Path(kept) / "trace.jsonl")), unacked)[:-9]
    with open(seg, "ab") as f:
        f.write(torn)
    shutil.rmtree(gone)
    _truncate_lines(Path(kept) / "trace.jsonl", 3)
    d.start()
    assert _notes(kept) == [f"0-{i}" for i in range(5)], "the acked lines back, the torn frame's line not"
    events = {e["event"]: e for e in d.logs() if str(e.get("event", "")).startswith("wal_")}
    assert events["wal_torn_tail"]["bytes"] == len(torn)
    assert events["wal_session_gone"]["session_dir"] == gone
    assert events["wal_replayed"]["lines"] == 3
    assert not Path(gone).exists() and _segments(d) == []


def test_checkpoints_racing_acked_writes_keep_every_acked_line(daemon_factory: Any) -> None:
    """A tiny log checkpoints every few rounds while 8 writers keep writing: a line written during a
    checkpoint goes to the next segment, so after kill -9 and the loss of everything the log still
    holds, each session gets back exactly its acked lines."""
    d: Daemon = daemon_factory("--fsync", "always", env={"TRACED_WAL_CHECKPOINT_BYTES": "4096"})
    results: dict[int, list[tuple[str, str, list[int]]]] = {}
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            results[k] = _acked(d, sessions=1, each=40, skill=f"race{k}-")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with d.client() as c:
        info = c.status()
    assert info["wal_checkpoints"] >= 3, info
    wait_for(lambda: len(_segments(d)) == 1, what="a checkpoint (beside the rounds) to leave one segment")
    d.kill9()
    logged = _logged(d)
    cut = 0
    for (_sid, sdir, steps), in results.values():
        assert steps == list(range(2, 42))
        lost = logged.get(sdir, [])
        if lost:  # the power cut takes every line the log still covers: a run without a hole
            assert lost == list(range(lost[0], 42))
            _truncate_lines(Path(sdir) / "trace.jsonl", lost[0] - 1)
            cut += len(lost)
    assert cut > 0, "the last segment covers the last rounds"
    d.start()
    for k, ((_sid, sdir, _steps),) in results.items():
        assert _notes(sdir) == [f"0-{i}" for i in range(40)], k


@pytest.mark.anyio
async def test_a_reload_away_from_always_checkpoints_the_log(private_env: Path) -> None:
    """Rounds log only under ``always`` and ``batch``; when a reload turns to ``never``, the next round makes the
    traces the log covered durable on their own and deletes it, and writes are no longer kept for it."""
    config = Config(root=str(private_env / "root"), fsync="always")
    reg = Registry(config)
    try:
        lives = [_open(reg, k) for k in range(2)]
        await reg.durable(lives)  # first round: the traces' own fdatasyncs, then their writes are kept
        for live in lives:
            reg.append(live, [Pending("note", {"message": "logged"}, TS)])
        await reg.durable(lives)
        (seg,) = sorted(reg.commit_log_dir.glob("*.log"))
        entries, torn = wal.read_frames(seg.read_bytes())
        assert ([sdir for sdir, _i, _ in entries], torn) == ([lv.state.dir for lv in lives], 0)
        assert [ident for _, ident, _ in entries] == [lv.journal.ident for lv in lives]
        assert all(len(lv.journal.ident) == 8 for lv in lives)
        assert [[json.loads(x)["step"] for x in lines.splitlines()] for _, _i, lines in entries] == [[2], [2]]
        config.fsync = "never"  # what a SIGHUP reload does
        reg.append(lives[0], [Pending("note", {"message": "synced"}, TS)])
        await reg.durable([lives[0]])
        assert sorted(reg.commit_log_dir.glob("*.log")) == [] and reg.commit.wal is not None
        assert (reg.commit.wal.checkpoints, lives[0].journal.wal, lives[0].journal.dirty) == (1, None, False)
        assert (reg.fsyncs, reg.commit.log_syncs) == (2 + 2 + 1, 1)
    finally:
        reg.shutdown()


@pytest.mark.anyio
async def test_a_full_log_is_checkpointed_beside_the_rounds_which_go_on_meanwhile(private_env: Path) -> None:
    """The round that fills the log answers its waiters at once; the checkpoint runs on a thread of its
    own (here held back by the log's checkpoint lock), while later rounds log into a new segment that it
    keeps. One checkpoint at a time, however many rounds find the log full meanwhile."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="always", wal_checkpoint_bytes=1))
    w = reg.commit.wal
    assert w is not None
    try:
        lives = [_open(reg, k) for k in range(2)]
        await reg.durable(lives)  # the traces' own fdatasyncs: their writes are kept for the log from now on
        with w._checkpointing:  # a checkpoint that takes long
            for i in range(3):  # each round fills the log (1 byte): its acks do not wait for the checkpoint
                for live in lives:
                    reg.append(live, [Pending("note", {"message": f"n{i}"}, TS)])
                with anyio.fail_after(10):
                    await reg.durable(lives)
                assert (reg.commit.log_syncs, w.checkpoints) == (i + 1, 0)
            segments = sorted(reg.commit_log_dir.glob("*.log"))
            assert len(segments) == 1, "the checkpoint waits for the lock before it starts a new segment"
        await await_for(lambda: w.checkpoints == 1, what="the checkpoint held back")
        assert sorted(reg.commit_log_dir.glob("*.log")) == []
        for live in lives:
            reg.append(live, [Pending("note", {"message": "after"}, TS)])
        await reg.durable(lives)
        await await_for(lambda: w.checkpoints == 2, what="the next full round's checkpoint")
        assert [len(read_trace(Path(lv.state.dir) / "trace.jsonl")) for lv in lives] == [5, 5]
        assert not any(lv.journal.dirty for lv in lives)
    finally:
        reg.shutdown()


# --- the log under fsync = "batch": small traces logged, large ones synced on their own -------------------


@pytest.mark.anyio
async def test_batch_rounds_log_small_traces_and_sync_large_ones_themselves(private_env: Path) -> None:
    """The ``batch`` tick: once a trace was synced, its lines go to the one log fdatasync of the round;
    a trace that wrote more than ``LOG_TRACE_MAX`` since its last round is fdatasynced itself and keeps
    no copy of its lines until a round finds it small again."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="batch"))
    try:
        lives = [_open(reg, k) for k in range(3)]
        await reg.sync_dirty()  # each trace's first round: its own fdatasync
        assert (reg.commit.rounds, reg.fsyncs, sorted(reg.commit_log_dir.glob("*.log"))) == (1, 3, [])
        assert [lv.journal.wal for lv in lives] == [[], [], []]
        reg.append(lives[0], [Pending("note", {"message": "a"}, TS)])
        reg.append(lives[1], [Pending("note", {"message": "b"}, TS)])
        big = "x" * LOG_TRACE_MAX
        reg.append(lives[2], [Pending("note", {"message": big}, TS)])
        await reg.sync_dirty()
        (seg,) = sorted(reg.commit_log_dir.glob("*.log"))
        entries, torn = wal.read_frames(seg.read_bytes())
        messages = [(sdir, [json.loads(x)["payload"]["message"] for x in lines.splitlines()])
                    for sdir, _i, lines in entries]
        assert messages == [(lives[0].state.dir, ["a"]), (lives[1].state.dir, ["b"])]
        assert (torn, lives[2].journal.wal, lives[2].journal.dirty) == (0, None, False)
        reg.append(lives[2], [Pending("note", {"message": "small again"}, TS)])
        await reg.sync_dirty()  # no copy was kept: its own fdatasync, and from now on it is logged
        assert (lives[2].journal.wal, lives[2].journal.dirty) == ([], False)
        reg.append(lives[2], [Pending("note", {"message": "logged"}, TS)])
        await reg.sync_dirty()
        entries, _torn = wal.read_frames(seg.read_bytes())
        assert [sdir for sdir, _i, _ in entries] == [lives[0].state.dir, lives[1].state.dir, lives[2].state.dir]
        assert (reg.commit.rounds, reg.fsyncs, reg.commit.log_syncs) == (4, 3 + 3 + 1 + 1, 2)  # traces, then log syncs
    finally:
        reg.shutdown()
    assert sorted(reg.commit_log_dir.glob("*.log")) == [], "a clean stop checkpoints the log"


def test_batch_power_cut_after_a_synced_round_restores_every_line_it_covered(daemon_factory: Any) -> None:
    """Under ``batch`` a ``sync {fsync}`` (or the tick) makes the lines written so far durable with one log
    fdatasync; a kill -9 and a power cut that takes trace lines from the page cache lose none of them."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})  # no tick: the syncs'
    with d.client() as c:
        opened = [c.open(f"wal{k}", owner_pid=-1) for k in range(3)]
        for i in range(10):
            for k, o in enumerate(opened):
                c.emit(o.session_id, "note", {"message": f"{k}-{i}"}, ack=False)
            if i in (0, 9):  # the first: each trace's own fdatasync; the last: one log fdatasync for the three
                c.sync(fsync=True)
    d.kill9()
    assert _logged(d) == {o.dir: list(range(3, 12)) for o in opened}
    traces = [Path(o.dir) / "trace.jsonl" for o in opened]
    _truncate_lines(traces[0], 2)  # every logged note lost
    _truncate_lines(traces[1], 6, torn=b'{"ts":"2026-')  # 5 notes and a torn piece of the 6th
    d.start()
    assert [_notes(o.dir) for o in opened] == [[f"{k}-{i}" for i in range(10)] for k in range(3)]
    replayed = {e["session_dir"]: e["lines"] for e in d.logs() if e.get("event") == "wal_replayed"}
    assert replayed == {opened[0].dir: 9, opened[1].dir: 5}
    assert _segments(d) == []


def test_a_session_id_used_again_after_its_dir_was_deleted_gets_none_of_the_old_lines(daemon_factory: Any) -> None:
    """A session deleted while the daemon runs and then opened again under the same id (an agent resuming
    its own session id) is a new trace at the same path: after a kill -9, the old trace's logged lines
    stay out of it (before, they came back with a step gap, deleted content included). The log holds
    both traces' lines, each tagged with its trace's identity, and a reset frame between them."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    sid = "agent-session-reused-1"
    with d.client() as c:
        first = c.open("reuse", session_id=sid, owner_pid=-1)
        for i in range(6):
            c.emit(sid, "note", {"message": f"old-{i}"})
            if i in (0, 5):  # the first: the trace's own fdatasync; the last: logged
                c.sync(fsync=True)
        c.end(sid, "success")
        assert _logged(d) == {first.dir: list(range(3, 8))}
        shutil.rmtree(first.dir)  # a user (or `traced prune`) removes it
        again = c.open("reuse", session_id=sid, owner_pid=-1)
        assert again.dir == first.dir
        c.emit(sid, "note", {"message": "new-0"})
        c.sync(fsync=True)  # the new trace's own first fdatasync
        c.emit(sid, "note", {"message": "new-1"})
        c.sync(fsync=True)  # logged, under the new trace's identity
    d.kill9()
    frames = [(ident, lines.count(b"\n")) for _s, ident, lines in _frames(d)]
    new_ident = trace_ident(str(Path(first.dir) / "trace.jsonl"))
    assert [n for _i, n in frames] == [5, 0, 1] and frames[1:] == [("", 0), (new_ident, 1)]
    assert frames[0][0] not in ("", new_ident)
    d.start()
    assert _notes(first.dir) == ["new-0", "new-1"]
    stale = [e for e in d.logs() if e.get("event") == "wal_stale_lines"]
    assert [(e["session_dir"], e["lines"]) for e in stale] == [(first.dir, 5)]
    with d.client() as c:
        info = c.status()
    assert (info["wal_stale_lines"], info["wal_replayed_lines"]) == (5, 0)


def test_a_session_id_used_again_with_the_same_start_time_gets_none_of_the_old_lines(daemon_factory: Any) -> None:
    """A client that gives the same ``open`` ``ts`` (and input) twice writes byte-identical start records,
    so both traces have one identity: the reset frame the daemon logs before the second start record
    keeps the first trace's lines out, after a kill -9 and after a power cut that took logged lines."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    sid, ts = "agent-session-same-ts", 1764547200.123456
    with d.client() as c:
        first = c.open("reuse", session_id=sid, owner_pid=-1, ts=ts, input={"task": "x"})
        for i in range(6):
            c.emit(sid, "note", {"message": f"old-{i}"})
            if i in (0, 5):  # the first: the trace's own fdatasync; the last: logged
                c.sync(fsync=True)
        c.end(sid, "success")
        assert c.status()["wal_resets"] == 0
        old_ident = trace_ident(str(Path(first.dir) / "trace.jsonl"))
        shutil.rmtree(first.dir)
        again = c.open("reuse", session_id=sid, owner_pid=-1, ts=ts, input={"task": "x"})
        assert again.dir == first.dir
        assert trace_ident(str(Path(first.dir) / "trace.jsonl")) == old_ident, "the identity cannot tell them apart"
        for i in range(3):
            c.emit(sid, "note", {"message": f"new-{i}"})
            if i in (0, 2):  # the new trace's own first fdatasync, then logged
                c.sync(fsync=True)
        assert c.status()["wal_resets"] == 1
    d.kill9()
    frames = [(ident, lines.count(b"\n")) for s, ident, lines in _frames(d) if s == first.dir]
    assert frames == [(old_ident, 5), ("", 0), (old_ident, 2)], "old lines, the reset, the new trace's lines"
    _truncate_lines(Path(first.dir) / "trace.jsonl", 2)  # a power cut took new-1 and new-2 (logged)
    d.start()
    assert _notes(first.dir) == ["new-0", "new-1", "new-2"]
    with d.client() as c:
        info = c.status()
    assert (info["wal_stale_lines"], info["wal_replayed_lines"], info["wal_resets"]) == (5, 2, 0)
    assert [(e["lines"], e.get("reason")) for e in d.logs() if e.get("event") == "wal_stale_lines"] == [(5, "reset")]


def test_the_log_writes_a_reset_only_where_it_holds_an_earlier_traces_lines(tmp_path: Path) -> None:
    """``WriteAheadLog.reset``: a frame (identity "", no lines) only for a trace the current segment, a
    running checkpoint's segments or a failed replay's segments hold lines of; each once."""
    log_dir = tmp_path / "wal"
    w = wal.WriteAheadLog(log_dir, 1 << 30)
    a, b, c = (str(tmp_path / n) for n in "abc")
    line = b'{"step":2}\n'
    w.append_sync([(a, "0000000a", line)])
    assert (w.reset(b), w.reset(a), w.reset(a)) == (False, True, False)
    w.held = {os.path.join(c, "trace.jsonl")}
    assert w.reset(c) is True
    assert w.resets == 2
    assert wal.read_frames(_only(log_dir).read_bytes()) == ([(a, "0000000a", line), (a, "", b""), (c, "", b"")], 0)
    w.append_sync([(b, "0000000b", line)])
    w.checkpoint()
    assert (list(log_dir.iterdir()), w.reset(b)) == ([], False), "a checkpoint leaves nothing to reset"


def test_a_reset_check_never_waits_for_a_round_in_flight(tmp_path: Path) -> None:
    """Opening a session asks the log whether it needs a reset on the event loop: for a trace the log
    does not hold, the answer takes no lock, so it never waits for a round's fdatasync (which holds it)."""
    w = wal.WriteAheadLog(tmp_path / "wal", 1 << 30)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    result: list[bool] = []
    with w._lock:  # a round's write and fdatasync
        t = threading.Thread(target=lambda: result.append(w.reset(b)), daemon=True)
        t.start()
        t.join(timeout=10)
        assert not t.is_alive() and result == [False]
    w.append_sync([(a, "0000000a", b'{"step":2}\n')])
    assert (w.reset(b), w.reset(a)) == (False, True)


def test_one_session_dir_spelled_three_ways_is_one_path_to_the_log(daemon_factory: Any, short_tmp: Path) -> None:
    """An explicit target reached through ``..`` or a symlink is the same directory: the session dir
    (and so the log's bookkeeping) uses its real path, so a session id used again through another
    spelling, with the same ``ts`` and input, still gets the reset and none of the old lines."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    (short_tmp / "t" / "x").mkdir(parents=True)
    (short_tmp / "t" / "a").mkdir()
    (short_tmp / "t" / "link").symlink_to(short_tmp / "t" / "x")
    real = os.path.realpath(short_tmp / "t" / "x")
    sid, ts = "aliased-1", 1764547200.5
    with d.client() as c:
        first = c.open("alias", session_id=sid, owner_pid=-1, ts=ts, target=str(short_tmp / "t" / "x"))
        assert first.dir.startswith(real + "/")
        for i in range(4):
            c.emit(sid, "note", {"message": f"old-{i}"})
            if i in (0, 3):
                c.sync(fsync=True)
        c.end(sid, "success")
        for spelling in (short_tmp / "t" / "a" / ".." / "x", short_tmp / "t" / "link"):
            shutil.rmtree(first.dir)
            again = c.open("alias", session_id=sid, owner_pid=-1, ts=ts, target=str(spelling))
            assert again.dir == first.dir
            c.emit(sid, "note", {"message": "new-0"})
            c.sync(fsync=True)
            c.emit(sid, "note", {"message": "new-1"})
            c.sync(fsync=True)
            c.end(sid, "success")
        assert c.status()["wal_resets"] == 2
    d.kill9()
    d.start()
    assert _notes(first.dir) == ["new-0", "new-1"]


def _only(directory: Path) -> Path:
    (seg,) = directory.iterdir()
    return seg


def test_a_reset_during_a_checkpoint_goes_to_the_next_segment_which_the_checkpoint_keeps(tmp_path: Path) -> None:
    """The event loop may write a reset while a checkpoint syncs traces: the trace is in the segments the
    checkpoint retires, so the reset is needed, and it opens a segment the checkpoint must not delete."""
    log_dir = tmp_path / "wal"
    w = wal.WriteAheadLog(log_dir, 1 << 30)
    a = str(tmp_path / "a")
    w.append_sync([(a, "0000000a", b'{"step":2}\n')])
    resets: list[bool] = []

    def map_and_reset(fn: Any, items: Any) -> Any:
        resets.append(w.reset(a))  # what the loop may do while the trace syncs run
        return map(fn, items)

    w.map = map_and_reset
    w.checkpoint()
    assert resets == [True]
    seg = _only(log_dir)
    assert seg.name == f"{2:016d}.log"
    w.append_sync([(a, "000000a2", b'{"step":2}\n')])
    assert wal.read_frames(seg.read_bytes()) == ([(a, "", b""), (a, "000000a2", b'{"step":2}\n')], 0)


def test_replay_leaves_out_what_a_reset_frame_follows(tmp_path: Path) -> None:
    """Lines logged for a session dir before its reset frame stay out; the ones after go back."""
    sdir = tmp_path / "s"
    sdir.mkdir()
    lines = [json.dumps({"ts": "2026-01-01T00:00:00.000000Z", "skill": "r", "session_id": "s", "step": k,
                         "phase": "start" if k == 1 else "note", "payload": {}}).encode() + b"\n" for k in (1, 2, 3, 4)]
    (sdir / "trace.jsonl").write_bytes(lines[0])
    ident = trace_ident(str(sdir / "trace.jsonl"))
    log_dir = tmp_path / "wal"
    log_dir.mkdir()
    d = str(sdir)
    (log_dir / f"{1:016d}.log").write_bytes(wal.frame(d, ident, lines[1] + lines[2] + lines[3]) + wal.frame(d, "", b""))
    (log_dir / f"{2:016d}.log").write_bytes(wal.frame(d, ident, lines[1]))
    done = wal.replay(log_dir)
    assert (done.lines, done.stale, done.held) == ({d: 1}, 3, set())
    assert (sdir / "trace.jsonl").read_bytes() == lines[0] + lines[1]
    assert list(log_dir.iterdir()) == []


def test_a_kill_during_frequent_checkpoints_loses_no_acked_line(daemon_factory: Any) -> None:
    """With a checkpoint every few rounds (an 8 KiB log), 4 threads send durable acked events while the
    daemon is killed (-9) wherever it is: inside a round, a checkpoint's trace syncs or its deletes.
    The next start replays what is left: every acked step is in its trace once, gap-free, no gap is
    logged, and the log is gone."""
    d: Daemon = daemon_factory("--fsync", "always", env={"TRACED_WAL_CHECKPOINT_BYTES": "8192"})
    with d.client() as c:
        opened = [c.open(f"ckpt{k}", owner_pid=-1) for k in range(4)]
    acked: list[list[int]] = [[] for _ in opened]
    stop = threading.Event()

    def send(k: int) -> None:
        try:
            with d.client() as c:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    step = c.emit(opened[k].session_id, "note", {"message": f"{k}-{i}", "pad": "p" * 200})
                    assert step is not None
                    acked[k].append(step)
        except Exception:  # the kill: whatever was acked before it is what counts
            return

    threads = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    try:
        with d.client() as c:
            wait_for(lambda: c.status()["wal_checkpoints"] >= 5 and min(map(len, acked)) >= 20,
                     what="five checkpoints under load")
        d.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    d.start()
    for o, steps in zip(opened, acked, strict=True):
        records = read_trace(Path(o.dir) / "trace.jsonl")
        assert_gap_free(records)
        have = [r["step"] for r in records]
        assert steps == have[1 : len(steps) + 1], "every acked step, in order, once"
    assert [e for e in d.logs() if e.get("event") == "wal_gap"] == []
    assert _segments(d) == []


def test_a_session_let_go_is_never_logged_after_its_reset(daemon_factory: Any) -> None:
    """A session deleted while one connection writes to it, then opened again by another with the same
    start record: the first connection's unlogged lines of the deleted trace are never logged after the
    reset (its journal is retired), so a kill -9 brings back only the new trace's lines."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    sid, ts = "let-go-1", 1764547200.25
    with d.client() as a, d.client() as b:
        first = a.open("letgo", session_id=sid, owner_pid=-1, ts=ts)
        for i in range(5):
            a.emit(sid, "note", {"message": f"old-{i}"})
            if i in (0, 1):  # the trace's own fdatasync, then logged; old-2..4 only written
                a.sync(fsync=True)
        shutil.rmtree(first.dir)
        again = b.open("letgo", session_id=sid, owner_pid=-1, ts=ts)
        assert (again.dir, again.step) == (first.dir, 1)
        with pytest.raises(RequestError, match=r"^io_error: fsync failed: the trace was deleted or replaced$"):
            a.sync(fsync=True)  # a's touched sessions hold the deleted one: old-2..4 are in no file
        a.sync(fsync=True)  # told once: a later sync is about later writes
        b.emit(sid, "note", {"message": "new-0"})
        b.sync(fsync=True)
        b.emit(sid, "note", {"message": "new-1"})
        b.sync(fsync=True)
    d.kill9()
    assert [(lines.count(b"\n"), ident == "") for s_, ident, lines in _frames(d) if s_ == first.dir] == [
        (1, False), (0, True), (1, False)], "old-1, the reset, new-1: nothing of old-2..4"
    d.start()
    assert _notes(first.dir) == ["new-0", "new-1"]


@pytest.mark.anyio
async def test_an_open_waits_out_a_round_that_logs_an_earlier_trace_there(private_env: Path) -> None:
    """A round in flight logging lines of a deleted trace: a new trace at its path is deferred (nothing
    written, not even its dir) until the round is done, so the reset comes after those lines in the log."""
    reg = Registry(Config(root=str(private_env / "root"), fsync="batch"))
    try:
        live = _open(reg, 0)
        reg.close(live.state.session_id, "success")
        shutil.rmtree(live.state.dir)
        reg.commit._logging = {live.state.dir}  # what a round in flight sets on the loop
        with pytest.raises(Deferred) as e:
            _open(reg, 0)
        assert (str(e.value), os.path.exists(live.state.dir)) == ("a round in flight logs an earlier trace's lines "
                                                                   "there", False)
        reg.commit._logging = set()
        assert _open(reg, 0).state.step == 1
    finally:
        reg.shutdown()


def test_one_root_spelled_twice_is_read_once(tmp_path: Path) -> None:
    """``--root`` given twice under two spellings, or a ``roots.json`` holding a name kept from before the
    daemon took targets by their real path: one directory, read once (the first spelling kept)."""
    real = tmp_path / "root"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert reading_roots([real, tmp_path / "link", tmp_path / "root" / ".." / "root"]) == [real]
    state = tmp_path / "state"
    state.mkdir()
    (state / "roots.json").write_text(json.dumps([str(tmp_path / "link"), str(real)]))
    roots = targets.Roots(state, real)
    roots.load()
    assert sorted(roots) == [str(real)]


def test_a_trace_that_became_a_directory_blocks_no_checkpoint_and_no_replay(daemon_factory: Any) -> None:
    """A logged trace replaced by a directory (or a FIFO) is no longer a trace: checkpoints skip it
    instead of failing forever (the log growing without end), and replay counts it gone, not failed,
    so the log is deleted."""
    d: Daemon = daemon_factory("--fsync", "always", env={"TRACED_WAL_CHECKPOINT_BYTES": "4096"})
    with d.client() as c:
        a = c.open("notafile", owner_pid=-1)
        for i in range(3):
            c.emit(a.session_id, "note", {"message": f"a-{i}"})
        trace = Path(a.dir) / "trace.jsonl"
        trace.unlink()
        trace.mkdir()
        b = c.open("filler", owner_pid=-1)
        for i in range(60):
            c.emit(b.session_id, "note", {"message": f"b-{i}", "pad": "p" * 200})
        assert c.status()["wal_checkpoints"] >= 2
    assert [e for e in d.logs() if e.get("event") == "wal_checkpoint_failed"] == []
    d.kill9()
    d.start()
    assert _notes(b.dir) == [f"b-{i}" for i in range(60)]
    assert [e["session_dir"] for e in d.logs() if e.get("event") == "wal_session_gone"] in ([], [a.dir])
    assert [e for e in d.logs() if e.get("event") == "wal_replay_failed"] == []
    assert _segments(d) == []
    shutil.rmtree(a.dir)  # not a session any more (the schema check after the test reads every trace)


def test_a_torn_tail_the_replay_moves_aside_is_counted(daemon_factory: Any) -> None:
    """``status``'s ``torn_tails_moved`` counts the torn tails the log's replay moved aside too."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    with d.client() as c:
        o = c.open("torn", owner_pid=-1)
        for i in range(3):
            c.emit(o.session_id, "note", {"message": f"n-{i}"})
            c.sync(fsync=True)
    d.kill9()
    _truncate_lines(Path(o.dir) / "trace.jsonl", 3, torn=b'{"ts":"x","ste')
    d.start()
    assert _notes(o.dir) == ["n-0", "n-1", "n-2"]
    with d.client() as c:
        info = c.status()
    assert (info["torn_tails_moved"], info["wal_replayed_lines"], info["wal_stale_lines"]) == (1, 1, 0)


def test_replay_leaves_out_lines_whose_identity_is_not_the_traces(tmp_path: Path) -> None:
    """A trace replaced while no daemon ran (no reset frame): the lines logged under another identity stay
    out, and the ones under the trace's own go back."""
    sdir = tmp_path / "s"
    sdir.mkdir()
    lines = [json.dumps({"ts": "2026-01-01T00:00:00.000000Z", "skill": "i", "session_id": "s", "step": k,
                         "phase": "start" if k == 1 else "note", "payload": {}}).encode() + b"\n" for k in (1, 2, 3)]
    (sdir / "trace.jsonl").write_bytes(lines[0])
    ident = trace_ident(str(sdir / "trace.jsonl"))
    log_dir = tmp_path / "wal"
    log_dir.mkdir()
    d = str(sdir)
    other = wal.frame(d, "0badf00d", lines[1] + lines[2])
    (log_dir / f"{1:016d}.log").write_bytes(other + wal.frame(d, ident, lines[1]))
    done = wal.replay(log_dir)
    assert (done.lines, done.stale) == ({d: 1}, 2)
    assert (sdir / "trace.jsonl").read_bytes() == lines[0] + lines[1]


def test_a_log_of_the_first_format_is_still_replayed(tmp_path: Path) -> None:
    """Frames written before the identity was added (magic ``TWAL``) go back by step alone."""
    sdir = tmp_path / "s"
    sdir.mkdir()
    lines = [json.dumps({"ts": "2026-01-01T00:00:00.000000Z", "skill": "v1", "session_id": "s", "step": k,
                         "phase": "start" if k == 1 else "note", "payload": {}}).encode() + b"\n" for k in (1, 2, 3)]
    (sdir / "trace.jsonl").write_bytes(lines[0])
    payload = str(sdir).encode() + b"\0" + lines[1] + lines[2]
    log_dir = tmp_path / "wal"
    log_dir.mkdir()
    (log_dir / f"{1:016d}.log").write_bytes(wal.HEADER.pack(wal.MAGIC_V1, len(payload), zlib.crc32(payload)) + payload)
    assert wal.read_frames((log_dir / f"{1:016d}.log").read_bytes()) == ([(str(sdir), None, lines[1] + lines[2])], 0)
    done = wal.replay(log_dir)
    assert (done.lines, done.stale) == ({str(sdir): 2}, 0)
    assert (sdir / "trace.jsonl").read_bytes() == b"".join(lines)
    assert list(log_dir.iterdir()) == []
