"""OTLP/HTTP protobuf sink (``traced-daemon[otlp]``: opentelemetry-proto and httpx, no SDK).

A batch of records becomes one ``ExportTraceServiceRequest`` (encoded by
:mod:`traced.forward.otlpwire`), gzipped, POSTed with ``Content-Type:
application/x-protobuf``. Which spans a record completes is decided by
:mod:`traced.forward.spans`; the small per-session context that needs (start time,
tool calls awaiting their result) is kept for recently active sessions and rebuilt
from the trace file when missing, so it survives restarts without being stored.

Responses, as the OTLP/HTTP specification says:

- 2xx delivers (a ``partial_success`` with rejected spans is logged and counted as dropped);
- 429, 502, 503 and 504 are retried with backoff, honouring ``Retry-After`` (seconds
  or an HTTP date) of a second or more; so are network errors;
- 400, 401, 403 and 404 mean the destination is misconfigured (endpoint, path, token):
  nothing is acknowledged or dropped, ``traced status`` shows a configuration error,
  and the request is tried again only every :data:`CONFIG_RETRY` seconds;
- 413: a batch of several records is halved; a single record's spans are sent again
  with what is large shrunk (:data:`otlpwire.SHRUNK`, then :data:`otlpwire.MINIMAL`:
  long strings cut with ``…``, events capped, ``traced.truncated = true``), so a
  session's root span always goes; only a record still refused at the minimum is dropped;
- any other status cannot succeed by retrying: the batch is dropped and counted.

The HTTP client is ``httpx`` (declared by the ``otlp`` extra), else the standard
library's urllib in a worker thread. ``TRACED_FORWARD_HTTP_CLIENT=urllib|httpx``
forces one.
"""

from __future__ import annotations

import email.utils
import importlib
import os
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import anyio
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from traced import __version__
from traced.forward import otlpwire
from traced.forward.engine import Batch, SendResult
from traced.forward.source import Line
from traced.forward.spans import SessionCtx, SpanBuilder, decode, rebuild
from traced.forward.urls import Destination

log = structlog.get_logger("traced.forward.otlp")

