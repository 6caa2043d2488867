"""An OTLP/HTTP receiver for the exporter tests: a real HTTP server on 127.0.0.1 that decodes
every ``ExportTraceServiceRequest`` with the official generated classes, gunzips like a
collector, and can answer scripted statuses (503 + Retry-After, 401, 500…) or 413 for
bodies over a size limit, as collectors do."""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver:
    """Records every request; answers ``script`` statuses first (then 200), 413 above ``max_body`` bytes."""

    def __init__(self, fail_first: int = 0, retry_after: str | None = "1", *, script: list[int] | None = None,
                 max_body: int | None = None) -> None:
        self.script = list(script) if script is not None else [503] * fail_first
        self.retry_after = retry_after
        self.max_body = max_body
        self.attempts: list[tuple[float, int]] = []
        """(time, status answered) of every POST."""
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes = b"", retry: bool = False) -> None:
                self.send_response(status)
                if retry and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver.lock:
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    receiver.paths.append(self.path)
                    now = time.monotonic()
                    if receiver.script:
                        status = receiver.script.pop(0)
                        receiver.attempts.append((now, status))
                        self._answer(status, b"scripted", retry=status in (429, 502, 503, 504))
                        return
                    if receiver.max_body is not None and len(body) > receiver.max_body:
                        receiver.attempts.append((now, 413))
                        self._answer(413, b"too large")
                        return
                    receiver.attempts.append((now, 200))
                    receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1/traces"

    def spans(self) -> list[Span]:
        with self.lock:
            return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return [attrs(rs.resource.attributes) for r in self.requests for rs in r.resource_spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attrs(kvs: Any) -> dict[str, Any]:
    """KeyValues as a dict (arrays as lists)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind) if kind else None
    return out
