"""The Protocol transport (issue #19): replies in request order when the fast path and the lane mix,
a client that never reads its replies is paused (bounded) and resumed, the timeouts still fire, a
record stream's hang-up unsubscribes it. Real sockets, a real daemon or the real Transport in process."""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from tests.conftest import Daemon, assert_gap_free, await_for, read_trace, wait_for
from traced.daemon.config import Config
from traced.daemon.groupcommit import Done
from traced.daemon.handler import Connection, Handler
from traced.daemon.registry import Live, Registry
from traced.daemon.transport import Transport
from traced.redaction.redactor import Redactor
from traced.wire import protocol
from traced.wire.framing import Framer
from traced.wire.protocol import encode


def _frames(*reqs: Any) -> bytes:
    out = bytearray()
    for req in reqs:
        encode(req, out)
    return bytes(out)


# ---------------------------------------------------------------- in process: the fast path and the lane

class GatedHandler(Handler):
    """``process_now`` answers leading ``sync`` requests at once; ``process`` waits for ``gate`` first."""

    def __init__(self, config: Config, registry: Registry) -> None:
        super().__init__(config, registry, Redactor([]))
        self.gate = anyio.Event()
        self.batches: list[list[int]] = []

    def process_now(self, conn: Connection, frames: list[bytes], out: bytearray, touched: set[Live],
                    *, start: int = 0, stop: int | None = None) -> int:
        n = start
        for body in frames[start:stop]:
            req = protocol.decode_request(body)
            if not isinstance(req, protocol.Sync):
                break
            encode(protocol.Synced(id=req.id), out)
            n += 1
        return n

    async def process(self, conn: Connection, frames: list[bytes], out: bytearray, touched: set[Live]) -> None:
        self.batches.append([protocol.decode_request(b).id for b in frames])
        await self.gate.wait()
        await super().process(conn, frames, out, touched)


class TouchingHandler(GatedHandler):
    """Its fast path's syncs count as having written to every open session (as a fast emit would)."""

    def process_now(self, conn: Connection, frames: list[bytes], out: bytearray, touched: set[Live],
                    *, start: int = 0, stop: int | None = None) -> int:
        n = super().process_now(conn, frames, out, touched, start=start, stop=stop)
        if n > start:
            touched.update(self.registry.sessions.values())
        return n


