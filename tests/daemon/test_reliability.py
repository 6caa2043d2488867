"""Never lose an event: kill -9, restarts, watchers, spool, disk limits. Real processes only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced import DaemonUnavailable

SKILL = textwrap.dedent(
    """
    import json, sys, time
    from traced import Client
    sock, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    with Client(sock, spool_after=60.0) as c, c.session(skill="load") as s:
        print(json.dumps({"dir": s.dir, "id": s.id}), flush=True)
        for i in range(n):
            step = s.note(f"{tag}-{i}")
            print(json.dumps({"i": i, "step": step}), flush=True)
            if pause:
                time.sleep(pause)  # pacing: spreads the load over the crashes (not a wait for anything)
    print(json.dumps({"done": True, "spooled": c.spooled}), flush=True)
    """
)


def _meta(sdir: str | Path) -> dict[str, Any]:
    return json.loads((Path(sdir) / "meta.json").read_text())


def _ended_meta(sdir: str | Path) -> dict[str, Any] | None:
    """meta.json once the session is finalized (it is rewritten atomically), else None."""
    meta = _meta(sdir)
    return meta if meta.get("ended_at") else None


def _status(d: Daemon) -> dict[str, Any]:
    with d.client() as c:
        info: dict[str, Any] = c.status()
        return info


@pytest.mark.parametrize("policy", ["batch", "always"])
def test_kill9_daemon_under_load_loses_nothing(daemon_factory: Any, policy: str) -> None:
    """Two kill -9s while four skills write; under ``always`` a kill also lands between a line's
    trace write and the write-ahead log's sync (unacked: the client resends, the key drops it)."""
    daemon: Daemon = daemon_factory("--fsync", policy)
    n = 400
    skills = [subprocess.Popen([sys.executable, "-c", SKILL, str(daemon.socket), str(n), f"k{k}", "0.002"],
                               env=daemon.env, stdout=subprocess.PIPE, text=True) for k in range(4)]
    # the load is under way: all four sessions open and writing
    wait_for(lambda: (st := _status(daemon))["open_sessions"] == 4 and st["events_written"] >= 4 * 20,
             what="four skills writing")
    for _ in range(2):  # two crashes in the middle of the load
        daemon.kill9()
        time.sleep(0.3)  # the scenario: the daemon stays dead a moment, so the skills meet the outage
        daemon.start()
        wait_for(lambda: _status(daemon)["events_written"] >= 40 or any(p.poll() is not None for p in skills),
                 what="the skills writing to the new daemon")
    outputs = [p.communicate(timeout=120)[0] for p in skills]
    assert [p.returncode for p in skills] == [0] * 4
    acked = lost = duplicated = 0
    for k, out in enumerate(outputs):
        lines = [json.loads(x) for x in out.splitlines()]
        info = lines[0]
        assert lines[-1]["done"] is True
        acks = {x["i"]: x["step"] for x in lines if "i" in x}
        records = read_trace(Path(info["dir"]) / "trace.jsonl")
        assert_gap_free(records)
        notes = [r for r in records if r["phase"] == "note"]
        messages = [r["payload"]["message"] for r in notes]
        by_step = {r["step"]: r["payload"]["message"] for r in notes}
        for i, step in acks.items():
            if step is None:
                continue
            acked += 1
            count = messages.count(f"k{k}-{i}")
            lost += count == 0
            duplicated += max(0, count - 1)
            assert by_step.get(step) == f"k{k}-{i}", "the acked step holds that event"
        assert messages == [f"k{k}-{i}" for i in range(n)], "every event once, in order"
        assert records[-1]["phase"] == "end" and records[-1]["payload"]["outcome"] == "success"
        assert _meta(info["dir"])["outcome"] == "success"
    assert (lost, duplicated) == (0, 0)
    assert acked >= 4 * n * 0.9
    print(f"\nkill -9 x2 under load: acked={acked} lost={lost} duplicated={duplicated}")


