"""NATS JetStream sink (``traced-daemon[nats]``: nats-py, imported lazily).

Each record's JSON line, exactly as on disk, is published to
``<subject>.<skill>.<session_id>`` (a ``.`` inside a name becomes ``%2E``) with the
header ``Nats-Msg-Id: <session_id>:<step>``, so JetStream drops a re-send within its
duplicate window. A batch is pipelined: every message is published with a reply
subject under one inbox subscription (written to the socket in large chunks, not
one write per message), then the PubAcks are awaited together. The cursor advances
only past acknowledged messages, so after an outage longer than the duplicate window
nothing acknowledged is sent again.

The connection does not reconnect by itself (nats-py would buffer publishes and
replay them later, behind the cursor's back): on any error it is dropped and the
forwarder's backoff decides when to connect again. On connect the stream is created
if missing (file storage, subjects ``<subject>.>``); an existing stream is used as it
is.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Final

import anyio
import msgspec
import structlog

from traced.forward.engine import Batch, SendResult
from traced.forward.urls import Destination, subject_token

log = structlog.get_logger("traced.forward.nats")

CONNECT_TIMEOUT: Final = 3
ACK_TIMEOUT: Final = 5.0
API_TIMEOUT: Final = 5.0
HEADER_ROOM: Final = 512
HOST: Final = socket.gethostname()
"""Sent as ``Traced-Host``: the mirror (:mod:`traced.forward.mirror`) records it in meta.json's ``host``."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (no 'never retrieved' noise)."""
    if not fut.cancelled():
        fut.exception()


