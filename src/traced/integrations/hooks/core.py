"""Agent hooks -> traced records, sans-IO: ``translate(hook, agent, options, now) -> Plan``.

One hook JSON object (Claude Code, Codex and Gemini CLI all send one on stdin:
``session_id``, ``cwd``, ``hook_event_name`` and per-event fields) becomes a
``Plan``: how to open or resume the session, which records to emit, whether
to end it. What differs between agents is a small table (``Agent``: which
event is a prompt, a tool call, a result…), one per agent in
``claude_code``/``codex``/``gemini``; the pairing of calls and results, the
prompts, the session's start and end are shared here. ``clocks`` times calls
across two hook processes, ``run`` talks to the daemon, ``install`` edits the
agent's settings.

This module sits on the hook's hot path: stdlib only, and JSON through ``wire.cjson``
(``import json`` would cost the hook ``re`` and ``enum``).
"""

from __future__ import annotations

from traced.errors import HookError
from traced.format import vocab
from traced.format.layout import valid_name
from traced.wire import cjson

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

SUMMARY_LIMIT: Final = 200
"""Longest ``result_summary``, in characters."""

# what an agent event means (``Agent.kinds``); any event not in the table is a ``hook`` record
START: Final = "session_start"
PROMPT: Final = "prompt"
CALL: Final = "tool_call"
RESULT: Final = "tool_result"
FAILURE: Final = "tool_failure"
DENIED: Final = "tool_denied"
"""A tool call that will never get a result (a permission denial): closed as ``ok: false``."""
END: Final = "session_end"
MODEL_REQUEST: Final = "model_request"
"""A model request starts (Gemini ``BeforeModel``): only its time is kept, for ``latency_ms``."""
MODEL_RESPONSE: Final = "model_response"
"""A model response (Gemini ``AfterModel``, one per streamed chunk): an ``llm_call`` on the last chunk."""
HOOK: Final = "hook"

REOPENING: Final = frozenset({START, PROMPT, CALL, END})
"""Kinds that start something (or end the session): they reopen an ended session. Every other
event completes something already begun, so it may come late (async hooks) and never reopens."""
LLM_STAMP: Final = "llm"
"""The call clock's key for a model request in flight (one per session at a time)."""


