"""The OTLP exporter against the specs, without a daemon: records in a real trace file, the
real sink, bodies decoded with the official ``opentelemetry-proto`` classes.

Attribute names are checked by their names in the GenAI semantic conventions
(open-telemetry/semantic-conventions-genai: model/gen-ai/registry.yaml, model/mcp/registry.yaml),
OpenInference's (Phoenix) and the OTLP exporter specification's environment variables.
"""

from __future__ import annotations

import datetime
import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto not installed (pip install 'traced[otlp]')")

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.forward.otlp_receiver import Receiver, attrs
from traced.errors import ForwardURLError
from traced.forward import otlpwire
from traced.forward.engine import Batch, BatchSession
from traced.forward.otlp import CONFIG_RETRY, OtlpSink
from traced.forward.source import read_after
from traced.forward.urls import parse

SID = "s-1"


def _records(*items: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"ts": f"2026-11-30T10:00:{i:02d}.000000Z", "skill": "rev", "session_id": SID, "step": i + 1,
             "turn": 1, "phase": phase, "payload": payload} for i, (phase, payload) in enumerate(items)]


def _batch(sdir: Path, records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> Batch:
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if meta is not None:
        (sdir / "meta.json").write_text(json.dumps(meta))
    res = read_after(str(sdir), 0, 0, 10_000, 1 << 30)
    batch = Batch()
    batch.sessions.append(BatchSession(str(sdir), "rev", SID))
    batch.reads.append(res)
    batch.lines.extend((0, line) for line in res.lines)
    return batch


def _export(tmp_path: Path, records: list[dict[str, Any]], *, content: bool = False,
            meta: dict[str, Any] | None = None) -> dict[str, Span]:
    sink = OtlpSink(parse("http://127.0.0.1:9/v1/traces", environ={}), capture_content=content)
    body, n, _ = sink._encode(_batch(tmp_path / SID, records, meta))
    req = ExportTraceServiceRequest.FromString(gzip.decompress(body))
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == n
    return {s.name: s for s in spans}


ANTHROPIC_CALL = {"model": "claude-sonnet-4-5", "provider": "anthropic",
                  "usage": {"input_tokens": 1830, "output_tokens": 200, "cache_read_tokens": 9000,
                            "cache_write_tokens": 500}}


def test_input_tokens_include_cache_reads_and_writes(tmp_path: Path) -> None:
    spans = _export(tmp_path, _records(("start", {}), ("llm_call", ANTHROPIC_CALL), ("llm_call", ANTHROPIC_CALL),
                                       ("end", {"outcome": "success"})))
    llm = attrs(spans["chat claude-sonnet-4-5"].attributes)
    assert llm["gen_ai.usage.input_tokens"] == 11_330
    assert llm["gen_ai.usage.cache_read.input_tokens"] == 9000
    assert llm["gen_ai.usage.cache_creation.input_tokens"] == 500
    assert llm["gen_ai.usage.output_tokens"] == 200
    # OpenInference (Phoenix): the same totals, under its names
    assert llm["llm.token_count.prompt"] == 11_330 and llm["llm.token_count.completion"] == 200
    assert llm["llm.token_count.total"] == 11_530
    assert llm["llm.token_count.prompt_details.cache_read"] == 9000
    assert llm["llm.token_count.prompt_details.cache_write"] == 500
    root = attrs(spans["invoke_agent rev"].attributes)
    assert (root["gen_ai.usage.input_tokens"], root["gen_ai.usage.cache_read.input_tokens"]) == (22_660, 18_000)
    assert (root["gen_ai.usage.cache_creation.input_tokens"], root["llm.token_count.prompt"]) == (1000, 22_660)


def test_tokens_without_cache_figures(tmp_path: Path) -> None:
    call = {"model": "gpt-x", "provider": "openai", "usage": {"input_tokens": 40, "output_tokens": 2}}
    llm = attrs(_export(tmp_path, _records(("llm_call", call)))["chat gpt-x"].attributes)
    assert llm["gen_ai.usage.input_tokens"] == 40 and llm["llm.token_count.prompt"] == 40
    assert "gen_ai.usage.cache_read.input_tokens" not in llm and "llm.token_count.prompt_details.cache_read" not in llm


@pytest.mark.parametrize(("given", "sent"), [
    ("anthropic", "anthropic"), ("openai", "openai"), ("bedrock", "aws.bedrock"), ("aws-bedrock", "aws.bedrock"),
    ("gemini", "gcp.gemini"), ("vertex", "gcp.vertex_ai"), ("vertex_ai", "gcp.vertex_ai"),
    ("google", "gcp.gen_ai"), ("azure", "azure.ai.openai"), ("Azure-AI-Inference", "azure.ai.inference"),
    ("mistral", "mistral_ai"), ("xai", "x_ai"), ("watsonx", "ibm.watsonx.ai"), ("moonshot", "moonshot_ai"),
    ("OpenRouter", "openrouter"), (None, "_OTHER"), ("", "_OTHER"),
])
def test_provider_name_is_normalised_and_always_set(tmp_path: Path, given: str | None, sent: str) -> None:
    call = {"model": "m", "usage": {"input_tokens": 1, "output_tokens": 1}, **({"provider": given} if given else {})}
    spans = _export(tmp_path, _records(("llm_call", call), ("end", {"outcome": "success"})))
    assert attrs(spans["chat m"].attributes)["gen_ai.provider.name"] == sent
    assert attrs(spans["invoke_agent rev"].attributes)["gen_ai.provider.name"] == sent


def test_agent_span_provider_when_no_llm_call(tmp_path: Path) -> None:
    spans = _export(tmp_path, _records(("start", {}), ("end", {"outcome": "success"})))
    assert attrs(spans["invoke_agent rev"].attributes)["gen_ai.provider.name"] == "_OTHER"


def test_failed_tool_and_llm_spans_carry_error_type_and_status(tmp_path: Path) -> None:
    spans = _export(tmp_path, _records(
        ("tool_call", {"tool": "Bash", "args": {"cmd": "rm"}, "call_id": "a"}),
        ("tool_result", {"tool": "Bash", "ok": False, "error": "denied", "call_id": "a"}),
        ("tool_call", {"tool": "Edit", "args": {}, "call_id": "b"}),
        ("tool_result", {"tool": "Edit", "ok": False, "error": "timeout", "error_type": "timeout", "call_id": "b"}),
        ("tool_call", {"tool": "Read", "args": {}, "call_id": "c"}),
        ("tool_result", {"tool": "Read", "ok": True, "call_id": "c"}),
        ("llm_call", {"model": "bad", "provider": "openai", "error": "overloaded", "error_type": "529",
                      "usage": {"input_tokens": 0, "output_tokens": 0}}),
        ("tool_call", {"tool": "Grep", "args": {}, "call_id": "d"}),
        ("end", {"outcome": "failure", "reason": "crashed"}),
    ))
    for name, etype, message in [("execute_tool Bash", "_OTHER", "denied"), ("execute_tool Edit", "timeout", "timeout"),
                                 ("chat bad", "529", "overloaded"), ("execute_tool Grep", "_OTHER",
                                                                    "no tool_result before end"),
                                 ("invoke_agent rev", "failure", "failure: crashed")]:
        span = spans[name]
        assert attrs(span.attributes)["error.type"] == etype, name
        assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, message), name
    ok = spans["execute_tool Read"]
    assert "error.type" not in attrs(ok.attributes) and ok.status.code == Status.STATUS_CODE_UNSET


