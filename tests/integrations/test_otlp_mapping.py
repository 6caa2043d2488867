"""The OTLP mapping and body codec, sans-IO: exact records from real opentelemetry-proto messages."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.integrations.otlp_bodies import (
    T0,
    TRACE,
    agent_trace,
    claude_log,
    codex_completed,
    codex_log,
    log_record,
    logs,
    otlp_json,
    span,
    traces,
)
from traced.errors import OtlpRequestError
from traced.integrations.otlp import body, mapping

S0 = T0 / 1e9 + 0.5e-6  # mapping.seconds: half a microsecond on top
TRACE_HEX = TRACE.hex()


def test_agent_trace_maps_to_llm_call_tool_pair_and_end() -> None:
    m = mapping.map_traces(agent_trace())
    assert (m.received, m.ignored, m.rejected) == (3, 0, 0)
    assert list(m.sessions) == ["conv-42"]
    plan = m.sessions["conv-42"]
    assert (plan.skill, plan.labels, plan.end) == ("review-bot", {"agent_name": "reviewer"}, ("success", S0 + 1.0))
    assert [(it.phase, round(it.ts - S0, 6)) for it in plan.items] == [
        ("llm_call", 0.51), ("tool_call", 0.52), ("tool_result", 0.561)]
    llm, call, result = (it.payload for it in plan.items)
    assert llm == {
        "provider": "anthropic", "model": "claude-sonnet-4-5-20250929",
        # gen_ai.usage.input_tokens 11330 includes 9000 read + 500 written: traced's excludes them
        "usage": {"input_tokens": 1830, "output_tokens": 412, "cache_read_tokens": 9000, "cache_write_tokens": 500},
        "latency_ms": 500.0, "finish_reason": "tool_use", "trace_id": TRACE_HEX, "span_id": "00f067aa0ba902b8"}
    assert call == {"tool": "Bash", "args": {"cmd": "git diff --stat"}, "call_id": "toolu_01", "kind": "tool",
                    "trace_id": TRACE_HEX, "span_id": "00f067aa0ba902b9"}
    assert result == {"tool": "Bash", "ok": True, "duration_ms": 41.0, "call_id": "toolu_01",
                      "result_summary": "3 files changed", "response": "3 files changed",
                      "trace_id": TRACE_HEX, "span_id": "00f067aa0ba902b9"}


def test_keys_are_deterministic_and_distinct() -> None:
    a = [it.key for it in mapping.map_traces(agent_trace()).sessions["conv-42"].items]
    b = [it.key for it in mapping.map_traces(agent_trace()).sessions["conv-42"].items]
    assert a == b
    assert len(set(a)) == 3
    assert all(0 < k < 2**63 for k in a)


def test_openinference_spans_and_token_counts() -> None:
    req = traces([
        span("1000000000000001", "ChatAnthropic", {
            "openinference.span.kind": "LLM", "llm.model_name": "claude-haiku-4-5", "llm.provider": "anthropic",
            "llm.token_count.prompt": 1200, "llm.token_count.completion": 30,
            "llm.token_count.prompt_details.cache_read": 1000, "llm.cost.total": 0.0021, "session.id": "s-oi"},
            end_ms=250),
        span("1000000000000002", "search", {
            "openinference.span.kind": "TOOL", "tool.name": "search", "input.value": '{"q": "otlp"}',
            "output.value": "no hits"}, start_ms=300, end_ms=310, error="timeout"),
        span("1000000000000003", "chain", {"openinference.span.kind": "CHAIN"}),
        span("1000000000000004", "GET /", {"http.request.method": "GET"}),
    ], service="unknown_service:python")
    m = mapping.map_traces(req)
    assert (m.received, m.ignored, m.rejected) == (4, 2, 0)
    plan = m.sessions["s-oi"]  # the TOOL span has no id of its own: its trace's
    assert plan.skill == "otlp"
    llm, call, result = (it.payload for it in plan.items)
    assert llm["usage"] == {"input_tokens": 200, "output_tokens": 30, "cache_read_tokens": 1000}
    assert (llm["model"], llm["provider"], llm["cost_usd"], llm["latency_ms"]) == (
        "claude-haiku-4-5", "anthropic", 0.0021, 250.0)
    assert call["args"] == {"q": "otlp"}
    assert call["call_id"] == "1000000000000002"  # no tool call id: the span id pairs call and result
    assert {k: result[k] for k in ("ok", "error", "duration_ms", "call_id")} == {
        "ok": False, "error": "timeout", "duration_ms": 10.0, "call_id": "1000000000000002"}
    assert plan.end is None


def test_exclusive_input_counts_are_kept() -> None:
    """A sender that puts Anthropic's (cache-exclusive) count in gen_ai.usage.input_tokens is not driven negative."""
    req = traces([span("2000000000000001", "chat", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5, "gen_ai.usage.cache_read.input_tokens": 9000})])
    (item,) = mapping.map_traces(req).sessions[TRACE_HEX].items
    assert item.payload["usage"] == {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 9000}


