"""The OTLP/HTTP receiver end to end: a real daemon, real HTTP, real OTLP bodies and the real SDK exporter."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import stat
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.conftest import Daemon, read_trace, wait_for
from tests.integrations.otlp_bodies import (
    TRACE,
    agent_trace,
    claude_log,
    codex_completed,
    logs,
    otlp_json,
    span,
    traces,
)

PB = "application/x-protobuf"
CC_SESSION = "0b0e6f8e-1111-2222-3333-444455556666"


class Receiver:
    """A daemon with ``--otlp-listen 127.0.0.1:0``: its endpoint and token."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.refresh()

    def refresh(self) -> None:
        info = self.status()
        self.endpoint = info["endpoint"]
        token_file = info["token_file"]
        self.token = Path(token_file).read_text().strip() if token_file else os.environ.get("TRACED_OTLP_TOKEN", "")

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.daemon.cli("status", "--json", check=True).stdout)["otlp"]
        return out

    def post(self, path: str, data: bytes, *, content_type: str = PB, token: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        hdrs = {"Content-Type": content_type, **(headers or {})}
        if token is None:
            token = self.token
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.endpoint + path, data=data, headers=hdrs, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _receiver(daemon_factory: Any, *args: str, env: dict[str, str] | None = None) -> Receiver:
    return Receiver(daemon_factory("--otlp-listen", "127.0.0.1:0", *args, env=env))


def _session(daemon: Daemon, sid: str) -> Path:
    return wait_for(lambda: next(daemon.root.glob(f"*/*/{sid}"), None), what=f"session {sid}")


def _records(daemon: Daemon, sid: str) -> list[dict[str, Any]]:
    return read_trace(_session(daemon, sid) / "trace.jsonl")


def test_claude_code_log_lands_in_the_hook_session(daemon_factory: Any) -> None:
    """The api_request event gives a hook-traced session its llm_call, under the hooks' own skill."""
    rx = _receiver(daemon_factory)
    hook = {"session_id": CC_SESSION, "hook_event_name": "SessionStart", "source": "startup", "cwd": "/tmp"}
    rx.daemon.cli("hook", "claude-code", "--skill", "cc-work", input=json.dumps(hook), check=True)
    assert [r["phase"] for r in _records(rx.daemon, CC_SESSION)] == ["start"]
    body = logs([claude_log(CC_SESSION)]).SerializeToString()
    for _ in range(2):  # sent twice (an exporter's retry): lands once
        assert rx.post("/v1/logs", body)[:1] == (200,)
    recs = _records(rx.daemon, CC_SESSION)
    assert [(r["step"], r["phase"], r["skill"]) for r in recs] == [(1, "start", "cc-work"), (2, "llm_call", "cc-work")]
    assert recs[1]["payload"] == {
        "provider": "anthropic", "model": "claude-sonnet-4-5-20250929",
        "usage": {"input_tokens": 1830, "output_tokens": 412, "cache_read_tokens": 9000, "cache_write_tokens": 500},
        "cost_usd": 0.0123, "latency_ms": 5120.0, "prompt_id": "p-1", "source": "claude_code.api_request"}
    assert recs[1]["client_seq"].startswith("otlp:")
    end = {"session_id": CC_SESSION, "hook_event_name": "SessionEnd", "reason": "logout"}
    rx.daemon.cli("hook", "claude-code", "--skill", "cc-work", input=json.dumps(end), check=True)
    # Claude Code's logs come in batches every few seconds: one after SessionEnd is a late record
    assert rx.post("/v1/logs", logs([claude_log(CC_SESSION, ms=7, prompt="p-2")]).SerializeToString())[0] == 200
    recs = _records(rx.daemon, CC_SESSION)
    assert [(r["phase"], r.get("late")) for r in recs] == [
        ("start", None), ("llm_call", None), ("end", None), ("llm_call", True)]
    meta = json.loads((_session(rx.daemon, CC_SESSION) / "meta.json").read_text())
    assert (meta["outcome"], meta["usage"]["input_tokens"], meta["usage"]["cost_usd"]) == ("success", 3660, 0.0246)
    st = rx.status()
    assert (st["logs"], st["logs_ignored"], st["records_written"], st["rejected"]) == (3, 0, 2, 0)
    text = rx.daemon.cli("status", check=True).stdout
    assert f"otlp receiver       {rx.endpoint} (token: {rx.daemon.state / 'traced' / 'otlp-token'})" in text


def test_genai_trace_gzip_then_json_is_one_session_once(daemon_factory: Any) -> None:
    rx = _receiver(daemon_factory)
    status, headers, raw = rx.post("/v1/traces", gzip.compress(agent_trace().SerializeToString()),
                                   headers={"Content-Encoding": "gzip"})
    assert (status, headers["content-type"], raw) == (200, PB, b"")
    recs = _records(rx.daemon, "conv-42")
    assert [(r["step"], r["phase"]) for r in recs] == [
        (1, "start"), (2, "llm_call"), (3, "tool_call"), (4, "tool_result"), (5, "end")]
    assert [r["ts"] for r in recs] == ["2025-11-30T10:53:20.000000Z", "2025-11-30T10:53:20.510000Z",
                                       "2025-11-30T10:53:20.520000Z", "2025-11-30T10:53:20.561000Z",
                                       "2025-11-30T10:53:21.000000Z"]
    assert recs[1]["payload"]["usage"] == {"input_tokens": 1830, "output_tokens": 412, "cache_read_tokens": 9000,
                                           "cache_write_tokens": 500}
    assert recs[3]["payload"]["call_id"] == recs[2]["payload"]["call_id"] == "toolu_01"
    assert recs[4]["payload"] == {"outcome": "success"}
    sdir = _session(rx.daemon, "conv-42")
    assert sdir.parent.name == "review-bot" and sdir.parent.parent.name == "2025-11-30"
    meta = json.loads((sdir / "meta.json").read_text())
    assert (meta["outcome"], meta["tool_calls"], meta["labels"]) == ("success", 1, {"agent_name": "reviewer"})
    # the same spans as OTLP/JSON: answered in JSON, nothing written twice
    status, headers, raw = rx.post("/v1/traces", json.dumps(otlp_json(agent_trace())).encode(),
                                   content_type="application/json")
    assert (status, headers["content-type"], json.loads(raw)) == (200, "application/json", {})
    assert len(_records(rx.daemon, "conv-42")) == 5


def test_real_sdk_exporter(daemon_factory: Any) -> None:
    """opentelemetry-sdk's OTLPSpanExporter (gzip) with the token header: spans become a session."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import StatusCode

    rx = _receiver(daemon_factory)
    exporter = OTLPSpanExporter(endpoint=rx.endpoint + "/v1/traces", headers={"Authorization": f"Bearer {rx.token}"},
                                compression=Compression.Gzip, timeout=30)
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent planner", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}) as root:
        with tracer.start_as_current_span("chat gpt-5", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-5",
                "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 80}):
            pass
        with tracer.start_as_current_span("execute_tool read_file", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "read_file",
                "gen_ai.tool.call.id": "call_9"}) as tool:
            tool.set_status(StatusCode.ERROR, "no such file")
        with tracer.start_as_current_span("GET /api"):  # not GenAI: ignored, counted
            pass
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    recs = _records(rx.daemon, trace_id)
    assert [r["phase"] for r in recs] == ["start", "llm_call", "tool_call", "tool_result", "end"]
    assert {r["skill"] for r in recs} == {"sdk-agent"}
    assert recs[1]["payload"]["usage"] == {"input_tokens": 200, "output_tokens": 80, "cache_read_tokens": 1000}
    assert {k: recs[3]["payload"][k] for k in ("tool", "ok", "error", "call_id")} == {
        "tool": "read_file", "ok": False, "error": "no such file", "call_id": "call_9"}
    assert recs[4]["payload"] == {"outcome": "success"}
    st = rx.status()
    assert (st["spans"], st["spans_ignored"], st["requests"]) == (4, 1, 4)


def _chunked(rx: Receiver, path: str, chunks: list[bytes]) -> int:
    """POST with Transfer-Encoding: chunked (no Content-Length to trust)."""
    url = urllib.parse.urlsplit(rx.endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("POST", path, body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": PB, "Authorization": f"Bearer {rx.token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_auth_limits_and_bad_requests_write_nothing(daemon_factory: Any) -> None:
    rx = _receiver(daemon_factory, env={"TRACED_OTLP_MAX_BODY": "100000"})
    good = agent_trace().SerializeToString()
    token_file = rx.daemon.state / "traced" / "otlp-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    for token in ("", "wrong", rx.token[:-1]):
        status, headers, raw = rx.post("/v1/traces", good, token=token)
        assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="traced"')
    assert rx.post("/v1/traces", good, token="", headers={"Authorization": f"Basic {rx.token}"})[0] == 401
    assert rx.post("/v1/traces", good, headers={"Host": "evil.example"})[0] == 421  # DNS rebinding
    assert rx.post("/v1/traces", good, content_type="text/plain")[0] == 415
    assert rx.post("/v1/traces", good, headers={"Content-Encoding": "br"})[0] == 415
    status, _, raw = rx.post("/v1/traces", b"\xff\xff\xff")
    assert status == 400 and raw.startswith(b"\x08\x03\x12")  # google.rpc.Status{INVALID_ARGUMENT, …}
    assert rx.post("/v1/traces", b"x" * 100001)[0] == 413  # declared too large
    assert _chunked(rx, "/v1/traces", [b"x" * 40000] * 3) == 413  # actual size, no Content-Length
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join([*(packer.compress(b"\0" * 1048576) for _ in range(16)), packer.flush()])
    assert rx.post("/v1/traces", bomb, headers={"Content-Encoding": "gzip"})[0] == 413  # 16 MiB inflated
    assert list(rx.daemon.root.rglob("trace.jsonl")) == []  # nothing written by any of them
    req = urllib.request.Request(rx.endpoint + "/v1/traces", headers={"Authorization": f"Bearer {rx.token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 405
    assert rx.post("/v1/metrics", good)[0] == 404
    # a partly bad request: the good span lands, the bad one is reported in partial_success
    bad = span("00f067aa0ba902c1", "chat", {"gen_ai.operation.name": "chat"})
    bad.trace_id = b"\0" * 16
    mixed = traces([bad, span("00f067aa0ba902c2", "chat", {"gen_ai.operation.name": "chat",
                                                            "gen_ai.request.model": "m", "session.id": "mixed"})])
    status, _, raw = rx.post("/v1/traces", mixed.SerializeToString())
    partial = ExportTraceServiceResponse.FromString(raw).partial_success
    assert (status, partial.rejected_spans, partial.error_message) == (
        200, 1, "span 'chat': invalid trace or span id")
    assert [r["phase"] for r in _records(rx.daemon, "mixed")] == ["start", "llm_call"]
    # the socket's intake: secrets redacted, a long result spilled to a blob
    secret = "ghp_" + "a1B2c3D4e5" * 4
    tool = traces([span("00f067aa0ba902c3", "execute_tool gh", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "gh", "session.id": "mixed",
        "gen_ai.tool.call.arguments": json.dumps({"GITHUB_TOKEN": secret, "cmd": f"gh auth login {secret}"}),
        "gen_ai.tool.call.result": "x" * 70000})])
    assert rx.post("/v1/traces", tool.SerializeToString())[0] == 200
    sdir = _session(rx.daemon, "mixed")
    assert secret not in (sdir / "trace.jsonl").read_text()
    call, result = _records(rx.daemon, "mixed")[2:]
    assert call["payload"]["args"]["GITHUB_TOKEN"].startswith("<redacted:")
    assert call["payload"]["args"]["cmd"].startswith("gh auth login <redacted:")
    assert result["payload"]["response"]["size"] == 70000
    assert (sdir / "blobs" / result["payload"]["response"]["$blob"].removeprefix("sha256:")).read_text() == "x" * 70000
    assert json.loads(rx.daemon.cli("status", "--json", check=True).stdout)["redactions"] == 2
    st = rx.status()
    assert st["refused"] == {"400": 1, "401": 4, "413": 3, "415": 2, "421": 1}
    assert (st["rejected"], st["spans"]) == (1, 3)


def test_rate_limit_429_and_the_idle_watcher_ends_otlp_sessions(daemon_factory: Any) -> None:
    rx = _receiver(daemon_factory, "--idle-timeout", "0.5",
                   env={"TRACED_OTLP_RATE": "0.001"})  # a burst of 1, then one per 1000 s
    body = logs([codex_completed("conv-r")], service="codex_cli_rs").SerializeToString()
    assert rx.post("/v1/logs", body)[0] == 200
    status, headers, _ = rx.post("/v1/logs", body)
    assert status == 429
    assert 990 <= int(headers["retry-after"]) <= 1000  # whole seconds until the bucket has a token again
    assert rx.status()["refused"] == {"429": 1}
    # no root agent span will end it: the idle watcher does
    wait_for(lambda: _records(rx.daemon, "conv-r")[-1]["phase"] == "end", what="the idle watcher")
    recs = _records(rx.daemon, "conv-r")
    assert [(r["phase"], r["skill"]) for r in recs] == [("start", "codex"), ("llm_call", "codex"), ("end", "codex")]
    assert recs[2]["payload"] == {"outcome": "aborted", "reason": "idle_timeout"}


def test_env_token_and_a_full_daemon_answers_503(daemon_factory: Any) -> None:
    """While the daemon cannot open another session the exporter is told to retry (503); its retry lands."""
    rx = _receiver(daemon_factory, env={"TRACED_OTLP_TOKEN": "s3cret-token", "TRACED_MAX_OPEN_SESSIONS": "1"})
    st = rx.status()
    assert (st["token_file"], st["token_source"]) == (None, "TRACED_OTLP_TOKEN")
    assert not (rx.daemon.state / "traced" / "otlp-token").exists()
    first = traces([span("7000000000000001", "chat", {"gen_ai.operation.name": "chat", "session.id": "env"})])
    other = traces([span("7000000000000002", "chat", {"gen_ai.operation.name": "chat", "session.id": "other"})])
    assert rx.post("/v1/traces", first.SerializeToString(), token="s3cret-token")[0] == 200
    status, headers, _ = rx.post("/v1/traces", other.SerializeToString(), token="s3cret-token")
    assert (status, headers["retry-after"]) == (503, "5")
    rx.daemon.cli("end", "env", "--outcome", "success", check=True)
    assert rx.post("/v1/traces", other.SerializeToString(), token="s3cret-token")[0] == 200
    assert [r["phase"] for r in _records(rx.daemon, "other")] == ["start", "llm_call"]


def test_loopback_only_unless_allowed(short_tmp: Path) -> None:
    remote = Daemon(short_tmp, ["--otlp-listen", "0.0.0.0:0"])
    remote.start(wait=False)
    try:
        assert remote.proc is not None and remote.proc.wait(60) == 2
    finally:
        if remote.alive():
            remote.kill9()
    assert "is not a loopback address: the receiver binds loopback only" in remote.log.read_text()


def test_idempotent_across_a_daemon_restart(daemon_factory: Any) -> None:
    """kill -9, restart, resend everything: not one record twice; new spans of an ended session are late."""
    rx = _receiver(daemon_factory)
    spans = agent_trace().SerializeToString()
    cc = logs([claude_log(CC_SESSION), claude_log(CC_SESSION, ms=5)]).SerializeToString()
    assert rx.post("/v1/traces", spans)[0] == 200
    assert rx.post("/v1/logs", cc)[0] == 200
    before = {sid: _records(rx.daemon, sid) for sid in ("conv-42", CC_SESSION)}
    assert [len(v) for v in before.values()] == [5, 3]
    rx.daemon.kill9()
    rx.daemon.start()
    rx.refresh()
    assert rx.post("/v1/traces", spans)[0] == 200
    assert rx.post("/v1/logs", cc)[0] == 200
    assert rx.post("/v1/logs", cc)[0] == 200
    after = {sid: _records(rx.daemon, sid) for sid in ("conv-42", CC_SESSION)}
    assert after == before
    late = traces([span("00f067aa0ba902ba", "execute_tool ls", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "ls", "gen_ai.conversation.id": "conv-42"},
        start_ms=2000, end_ms=2005, trace=TRACE)])
    for _ in range(2):
        assert rx.post("/v1/traces", late.SerializeToString())[0] == 200
    recs = _records(rx.daemon, "conv-42")
    assert [(r["step"], r["phase"], r.get("late")) for r in recs[4:]] == [
        (5, "end", None), (6, "tool_call", True), (7, "tool_result", True)]
    assert rx.daemon.stop(signal.SIGTERM) == 0  # the HTTP server leaves SIGTERM to the daemon: a clean drain
    assert "stopped" in [line.get("event") for line in rx.daemon.logs()]


# --- the receiver's small decisions, without a daemon ----------------------------------------


def test_listen_addresses() -> None:
    from traced.daemon.otlp import parse_listen
    from traced.errors import ConfigError

    assert parse_listen("127.0.0.1:4318", False) == ("127.0.0.1", 4318)
    assert parse_listen("[::1]:4318", False) == ("::1", 4318)
    assert parse_listen("localhost:0", False) == ("localhost", 0)
    assert parse_listen("0.0.0.0:4318", True) == ("0.0.0.0", 4318)
    for bad in ("4318", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", ":4318"):
        with pytest.raises(ConfigError, match="expected HOST:PORT"):
            parse_listen(bad, False)
    for remote in ("0.0.0.0:4318", "192.168.1.5:4318", "[::]:4318", "example.com:4318"):
        with pytest.raises(ConfigError, match="not a loopback address"):
            parse_listen(remote, False)


def test_token_file_is_private_kept_and_never_followed(tmp_path: Path) -> None:
    from traced.daemon.otlp import load_token
    from traced.errors import ConfigError

    path = tmp_path / "state" / "otlp-token"
    token, source = load_token(path, {})
    assert (source, stat.S_IMODE(path.stat().st_mode), len(token)) == (path, 0o600, 43)
    assert load_token(path, {}) == (token, path)  # kept across restarts
    path.chmod(0o644)
    assert load_token(path, {})[0] == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # made private again
    assert load_token(path, {"TRACED_OTLP_TOKEN": " t0k "}) == ("t0k", None)
    path.unlink()
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(ConfigError, match="cannot read the OTLP token file"):
        load_token(path, {})
    assert not (tmp_path / "elsewhere").exists()  # nothing created through the link


def test_host_header_check() -> None:
    """DNS rebinding: only names of this listener pass (any loopback name; our port or none)."""
    from traced.daemon.otlp import OtlpReceiver

    rx = OtlpReceiver.__new__(OtlpReceiver)
    rx.host, rx.port, rx.allow_remote = "127.0.0.1", 4318, False
    ok = ["127.0.0.1:4318", "localhost:4318", "LOCALHOST:4318", "[::1]:4318", "[::1]", "localhost", "127.0.0.1"]
    bad = ["evil.example:4318", "evil.example", "127.0.0.1:4319", "", "127.0.0.2:4318", "[::2]:4318"]
    assert [rx._host_ok(h) for h in ok] == [True] * len(ok)
    assert [rx._host_ok(h) for h in bad] == [False] * len(bad)
    rx.allow_remote = True
    assert rx._host_ok("evil.example:4318")


def test_rate_bucket() -> None:
    from traced.daemon.otlp import Bucket

    bucket = Bucket(rate=3.0)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]  # a burst of `rate`
    wait = bucket.take()
    assert 0.3 < wait <= 1 / 3


def test_one_api_call_from_the_transcript_and_from_otlp_counts_once(daemon_factory: Any) -> None:
    """The hooks read the transcript at Stop (client ``transcript``) and Claude Code exports the
    same call as ``api_request`` (no request id): one llm_call, in either order; a second call with
    equal counts from one source stays a second call."""
    from traced.client.blocking import Client

    rx = _receiver(daemon_factory)
    hook = {"session_id": CC_SESSION, "hook_event_name": "SessionStart", "source": "startup", "cwd": "/tmp"}
    rx.daemon.cli("hook", "claude-code", input=json.dumps(hook), check=True)
    usage = {"input_tokens": 1830, "output_tokens": 412, "cache_read_tokens": 9000, "cache_write_tokens": 500}
    from_transcript = {"provider": "anthropic", "model": "claude-sonnet-4-5-20250929", "usage": usage,
                       "message_id": "msg_01A", "request_id": "req_01A"}
    with Client(rx.daemon.socket, client_id="transcript", spool=False, spool_after=0.0) as c:
        assert c.emit(CC_SESSION, "llm_call", from_transcript, seq=111) == 2
    assert rx.post("/v1/logs", logs([claude_log(CC_SESSION)]).SerializeToString())[0] == 200
    assert rx.post("/v1/logs", logs([claude_log(CC_SESSION, ms=7, prompt="p-2")]).SerializeToString())[0] == 200
    with Client(rx.daemon.socket, client_id="transcript", spool=False, spool_after=0.0) as c:
        assert c.emit(CC_SESSION, "llm_call", {**from_transcript, "message_id": "msg_01B", "request_id": "req_01B"},
                      seq=222) == 3
    # OTLP's two calls matched the transcript's two (equal counts, no request id): two records
    calls = [r for r in _records(rx.daemon, CC_SESSION) if r["phase"] == "llm_call"]
    assert [(r["step"], r["client_seq"].split(":")[0]) for r in calls] == [(2, "transcript"), (3, "transcript")]
    end = {"session_id": CC_SESSION, "hook_event_name": "SessionEnd", "reason": "logout"}
    rx.daemon.cli("hook", "claude-code", input=json.dumps(end), check=True)
    meta = json.loads((_session(rx.daemon, CC_SESSION) / "meta.json").read_text())
    assert (meta["usage"]["llm_calls"], meta["usage"]["input_tokens"]) == (2, 3660)


def test_half_sent_requests_are_cut_off_and_never_lock_out_exporters(daemon_factory: Any) -> None:
    """Slowloris: connections that never finish their headers would hold every one of uvicorn's
    256 slots (it arms no timer before a first response); the receiver closes them."""
    import socket as _socket
    import urllib.parse

    rx = _receiver(daemon_factory, env={"TRACED_OTLP_HEADER_TIMEOUT": "1"})
    url = urllib.parse.urlsplit(rx.endpoint)
    held = []
    for _ in range(300):
        s = _socket.create_connection((url.hostname, url.port), timeout=30)
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: " + url.netloc.encode() + b"\r\n")  # and nothing more
        held.append(s)
    try:
        for s in held:  # each is closed by the receiver (recv returns b"" or the reset)
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert rx.post("/v1/traces", traces([]).SerializeToString())[0] == 200
    finally:
        for s in held:
            s.close()