def test_tool_type_mcp_attributes_and_agent_version(tmp_path: Path) -> None:
    spans = _export(tmp_path, _records(
        ("tool_call", {"tool": "search_issues", "kind": "mcp", "server": "github", "args": {"q": "x"}, "call_id": "m"}),
        ("tool_result", {"tool": "search_issues", "ok": True, "call_id": "m", "result_summary": "3 issues"}),
        ("tool_call", {"tool": "Bash", "kind": "tool", "args": {"cmd": "ls"}, "call_id": "t"}),
        ("tool_result", {"tool": "Bash", "ok": True, "call_id": "t"}),
        ("end", {"outcome": "success"}),
    ), meta={"session_id": SID, "skill": "rev", "skill_version": 7})
    mcp = attrs(spans["execute_tool search_issues"].attributes)
    assert (mcp["gen_ai.operation.name"], mcp["gen_ai.tool.name"], mcp["gen_ai.tool.call.id"]) == (
        "execute_tool", "search_issues", "m")
    assert (mcp["gen_ai.tool.type"], mcp["mcp.method.name"], mcp["traced.tool.server"]) == (
        "extension", "tools/call", "github")
    bash = attrs(spans["execute_tool Bash"].attributes)
    assert bash["gen_ai.tool.type"] == "function" and "mcp.method.name" not in bash
    root = attrs(spans["invoke_agent rev"].attributes)
    assert (root["gen_ai.agent.name"], root["gen_ai.agent.version"], root["gen_ai.operation.name"]) == (
        "rev", "7", "invoke_agent")
    assert root["gen_ai.conversation.id"] == SID


