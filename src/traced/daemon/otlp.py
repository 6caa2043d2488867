"""The OTLP/HTTP receiver (``otlp_listen``): a Starlette app served by uvicorn on the daemon's loop.

``POST /v1/traces`` and ``POST /v1/logs`` (protobuf or JSON, gzip or not). Each
request is checked in this order: Host (421), bearer token (401, compared in
constant time, nothing read or written), rate (429 with Retry-After), content
type and encoding (415), declared and actual size, compressed and inflated
(413). Its body is then decoded and mapped (``integrations.otlp``, sans-IO, in
a worker thread when large), and the records enter exactly as a socket
client's do: encoded as protocol requests (``open`` with ``reopen`` false,
``emit`` marked ``late``, ``close`` for a root agent span) and handed to
``Handler.process``, so validation, redaction, spill, step assignment and
idempotency are the socket's own. See docs/otlp-receiver.md.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import math
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from traced import locations
from traced.daemon.handler import Connection, Handler, Peer
from traced.daemon.registry import Live
from traced.errors import ConfigError, FrameTooLarge, OtlpRequestError
from traced.wire import protocol
from traced.wire.framing import Framer

log = structlog.get_logger("traced.daemon.otlp")

TOKEN_ENV: Final = "TRACED_OTLP_TOKEN"
OFFLOAD_BYTES: Final = 256 * 1024
"""Bodies larger than this are decoded and mapped in a worker thread, off the daemon's loop."""
TRANSIENT: Final = frozenset({"io_error", "overloaded", "internal"})
"""Refusals a resend may cure: the request is answered 503 (the exporter retries; keys drop the copies)."""
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def parse_listen(listen: str, allow_remote: bool) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` / ``[V6]:PORT``; ConfigError when malformed, or when the host is
    not loopback and ``allow_remote`` is false."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"otlp_listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:4318")
    if not allow_remote and not is_loopback(host):
        raise ConfigError(f"otlp_listen {listen!r} is not a loopback address: the receiver binds loopback only "
                          "unless --otlp-allow-remote (config otlp_allow_remote) says otherwise")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(path: Path, env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, Path | None]:
    """(token, the file it came from or None for ``$TRACED_OTLP_TOKEN``).

    The file is created with mode 0600 (O_EXCL: never through someone's symlink) holding a
    random 256-bit token; an existing one is kept, made 0600, and refused (ConfigError)
    when another user owns it or it is not a regular file.
    """
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token, None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise ConfigError(f"cannot read the OTLP token file {path}: {e.strerror}") from e
    with os.fdopen(fd, "r+") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise ConfigError(f"the OTLP token file {path} is not a regular file of yours: refusing it")
        if st.st_mode & 0o077:
            os.fchmod(f.fileno(), 0o600)
        token = f.read().strip()
        if not token:
            token = secrets.token_urlsafe(32)
            f.write(token + "\n")
    return token, path


@dataclass(slots=True)
class Bucket:
    """A token bucket: ``rate`` requests per second, bursts of ``max(1, rate)``."""

    rate: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0.0 when a request may go now, else the seconds until one may."""
        burst = max(1.0, self.rate)
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens = burst
        self.tokens = min(burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


@dataclass(slots=True)
class Counters:
    """What ``traced status`` shows of the receiver."""

    requests: int = 0
    spans: int = 0
    spans_ignored: int = 0
    logs: int = 0
    logs_ignored: int = 0
    rejected: int = 0
    records_written: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    """HTTP status -> requests answered with it (401, 413, 415, 429, 400…)."""
    last_error: str = ""


_ENCODER = msgspec.msgpack.Encoder()


class OtlpReceiver:
    """Binds ``otlp_listen``, serves OTLP/HTTP, feeds the handler."""

    def __init__(self, handler: Handler, listen: str, allow_remote: bool) -> None:
        self.handler = handler
        self.host, self.port = parse_listen(listen, allow_remote)
        self.allow_remote = allow_remote
        self.token, self.token_file = load_token(locations.otlp_token_path())
        self._token = self.token.encode()
        self.counters = Counters()
        self.bucket = Bucket(handler.config.otlp_rate)
        self.sock: socket.socket | None = None
        self.server: Any = None
        self._stopped = anyio.Event()

    # --- set-up ---------------------------------------------------------------

    def bind(self) -> None:
        """Bind and listen now (ConfigError when the address is taken or not ours)."""
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family, backlog=128)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port} for OTLP: {e.strerror}") from e
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getsockname()[1]

    @property
    def endpoint(self) -> str:
        """The base URL an exporter points at (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def status(self) -> dict[str, Any]:
        """The receiver's part of ``traced status``."""
        c = self.counters
        return {
            "endpoint": self.endpoint, "token_file": str(self.token_file) if self.token_file else None,
            "token_source": "file" if self.token_file else TOKEN_ENV,
            "requests": c.requests, "spans": c.spans, "spans_ignored": c.spans_ignored, "logs": c.logs,
            "logs_ignored": c.logs_ignored, "rejected": c.rejected, "records_written": c.records_written,
            "refused": {str(k): v for k, v in sorted(c.refused.items())}, "last_error": c.last_error or None,
        }

    def app(self) -> Any:
        """The Starlette app: two POST routes, no CORS, no other path."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"]),
                                 Route("/v1/logs", self._logs, methods=["POST"])])

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop``; reports itself started once uvicorn accepts."""
        import uvicorn

        assert self.sock is not None, "bind() first"

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the daemon owns SIGTERM/SIGINT
                yield

        config = uvicorn.Config(self.app(), lifespan="off", log_config=None, access_log=False,
                                server_header=False, proxy_headers=False, timeout_keep_alive=30,
                                limit_concurrency=256, timeout_graceful_shutdown=5,
                                http=_header_timeout_protocol())
        self.server = server = _Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [self.sock])
            while not server.started:
                if server.should_exit:  # failed to start
                    raise ConfigError(f"the OTLP receiver could not start on {self.endpoint}")
                await anyio.sleep(0.01)
            log.info("otlp_listening", endpoint=self.endpoint, token_file=str(self.token_file or TOKEN_ENV))
            task_status.started()
        self._stopped.set()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (at most 5 s)."""
        if self.server is None:
            return
        self.server.should_exit = True
        with anyio.move_on_after(6):
            await self._stopped.wait()

    # --- requests -------------------------------------------------------------

    async def _traces(self, request: Any) -> Any:
        return await self._export(request, "traces")

    async def _logs(self, request: Any) -> Any:
        return await self._export(request, "logs")

    def _refuse(self, status: int, message: str, encoding: str = "protobuf",
                headers: dict[str, str] | None = None) -> Any:
        from starlette.responses import Response

        from traced.integrations.otlp import body

        self.counters.refused[status] = self.counters.refused.get(status, 0) + 1
        self.counters.last_error = f"{status}: {message}"
        enc: body.Encoding = "json" if encoding == "json" else "protobuf"
        return Response(body.status_body(status, message, enc), status_code=status, headers=headers,
                        media_type=body.JSON if enc == "json" else body.PROTOBUF)

    def _host_ok(self, host_header: str) -> bool:
        """DNS rebinding: on loopback, the Host must name this listener (any loopback name, our port)."""
        if self.allow_remote:
            return True
        if host_header.endswith("]") or ":" not in host_header:  # no port: "[::1]", "localhost"
            host, port = host_header, ""
        else:
            host, _, port = host_header.rpartition(":")
        host = host.strip("[]").lower()
        return (host in LOOPBACK_NAMES or host == self.host) and (not port or port == str(self.port))

    def _authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def _export(self, request: Any, signal: Any) -> Any:
        from starlette.responses import Response

        from traced.integrations.otlp import body

        headers = request.headers
        self.counters.requests += 1
        encoding = "json" if "json" in headers.get("content-type", "") else "protobuf"
        if not self._host_ok(headers.get("host", "")):
            return self._refuse(421, "the Host header does not name this receiver", encoding)
        if not self._authorized(headers.get("authorization", "")):
            return self._refuse(401, "missing or wrong bearer token (see `traced status`)", encoding,
                                {"WWW-Authenticate": 'Bearer realm="traced"'})
        self.bucket.rate = self.handler.config.otlp_rate  # SIGHUP may have changed it
        wait = self.bucket.take()
        if wait:
            return self._refuse(429, "rate limit: retry later", encoding,
                                {"Retry-After": str(max(1, math.ceil(wait)))})
        limit = self.handler.config.otlp_max_body
        try:
            kind = body.media_type(headers.get("content-type"))
            gzipped = body.check_encoding(headers.get("content-encoding"))
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise OtlpRequestError(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")
            data = bytearray()
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    raise OtlpRequestError(413, f"body exceeds the limit of {limit} bytes")
            raw = bytes(data)
            if len(raw) > OFFLOAD_BYTES or gzipped:
                mapped = await anyio.to_thread.run_sync(_decode_map, signal, raw, kind, gzipped, limit)
            else:
                mapped = _decode_map(signal, raw, kind, gzipped, limit)
        except OtlpRequestError as e:
            return self._refuse(e.status, e.message, encoding)
        c = self.counters
        if signal == "traces":
            c.spans += mapped.received
            c.spans_ignored += mapped.ignored
        else:
            c.logs += mapped.received
            c.logs_ignored += mapped.ignored
        rejected, errors, retry = await self.feed(mapped)
        if retry:  # a full disk, too many open sessions: the exporter resends, and what was written is dropped
            return self._refuse(503, f"could not write every record ({errors[0]}): retry", encoding,
                                {"Retry-After": "5"})
        rejected += mapped.rejected
        errors = mapped.errors + errors
        c.rejected += rejected
        if errors:
            c.last_error = errors[0]
        message = "; ".join(errors[:5]) if rejected else ""
        return Response(body.success(signal, kind, rejected, message), status_code=200,
                        media_type=body.JSON if kind == "json" else body.PROTOBUF)

    async def feed(self, mapped: Any) -> tuple[int, list[str], bool]:
        """Hand ``mapped`` (an ``integrations.otlp.mapping.Mapped``) to the handler, as protocol requests.

        Returns (items refused by the intake or the session state, their reasons, whether a
        refusal was transient: ``io_error``, ``overloaded`` or ``internal``, worth a resend).
        """
        from traced.integrations.otlp.mapping import CLIENT_ID

        frames: list[bytes] = []
        owners: dict[int, int] = {}
        """request id -> how many items it carries (an open carries all of its session's)."""
        rid = 0
        registry = self.handler.registry
        for plan in mapped.sessions.values():
            skill = plan.skill
            if not plan.skill_fixed:  # a hook-traced session keeps the skill its hooks gave it
                live = registry.sessions.get(plan.session_id) or registry.ended.get(plan.session_id)
                if live is not None:
                    skill = live.state.skill
            rid += 1
            owners[rid] = 0
            frames.append(_ENCODER.encode(protocol.Open(  # a new session starts at its first event
                id=rid, skill=skill, session_id=plan.session_id, owner_pid=-1, reopen=False,
                meta=dict(plan.labels), input={"source": "otlp"}, ts=plan.started)))
            for item in plan.items:
                rid += 1
                owners[rid] = 1
                frames.append(_ENCODER.encode(protocol.Emit(
                    id=rid, session_id=plan.session_id, phase=item.phase, payload=item.payload, ts=item.ts,
                    seq=item.key, late=True)))
            if plan.end is not None:
                rid += 1
                owners[rid] = 0
                frames.append(_ENCODER.encode(protocol.Close(
                    id=rid, session_id=plan.session_id, outcome=plan.end[0], ts=plan.end[1])))
        if not frames:
            return 0, [], False
        conn = Connection(peer=Peer(0, os.getuid(), os.getgid()), redactor=self.handler.redactor,
                          client_id=CLIENT_ID, client="otlp-receiver")
        out = bytearray()
        touched: set[Live] = set()
        before = registry.stats.events_written
        await self.handler.process(conn, frames, out, touched)
        if touched and self.handler.config.fsync == "always":
            try:
                await registry.durable(touched)
            except OSError as e:  # not durable (a trace deleted under its session, a failed fdatasync): resend
                log.error("otlp_not_durable", error=e.strerror, filename=e.filename)
                return 0, [f"io_error: fsync failed: {e.strerror}"], True
        self.counters.records_written += registry.stats.events_written - before
        rejected = 0
        errors: list[str] = []
        retry = False
        for reply in _replies(out):
            if isinstance(reply, protocol.Error) and reply.code in TRANSIENT:
                retry = True
            if isinstance(reply, protocol.Error) and owners.get(reply.id):
                rejected += 1
                if len(errors) < 5:
                    errors.append(f"{reply.code}: {reply.message}")
            elif isinstance(reply, protocol.Error):
                log.warning("otlp_session_refused", code=reply.code, message=reply.message)
                if len(errors) < 5:
                    errors.append(f"{reply.code}: {reply.message}")
        return rejected, errors, retry


def _decode_map(signal: Any, raw: bytes, kind: Any, gzipped: bool, limit: int) -> Any:
    """Inflate, parse and map one body (sans-IO; a worker thread runs it for large bodies)."""
    from traced.integrations.otlp import body, mapping

    data = body.gunzip(raw, limit) if gzipped else raw
    message = body.parse(signal, data, kind)
    return mapping.map_traces(message) if signal == "traces" else mapping.map_logs(message)


def _replies(out: bytearray) -> list[Any]:
    try:
        return [protocol.decode_reply(b) for b in Framer(len(out) + 8).feed(bytes(out))]
    except (msgspec.ValidationError, msgspec.DecodeError, FrameTooLarge):
        return []


HEADER_TIMEOUT = float(os.environ.get("TRACED_OTLP_HEADER_TIMEOUT", "10") or 10)
"""Seconds a connection may take to send a request's line and headers (slowloris): uvicorn arms
no timer before its first response, so half-sent requests would hold ``limit_concurrency``'s
slots for good and every real exporter would get 503."""


def _header_timeout_protocol() -> Any:
    """uvicorn's h11 protocol with a timer from the connection (or the last response) to a
    request's headers: a connection still without a whole request line and headers after
    ``HEADER_TIMEOUT`` is closed."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: Any = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _waiting(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(getattr(cycle, "response_complete", False))

        def _expire(self) -> None:
            self._header_timer = None
            if self._waiting() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting():
                self._arm()  # still (or again) without a whole request: the clock runs
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol
