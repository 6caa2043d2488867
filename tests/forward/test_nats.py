"""``traced serve --forward nats://…``: a real nats-server -js on 127.0.0.1, a real daemon.

Needs the ``nats-server`` binary (Debian package ``nats-server``) and ``nats-py``
(``traced[nats]``); each test skips with the reason when either is missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, assert_gap_free, await_for, read_trace, wait_for

NATS_SERVER = shutil.which("nats-server")
pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server not on PATH (Debian: apt-get install nats-server)")
nats = pytest.importorskip("nats", reason="nats-py not installed (pip install 'traced-daemon[nats]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """``nats-server -js`` with file storage on a fixed port, stoppable and restartable."""

    def __init__(self, base: Path) -> None:
        self.port = _free_port()
        self.store = base / "jetstream"
        self.log = base / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert NATS_SERVER is not None
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                                      "-sd", str(self.store)], stdout=logf, stderr=logf)
        logf.close()

        def accepting() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(accepting, what=lambda: f"nats-server to accept:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def broker(short_tmp: Path) -> Any:
    server = NatsServer(short_tmp)
    server.start()
    yield server
    server.stop()


def stream_messages(url: str, stream: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, str], bytes]]]:
    """The stream's config/state and every message in it: (subject, headers, data)."""

    async def main() -> tuple[dict[str, Any], list[tuple[str, dict[str, str], bytes]]]:
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            if info.state.messages:
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    msg = await js.get_msg(stream, seq)
                    out.append((msg.subject or "", dict(msg.headers or {}), msg.data or b""))
            meta = {"messages": info.state.messages, "duplicate_window": info.config.duplicate_window,
                    "subjects": info.config.subjects, "storage": str(info.config.storage)}
            return meta, out
        finally:
            await nc.close()

    return asyncio.run(main())


def stream_count(url: str, stream: str) -> int:
    async def main() -> int:
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            return int((await nc.jetstream().stream_info(stream)).state.messages)
        except Exception:
            return -1
        finally:
            await nc.close()

    try:
        return asyncio.run(main())
    except Exception:
        return -1


def _lines_on_disk(daemon: Daemon) -> dict[tuple[str, int], bytes]:
    out: dict[tuple[str, int], bytes] = {}
    for trace in daemon.root.glob("*/*/*/trace.jsonl"):
        records = read_trace(trace)
        assert_gap_free(records)
        for raw in trace.read_bytes().splitlines():
            rec = json.loads(raw)
            out[(rec["session_id"], rec["step"])] = raw
    return out


def _run_sessions(daemon: Daemon, n_sessions: int, n_events: int, pause: float, tag: str) -> list[threading.Thread]:
    def work(k: int) -> None:
        with daemon.client() as c, c.session(skill=f"load.{tag}") as s:
            for i in range(n_events):
                s.note(f"{tag}{k}-{i}")
                if pause:
                    time.sleep(pause)  # pacing: the load spans the outages (not a wait for anything)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(n_sessions)]
    for t in threads:
        t.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    """Wait for the writers: the disk must be final before it is compared with the stream (a
    snapshot taken while they still write misses what the stream then holds)."""
    wait_for(lambda: all(not t.is_alive() for t in threads), timeout=150, what="the writers to finish")


def _assert_exactly_once(daemon: Daemon, url: str, stream: str, subject: str = "traced") -> dict[str, Any]:
    on_disk = _lines_on_disk(daemon)
    wait_for(lambda: stream_count(url, stream) >= len(on_disk), timeout=60,
             what=f"{len(on_disk)} messages in {stream}")
    # and the forwarder is done: every record acknowledged (cursor at the end), nothing being
    # sent, so nothing more (a duplicate) can land; the stream is final
    wait_for(lambda: all(f["state"] == "idle" and f["lag_records"] == 0 for f in _forwarders(daemon)),
             what=lambda: f"the forwarder idle and caught up: {_forwarders(daemon)}")
    meta, msgs = stream_messages(url, stream)
    keys = []
    for subj, headers, data in msgs:
        rec = json.loads(data)
        key = (rec["session_id"], rec["step"])
        keys.append(key)
        assert headers.get("Nats-Msg-Id") == f"{rec['session_id']}:{rec['step']}"
        assert subj == f"{subject}.{rec['skill'].replace('.', '%2E')}.{rec['session_id']}"
        assert data == on_disk.get(key), "the message is the line exactly as on disk"
    dups = [k for k, n in Counter(keys).items() if n > 1]
    assert not dups, f"duplicates in the stream: {dups[:5]}"
    assert set(keys) == set(on_disk)
    assert meta["messages"] == len(on_disk)
    return meta


