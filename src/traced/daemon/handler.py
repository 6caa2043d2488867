"""The protocol handler: one ``match`` over the request union, for every source alike.

``Handler.process`` takes the frames of one read (a socket connection's, or a
spool segment's) and appends their replies to one buffer. ``emit`` is an
``emit_batch`` of one; consecutive events to the same session within a read
become one journal write (``_Run``). Every per-request failure becomes an
``error`` reply for that request: a bad request never costs the connection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final

import anyio
import anyio.lowlevel
import msgspec
import structlog

from traced import __version__
from traced.daemon.bus import Bus, Subscriber
from traced.daemon.config import Config
from traced.daemon.intake import Intake, event_time, home
from traced.daemon.procfs import peer_cwd
from traced.daemon.registry import Deferred, Live, Loaded, Registry
from traced.daemon.session import Pending
from traced.errors import RequestError
from traced.format import vocab
from traced.format.records import meta_dict
from traced.redaction.redactor import Redactor
from traced.wire import protocol
from traced.wire.protocol import encode

log = structlog.get_logger("traced.daemon.handler")

PID_MAX = 4194304
"""Linux's largest pid (``/proc/sys/kernel/pid_max`` can be at most 2**22)."""
FAIR_SHARE = 256
"""Requests ``process`` handles in a row before other tasks get their turn (a spool segment, an OTLP body)."""


@dataclass(slots=True)
class Peer:
    """Who is on the other end, from SO_PEERCRED."""

    pid: int
    uid: int
    gid: int


@dataclass(slots=True)
class Connection:
    """Per-connection state."""

    peer: Peer
    redactor: Redactor
    """The daemon's redactor and this client's secret env values (``Handler.redactor_of`` keeps it current)."""
    client_id: str = ""
    client: str = ""
    cwd: str = ""
    opened: set[str] = field(default_factory=set)
    """Sessions this connection opened; the per-connection limit counts those still open."""
    touched: set[Live] = field(default_factory=set)
    events: int = 0
    from_spool: bool = False
    """Replayed from a spool segment: an ended session is never reopened by it."""
    subscription: tuple[int, Subscriber] | None = None
    """(request id, subscriber) once the connection became a record stream."""
    secrets: list[str] = field(default_factory=list)
    """The values of the client's secret-named env vars (``hello``), kept for a reload's new redactor."""
    base: Redactor | None = None
    """The daemon redactor ``redactor`` was derived from (None: ``redactor`` is the one it was given)."""


class _Run(msgspec.Struct):
    """Consecutive emits to one session, written with one write(2). (A Struct: one or two per
    request on the fast path, and a dataclass's ``default_factory`` calls cost microseconds.)"""

    session_id: str = ""
    late: bool = False
    pending: list[Pending] = []
    replies: list[tuple[int, bool, int]] = []
    """(request id, wants ack, number of events) in request order."""
    raw: list[Pending] = []
    """Those of ``pending`` not yet redacted (the fast path redacts a run's events together)."""