def test_kill9_of_a_skill_is_finalized_owner_exited(daemon: Daemon) -> None:
    code = textwrap.dedent(
        """
        import sys, time
        from traced import Client
        c = Client(sys.argv[1]); c.connect()
        s = c.open("doomed")
        c.emit(s.session_id, "note", {"message": "hi"})
        print(s.dir, flush=True)
        time.sleep(600)  # the owner stays alive until the test kills it (not a wait for anything)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(daemon.socket)], env=daemon.env,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    sdir = p.stdout.readline().strip()
    p.kill()
    p.wait()
    # owner_exited comes only from the owner's pidfd (there is no polling fallback, and the idle
    # timeout is 30 min): that reason shows the exit was seen at once, without timing it
    meta = wait_for(lambda: _ended_meta(sdir), what="the session finalized")
    assert (meta["outcome"], meta["reason"]) == ("aborted", "owner_exited")
    records = read_trace(Path(sdir) / "trace.jsonl")
    assert records[-1]["payload"] == {"outcome": "aborted", "reason": "owner_exited"}
    assert_gap_free(records)


def test_shell_owner_pid_and_idle_timeout(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory("--idle-timeout", "1.5")
    shell = subprocess.Popen(["sleep", "600"])  # stands in for the owning shell: alive until killed below
    # its own long idle timeout: the CLI calls below may take seconds on a loaded machine, and
    # this session must end by its owner's exit, never by idleness
    owned = json.loads(d.cli("start", "--skill", "sh", "--pid", str(shell.pid), "--idle-timeout", "600",
                             check=True).stdout)
    idle = json.loads(d.cli("start", "--skill", "sh", check=True).stdout)  # no owner: idle timeout only
    d.cli("event", owned["session_id"], "--phase", "note", "--payload", '{"message": "x"}', check=True)
    shell.kill()
    shell.wait()
    meta = wait_for(lambda: _ended_meta(owned["session_dir"]), what="the owned session finalized")
    assert meta["reason"] == "owner_exited" and meta["steps"] == 3
    meta = wait_for(lambda: _ended_meta(idle["session_dir"]), what="the idle session finalized")
    assert (meta["outcome"], meta["reason"]) == ("aborted", "idle_timeout")
    with d.client() as c:
        assert c.status()["finalized"] == {"owner_exited": 1, "idle_timeout": 1}


def test_daemon_and_skill_both_killed_then_recovered(daemon: Daemon) -> None:
    code = "import sys,time; from traced import Client; c=Client(sys.argv[1]); c.connect(); " \
           "s=c.open('both'); c.emit(s.session_id,'note',{'message':'x'}); print(s.dir, flush=True); time.sleep(600)"
    # (time.sleep(600): the owner stays alive until the test kills it; not a wait for anything)
    p = subprocess.Popen([sys.executable, "-c", code, str(daemon.socket)], env=daemon.env,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    sdir = p.stdout.readline().strip()
    daemon.kill9()
    p.kill()
    p.wait()
    assert "ended_at" not in _meta(sdir)
    daemon.start()
    meta = _meta(sdir)  # finalized during start-up, before READY
    assert (meta["outcome"], meta["reason"]) == ("aborted", "recovered_after_restart")
    records = read_trace(Path(sdir) / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == ["start", "note", "end"]


def test_graceful_restart_keeps_the_session_open(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("long-lived")
        c.emit(opened.session_id, "note", {"message": "before"})
        assert daemon.stop(signal.SIGTERM) == 0
        assert "ended_at" not in _meta(opened.dir)
        daemon.start()
        # the same client reconnects transparently; steps continue from the file
        assert c.emit(opened.session_id, "note", {"message": "after"}) == 3
        c.end(opened.session_id)
    records = read_trace(Path(opened.dir) / "trace.jsonl")
    assert_gap_free(records)
    assert [r["phase"] for r in records] == ["start", "note", "note", "end"]
    assert any(e.get("event") == "session_readopted" for e in daemon.logs())


def test_daemon_down_at_start_spools_then_lands_in_order(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    env = {**d.env, "TRACED_SPOOL_AFTER": "0.2"}
    code = textwrap.dedent(
        """
        import json, sys
        from traced import Client
        with Client(sys.argv[1]) as c, c.session(skill="offline", input={"q": 1}) as s:
            for i in range(30):
                s.note(f"n{i}")
                s.note(f"q{i}", ack=False)
            print(json.dumps({"id": s.id, "dir": s.dir, "spooled": c.spooled}))
        """
    )
    res = subprocess.run([sys.executable, "-c", code, str(d.socket)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["spooled"] == 60
    sh = json.loads(subprocess.run([sys.executable, "-m", "traced", "start", "--skill", "offline-sh"],
                                   env=env, capture_output=True, text=True, timeout=30).stdout)
    assert sh["spooled"] is True
    for i in range(3):
        r = subprocess.run([sys.executable, "-m", "traced", "event", sh["session_id"], "--phase", "note",
                            "--payload", json.dumps({"message": f"sh{i}"})], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    subprocess.run([sys.executable, "-m", "traced", "end", sh["session_id"], "--outcome", "success"],
                   env=env, check=True, timeout=30)
    spool_dir = d.state / "traced" / "spool"
    assert len(list(spool_dir.glob("*.spool"))) >= 5
    d.start()
    records = read_trace(Path(info["dir"]) / "trace.jsonl")
    assert_gap_free(records)
    expected = [m for i in range(30) for m in (f"n{i}", f"q{i}")]
    assert [r["payload"]["message"] for r in records if r["phase"] == "note"] == expected
    assert records[-1]["payload"] == {"outcome": "success"}
    sh_records = read_trace(Path(sh["trace_path"]))
    assert [r["phase"] for r in sh_records] == ["start", "note", "note", "note", "end"]
    assert list(spool_dir.glob("*.spool")) == []
    with d.client() as c:
        assert c.status()["spool_backlog"] == 0


def test_spool_keeps_secrets_off_the_disk(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    secret = "s3cr3t-value-" + "x" * 12
    env = {**d.env, "TRACED_SPOOL_AFTER": "0.1", "MY_API_TOKEN": secret}
    code = ("import sys; from traced import Client\n"
            "with Client(sys.argv[1]) as c, c.session(skill='sec') as s:\n"
            "    s.tool_call('curl', {'cmd': 'curl -H x:" + secret + "', 'password': 'hunter2hunter2'})\n")
    subprocess.run([sys.executable, "-c", code, str(d.socket)], env=env, check=True, timeout=60)
    spooled = b"".join(p.read_bytes() for p in (d.state / "traced" / "spool").glob("*.spool"))
    assert spooled and secret.encode() not in spooled and b"hunter2hunter2" not in spooled


def test_client_falls_back_to_spool_when_daemon_vanishes(daemon: Daemon) -> None:
    with daemon.client() as c:
        c.spool_after = 0.2
        opened = c.open("vanish")
        assert c.emit(opened.session_id, "note", {"message": "live"}) == 2
        daemon.kill9()
        assert c.emit(opened.session_id, "note", {"message": "spooled"}) is None
        assert c.spooling
        daemon.start()

        def reconnected() -> bool:  # while spooling, the client tries the daemon at most once a second
            try:
                c.status()
            except DaemonUnavailable:
                return False
            return not c.spooling

        wait_for(reconnected, what="the client back on the daemon")
        assert c.emit(opened.session_id, "note", {"message": "live again"}) == 4
        c.end(opened.session_id)
    records = read_trace(Path(opened.dir) / "trace.jsonl")
    assert [r["payload"].get("message") for r in records[1:-1]] == ["live", "spooled", "live again"]
    assert_gap_free(records)


def _acked_emits_with_fsync_counts(d: Daemon, writers: int, per_writer: int) -> tuple[int, list[tuple[int, int]]]:
    """``writers`` concurrent clients, each on its own session, each making ``per_writer`` acked
    emits one after the other; after every ack the writer asks the daemon for its fsync count.

    Returns the fdatasyncs the emits cost, and for each ack (acks completed by then, counted
    before the question; fdatasyncs the daemon had made by its answer).
    """
    lock = threading.Lock()
    opened = threading.Barrier(writers + 1)
    go = threading.Event()
    done = 0
    seen: list[tuple[int, int]] = []
    steps: dict[int, list[int | None]] = {}
    errors: list[BaseException] = []
    base = 0

    def writer(k: int) -> None:
        nonlocal done
        try:
            with d.client() as c, d.client() as asker:  # asked on its own connection: not after
                sid = c.open(f"durable{k}", owner_pid=-1).session_id  # this one's loop is done
                opened.wait(60)
                assert go.wait(60)
                mine = steps[k] = []
                for i in range(per_writer):
                    mine.append(c.emit(sid, "note", {"message": f"w{k}-{i}"}))
                    with lock:
                        done += 1
                        acked = done
                    fsyncs = asker.status()["fsyncs"] - base
                    with lock:
                        seen.append((acked, fsyncs))
                c.end(sid)
        except BaseException as e:
            errors.append(e)
            opened.abort()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    opened.wait(60)  # every session open: what follows is the emits' own doing
    with d.client() as c:
        base = c.status()["fsyncs"]
    go.set()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert steps == {k: list(range(2, per_writer + 2)) for k in range(writers)}
    assert len(seen) == writers * per_writer
    with d.client() as c:
        info = c.status()
    # each writer ended its session, and ``end`` syncs on its own (except under "never")
    return info["fsyncs"] - base - (writers if info["fsync"] != "never" else 0), seen


@pytest.mark.parametrize(("policy", "per_ack"), [("always", 1), ("never", 0)])
def test_fsync_always_acks_after_fdatasync(daemon_factory: Any, policy: str, per_ack: int) -> None:
    """Under ``always`` every ack waits for an fdatasync that covers it; ``never`` makes none.

    Each writer has its own session and waits for each ack before the next emit, so group
    commit can never cover two of these acks with one sync: ``always`` costs exactly one
    fdatasync per acked emit, and when any writer hears an ack, the syncs of every ack heard
    before it have already been counted. A daemon that acked before syncing, or skipped the
    sync, fails both (the "never" run shows what skipping looks like: zero).
    """
    writers, per_writer = 4, 40
    d: Daemon = daemon_factory("--fsync", policy)
    made, seen = _acked_emits_with_fsync_counts(d, writers, per_writer)
    assert made == per_ack * writers * per_writer
    late = [(acked, fsyncs) for acked, fsyncs in seen if fsyncs < per_ack * acked]
    assert late == [], "an ack arrived before the fdatasync that covers it"
    if policy == "never":
        assert all(fsyncs == 0 for _, fsyncs in seen)
    for trace in d.root.glob("*/*/*/trace.jsonl"):
        records = read_trace(trace)
        assert_gap_free(records)
        assert len(records) == per_writer + 2
    # an explicit sync(fsync=True) syncs under every policy: unacked events, then one fdatasync
    with d.client() as c, c.session(skill="explicit") as s:
        s.note("first")  # acked: under "always" already synced on its own
        before = c.status()["fsyncs"]
        for i in range(100):
            s.note(f"nb{i}", ack=False)
        c.sync()
        written = c.status()["fsyncs"]
        c.sync(fsync=True)
        after = c.status()["fsyncs"]
    assert [r["payload"].get("message") for r in read_trace(Path(s.dir) / "trace.jsonl")[1:-1]] == [
        "first", *(f"nb{i}" for i in range(100))]
    if policy == "never":
        assert (written - before, after - written) == (0, 1)
    else:  # every read that wrote was synced before the daemon answered it: nothing left to sync
        assert written - before >= 1 and after == written


def test_file_size_limit_gives_io_error_then_recovers(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    d.start("--fsync", "never", preexec=lambda: __import__("resource").setrlimit(
        __import__("resource").RLIMIT_FSIZE, (4000, __import__("resource").RLIM_INFINITY)))
    from traced import RequestError

    with d.client() as c:
        opened = c.open("fsize")
        ok = 0
        with pytest.raises(RequestError) as e:
            for i in range(200):
                c.emit(opened.session_id, "note", {"message": f"{i:04d}" + "x" * 60})
                ok += 1
        assert e.value.code == "io_error" and "too large" in e.value.message.lower()
        data = (Path(opened.dir) / "trace.jsonl").read_bytes()
        assert data.endswith(b"\n") and len(data) <= 4000
        assert_gap_free(read_trace(Path(opened.dir) / "trace.jsonl"))
        assert c.status()["write_errors"] >= 1
        # lift the limit on the running daemon: the same session carries on
        assert d.proc is not None
        subprocess.run(["prlimit", "--pid", str(d.proc.pid), "--fsize=unlimited"], check=True)
        assert c.emit(opened.session_id, "note", {"message": "after"}) == ok + 2
        c.end(opened.session_id)
    records = read_trace(Path(opened.dir) / "trace.jsonl")
    assert_gap_free(records)
    assert records[-1]["phase"] == "end"
    assert d.alive()


def test_torn_tail_is_moved_aside_on_readoption(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("torn", owner_pid=-1)
        c.emit(opened.session_id, "note", {"message": "ok"})
    daemon.kill9()
    with open(Path(opened.dir) / "trace.jsonl", "ab") as f:
        f.write(b'{"ts":"2026-01-01T00:00:00.000000Z","skill":"torn","step":3,"pha')
    daemon.start()
    with daemon.client() as c:
        assert c.emit(opened.session_id, "note", {"message": "next"}) == 3
        c.end(opened.session_id)
    assert_gap_free(read_trace(Path(opened.dir) / "trace.jsonl"))
    assert (Path(opened.dir) / "trace.torn").read_bytes().startswith(b'{"ts":"2026-01-01')


def _configured(daemon_factory: Any, toml: str) -> tuple[Daemon, Path]:
    """A started daemon reading ``toml`` from its config file, and that file (to change and reload)."""
    d: Daemon = daemon_factory(start=False)
    cfg = d.base / "config" / "traced" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(toml)
    d.start()
    return d, cfg


def test_sighup_reloads_config(daemon_factory: Any) -> None:
    d, cfg = _configured(daemon_factory, 'fsync = "never"\n')
    with d.client() as c:
        assert c.status()["fsync"] == "never"
        cfg.write_text('fsync = "always"\n')
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: c.status()["fsync"] == "always", what="the new config in force")


def test_a_reload_keeps_the_command_lines_settings(daemon_factory: Any) -> None:
    """``traced serve --fsync never --no-redaction`` then SIGHUP: the file's settings change, the command
    line's stay (before: a reload read the file alone, and the flags were lost)."""
    d: Daemon = daemon_factory(start=False)
    cfg = d.base / "config" / "traced" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('fsync = "always"\nidle_timeout = 100\n')
    d.start("--fsync", "never", "--no-redaction")
    with d.client() as c:
        assert c.status()["fsync"] == "never"
        cfg.write_text('fsync = "always"\nidle_timeout = 200\nredaction = true\n')
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "reloaded" for e in d.logs()), what="the reload")
        assert c.status()["fsync"] == "never"
    assert {(e["fsync"], e["redaction"]) for e in d.logs() if e.get("event") == "reloaded"} == {("never", False)}