def _forwarders(daemon: Daemon) -> list[dict[str, Any]]:
    res = daemon.cli("status", "--json", check=True)
    fws: list[dict[str, Any]] = json.loads(res.stdout)["forwarders"]
    return fws


@pytest.mark.timeout(240)
def test_broker_down_and_back_under_load(daemon_factory: Any, broker: NatsServer) -> None:
    d: Daemon = daemon_factory("--forward", broker.url)
    threads = _run_sessions(d, n_sessions=4, n_events=250, pause=0.004, tag="a")
    wait_for(lambda: _forwarders(d)[0]["sent"] > 0, what="the forwarder sending")
    broker.stop()  # records keep landing on disk; the forwarder backs off
    fw = wait_for(lambda: (f := _forwarders(d)[0])["last_error"] and f, what="the forwarder to see the outage",
                  every=0.2)
    assert fw["lag_records"] > 0, fw
    time.sleep(0.5)  # the scenario: the outage goes on while the load does (not a wait for anything)
    broker.start()  # same port, same store
    _join(threads)
    meta = _assert_exactly_once(d, broker.url, "TRACED")
    assert meta["subjects"] == ["traced.>"]
    assert "file" in meta["storage"]
    fw = _forwarders(d)[0]  # caught up: _assert_exactly_once waited for it
    assert fw["lag_records"] == 0 and fw["retries"] >= 1 and fw["sent"] == meta["messages"], fw
    assert fw["url"] == f"{broker.url}?stream=TRACED&subject=traced"
    assert (fw["lag_seconds"], fw["last_error"]) == (0.0, None)


@pytest.mark.timeout(300)
def test_daemon_restarts_resume_from_cursor_even_beyond_dedup(daemon_factory: Any, broker: NatsServer) -> None:
    url = f"{broker.url}?stream=TINY&subject=tiny.t&duplicate_window=0.1"
    d: Daemon = daemon_factory("--forward", url)
    threads = _run_sessions(d, n_sessions=3, n_events=150, pause=0.004, tag="r")
    wait_for(lambda: _forwarders(d)[0]["sent"] > 0, what="the forwarder sending")
    assert d.stop(signal.SIGTERM) == 0  # graceful: in-flight PubAcks are awaited, cursors written
    time.sleep(0.3)  # the scenario: down for longer than the duplicate window, so a re-send would be stored twice
    d.start()
    wait_for(lambda: _forwarders(d)[0]["sent"] > 0 or all(not t.is_alive() for t in threads),
             what="the restarted forwarder sending")
    assert d.stop(signal.SIGTERM) == 0
    d.start()
    _join(threads)
    meta = _assert_exactly_once(d, broker.url, "TINY", subject="tiny.t")
    assert meta["duplicate_window"] == pytest.approx(0.1)

    # the broker is down while a session runs and while the daemon restarts: the next
    # daemon finds the session by its file (it has no cursor yet) and sends it then.
    broker.stop()
    with d.client() as c, c.session(skill="offline") as s:
        for i in range(20):
            s.note(f"o{i}")
    # the forwarder knows of the whole session (start, 20 notes, end) and failed to send it
    wait_for(lambda: (f := _forwarders(d)[0])["lag_records"] == 22 and f["last_error"],
             what=lambda: f"the forwarder to fail on the offline session: {_forwarders(d)}")
    assert d.stop(signal.SIGTERM) == 0
    broker.start()
    d.start()
    _assert_exactly_once(d, broker.url, "TINY", subject="tiny.t")
    cursors = list((d.state / "traced" / "forward").glob("*/cursors.log"))
    assert len(cursors) == 1


@pytest.mark.timeout(240)
def test_kill9_of_the_daemon_dedups_by_msg_id(daemon_factory: Any, broker: NatsServer) -> None:
    d: Daemon = daemon_factory("--forward", broker.url)
    threads = _run_sessions(d, n_sessions=3, n_events=200, pause=0.003, tag="k")
    wait_for(lambda: _forwarders(d)[0]["sent"] > 0, what="the forwarder sending")
    d.kill9()  # cursor writes are write(2)s: at most the in-flight batch is sent again
    time.sleep(0.2)  # the scenario: the daemon stays dead a moment while the sessions retry
    d.start()
    _join(threads)
    _assert_exactly_once(d, broker.url, "TRACED")