def test_session_and_skill_resolution() -> None:
    other = bytes.fromhex("11111111111111111111111111111111")
    req = traces([
        span("3000000000000001", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}),
        span("3000000000000002", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                          "gen_ai.agent.name": "Triage Agent"}, trace=other),
        span("3000000000000003", "chat", {"gen_ai.operation.name": "text_completion", "gen_ai.request.model": "m",
                                          "session.id": "has space/and slash"}, trace=other),
    ], service=None)
    m = mapping.map_traces(req)
    derived = "otlp-" + __import__("hashlib").sha256(b"has space/and slash").hexdigest()[:32]
    assert list(m.sessions) == [TRACE_HEX, derived]
    assert m.sessions[TRACE_HEX].skill == "otlp"
    assert m.sessions[derived].skill == "Triage-Agent"
    assert m.sessions[derived].labels == {"otlp_session_id": "has space/and slash"}
    assert len(m.sessions[derived].items) == 2  # the trace's other span follows its session.id


def test_nested_agent_does_not_end_and_failed_root_fails() -> None:
    req = traces([
        span("4000000000000001", "invoke_agent", {"gen_ai.operation.name": "invoke_agent"}, end_ms=900,
             error="boom"),
        span("4000000000000002", "invoke_agent sub", {"gen_ai.operation.name": "invoke_agent"},
             parent="4000000000000001"),
    ])
    plan = mapping.map_traces(req).sessions[TRACE_HEX]
    assert plan.end == ("failure", S0 + 0.9)
    assert plan.items == []