class GatedRegistry(Registry):
    """Durability (``when_durable``, which ``durable`` calls) waits for ``gate`` first."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.gate = anyio.Event()
        self.gate.set()
        self.asked = 0
        self.held: set[asyncio.Task[None]] = set()

    def when_durable(self, lives: Iterable[Live], done: Done) -> bool:
        self.asked += 1
        lives = list(lives)
        if self.gate.is_set():
            return super().when_durable(lives, done)
        gate, ask = self.gate, super().when_durable

        async def later() -> None:
            await gate.wait()
            if ask(lives, done):
                done(None)

        task = asyncio.get_running_loop().create_task(later())
        self.held.add(task)
        task.add_done_callback(self.held.discard)
        return False


@dataclass
class Rig:
    transport: Transport
    handler: GatedHandler
    path: Path


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
                        pytest.param(("asyncio", {}), id="asyncio")])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@asynccontextmanager
async def _serve(short_tmp: Path, always: bool) -> AsyncIterator[Rig]:
    """The real Transport on a real socket; under ``fsync = "always"`` durability is gated too."""
    config = Config(root=str(short_tmp / "root"), fsync="always" if always else "never")
    registry = GatedRegistry(config)
    handler = TouchingHandler(config, registry) if always else GatedHandler(config, registry)
    transport = Transport(config, handler)
    path = short_tmp / "t.sock"
    listener = await anyio.create_unix_listener(path)
    try:
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(transport.accept, listener, scope)
            yield Rig(transport, handler, path)
            scope.cancel()
    finally:
        await listener.aclose()
        registry.shutdown()


@pytest.fixture
async def rig(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("XDG_STATE_HOME", str(short_tmp / "state"))
    async with _serve(short_tmp, always=False) as r:
        yield r


@pytest.fixture
async def always_rig(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("XDG_STATE_HOME", str(short_tmp / "state"))
    async with _serve(short_tmp, always=True) as r:
        yield r


async def _read(stream: Any, framer: Framer, n: int) -> list[Any]:
    got: list[Any] = []
    with anyio.fail_after(10):
        while len(got) < n:
            got += [protocol.decode_reply(b) for b in framer.feed(await stream.receive())]
    return got


@pytest.mark.anyio
async def test_replies_keep_request_order_when_the_fast_path_and_the_lane_mix(rig: Rig) -> None:
    framer = Framer()
    async with await anyio.connect_unix(rig.path) as stream:
        await stream.send(_frames(protocol.Sync(id=1), protocol.Sync(id=2), protocol.StatusRequest(id=3),
                                  protocol.Sync(id=4), protocol.Sync(id=5)))
        first = await _read(stream, framer, 2)  # answered at once, while the lane waits at the gate
        assert [(type(r), r.id) for r in first] == [(protocol.Synced, 1), (protocol.Synced, 2)]
        await await_for(lambda: rig.handler.batches, what="the lane to take the status")
        await stream.send(_frames(protocol.Sync(id=6), protocol.Sync(id=7)))  # behind the lane, not the fast path
        await await_for(lambda: any(c.queue for c in rig.transport.conns), what="the syncs to queue behind it")
        rig.handler.gate.set()
        rest = await _read(stream, framer, 5)
        assert [(type(r), r.id) for r in rest] == [(protocol.Status, 3), (protocol.Synced, 4), (protocol.Synced, 5),
                                                  (protocol.Synced, 6), (protocol.Synced, 7)]
        assert rig.handler.batches == [[3, 4, 5], [6, 7]]
        await stream.send(_frames(protocol.Sync(id=8)))  # the lane is idle again: the fast path answers
        assert [r.id for r in await _read(stream, framer, 1)] == [8]
        assert rig.handler.batches == [[3, 4, 5], [6, 7]]
        assert rig.transport.connections == 1
    await await_for(lambda: rig.transport.connections == 0, what="the hang-up to be noticed")


@pytest.mark.anyio
async def test_a_half_closed_client_gets_the_replies_of_what_it_sent(rig: Rig) -> None:
    framer = Framer()
    async with await anyio.connect_unix(rig.path) as stream:
        await stream.send(_frames(protocol.Sync(id=1), protocol.StatusRequest(id=2), protocol.Sync(id=3)))
        await await_for(lambda: rig.handler.batches, what="the lane to take the status")
        await stream.send_eof()  # EOF while the lane works: its replies still go out, then the daemon closes
        rig.handler.gate.set()
        replies = await _read(stream, framer, 3)
        assert [r.id for r in replies] == [1, 2, 3]
        with anyio.fail_after(10):
            with pytest.raises(anyio.EndOfStream):
                await stream.receive()


@pytest.mark.anyio
async def test_under_fsync_always_fast_replies_wait_for_durability(always_rig: Rig) -> None:
    rig = always_rig
    registry = rig.handler.registry
    assert isinstance(registry, GatedRegistry)
    rig.handler.gate.set()
    framer = Framer()
    async with await anyio.connect_unix(rig.path) as stream:
        await stream.send(_frames(protocol.Open(id=1, skill="durable", owner_pid=-1)))
        assert [type(r) for r in await _read(stream, framer, 1)] == [protocol.Opened]
        registry.gate = anyio.Event()
        asked = registry.asked
        await stream.send(_frames(protocol.Sync(id=2), protocol.Sync(id=3)))  # the fast path answers them...
        await await_for(lambda: registry.asked > asked, what="the lane to wait for durability")
        raw = stream.extra(SocketAttribute.raw_socket)
        assert select.select([raw], [], [], 0)[0] == [], "...but sends nothing before the records are durable"
        registry.gate.set()
        assert [r.id for r in await _read(stream, framer, 2)] == [2, 3]


# ---------------------------------------------------------------- the real daemon

def test_a_client_that_never_reads_is_paused_then_resumed_and_others_go_on(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"TRACED_PARTIAL_FRAME_TIMEOUT": "0.5"})
    n = 10_000
    with d.client() as c:
        sid = c.session("deaf", owner_pid=-1).session_id
        # statuses first: replies far bigger than the requests fill its socket's buffer at once
        reqs: list[Any] = [protocol.Hello(id=1, client="deaf")]
        reqs += [protocol.StatusRequest(id=i) for i in range(2, 502)]
        reqs += [protocol.Emit(id=len(reqs) + 1 + i, session_id=sid, phase="note", payload={"i": i, "pad": "x" * 200})
                 for i in range(n)]
        data = memoryview(_frames(*reqs))
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deaf.connect(str(d.socket))
        deaf.setblocking(False)
        sent = _send_what_fits(deaf, data)
        # a stalled half frame on another connection is cut off: the sweeper ran past 0.5 s meanwhile
        staller = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staller.settimeout(10)
        staller.connect(str(d.socket))
        staller.sendall((100).to_bytes(4, "big") + b"\x81")
        stall = _replies(staller, Framer(), 1)
        assert [(type(r), r.code) for r in stall] == [(protocol.Error, "bad_frame")]
        assert stall[0].message == "partial frame stalled for 0.5s"
        # another client is served all along, every event acknowledged in order
        other = c.session("other", owner_pid=-1)
        assert [other.note(f"n{i}") for i in range(200)] == list(range(2, 202))
        while sent < len(data) and select.select([], [deaf], [], 0.5)[1]:  # until the daemon takes no more
            sent += _send_what_fits(deaf, data[sent:])
        assert sent < len(data) // 2, "the daemon stopped reading a client that does not read its replies"
        status = c.status()
        assert status["connections"] == 2
        deaf_steps = next(s["steps"] for s in status["sessions"] if s["session_id"] == sid)
        assert deaf_steps < n // 2
        # it reads at last: every reply arrives, in request order, and the rest of its requests are served
        replies = _drain(deaf, data, sent, len(reqs))
        staller.close()
        assert [r.id for r in replies] == list(range(1, len(reqs) + 1))
        acks = [r for r in replies if isinstance(r, protocol.Ack)]
        assert [a.step for a in acks] == list(range(2, n + 2))
        assert sum(isinstance(r, protocol.Status) for r in replies) == 500
        deaf.close()
        c.end(sid, "success", "heard at last")
    records = read_trace(next(d.root.glob(f"*/deaf/{sid}/trace.jsonl")))
    assert_gap_free(records)
    assert [r["payload"]["i"] for r in records if r["phase"] == "note"] == list(range(n))


def _send_what_fits(sock: socket.socket, data: memoryview) -> int:
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except BlockingIOError:
        pass
    return sent


def _replies(sock: socket.socket, framer: Framer, n: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += [protocol.decode_reply(b) for b in framer.feed(chunk)]
    return got


def _drain(sock: socket.socket, data: memoryview, sent: int, n: int) -> list[Any]:
    """Read every reply while sending the rest of ``data``."""
    framer = Framer()
    got: list[Any] = []
    while len(got) < n:
        want_write = [sock] if sent < len(data) else []
        readable, writable, _ = select.select([sock], want_write, [], 30)
        assert readable or writable, f"stuck after {len(got)} replies"
        if writable:
            sent += _send_what_fits(sock, data[sent:])
        if readable:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(got)} replies"
            got += [protocol.decode_reply(b) for b in framer.feed(chunk)]
    return got


def test_pipelined_requests_of_every_kind_are_answered_in_order(daemon: Daemon) -> None:
    with daemon.client() as c:
        first = c.session("order", owner_pid=-1).session_id
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(daemon.socket))
    batches: list[list[Any]] = [[protocol.Hello(id=1, client="order", client_id="01JDORDERCLIENT", pid=os.getpid())]]
    rid = 1
    second = "01JDORDERSECONDSESSION0000"

    def req(make: Any, **kw: Any) -> Any:
        nonlocal rid
        rid += 1
        return make(id=rid, **kw)

    for round_ in range(3):  # emits around an open, a close, a status and a sync; in several writes
        batch = [req(protocol.Emit, session_id=first, phase="note", payload={"r": round_, "i": i}) for i in range(30)]
        batch.append(req(protocol.Open, skill="order", session_id=second, owner_pid=-1))
        batch += [req(protocol.Emit, session_id=second, phase="note", payload={"r": round_}),
                  req(protocol.Emit, session_id=first, phase="note", payload={"r": round_, "i": 30}),
                  req(protocol.Close, session_id=second, outcome="success"),
                  req(protocol.StatusRequest), req(protocol.Sync),
                  req(protocol.Emit, session_id=first, phase="note", payload={"r": round_, "i": 31})]
        batches.append(batch)
    for batch in batches:
        sock.sendall(_frames(*batch))
    replies = _replies(sock, Framer(), rid)
    sock.close()
    assert [r.id for r in replies] == list(range(1, rid + 1))
    kinds = [type(r).__name__ for r in replies[1:35]]
    assert kinds == ["Ack"] * 30 + ["Opened", "Ack", "Ack", "Closed"]
    to_first = {q.id for batch in batches for q in batch if isinstance(q, protocol.Emit) and q.session_id == first}
    assert [r.step for r in replies if r.id in to_first] == list(range(2, 2 + 3 * 32))  # its start is step 1
    assert [r.resumed for r in replies if isinstance(r, protocol.Opened)] == [False, True, True]


def test_a_subscriber_that_hangs_up_is_unsubscribed_and_its_input_ignored(daemon: Daemon) -> None:
    sub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sub.settimeout(30)
    sub.connect(str(daemon.socket))
    sub.sendall(_frames(protocol.Subscribe(id=7, skill="heard")))
    framer = Framer()
    assert [type(r) for r in _replies(sub, framer, 1)] == [protocol.Subscribed]
    sub.sendall(_frames(protocol.StatusRequest(id=8)) + b"\xff" * 100)  # ignored: it is a record stream now
    with daemon.client() as c:
        wait_for(lambda: c.status()["subscribers"] == 1, what="the subscriber")
        with c.session("heard", owner_pid=-1) as s:
            s.note("one")
        lines = _replies(sub, framer, 3)
        assert [(type(r), r.id) for r in lines] == [(protocol.RecordMsg, 7)] * 3
        sub.close()
        wait_for(lambda: c.status()["subscribers"] == 0, what="the hang-up to unsubscribe it")
        assert c.status()["connections"] == 1