def test_existing_stream_is_used_as_is_and_bad_urls_are_refused(daemon_factory: Any, broker: NatsServer) -> None:
    async def create() -> None:
        from nats.js.api import StorageType, StreamConfig

        nc = await nats.connect(broker.url)
        await nc.jetstream().add_stream(StreamConfig(name="MINE", subjects=["mine.>"], storage=StorageType.MEMORY,
                                                     duplicate_window=30))
        await nc.close()

    asyncio.run(create())
    d: Daemon = daemon_factory("--forward", f"{broker.url}?stream=MINE&subject=mine")
    with d.client() as c, c.session(skill="x") as s:
        s.note("one")
    meta = _assert_exactly_once(d, broker.url, "MINE", subject="mine")
    assert meta["duplicate_window"] == pytest.approx(30) and "memory" in meta["storage"]
    d.stop()
    bad = Daemon(d.base, ["--forward", "nats://127.0.0.1:1?bogus=1"], None)
    bad.start(wait=False)
    assert bad.proc is not None and bad.proc.wait(15) != 0
    assert "unknown parameter 'bogus'" in bad.log.read_text()


# --- the cursor store on its own ------------------------------------------------


def test_cursor_log_replay_torn_line_and_compaction(tmp_path: Path) -> None:
    from traced.forward.cursor import LOG, Cursor, CursorStore

    sdir = tmp_path / "root" / "2026-01-01" / "s" / "A"
    sdir.mkdir(parents=True)
    (sdir / "trace.jsonl").write_text("{}\n")
    store = CursorStore(tmp_path / "fw", "nats://x")
    store.load()
    for step in range(1, 2001):
        store.stage(Cursor(str(sdir), "s", "A", step, step * 100, step == 2000))
        store.stage(Cursor(str(tmp_path / "gone"), "s", "B", step, step * 10))
        store.write_staged()
    store.sync()
    with open(tmp_path / "fw" / LOG, "ab") as f:
        f.write(b'["torn')  # a crash in the middle of an append
    store.close()

    again = CursorStore(tmp_path / "fw", "nats://x")
    again.load()  # replays, skips the torn line, compacts (dropping B: its trace is gone)
    cur = again.get(str(sdir))
    assert cur is not None and (cur.step, cur.offset, cur.ended) == (2000, 200000, True)
    assert again.get(str(tmp_path / "gone")) is None
    assert len((tmp_path / "fw" / LOG).read_bytes().splitlines()) == 1
    again.stage(Cursor(str(sdir), "s", "A", 2001, 200100))
    again.close()
    third = CursorStore(tmp_path / "fw", "nats://x")
    third.load()
    cur = third.get(str(sdir))
    assert cur is not None and cur.step == 2001
    assert third.first_run == again.first_run > 0
    third.close()


def test_forward_urls() -> None:
    from traced.errors import ForwardURLError
    from traced.forward.urls import parse

    d = parse("nats://user:secret@127.0.0.1:4222?stream=S&subject=a.b")
    assert d.kind == "nats" and d.display == "nats://127.0.0.1:4222?stream=S&subject=a.b"
    assert "secret" in d.url and "secret" not in d.display and "secret" not in d.identity
    o = parse("https://tok@collector:4318?header=Authorization:Bearer%20${TOKEN}&x=1",
              environ={"TOKEN": "t0k"})
    assert o.kind == "otlp" and o.url == "https://tok@collector:4318/v1/traces?x=1"
    assert o.headers == {"Authorization": "Bearer t0k"}
    assert "t0k" not in o.display and "Authorization:***" in o.display
    assert parse("https://collector:4318/v1/traces?header=A:b").key == parse("https://collector:4318/v1/traces").key
    for bad in ("ftp://x", "nats://h:1?stream=a.b", "http://h?header=nocolon", "nats://", "nats://h?duplicate_window=0"):
        with pytest.raises(ForwardURLError):
            parse(bad)


# --- the engine on its own (shared by both sinks): a fake sink, thousands of sessions -------


class FakeSink:
    """Records what it is sent; can refuse everything, or ack only a prefix."""

    def __init__(self, max_records: int = 1000) -> None:
        self.max_records = max_records
        self.max_bytes = 4 << 20
        self.sent: list[tuple[str, int]] = []
        self.batches = 0
        self.fail = False
        self.ack_prefix: int | None = None

    async def send(self, batch: Any) -> Any:
        from traced.forward.engine import SendResult

        self.batches += 1
        if self.fail:
            return SendResult([False] * len(batch), "down", retry_after=0.01)
        n = len(batch) if self.ack_prefix is None else min(self.ack_prefix, len(batch))
        for index, line in batch.lines[:n]:
            self.sent.append((batch.sessions[index].session_id, line.step))
        acked = [True] * n + [False] * (len(batch) - n)
        return SendResult(acked, None if n == len(batch) else "partial", retry_after=0.01 if n < len(batch) else None)

    async def salvage(self, grace: float) -> Any:
        return None

    async def aclose(self) -> None:
        pass