class Handler:
    """Turns requests into session changes (through the registry) and replies."""

    def __init__(self, config: Config, registry: Registry, redactor: Redactor, bus: Bus | None = None) -> None:
        self.config = config
        self.registry = registry
        self.redactor = redactor
        self.intake = Intake(config)
        self.bus = bus or Bus()
        self.on_hello: Callable[[str], Awaitable[None]] | None = None
        """Runs before ``welcome`` (the spool ingests that client's segments first)."""
        self.on_finished: list[Callable[[Live], None]] = []
        """Called once a session's end is durable and its meta.json written (the forwarders)."""
        self.status: Callable[[], dict[str, Any]] = dict
        """The ``status`` reply's info (set by ``serve``)."""
        self.on_reload: list[Callable[[], None]] = []
        """Called after the config was reloaded (the retention pass looks at its setting again)."""
        self.held: Callable[[], dict[str, Any]] = dict
        """What a ``status`` with ``held`` adds: the sessions this daemon holds (set by ``serve``)."""
        self._loading: dict[str, anyio.Lock] = {}
        """Sessions being read from disk for an ``open`` (one reader per session at a time)."""
        self._recalling = anyio.Lock()
        """One search at a time for a closed session this daemon does not hold (``_recall``)."""
        self._not_found: dict[str, float] = {}
        """Session ids such a search did not find -> when (monotonic s): not searched again for a while."""

    def redactor_of(self, conn: Connection) -> Redactor:
        """The redactor for ``conn``'s data: the daemon's (after a reload, its new one, redaction turned
        on or off) with the client's own secret values added."""
        if conn.base is not self.redactor:
            if conn.base is None and conn.redactor is self.redactor:
                conn.base = self.redactor
            else:
                conn.redactor = self.redactor.with_values(conn.secrets) if conn.secrets else self.redactor
                conn.base = self.redactor
        return conn.redactor

    def process_now(self, conn: Connection, frames: list[bytes], out: bytearray, touched: set[Live],
                    *, start: int = 0, stop: int | None = None) -> int:
        """Handle ``frames[start:stop]`` on the caller's stack (no ``await``, no task) until one needs more.

        Returns the index of the first frame not handled (``stop`` when all were); their
        replies are in ``out``. The caller hands the rest to ``process``, in order.
        Handled here: emits whose payload the checked decoder took
        (``protocol.checked``) and that no limit or spill can concern (the frame is
        smaller than every limit), and ``sync`` without fsync. The events of all the runs are
        redacted together (``Redactor.redactions``); each run (consecutive events of one
        session) is written with one write(2).
        The fast path of the socket transport; everything else goes to ``process``.
        """
        stop = len(frames) if stop is None else stop
        cfg = self.config
        checked = protocol.checked(cfg.max_payload_depth)
        decode, emit_t, batch_t, decode_event = (checked.decoder.decode, checked.emit, checked.emit_batch,
                                                 checked.event.decode)
        small = min(cfg.max_string, cfg.spill_threshold, 2 * cfg.max_payload_keys)
        phase_ok = self.intake.phase_ok
        runs: list[_Run] = [_Run()]
        client_id = conn.client_id
        i = start
        while i < stop:
            body = frames[i]
            try:
                req = decode(body)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                break  # a bad frame, or a payload to walk: ``process`` says which
            t = type(req)
            if t is protocol.Sync:
                if req.fsync or cfg.fsync == "always":
                    break
                self._flush_runs(conn, runs, out, touched)
                encode(protocol.Synced(id=req.id), out)
            elif t is emit_t:
                phase = req.phase
                if (len(body) > small or req.late or not phase_ok(phase)
                        or (phase == vocab.ARTIFACT and req.payload.get("attach"))):
                    break
                pend = Pending(phase, req.payload, event_time(req.ts), client_id, req.seq, wire=body)
                _queue(runs, req.session_id, [pend], req.id, req.ack)
            elif t is batch_t:
                if req.late:
                    break
                batch: list[Pending] = []
                for raw in req.events:
                    if len(raw) > small:
                        break
                    try:
                        ev = decode_event(raw)
                    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        break
                    phase = ev.phase
                    if not phase_ok(phase) or (phase == vocab.ARTIFACT and ev.payload.get("attach")):
                        break
                    batch.append(Pending(phase, ev.payload, event_time(ev.ts), client_id, ev.seq, wire=raw))
                if len(batch) < len(req.events):
                    break
                _queue(runs, req.session_id, batch, req.id, req.ack)
            else:
                break
            i += 1
        self._flush_runs(conn, runs, out, touched)
        return i

    def _flush_runs(self, conn: Connection, runs: list[_Run], out: bytearray, touched: set[Live]) -> None:
        """Redact the runs' events with one ``Redactor.redactions``, then write each run (in order) and
        encode its replies; ``runs`` is left holding one empty run."""
        if self.config.redaction:
            raw = [p for run in runs for p in run.raw]
            if raw:
                try:
                    changed = self.redactor_of(conn).redactions(list(map(_PAYLOAD, raw)),
                                                                wires=list(map(_WIRE, raw)))
                except Exception as e:  # a bug must cost these requests (never unredacted), not the connection
                    log.exception("redaction_failed", events=len(raw))
                    for run in runs:
                        for rid, _ack, _n in run.replies:
                            encode(protocol.Error(id=rid, code="internal", message=f"internal error: {e!r}"), out)
                        run.pending, run.replies, run.raw = [], [], []
                    changed = []
                for i, payload, count in changed:
                    pend = raw[i]
                    pend.payload = payload
                    pend.redactions = count
        for run in runs:
            run.raw = []
            self._flush(conn, run, out, touched)
        if len(runs) > 1:
            del runs[1:]

    async def process(self, conn: Connection, frames: list[bytes], out: bytearray, touched: set[Live]) -> None:
        """Handle the frames of one read (or a spool segment, an OTLP request), appending their replies to ``out``.

        Runs of frames go through ``process_now``; the frames it leaves (opens, closes,
        large or deep payloads, bad frames...) are handled here, one at a time, in order.
        """
        i, n = 0, len(frames)
        while i < n:
            stop = min(n, i + FAIR_SHARE)
            i = self.process_now(conn, frames, out, touched, start=i, stop=stop)
            if i < stop:
                await self._one(conn, frames[i], out, touched)
                i += 1
            if i < n:  # one client's long pipeline (a spool segment) never starves the rest
                await anyio.lowlevel.checkpoint()
        for live in [lv for lv in touched if lv.state.closed]:  # late records: meta.json's counters
            try:
                await anyio.to_thread.run_sync(self.registry.write_meta, live)
            except OSError as e:
                log.error("meta_write_failed", session_id=live.state.session_id, error=e.strerror)

    async def _one(self, conn: Connection, body: bytes, out: bytearray, touched: set[Live]) -> None:
        """Handle one frame that ``process_now`` left, its replies in ``out``."""
        try:
            req = protocol.decode_request(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            encode(protocol.Error(id=peek_id(body), code="bad_frame", message=f"bad request: {e}"), out)
            return
        run = _Run()
        try:
            match req:
                case protocol.Emit():
                    event = protocol.Event(phase=req.phase, payload=req.payload, ts=req.ts, seq=req.seq)
                    await self._events(conn, run, out, touched, rid=req.id, session_id=req.session_id,
                                       events=[event], ack=req.ack, late=req.late)
                case protocol.EmitBatch():
                    await self._events(conn, run, out, touched, rid=req.id, session_id=req.session_id,
                                       events=req.events, ack=req.ack, late=req.late)
                case _:
                    encode(await self._request(conn, req, touched), out)
            self._flush(conn, run, out, touched)
        except RequestError as e:
            encode(protocol.Error(id=req.id, code=e.code, message=e.message), out)  # type: ignore[arg-type]
        except Exception as e:  # a bug must cost one request, not the daemon
            log.exception("request_failed", op=type(req).__name__)
            encode(protocol.Error(id=req.id, code="internal", message=f"internal error: {e!r}"), out)

    async def _events(self, conn: Connection, run: _Run, out: bytearray, touched: set[Live], *, rid: int,
                      session_id: str, events: list[protocol.Event], ack: bool, late: bool = False) -> None:
        """Validate, redact and queue ``events`` into the run of ``session_id``.

        File work (attach, spill) starts only once every event of the request passed its checks:
        a refused batch leaves no artifact or blob behind."""
        redactor = self.redactor_of(conn)
        batch = []
        heavy = []
        for ev in events:
            pend, is_heavy = self.intake.event(redactor, ev.phase, ev.payload, ts=ev.ts,
                                               client_id=conn.client_id, seq=ev.seq)
            pend.late = late
            batch.append(pend)
            if is_heavy:
                heavy.append(pend)
        if heavy:
            live = self.registry.late(session_id) if late else self.registry.live(session_id)
            for pend in heavy:
                await self.intake.offload(pend, live.state.dir, [home(), live.root])
        if session_id != run.session_id or late != run.late:
            self._flush(conn, run, out, touched)
            run.session_id = session_id
            run.late = late
        run.pending.extend(batch)
        run.replies.append((rid, ack, len(batch)))

    def _flush(self, conn: Connection, run: _Run, out: bytearray, touched: set[Live]) -> None:
        """Write the pending run with one write(2) and encode its acks/errors."""
        if not run.pending:
            run.replies.clear()
            run.raw.clear()
            return
        pending, replies, sid, late = run.pending, run.replies, run.session_id, run.late
        run.pending, run.replies, run.session_id, run.late, run.raw = [], [], "", False, []
        try:
            live = self.registry.late(sid) if late else self.registry.live(sid)
            steps, error = self.registry.append(live, pending)
        except RequestError as e:
            for rid, _ack, _n in replies:
                encode(protocol.Error(id=rid, code=e.code, message=e.message), out)  # type: ignore[arg-type]
            return
        except Exception as e:  # a bug must cost these requests, never the connection
            log.exception("write_failed_internally", session_id=sid, events=len(pending))
            for rid, _ack, _n in replies:
                encode(protocol.Error(id=rid, code="internal", message=f"internal error: {e!r}"), out)
            return
        touched.add(live)
        conn.touched.add(live)
        conn.events += len(pending)
        i = 0
        if error is None:  # every event written (or a replay of one): acks only
            for rid, ack, n in replies:
                i += n
                if ack:
                    encode(protocol.Ack(id=rid, step=steps[i - 1] or 0), out)
            return
        for rid, ack, n in replies:
            chunk = steps[i : i + n]
            i += n
            if any(s is None for s in chunk):
                why = error.strerror if error is not None else "not written"
                encode(protocol.Error(id=rid, code="io_error", message=f"write failed: {why}"), out)
            elif ack:
                encode(protocol.Ack(id=rid, step=chunk[-1] or 0), out)

    async def _request(self, conn: Connection, req: protocol.Request, touched: set[Live]) -> msgspec.Struct:
        match req:
            case protocol.Hello():
                if req.lost > 0:
                    self.registry.stats.client_events_lost += req.lost
                    log.warning("client_events_lost", client=req.client, client_id=req.client_id, events=req.lost)
                conn.client_id = req.client_id
                conn.client = req.client
                conn.cwd = req.cwd
                if req.secrets:  # kept even with redaction off: a reload may turn it on
                    conn.secrets = list(req.secrets)
                    # a few values compile in microseconds; thousands take milliseconds: off the loop
                    conn.redactor = (self.redactor.with_values(req.secrets) if len(req.secrets) <= 64 else
                                     await anyio.to_thread.run_sync(self.redactor.with_values, req.secrets))
                    conn.base = self.redactor
                if self.on_hello is not None and req.client_id:
                    await self.on_hello(req.client_id)
                return protocol.Welcome(id=req.id, server=f"traced {__version__}", pid=os.getpid(),
                                        max_frame=self.config.max_frame, max_depth=self.config.max_payload_depth,
                                        max_keys=self.config.max_payload_keys)
            case protocol.Open():
                cwd = req.cwd or conn.cwd or peer_cwd(conn.peer.pid)
                loaded = None
                if req.session_id and req.session_id not in self.registry.sessions:
                    async with self._loading.setdefault(req.session_id, anyio.Lock()):
                        loaded = await anyio.to_thread.run_sync(
                            self.registry.preload, req.skill, req.session_id, req.target, cwd, conn.peer.uid)
                    self._loading.pop(req.session_id, None)
                checkpointed = False
                for _attempt in range(OPEN_ATTEMPTS):
                    try:
                        return self._open(conn, req, cwd, loaded, settled=checkpointed)
                    except Deferred as wait:
                        log.info("open_deferred", session_id=req.session_id, why=str(wait))
                        await wait.until()
                        checkpointed = checkpointed or wait.checkpoint
                raise RequestError("io_error", f"cannot create the trace of {req.session_id}: the write-ahead log "
                                   "stayed busy")
            case protocol.Close():
                summary = self.intake.text(self.redactor_of(conn), req.summary)
                await self._recall(req.session_id)
                live = await self.end_session(req.session_id, req.outcome, summary, None, event_time(req.ts))
                return protocol.Closed(id=req.id, meta=meta_dict(live.state.m))
            case protocol.Sync():
                if req.fsync or self.config.fsync == "always":
                    try:
                        await self.registry.durable(conn.touched | touched)
                    except OSError as e:  # a trace let go lost what it held: this connection is told once
                        conn.touched = {lv for lv in conn.touched if not lv.journal.retired}
                        raise RequestError("io_error", f"fsync failed: {e.strerror}") from e
                    conn.touched.clear()  # all durable: the next sync is about later writes (and walks only those)
                return protocol.Synced(id=req.id)
            case protocol.StatusRequest():
                info = self.status()
                if req.held:
                    info.update(self.held())
                return protocol.Status(id=req.id, info=info)
            case protocol.Subscribe():
                sub = self.bus.subscribe(Subscriber(skill=req.skill, session_id=req.session_id, phase=req.phase,
                                                    capacity=self.config.subscriber_buffer))
                conn.subscription = (req.id, sub)
                return protocol.Subscribed(id=req.id, buffer=sub.capacity)
        raise RequestError("bad_frame", f"unexpected request {type(req).__name__}")

    async def _recall(self, session_id: str) -> None:
        """Load a session this daemon does not hold, found on disk by its id: an ended one (a ``close``
        resent after a restart) so that the close is answered with its recorded ending, and one that
        never ended and that recovery did not adopt (its open marker lost) so that the close ends it.

        One search at a time, off the loop; an id not found is not searched again for
        ``NOT_FOUND_TTL`` seconds: closes of unknown ids cost no thread and no disk walk each.
        """
        registry = self.registry
        if session_id in registry.sessions or session_id in registry.ended:
            return
        now = time.monotonic()
        seen = self._not_found.get(session_id)
        if seen is not None and now - seen < NOT_FOUND_TTL:
            return
        async with self._recalling:
            if session_id in registry.sessions or session_id in registry.ended:
                return
            loaded = await anyio.to_thread.run_sync(registry.preload_ended, session_id)
            if loaded is None:
                if len(self._not_found) >= NOT_FOUND_MAX:
                    self._not_found.clear()
                self._not_found[session_id] = time.monotonic()
            elif session_id not in registry.sessions:  # ended: answered with its meta; never ended: the close ends it
                registry.peek(loaded.sdir, loaded, adopt_open=True)

    def _open(self, conn: Connection, req: protocol.Open, cwd: str, loaded: Loaded | None,
              *, settled: bool = False) -> protocol.Opened:
        limit = self.config.max_sessions_per_connection
        if len(conn.opened) >= limit:
            conn.opened.intersection_update(self.registry.sessions)  # those closed since count no more
            if len(conn.opened) >= limit:
                raise RequestError("overloaded", f"{len(conn.opened)} sessions open on this connection: the limit")
        owner: int | None
        if req.owner_pid == 0:
            owner = conn.peer.pid
        elif req.owner_pid < 0:
            owner = None
        elif req.owner_pid > PID_MAX:
            raise RequestError("invalid_event", f"owner_pid {req.owner_pid} is not a process id (max {PID_MAX})")
        else:
            owner = req.owner_pid
        live, resumed, fallback = self.registry.open(
            skill=req.skill, session_id=req.session_id, target=req.target, cwd=cwd,
            owner_pid=owner, peer_uid=conn.peer.uid, idle_timeout=req.idle_timeout,
            input=self.intake.value(self.redactor_of(conn), req.input),
            labels=self.intake.value(self.redactor_of(conn), req.meta),
            ts=event_time(req.ts),
            from_spool=conn.from_spool, reopen=req.reopen, loaded=loaded, settled=settled,
        )
        if not live.state.closed:
            conn.opened.add(live.state.session_id)
        if fallback:
            log.info("target_fallback", session_id=live.state.session_id, reason=fallback)
        return protocol.Opened(
            id=req.id, session_id=live.state.session_id, dir=live.state.dir,
            step=live.state.step, resumed=resumed, ended=live.state.closed, root_fallback=fallback,
        )

    async def end_session(self, session_id: str, outcome: str, summary: str | None,
                          reason: str | None, ts: float = 0.0) -> Live:
        """Close a session: end record now, then fsync + meta.json in a worker thread.

        The one path for clients' ``close`` and for the watchers' finalize.
        """
        live, ended_before = self.registry.close(session_id, outcome, summary, reason, ts)
        if ended_before:
            return live
        try:
            await anyio.to_thread.run_sync(self.registry.finish, live)
        except OSError as e:
            log.error("meta_write_failed", session_id=session_id, error=e.strerror)
            raise RequestError("io_error", f"end written, meta.json failed: {e.strerror}") from e
        self.registry.finished(live)
        for hook in self.on_finished:
            hook(live)
        log.info("session_closed", session_id=session_id, skill=live.state.skill,
                 outcome=outcome, reason=reason, steps=live.state.step)
        return live


OPEN_ATTEMPTS: Final = 4
"""Times an ``open`` is tried when the registry defers it (``registry.Deferred``)."""
NOT_FOUND_TTL: Final = 1.0
"""Seconds a session id that a ``close`` search did not find on disk is not searched for again (the
registry's recent index is as old at most: ``RECENT_INDEX_TTL``)."""
NOT_FOUND_MAX: Final = 1024
"""Such ids remembered at most (then forgotten all at once)."""
_PAYLOAD: Final = attrgetter("payload")
_WIRE: Final = attrgetter("wire")


def _queue(runs: list[_Run], session_id: str, batch: list[Pending], rid: int, ack: bool) -> None:
    """Add checked, not yet redacted events to the last run, or to a new one for another session."""
    run = runs[-1]
    if session_id != run.session_id:
        if run.pending:
            run = _Run()
            runs.append(run)
        run.session_id = session_id
    run.pending += batch
    run.raw += batch
    run.replies.append((rid, ack, len(batch)))


def peek_id(body: bytes) -> int:
    """The ``id`` of an undecodable request, if its map has one (0 otherwise)."""
    try:
        raw = msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):  # untyped decoding raises UnicodeDecodeError too
        return 0
    rid = raw.get("id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