def test_invalid_ids_are_rejected_not_fatal() -> None:
    bad = span("5000000000000001", "chat", {"gen_ai.operation.name": "chat"})
    bad.trace_id = b"\0" * 16
    short = span("5000000000000002", "chat", {"gen_ai.operation.name": "chat"})
    short.span_id = b"\1\2"
    good = span("5000000000000003", "chat", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    m = mapping.map_traces(traces([bad, short, good]))
    assert (m.received, m.rejected, len(m.sessions[TRACE_HEX].items)) == (3, 2, 1)
    assert m.errors == ["span 'chat': invalid trace or span id"] * 2


def test_claude_code_api_request() -> None:
    sid = "0b0e6f8e-1111-2222-3333-444455556666"
    m = mapping.map_logs(logs([claude_log(sid), log_record("user_prompt", {"session.id": sid},
                                                             body="claude_code.user_prompt")]))
    assert (m.received, m.ignored, m.rejected) == (2, 1, 0)
    plan = m.sessions[sid]
    assert (plan.skill, plan.skill_fixed) == ("claude-code", False)
    (item,) = plan.items
    assert (item.phase, item.ts) == ("llm_call", S0)
    assert item.payload == {
        "provider": "anthropic", "model": "claude-sonnet-4-5-20250929",
        "usage": {"input_tokens": 1830, "output_tokens": 412, "cache_read_tokens": 9000, "cache_write_tokens": 500},
        "cost_usd": 0.0123, "latency_ms": 5120.0, "prompt_id": "p-1", "source": "claude_code.api_request"}


def test_codex_calls_from_sse_completed_and_failed_requests() -> None:
    req = logs([codex_log("conv-c", ms=0), codex_completed("conv-c", ms=1), codex_log("conv-c", ms=2, status=500),
                log_record("codex.sse_event", {"conversation.id": "conv-c", "event.kind": "response.created"}),
                log_record("codex.api_request", {"model": "x", "http.response.status_code": 503})],
               service="codex_cli_rs")
    m = mapping.map_logs(req)
    assert (m.received, m.ignored, m.rejected) == (5, 2, 1)
    assert m.errors == ["codex.api_request without conversation.id"]
    plan = m.sessions["conv-c"]
    assert plan.skill == "codex"
    completed, failed = (it.payload for it in plan.items)
    assert completed == {  # OpenAI's input count includes the cached tokens: traced's does not
        "provider": "openai", "model": "gpt-5-codex",
        "usage": {"input_tokens": 1760, "output_tokens": 640, "cache_read_tokens": 10240},
        "latency_ms": 2310.0, "reasoning_tokens": 512, "source": "codex.sse_event"}
    assert failed == {"provider": "openai", "model": "gpt-5-codex", "usage": {}, "latency_ms": 870.0,
                      "status_code": 500, "error": "upstream error: 500 Internal Server Error",
                      "source": "codex.api_request"}


def test_log_keys_tell_records_apart() -> None:
    m = mapping.map_logs(logs([claude_log("s", ms=0), claude_log("s", ms=1), claude_log("s", ms=0)]))
    keys = [it.key for it in sorted(m.sessions["s"].items, key=lambda it: it.order)]
    assert keys[0] == keys[2] != keys[1]  # the same record twice has one key


# --- bodies -----------------------------------------------------------------------------


def test_json_body_with_hex_ids_string_int64_and_int_enums() -> None:
    doc = otlp_json(agent_trace())
    chat = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    assert chat["traceId"] == TRACE_HEX and chat["parentSpanId"] == "00f067aa0ba902b7"
    assert chat["startTimeUnixNano"] == str(T0 + 10_000_000) and chat["kind"] == 1
    tokens = next(a for a in chat["attributes"] if a["key"] == "gen_ai.usage.input_tokens")
    assert tokens["value"] == {"intValue": "11330"}
    doc["someFieldFromTheFuture"] = {"x": 1}  # receivers ignore unknown fields
    parsed = body.parse("traces", json.dumps(doc).encode(), "json")
    assert parsed == agent_trace()


def test_json_body_with_numbers_for_int64() -> None:
    doc = otlp_json(traces([span("6000000000000001", "chat", {"gen_ai.operation.name": "chat",
                                                              "gen_ai.usage.output_tokens": 7})]))
    s = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s["startTimeUnixNano"] = int(s["startTimeUnixNano"])
    s["attributes"][1]["value"]["intValue"] = 7
    parsed = body.parse("traces", json.dumps(doc).encode(), "json")
    assert isinstance(parsed, ExportTraceServiceRequest)
    assert parsed.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano == T0


@pytest.mark.parametrize(("data", "encoding", "fragment"), [
    (b"\xff\xff\xff", "protobuf", "bad protobuf body"),
    (b"{not json", "json", "bad JSON body"),
    (b"[1, 2]", "json", "not an object"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}', "json", "bad OTLP/JSON body"),
    (b"[" * 100_000 + b"]" * 100_000, "json", "bad JSON body"),  # nested too deep: 400, not a 500
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "json", "bad"),
])
def test_bad_bodies_are_400(data: bytes, encoding: body.Encoding, fragment: str) -> None:
    with pytest.raises(OtlpRequestError) as e:
        body.parse("traces", data, encoding)
    assert e.value.status == 400
    assert fragment in e.value.message


def test_media_types_and_encodings() -> None:
    assert body.media_type("application/x-protobuf") == "protobuf"
    assert body.media_type("application/json; charset=utf-8") == "json"
    assert body.check_encoding("gzip") is True
    assert body.check_encoding(None) is False
    for bad in ("text/plain", None, "application/grpc"):
        with pytest.raises(OtlpRequestError) as e:
            body.media_type(bad)
        assert e.value.status == 415
    with pytest.raises(OtlpRequestError) as e:
        body.check_encoding("br")
    assert e.value.status == 415