class Agent:
    """One agent's table: how its hook events map onto traced records.

    ``kinds``: event -> kind (``START``, ``PROMPT``…; others are ``hook`` records).
    ``name_keys``: event -> the field a matcher matches (a ``hook`` record's ``name``;
    default ``tool_name``). ``common``: fields every hook carries, kept out of ``hook``
    records (the session's meta holds them). ``labels``: fields recorded as the session's
    labels. ``success_reasons``: session-end reasons that are a normal exit.
    ``call_id_key``: the field pairing a call with its result (None: the agent sends none;
    then, as whenever a hook lacks it, the call clock pairs them by tool name and input).
    ``skill_tool``: the tool that runs a skill. ``provider``: the ``llm_call`` provider.
    ``stop_events``/``on_stop``: the hook point for work at the end of a turn (e.g. reading
    the transcript's usage). Plain class, not a dataclass: this is the hot path.
    """

    __slots__ = ("call_id_key", "common", "kinds", "labels", "name", "name_keys", "on_stop", "provider",
                 "skill", "skill_tool", "stop_events", "success_reasons")

    def __init__(self, name: str, kinds: dict[str, str], *, name_keys: dict[str, str] | None = None,
                 common: frozenset[str] = frozenset(), labels: tuple[str, ...] = (),
                 success_reasons: frozenset[str] = frozenset(), call_id_key: str | None = "tool_use_id",
                 skill_tool: str | None = None, provider: str | None = None,
                 stop_events: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.skill = name
        self.kinds = kinds
        self.name_keys = name_keys or {}
        self.common = common | {"session_id", "cwd", "hook_event_name"}
        self.labels = labels
        self.success_reasons = success_reasons
        self.call_id_key = call_id_key
        self.skill_tool = skill_tool
        self.provider = provider
        self.stop_events = stop_events
        self.on_stop: Callable[..., None] | str | None = None
        """The end-of-turn hook point: ``on_stop(hook, plan, socket_path, deadline, opener)``, run
        for a ``stop_events`` event before the event itself is sent (so what it records, e.g. the
        turn's LLM calls from the transcript, lands before the Stop). ``deadline``:
        ``time.monotonic()`` seconds it may use; ``opener(client, plan)`` opens the session on a
        client of its own. A ``"module:function"`` string is imported only when called (the
        table stays light). Whatever it raises costs its own records, never the event."""


# ============================================================================ the plan


class Options:
    """How hooks are recorded: ``--skill`` (default: the agent's name), ``--target``,
    ``--idle-timeout`` (0: the daemon's).

    Plain classes rather than dataclasses here: building a dataclass costs
    about a millisecond at import, on a path that runs for every hook event.
    """

    __slots__ = ("idle_timeout", "skill", "target")

    def __init__(self, skill: str = "", target: str = "global", idle_timeout: float = 0.0) -> None:
        self.skill = skill
        self.target = target
        self.idle_timeout = idle_timeout


class Plan:
    """What one hook event turns into.

    ``open``: ``Client.open`` keyword arguments, used first on a session start or
    prompt, and whenever the daemon does not know the session (hooks installed
    mid-conversation, daemon state lost). ``records``: (phase, payload) to emit, in
    order. ``end``: (outcome, summary) to close the session with. ``stamp``: the call
    clock key whose start time to keep (a tool call, a model request), with
    ``stamp_call`` (a call id made up here, when the agent sends none); ``take``: the
    key whose start time gives the duration (and, with ``adopt_call``, the call id).
    A plan with nothing to send (``idle``) costs no connection.
    """

    __slots__ = ("adopt_call", "deadline", "end", "event", "hook", "kind", "late", "open", "open_first", "records",
                 "session_id", "stamp", "stamp_call", "take", "ts")

    def __init__(self, session_id: str, event: str, ts: float, open: dict[str, Any]) -> None:
        self.session_id = session_id
        self.event = event
        self.kind = HOOK
        self.ts = ts
        self.open = open
        self.open_first = False
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.end: tuple[str, str | None] | None = None
        self.stamp = ""
        self.stamp_call = ""
        self.take = ""
        self.adopt_call = False
        self.hook: dict[str, Any] = {}
        """The hook object itself (for the ``on_stop`` hook point: ``transcript_path``…)."""
        self.deadline = 0.0
        """``time.monotonic()`` seconds by which the invocation must be done (set by ``run``)."""
        self.late = False
        """The event may arrive after the session ended (async hooks): it is then recorded as a
        late record and the session keeps its ending, instead of being reopened."""

    @property
    def idle(self) -> bool:
        """Nothing to send: no record, no open, no end (a clock stamp at most)."""
        return not self.records and self.end is None and not self.open_first

    def set_duration(self, started: float | None, call_id: str = "") -> None:
        """Fill in what the call clock knows: ``duration_ms`` (now - ``started``) of a
        tool_result that has none from the agent, ``latency_ms`` of an llm_call, and the
        call id a tool_result adopts (``adopt_call``)."""
        ok = started is not None and started <= self.ts
        for phase, payload in self.records:
            if phase == vocab.TOOL_RESULT:
                if ok and "duration_ms" not in payload:
                    payload["duration_ms"] = round((self.ts - started) * 1000.0, 3)  # type: ignore[operator]
                if self.adopt_call and call_id:
                    payload["call_id"] = call_id
            elif phase == vocab.LLM_CALL and ok:
                payload["latency_ms"] = round((self.ts - started) * 1000.0, 3)  # type: ignore[operator]


def parse(text: str | bytes) -> dict[str, Any]:
    """The hook's JSON object (see ``wire.fit.parse_json``: BOM, invalid UTF-8 and lone
    surrogates repaired, big numbers exact); HookError when it is not one."""
    from traced.wire.fit import parse_json

    try:
        value = parse_json(text)
    except ValueError as e:
        raise HookError(f"invalid hook JSON on stdin: {e}") from None
    if not isinstance(value, dict):
        raise HookError(f"hook input must be a JSON object, not {type(value).__name__}")
    return value


def translate(hook: dict[str, Any], agent: Agent, options: Options, now: float) -> Plan:
    """Map one hook object of ``agent`` to a Plan (sans-IO). Raises HookError for a hook
    without an event name or with a session id that is not a name."""
    event = hook.get("hook_event_name")
    if not isinstance(event, str) or not event:
        raise HookError("hook input has no hook_event_name")
    sid = hook.get("session_id")
    if not valid_name(sid):
        raise HookError(f"invalid session_id {sid!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    assert isinstance(sid, str)
    kind = agent.kinds.get(event, HOOK)
    plan = Plan(session_id=sid, event=event, ts=now, open=open_args(hook, agent, options))
    plan.kind = kind
    plan.hook = hook
    if kind not in REOPENING:
        plan.late = True
        plan.open["reopen"] = False
    if kind == START:
        plan.open_first = True
        # a new session records `start {input: {source}}`; a compact/resume/clear inside
        # an existing trace is worth its own record
        if _str(hook.get("source")) not in ("", "startup"):
            plan.records.append((vocab.HOOK, hook_payload(hook, event, agent)))
    elif kind == PROMPT:
        # once per turn, resume the session with its labels: cheap, and it lets the daemon
        # fill in what an earlier start lacked (some versions send no transcript_path)
        plan.open_first = True
        plan.records.append((vocab.USER_PROMPT, _fields(
            prompt=hook.get("prompt") if isinstance(hook.get("prompt"), str) else None,
            prompt_id=_str(hook.get("prompt_id")) or None,
        )))
    elif kind == CALL:
        payload = tool_call_payload(hook, agent)
        plan.stamp = _str(payload.get("call_id"))
        if not plan.stamp:  # no id from the agent (Gemini CLI; Claude Code headless): make one up,
            plan.stamp = call_key(hook)  # keep it on the clock under the call's digest
            plan.stamp_call = f"{plan.stamp}-{int(now * 1000):x}"
            payload["call_id"] = plan.stamp_call
        plan.records.append((vocab.TOOL_CALL, payload))
    elif kind in (RESULT, FAILURE, DENIED):
        payload = tool_result_payload(hook, agent, kind)
        plan.records.append((vocab.TOOL_RESULT, payload))
        plan.take = _str(payload.get("call_id"))
        if not plan.take:  # the call's clock holds the id its hook made up
            plan.take = call_key(hook)
            plan.adopt_call = True
            payload["call_id"] = f"{plan.take}-unpaired"
    elif kind == END:
        reason = _str(hook.get("reason"))
        plan.end = (vocab.SUCCESS if reason in agent.success_reasons else vocab.ABORTED, reason or None)
    elif kind == MODEL_REQUEST:
        plan.stamp = LLM_STAMP
    elif kind == MODEL_RESPONSE:
        llm = llm_call_payload(hook, agent)
        if llm is not None:  # the last chunk of a response; the others record nothing
            plan.records.append((vocab.LLM_CALL, llm))
            plan.take = LLM_STAMP
    else:  # Stop, compaction, notifications, tasks… and any event added later
        plan.records.append((vocab.HOOK, hook_payload(hook, event, agent)))
    return plan


def open_args(hook: dict[str, Any], agent: Agent, options: Options) -> dict[str, Any]:
    """``Client.open`` keyword arguments for the hook's session.

    owner_pid -1: the hook process is short-lived, so only the idle timeout
    (and the session's end) ends the session.
    """
    event = _str(hook.get("hook_event_name"))
    if agent.kinds.get(event) == START:
        value: dict[str, Any] = {"source": _str(hook.get("source")) or "startup"}
    else:
        value = {"source": "mid_session", "event": event}
    labels = {k: hook[k] for k in agent.labels if isinstance(hook.get(k), str) and hook[k]}
    return {
        "skill": options.skill or agent.skill,
        "session_id": hook.get("session_id"),
        "target": options.target,
        "cwd": _str(hook.get("cwd")) or None,
        "owner_pid": -1,
        "idle_timeout": options.idle_timeout or None,
        "input": value,
        "meta": labels,
    }


def call_key(hook: dict[str, Any]) -> str:
    """The call clock's key for an agent that sends no call id: a digest of the tool's name
    and input, the same in its before and after events (``t`` + 8 hex digits)."""
    import zlib

    text = cjson.dumps([hook.get("tool_name"), hook.get("tool_input")], sort_keys=True, default=str)
    return f"t{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"


def split_tool(name: str, skill_tool: str | None = "Skill") -> tuple[str, str, str | None]:
    """(tool, kind, server) of a tool name.

    ``mcp__<server>__<tool>`` -> (tool, "mcp", server) (Claude Code, Codex and
    Gemini CLI all name MCP tools so); ``skill_tool`` -> kind ``skill``;
    anything else -> kind ``tool``.
    """
    if name.startswith("mcp__"):
        server, sep, tool = name[5:].partition("__")
        if sep and server and tool:
            return tool, "mcp", server
    if skill_tool and name == skill_tool:
        return name, "skill", None
    return name, "tool", None


def _tool_fields(hook: dict[str, Any], agent: Agent) -> dict[str, Any]:
    tool, kind, server = split_tool(_str(hook.get("tool_name")) or "unknown", agent.skill_tool)
    mcp = hook.get("mcp_context")
    if kind == "tool" and isinstance(mcp, dict) and isinstance(mcp.get("server_name"), str):  # Gemini CLI
        kind, server = "mcp", mcp["server_name"]
    payload = _fields(tool=tool, kind=kind, server=server)
    if kind == "skill":
        tool_input = hook.get("tool_input")
        if isinstance(tool_input, dict):
            name = tool_input.get("skill") or tool_input.get("command")
            if isinstance(name, str) and name:
                payload["name"] = name
    for key in ("agent_id", "agent_type"):
        if isinstance(hook.get(key), str) and hook[key]:
            payload[key] = hook[key]
    return payload


def tool_call_payload(hook: dict[str, Any], agent: Agent) -> dict[str, Any]:
    """``tool_call {tool, args, call_id, kind, server?, name? (skill), agent_id?, agent_type?}``."""
    fields = _tool_fields(hook, agent)
    tool_input = hook.get("tool_input")
    payload: dict[str, Any] = {
        "tool": fields.pop("tool"),
        "args": tool_input if tool_input is not None else {},
    }
    call_id = _str(hook.get(agent.call_id_key)) if agent.call_id_key else ""
    if call_id:
        payload["call_id"] = call_id
    payload.update(fields)
    return payload


def tool_result_payload(hook: dict[str, Any], agent: Agent, kind: str = RESULT) -> dict[str, Any]:
    """``tool_result {tool, ok, call_id, kind, server?, duration_ms?, result_summary?, error?,
    denied?, response?}``.

    ``duration_ms`` is the agent's own figure when the hook carries one (Claude Code's
    tool hooks do); else the call clock's is added later (``Plan.set_duration``).
    """
    fields = _tool_fields(hook, agent)
    payload: dict[str, Any] = {"tool": fields.pop("tool"), "ok": kind == RESULT}
    call_id = _str(hook.get(agent.call_id_key)) if agent.call_id_key else ""
    if call_id:
        payload["call_id"] = call_id
    payload.update(fields)
    duration = hook.get("duration_ms")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and 0 <= duration < 1e12:
        payload["duration_ms"] = duration
    if kind == DENIED:  # the call will never run: close it, so it does not stay open forever
        reason = hook.get("reason")
        text = one_line(reason) if isinstance(reason, str) else ""
        payload["error"] = f"permission denied: {text}" if text else "permission denied"
        payload["denied"] = True
        return payload
    if kind == FAILURE:
        error = hook.get("error")
        text = error if isinstance(error, str) else (cjson.dumps(error, default=str) if error is not None else "")
        payload["error"] = one_line(text) or "tool failed"
        if hook.get("is_interrupt") is True:
            payload["interrupted"] = True
        if isinstance(error, str) and len(error) > SUMMARY_LIMIT:
            payload["response"] = error  # the whole message; `error` is its first line(s)
        return payload
    response = hook.get("tool_response")
    summary = summarize_response(response)
    failed = response_error(response)
    if failed is not None:
        payload["ok"] = False
        payload["error"] = failed or summary or "tool reported an error"
    elif summary:
        payload["result_summary"] = summary
    if response is not None:
        payload["response"] = response
    return payload


def llm_call_payload(hook: dict[str, Any], agent: Agent) -> dict[str, Any] | None:
    """``llm_call {provider?, model?, usage?, finish_reason?}`` of a model response's last chunk
    (one whose candidate has a ``finishReason``), else None.

    Gemini's ``usageMetadata`` maps onto traced's usage, whose ``input_tokens`` excludes
    cache: input = promptTokenCount (+ toolUsePromptTokenCount) - cachedContentTokenCount;
    cache_read = cachedContentTokenCount; output = candidatesTokenCount + thoughtsTokenCount
    (thinking is billed as output). Counts are tokens.
    """
    response = hook.get("llm_response")
    if not isinstance(response, dict):
        return None
    candidates = response.get("candidates")
    finish = ""
    if isinstance(candidates, list):
        for candidate in candidates:
            if isinstance(candidate, dict) and isinstance(candidate.get("finishReason"), str):
                finish = finish or candidate["finishReason"]
    if not finish:
        return None
    payload: dict[str, Any] = {}
    if agent.provider:
        payload["provider"] = agent.provider
    request = hook.get("llm_request")
    model = request.get("model") if isinstance(request, dict) else None
    if isinstance(model, str) and model:
        payload["model"] = model
    meta = response.get("usageMetadata")
    if isinstance(meta, dict):
        prompt, cached = _count(meta.get("promptTokenCount")), _count(meta.get("cachedContentTokenCount"))
        prompt += _count(meta.get("toolUsePromptTokenCount"))
        payload["usage"] = {
            "input_tokens": max(prompt - cached, 0),
            "output_tokens": _count(meta.get("candidatesTokenCount")) + _count(meta.get("thoughtsTokenCount")),
            "cache_read_tokens": cached,
            "cache_write_tokens": 0,
        }
    payload["finish_reason"] = finish
    return payload


def hook_payload(hook: dict[str, Any], event: str, agent: Agent) -> dict[str, Any]:
    """``hook {event, name?, ...}``: the event's own fields (common ones left out)."""
    payload: dict[str, Any] = {"event": event}
    name = _str(hook.get(agent.name_keys.get(event, "tool_name")))
    if name:
        payload["name"] = name
    for key, value in hook.items():
        if key not in agent.common and key not in payload and value is not None:
            payload[key] = value
    return payload


def response_error(response: Any) -> str | None:
    """The error a tool's response reports (None: it reports none; "": it failed, no text).

    MCP ``isError``/``is_error: true``; Gemini CLI's ``error`` (a string or
    ``{message}``); a non-zero ``exit_code``/``exitCode`` (Codex shell calls).
    """
    if not isinstance(response, dict):
        return None
    if response.get("is_error") is True or response.get("isError") is True:
        return ""
    error = response.get("error")
    if isinstance(error, dict):
        error = error.get("message") or cjson.dumps(error, default=str)
    if isinstance(error, str) and error.strip():
        return one_line(error)
    for key in ("exit_code", "exitCode"):
        code = response.get(key)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            return ""
    return None


def one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` on one line (whitespace collapsed), at most ``limit`` characters.

    When it does not fit, a multi-line text keeps its first and last lines
    (``Exit code 1 … 1 failed, 3 passed``; a traceback's exception), each
    cut with an ellipsis as needed; a single line is cut at the end.
    """
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or limit < 20:
        return flat[: limit - 1] + "…"
    head, tail = lines[0], lines[-1]
    room = limit - 3  # " … "
    if len(head) + len(tail) > room:
        half = room // 2
        if len(head) > half:
            head = head[: half - 1] + "…"
        budget = room - len(head)
        if len(tail) > budget:
            tail = "…" + tail[len(tail) - budget + 1 :]
    return f"{head} … {tail}"


def summarize_response(response: Any) -> str | None:
    """A one-line summary (≤ 200 chars) of a tool_response, whatever the tool."""
    text = _response_text(response)
    if text is None:
        return None
    return one_line(text) or None


def _blocks_text(blocks: list[Any]) -> str | None:
    texts = [b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)]
    if texts:
        return " ".join(texts)
    kinds = [str(b.get("type")) for b in blocks if isinstance(b, dict) and b.get("type")]
    return f"[{', '.join(kinds)}]" if kinds else None


def _response_text(response: Any) -> str | None:
    if response is None:
        return None
    if isinstance(response, str):
        return response
    if isinstance(response, list):
        return _blocks_text(response) or _compact(response)
    if not isinstance(response, dict):
        return str(response)
    if "stdout" in response or "stderr" in response:  # Bash
        out, err = _str(response.get("stdout")), _str(response.get("stderr"))
        text = out if out.strip() else err
        if response.get("interrupted") is True:
            text = "[interrupted] " + text
        return text if text.strip() else "(no output)"
    file = response.get("file")
    if isinstance(file, dict) and isinstance(file.get("filePath"), str):  # Read
        lines = file.get("numLines")
        return f"{file['filePath']} ({lines} lines)" if isinstance(lines, int) else file["filePath"]
    if isinstance(response.get("filePath"), str):  # Write, Edit
        kind = _str(response.get("type"))
        return f"{kind} {response['filePath']}".strip()
    content = response.get("content")
    if isinstance(content, list):  # Task (subagent), MCP results as objects
        blocks = _blocks_text(content)
        if blocks:
            return blocks
    if isinstance(content, str):
        return content
    llm = response.get("llmContent")  # Gemini CLI
    if isinstance(llm, list):
        blocks = _blocks_text(llm)
        if blocks:
            return blocks
    for key in ("llmContent", "returnDisplay", "result", "message", "output", "text"):
        if isinstance(response.get(key), str):
            return str(response[key])
    return _compact(response)


def _compact(value: Any) -> str:
    return cjson.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
