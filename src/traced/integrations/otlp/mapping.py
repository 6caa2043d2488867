"""OTLP traces and logs -> traced records, sans-IO: ``map_traces(request)`` / ``map_logs(request)`` -> ``Mapped``.

What becomes what (docs/otlp-receiver.md has the whole table):

- GenAI spans (``gen_ai.operation.name`` ``chat``/``text_completion``/``generate_content``,
  OpenInference ``openinference.span.kind`` ``LLM``) -> ``llm_call``;
  ``execute_tool`` / ``TOOL`` -> a ``tool_call`` (at the span's start) and its
  ``tool_result`` (at its end), paired by ``gen_ai.tool.call.id`` or the span id;
  a root ``invoke_agent`` / ``AGENT`` span -> the session's end. Any other span is
  ignored and counted.
- Logs: Claude Code's ``claude_code.api_request`` -> ``llm_call``; Codex's model calls ->
  ``llm_call``, from ``codex.sse_event`` ``response.completed`` (its token counts) or a
  failed ``codex.api_request``; any other log record is ignored and counted.

Sessions: ``session.id``, else ``gen_ai.conversation.id``, else the trace id (a
span without its own id takes the one another span of its trace carries in the
same request). Skill: ``service.name``, else ``gen_ai.agent.name``, else ``otlp``.

Tokens: the current GenAI convention counts cache reads and writes *inside*
``gen_ai.usage.input_tokens`` (OpenInference likewise inside
``llm.token_count.prompt``); traced's ``usage.input_tokens`` excludes them, so
they are subtracted. A sender whose input count is below its cache counts
evidently uses the exclusive (Anthropic API) meaning: its count is kept as it is.

Idempotency: every item carries a ``key``, a 63-bit hash of what identifies it
(trace id, span id and phase for spans; the log record's deterministic
serialization for logs). The daemon sends it as the event's ``seq`` under one
client id, so the session state drops a resend, across restarts too (the keys
are rebuilt from the trace's ``client_seq`` fields).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from traced.format import vocab
from traced.format.layout import valid_name
from traced.integrations.hooks.claude_code import AGENT as CLAUDE_AGENT
from traced.integrations.hooks.core import one_line

CLIENT_ID: Final = "otlp"
"""The client id of every OTLP event: with the item's key as ``seq`` it is the idempotency key."""
DEFAULT_SKILL: Final = "otlp"
CODEX_SKILL: Final = "codex"
LLM_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATION: Final = "execute_tool"
AGENT_OPERATION: Final = "invoke_agent"


@dataclass(slots=True)
class Item:
    """One record to write: phase, payload, event time (epoch seconds) and idempotency key."""

    phase: str
    payload: dict[str, Any]
    ts: float
    key: int
    order: int = 0


@dataclass(slots=True)
class SessionPlan:
    """What one request brings to one session."""

    session_id: str
    skill: str
    skill_fixed: bool = True
    """False: the session may already exist under another skill (the hooks' ``--skill``): the daemon keeps that."""
    labels: dict[str, str] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    end: tuple[str, float] | None = None
    """(outcome, time) when a root agent span ended the session."""
    started: float = 0.0
    """The earliest time this request knows of the session (epoch seconds): a new session starts then."""

    def saw(self, ts: float) -> None:
        """Note an event time (epoch seconds) for ``started``."""
        if ts > 0 and (not self.started or ts < self.started):
            self.started = ts