def _bomb(size: int) -> bytes:
    """``size`` zero bytes gzipped, made in 1 MiB steps (so making it costs no memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1024 * 1024)
    return b"".join([*(packer.compress(chunk) for _ in range(size // len(chunk))), packer.flush()])


def test_gunzip_bounds_memory_on_a_bomb() -> None:
    bomb = _bomb(64 * 1024 * 1024)  # 64 MiB from ~64 KiB
    assert len(bomb) < 128 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(OtlpRequestError) as e:
            body.gunzip(bomb, 1024 * 1024)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert e.value.status == 413
    assert peak < 8 * 1024 * 1024, peak  # the limit and some change, never near 64 MiB


def test_gunzip_members_truncation_and_garbage() -> None:
    data = b"x" * 1000
    assert body.gunzip(gzip.compress(data), 2000) == data
    assert body.gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    assert body.gunzip(gzip.compress(data), 1000) == data  # exactly at the limit
    for bad, status in ((gzip.compress(data)[:-12], 400), (b"plain text", 400),
                        (zlib.compress(data), 400), (gzip.compress(data), 413)):
        with pytest.raises(OtlpRequestError) as e:
            body.gunzip(bad, 999 if status == 413 else 5000)
        assert e.value.status == status


def test_responses() -> None:
    assert body.success("traces", "protobuf") == b""
    assert body.success("logs", "json") == b"{}"
    partial = ExportTraceServiceResponse.FromString(body.success("traces", "protobuf", 2, "bad ids"))
    assert (partial.partial_success.rejected_spans, partial.partial_success.error_message) == (2, "bad ids")
    assert json.loads(body.success("logs", "json", 1, "x")) == {
        "partialSuccess": {"rejectedLogRecords": "1", "errorMessage": "x"}}
    logs_partial = ExportLogsServiceResponse.FromString(body.success("logs", "protobuf", 3))
    assert logs_partial.partial_success.rejected_log_records == 3
    assert body.status_body(401, "no", "protobuf") == b"\x08\x10\x12\x02no"  # google.rpc.Status{16, "no"}
    assert json.loads(body.status_body(413, "big", "json")) == {"code": 8, "message": "big"}


def test_json_with_base64_ids_and_snake_case_keys_is_accepted() -> None:
    """open-telemetry/opentelemetry-collector#8720: proto3-JSON (base64 ids, snake_case) from some exporters;
    opentelemetry-swift#537 sent base64 too. Both spellings parse to the same spans as hex lowerCamelCase."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(agent_trace(), preserving_proto_field_name=True)
    assert "trace_id" in doc["resource_spans"][0]["scope_spans"][0]["spans"][0]
    assert body.parse("traces", json.dumps(doc).encode(), "json") == agent_trace()


def test_empty_ids_are_rejected_and_an_empty_parent_is_a_root() -> None:
    """lmnr-ai/lmnr#1787: an empty trace or span id is a rejected item (never a crash); an empty parent a root."""
    doc = otlp_json(agent_trace())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[1]["spanId"] = ""
    spans[2]["traceId"] = ""
    m = mapping.map_traces(body.parse("traces", json.dumps(doc).encode(), "json"))  # type: ignore[arg-type]
    assert (m.rejected, [it.phase for it in m.sessions["conv-42"].items]) == (2, [])
    assert m.sessions["conv-42"].end == ("success", S0 + 1.0)


def test_log_with_a_malformed_trace_id_still_maps() -> None:
    """Logflare/logflare#3683: hex text in the bytes field makes strict receivers refuse the whole batch;
    the log's trace context is not what traced maps, so the event lands."""
    rec = claude_log("s")
    rec.trace_id = TRACE.hex().encode()  # 32 bytes of ASCII hex, not 16 raw bytes
    m = mapping.map_logs(logs([rec]))
    assert (m.rejected, len(m.sessions["s"].items)) == (0, 1)
