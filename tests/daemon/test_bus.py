"""The event bus: live records for subscribers; a slow one gets a gap and slows nobody."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import Daemon, assert_gap_free, read_trace, wait_for
from traced import Client
from traced.wire import protocol
from traced.wire.framing import Framer
from traced.wire.protocol import encode


def test_subscribe_streams_redacted_records_in_order(daemon: Daemon) -> None:
    watcher = daemon.client()
    stream = watcher.subscribe(skill="live")
    with daemon.client() as c, c.session(skill="live") as s:
        s.tool_call("Bash", {"cmd": "echo", "API_TOKEN": "very-secret-value-123"})
        for i in range(20):
            s.note(f"n{i}", ack=False)
    with daemon.client() as c, c.session(skill="other") as s:
        s.note("not for this subscriber")
    got: list[dict[str, Any]] = []
    for item in stream:
        assert isinstance(item, dict)
        got.append(item)
        if item["phase"] == "end":
            break
    watcher.close()
    assert [r["step"] for r in got] == list(range(1, 24))
    assert got[1]["payload"]["args"]["API_TOKEN"] == "<redacted:secret-key>"
    assert {r["skill"] for r in got} == {"live"}
    disk = read_trace(next(daemon.root.glob(f"*/live/{got[0]['session_id']}/trace.jsonl")))
    assert got == disk


def test_slow_subscriber_gets_a_gap_and_never_blocks_ingest(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"TRACED_SUBSCRIBER_BUFFER": "100"})
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(str(d.socket))
    slow.sendall(bytes(encode(protocol.Subscribe(id=1))))
    n = 20000
    with d.client() as c, c.session(skill="flood") as s:
        started = time.perf_counter()
        for i in range(n):
            s.note("x" * 200 + str(i), ack=False)
        c.sync()
        elapsed = time.perf_counter() - started
    records = read_trace(Path(s.dir) / "trace.jsonl")
    assert len(records) == n + 2
    assert_gap_free(records)
    # now read what the slow subscriber was sent: records, and a gap where it fell behind
    slow.settimeout(5)
    framer = Framer()
    seen = dropped = 0
    with d.client() as c:
        while seen + dropped < n + 2:
            data = slow.recv(1 << 20)
            assert data
            for body in framer.feed(data):
                msg = protocol.decode_reply(body)
                if isinstance(msg, protocol.RecordMsg):
                    seen += 1
                elif isinstance(msg, protocol.Gap):
                    dropped += msg.dropped
        assert c.status()["subscriber_drops"] == dropped
    assert dropped > 0 and seen + dropped == n + 2
    print(f"\n{n} events with a stalled subscriber: {n / elapsed:,.0f} ev/s; it saw {seen}, gap {dropped}")
    slow.close()


def test_tail_follow_prints_live_records(daemon: Daemon) -> None:
    tail = subprocess.Popen([sys.executable, "-m", "traced", "tail", "-f", "--json", "--skill", "tailed"],
                            env=daemon.env, stdout=subprocess.PIPE, text=True)
    try:
        _wait_subscribed(daemon)
        with daemon.client() as c, c.session(skill="tailed") as s:
            sent = time.perf_counter()
            s.note("hello tail")
            assert tail.stdout is not None
            first = json.loads(tail.stdout.readline())
            latency = time.perf_counter() - sent
            second = json.loads(tail.stdout.readline())
        assert first["phase"] == "start" and second["payload"] == {"message": "hello tail"}
        print(f"\ntail -f latency: {latency * 1000:.1f} ms")
    finally:
        tail.kill()
        tail.wait()


def test_tail_follow_falls_back_to_files(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("filetail", owner_pid=-1)
    daemon.stop()
    tail = subprocess.Popen([sys.executable, "-m", "traced", "tail", "-f", "--json",
                             "--root", str(daemon.root)], env=daemon.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert tail.stderr is not None and "following the files" in tail.stderr.readline()
        # tail says so before it notes the files' sizes and arms its watches: wait until
        # watchfiles has a watch on each directory of the root (it notes the sizes first)
        dirs = 1 + sum(1 for p in daemon.root.rglob("*") if p.is_dir())
        wait_for(lambda: _inotify_watches(tail.pid) >= dirs, what=f"tail -f to watch the {dirs} dirs of the root")
        with open(Path(opened.dir) / "trace.jsonl", "a") as f:
            f.write(json.dumps({"ts": "2026-11-22T00:00:00.000000Z", "skill": "filetail",
                                "session_id": opened.session_id, "step": 2, "phase": "note",
                                "payload": {"message": "written by another writer"}}) + "\n")
        assert tail.stdout is not None
        rec = json.loads(tail.stdout.readline())
        assert rec["payload"]["message"] == "written by another writer"
    finally:
        tail.kill()
        tail.wait()


def _wait_subscribed(daemon: Daemon) -> None:
    with Client(daemon.socket) as c:
        wait_for(lambda: c.status().get("subscribers"), what="tail -f to subscribe")


def _inotify_watches(pid: int) -> int:
    """How many inotify watches process ``pid`` holds (Linux: one ``inotify wd:`` line each in fdinfo)."""
    n = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            n += fdinfo.read_text().count("inotify wd:")
        except OSError:  # an fd closed meanwhile
            pass
    return n
