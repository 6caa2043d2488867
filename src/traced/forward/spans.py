"""Trace records -> OTLP spans (``opentelemetry-proto`` messages only, no SDK).

The mapping (see docs/forwarding.md):

- one trace per session: ``trace_id = sha256(session_id)[:16]``;
- a root span ``invoke_agent <skill>`` (span id ``sha256(session_id + ":root")[:8]``),
  sent when the session's ``end`` record is forwarded, with the session's other
  records as span events;
- a child span ``execute_tool <tool>`` per ``tool_call``/``tool_result`` pair, sent when
  the result is forwarded (span id from the call's step);
- a child span ``chat <model>`` per ``llm_call`` (span id from its step).

Span ids are ``sha256(f"{session_id}:{step}")[:8]``: every id is a function of the
session and its records, so a re-sent span is the same span.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from traced import __version__
from traced.format import vocab
from traced.format.pairing import Pairer, tool_key
from traced.format.records import Record, json_encoder, record_decoder
from traced.forward.source import trace_path

SPAN_PHASES: Final = frozenset({"tool_call", "tool_result", "llm_call"})
MAX_EVENTS: Final = 1000
MAX_ATTR: Final = 16 * 1024
MAX_EVENT_PAYLOAD: Final = 2 * 1024
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
KIND_INTERNAL: Final = Span.SpanKind.SPAN_KIND_INTERNAL
KIND_CLIENT: Final = Span.SpanKind.SPAN_KIND_CLIENT
OK: Final = Status.StatusCode.STATUS_CODE_OK
ERROR: Final = Status.StatusCode.STATUS_CODE_ERROR


def trace_id(session_id: str) -> bytes:
    """The session's 16-byte trace id."""
    return _nonzero(hashlib.sha256(session_id.encode()).digest()[:16])


def span_id(session_id: str, step: int | str) -> bytes:
    """The 8-byte span id of a session's record (or ``"root"``)."""
    return _nonzero(hashlib.sha256(f"{session_id}:{step}".encode()).digest()[:8])


def _nonzero(b: bytes) -> bytes:
    return b if any(b) else b[:-1] + b"\x01"


def ts_ns(ts: str) -> int:
    """A trace timestamp as Unix nanoseconds (exact to the microsecond); 0 if unparsable."""
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return 0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return ((dt - _EPOCH) // _US) * 1000


def _cap(text: str, limit: int = MAX_ATTR) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any, limit: int = MAX_ATTR) -> str:
    return _cap(value if isinstance(value, str) else json_encoder.encode(value).decode(), limit)


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (scalars, homogeneous scalar lists, else JSON text)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=_cap(value))
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=_json(value))


def attributes(values: Mapping[str, Any]) -> list[KeyValue]:
    """KeyValues for the non-None entries of ``values``."""
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items() if v is not None]


