"""The core path end to end: real daemon, real socket, real files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced import Client, RequestError
from traced.format import layout
from traced.wire import protocol
from traced.wire.framing import Framer
from traced.wire.protocol import encode

WRITER = textwrap.dedent(
    """
    import sys
    from traced import Client
    sock, sid, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with Client(sock) as c:
        s = c.attach(sid)
        for i in range(n):
            s.note(f"{tag}-{i}", ack=(i % 2 == 0))
        c.sync()
    """
)


def test_twenty_processes_one_session_gap_free(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("stress")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(daemon.socket), opened.session_id, "500", f"w{k}"],
                         env=daemon.env)
        for k in range(20)
    ]
    assert [p.wait(120) for p in procs] == [0] * 20
    with daemon.client() as c:
        meta = c.end(opened.session_id, "success")
    records = read_trace(Path(opened.dir) / "trace.jsonl")
    assert len(records) == 10002
    assert_gap_free(records)
    assert records[0]["phase"] == "start" and records[-1]["phase"] == "end"
    # every writer's events are there exactly once and in that writer's order
    for k in range(20):
        mine = [r["payload"]["message"] for r in records if r["phase"] == "note"
                and r["payload"]["message"].startswith(f"w{k}-")]
        assert mine == [f"w{k}-{i}" for i in range(500)]
    assert meta["steps"] == 10002
    assert meta["phases"] == {"start": 1, "note": 10000, "end": 1}
    assert json.loads((Path(opened.dir) / "meta.json").read_text()) == meta


def test_fifty_sessions_at_once(daemon: Daemon) -> None:
    code = textwrap.dedent(
        """
        import sys
        from traced import Client
        with Client(sys.argv[1]) as c, c.session(skill=f"s{sys.argv[2]}") as s:
            for i in range(40):
                s.tool_call("Bash", {"cmd": f"echo {i}"}, call_id=str(i))
                s.tool_result("Bash", ok=i % 7 != 0, call_id=str(i))
            print(s.dir)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(daemon.socket), str(k)],
                              env=daemon.env, stdout=subprocess.PIPE, text=True)
             for k in range(50)]
    dirs = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        dirs.append(out.strip())
    assert len(set(dirs)) == 50
    for d in dirs:
        records = read_trace(Path(d) / "trace.jsonl")
        assert len(records) == 82
        assert_gap_free(records)
        meta = json.loads((Path(d) / "meta.json").read_text())
        assert meta["outcome"] == "success"
        assert meta["tool_calls"] == 40
        assert meta["errors"] == 6  # i in 0,7,14,21,28,35
        assert meta["steps"] == 82 and meta["ended_at"]