TIMEOUT: Final = 10.0
CTX_CACHE: Final = 20000
RETRYABLE: Final = frozenset({429, 502, 503, 504})
CONFIG_ERRORS: Final = frozenset({400, 401, 403, 404})
MIN_RETRY_AFTER: Final = 1.0
"""A shorter ``Retry-After`` is replaced by the exponential backoff (0.5 s doubling to 30 s)."""
CONFIG_RETRY: Final = 300.0
"""Seconds between tries while the destination answers with a configuration error."""
LEVELS: Final = (otlpwire.FULL, otlpwire.SHRUNK, otlpwire.MINIMAL)
GZIP_LEVEL: Final = 1
"""Fast: a batch of 512 records compresses in a few ms and still shrinks ~5x."""


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header (delta seconds or HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(slots=True)
class HttpResponse:
    """What the sink needs of an HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes


def _load_httpx() -> Any:
    for name in ("httpx", "httpx2"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


class HttpPoster:
    """POST bodies with httpx (pooled, async) or urllib (in a worker thread)."""

    def __init__(self, timeout: float = TIMEOUT, prefer: str | None = None) -> None:
        self.timeout = timeout
        choice = (prefer or os.environ.get("TRACED_FORWARD_HTTP_CLIENT", "")).lower()
        self._httpx = None if choice == "urllib" else _load_httpx()
        self.impl = self._httpx.__name__ if self._httpx is not None else "urllib"
        self._client: Any = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResponse:
        """Send; raises OSError (or the client's error) when no response came back."""
        if self._httpx is not None:
            if self._client is None:
                self._client = self._httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
            r = await self._client.post(url, content=body, headers=headers)
            return HttpResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        return await anyio.to_thread.run_sync(self._post_sync, url, body, headers, abandon_on_cancel=True)

    def _post_sync(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResponse:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as e:
            with e:
                return HttpResponse(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())

    async def aclose(self) -> None:
        """Close pooled connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class OtlpSink:
    """Exports spans made from trace records to an OTLP/HTTP collector."""

    def __init__(self, dest: Destination, max_records: int = 512, max_bytes: int = 2 << 20,
                 http: HttpPoster | None = None, *, capture_content: bool = False) -> None:
        self.dest = dest
        self.max_records = self._default_max = max_records
        self.max_bytes = max_bytes
        self.http = http or HttpPoster(timeout=dest.timeout)
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"traced/{__version__}",
                        **({"Content-Encoding": "gzip"} if dest.gzip else {}), **dest.headers}
        self.project = dest.options.get("project") or None
        self.capture_content = capture_content
        self.resource: dict[str, Any] = {
            "service.version": __version__, "host.name": socket.gethostname(),
            "telemetry.sdk.name": "traced", "telemetry.sdk.version": __version__,
            "openinference.project.name": self.project,
            **dest.resource,
        }
        self.resource["service.name"] = dest.resource.get("service.name") or "traced"
        self.ctx: OrderedDict[str, SessionCtx] = OrderedDict()
        self.level = 0
        """Index into :data:`LEVELS`: how much a single record's spans are shrunk after 413s."""
        self.rejected = 0
        self.unmappable = 0
        self.config_error: str | None = None

    def _encode(self, batch: Batch) -> tuple[bytes, int, dict[str, SessionCtx]]:
        """The body for the spans the batch completes (blocking: reads files), and each session's new context."""
        spans: list[bytes] = []
        updates: dict[str, SessionCtx] = {}
        grouped: dict[int, list[Line]] = {}
        limits = LEVELS[self.level]
        for index, line in batch.lines:
            grouped.setdefault(index, []).append(line)
        for index, lines in grouped.items():
            ref = batch.sessions[index]
            first = lines[0]
            ctx = self.ctx.get(ref.dir)
            if ctx is None or ctx.step != first.step - 1:
                ctx = rebuild(ref.dir, ref.skill, ref.session_id, first.start) if first.start else SessionCtx()
            else:
                ctx = ctx.copy()
            builder = SpanBuilder(ref.dir, ref.skill, ref.session_id, ctx, capture_content=self.capture_content)
            for line in lines:
                rec = decode(line.raw)
                if rec is None:
                    continue
                try:
                    for span in builder.feed(rec, line.start, line.end, pos=line.step):
                        if self.level:
                            span.attrs["traced.truncated"] = True
                        spans.append(otlpwire.span(span, limits))
                except Exception:  # one odd record must not wedge the whole destination
                    self.unmappable += 1
                    log.exception("forward_record_unmappable", session_dir=ref.dir, step=line.step)
            updates[ref.dir] = builder.ctx
        if not spans:
            return b"", 0, updates
        body = otlpwire.request(spans, self.resource, "traced", __version__)
        if self.dest.gzip:
            gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            body = gz.compress(body) + gz.flush()
        return body, len(spans), updates

    def _commit_ctx(self, updates: dict[str, SessionCtx]) -> None:
        for d, ctx in updates.items():
            if ctx.ended:
                self.ctx.pop(d, None)  # nothing left to pair; a resumed session rebuilds it
                continue
            self.ctx[d] = ctx
            self.ctx.move_to_end(d)
        while len(self.ctx) > CTX_CACHE:
            self.ctx.popitem(last=False)

    async def send(self, batch: Batch) -> SendResult:
        """Build the spans, POST them, interpret the answer (see the module docstring)."""
        n = len(batch)
        body, nspans, updates = await anyio.to_thread.run_sync(self._encode, batch)
        if nspans == 0:
            self._commit_ctx(updates)
            return SendResult([True] * n)
        try:
            resp = await self.http.post(self.dest.url, body, self.headers)
        except Exception as e:
            text = str(e) or type(e).__name__
            return SendResult([False] * n, f"POST {self.dest.display}: {type(e).__name__}: {text}")
        status = resp.status
        if 200 <= status < 300:
            self._commit_ctx(updates)
            self.max_records = min(self._default_max, self.max_records * 2)  # after a 413
            self.level = 0
            self.config_error = None
            rejected = self._rejected(resp.body)
            return SendResult([True] * n, dropped=rejected)
        detail = f"HTTP {status} from {self.dest.display}: {resp.body[:200].decode('utf-8', 'replace').strip()}"
        if status == 413:
            if n > 1:
                self.max_records = max(1, n // 2)
                return SendResult([False] * n, detail, retry_after=0.0)
            if self.level + 1 < len(LEVELS):
                self.level += 1
                log.warning("forward_record_shrunk", dest=self.dest.display, level=self.level, bytes=len(body))
                return SendResult([False] * n, detail, retry_after=0.0)
            log.error("forward_record_dropped", dest=self.dest.display, reason=detail)
            self.level = 0
            self._commit_ctx(updates)
            return SendResult([True] * n, dropped=n)
        if status in RETRYABLE:
            wait = retry_after(resp.headers.get("retry-after"))
            if wait is not None and wait < MIN_RETRY_AFTER:
                wait = None  # "Retry-After: 0" again and again would be a retry storm: back off instead
            return SendResult([False] * n, detail, retry_after=wait)
        if status in CONFIG_ERRORS:
            self.config_error = detail
            log.error("forward_misconfigured", dest=self.dest.display, reason=detail, retry_in=CONFIG_RETRY)
            return SendResult([False] * n, detail, retry_after=CONFIG_RETRY, config_error=True)
        log.error("forward_batch_dropped", dest=self.dest.display, reason=detail, records=n)
        self._commit_ctx(updates)
        return SendResult([True] * n, dropped=n)

    def _rejected(self, body: bytes) -> int:
        if not body:
            return 0
        try:
            parsed = ExportTraceServiceResponse.FromString(body)
        except Exception:
            return 0
        rejected = int(parsed.partial_success.rejected_spans)
        if rejected:
            self.rejected += rejected
            log.warning("forward_spans_rejected", dest=self.dest.display, rejected=rejected,
                        message=parsed.partial_success.error_message)
        return rejected

    async def salvage(self, grace: float) -> list[bool] | None:
        """Nothing to salvage: unacknowledged spans are re-sent with the same ids."""
        return None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()