def _payload(rec: Record) -> dict[str, Any]:
    return rec.payload if isinstance(rec.payload, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(slots=True)
class OpenCall:
    """A tool_call still waiting for its tool_result."""

    step: int
    start: int
    end: int
    tool: str
    call_id: str
    ts: int


@dataclass(slots=True)
class SessionCtx:
    """What spans of a session need from records already sent: rebuilt from the file if lost."""

    step: int = 0
    """The last record fed."""
    t0: int = 0
    calls: Pairer[OpenCall] = field(default_factory=Pairer)
    """Tool calls waiting for their result (and results that came before their call)."""
    ended: bool = False
    """The last record fed was ``end``."""

    def copy(self) -> SessionCtx:
        """A copy to change without touching the committed state."""
        return SessionCtx(self.step, self.t0, self.calls.copy(), self.ended)


def decode(raw: bytes) -> Record | None:
    """A trace line as a Record, or None when malformed."""
    try:
        return record_decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def iter_records(session_dir: str, upto: int) -> Iterator[tuple[int, int, Record]]:
    """(start, end, record) of every well-formed line before byte ``upto``."""
    try:
        f = open(trace_path(session_dir), "rb")  # noqa: SIM115 - closed below
    except OSError:
        return
    with f:
        pos = 0
        for raw in f:
            start, pos = pos, pos + len(raw)
            if pos > upto or not raw.endswith(b"\n"):
                return
            rec = decode(raw)
            if rec is not None and rec.step is not None:
                yield start, pos, rec


class SpanBuilder:
    """Feeds one session's records in step order and returns the spans they complete."""

    def __init__(self, session_dir: str, skill: str, session_id: str, ctx: SessionCtx) -> None:
        self.dir = session_dir
        self.skill = skill
        self.sid = session_id
        self.ctx = ctx
        self.trace = trace_id(session_id)
        self.root = span_id(session_id, "root")
        self.calls: dict[int, Record] = {}
        """tool_call records fed in this batch, by step (older ones are re-read from the file)."""

    def feed(self, rec: Record, start: int, end: int, emit: bool = True) -> list[Span]:
        """Take the next record; the spans it completes (none when ``emit`` is false)."""
        ctx = self.ctx
        ts = ts_ns(rec.ts)
        step = rec.step or ctx.step + 1
        if ctx.t0 == 0:
            ctx.t0 = ts
        ctx.step = step
        ctx.ended = rec.phase == vocab.END
        p = _payload(rec)
        out: list[Span] = []
        if rec.phase == vocab.TOOL_CALL:
            tool, call_id = tool_key(p)
            # a result that came first was sent as its own span then: nothing waits for this call
            ctx.calls.call(tool, call_id, OpenCall(step, start, end, tool, call_id, ts))
            if emit:
                self.calls[step] = rec
        elif rec.phase == vocab.TOOL_RESULT:
            tool, call_id = tool_key(p)
            call = ctx.calls.result(tool, call_id, OpenCall(step, start, end, tool, call_id, ts))
            if emit:
                out.append(self.tool_span(call, rec, step))
        elif rec.phase == vocab.LLM_CALL:
            if emit:
                out.append(self.llm_span(rec, step))
        elif rec.phase == vocab.END:
            if emit:
                out.extend(self.tool_span(call, None, step, end_rec=rec) for call in ctx.calls.open_calls())
                out.append(self.root_span(rec, step, end))
            ctx.calls.clear()
        return out

    # --- spans ----------------------------------------------------------------

    def _span(self, sid: bytes, name: str, kind: Any, start: int, end: int, *, attrs: dict[str, Any],
              parent: bytes | None) -> Span:
        span = Span(trace_id=self.trace, span_id=sid, name=name, kind=kind,
                    start_time_unix_nano=start, end_time_unix_nano=max(start, end),
                    attributes=attributes(attrs))
        if parent is not None:
            span.parent_span_id = parent
        return span

    def _call_record(self, call: OpenCall) -> Record | None:
        rec = self.calls.get(call.step)
        if rec is None:
            from traced.forward.source import read_line

            rec = decode(read_line(self.dir, call.start, call.end))
        return rec

    def tool_span(self, call: OpenCall | None, result: Record | None, step: int,
                  end_rec: Record | None = None) -> Span:
        """``execute_tool <tool>`` from a call and its result (either may be missing)."""
        call_rec = self._call_record(call) if call is not None else None
        cp = _payload(call_rec) if call_rec is not None else {}
        rp = _payload(result) if result is not None else {}
        tool = str(rp.get("tool") or cp.get("tool") or (call.tool if call else "") or "tool")
        call_id = rp.get("call_id") or cp.get("call_id")
        end_ts = ts_ns(result.ts) if result is not None else ts_ns(end_rec.ts) if end_rec is not None else 0
        duration = _num(rp.get("duration_ms"))
        if call is not None:
            start_ts = call.ts
        elif duration is not None:
            start_ts = end_ts - int(duration * 1_000_000)
        else:
            start_ts = end_ts
        ok = rp.get("ok") if isinstance(rp.get("ok"), bool) else None
        args = cp.get("args")
        output = rp.get("result_summary") if rp.get("result_summary") is not None else rp.get("error")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": str(call_id) if call_id is not None else None,
            "gen_ai.tool.call.arguments": _json(args) if args is not None else None,
            "gen_ai.tool.call.result": _json(rp["result_summary"]) if rp.get("result_summary") is not None else None,
            "gen_ai.conversation.id": self.sid,
            "session.id": self.sid,
            "openinference.span.kind": "TOOL",
            "tool.name": tool,
            "input.value": _json(args) if args is not None else None,
            "output.value": _json(output) if output is not None else None,
            "traced.step": call.step if call is not None else None,
            "traced.result_step": step if result is not None else None,
            "traced.turn": (call_rec.turn if call_rec is not None else None) or (result.turn if result else None),
            "traced.tool.kind": cp.get("kind"),
            "traced.tool.server": cp.get("server"),
            "traced.ok": ok,
            "traced.duration_ms": duration,
            "traced.unfinished": True if result is None else None,
        }
        sid = span_id(self.sid, call.step if call is not None else step)
        span = self._span(sid, f"execute_tool {tool}", KIND_INTERNAL, start_ts, end_ts,
                          attrs=attrs, parent=self.root)
        if ok is False:
            span.status.code = ERROR
            span.status.message = _cap(str(rp.get("error") or "tool failed"), 1024)
        elif result is None:
            span.status.code = ERROR
            span.status.message = "no tool_result before end"
        return span

    def llm_span(self, rec: Record, step: int) -> Span:
        """``chat <model>`` from an llm_call."""
        p = _payload(rec)
        usage = _dict(p.get("usage"))
        model = str(p.get("model") or "unknown")
        end_ts = ts_ns(rec.ts)
        latency = _num(p.get("latency_ms"))
        start_ts = end_ts - int(latency * 1_000_000) if latency is not None else end_ts
        inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        finish = p.get("finish_reason")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": p.get("provider"),
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.cache_read.input_tokens": _int(usage.get("cache_read_tokens")),
            "gen_ai.usage.cache_creation.input_tokens": _int(usage.get("cache_write_tokens")),
            "gen_ai.response.finish_reasons": [str(finish)] if finish is not None else None,
            "gen_ai.conversation.id": self.sid,
            "session.id": self.sid,
            "openinference.span.kind": "LLM",
            "llm.model_name": model,
            "llm.provider": p.get("provider"),
            "llm.token_count.prompt": inp,
            "llm.token_count.completion": out,
            "llm.token_count.total": (inp or 0) + (out or 0) if inp is not None or out is not None else None,
            "traced.cost_usd": _num(p.get("cost_usd")),
            "traced.latency_ms": latency,
            "traced.step": step,
            "traced.turn": rec.turn,
        }
        return self._span(span_id(self.sid, step), f"chat {model}", KIND_CLIENT, start_ts, end_ts,
                          attrs=attrs, parent=self.root)

    def root_span(self, end_rec: Record, step: int, upto: int) -> Span:
        """``invoke_agent <skill>``: the whole session, re-read from its file up to this ``end``."""
        ep = _payload(end_rec)
        events: list[Span.Event] = []
        dropped = 0
        first_input: Any = None
        cwd: Any = None
        started = False
        turns = tool_calls = errors = 0
        usage = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
        cost: float | None = None
        t0 = self.ctx.t0
        for _start, _end, rec in iter_records(self.dir, upto):
            p = _payload(rec)
            if not t0:
                t0 = ts_ns(rec.ts)
            turns = max(turns, rec.turn or 0)
            if rec.phase == "start" and not started:
                started = True
                first_input, cwd = p.get("input"), p.get("cwd")
            if rec.phase == "tool_call":
                tool_calls += 1
            elif rec.phase == "tool_result" and p.get("ok") is False:
                errors += 1
            elif rec.phase == vocab.LLM_CALL:
                u = _dict(p.get("usage"))
                usage["input"] += _int(u.get("input_tokens")) or 0
                usage["output"] += _int(u.get("output_tokens")) or 0
                usage["cache_read"] += _int(u.get("cache_read_tokens")) or 0
                usage["cache_write"] += _int(u.get("cache_write_tokens")) or 0
                c = _num(p.get("cost_usd"))
                if c is not None:
                    cost = (cost or 0.0) + c
            if rec.phase in SPAN_PHASES:
                continue
            if len(events) >= MAX_EVENTS:
                dropped += 1
                continue
            events.append(self.event(rec, p))
        outcome = ep.get("outcome")
        summary = ep.get("summary")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.skill,
            "gen_ai.conversation.id": self.sid,
            "session.id": self.sid,
            "openinference.span.kind": "AGENT",
            "input.value": _json(first_input) if first_input is not None else None,
            "output.value": _json(summary) if summary is not None else None,
            "gen_ai.usage.input_tokens": usage["input"],
            "gen_ai.usage.output_tokens": usage["output"],
            "gen_ai.usage.cache_read.input_tokens": usage["cache_read"],
            "gen_ai.usage.cache_creation.input_tokens": usage["cache_write"],
            "traced.skill": self.skill,
            "traced.session_id": self.sid,
            "traced.outcome": outcome,
            "traced.reason": ep.get("reason"),
            "traced.summary": summary,
            "traced.cost_usd": cost,
            "traced.steps": step,
            "traced.turns": turns or None,
            "traced.tool_calls": tool_calls,
            "traced.errors": errors,
            "traced.cwd": cwd,
            "traced.events_dropped": dropped or None,
        }
        span = self._span(self.root, f"invoke_agent {self.skill}", KIND_INTERNAL, t0, ts_ns(end_rec.ts),
                          attrs=attrs, parent=None)
        span.events.extend(events)
        span.dropped_events_count = dropped
        if outcome == "success":
            span.status.code = OK
        elif outcome is not None:
            span.status.code = ERROR
            reason = ep.get("reason")
            span.status.message = _cap(f"{outcome}: {reason}" if reason else str(summary or outcome), 1024)
        return span

    def event(self, rec: Record, p: dict[str, Any]) -> Span.Event:
        """A record that is not a span, as an event of the root span."""
        attrs: dict[str, Any] = {"traced.step": rec.step, "traced.turn": rec.turn,
                                 "traced.payload": _json(rec.payload, MAX_EVENT_PAYLOAD)}
        if rec.phase == "hook":
            attrs.update({"traced.hook.event": p.get("event"), "traced.hook.name": p.get("name"),
                          "traced.hook.ok": p.get("ok") if isinstance(p.get("ok"), bool) else None,
                          "traced.hook.duration_ms": _num(p.get("duration_ms"))})
        return Span.Event(time_unix_nano=ts_ns(rec.ts), name=rec.phase, attributes=attributes(attrs))


def rebuild(session_dir: str, skill: str, session_id: str, upto: int) -> SessionCtx:
    """The context of a session after every record before byte ``upto`` (after a restart)."""
    builder = SpanBuilder(session_dir, skill, session_id, SessionCtx())
    for start, end, rec in iter_records(session_dir, upto):
        builder.feed(rec, start, end, emit=False)
    return builder.ctx


def request(spans: list[Span], service: str = "traced", project: str | None = None) -> ExportTraceServiceRequest:
    """One export request holding ``spans``."""
    resource = Resource(attributes=attributes({
        "service.name": service, "service.version": __version__, "host.name": socket.gethostname(),
        "telemetry.sdk.name": "traced", "openinference.project.name": project,
    }))
    scope = InstrumentationScope(name="traced", version=__version__)
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)]),
    ])