def test_layout_and_line_format(daemon: Daemon) -> None:
    with daemon.client() as c, c.session(skill="review", input={"pr": 42}) as s:
        s.llm_call("claude-sonnet", provider="anthropic", input_tokens=100, output_tokens=20,
                   cache_read_tokens=50, cost_usd=0.002)
        s.llm_call("llama3", provider="ollama", input_tokens=10, output_tokens=5)
        sdir = Path(s.dir)
    date, skill, sid = sdir.parts[-3:]
    assert sdir.parent.parent.parent == daemon.root
    assert skill == "review" and len(sid) == 26
    line = (sdir / "trace.jsonl").read_text().splitlines()[1]
    rec = json.loads(line)
    assert list(rec)[:6] == ["ts", "skill", "session_id", "step", "phase", "payload"]
    assert rec["ts"].endswith("Z") and len(rec["ts"]) == 27 and rec["ts"][:10] == date
    meta = json.loads((sdir / "meta.json").read_text())
    assert meta["devboy_version"].startswith("traced ")
    assert meta["input_summary"] == '{"pr":42}'
    assert meta["usage"]["input_tokens"] == 110 and meta["usage"]["cache_read_tokens"] == 50
    assert meta["usage"]["cost_usd"] == pytest.approx(0.002)
    assert meta["usage"]["unknown_cost_calls"] == 1
    assert oct(os.stat(sdir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(sdir / "trace.jsonl").st_mode & 0o777) == "0o600"
    assert oct(os.stat(daemon.socket).st_mode & 0o777) == "0o600"
    assert oct(os.stat(daemon.socket.parent).st_mode & 0o777) == "0o700"


def test_context_manager_records_failure(daemon: Daemon) -> None:
    with daemon.client() as c:
        with pytest.raises(ValueError), c.session(skill="boom") as s:
            s.note("about to fail")
            raise ValueError("bad thing")
        meta = json.loads((Path(s.dir) / "meta.json").read_text())
    assert meta["outcome"] == "failure"
    assert "ValueError: bad thing" in meta["summary"]


def test_shell_flow(daemon: Daemon) -> None:
    started = daemon.cli("start", "--skill", "shell-skill", "--meta", "skill_version=1.2",
                         "--input", '{"task": "x"}', check=True)
    info = json.loads(started.stdout)
    assert set(info) >= {"session_id", "session_dir", "trace_path"}
    sid = info["session_id"]
    assert daemon.cli("event", sid, "--phase", "tool_call", "--payload",
                      '{"tool": "Bash", "args": {"cmd": "ls"}}', check=True).stdout.strip() == "2"
    assert daemon.cli("event", sid, "--phase", "note", "--payload", "-",
                      input='{"message": "from stdin"}', check=True).stdout.strip() == "3"
    assert daemon.cli("event", sid, "--phase", "note", "-",
                      input='{"message": "bare dash"}', check=True).stdout.strip() == "4"
    pf = daemon.base / "payload.json"
    pf.write_text('{"tool": "Bash", "ok": false, "error": "exit 1"}')
    assert daemon.cli("event", sid, "--phase", "tool_result", "--payload-file", str(pf),
                      check=True).stdout.strip() == "5"
    ended = daemon.cli("end", sid, "--outcome", "failure", "--summary", "it broke", "--json", check=True)
    meta = json.loads(ended.stdout)
    assert meta["outcome"] == "failure" and meta["errors"] == 1 and meta["tool_calls"] == 1
    assert "skill_version" not in meta and meta["skill_version_text"] == "1.2"  # devboy wants a u32 there
    assert meta["labels"] == {"skill_version": "1.2"}
    records = read_trace(info["trace_path"])
    assert [r["phase"] for r in records] == ["start", "tool_call", "note", "note", "tool_result", "end"]
    assert records[0]["payload"]["input"] == {"task": "x"}
    assert records[-1]["payload"] == {"outcome": "failure", "summary": "it broke"}


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["event", "01JD000000000000000000000X", "--phase", "note", "--payload", "{}"], None, 1, "unknown_session"),
        (["event", "../x", "--phase", "note", "--payload", "{}"], None, 1, "invalid_name"),
        (["event", "a/b", "--phase", "note", "--payload", "{}"], None, 1, "invalid_name"),
        (["event", "x" * 129, "--phase", "note", "--payload", "{}"], None, 1, "invalid_name"),
        (["event", "{sid}", "--phase", "note", "--payload", "{not json"], None, 2, "invalid JSON"),
        (["event", "{sid}", "--phase", "note", "--payload", "[1, 2]"], None, 2, "must be a JSON object"),
        (["event", "{sid}", "--phase", "Bad-Phase", "--payload", "{}"], None, 1, "invalid_event"),
        (["event", "{sid}", "--phase", "end", "--payload", "{}"], None, 1, "invalid_event"),
        (["event", "{sid}", "--phase", "note", "--payload", "-"], "nope", 2, "invalid JSON"),
        (["start", "--skill", "../evil"], None, 1, "invalid_name"),
        (["start", "--skill", ""], None, 1, "invalid_name"),
        (["start", "--skill", ".hidden"], None, 1, "invalid_name"),
        (["start", "--skill", "ok", "--target", "/nonexistent/dir"], None, 1, "invalid_name"),
    ],
)
def test_bad_input_gets_a_clear_error(daemon: Daemon, args: list[str], stdin: str | None,
                                      code: int, message: str) -> None:
    with daemon.client() as c:
        opened = c.open("victim")
        c.emit(opened.session_id, "note", {"message": "before"})
    args = [a.replace("{sid}", opened.session_id) for a in args]
    res = daemon.cli(*args, input=stdin)
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert res.stderr.count("\n") == 1, "one-line error"
    # the daemon and the other session carry on
    with daemon.client() as c:
        assert c.emit(opened.session_id, "note", {"message": "after"}) == 3
        c.end(opened.session_id)
    assert_gap_free(read_trace(Path(opened.dir) / "trace.jsonl"))


