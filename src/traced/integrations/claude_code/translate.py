"""Claude Code hooks -> traced records, sans-IO: ``translate(hook, options, now) -> Plan``.

One hook JSON object (Claude Code's hooks reference: ``session_id``,
``transcript_path``, ``cwd``, ``hook_event_name`` and per-event fields)
becomes a ``Plan``: how to open or resume the session, which records to emit,
whether to end it. ``clocks`` times tool calls, ``run`` talks to the daemon,
``install`` edits ``settings.json``.

This module sits on the hook's hot path: stdlib only (``json``).
"""

from __future__ import annotations

import json

from traced.errors import HookError
from traced.format import vocab
from traced.format.layout import valid_name

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Any, Final

DEFAULT_SKILL: Final = "claude-code"
SUMMARY_LIMIT: Final = 200
"""Longest ``result_summary``, in characters."""
COMMON_FIELDS: Final = frozenset(
    {"session_id", "transcript_path", "cwd", "permission_mode", "hook_event_name", "prompt_id"}
)
"""Fields every hook carries: kept out of ``hook`` records (they live in the session's meta)."""

TOOL_EVENTS: Final = ("PreToolUse", "PostToolUse", "PostToolUseFailure")
HOOK_EVENTS: Final = (
    "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolUseFailure",
    "Notification", "Stop", "SubagentStart", "SubagentStop", "PreCompact", "SessionEnd",
)
"""The events ``hook install`` registers (any other event is still recorded, as a ``hook`` record)."""

NEW_ACTIVITY: Final = frozenset({"SessionStart", "UserPromptSubmit", "PreToolUse", "SessionEnd"})
"""Events that start something (or end the session): they reopen an ended session. Every other
event completes something already begun, so it may come late (async hooks) and never reopens."""

SUCCESS_REASONS: Final = frozenset({"clear", "logout", "prompt_input_exit", "resume"})
"""SessionEnd reasons that are a normal exit (outcome ``success``); any other is ``aborted``."""
LABEL_FIELDS: Final = ("transcript_path", "permission_mode", "model")
"""Hook fields recorded as the session's labels (meta.json); merged again on every resume.
(``agent_type`` varies per subagent, so it stays on the records.)"""


# ============================================================================ the plan


class Options:
    """How hooks are recorded: ``--skill``, ``--target``, ``--idle-timeout`` (0: the daemon's).

    Plain classes rather than dataclasses here: building a dataclass costs
    about a millisecond at import, on a path that runs for every hook event.
    """

    __slots__ = ("idle_timeout", "skill", "target")

    def __init__(self, skill: str = DEFAULT_SKILL, target: str = "global", idle_timeout: float = 0.0) -> None:
        self.skill = skill
        self.target = target
        self.idle_timeout = idle_timeout


class Plan:
    """What one hook event turns into.

    ``open``: ``Client.open`` keyword arguments, used first on SessionStart and
    whenever the daemon does not know the session (hooks installed
    mid-conversation, daemon state lost). ``records``: (phase, payload) to
    emit, in order. ``end``: (outcome, summary) to close the session with.
    ``stamp``: the tool_use_id whose start time to keep (PreToolUse);
    ``take``: the one whose start time gives the tool_result's duration.
    """

    __slots__ = ("end", "event", "late", "open", "open_first", "records", "session_id", "stamp", "take", "ts")

    def __init__(self, session_id: str, event: str, ts: float, open: dict[str, Any]) -> None:
        self.session_id = session_id
        self.event = event
        self.ts = ts
        self.open = open
        self.open_first = False
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.end: tuple[str, str | None] | None = None
        self.stamp = ""
        self.take = ""
        self.late = False
        """The event may arrive after SessionEnd (async hooks): it is then recorded as a late
        record and the session keeps its ending, instead of being reopened."""

    def set_duration(self, started: float | None) -> None:
        """Put ``duration_ms`` (now - ``started``) into the tool_result record."""
        if started is None or started > self.ts:
            return
        for phase, payload in self.records:
            if phase == vocab.TOOL_RESULT:
                payload["duration_ms"] = round((self.ts - started) * 1000.0, 3)


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