@dataclass(slots=True)
class Mapped:
    """A request's sessions, in first-seen order, and what was counted on the way."""

    sessions: dict[str, SessionPlan] = field(default_factory=dict)
    received: int = 0
    """Spans or log records in the request."""
    ignored: int = 0
    """Not GenAI (or not an event traced maps): accepted and dropped."""
    rejected: int = 0
    """Malformed: reported back in ``partial_success``."""
    errors: list[str] = field(default_factory=list)

    def plan(self, session_id: str, skill: str, fixed: bool = True) -> SessionPlan:
        """The plan of ``session_id``, created on first use."""
        plan = self.sessions.get(session_id)
        if plan is None:
            plan = self.sessions[session_id] = SessionPlan(session_id, skill, fixed)
        return plan

    def reject(self, why: str) -> None:
        """Count one malformed item (the first few reasons are kept for the response)."""
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(why)

    def finish(self) -> None:
        """Order each session's items by time (a tool_call before its tool_result), stably."""
        for plan in self.sessions.values():
            plan.items.sort(key=lambda it: (it.ts, it.order))


# --- values ---------------------------------------------------------------------------


def value(v: AnyValue) -> Any:
    """An ``AnyValue`` as a plain value (bytes as hex; arrays as lists; kvlists as dicts)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` as a dict (a repeated key: the last one wins)."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = value(kv.value)
    return out


def count(v: Any) -> int | None:
    """A token count from an int, a float or a numeric string (Claude Code sends strings); None if not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v >= 0 else None
    if isinstance(v, str):
        try:
            return count(float(v)) if "." in v or "e" in v.lower() else count(int(v))
        except ValueError:
            return None
    return None


