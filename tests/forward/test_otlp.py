"""``traced serve --forward http://…/v1/traces``: a real daemon exporting OTLP/HTTP protobuf
to a receiver in this test (a tiny HTTP server on 127.0.0.1 decoding ExportTraceServiceRequest).

Needs ``opentelemetry-proto`` (``traced[otlp]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, read_trace, wait_for

pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto not installed (traced-daemon[otlp])")

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.forward.otlp_receiver import Receiver, attrs


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


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
    d: Daemon = daemon_factory("--forward", url, env={"FWD_TEST_KEY": "k-123", "TRACED_OTLP_CAPTURE_CONTENT": "true"})
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
    assert (ra["gen_ai.usage.input_tokens"], ra["gen_ai.usage.output_tokens"]) == (112, 20)  # 100 + 5 + 7
    assert ra["gen_ai.provider.name"] == "anthropic"
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
    assert (la["gen_ai.usage.input_tokens"], la["gen_ai.usage.output_tokens"]) == (112, 20)
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
    assert r.status.message == "nope" and attrs(r.attributes)["error.type"] == "_OTHER"
    g = by_name["execute_tool Grep"]
    assert g.span_id == _sid_span(sid, grep) and attrs(g.attributes)["traced.unfinished"] is True
    assert g.end_time_unix_nano == root.end_time_unix_nano

    res = receiver.resources()[-1]
    assert (res["service.name"], res["openinference.project.name"]) == ("traced", "proj1")
    h = receiver.headers[-1]
    assert h["x-api-key"] == "k-123" and h["content-type"] == "application/x-protobuf"
    assert h["content-encoding"] == "gzip"
    out, info = _caught_up(d)
    assert "k-123" not in out and info["url"].endswith("header=X-Api-Key:***")
    assert info["lag_records"] == 0 and info["sent"] == len(records)


def test_tool_span_across_a_daemon_restart(daemon_factory: Any, receiver: Receiver) -> None:
    d: Daemon = daemon_factory("--forward", receiver.url, env={"TRACED_OTLP_CAPTURE_CONTENT": "1"})
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


def test_otel_env_endpoint_headers_and_resource(daemon_factory: Any, receiver: Receiver) -> None:
    """``--forward otlp``: the standard OTEL_* variables, a base URL with a trailing ``/``."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base + "/",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20tok-1,X-Scope=a",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-scope=b",
        "OTEL_SERVICE_NAME": "agents-prod",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,service.name=ignored,team=a%2Cb",
    }
    d: Daemon = daemon_factory("--forward", "otlp", env=env)
    with d.client() as c, c.session(skill="envy") as s:
        s.llm_call("m", provider="bedrock", input_tokens=1, output_tokens=1)
    _root(receiver, "invoke_agent envy")
    assert set(receiver.paths) == {"/v1/traces"}
    h = receiver.headers[-1]
    assert (h["authorization"], h["x-scope"], h["content-encoding"]) == ("Bearer tok-1", "b", "gzip")
    res = receiver.resources()[-1]
    assert (res["service.name"], res["deployment.environment"], res["team"]) == ("agents-prod", "ci", "a,b")
    out, info = _caught_up(d)
    assert "tok-1" not in out and info["url"].startswith(f"{receiver.url}?header=")


def test_413_shrinks_a_large_root_span_and_sends_it(daemon_factory: Any) -> None:
    """A collector's body limit: the batch is split, then the root span's events and attributes
    are cut, and the root still arrives, so no child span is left without its parent."""
    receiver = Receiver(max_body=24_000)
    try:
        d: Daemon = daemon_factory("--forward", receiver.url, env={"TRACED_OTLP_CAPTURE_CONTENT": "1"})
        with d.client() as c, c.session(skill="big") as s:
            s.tool_call("Read", {"path": "x" * 3000}, call_id="r1")
            s.tool_result("Read", ok=True, result_summary="y" * 3000, call_id="r1")
            for i in range(30):
                s.note(f"{i} " + "z" * 3000)
            s.end("success", summary="s" * 20_000)
            sid = s.id
        root = _root(receiver, "invoke_agent big")
        ra = attrs(root.attributes)
        assert ra["traced.truncated"] is True and ra["traced.outcome"] == "success"
        assert len(ra["traced.summary"]) <= 1024 and ra["traced.summary"].endswith("…")
        assert len(root.events) + root.dropped_events_count == 32  # start, 30 notes, end
        spans = receiver.spans()
        assert sorted(sp.name for sp in spans) == ["execute_tool Read", "invoke_agent big"]
        assert all(sp.parent_span_id == root.span_id for sp in spans if sp is not root)
        assert 413 in [code for _, code in receiver.attempts]
        _, info = _caught_up(d)
        assert info["dropped"] == 0 and root.span_id == _sid_span(sid, "root")
    finally:
        receiver.close()


