"""``traced serve --forward http://…/v1/traces``: a real daemon exporting OTLP/HTTP protobuf
to a receiver in this test (a tiny HTTP server on 127.0.0.1 decoding ExportTraceServiceRequest).

Needs ``opentelemetry-proto`` (``traced[otlp]``).
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, read_trace, wait_for

pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto not installed (traced-daemon[otlp])")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


class Receiver:
    """An OTLP/HTTP endpoint: records every request; can answer 503 + Retry-After first."""

    def __init__(self, fail_first: int = 0, retry_after: str = "1") -> None:
        self.fail_first = fail_first
        self.retry_after = retry_after
        self.attempts: list[tuple[float, int]] = []
        """(time, status answered) of every POST."""
        self.headers: list[dict[str, str]] = []
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if len(receiver.attempts) < receiver.fail_first:
                        receiver.attempts.append((time.monotonic(), 503))
                        self.send_response(503)
                        self.send_header("Retry-After", receiver.retry_after)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    receiver.attempts.append((time.monotonic(), 200))
                    receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> list[Span]:
        with self.lock:
            return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def resources(self) -> list[dict[str, Any]]:
        with self.lock:
            return [attrs(rs.resource.attributes) for r in self.requests for rs in r.resource_spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, kind) if kind else None
    return out


def _root(receiver: Receiver, name: str) -> Span:
    root: Span = wait_for(lambda: next((s for s in receiver.spans() if s.name == name and not s.parent_span_id), None),
                          what=f"the root span {name!r}")
    return root


def _caught_up(d: Daemon) -> tuple[str, dict[str, Any]]:
    """``traced status --json`` once the forwarder has nothing left to send (the receiver
    records a request before it answers, so the forwarder commits a moment after)."""

    def status() -> tuple[str, dict[str, Any]] | None:
        out = d.cli("status", "--json", check=True).stdout
        info: dict[str, Any] = json.loads(out)["forwarders"][0]
        return (out, info) if info["lag_records"] == 0 else None

    caught: tuple[str, dict[str, Any]] = wait_for(status, what="the forwarder caught up", every=0.1)
    return caught


def _sid_span(session_id: str, step: int | str) -> bytes:
    return hashlib.sha256(f"{session_id}:{step}".encode()).digest()[:8]


def test_span_tree_and_attributes(daemon_factory: Any, receiver: Receiver) -> None:
    url = f"{receiver.url}?header=X-Api-Key:${{FWD_TEST_KEY}}&project=proj1"
    d: Daemon = daemon_factory("--forward", url, env={"FWD_TEST_KEY": "k-123"})
    with d.client() as c, c.session(skill="review", input={"q": "why"}) as s:
        s.user_prompt("do the review")
        s.llm_call("claude-x", provider="anthropic", input_tokens=100, output_tokens=20, cache_read_tokens=5,
                   cache_write_tokens=7, cost_usd=0.01, latency_ms=1500, finish_reason="stop")
        bash = s.tool_call("Bash", {"cmd": "ls"}, call_id="c1")
        read = s.tool_call("Read", {"path": "x"})
        s.tool_result("Read", ok=False, error="nope")
        s.tool_result("Bash", ok=True, result_summary="3 files", call_id="c1", duration_ms=12)
        s.note("thinking", token="ghp_" + "a" * 36)  # redacted on disk, so redacted in the export
        s.hook("PreToolUse", name="guard", ok=True, duration_ms=3)
        grep = s.tool_call("Grep", {"p": "z"}, call_id="c9")  # never answered
        s.end("success", summary="done")
        sid = s.id
        trace = Path(s.trace_path)
    root = _root(receiver, "invoke_agent review")
    spans = receiver.spans()
    records = read_trace(trace)
    assert len(spans) == 5 and len({s.span_id for s in spans}) == 5, [s.name for s in spans]
    tid = hashlib.sha256(sid.encode()).digest()[:16]
    assert all(s.trace_id == tid for s in spans)
    assert root.span_id == _sid_span(sid, "root")
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)

    ra = attrs(root.attributes)
    assert ra["gen_ai.operation.name"] == "invoke_agent" and ra["gen_ai.agent.name"] == "review"
    assert ra["gen_ai.conversation.id"] == ra["session.id"] == sid
    assert (ra["traced.outcome"], ra["traced.summary"], ra["output.value"]) == ("success", "done", "done")
    assert json.loads(ra["input.value"]) == {"q": "why"}
    assert (ra["gen_ai.usage.input_tokens"], ra["gen_ai.usage.output_tokens"]) == (100, 20)
    assert ra["traced.cost_usd"] == pytest.approx(0.01)
    assert (ra["traced.steps"], ra["traced.tool_calls"], ra["traced.errors"]) == (len(records), 3, 1)
    assert root.status.code == Status.STATUS_CODE_OK
    assert root.start_time_unix_nano < root.end_time_unix_nano
    assert [e.name for e in root.events] == ["start", "user_prompt", "note", "hook", "end"]
    note = attrs(root.events[2].attributes)
    assert "ghp_" not in note["traced.payload"] and "redacted" in note["traced.payload"]
    hook = attrs(root.events[3].attributes)
    assert (hook["traced.hook.event"], hook["traced.hook.name"]) == ("PreToolUse", "guard")
    assert hook["traced.hook.ok"] is True
    assert hook["traced.step"] == records[8]["step"]

    by_name = {s.name: s for s in spans}
    llm = by_name["chat claude-x"]
    la = attrs(llm.attributes)
    assert llm.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert (la["gen_ai.provider.name"], la["gen_ai.request.model"]) == ("anthropic", "claude-x")
    assert (la["gen_ai.usage.input_tokens"], la["gen_ai.usage.output_tokens"]) == (100, 20)
    assert la["gen_ai.usage.cache_read.input_tokens"] == 5 and la["gen_ai.usage.cache_creation.input_tokens"] == 7
    assert la["traced.cost_usd"] == pytest.approx(0.01) and la["gen_ai.response.finish_reasons"] == ["stop"]
    assert llm.end_time_unix_nano - llm.start_time_unix_nano == 1_500_000_000
    assert la["traced.step"] == 3 and la["traced.turn"] == 1

    b = by_name["execute_tool Bash"]
    ba = attrs(b.attributes)
    assert b.span_id == _sid_span(sid, bash)
    assert (ba["gen_ai.tool.name"], ba["gen_ai.tool.call.id"], ba["traced.step"]) == ("Bash", "c1", bash)
    assert json.loads(ba["gen_ai.tool.call.arguments"]) == {"cmd": "ls"}
    assert ba["traced.ok"] is True and b.status.code == Status.STATUS_CODE_UNSET
    assert b.end_time_unix_nano > b.start_time_unix_nano
    r = by_name["execute_tool Read"]
    assert r.span_id == _sid_span(sid, read) and r.status.code == Status.STATUS_CODE_ERROR
    assert r.status.message == "nope"
    g = by_name["execute_tool Grep"]
    assert g.span_id == _sid_span(sid, grep) and attrs(g.attributes)["traced.unfinished"] is True
    assert g.end_time_unix_nano == root.end_time_unix_nano

    res = receiver.resources()[-1]
    assert (res["service.name"], res["openinference.project.name"]) == ("traced", "proj1")
    h = receiver.headers[-1]
    assert h["x-api-key"] == "k-123" and h["content-type"] == "application/x-protobuf"
    out, info = _caught_up(d)
    assert "k-123" not in out and info["url"].endswith("header=X-Api-Key:***")
    assert info["lag_records"] == 0 and info["sent"] == len(records)


def test_tool_span_across_a_daemon_restart(daemon_factory: Any, receiver: Receiver) -> None:
    d: Daemon = daemon_factory("--forward", receiver.url)
    with d.client() as c:
        opened = c.open("slow")
        call = c.emit(opened.session_id, "tool_call", {"tool": "Build", "args": {"target": "all"}, "call_id": "b1"})
        c.emit(opened.session_id, "llm_call", {"model": "m", "usage": {"input_tokens": 1, "output_tokens": 2}})
        wait_for(lambda: any(s.name == "chat m" for s in receiver.spans()), what="the span 'chat m'")
        assert d.stop(signal.SIGTERM) == 0
        d.start()  # the forwarder's memory of the open call is gone: rebuilt from the file
        c.emit(opened.session_id, "tool_result", {"tool": "Build", "ok": True, "call_id": "b1"})
        c.end(opened.session_id)
    _root(receiver, "invoke_agent slow")
    spans = receiver.spans()
    assert sorted(s.name for s in spans) == ["chat m", "execute_tool Build", "invoke_agent slow"]
    build = next(s for s in spans if s.name == "execute_tool Build")
    ba = attrs(build.attributes)
    assert build.span_id == _sid_span(opened.session_id, call)
    assert json.loads(ba["gen_ai.tool.call.arguments"]) == {"target": "all"} and ba["traced.step"] == call
    records = read_trace(Path(opened.dir) / "trace.jsonl")
    from traced.forward.spans import ts_ns

    assert build.start_time_unix_nano == ts_ns(records[call - 1]["ts"])


@pytest.mark.parametrize("client", ["httpx", "urllib"])
def test_503_with_retry_after_is_retried(daemon_factory: Any, client: str) -> None:
    receiver = Receiver(fail_first=2, retry_after="1")
    try:
        d: Daemon = daemon_factory("--forward", receiver.url, env={"TRACED_FORWARD_HTTP_CLIENT": client})
        with d.client() as c, c.session(skill="retry") as s:
            for i in range(3):
                s.llm_call(f"m{i}", input_tokens=i, output_tokens=1)
        _root(receiver, "invoke_agent retry")
        attempts = receiver.attempts
        assert [code for _, code in attempts[:3]] == [503, 503, 200]
        assert attempts[1][0] - attempts[0][0] >= 0.9, "Retry-After: 1 honoured"
        assert attempts[2][0] - attempts[1][0] >= 0.9
        spans = receiver.spans()
        assert sorted(s.name for s in spans) == ["chat m0", "chat m1", "chat m2", "invoke_agent retry"]
        _, info = _caught_up(d)
        assert info["retries"] >= 2 and info["last_error"] is None
        assert any(e.get("event") == "forward_failed" and "HTTP 503" in e.get("error", "") for e in d.logs())
    finally:
        receiver.close()


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from traced.forward.otlp import retry_after

    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = retry_after(later)
    assert value is not None and 25 <= value <= 31
