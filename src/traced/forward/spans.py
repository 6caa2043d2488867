"""Trace records -> OTLP spans, to the OpenTelemetry GenAI semantic conventions.

The conventions are those of the ``open-telemetry/semantic-conventions-genai``
repository (``model/gen-ai/registry.yaml``, ``model/mcp/registry.yaml``), with
OpenInference's attributes beside them for Phoenix. The mapping (docs/forwarding.md):

- one trace per session: ``trace_id = sha256(session_id)[:16]``;
- a root span ``invoke_agent <skill>`` (span id ``sha256(session_id + ":root")[:8]``),
  sent when the session's ``end`` record is forwarded, with the session's other
  records as span events;
- a child span ``execute_tool <tool>`` per ``tool_call``/``tool_result`` pair, sent when
  the result is forwarded (span id from the call's step);
- a child span ``chat <model>`` per ``llm_call`` (span id from its step).

Span ids are ``sha256(f"{session_id}:{step}")[:8]``: every id is a function of the
session and its records, so a re-sent span is the same span.

Token counts follow the spec, not traced's own fields: ``gen_ai.usage.input_tokens``
(and OpenInference's ``llm.token_count.prompt``) *include* the cache reads and writes,
which traced's ``input_tokens`` excludes. Tool arguments and results, and the
session's input, are content: sent only with ``capture_content`` (opt-in, as the spec
says of ``gen_ai.tool.call.arguments``/``result``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from traced.format import layout, vocab
from traced.format.pairing import Pairer, tool_key
from traced.format.records import Record, record_decoder
from traced.forward import otlpwire
from traced.forward.otlpwire import Event, Span
from traced.forward.source import iter_lines

SPAN_PHASES: Final = frozenset({"tool_call", "tool_result", "llm_call"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
OTHER: Final = "_OTHER"
"""The spec's value for "none of the known values" (``gen_ai.provider.name``, ``error.type``)."""

PROVIDERS: Final = {
    "openai": "openai", "anthropic": "anthropic", "cohere": "cohere", "perplexity": "perplexity",
    "deepseek": "deepseek", "groq": "groq",
    "aws.bedrock": "aws.bedrock", "bedrock": "aws.bedrock", "aws": "aws.bedrock", "aws_bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "gcp.gemini": "gcp.gemini", "gemini": "gcp.gemini", "google_ai_studio": "gcp.gemini",
    "google_genai": "gcp.gemini", "generativelanguage": "gcp.gemini",
    "gcp.vertex_ai": "gcp.vertex_ai", "vertex": "gcp.vertex_ai", "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai", "google_vertex": "gcp.vertex_ai", "google_vertex_ai": "gcp.vertex_ai",
    "gcp.gen_ai": "gcp.gen_ai", "google": "gcp.gen_ai", "gcp": "gcp.gen_ai",
    "azure.ai.openai": "azure.ai.openai", "azure": "azure.ai.openai", "azure_openai": "azure.ai.openai",
    "azure.ai.inference": "azure.ai.inference", "azure_ai": "azure.ai.inference",
    "azure_ai_inference": "azure.ai.inference",
    "ibm.watsonx.ai": "ibm.watsonx.ai", "watsonx": "ibm.watsonx.ai", "ibm": "ibm.watsonx.ai",
    "x_ai": "x_ai", "xai": "x_ai", "grok": "x_ai",
    "mistral_ai": "mistral_ai", "mistral": "mistral_ai", "mistralai": "mistral_ai",
    "moonshot_ai": "moonshot_ai", "moonshot": "moonshot_ai", "moonshotai": "moonshot_ai",
}
"""Spellings agents and libraries use -> the spec's well-known ``gen_ai.provider.name`` values."""

TOOL_TYPES: Final = {"mcp": "extension"}
"""traced's tool ``kind`` -> ``gen_ai.tool.type``; everything else is ``function`` (the
model generates the arguments, the agent's harness runs it)."""


def provider_name(provider: Any) -> str:
    """``gen_ai.provider.name`` for a record's ``provider``: a well-known value, the name
    lowercased when it is not one (the attribute is an open enum), ``_OTHER`` when missing."""
    if not isinstance(provider, str) or not provider.strip():
        return OTHER
    key = provider.strip().lower().replace("-", "_").replace(" ", "_")
    return PROVIDERS.get(key, key)


def trace_id(session_id: str) -> bytes:
    """The session's 16-byte trace id."""
    return _nonzero(hashlib.sha256(session_id.encode()).digest()[:16])


