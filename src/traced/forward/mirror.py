"""``traced serve --mirror nats://HOST:PORT[?stream=TRACED&subject=traced&durable=NAME]``: a fleet view.

Other machines' daemons forward every record to a JetStream stream
(:mod:`traced.forward.nats`: subject ``<subject>.<skill>.<session_id>``, header
``Nats-Msg-Id: <session_id>:<step>``, ``Traced-Host: <host>``). The mirror reads that
stream through a durable pull consumer and writes each record into this daemon's root
in the same layout (``<root>/<date>/<skill>/<session_id>/trace.jsonl``, the line
exactly as the origin wrote it), so every reading command and ``traced usage`` see
the fleet.

Exactly once per (session, step): a record whose step is not above the session's
last written step is a redelivery and is skipped; a message is acknowledged only
after its line is fsynced; a record that arrives before an earlier step of its
session (redeliveries can come out of order) is not acknowledged, so it comes again
after it. The consumer's position lives in the broker (file storage), the last step
of each session in the files themselves, so restarts of the mirror and of the broker
lose nothing and duplicate nothing. ``meta.json`` of a
mirrored session is rebuilt from its records (:func:`traced.format.accounting.account`)
after every batch that touched it, with ``host`` the origin's.

Not mirrored: blob files (strings the origin spilled to ``blobs/`` stay references).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import msgspec
import structlog

from traced import __version__
from traced.format import layout, vocab
from traced.format.accounting import account
from traced.format.files import write_atomic
from traced.format.records import Meta, meta_json, parse_ts
from traced.forward.source import iter_lines
from traced.forward.urls import Destination

log = structlog.get_logger("traced.forward.mirror")

FETCH_BATCH: Final = 256
FETCH_WAIT: Final = 1.0
CONNECT_TIMEOUT: Final = 3
BACKOFF_CAP: Final = 10.0
ACK_WAIT: Final = 30.0
MAX_STEP: Final = 1 << 53
"""A step past this is no origin's (a crafted message): rejected."""
HOST_HEADER: Final = "Traced-Host"
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _valid_ts(ts: str) -> bool:
    """Whether ``ts`` is an ISO 8601 time with a real date (it names the date directory)."""
    if not _DATE_RE.match(ts[:10]):
        return False
    try:
        parse_ts(ts)
    except (ValueError, OverflowError):
        return False
    return True


class _Line(msgspec.Struct):
    ts: str = ""
    skill: str = ""
    session_id: str = ""
    step: int | None = None
    turn: int | None = None
    phase: str = ""
    payload: Any = None


_line_decoder: Final = msgspec.json.Decoder(_Line)


@dataclass(slots=True)
class Incoming:
    """One message of the stream: the origin's line and what its headers say."""

    data: bytes
    msg_id: str
    host: str = ""
    delivered: int = 1
    """How many times the broker has delivered it (1: the first time)."""


@dataclass(slots=True)
class Mirrored:
    """What the mirror knows of one session it writes."""

    dir: str
    last_step: int
    meta: Meta
    fd: int = -1


@dataclass(slots=True)
class ApplyResult:
    """What one batch did: per message, whether it may be acknowledged."""

    ok: list[bool] = field(default_factory=list)
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    held: int = 0
    """Records that came before an earlier step of their session: not acknowledged, so redelivered."""