def number(v: Any) -> float | None:
    """A finite number from an int, a float or a numeric string; None otherwise."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def text(v: Any) -> str:
    """A non-empty string attribute, or ''."""
    return v if isinstance(v, str) else ""


def seconds(ns: int) -> float:
    """Epoch nanoseconds as epoch seconds that format to the same microsecond (half a microsecond
    is added: a float that far from 1970 cannot hold .561 exactly, and traced's stamps truncate)."""
    return (ns // 1000 + 0.5) / 1e6 if ns > 0 else 0.0


def item_key(*parts: str | bytes) -> int:
    """A positive 63-bit idempotency key from the parts that identify an item."""
    data = b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1 or 1


def safe_id(raw: str) -> tuple[str, bool]:
    """(a valid session id for ``raw``, whether it had to be derived): an id outside
    ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` becomes ``otlp-<sha256 prefix>``."""
    if valid_name(raw):
        return raw, False
    return "otlp-" + hashlib.sha256(raw.encode()).hexdigest()[:32], True


def safe_skill(raw: str) -> str:
    """A valid skill name from a service or agent name (other characters become ``-``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in raw.strip())[:128]
    cleaned = cleaned.lstrip("._-")
    return cleaned if valid_name(cleaned) else ""


def json_value(raw: Any) -> Any:
    """A JSON-encoded attribute (tool arguments) decoded; the string itself when it is not JSON."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def usage(input_total: int | None, output: int | None, cache_read: int | None,
          cache_write: int | None) -> dict[str, int]:
    """traced's ``usage`` from counts whose input *includes* the cache (see the module docstring)."""
    read = cache_read or 0
    write = cache_write or 0
    out: dict[str, int] = {}
    if input_total is not None:
        out["input_tokens"] = input_total - read - write if input_total >= read + write else input_total
    if output is not None:
        out["output_tokens"] = output
    if cache_read is not None:
        out["cache_read_tokens"] = cache_read
    if cache_write is not None:
        out["cache_write_tokens"] = cache_write
    return out


def _first(attrs: dict[str, Any], *names: str) -> Any:
    for name in names:
        v = attrs.get(name)
        if v is not None and v != "":
            return v
    return None


# --- traces ---------------------------------------------------------------------------


def span_kind(attrs: dict[str, Any]) -> str:
    """``llm``, ``tool``, ``agent`` or '' (not a GenAI span traced maps)."""
    op = text(attrs.get("gen_ai.operation.name"))
    if op in LLM_OPERATIONS:
        return "llm"
    if op == TOOL_OPERATION:
        return "tool"
    if op == AGENT_OPERATION:
        return "agent"
    oi = text(attrs.get("openinference.span.kind")).upper()
    return {"LLM": "llm", "TOOL": "tool", "AGENT": "agent"}.get(oi, "")


def _span_session(attrs: dict[str, Any], resource: dict[str, Any]) -> str:
    return text(_first(attrs, "session.id", "gen_ai.conversation.id")) or text(
        _first(resource, "session.id", "gen_ai.conversation.id"))


def map_traces(request: ExportTraceServiceRequest) -> Mapped:
    """Map an ``ExportTraceServiceRequest`` (see the module docstring)."""
    out = Mapped()
    spans: list[tuple[Span, dict[str, Any], str, str, str]] = []
    trace_session: dict[bytes, str] = {}
    trace_agent: dict[bytes, str] = {}
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = text(resource.get("service.name"))
        if service.startswith("unknown_service"):
            service = ""
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.received += 1
                attrs = attributes(span.attributes)
                kind = span_kind(attrs)
                if not kind:
                    out.ignored += 1
                    continue
                if len(span.trace_id) != 16 or len(span.span_id) != 8 or not any(span.trace_id):
                    out.reject(f"span {span.name!r}: invalid trace or span id")
                    continue
                sid = _span_session(attrs, resource)
                if sid:
                    trace_session.setdefault(span.trace_id, sid)
                agent = text(attrs.get("gen_ai.agent.name"))
                if agent:
                    trace_agent.setdefault(span.trace_id, agent)
                spans.append((span, attrs, kind, sid, service))
    skills: dict[tuple[str, str], str] = {}
    for n, (span, attrs, kind, own_sid, service) in enumerate(spans):
        raw_sid = own_sid or trace_session.get(span.trace_id) or span.trace_id.hex()
        sid, derived = safe_id(raw_sid)
        plan = out.sessions.get(sid)
        if plan is None:
            names = (service, trace_agent.get(span.trace_id, ""))
            skill = skills.get(names)
            if skill is None:
                skill = skills[names] = safe_skill(names[0]) or safe_skill(names[1]) or DEFAULT_SKILL
            plan = out.plan(sid, skill)
        if derived:
            plan.labels["otlp_session_id"] = raw_sid[:1024]
        _span_items(plan, span, attrs, kind, n)
    out.finish()
    return out


def _status(span: Span) -> tuple[bool, str]:
    failed = span.status.code == Status.STATUS_CODE_ERROR
    return not failed, span.status.message


def _span_items(plan: SessionPlan, span: Span, attrs: dict[str, Any], kind: str, order: int) -> None:
    trace, sid = span.trace_id.hex(), span.span_id.hex()
    start, end = seconds(span.start_time_unix_nano), seconds(span.end_time_unix_nano)
    duration = round(max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e6, 3)
    plan.saw(start)
    ok, message = _status(span)
    error = message or text(attrs.get("error.type")) or ("error" if not ok else "")
    if kind == "llm":
        payload: dict[str, Any] = {"model": text(_first(attrs, "gen_ai.response.model", "gen_ai.request.model",
                                                        "llm.model_name")) or "unknown"}
        provider = text(_first(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"))
        if provider:
            payload = {"provider": provider, **payload}
        if "llm.token_count.prompt" in attrs or "llm.token_count.completion" in attrs:
            u = usage(count(attrs.get("llm.token_count.prompt")), count(attrs.get("llm.token_count.completion")),
                      count(attrs.get("llm.token_count.prompt_details.cache_read")),
                      count(attrs.get("llm.token_count.prompt_details.cache_write")))
        else:
            u = usage(count(_first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
                      count(_first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
                      count(_first(attrs, "gen_ai.usage.cache_read.input_tokens",
                                   "gen_ai.usage.cache_read_input_tokens")),
                      count(_first(attrs, "gen_ai.usage.cache_creation.input_tokens",
                                   "gen_ai.usage.cache_creation_input_tokens")))
        payload["usage"] = u
        cost = number(attrs.get("llm.cost.total"))
        if cost is not None and cost >= 0:
            payload["cost_usd"] = cost
        payload["latency_ms"] = duration
        reasons = attrs.get("gen_ai.response.finish_reasons")
        if isinstance(reasons, list) and reasons and isinstance(reasons[0], str):
            payload["finish_reason"] = reasons[0]
        if not ok:
            payload["error"] = error
        payload.update(trace_id=trace, span_id=sid)
        plan.items.append(Item(vocab.LLM_CALL, payload, end, item_key("span", trace, sid, vocab.LLM_CALL), order))
    elif kind == "tool":
        tool = text(_first(attrs, "gen_ai.tool.name", "tool.name")) or span.name or "unknown"
        call_id = text(_first(attrs, "gen_ai.tool.call.id", "tool_call.id")) or sid
        args = json_value(_first(attrs, "gen_ai.tool.call.arguments", "input.value"))
        call: dict[str, Any] = {"tool": tool, "args": args if args is not None else {}, "call_id": call_id,
                                "kind": "mcp" if "mcp.method.name" in attrs else "tool"}
        call.update(trace_id=trace, span_id=sid)
        result: dict[str, Any] = {"tool": tool, "ok": ok, "duration_ms": duration, "call_id": call_id}
        response = _first(attrs, "gen_ai.tool.call.result", "output.value")
        if not ok:
            result["error"] = one_line(error) or "tool failed"
        elif response is not None:
            summary = one_line(response if isinstance(response, str) else json.dumps(response, default=str))
            if summary:
                result["result_summary"] = summary
        if response is not None:
            result["response"] = response
        result.update(trace_id=trace, span_id=sid)
        plan.items.append(Item(vocab.TOOL_CALL, call, start, item_key("span", trace, sid, vocab.TOOL_CALL), order))
        plan.items.append(Item(vocab.TOOL_RESULT, result, end, item_key("span", trace, sid, vocab.TOOL_RESULT), order))
    elif kind == "agent":
        name = text(attrs.get("gen_ai.agent.name"))
        if name:
            plan.labels.setdefault("agent_name", name[:256])
        if not span.parent_span_id:  # the root agent span ended: so did the session
            plan.end = (vocab.SUCCESS if ok else vocab.FAILURE, end)


# --- logs -----------------------------------------------------------------------------


def _event_names(record: LogRecord, attrs: dict[str, Any]) -> set[str]:
    names = {text(attrs.get("event.name")), record.event_name}
    if record.body.WhichOneof("value") == "string_value":
        names.add(record.body.string_value)
    names.discard("")
    return names


def log_time(record: LogRecord, attrs: dict[str, Any]) -> float:
    """The event's time (epoch seconds): the record's, its observed time, or ``event.timestamp`` (ISO 8601)."""
    if record.time_unix_nano:
        return seconds(record.time_unix_nano)
    stamp = text(attrs.get("event.timestamp"))
    if stamp:
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return seconds(record.observed_time_unix_nano)


def map_logs(request: ExportLogsServiceRequest) -> Mapped:
    """Map an ``ExportLogsServiceRequest`` (see the module docstring)."""
    out = Mapped()
    n = 0
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        service = text(resource.get("service.name"))
        for sl in rl.scope_logs:
            for record in sl.log_records:
                out.received += 1
                n += 1
                attrs = attributes(record.attributes)
                names = _event_names(record, attrs)
                if "claude_code.api_request" in names or ("api_request" in names and service == "claude-code"):
                    _claude_api_request(out, record, attrs, resource, n)
                elif "codex.sse_event" in names and attrs.get("event.kind") == "response.completed":
                    _codex_call(out, record, attrs, resource, n, source="codex.sse_event")
                elif "codex.api_request" in names and _codex_request_counts(attrs):
                    _codex_call(out, record, attrs, resource, n, source="codex.api_request")
                else:
                    out.ignored += 1
    out.finish()
    return out


def _log_key(record: LogRecord, resource: dict[str, Any]) -> int:
    return item_key("log", text(resource.get("service.name")), record.SerializeToString(deterministic=True))


def _claude_api_request(out: Mapped, record: LogRecord, attrs: dict[str, Any], resource: dict[str, Any],
                        order: int) -> None:
    raw_sid = text(_first(attrs, "session.id")) or text(resource.get("session.id"))
    if not raw_sid:
        out.reject("claude_code.api_request without session.id")
        return
    sid, derived = safe_id(raw_sid)
    plan = out.plan(sid, CLAUDE_AGENT.skill, fixed=False)
    if derived:
        plan.labels["otlp_session_id"] = raw_sid[:1024]
    # Claude Code's counts are the Anthropic API's: input_tokens already excludes the cache
    u: dict[str, int] = {}
    for src, dst in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                     ("cache_read_tokens", "cache_read_tokens"), ("cache_creation_tokens", "cache_write_tokens")):
        c = count(attrs.get(src))
        if c is not None:
            u[dst] = c
    payload: dict[str, Any] = {"provider": "anthropic", "model": text(attrs.get("model")) or "unknown", "usage": u}
    cost = number(attrs.get("cost_usd"))
    if cost is not None and cost >= 0:
        payload["cost_usd"] = cost
    latency = number(attrs.get("duration_ms"))
    if latency is not None and latency >= 0:
        payload["latency_ms"] = latency
    for src, dst in (("prompt.id", "prompt_id"), ("request_id", "request_id"), ("speed", "speed")):
        if text(attrs.get(src)):
            payload[dst] = attrs[src]
    payload["source"] = "claude_code.api_request"
    ts = log_time(record, attrs)
    plan.saw(ts)
    plan.items.append(Item(vocab.LLM_CALL, payload, ts, _log_key(record, resource), order))


def _codex_request_counts(attrs: dict[str, Any]) -> bool:
    """Whether a ``codex.api_request`` makes its own ``llm_call``: when it carries token counts, or
    when it failed (no ``response.completed`` will follow). A successful one without counts is
    the same call its ``codex.sse_event`` ``response.completed`` records, with the tokens."""
    if "input_token_count" in attrs or "output_token_count" in attrs:
        return True
    status = count(attrs.get("http.response.status_code"))
    return bool(text(attrs.get("error.message"))) or (status is not None and status >= 400) or (
        attrs.get("success") in (False, "false"))


def _codex_call(out: Mapped, record: LogRecord, attrs: dict[str, Any], resource: dict[str, Any],
                order: int, *, source: str) -> None:
    raw_sid = text(_first(attrs, "conversation.id", "session.id")) or text(resource.get("conversation.id"))
    if not raw_sid:
        out.reject(f"{source} without conversation.id")
        return
    sid, derived = safe_id(raw_sid)
    plan = out.plan(sid, CODEX_SKILL, fixed=False)
    if derived:
        plan.labels["otlp_session_id"] = raw_sid[:1024]
    # OpenAI's input count includes the cached tokens, as the GenAI convention's does
    u = usage(count(attrs.get("input_token_count")), count(attrs.get("output_token_count")),
              count(attrs.get("cached_token_count")), None)
    payload: dict[str, Any] = {"provider": "openai", "model": text(attrs.get("model")) or "unknown", "usage": u}
    latency = number(attrs.get("duration_ms"))
    if latency is not None and latency >= 0:
        payload["latency_ms"] = latency
    reasoning = count(attrs.get("reasoning_token_count"))
    if reasoning is not None:
        payload["reasoning_tokens"] = reasoning
    status = count(attrs.get("http.response.status_code"))
    if status is not None:
        payload["status_code"] = status
    error = text(attrs.get("error.message"))
    if error:
        payload["error"] = one_line(error)
    payload["source"] = source
    ts = log_time(record, attrs)
    plan.saw(ts)
    plan.items.append(Item(vocab.LLM_CALL, payload, ts, _log_key(record, resource), order))