def test_agent_version_text(tmp_path: Path) -> None:
    spans = _export(tmp_path, _records(("end", {"outcome": "success"})),
                    meta={"session_id": SID, "skill_version_text": "2.1.0-beta"})
    assert attrs(spans["invoke_agent rev"].attributes)["gen_ai.agent.version"] == "2.1.0-beta"


@pytest.mark.parametrize("content", [False, True])
def test_tool_arguments_results_and_prompts_are_opt_in(tmp_path: Path, content: bool) -> None:
    spans = _export(tmp_path, _records(
        ("start", {"input": {"task": "secret plan"}}),
        ("user_prompt", {"prompt": "the prompt text", "prompt_id": "p1"}),
        ("tool_call", {"tool": "Bash", "args": {"cmd": "cat notes"}, "call_id": "a"}),
        ("tool_result", {"tool": "Bash", "ok": True, "result_summary": "the notes", "call_id": "a"}),
        ("end", {"outcome": "success", "summary": "done"}),
    ), content=content)
    tool = attrs(spans["execute_tool Bash"].attributes)
    root_span = spans["invoke_agent rev"]
    root = attrs(root_span.attributes)
    prompt = json.loads(attrs(root_span.events[1].attributes)["traced.payload"])
    content_keys = ["gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "input.value", "output.value"]
    if content:
        assert json.loads(tool["gen_ai.tool.call.arguments"]) == {"cmd": "cat notes"}
        assert tool["gen_ai.tool.call.result"] == "the notes" and tool["output.value"] == "the notes"
        assert json.loads(root["input.value"]) == {"task": "secret plan"}
        assert prompt == {"prompt": "the prompt text", "prompt_id": "p1"}
    else:
        assert not [k for k in content_keys if k in tool]
        assert "input.value" not in root
        assert prompt == {"prompt_id": "p1"}
    assert root["output.value"] == "done"  # the outcome's summary is not content


def test_stepless_lines_are_numbered_by_position(tmp_path: Path) -> None:
    """devboy's CLI writes no step: positions among the records, as traced's readers number them."""
    records = _records(("start", {}), ("tool_call", {"tool": "Bash", "args": {}}),
                       ("tool_result", {"tool": "Bash", "ok": True}), ("end", {"outcome": "success"}))
    for r in records:
        del r["step"]
    sdir = tmp_path / SID
    sdir.mkdir()
    lines = [json.dumps(r) for r in records]
    (sdir / "trace.jsonl").write_text("\n".join([lines[0], "{broken", "", lines[1], '{"no": "phase"}', *lines[2:]])
                                      + "\n")
    res = read_after(str(sdir), 0, 0, 100, 1 << 30)
    assert [(ln.step, ln.phase) for ln in res.lines] == [(1, "start"), (2, "tool_call"), (3, "tool_result"),
                                                         (4, "end")]
    assert res.malformed == 2
    again = read_after(str(sdir), res.lines[1].end, 2, 100, 1 << 30)  # from a cursor after step 2
    assert [ln.step for ln in again.lines] == [3, 4]
    from traced.forward.source import tail_step

    assert tail_step(str(sdir)) == 4


# --- the hand-written protobuf encoder against the official classes ------------------------

scalars = (st.text(max_size=40) | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
           | st.floats(allow_nan=False) | st.integers(min_value=2**63, max_value=2**80))
values = scalars | st.lists(st.text(max_size=5) | st.integers(min_value=0, max_value=99), max_size=4) | st.dictionaries(
    st.text(max_size=5), st.integers(), max_size=3)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=30), values | st.none(), max_size=12),
       st.integers(min_value=0, max_value=2**64 - 1), st.text(max_size=30), st.sampled_from([0, 1, 2]))