class MirrorWriter:
    """Writes incoming records into a root (sans network; blocking: call from a worker thread)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.sessions: dict[str, Mirrored] = {}

    def _session(self, sid: str, skill: str, first: _Line, host: str) -> Mirrored:
        known = self.sessions.get(sid)
        if known is not None:
            return known
        sdir = layout.find_session_dir(self.root, skill, sid)
        if sdir is None:
            date = first.ts[:10]
            if not _DATE_RE.fullmatch(date):  # the day the session started, as the origin's layout has it
                date = time.strftime("%Y-%m-%d", time.gmtime())
            sdir = layout.session_dir(self.root, date, skill, sid)
            path = self.root
            for part in (date, skill, sid):  # each level private, as the daemon makes them
                path = os.path.join(path, part)
                layout.ensure_private_dir(path)
        meta = Meta(session_id=sid, skill=skill, devboy_version=f"traced {__version__} (mirror)",
                    started_at=first.ts, host=host)
        last = 0
        for _start, _end, pos, raw in iter_lines(str(sdir), 1 << 62):  # after a restart: the file says how far
            try:
                rec = _line_decoder.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                continue
            last = rec.step if rec.step is not None else pos
            self._fold(meta, rec, last)
        if last:
            meta.host = meta.host or host
        known = Mirrored(str(sdir), last, meta)
        self.sessions[sid] = known
        return known

    @staticmethod
    def _fold(meta: Meta, rec: _Line, step: int) -> None:
        if not meta.started_at or (rec.phase == vocab.START and step == 1):
            meta.started_at = rec.ts
        account(meta, rec.phase, rec.payload)
        meta.steps = max(meta.steps, step)
        meta.turns = max(meta.turns, rec.turn or 0)
        p = rec.payload if isinstance(rec.payload, dict) else {}
        if rec.phase == vocab.START and isinstance(p.get("cwd"), str):
            meta.cwd = p["cwd"]
        if rec.phase == vocab.END:
            meta.ended_at = rec.ts
            meta.outcome = p.get("outcome") if isinstance(p.get("outcome"), str) else None
            meta.summary = p.get("summary") if isinstance(p.get("summary"), str) else None
            meta.reason = p.get("reason") if isinstance(p.get("reason"), str) else None

    def apply(self, batch: list[Incoming]) -> ApplyResult:
        """Append each new record to its session's trace, fsync, rebuild the touched meta.json files.

        A message that is not a traced record (bad JSON, no session id or skill, a bad
        name) is acknowledged and counted as rejected: redelivering it cannot help.
        On an OSError the batch stops there: neither it nor what follows is acknowledged.
        """
        res = ApplyResult(ok=[False] * len(batch))
        touched: dict[str, Mirrored] = {}
        pending: list[int] = []
        try:
            for i, msg in enumerate(batch):
                sid_from_id, _, step_text = msg.msg_id.rpartition(":")
                try:
                    rec: _Line | None = _line_decoder.decode(msg.data)
                except (msgspec.DecodeError, RecursionError):
                    rec = None
                step = int(step_text) if step_text.isdigit() else (rec.step if rec is not None else None)
                sid = rec.session_id if rec is not None else ""
                if (rec is None or step is None or not rec.phase or not layout.valid_name(sid)
                        or not layout.valid_name(rec.skill) or (sid_from_id and sid_from_id != sid)
                        or not 0 < step <= MAX_STEP or (rec.step is not None and rec.step != step)
                        or not _valid_ts(rec.ts)):
                    res.ok[i] = True
                    res.rejected += 1
                    log.warning("mirror_message_rejected", msg_id=msg.msg_id, size=len(msg.data))
                    continue
                s = self._session(sid, rec.skill, rec, msg.host)
                if step <= s.last_step:
                    res.ok[i] = True
                    res.duplicates += 1
                    continue
                if step > s.last_step + 1:
                    # an earlier step is still to come (JetStream may redeliver out of order,
                    # nats-server#6114): wait for it, however long. A gap is never forced in: a
                    # crafted far step would make every later real record look like a duplicate.
                    res.held += 1
                    continue
                if s.fd < 0:
                    s.fd = os.open(os.path.join(s.dir, layout.TRACE),
                                   os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.write(s.fd, msg.data + b"\n")
                s.last_step = step
                if msg.host and not s.meta.host:
                    s.meta.host = msg.host
                self._fold(s.meta, rec, step)
                touched[sid] = s
                pending.append(i)
        except OSError as e:
            log.error("mirror_write_failed", error=str(e))
        if self._sync(touched):
            for i in pending:
                res.ok[i] = True
            res.written = len(pending)
        return res

    def _sync(self, touched: dict[str, Mirrored]) -> bool:
        try:
            for s in touched.values():
                os.fsync(s.fd)
                write_atomic(s.dir, layout.META, meta_json(s.meta))
        except OSError as e:
            log.error("mirror_sync_failed", error=str(e))
            return False
        return True

    def close(self) -> None:
        """Close every trace file."""
        for s in self.sessions.values():
            if s.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(s.fd)
                s.fd = -1


class Mirror:
    """Consumes the stream other daemons forward to, into this daemon's root."""

    def __init__(self, dest: Destination, root: str) -> None:
        self.dest = dest
        self.stream = dest.options.get("stream", "TRACED")
        self.prefix = dest.options.get("subject", "traced")
        self.durable = dest.options.get("durable") or "traced-mirror"
        self.writer = MirrorWriter(root)
        self.state = "starting"
        self.received = self.written = self.duplicates = self.rejected = self.held = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    async def run(self) -> None:
        """Consume forever; a lost broker is reconnected with backoff. Never raises (but cancellation)."""
        delay = 0.5
        try:
            while True:
                try:
                    await self._consume()
                except Exception as e:
                    self.state = "backoff"
                    self.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                    self.last_error_at = time.time()
                    log.warning("mirror_failed", url=self.dest.display, error=self.last_error, retry_in=delay)
                    await anyio.sleep(delay)
                    delay = min(BACKOFF_CAP, delay * 2)
                else:
                    delay = 0.5
        finally:
            self.writer.close()

    async def _consume(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        options: dict[str, Any] = {"servers": [self.dest.url], "name": "traced-mirror", "allow_reconnect": False,
                                   "max_reconnect_attempts": 1, "connect_timeout": CONNECT_TIMEOUT}
        if "creds" in self.dest.options:
            options["user_credentials"] = self.dest.options["creds"]
        with anyio.fail_after(CONNECT_TIMEOUT + 2):
            nc = await nats.connect(**options)
        try:
            js = nc.jetstream(timeout=5.0)
            try:
                await js.stream_info(self.stream)
            except NotFoundError:
                raise RuntimeError(f"no stream {self.stream} yet (no daemon has forwarded to it)") from None
            config = ConsumerConfig(durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                                    deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT, max_ack_pending=4096)
            sub = await js.pull_subscribe(f"{self.prefix}.>", durable=self.durable, stream=self.stream, config=config)
            self.state = "idle"
            self.last_error = None
            while nc.is_connected:
                try:
                    msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT)
                except nats.errors.TimeoutError:
                    continue
                self.state = "writing"
                batch = [Incoming(m.data, (m.headers or {}).get("Nats-Msg-Id", ""),
                                  (m.headers or {}).get(HOST_HEADER, ""), _delivered(m)) for m in msgs]
                res = await anyio.to_thread.run_sync(self.writer.apply, batch)
                self.received += len(msgs)
                self.written += res.written
                self.duplicates += res.duplicates
                self.rejected += res.rejected
                self.held += res.held
                for m, ok in zip(msgs, res.ok, strict=True):
                    if ok:
                        await m.ack()
                    else:
                        await m.nak(delay=1.0)
                self.state = "idle"
            raise ConnectionError("connection to the broker lost")
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await nc.close()

    def status(self) -> dict[str, Any]:
        """The ``mirror`` entry of ``traced status``."""
        return {"url": self.dest.display, "durable": self.durable, "state": self.state, "received": self.received,
                "written": self.written, "duplicates": self.duplicates, "rejected": self.rejected, "held": self.held,
                "sessions": len(self.writer.sessions), "last_error": self.last_error,
                "last_error_at": self.last_error_at}


def _delivered(msg: Any) -> int:
    """A JetStream message's delivery count (1 when the metadata cannot be read)."""
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1