class NatsSink:
    """Publishes trace lines to a JetStream stream."""

    def __init__(self, dest: Destination, max_records: int = 1000, max_bytes: int = 4 << 20) -> None:
        self.dest = dest
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.stream = dest.options.get("stream", "TRACED")
        self.prefix = dest.options.get("subject", "traced")
        self.duplicate_window = float(dest.options.get("duplicate_window") or 120.0)
        self._nc: Any = None
        self._js: Any = None
        self._closed: asyncio.Event | None = None
        self._inbox = ""
        self._acks: dict[str, asyncio.Future[bool]] = {}
        """Reply token -> future of the PubAck (True: stored; False: a duplicate, also stored)."""
        self._token = 0
        self._inflight: list[asyncio.Future[bool]] | None = None
        self._last_async_error: str | None = None
        self.stream_warning: str | None = None

    # --- connection ------------------------------------------------------------

    async def _connect(self) -> None:
        if self._nc is not None and self._nc.is_connected and self._closed is not None and not self._closed.is_set():
            return
        await self._drop()
        import nats

        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async def on_error(exc: Exception) -> None:
            self._last_async_error = _describe(exc)

        options: dict[str, Any] = {
            "servers": [self.dest.url], "name": "traced-forward", "allow_reconnect": False,
            # 0 would mean "retry forever" inside connect(): our backoff decides instead
            "max_reconnect_attempts": 1, "reconnect_time_wait": 0.05, "connect_timeout": CONNECT_TIMEOUT,
            "error_cb": on_error, "closed_cb": on_closed, "disconnected_cb": on_closed,
        }
        if "creds" in self.dest.options:
            options["user_credentials"] = self.dest.options["creds"]
        with anyio.fail_after(CONNECT_TIMEOUT + 2):
            nc = await nats.connect(**options)
        try:
            js = nc.jetstream(timeout=API_TIMEOUT)
            await self._ensure_stream(js)
            inbox = nc.new_inbox()
            await nc.subscribe(f"{inbox}.*", cb=self._on_ack)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0), contextlib.suppress(Exception):
                await nc.close()
            raise
        self._nc, self._js, self._closed, self._inbox = nc, js, closed, inbox

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        wanted = f"{self.prefix}.>"
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            config = StreamConfig(name=self.stream, subjects=[wanted], storage=StorageType.FILE,
                                  duplicate_window=self.duplicate_window,
                                  description="traced session records (one message per trace line)")
            await js.add_stream(config)
            log.info("forward_stream_created", stream=self.stream, subjects=[wanted],
                     duplicate_window=self.duplicate_window)
            return
        subjects = list(info.config.subjects or [])
        if wanted not in subjects and ">" not in subjects:
            self.stream_warning = f"stream {self.stream} has subjects {subjects}, not {wanted}"
            log.warning("forward_stream_subjects", stream=self.stream, subjects=subjects, wanted=wanted)

    async def _on_ack(self, msg: Any) -> None:
        """A PubAck (or a JetStream error) for one published message."""
        fut = self._acks.pop(msg.subject.rpartition(".")[2], None)
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(RuntimeError(f"no stream answers on this subject (stream {self.stream})"))
            return
        try:
            ack = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            fut.set_exception(RuntimeError(f"bad PubAck {msg.data[:100]!r}"))
            return
        if not isinstance(ack, dict) or "error" in ack or "seq" not in ack:
            err = ack.get("error") if isinstance(ack, dict) else ack
            fut.set_exception(RuntimeError(f"JetStream: {err}"))
            return
        fut.set_result(not ack.get("duplicate", False))

    async def _drop(self) -> None:
        for fut in self._acks.values():
            if not fut.done():
                fut.cancel()
        self._acks.clear()
        nc, self._nc, self._js = self._nc, None, None
        if nc is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(1.0), contextlib.suppress(Exception):
            await nc.close()

    # --- sending -------------------------------------------------------------

    def _subject(self, skill: str, session_id: str) -> str:
        return f"{self.prefix}.{subject_token(skill)}.{subject_token(session_id)}"

    def _payload(self, raw: bytes, limit: int) -> tuple[bytes, bool]:
        """The line, or a stub keeping its keys when it exceeds the server's max_payload."""
        if len(raw) <= limit:
            return raw, False
        try:
            rec = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            rec = {}
        if not isinstance(rec, dict):
            rec = {}
        rec["payload"] = {"$omitted": "too_large", "size": len(raw)}
        rec.pop("client_seq", None)
        return msgspec.json.encode(rec), True

    async def send(self, batch: Batch) -> SendResult:
        """Publish the batch pipelined, then collect the PubAcks."""
        try:
            await self._connect()
        except Exception as e:
            await self._drop()
            return SendResult([False] * len(batch), f"connect {self.dest.display}: {_describe(e)}")
        nc = self._nc
        limit = max(1024, int(nc.max_payload) - HEADER_ROOM)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        self._inflight = futures
        error: str | None = None
        stubs = 0
        try:
            for index, line in batch.lines:
                ref = batch.sessions[index]
                data, stub = self._payload(line.raw, limit)
                stubs += stub
                self._token += 1
                token = str(self._token)
                fut: asyncio.Future[bool] = loop.create_future()
                fut.add_done_callback(_consume)
                self._acks[token] = fut
                futures.append(fut)
                # no await suspends here unless 2 MiB are pending: the flusher then
                # writes many messages with one send
                await nc.publish(self._subject(ref.skill, ref.session_id), data, reply=f"{self._inbox}.{token}",
                                 headers={"Nats-Msg-Id": f"{ref.session_id}:{line.step}",
                                          "Nats-Expected-Stream": self.stream, "Traced-Host": HOST})
            await self._wait(futures, ACK_TIMEOUT)
        except Exception as e:
            error = _describe(e)
        acked, duplicates, ack_error = self._collect(futures)
        self._inflight = None
        acked.extend([False] * (len(batch) - len(acked)))
        if not all(acked):
            error = error or ack_error or self._last_async_error or "timed out waiting for PubAcks"
            if self.stream_warning:
                error = f"{error} ({self.stream_warning})"
            await self._drop()
        return SendResult(acked, error, dropped=stubs, duplicates=duplicates)

    async def _wait(self, futures: list[asyncio.Future[bool]], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        closed = self._closed
        closed_task = asyncio.ensure_future(closed.wait()) if closed is not None else None
        try:
            pending = {f for f in futures if not f.done()}
            while pending and not (closed_task is not None and closed_task.done()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                waits: set[asyncio.Future[Any]] = set(pending)
                if closed_task is not None:
                    waits.add(closed_task)
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                pending = {f for f in pending if not f.done()}
        finally:
            if closed_task is not None:
                closed_task.cancel()

    @staticmethod
    def _collect(futures: list[asyncio.Future[bool]]) -> tuple[list[bool], int, str | None]:
        acked: list[bool] = []
        duplicates = 0
        error: str | None = None
        for fut in futures:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                acked.append(True)
                duplicates += not fut.result()
            else:
                acked.append(False)
                if error is None and fut.done() and not fut.cancelled():
                    exc = fut.exception()
                    error = _describe(exc) if exc is not None else None
        return acked, duplicates, error

    async def salvage(self, grace: float) -> list[bool] | None:
        """PubAcks that arrive within ``grace`` after the send was cancelled (daemon stopping)."""
        futures = self._inflight
        if futures is None:
            return None
        with anyio.move_on_after(grace):
            await self._wait(futures, grace)
        return self._collect(futures)[0]

    async def aclose(self) -> None:
        """Close the connection."""
        await self._drop()