def _write_sessions(root: Path, n: int, lines: int) -> list[tuple[str, str]]:
    out = []
    for k in range(n):
        sid = f"S{k:05d}"
        sdir = root / "2026-01-01" / "sk" / sid
        sdir.mkdir(parents=True)
        with open(sdir / "trace.jsonl", "w") as f:
            for step in range(1, lines + 1):
                f.write(json.dumps({"ts": "2026-01-01T00:00:00.000000Z", "skill": "sk", "session_id": sid,
                                    "step": step, "phase": "note", "payload": {"i": step}}) + "\n")
        out.append((str(sdir), sid))
    return out


def _forwarder(state: Path, root: Path, sink: FakeSink) -> Any:
    from traced.forward.cursor import CursorStore
    from traced.forward.engine import Forwarder
    from traced.forward.urls import parse

    dest = parse("nats://127.0.0.1:1")
    store = CursorStore(state / dest.key, dest.display)
    store.load()
    return Forwarder(dest, sink, store, lambda: [str(root)])


async def _drain(fw: Any, until: Any, timeout: float = 60.0) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(fw.run)
        await await_for(until, timeout, what=lambda: f"the forwarder to get there: {fw.status()}")
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_engine_many_sessions_resume_and_catch_up(tmp_path: Path) -> None:
    from traced.forward.cursor import LOG

    root, state = tmp_path / "root", tmp_path / "state"
    sessions = _write_sessions(root, 3000, 4)
    sink = FakeSink()
    fw = _forwarder(state, root, sink)
    for d, sid in sessions:
        fw.notify(d, "sk", sid, 4, True)
    assert fw.status()["lag_records"] == 12000 and fw.status()["sessions_behind"] == 3000
    await _drain(fw, lambda: fw.lag_records() == 0 and len(sink.sent) == 12000)
    assert len(set(sink.sent)) == 12000 and sink.batches == 12  # 1000 records a batch
    log_lines = (state / fw.dest.key / LOG).read_bytes().splitlines()
    assert len(log_lines) == 3000  # one cursor line per session per batch, 12 write(2)s in all

    # a restart: every notification again, nothing is sent twice
    sink2 = FakeSink()
    fw2 = _forwarder(state, root, sink2)
    for d, sid in sessions:
        fw2.notify(d, "sk", sid, 4, True)
    assert fw2.lag_records() == 0 and not fw2.ready
    # records written while no forwarder ran: found by the start-up scan alone
    for d, sid in sessions[:10]:
        with open(Path(d) / "trace.jsonl", "a") as f:
            f.write(json.dumps({"ts": "2026-01-01T00:00:01.000000Z", "skill": "sk", "session_id": sid,
                                "step": 5, "phase": "end", "payload": {"outcome": "success"}}) + "\n")
    await _drain(fw2, lambda: len(sink2.sent) == 10 and fw2.lag_records() == 0)
    assert sorted(sink2.sent) == [(sid, 5) for _, sid in sessions[:10]]


@pytest.mark.anyio
async def test_engine_outage_partial_acks_and_bounded_memory(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    sessions = _write_sessions(root, 5, 300)
    sink = FakeSink(max_records=100)
    sink.fail = True
    fw = _forwarder(state, root, sink)
    for d, sid in sessions:
        fw.notify(d, "sk", sid, 300, False)

    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(fw.run)
        await await_for(lambda: fw.retries >= 2, what="two failed sends")
        st = fw.status()
        assert st["last_error"] == "down" and st["lag_records"] == 1500 and sink.sent == []
        assert len(fw.behind) == 5, "memory holds one entry per session, not the records"
        sink.fail = False
        sink.ack_prefix = 30  # only the first 30 of each batch are acknowledged
        await await_for(lambda: fw.lag_records() == 0, what=lambda: f"the forwarder caught up: {fw.status()}")
        tg.cancel_scope.cancel()
    assert sorted(sink.sent) == sorted({(sid, step) for _, sid in sessions for step in range(1, 301)})
    assert len(sink.sent) == 1500, "an unacknowledged record is re-sent, an acknowledged one never"
    for d, _ in sessions:
        cur = fw.store.get(d)
        assert cur is not None and cur.step == 300 and cur.offset == (Path(d) / "trace.jsonl").stat().st_size