def test_a_reload_changes_the_logs_checkpoint_size(daemon_factory: Any) -> None:
    """``wal_checkpoint_bytes`` applies from the round after a reload (before: read at start only, so
    a smaller log asked for by SIGHUP never checkpointed until a restart)."""
    d, cfg = _configured(daemon_factory, 'fsync = "always"\n')
    with d.client() as c:
        o = c.open("walreload", owner_pid=-1)
        for k in range(3):  # the first is the trace's own fdatasync, the rest are logged
            c.emit(o.session_id, "note", {"message": f"n{k}"})
        assert (c.status()["wal_syncs"], c.status()["wal_checkpoints"]) == (2, 0)
        cfg.write_text('fsync = "always"\nwal_checkpoint_bytes = 1\n')
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "reloaded" for e in d.logs()), what="the reload")
        c.emit(o.session_id, "note", {"message": "fills the 1-byte log"})
        assert c.status()["wal_syncs"] == 3
        wait_for(lambda: c.status()["wal_checkpoints"] == 1, what="the checkpoint beside the rounds")


def test_other_writers_sessions_get_the_idle_timeout(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory("--idle-timeout", "1")  # READY comes after the watches are armed
    day = time.strftime("%Y-%m-%d", time.gmtime())
    sdir = d.root / day / "devboy-skill" / "01JD0DEVB0YWR1TER000000000"
    sdir.mkdir(parents=True)
    meta = {"session_id": sdir.name, "skill": "devboy-skill", "devboy_version": "0.9.0",
            "started_at": f"{day}T00:00:00Z", "tool_calls": 0, "errors": 0, "skill_version": 2}
    (sdir / "meta.json").write_text(json.dumps(meta))
    with open(sdir / "trace.jsonl", "w") as f:  # devboy's own writer: no step
        f.write(json.dumps({"ts": f"{day}T00:00:00Z", "skill": "devboy-skill", "session_id": sdir.name,
                            "phase": "start", "payload": {}}) + "\n")
        f.write(json.dumps({"ts": f"{day}T00:00:01Z", "skill": "devboy-skill", "session_id": sdir.name,
                            "phase": "tool_call", "payload": {"tool": "x", "args": {}}}) + "\n")
    final = wait_for(lambda: _ended_meta(sdir), what="the other writer's session finalized")
    assert (final["outcome"], final["reason"]) == ("aborted", "idle_timeout")
    assert final["skill_version"] == 2 and final["devboy_version"] == "0.9.0", "fields set at start survive"
    lines = (sdir / "trace.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["phase"] == "end"


def test_config_file_change_reloads(daemon_factory: Any) -> None:
    d, cfg = _configured(daemon_factory, "idle_timeout = 100\n")
    with d.client() as c:
        cfg.write_text('idle_timeout = 100\nfsync = "always"\n')
        wait_for(lambda: c.status()["fsync"] == "always", what="the new config in force")


def test_kill9_during_unacked_batches_loses_and_duplicates_nothing(daemon: Daemon) -> None:
    code = textwrap.dedent(
        """
        import json, sys, time
        from traced import Client
        with Client(sys.argv[1], spool_after=60.0) as c, c.session(skill="batches") as s:
            print(json.dumps({"dir": s.dir}), flush=True)
            for i in range(6000):
                s.note(f"b{i}", ack=False)
                if i % 500 == 499:
                    c.sync()
                if i == 2200:  # 200 events sent or batched, none confirmed: now the daemon dies
                    c._flush()
                    print("go", flush=True)
                    sys.stdin.readline()  # the test says when it is dead
        print(json.dumps({"reconnects": c.reconnects}), flush=True)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(daemon.socket)], env=daemon.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    sdir = json.loads(p.stdout.readline())["dir"]
    assert p.stdout.readline().strip() == "go"
    daemon.kill9()
    p.stdin.write("dead\n")
    p.stdin.flush()
    daemon.start()
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0
    assert json.loads(out)["reconnects"] >= 1
    records = read_trace(Path(sdir) / "trace.jsonl")
    assert_gap_free(records)
    assert [r["payload"]["message"] for r in records if r["phase"] == "note"] == [f"b{i}" for i in range(6000)]


def test_a_reload_turning_redaction_on_reaches_connections_already_open(daemon_factory: Any,
                                                                        monkeypatch: Any) -> None:
    """The redactor was fixed per connection at its hello (and the client's secret values dropped
    while redaction was off): a reload turning it on left open connections writing secrets."""
    env_secret = "s3cretEnvValue-" + "q" * 12
    monkeypatch.setenv("RELOAD_TEST_API_TOKEN", env_secret)  # the in-process client sends it in hello
    d, cfg = _configured(daemon_factory, "redaction = false\n")
    ghp = "ghp_" + "aB3d" * 9
    with d.client() as c, c.session(skill="reload") as s:
        s.note(f"before {ghp}")
        cfg.write_text("redaction = true\n")
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "reloaded" and e.get("redaction") is True for e in d.logs()),
                 what="the reload")
        s.event("tool_call", {"tool": "Bash",
                              "args": {"api_key": "abcdefgh12345", "cmd": f"echo {ghp} {env_secret}"}})
        sdir = s.dir
    lines = read_trace(Path(sdir) / "trace.jsonl")
    assert lines[1]["payload"] == {"message": f"before {ghp}"}, "written while redaction was off"
    assert lines[2]["payload"] == {"tool": "Bash", "args": {
        "api_key": "<redacted:secret-key>", "cmd": "echo <redacted:github-token> <redacted:env-value>"}}


def test_a_reload_to_batch_syncs_for_a_subscriber(daemon_factory: Any) -> None:
    """The batch policy's task ran only when the daemon started under it: reloaded to batch, nothing
    was synced again, and a subscriber never heard of a record until its session closed."""
    d, cfg = _configured(daemon_factory, 'fsync = "never"\nfsync_interval = 3600\n')
    with d.client() as c:
        cfg.write_text('fsync = "batch"\nfsync_interval = 3600\n')
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(lambda: c.status()["fsync"] == "batch", what="the new config in force")
        watcher = d.client()
        stream = watcher.subscribe(skill="tick")
        with d.client() as w:
            opened = w.open("tick", owner_pid=-1)
            w.attach(opened.session_id).note("heard at once")
            got = [item for _, item in zip(range(2), stream, strict=False)]
        watcher.close()
    assert [r["phase"] for r in got if isinstance(r, dict)] == ["start", "note"]