def translate(hook: dict[str, Any], options: Options, now: float) -> Plan:
    """Map one Claude Code hook object to a Plan (sans-IO)."""
    event = hook.get("hook_event_name")
    if not isinstance(event, str) or not event:
        raise HookError("hook input has no hook_event_name")
    sid = hook.get("session_id")
    if not valid_name(sid):
        raise HookError(f"invalid session_id {sid!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    assert isinstance(sid, str)
    plan = Plan(session_id=sid, event=event, ts=now, open=open_args(hook, options))
    if event not in NEW_ACTIVITY:
        plan.late = True
        plan.open["reopen"] = False
    if event == "SessionStart":
        plan.open_first = True
        # a new session records `start {input: {source}}`; a compact/resume/clear inside
        # an existing trace is worth its own record
        if _str(hook.get("source")) not in ("", "startup"):
            plan.records.append((vocab.HOOK, hook_payload(hook, event)))
    elif event == "UserPromptSubmit":
        # once per turn, resume the session with its labels: cheap, and it lets the daemon
        # fill in what an earlier SessionStart lacked (some versions send no transcript_path)
        plan.open_first = True
        plan.records.append((vocab.USER_PROMPT, _fields(
            prompt=hook.get("prompt") if isinstance(hook.get("prompt"), str) else None,
            prompt_id=_str(hook.get("prompt_id")) or None,
        )))
    elif event == "PreToolUse":
        call_id = _str(hook.get("tool_use_id"))
        plan.records.append((vocab.TOOL_CALL, tool_call_payload(hook)))
        plan.stamp = call_id
    elif event in ("PostToolUse", "PostToolUseFailure"):
        plan.records.append((vocab.TOOL_RESULT, tool_result_payload(hook, failed=event == "PostToolUseFailure")))
        plan.take = _str(hook.get("tool_use_id"))
    elif event == "SessionEnd":
        reason = _str(hook.get("reason"))
        plan.end = (end_outcome(reason), reason or None)
    else:  # Stop, SubagentStart/Stop, PreCompact, Notification and any event added later
        plan.records.append((vocab.HOOK, hook_payload(hook, event)))
    return plan


def open_args(hook: dict[str, Any], options: Options) -> dict[str, Any]:
    """``Client.open`` keyword arguments for the hook's session.

    owner_pid -1: the hook process is short-lived, so only the idle timeout
    (and SessionEnd) ends the session.
    """
    event = _str(hook.get("hook_event_name"))
    if event == "SessionStart":
        value: dict[str, Any] = {"source": _str(hook.get("source")) or "startup"}
    else:
        value = {"source": "mid_session", "event": event}
    labels = {k: hook[k] for k in LABEL_FIELDS if isinstance(hook.get(k), str) and hook[k]}
    return {
        "skill": options.skill,
        "session_id": hook.get("session_id"),
        "target": options.target,
        "cwd": _str(hook.get("cwd")) or None,
        "owner_pid": -1,
        "idle_timeout": options.idle_timeout or None,
        "input": value,
        "meta": labels,
    }


def split_tool(name: str) -> tuple[str, str, str | None]:
    """(tool, kind, server) of a Claude Code tool name.

    ``mcp__<server>__<tool>`` -> (tool, "mcp", server); ``Skill`` -> kind
    ``skill``; anything else -> kind ``tool``.
    """
    if name.startswith("mcp__"):
        server, sep, tool = name[5:].partition("__")
        if sep and server and tool:
            return tool, "mcp", server
    if name == "Skill":
        return name, "skill", None
    return name, "tool", None


def _tool_fields(hook: dict[str, Any]) -> dict[str, Any]:
    tool, kind, server = split_tool(_str(hook.get("tool_name")) or "unknown")
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


def tool_call_payload(hook: dict[str, Any]) -> dict[str, Any]:
    """``tool_call {tool, args, call_id, kind, server?, name? (skill), agent_id?, agent_type?}``."""
    fields = _tool_fields(hook)
    tool_input = hook.get("tool_input")
    payload: dict[str, Any] = {
        "tool": fields.pop("tool"),
        "args": tool_input if tool_input is not None else {},
    }
    call_id = _str(hook.get("tool_use_id"))
    if call_id:
        payload["call_id"] = call_id
    payload.update(fields)
    return payload


def tool_result_payload(hook: dict[str, Any], failed: bool) -> dict[str, Any]:
    """``tool_result {tool, ok, call_id, kind, server?, result_summary?, error?, response?}``.

    ``duration_ms`` is added later from the PreToolUse clock (see ``Plan.set_duration``).
    """
    fields = _tool_fields(hook)
    payload: dict[str, Any] = {"tool": fields.pop("tool"), "ok": not failed}
    call_id = _str(hook.get("tool_use_id"))
    if call_id:
        payload["call_id"] = call_id
    payload.update(fields)
    if failed:
        error = hook.get("error")
        text = error if isinstance(error, str) else (json.dumps(error, default=str) if error is not None else "")
        payload["error"] = one_line(text) or "tool failed"
        if hook.get("is_interrupt") is True:
            payload["interrupted"] = True
        if isinstance(error, str) and len(error) > SUMMARY_LIMIT:
            payload["response"] = error  # the whole message; `error` is its first line(s)
        return payload
    response = hook.get("tool_response")
    summary = summarize_response(response)
    if response_failed(response):
        payload["ok"] = False
        payload["error"] = summary or "tool reported an error"
    elif summary:
        payload["result_summary"] = summary
    if response is not None:
        payload["response"] = response
    return payload


def hook_payload(hook: dict[str, Any], event: str) -> dict[str, Any]:
    """``hook {event, name?, ...}``: the event's own fields (common ones left out)."""
    payload: dict[str, Any] = {"event": event}
    name = hook_name(hook, event)
    if name:
        payload["name"] = name
    for key, value in hook.items():
        if key not in COMMON_FIELDS and key not in payload and value is not None:
            payload[key] = value
    return payload


def hook_name(hook: dict[str, Any], event: str) -> str:
    """What a matcher would match for ``event``: source, agent type, trigger, notification type…"""
    key = {
        "SessionStart": "source", "SubagentStart": "agent_type", "SubagentStop": "agent_type",
        "PreCompact": "trigger", "Notification": "notification_type", "SessionEnd": "reason",
    }.get(event, "tool_name")
    return _str(hook.get(key))


def end_outcome(reason: str) -> str:
    """The session outcome for a SessionEnd ``reason``."""
    return vocab.SUCCESS if reason in SUCCESS_REASONS else vocab.ABORTED


def response_failed(response: Any) -> bool:
    """Whether a PostToolUse ``tool_response`` says the tool failed (MCP ``isError``)."""
    return isinstance(response, dict) and (response.get("is_error") is True or response.get("isError") is True)


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
    for key in ("result", "message", "output", "text"):
        if isinstance(response.get(key), str):
            return str(response[key])
    return _compact(response)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}