def span_id(session_id: str, step: int | str) -> bytes:
    """The 8-byte span id of a session's record (or ``"root"``)."""
    return _nonzero(hashlib.sha256(f"{session_id}:{step}".encode()).digest()[:8])


def _nonzero(b: bytes) -> bytes:
    return b if any(b) else b[:-1] + b"\x01"


_EPOCH_ORDINAL: Final = _EPOCH.toordinal()


def ts_ns(ts: str) -> int:
    """A trace timestamp as Unix nanoseconds (exact to the microsecond); 0 if unparsable."""
    try:
        dt = datetime.fromisoformat(ts)
    except (ValueError, TypeError):
        return 0
    offset = dt.utcoffset()
    seconds = (dt.toordinal() - _EPOCH_ORDINAL) * 86400 + dt.hour * 3600 + dt.minute * 60 + dt.second
    if offset is not None:
        seconds -= offset.days * 86400 + offset.seconds
        micro = dt.microsecond - offset.microseconds
    else:
        micro = dt.microsecond
    return (seconds * 1_000_000 + micro) * 1000


def _payload(rec: Record) -> dict[str, Any]:
    return rec.payload if isinstance(rec.payload, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _json(value: Any) -> str:
    return otlpwire.to_json(value, otlpwire.FULL.attr)


@dataclass(slots=True)
class Tokens:
    """One call's (or a session's) tokens, as the spec counts them."""

    uncached: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None

    @classmethod
    def of(cls, usage: dict[str, Any]) -> Tokens:
        """From an ``llm_call``'s ``usage`` (traced's fields: ``input_tokens`` excludes the cache)."""
        return cls(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")),
                   _int(usage.get("cache_read_tokens")), _int(usage.get("cache_write_tokens")))

    @property
    def input(self) -> int | None:
        """All input tokens: uncached + cache read + cache write (``gen_ai.usage.input_tokens``)."""
        parts = (self.uncached, self.cache_read, self.cache_write)
        return None if all(p is None for p in parts) else sum(p or 0 for p in parts)

    def add(self, other: Tokens) -> None:
        """Sum ``other`` into this one (a missing figure counts as 0)."""
        self.uncached = (self.uncached or 0) + (other.uncached or 0)
        self.output = (self.output or 0) + (other.output or 0)
        self.cache_read = (self.cache_read or 0) + (other.cache_read or 0)
        self.cache_write = (self.cache_write or 0) + (other.cache_write or 0)

    def attributes(self) -> dict[str, Any]:
        """The GenAI and OpenInference token attributes."""
        inp, out = self.input, self.output
        return {
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.cache_read.input_tokens": self.cache_read,
            "gen_ai.usage.cache_creation.input_tokens": self.cache_write,
            "llm.token_count.prompt": inp,
            "llm.token_count.completion": out,
            "llm.token_count.total": (inp or 0) + (out or 0) if inp is not None or out is not None else None,
            "llm.token_count.prompt_details.cache_read": self.cache_read,
            "llm.token_count.prompt_details.cache_write": self.cache_write,
        }


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
    """A trace line as a Record, or None when malformed (``timestamp`` stands in for ``ts``)."""
    try:
        return record_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        try:
            obj = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            return None
        if isinstance(obj, dict) and "ts" not in obj and isinstance(obj.get("timestamp"), str):
            obj["ts"] = obj["timestamp"]
            try:
                return msgspec.convert(obj, Record)
            except msgspec.ValidationError:
                return None
        return None


def iter_records(session_dir: str, upto: int) -> Iterator[tuple[int, int, Record]]:
    """(start, end, record) of every well-formed line before byte ``upto``, ``step`` filled in by position."""
    for start, end, pos, raw in iter_lines(session_dir, upto):
        rec = decode(raw)
        if rec is not None:
            if rec.step is None:
                rec.step = pos
            yield start, end, rec


def agent_version(session_dir: str) -> str | None:
    """The skill's version from the session's meta.json (``skill_version`` or ``skill_version_text``)."""
    try:
        with os.fdopen(layout.open_regular(os.path.join(session_dir, layout.META)), "rb") as f:
            meta = msgspec.json.decode(f.read())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    for key in ("skill_version", "skill_version_text"):
        value = meta.get(key)
        if isinstance(value, int | str) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


class SpanBuilder:
    """Feeds one session's records in step order and returns the spans they complete."""

    def __init__(self, session_dir: str, skill: str, session_id: str, ctx: SessionCtx, *,
                 capture_content: bool = False) -> None:
        self.dir = session_dir
        self.skill = skill
        self.sid = session_id
        self.ctx = ctx
        self.content = capture_content
        self.trace = trace_id(session_id)
        self.root = span_id(session_id, "root")
        self.calls: dict[int, Record] = {}
        """tool_call records fed in this batch, by step (older ones are re-read from the file)."""
        self.fed: list[Record] = []
        self.fed_from = -1
        """Byte offset of the first record in ``fed``: the root span re-reads only what came before."""

    def feed(self, rec: Record, start: int, end: int, emit: bool = True, pos: int | None = None) -> list[Span]:
        """Take the next record (``pos``: its step when it has none); the spans it completes."""
        ctx = self.ctx
        ts = ts_ns(rec.ts)
        step = rec.step or pos or ctx.step + 1
        if rec.step is None:
            rec.step = step
        if emit:
            if not self.fed:
                self.fed_from = start
            self.fed.append(rec)
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

    def _span(self, sid: bytes, name: str, kind: int, start: int, end: int, *, attrs: dict[str, Any],
              parent: bytes | None) -> Span:
        return Span(self.trace, sid, parent, name, kind, start, max(start, end), attrs)

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
        kind = cp.get("kind") or rp.get("kind")
        server = cp.get("server") or rp.get("server")
        failed = ok is False or result is None
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": str(call_id) if call_id is not None else None,
            "gen_ai.tool.type": TOOL_TYPES.get(str(kind), "function"),
            "mcp.method.name": "tools/call" if kind == "mcp" else None,
            "error.type": _error_type(rp) if failed else None,
            "gen_ai.conversation.id": self.sid,
            "session.id": self.sid,
            "openinference.span.kind": "TOOL",
            "tool.name": tool,
            "traced.step": call.step if call is not None else None,
            "traced.result_step": step if result is not None else None,
            "traced.turn": (call_rec.turn if call_rec is not None else None) or (result.turn if result else None),
            "traced.tool.kind": kind,
            "traced.tool.server": server,
            "traced.ok": ok,
            "traced.duration_ms": duration,
            "traced.unfinished": True if result is None else None,
        }
        if self.content:
            args = cp.get("args")
            summary = rp.get("result_summary")
            output = summary if summary is not None else rp.get("error")
            attrs["gen_ai.tool.call.arguments"] = _json(args) if args is not None else None
            attrs["gen_ai.tool.call.result"] = _json(summary) if summary is not None else None
            attrs["input.value"] = _json(args) if args is not None else None
            attrs["output.value"] = _json(output) if output is not None else None
        sid = span_id(self.sid, call.step if call is not None else step)
        span = self._span(sid, f"execute_tool {tool}", otlpwire.SPAN_KIND_INTERNAL, start_ts, end_ts,
                          attrs=attrs, parent=self.root)
        if ok is False:
            span.status_code = otlpwire.STATUS_ERROR
            span.status_message = str(rp.get("error") or "tool failed")
        elif result is None:
            span.status_code = otlpwire.STATUS_ERROR
            span.status_message = "no tool_result before end"
        return span

    def llm_span(self, rec: Record, step: int) -> Span:
        """``chat <model>`` from an llm_call."""
        p = _payload(rec)
        tokens = Tokens.of(_dict(p.get("usage")))
        model = str(p.get("model") or "unknown")
        end_ts = ts_ns(rec.ts)
        latency = _num(p.get("latency_ms"))
        start_ts = end_ts - int(latency * 1_000_000) if latency is not None else end_ts
        finish = p.get("finish_reason")
        failed = p.get("ok") is False or bool(p.get("error"))
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name(p.get("provider")),
            "gen_ai.request.model": model,
            **tokens.attributes(),
            "gen_ai.response.finish_reasons": [str(finish)] if finish is not None else None,
            "error.type": _error_type(p) if failed else None,
            "gen_ai.conversation.id": self.sid,
            "session.id": self.sid,
            "openinference.span.kind": "LLM",
            "llm.model_name": model,
            "llm.provider": p.get("provider"),
            "traced.cost_usd": _num(p.get("cost_usd")),
            "traced.latency_ms": latency,
            "traced.step": step,
            "traced.turn": rec.turn,
        }
        span = self._span(span_id(self.sid, step), f"chat {model}", otlpwire.SPAN_KIND_CLIENT, start_ts, end_ts,
                          attrs=attrs, parent=self.root)
        if failed:
            span.status_code = otlpwire.STATUS_ERROR
            span.status_message = str(p.get("error") or "llm call failed")
        return span

    def root_span(self, end_rec: Record, step: int, upto: int) -> Span:
        """``invoke_agent <skill>``: the whole session, re-read from its file up to this ``end``."""
        ep = _payload(end_rec)
        events: list[Event] = []
        first_input: Any = None
        cwd: Any = None
        started = False
        turns = tool_calls = errors = 0
        tokens = Tokens(0, 0, 0, 0)
        providers: dict[str, int] = {}
        cost: float | None = None
        t0 = self.ctx.t0
        if self.fed:
            earlier = (rec for _s, _e, rec in iter_records(self.dir, self.fed_from)) if self.fed_from else iter(())
            records: Iterator[Record] = itertools.chain(earlier, self.fed)
        else:
            records = (rec for _s, _e, rec in iter_records(self.dir, upto))
        for rec in records:
            p = _payload(rec)
            if not t0:
                t0 = ts_ns(rec.ts)
            turns = max(turns, rec.turn or 0)
            phase = rec.phase
            if phase == "start" and not started:
                started = True
                first_input, cwd = p.get("input"), p.get("cwd")
            if phase == "tool_call":
                tool_calls += 1
            elif phase == "tool_result" and p.get("ok") is False:
                errors += 1
            elif phase == vocab.LLM_CALL:
                tokens.add(Tokens.of(_dict(p.get("usage"))))
                name = provider_name(p.get("provider"))
                providers[name] = providers.get(name, 0) + 1
                c = _num(p.get("cost_usd"))
                if c is not None:
                    cost = (cost or 0.0) + c
            if phase in SPAN_PHASES:
                continue
            events.append(self.event(rec, p))
        outcome = ep.get("outcome")
        summary = ep.get("summary")
        known = {k: v for k, v in providers.items() if k != OTHER}
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": max(known, key=lambda k: known[k]) if known else OTHER,
            "gen_ai.agent.name": self.skill,
            "gen_ai.agent.version": agent_version(self.dir),
            "gen_ai.conversation.id": self.sid,
            "session.id": self.sid,
            "openinference.span.kind": "AGENT",
            "input.value": _json(first_input) if first_input is not None and self.content else None,
            "output.value": _json(summary) if summary is not None else None,
            **tokens.attributes(),
            "error.type": str(outcome) if outcome is not None and outcome != "success" else None,
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
        }
        span = self._span(self.root, f"invoke_agent {self.skill}", otlpwire.SPAN_KIND_INTERNAL, t0,
                          ts_ns(end_rec.ts), attrs=attrs, parent=None)
        span.events = events
        if outcome == "success":
            span.status_code = otlpwire.STATUS_OK
        elif outcome is not None:
            span.status_code = otlpwire.STATUS_ERROR
            reason = ep.get("reason")
            span.status_message = f"{outcome}: {reason}" if reason else str(summary or outcome)
        return span

    def event(self, rec: Record, p: dict[str, Any]) -> Event:
        """A record that is not a span, as an event of the root span (a prompt's text only with content)."""
        payload: Any = rec.payload
        if rec.phase == vocab.USER_PROMPT and not self.content and isinstance(payload, dict):
            payload = {k: v for k, v in payload.items() if k != "prompt"}
        attrs: dict[str, Any] = {"traced.step": rec.step, "traced.turn": rec.turn, "traced.payload": payload}
        if rec.phase == "hook":
            attrs.update({"traced.hook.event": p.get("event"), "traced.hook.name": p.get("name"),
                          "traced.hook.ok": p.get("ok") if isinstance(p.get("ok"), bool) else None,
                          "traced.hook.duration_ms": _num(p.get("duration_ms"))})
        return Event(ts_ns(rec.ts), rec.phase, attrs)


def _error_type(p: dict[str, Any]) -> str:
    """``error.type``: the record's own low-cardinality ``error_type`` when it gave one, else ``_OTHER``."""
    value = p.get("error_type")
    return value if isinstance(value, str) and value and len(value) <= 64 else OTHER


def rebuild(session_dir: str, skill: str, session_id: str, upto: int) -> SessionCtx:
    """The context of a session after every record before byte ``upto`` (after a restart)."""
    builder = SpanBuilder(session_dir, skill, session_id, SessionCtx())
    for start, end, rec in iter_records(session_dir, upto):
        builder.feed(rec, start, end, emit=False)
    return builder.ctx