def test_wire_encoding_decodes_with_the_official_classes(a: dict[str, Any], t: int, name: str, code: int) -> None:
    span = otlpwire.Span(b"t" * 16, b"s" * 8, b"p" * 8, name, otlpwire.SPAN_KIND_CLIENT, t, t, dict(a),
                         events=[otlpwire.Event(t, "ev", {"k": "v", "n": 3})], status_code=code,
                         status_message="boom" if code == 2 else "")
    body = otlpwire.request([otlpwire.span(span)], {"service.name": "svc"}, "traced", "9")
    req = ExportTraceServiceRequest.FromString(body)
    got = req.resource_spans[0].scope_spans[0].spans[0]
    assert (got.trace_id, got.span_id, got.parent_span_id, got.name) == (b"t" * 16, b"s" * 8, b"p" * 8, name)
    assert (got.start_time_unix_nano, got.end_time_unix_nano, got.kind) == (t, t, Span.SpanKind.SPAN_KIND_CLIENT)
    assert (got.status.code, got.status.message) == (code, "boom" if code == 2 else "")
    assert attrs(got.events[0].attributes) == {"k": "v", "n": 3} and got.events[0].time_unix_nano == t
    decoded = attrs(got.attributes)
    assert list(decoded) == [k for k, v in a.items() if v is not None]
    for k, v in a.items():
        if v is None:
            continue
        if isinstance(v, dict):
            assert json.loads(decoded[k]) == v
        elif isinstance(v, float):
            assert decoded[k] == v or (math.isinf(v) and decoded[k] == v)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 2**63:
            assert decoded[k] == str(v)  # beyond int64: as text
        else:
            assert decoded[k] == v, k
    assert attrs(req.resource_spans[0].resource.attributes) == {"service.name": "svc"}
    assert req.resource_spans[0].scope_spans[0].scope.name == "traced"


def test_wire_caps_and_replaces_bad_text() -> None:
    span = otlpwire.Span(b"t" * 16, b"s" * 8, None, "n", 1, 5, 3, {"long": "x" * 50, "bad": "a\udc80b"})
    got = Span.FromString(otlpwire.span(span, otlpwire.Limits(attr=10)))
    a = attrs(got.attributes)
    assert a["long"] == "x" * 9 + "…" and a["bad"] == "a?b"
    assert not got.parent_span_id and got.end_time_unix_nano == 5  # never ends before it starts


# --- OTEL_EXPORTER_OTLP_* and the URL rules -------------------------------------------------------

@pytest.mark.parametrize(("env", "url"), [
    ({}, "http://localhost:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4318"}, "http://col:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4318/"}, "http://col:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://cloud.example/api/public/otel"},
     "https://cloud.example/api/public/otel/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://cloud.example/otel/"}, "https://cloud.example/otel/v1/traces"),
    # a base is a base, even one ending in the signal path (opentelemetry-js#2816)
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4318/v1/traces"}, "http://col:4318/v1/traces/v1/traces"),
    # a signal-specific URL is used exactly as given: no slash added (opentelemetry-js#3269)
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://col/something"}, "https://col/something"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://col:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom"},
     "http://t:1/custom"),
])
def test_otel_endpoint_precedence_and_base_url_rule(env: dict[str, str], url: str) -> None:
    assert parse("otlp", environ=env).url == url


@pytest.mark.parametrize(("given", "url"), [
    ("http://col:4318", "http://col:4318/v1/traces"), ("http://col:4318/", "http://col:4318/v1/traces"),
    ("http://col:4318/v1/traces", "http://col:4318/v1/traces"), ("http://col/ingest/otlp", "http://col/ingest/otlp"),
])
def test_forward_url_path(given: str, url: str) -> None:
    assert parse(given, environ={}).url == url