def test_event_after_close_and_unknown_session(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("closing")
        c.end(opened.session_id)
        with pytest.raises(RequestError) as e:
            c.emit(opened.session_id, "note", {"message": "late"})
        assert e.value.code == "session_closed"
        with pytest.raises(RequestError) as e:
            c.emit("01JD0000000000000000000000", "note", {})
        assert e.value.code == "unknown_session"
        again = c.end(opened.session_id, "failure")  # a resent close gets the recorded ending, no 2nd end
        assert (again["outcome"], again["steps"]) == ("success", 2)
    assert len(read_trace(Path(opened.dir) / "trace.jsonl")) == 2


def test_a_close_resent_after_a_restart_gets_the_recorded_ending(daemon: Daemon) -> None:
    """A daemon killed after it ended a session (end written, meta.json written, open marker gone)
    but before its reply reached the client: the client resends the close to the next daemon, which
    never heard of the session. It finds it on disk by its id and answers with the recorded ending,
    writing nothing (before: ``unknown_session``, raised from a clean ``with client.session()``)."""
    with daemon.client() as c:
        opened = c.open("resent", owner_pid=-1)
        c.emit(opened.session_id, "note", {"message": "x"})
        c.end(opened.session_id, "success", summary="done")
    daemon.kill9()
    daemon.start()
    trace = Path(opened.dir) / "trace.jsonl"
    before = trace.read_bytes()
    with daemon.client() as c:
        again = c.end(opened.session_id, "failure")
        assert (again["outcome"], again["summary"], again["steps"]) == ("success", "done", 3)
        with pytest.raises(RequestError) as e:
            c.end("01JD0000000000000000000000")
        assert e.value.code == "unknown_session", "an id found nowhere is still unknown"
        with pytest.raises(RequestError) as e:
            c.emit(opened.session_id, "note", {"message": "late"})
        assert e.value.code == "session_closed"
    assert trace.read_bytes() == before


def test_a_close_ends_a_session_on_disk_that_no_daemon_holds(daemon: Daemon) -> None:
    """A session whose trace never ended and whose open marker was lost (a power cut, a wiped state dir):
    recovery cannot know it, so the next daemon does not hold it. Its owner's close adopts it and ends it
    with the owner's outcome (before: ``unknown_session``, and the trace never got an ``end``)."""
    with daemon.client() as c:
        o = c.open("orphan", owner_pid=-1)
        c.emit(o.session_id, "note", {"message": "before"})
    daemon.kill9()
    (daemon.state / "traced" / "open" / f"{o.session_id}.json").unlink()
    daemon.start()
    with daemon.client() as c:
        assert c.status()["open_sessions"] == 0
        ended = c.end(o.session_id, "failure", summary="crashed run")
        assert (ended["outcome"], ended["summary"], ended["steps"]) == ("failure", "crashed run", 3)
        again = c.end(o.session_id, "success")
        assert (again["outcome"], again["steps"]) == ("failure", 3), "ended once"
    records = read_trace(Path(o.dir) / "trace.jsonl")
    assert [(r["step"], r["phase"]) for r in records] == [(1, "start"), (2, "note"), (3, "end")]
    assert records[-1]["payload"] == {"outcome": "failure", "summary": "crashed run"}
    meta = json.loads((Path(o.dir) / "meta.json").read_text())
    assert (meta["outcome"], meta["steps"], bool(meta["ended_at"])) == ("failure", 3, True)
    assert not (daemon.state / "traced" / "open" / f"{o.session_id}.json").exists()


def test_closes_of_many_unknown_ids_walk_the_root_once(daemon: Daemon) -> None:
    """Each id a daemon does not hold is looked for on disk, through an index of the root walked at
    most every ``ID_INDEX_TTL`` seconds and one of its recent dates walked at most every
    ``RECENT_INDEX_TTL``: 40 closes of 40 different unknown ids cost one walk of the root, and a
    resent close among them still finds its session; so does a close of a session made since the walks
    (before: ``unknown_session`` for up to 10 s)."""
    with daemon.client() as c:
        o = c.open("indexed", owner_pid=-1)
        c.end(o.session_id, "success")
    daemon.kill9()
    daemon.start()
    started = time.monotonic()
    with daemon.client() as c:
        for k in range(40):
            with pytest.raises(RequestError) as e:
                c.end(f"unknown-{k}")
            assert e.value.code == "unknown_session"
        assert c.end(o.session_id, "failure")["outcome"] == "success"
        # made by another writer since the walks (a copy of the ended one, its end cut off)
        other = Path(o.dir).parent / "made-after-the-walk"
        shutil.copytree(o.dir, other)
        lines = (other / "trace.jsonl").read_bytes().splitlines(keepends=True)
        (other / "trace.jsonl").write_bytes(b"".join(lines[:-1]))
        (other / "meta.json").unlink()

        def close() -> dict[str, Any] | None:
            try:
                return c.end("made-after-the-walk", "failure")
            except RequestError as e:
                assert e.code == "unknown_session"
                return None

        assert wait_for(close, what="the new session found")["outcome"] == "failure"
    elapsed = time.monotonic() - started
    built = [(e["root"], e.get("since"), e["sessions"])
             for e in daemon.logs() if e.get("event") == "session_index_built"]
    assert [b for b in built if b[1] is None] == [(str(daemon.root), None, 1)]
    recent = [b for b in built if b[1] is not None]
    assert 1 <= len(recent) <= 2 + elapsed / 1.0  # RECENT_INDEX_TTL
    assert recent[-1][2] == 2
    assert [r["phase"] for r in read_trace(other / "trace.jsonl")] == ["start", "end"]


def test_a_close_by_id_takes_the_session_in_flight_not_an_older_ended_one(daemon: Daemon) -> None:
    """Another writer's ended session of an id yesterday, and its new one today, made after the daemon
    walked its indexes: a close by that id ends today's (before: answered with yesterday's recorded
    ending, and from then on every close of the id was, the new session never ended)."""
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def other_writer(day: str, ended: bool) -> Path:
        sdir = daemon.root / day / "agent" / "resumed-id"
        sdir.mkdir(parents=True)
        records = [{"ts": f"{day}T00:00:00Z", "skill": "agent", "session_id": sdir.name, "phase": "start",
                    "payload": {}}]
        if ended:
            records.append({"ts": f"{day}T00:00:01Z", "skill": "agent", "session_id": sdir.name, "phase": "end",
                            "payload": {"outcome": "success", "summary": "yesterday"}})
        (sdir / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        meta = {"session_id": sdir.name, "skill": "agent", "started_at": f"{day}T00:00:00Z",
                "ended_at": f"{day}T00:00:01Z" if ended else None, "outcome": "success" if ended else None}
        (sdir / "meta.json").write_text(json.dumps(meta))
        return sdir

    old = other_writer(yesterday, ended=True)
    with daemon.client() as c:
        with pytest.raises(RequestError):
            c.end("warms-the-indexes")
        new = other_writer(today, ended=False)
        ended = c.end("resumed-id", "failure", summary="today")
        assert (ended["outcome"], ended["summary"]) == ("failure", "today")
        again = c.end("resumed-id", "success")
        assert (again["outcome"], again["summary"]) == ("failure", "today"), "ended once"
    assert json.loads((new / "meta.json").read_text())["ended_at"]
    assert [r["phase"] for r in read_trace(new / "trace.jsonl")] == ["start", "end"]
    assert [r["payload"].get("summary") for r in read_trace(old / "trace.jsonl")] == [None, "yesterday"]


def test_a_close_adopts_an_unheld_session_only_under_the_daemons_own_root(daemon: Daemon, short_tmp: Path) -> None:
    """A repo's or a client's own dir may be another daemon's (only the daemon's root is locked): a close
    for a never-ended session there that this daemon does not hold stays ``unknown_session``, and the
    trace gets no ``end`` from it."""
    target = short_tmp / "elsewhere"
    target.mkdir()
    with daemon.client() as c:
        o = c.open("theirs", owner_pid=-1, target=str(target))
        c.emit(o.session_id, "note", {"message": "x"})
    daemon.kill9()
    (daemon.state / "traced" / "open" / f"{o.session_id}.json").unlink()
    daemon.start()
    with daemon.client() as c, pytest.raises(RequestError) as e:
        c.end(o.session_id, "success")
    assert e.value.code == "unknown_session"
    assert [r["phase"] for r in read_trace(Path(o.dir) / "trace.jsonl")] == ["start", "note"]


def test_a_session_adopted_with_an_empty_trace_gets_a_start_first(daemon: Daemon) -> None:
    """A power cut can leave a trace empty (created, its start never synced): a session adopted from it
    writes ``start {resumed: true}`` as step 1 before anything else, so step 1 is always a start."""
    with daemon.client() as c:
        o = c.open("emptied", owner_pid=-1)
    daemon.kill9()
    (Path(o.dir) / "trace.jsonl").write_bytes(b"")
    (daemon.state / "traced" / "open" / f"{o.session_id}.json").unlink()
    daemon.start()
    with daemon.client() as c:
        assert c.end(o.session_id, "failure")["steps"] == 2
    records = read_trace(Path(o.dir) / "trace.jsonl")
    assert [(r["step"], r["phase"], r["payload"]) for r in records] == [
        (1, "start", {"resumed": True}), (2, "end", {"outcome": "failure"})]


def test_a_trace_that_is_a_symlink_is_refused_by_name_not_an_internal_error(daemon: Daemon, short_tmp: Path) -> None:
    """A trace.jsonl replaced by a symlink (to a real trace elsewhere): an open of that id is ``forbidden``
    with the path named, a close of it is ``unknown_session`` (and not searched again each time)."""
    with daemon.client() as c:
        o = c.open("linked", session_id="linked-1", owner_pid=-1)
        c.end("linked-1", "success")
    daemon.kill9()
    trace = Path(o.dir) / "trace.jsonl"
    outside = short_tmp / "outside.jsonl"
    shutil.move(trace, outside)
    trace.symlink_to(outside)
    daemon.start()
    with daemon.client() as c:
        with pytest.raises(RequestError) as e:
            c.end("linked-1", "success")
        assert e.value.code == "unknown_session"
        with pytest.raises(RequestError) as e:
            c.open("linked", session_id="linked-1", owner_pid=-1)
        assert (e.value.code, e.value.message) == ("forbidden", f"refusing {trace}: not a regular file")
    assert [e["event"] for e in daemon.logs() if e.get("event") == "recall_refused"] == ["recall_refused"]


def test_a_session_deleted_while_open_and_opened_again_is_a_new_trace(daemon: Daemon) -> None:
    """Its directory removed while the daemon held it open: an open of the same id makes a new trace
    there (before: the daemon went on writing to the deleted file, and acked events were lost)."""
    with daemon.client() as c:
        o = c.open("deleted", session_id="deleted-open-1", owner_pid=-1)
        c.emit(o.session_id, "note", {"message": "gone with the dir"})
        shutil.rmtree(o.dir)
        again = c.open("deleted", session_id="deleted-open-1", owner_pid=-1)
        assert (again.dir, again.resumed, again.step) == (o.dir, False, 1)
        assert c.emit(o.session_id, "note", {"message": "kept"}) == 2
        assert c.end(o.session_id, "success")["steps"] == 3
    assert [r["phase"] for r in read_trace(Path(o.dir) / "trace.jsonl")] == ["start", "note", "end"]


@pytest.mark.parametrize("how", ["mkdir", "trace_by_hand"])
def test_a_session_dir_deleted_and_made_again_while_open_is_noticed_at_the_next_open(daemon: Daemon,
                                                                                     how: str) -> None:
    """The held session's file is compared by identity (device, inode), not by name: a dir deleted and
    made again (empty, or with a trace written by hand) is not the trace the daemon was writing, so the
    next open makes a new trace there and what follows lands in it."""
    with daemon.client() as c:
        o = c.open("remade", session_id=f"remade-{how}", owner_pid=-1)
        c.emit(o.session_id, "note", {"message": "gone with the dir"})
        shutil.rmtree(o.dir)
        os.makedirs(o.dir, mode=0o700)
        if how == "trace_by_hand":
            (Path(o.dir) / "trace.jsonl").write_bytes(b"")
        again = c.open("remade", session_id=o.session_id, owner_pid=-1)
        assert (again.resumed, again.step) == ((True, 0) if how == "trace_by_hand" else (False, 1))
        assert c.emit(o.session_id, "note", {"message": "kept"}) == 2
        assert c.end(o.session_id, "success")["steps"] == 3
    records = read_trace(Path(o.dir) / "trace.jsonl")
    assert [(r["step"], r["phase"], r["payload"].get("message")) for r in records] == [
        (1, "start", None), (2, "note", "kept"), (3, "end", None)]


@pytest.mark.parametrize("synced_before", [False, True])
def test_a_durable_emit_to_a_session_deleted_under_it_ends_in_unknown_session(daemon_factory: Any,
                                                                              synced_before: bool) -> None:
    """Under ``fsync = "always"`` the ack waits for the round, which finds the file gone, whether it would
    fdatasync the trace (its first round) or log its lines (later ones): the daemon lets the session go
    and closes the connection (no ack may claim durability); the client's resend then gets
    ``unknown_session`` instead of the same failure again and again."""
    d: Daemon = daemon_factory("--fsync", "always")
    with d.client() as c:
        o = c.open("vanish", session_id="vanish-1", owner_pid=-1)
        if synced_before:
            assert c.emit(o.session_id, "note", {"message": "synced by the trace's own fdatasync"}) == 2
            assert c.emit(o.session_id, "note", {"message": "logged"}) == 3
        shutil.rmtree(o.dir)
        with pytest.raises(RequestError) as e:
            c.emit(o.session_id, "note", {"message": "into a deleted file"})
        assert e.value.code == "unknown_session"
        again = c.open("vanish", session_id="vanish-1", owner_pid=-1)
        assert (again.resumed, again.step) == (False, 1)
    assert [e["event"] for e in d.logs() if e.get("event") in ("session_dir_gone", "durable_ack_failed")] == [
        "session_dir_gone", "durable_ack_failed"]


def test_under_never_a_session_deleted_under_its_writer_is_let_go_at_the_next_tick(daemon_factory: Any) -> None:
    """No sync round looks at a trace under ``fsync = "never"``: the tick looks for the traces written
    since it last did (one stat each) and lets a deleted one's session go, so its writer hears
    ``unknown_session`` instead of being acked for lines in a deleted file; a session left alone
    goes on (before: every later emit was acked and lost, its end and meta.json too)."""
    d: Daemon = daemon_factory("--fsync", "never", env={"TRACED_FSYNC_INTERVAL": "0.05"})
    with d.client() as c:
        gone = c.open("neverdel", session_id="never-gone-1", owner_pid=-1)
        kept = c.open("neverdel", session_id="never-kept-1", owner_pid=-1)
        assert c.emit(gone.session_id, "note", {"message": "then deleted"}) == 2
        assert c.emit(kept.session_id, "note", {"message": "kept"}) == 2
        shutil.rmtree(gone.dir)
        c.emit(gone.session_id, "note", {"message": "written since the last look"})  # acked: not yet seen
        wait_for(lambda: any(e.get("event") == "session_dir_gone" for e in d.logs()), what="the tick's look")
        with pytest.raises(RequestError) as e:
            c.emit(gone.session_id, "note", {"message": "refused"})
        assert e.value.code == "unknown_session"
        again = c.open("neverdel", session_id=gone.session_id, owner_pid=-1)
        assert (again.resumed, again.step) == (False, 1)
        assert c.emit(kept.session_id, "note", {"message": "still open"}) == 3
        assert c.end(kept.session_id, "success")["steps"] == 4
    assert [(e["event"], e["session_id"]) for e in d.logs() if e.get("event") == "session_dir_gone"] == [
        ("session_dir_gone", "never-gone-1")]
    assert [r["step"] for r in read_trace(Path(kept.dir) / "trace.jsonl")] == [1, 2, 3, 4]


def test_a_sync_fsync_that_finds_a_trace_deleted_is_an_io_error_not_an_internal_one(daemon_factory: Any) -> None:
    """Under ``batch``, ``sync {fsync}`` waits for a round; a trace deleted under its session fails it with
    ``io_error`` naming the cause (before: ``internal error`` and a traceback logged as a bug), and the
    session is let go."""
    d: Daemon = daemon_factory("--fsync", "batch", env={"TRACED_FSYNC_INTERVAL": "3600"})
    with d.client() as c:
        o = c.open("syncgone", session_id="sync-gone-1", owner_pid=-1)
        c.emit(o.session_id, "note", {"message": "x"})
        c.sync(fsync=True)  # the trace's own fdatasync: from now on its lines are logged
        c.emit(o.session_id, "note", {"message": "y"})
        shutil.rmtree(o.dir)
        with pytest.raises(RequestError) as e:
            c.sync(fsync=True)
        assert (e.value.code, e.value.message) == ("io_error", "fsync failed: the trace was deleted or replaced")
        with pytest.raises(RequestError) as e:
            c.emit(o.session_id, "note", {"message": "z"})
        assert e.value.code == "unknown_session"
    assert [e for e in d.logs() if e.get("event") == "request_failed"] == []


@pytest.mark.parametrize("how", ["trace_deleted", "dir_made_again", "trace_replaced"])
def test_a_trace_replaced_while_its_fd_was_closed_is_never_written_into(daemon_factory: Any, how: str) -> None:
    """With one fd cached, a held session's fd is closed when another session writes. Its trace deleted
    (or its dir made again, or another file written at its path, maybe on the freed inode number) in the
    meantime: the next write reopens by name, finds no file or another one (device, inode and size), and
    fails with ``io_error`` instead of creating a trace without a start or appending to a stranger's;
    the session is let go, so the next emit gets ``unknown_session``."""
    d: Daemon = daemon_factory(env={"TRACED_FD_CACHE": "1"})
    with d.client() as c:
        e = c.open("evicted", session_id=f"evicted-{how}", owner_pid=-1)
        assert c.emit(e.session_id, "note", {"message": "before"}) == 2
        trace = Path(e.dir) / "trace.jsonl"
        other = c.open("evictor", owner_pid=-1)  # its start record takes the one cached fd
        if how == "dir_made_again":
            shutil.rmtree(e.dir)
            os.makedirs(e.dir, mode=0o700)
        else:
            trace.unlink()
        if how == "trace_replaced":
            trace.write_bytes(b'{"ts":"2026-01-01T00:00:00.000000Z","skill":"x","session_id":"y","step":1,'
                              b'"phase":"start","payload":{}}\n')  # on ext4, often on the inode just freed
        with pytest.raises(RequestError) as err:
            c.emit(e.session_id, "note", {"message": "after"})
        assert (err.value.code, err.value.message) == ("io_error", "write failed: " + (
            "the trace was deleted or replaced" if how == "trace_replaced" else "No such file or directory"))
        with pytest.raises(RequestError) as err:
            c.emit(e.session_id, "note", {"message": "after"})
        assert err.value.code == "unknown_session"
        assert c.emit(other.session_id, "note", {"message": "others go on"}) == 2
    if how == "trace_replaced":
        assert [r["session_id"] for r in read_trace(trace)] == ["y"], "the stranger's trace is untouched"
    else:
        assert not trace.exists(), "no trace without a start"


def test_an_ended_session_whose_trace_is_deleted_or_replaced_is_let_go_too(daemon_factory: Any) -> None:
    """An ended session kept for late records is let go like an open one: deleted, a late emit's resend
    gets ``unknown_session`` (not a closed connection forever); replaced by a copy (a temp file renamed
    over it, as ``sed -i`` does), one late emit fails and the next ``open {reopen: false}`` loads the copy."""
    d: Daemon = daemon_factory("--fsync", "always")
    with d.client() as c:
        gone = c.open("endedgone", session_id="ended-gone-1", owner_pid=-1)
        c.end(gone.session_id, "success")
        assert c.emit(gone.session_id, "note", {"message": "late"}, late=True) == 3
        copied = c.open("endedcopy", session_id="ended-copy-1", owner_pid=-1)
        c.end(copied.session_id, "success")
        shutil.rmtree(gone.dir)
        with pytest.raises(RequestError) as e:
            c.emit(gone.session_id, "note", {"message": "late"}, late=True)
        assert e.value.code == "unknown_session"
        trace = Path(copied.dir) / "trace.jsonl"
        (Path(copied.dir) / "copy.tmp").write_bytes(trace.read_bytes())
        os.replace(Path(copied.dir) / "copy.tmp", trace)
        with pytest.raises(RequestError) as e:
            c.emit(copied.session_id, "note", {"message": "late"}, late=True)
        assert e.value.code == "io_error"
        assert c.open("endedcopy", session_id=copied.session_id, owner_pid=-1, reopen=False).ended
        assert c.emit(copied.session_id, "note", {"message": "late"}, late=True) == 3
    assert [r["phase"] for r in read_trace(trace)] == ["start", "end", "note"]


def test_a_line_another_writer_appends_does_not_make_a_session_gone(daemon_factory: Any) -> None:
    """The file is the same (device, inode) and only longer: another writer appended (devboy's CLI, a
    second daemon on a shared repo root). A reopen of the evicted fd takes it, and the session goes on."""
    d: Daemon = daemon_factory(env={"TRACED_FD_CACHE": "1"})
    with d.client() as c:
        o = c.open("appended", session_id="appended-1", owner_pid=-1)
        trace = Path(o.dir) / "trace.jsonl"
        with trace.open("ab") as f:
            f.write(b'{"ts":"2026-01-01T00:00:00.000000Z","skill":"appended","session_id":"appended-1","step":2,'
                    b'"phase":"note","payload":{"message":"from another writer"}}\n')
        c.open("evictor2", owner_pid=-1)
        assert c.emit(o.session_id, "note", {"message": "ours"}) == 2
        assert c.open("appended", session_id=o.session_id, owner_pid=-1).resumed
    assert [r["payload"].get("message") for r in read_trace(trace)] == [None, "from another writer", "ours"]


def test_a_close_of_an_empty_trace_another_daemon_may_hold_writes_nothing(daemon: Daemon, short_tmp: Path) -> None:
    """Under a client's dir, a never-ended session this daemon does not hold is not adopted by a close;
    its empty trace stays empty (no start written before the refusal)."""
    target = short_tmp / "theirs"
    target.mkdir()
    with daemon.client() as c:
        o = c.open("theirs", owner_pid=-1, target=str(target))
    daemon.kill9()
    (Path(o.dir) / "trace.jsonl").write_bytes(b"")
    (daemon.state / "traced" / "open" / f"{o.session_id}.json").unlink()
    daemon.start()
    with daemon.client() as c, pytest.raises(RequestError) as e:
        c.end(o.session_id, "success")
    assert e.value.code == "unknown_session"
    assert (Path(o.dir) / "trace.jsonl").read_bytes() == b""


def test_a_late_event_into_an_ended_session_with_an_empty_trace_follows_a_start(daemon: Daemon) -> None:
    """meta.json says ended, the trace is empty (a power cut): a late event is step 2, after a
    ``start {resumed: true}`` as step 1."""
    with daemon.client() as c:
        o = c.open("latee", session_id="late-empty-1", owner_pid=-1)
        c.end(o.session_id, "success")
    daemon.kill9()
    (Path(o.dir) / "trace.jsonl").write_bytes(b"")
    daemon.start()
    with daemon.client() as c:
        opened = c.open("latee", session_id=o.session_id, owner_pid=-1, reopen=False)
        assert opened.ended
        assert c.emit(o.session_id, "note", {"message": "late"}, late=True) == 2
    records = read_trace(Path(o.dir) / "trace.jsonl")
    assert [(r["step"], r["phase"], r.get("late", False)) for r in records] == [(1, "start", False), (2, "note", True)]


def test_an_open_for_late_events_after_a_reopen_sees_the_open_session(daemon: Daemon) -> None:
    """``open {reopen: false}`` answers from the ended sessions it remembers; once a session is opened
    again, it is open: the answer says so, with its current step."""
    with daemon.client() as c:
        c.open("again", session_id="again-1", owner_pid=-1)
        c.end("again-1", "success")
        reopened = c.open("again", session_id="again-1", owner_pid=-1)
        c.emit("again-1", "note", {"message": "x"})
        late = c.open("again", session_id="again-1", owner_pid=-1, reopen=False)
        assert (late.ended, late.step) == (False, reopened.step + 1)


def test_a_resent_close_finds_its_session_under_any_skill_and_never_through_a_symlink(daemon: Daemon,
                                                                                     tmp_path: Path) -> None:
    """The close names no skill, so the search takes every skill dir of every date, newest first; a
    session dir that is a symlink (planted below the root, pointing at an ended session elsewhere) is
    never read: that close stays ``unknown_session``."""
    with daemon.client() as c:
        real = c.open("elsewhere", owner_pid=-1)
        c.end(real.session_id, "success")
        planted = c.open("zz-skill", session_id="planted-1", owner_pid=-1)
        c.end("planted-1", "success")
    daemon.kill9()
    root = str(Path(real.dir).parent.parent.parent)
    assert layout.sessions_by_id(root) == {real.session_id: real.dir, "planted-1": planted.dir}
    outside = tmp_path / "planted-1"
    shutil.move(planted.dir, outside)
    Path(planted.dir).symlink_to(outside)
    daemon.start()
    with daemon.client() as c:
        assert c.end(real.session_id, "failure")["outcome"] == "success"
        with pytest.raises(RequestError) as e:
            c.end("planted-1")
        assert e.value.code == "unknown_session"


def _raw(daemon: Daemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(daemon.socket))
    return s


def _replies(sock: socket.socket, n: int) -> list[Any]:
    framer = Framer()
    out: list[Any] = []
    while len(out) < n:
        data = sock.recv(65536)
        if not data:
            break
        out += [protocol.decode_reply(b) for b in framer.feed(data)]
    return out


def test_malformed_frames_do_not_hurt_others(daemon: Daemon) -> None:
    with daemon.client() as good:
        opened = good.open("steady")
        bad = _raw(daemon)
        body_garbage = b"\xc1\xff\x00garbage"
        body_unknown_op = msgspec.msgpack.encode({"op": "explode", "id": 7})
        body_wrong_type = msgspec.msgpack.encode({"op": "emit", "id": 8, "session_id": 5, "phase": "note"})
        frames = b"".join(len(b).to_bytes(4, "big") + b for b in (body_garbage, body_unknown_op, body_wrong_type))
        bad.sendall(frames + bytes(encode(protocol.StatusRequest(id=9))))
        replies = _replies(bad, 4)
        assert [type(r).__name__ for r in replies] == ["Error", "Error", "Error", "Status"]
        assert [r.code for r in replies[:3]] == ["bad_frame"] * 3
        assert [r.id for r in replies] == [0, 7, 8, 9]
        # oversized frame: too_large, that connection closed, nobody else affected
        bad.sendall((50 * 1024 * 1024).to_bytes(4, "big") + b"x" * 100)
        (err,) = _replies(bad, 1)
        assert err.code == "too_large"
        assert bad.recv(100) == b""
        bad.close()
        assert good.emit(opened.session_id, "note", {"message": "still here"}) == 2
        good.end(opened.session_id)
    assert daemon.alive()


FOREIGN_PEER = textwrap.dedent(
    """
    import os, socket, sys
    path, frames = sys.argv[1], bytes.fromhex(sys.argv[2])
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)  # after the interpreter started as root: nothing below reads the checkout
    got, send_error = b"", ""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(path)
        try:
            s.sendall(frames)
        except OSError as e:  # the daemon may hang up before it reads a byte
            send_error = type(e).__name__
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            got += data
    print(got.hex(), send_error)
    """
)


def test_foreign_uid_is_refused(daemon: Daemon) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid (65534)")
    loosened = {path: path.stat().st_mode & 0o777 for path in (daemon.base, daemon.socket.parent, daemon.socket)}
    os.chmod(daemon.base, 0o755)
    os.chmod(daemon.socket.parent, 0o777)  # loosen by hand: the uid check must still hold
    os.chmod(daemon.socket, 0o777)
    frames = b"".join(bytes(encode(m)) for m in (
        protocol.Hello(id=1, client="intruder"),
        protocol.Open(id=2, skill="intruder", owner_pid=-1),
        protocol.Emit(id=3, session_id="01JD0000000000000000000000", phase="note", payload={"message": "x"}),
        protocol.StatusRequest(id=4),
    ))
    # The child needs the stdlib only and drops to uid 65534 itself, once started: -I keeps
    # PYTHONPATH, the cwd and user site out, so where the checkout lives (even below a
    # 0700 dir) does not matter. It sends requests framed here and prints every byte it got.
    try:
        res = subprocess.run([sys.executable, "-I", "-c", FOREIGN_PEER, str(daemon.socket), frames.hex()],
                             cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    finally:  # as they were: our own client insists on a private socket dir
        for path, mode in loosened.items():
            os.chmod(path, mode)
    assert res.returncode == 0, res.stderr
    got_hex, _, send_error = res.stdout.strip().partition(" ")
    assert send_error in ("", "BrokenPipeError", "ConnectionResetError"), res.stdout
    framer = Framer()
    replies = [protocol.decode_reply(b) for b in framer.feed(bytes.fromhex(got_hex))]
    assert framer.buffered == 0, "the reply ends on a frame boundary"
    assert len(replies) == 1, replies
    (refused,) = replies
    assert isinstance(refused, protocol.Error)
    assert (refused.id, refused.code) == (0, "forbidden")
    assert refused.message == f"uid 65534 may not connect to the daemon of uid {os.getuid()}"
    assert [e["peer_uid"] for e in daemon.logs() if e.get("event") == "peer_refused"] == [65534]
    # nothing was written: no session, no event, no directory under the root
    with daemon.client() as c:
        info = c.status()
    assert info["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert (info["sessions_opened"], info["events_written"], info["open_sessions"]) == (0, 0, 0)
    assert [p.name for p in daemon.root.rglob("*")] == [".traced-daemon.lock"]  # the daemon's own lock only


def test_repo_target_and_fallback(daemon: Daemon, short_tmp: Path) -> None:
    repo = short_tmp / "proj"
    (repo / ".git").mkdir(parents=True)
    (repo / "sub" / "deep").mkdir(parents=True)
    with daemon.client() as c:
        opened = c.open("r", target="repo", cwd=str(repo / "sub" / "deep"))
        assert opened.dir.startswith(str(repo / ".devboy" / "sessions") + "/")
        assert opened.root_fallback is None
        c.end(opened.session_id)
        lonely = short_tmp / "lonely"
        lonely.mkdir()
        fell = c.open("r", target="repo", cwd=str(lonely))
        assert fell.dir.startswith(str(daemon.root))
        assert fell.root_fallback and "no .git" in fell.root_fallback
        custom = short_tmp / "custom"
        custom.mkdir()
        mine = c.open("r", target=str(custom))
        assert mine.dir.startswith(str(custom) + "/")


def test_status_exit_codes(daemon: Daemon) -> None:
    res = daemon.cli("status", "--json", check=True)
    info = json.loads(res.stdout)
    assert info["running"] is True and info["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert info["socket"] == str(daemon.socket) and info["socket_source"] == "bound"
    text = daemon.cli("status", check=True).stdout
    assert "open sessions" in text and "events written" in text
    daemon.stop()
    res = daemon.cli("status")
    assert res.returncode == 3 and "not running" in res.stdout
    res = daemon.cli("status", "--json")
    assert res.returncode == 3 and json.loads(res.stdout)["running"] is False


def test_second_daemon_refuses_to_steal_the_socket(daemon: Daemon) -> None:
    res = subprocess.run([sys.executable, "-m", "traced", "serve"], env=daemon.env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "already" in res.stderr
    with daemon.client() as c:
        assert c.status()["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_client_without_daemon_is_unavailable(short_tmp: Path) -> None:
    from traced import DaemonUnavailable

    with pytest.raises(DaemonUnavailable, match="no traced daemon"):
        Client(short_tmp / "none.sock").connect()


@pytest.mark.anyio
async def test_async_client(daemon: Daemon) -> None:
    from traced import AsyncClient

    async with AsyncClient(daemon.socket) as c:
        async with c.session(skill="async-skill") as s:
            assert await s.tool_call("Read", {"path": "/etc/hosts"}) == 2
            assert await s.tool_result("Read", ok=True) == 3
            for i in range(100):
                assert await s.note(f"n{i}", ack=False) is None
            await c.sync()
            other = c.attach(s.id)
            assert await other.note("via attach") == 104
        records = read_trace(Path(s.dir) / "trace.jsonl")
    assert_gap_free(records)
    assert records[-1]["payload"] == {"outcome": "success"}