def test_session_written_by_another_writer_is_forwarded(daemon_factory: Any, receiver: Receiver) -> None:
    """devboy's CLI writes no ``step`` (and nothing tells the daemon): its lines are numbered by
    position, as the readers number them, and the session goes at the daemon's next start."""
    d: Daemon = daemon_factory("--forward", receiver.url)
    assert d.stop(signal.SIGTERM) == 0  # the destination has run once: what changes from now on is sent
    sdir = d.root / time.strftime("%Y-%m-%d", time.gmtime()) / "devskill" / "dev-1"
    sdir.mkdir(parents=True)
    lines = [
        {"ts": "2026-11-20T10:00:00Z", "skill": "devskill", "session_id": "dev-1", "phase": "start",
         "payload": {"input": "go"}},
        {"ts": "2026-11-20T10:00:01Z", "skill": "devskill", "session_id": "dev-1", "phase": "tool_call",
         "payload": {"tool": "Bash", "args": {"cmd": "ls"}}},
        {"ts": "2026-11-20T10:00:02Z", "skill": "devskill", "session_id": "dev-1", "phase": "tool_result",
         "payload": {"tool": "Bash", "ok": False, "error": "denied"}},
        {"ts": "2026-11-20T10:00:03Z", "skill": "devskill", "session_id": "dev-1", "phase": "end",
         "payload": {"outcome": "failure", "summary": "no"}},
    ]
    (sdir / "trace.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:2]) + "not json\n"
                                      + "".join(json.dumps(x) + "\n" for x in lines[2:]))
    os.utime(sdir / "trace.jsonl")
    d.start()
    root = _root(receiver, "invoke_agent devskill")
    ra = attrs(root.attributes)
    assert (ra["traced.steps"], ra["traced.outcome"], ra["error.type"]) == (4, "failure", "failure")
    assert root.status.code == Status.STATUS_CODE_ERROR
    tool = next(sp for sp in receiver.spans() if sp.name == "execute_tool Bash")
    ta = attrs(tool.attributes)
    assert (ta["traced.step"], ta["traced.result_step"], ta["error.type"]) == (2, 3, "_OTHER")
    assert tool.span_id == _sid_span("dev-1", 2) and tool.status.code == Status.STATUS_CODE_ERROR
    _, info = _caught_up(d)
    assert (info["sent"], info["malformed_lines"]) == (4, 1)


def test_401_is_a_configuration_error_not_a_retry_storm(daemon_factory: Any) -> None:
    receiver = Receiver(script=[401] * 50)
    try:
        d: Daemon = daemon_factory("--forward", receiver.url)
        with d.client() as c, c.session(skill="denied") as s:
            s.note("x")

        def misconfigured() -> dict[str, Any] | None:
            info: dict[str, Any] = json.loads(d.cli("status", "--json", check=True).stdout)["forwarders"][0]
            return info if info["config_error"] else None

        info = wait_for(misconfigured, what="a configuration error in status")
        assert info["state"] == "misconfigured" and "HTTP 401" in info["config_error"]
        assert info["lag_records"] == 3 and info["dropped"] == 0  # kept on disk for when it is fixed
        text = d.cli("status", check=True).stdout
        assert "CONFIGURATION ERROR" in text and "HTTP 401" in text
        assert [code for _, code in receiver.attempts] == [401]  # the next try is minutes away
    finally:
        receiver.close()