def test_otel_headers_timeout_compression_and_resource() -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%3Db,X-Team=one, x-region = eu ",
           "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "X-TEAM=two",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
           "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,env=prod"}
    dest = parse("http://col:4318?header=x-region:us", {"X-Extra": "cfg"}, environ=env)
    assert dest.headers == {"api-key": "a=b", "X-TEAM": "two", "x-region": "us", "X-Extra": "cfg"}
    assert (dest.timeout, dest.gzip) == (2.5, False)
    assert dest.resource == {"service.name": "from-attrs", "env": "prod"}
    env["OTEL_SERVICE_NAME"] = "svc"
    assert parse("otlp", environ=env).resource["service.name"] == "svc"
    assert parse("http://c?service=mine", environ=env).resource["service.name"] == "mine"
    env["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] = "400"
    assert parse("otlp", environ=env).timeout == 0.4
    assert parse("otlp", environ={"OTEL_RESOURCE_ATTRIBUTES": "ok=1,broken"}).resource == {"service.name": "traced"}
    assert parse("otlp", environ={}).gzip is True


def test_otel_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ForwardURLError, match="OTEL_EXPORTER_OTLP_HEADERS"):
        parse("otlp", environ={"OTEL_EXPORTER_OTLP_HEADERS": "Authorization"})
    with pytest.raises(ForwardURLError, match="http/protobuf only"):
        parse("otlp", environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


# --- responses, with the real sink against a real HTTP server --------------------------------------

@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    return tmp_path / SID


def _one(trace_dir: Path) -> Batch:
    return _batch(trace_dir, _records(("llm_call", ANTHROPIC_CALL)))


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_honour_retry_after(trace_dir: Path, receivers: list[Receiver], status: int) -> None:
    r = Receiver(script=[status], retry_after="7")
    receivers.append(r)
    sink = OtlpSink(parse(r.url, environ={}))
    try:
        res = await sink.send(_one(trace_dir))
        assert (res.acked, res.retry_after, res.config_error, res.dropped) == ([False], 7.0, False, 0)
        res = await sink.send(_one(trace_dir))
        assert res.acked == [True] and res.error is None and len(r.spans()) == 1
    finally:
        await sink.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("header", ["0", "0.2", None])
async def test_a_zero_retry_after_does_not_make_a_retry_storm(trace_dir: Path, receivers: list[Receiver],
                                                            header: str | None) -> None:
    """``Retry-After: 0`` (or none) on every answer: the exponential backoff decides, not the header."""
    r = Receiver(script=[503], retry_after=header)
    receivers.append(r)
    sink = OtlpSink(parse(r.url, environ={}))
    try:
        res = await sink.send(_one(trace_dir))
        assert (res.acked, res.retry_after) == ([False], None)
    finally:
        await sink.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_configuration_errors_are_not_retried_soon(trace_dir: Path, receivers: list[Receiver],
                                                        status: int) -> None:
    r = Receiver(script=[status])
    receivers.append(r)
    sink = OtlpSink(parse(r.url, environ={}))
    try:
        res = await sink.send(_one(trace_dir))
        assert (res.acked, res.retry_after, res.config_error, res.dropped) == ([False], CONFIG_RETRY, True, 0)
        assert sink.config_error is not None and f"HTTP {status}" in sink.config_error
    finally:
        await sink.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 501, 409, 422])
async def test_other_statuses_drop_the_batch_without_retrying(trace_dir: Path, receivers: list[Receiver],
                                                              status: int) -> None:
    r = Receiver(script=[status])
    receivers.append(r)
    sink = OtlpSink(parse(r.url, environ={}))
    try:
        res = await sink.send(_one(trace_dir))
        assert (res.acked, res.dropped, res.config_error) == ([True], 1, False)
        assert len(r.attempts) == 1
    finally:
        await sink.aclose()


@pytest.mark.anyio
async def test_413_for_one_record_shrinks_then_drops_only_at_the_minimum(trace_dir: Path,
                                                                        receivers: list[Receiver]) -> None:
    r = Receiver(script=[413, 413, 413])
    receivers.append(r)
    sink = OtlpSink(parse(r.url, environ={}))
    try:
        batch = _one(trace_dir)
        first = await sink.send(batch)
        assert (first.acked, first.retry_after, sink.level) == ([False], 0.0, 1)
        second = await sink.send(batch)
        assert (second.acked, sink.level) == ([False], 2)
        third = await sink.send(batch)
        assert (third.acked, third.dropped, sink.level) == ([True], 1, 0)
        r.script = [413]
        await sink.send(batch)
        fine = await sink.send(batch)
        assert fine.acked == [True] and fine.dropped == 0
        assert attrs(r.spans()[-1].attributes)["traced.truncated"] is True
        after = await sink.send(batch)  # the next batch is whole again
        assert after.acked == [True] and "traced.truncated" not in attrs(r.spans()[-1].attributes)
    finally:
        await sink.aclose()


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2200, 1, 1)),
       st.integers(min_value=-14 * 60, max_value=14 * 60), st.booleans())
def test_ts_ns_is_exact_to_the_microsecond(naive: Any, offset_min: int, as_z: bool) -> None:
    from traced.forward.spans import ts_ns

    utc = datetime.UTC
    tz = utc if as_z else datetime.timezone(datetime.timedelta(minutes=offset_min))
    dt = naive.replace(tzinfo=tz)
    text = dt.isoformat().replace("+00:00", "Z") if as_z else dt.isoformat()
    epoch = datetime.datetime(1970, 1, 1, tzinfo=utc)
    assert ts_ns(text) == ((dt - epoch) // datetime.timedelta(microseconds=1)) * 1000
    assert ts_ns(naive.isoformat()) == ts_ns(naive.replace(tzinfo=utc).isoformat())  # no zone: UTC
    assert ts_ns("yesterday") == 0
