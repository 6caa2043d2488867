"""Real OTLP request bodies for the receiver's tests, built with opentelemetry-proto.

``span``/``traces`` and ``claude_log``/``codex_log``/``logs`` build Export*ServiceRequest
messages; ``otlp_json`` renders one as OTLP/JSON the way exporters do (hex ids,
64-bit integers as strings, enums as integers).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

T0 = 1_764_500_000_000_000_000
"""2025-11-30T10:53:20Z in ns."""
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def put(kvs: Any, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        kv: KeyValue = kvs.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        elif isinstance(value, list):
            for v in value:
                kv.value.array_value.values.add().string_value = v
        else:
            kv.value.string_value = value


def span(span_id: str, name: str, attrs: dict[str, Any], *, start_ms: int = 0, end_ms: int = 100,
         parent: str = "", trace: bytes = TRACE, error: str | None = None) -> Span:
    s = Span(trace_id=trace, span_id=bytes.fromhex(span_id), name=name,
             start_time_unix_nano=T0 + start_ms * 1_000_000, end_time_unix_nano=T0 + end_ms * 1_000_000,
             kind=Span.SPAN_KIND_INTERNAL)
    if parent:
        s.parent_span_id = bytes.fromhex(parent)
    put(s.attributes, attrs)
    if error is not None:
        s.status.code = Status.STATUS_CODE_ERROR
        s.status.message = error
    return s


def traces(spans: list[Span], service: str | None = "review-bot") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if service is not None:
        put(rs.resource.attributes, {"service.name": service})
    rs.scope_spans.add().spans.extend(spans)
    return req


def agent_trace() -> ExportTraceServiceRequest:
    """invoke_agent (root) > chat (1830 in + 9000 cache read + 500 cache write) > execute_tool."""
    return traces([
        span("00f067aa0ba902b7", "invoke_agent reviewer", {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "reviewer",
            "gen_ai.conversation.id": "conv-42"}, start_ms=0, end_ms=1000),
        span("00f067aa0ba902b8", "chat claude-sonnet-4-5", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": 11330, "gen_ai.usage.output_tokens": 412,
            "gen_ai.usage.cache_read.input_tokens": 9000, "gen_ai.usage.cache_creation.input_tokens": 500,
            "gen_ai.response.finish_reasons": ["tool_use"]}, start_ms=10, end_ms=510, parent="00f067aa0ba902b7"),
        span("00f067aa0ba902b9", "execute_tool Bash", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "Bash", "gen_ai.tool.call.id": "toolu_01",
            "gen_ai.tool.call.arguments": '{"cmd": "git diff --stat"}',
            "gen_ai.tool.call.result": "3 files changed"}, start_ms=520, end_ms=561, parent="00f067aa0ba902b7"),
    ])


def log_record(name: str, attrs: dict[str, Any], *, ms: int = 0, body: str | None = None) -> LogRecord:
    rec = LogRecord(time_unix_nano=T0 + ms * 1_000_000, observed_time_unix_nano=T0 + ms * 1_000_000)
    if body is not None:
        rec.body.string_value = body
    put(rec.attributes, {"event.name": name, **attrs})
    return rec


def claude_log(session_id: str, *, ms: int = 0, prompt: str = "p-1") -> LogRecord:
    """A ``claude_code.api_request`` event as Claude Code sends it (numbers as strings)."""
    return log_record("api_request", {
        "session.id": session_id, "prompt.id": prompt, "model": "claude-sonnet-4-5-20250929",
        "input_tokens": "1830", "output_tokens": "412", "cache_read_tokens": "9000",
        "cache_creation_tokens": "500", "cost_usd": "0.0123", "duration_ms": "5120",
        "event.timestamp": "2025-11-30T10:53:20.000Z"}, ms=ms, body="claude_code.api_request")


def codex_log(conversation: str, *, ms: int = 0, status: int = 200) -> LogRecord:
    """A ``codex.api_request`` (no token counts: those come on the ``codex.sse_event``)."""
    extra = {"error.message": "upstream error: 500 Internal Server Error"} if status >= 400 else {}
    return log_record("codex.api_request", {
        "conversation.id": conversation, "model": "gpt-5-codex", "duration_ms": 870,
        "http.response.status_code": status, "attempt": 1, **extra}, ms=ms)


def codex_completed(conversation: str, *, ms: int = 0) -> LogRecord:
    """The ``codex.sse_event`` that ends a model call's stream, with its token counts."""
    return log_record("codex.sse_event", {
        "conversation.id": conversation, "model": "gpt-5-codex", "event.kind": "response.completed",
        "duration_ms": 2310, "input_token_count": 12000, "output_token_count": 640, "cached_token_count": 10240,
        "reasoning_token_count": 512, "tool_token_count": 0}, ms=ms)


def logs(records: list[LogRecord], service: str = "claude-code") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    put(rl.resource.attributes, {"service.name": service})
    rl.scope_logs.add().log_records.extend(records)
    return req


def _hex(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                import base64

                node[key] = base64.b64decode(value).hex()
            else:
                _hex(value)
    elif isinstance(node, list):
        for value in node:
            _hex(value)
    return node


def otlp_json(message: Any) -> dict[str, Any]:
    """OTLP/JSON: lowerCamelCase, hex ids, int64 as strings, enums as integers."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    result: dict[str, Any] = _hex(data)
    return result
