"""Claude Code hooks -> traced records (``traced hook claude-code``, ``traced hook install``).

Three layers, so the mapping can be tested without processes:

- ``translate(hook, options, now)``: sans-IO. One hook JSON object becomes a
  ``Plan``: how to open/resume the session, which records to emit, whether to
  end it.
- Call clocks: ``PreToolUse`` leaves its wall-clock time in
  ``<state>/hooks/<session_id>/<tool_use_id>`` (0600); the matching
  ``PostToolUse``/``PostToolUseFailure`` takes it (and removes it) for
  ``duration_ms``. The hook never writes session files: the daemon does.
- ``execute(plan, client)`` / ``run(text, options)``: the blocking ``Client``
  does the talking, reconnecting and spooling.

``merge_settings`` (pure) and ``install`` (file IO) add or remove our entries
in a Claude Code ``settings.json``.

This module sits on the hook's hot path: it imports only the stdlib pieces it
needs at once; the client, difflib and shlex are imported where used.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Any, Final

    from traced.client import Client
    from traced.shellclient import ShellClient

DEFAULT_SKILL: Final = "claude-code"
SUMMARY_LIMIT: Final = 200
"""Longest ``result_summary``, in characters."""
HOOK_SPOOL_AFTER: Final = 0.5
"""Seconds the hook waits for an absent daemon before spooling (``TRACED_SPOOL_AFTER`` overrides).
Shorter than the library's 2 s: a hook blocks Claude Code while it runs."""
HOOK_TIMEOUT: Final = 5.0
"""Socket timeout of the hook's client: a hung daemon must not hang Claude Code for long."""
STAMP_MAX_AGE: Final = 7 * 86400
"""Call clocks of sessions untouched this long are swept (their PostToolUse never came)."""

NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

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

SUCCESS_REASONS: Final = frozenset({"clear", "logout", "prompt_input_exit", "resume"})
"""SessionEnd reasons that are a normal exit (outcome ``success``); any other is ``aborted``."""
LABEL_FIELDS: Final = ("transcript_path", "permission_mode", "model")
"""Hook fields recorded as the session's labels (meta.json); merged again on every resume.
(``agent_type`` varies per subagent, so it stays on the records.)"""
MAX_EVENT_BYTES: Final = 8 * 1024 * 1024 - 64 * 1024
"""Payloads bigger than this (msgpack) lose their largest fields before they are sent: the
daemon's default frame limit is 8 MiB (large strings spill to blobs there), and a hook must
never fail. ``TRACED_HOOK_MAX_BYTES`` overrides it for a daemon with another ``max_frame``."""


class HookError(ValueError):
    """A hook input that cannot be recorded (bad JSON, no or invalid session id)."""


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

    __slots__ = ("end", "event", "open", "open_first", "records", "session_id", "stamp", "take", "ts")

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

    def set_duration(self, started: float | None) -> None:
        """Put ``duration_ms`` (now - ``started``) into the tool_result record."""
        if started is None or started > self.ts:
            return
        for phase, payload in self.records:
            if phase == "tool_result":
                payload["duration_ms"] = round((self.ts - started) * 1000.0, 3)


def parse(text: str | bytes) -> dict[str, Any]:
    """The hook's JSON object; HookError when it is not one."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise HookError(f"invalid hook JSON on stdin: {e}") from None
    if not isinstance(value, dict):
        raise HookError(f"hook input must be a JSON object, not {type(value).__name__}")
    return value


def valid_name(value: Any) -> bool:
    """Whether ``value`` matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` (skill/session names)."""
    return (isinstance(value, str) and 0 < len(value) <= 128 and value[0] not in "._-"
            and NAME_CHARS.issuperset(value))


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
    if event == "SessionStart":
        plan.open_first = True
        # a new session records `start {input: {source}}`; a compact/resume/clear inside
        # an existing trace is worth its own record
        if _str(hook.get("source")) not in ("", "startup"):
            plan.records.append(("hook", hook_payload(hook, event)))
    elif event == "UserPromptSubmit":
        # once per turn, resume the session with its labels: cheap, and it lets the daemon
        # fill in what an earlier SessionStart lacked (some versions send no transcript_path)
        plan.open_first = True
        plan.records.append(("user_prompt", _fields(
            prompt=hook.get("prompt") if isinstance(hook.get("prompt"), str) else None,
            prompt_id=_str(hook.get("prompt_id")) or None,
        )))
    elif event == "PreToolUse":
        call_id = _str(hook.get("tool_use_id"))
        plan.records.append(("tool_call", tool_call_payload(hook)))
        plan.stamp = call_id
    elif event in ("PostToolUse", "PostToolUseFailure"):
        plan.records.append(("tool_result", tool_result_payload(hook, failed=event == "PostToolUseFailure")))
        plan.take = _str(hook.get("tool_use_id"))
    elif event == "SessionEnd":
        reason = _str(hook.get("reason"))
        plan.end = (end_outcome(reason), reason or None)
    else:  # Stop, SubagentStart/Stop, PreCompact, Notification and any event added later
        plan.records.append(("hook", hook_payload(hook, event)))
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
    return "success" if reason in SUCCESS_REASONS else "aborted"


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


def slim(payload: dict[str, Any], why: str, limit: int) -> dict[str, Any]:
    """``payload`` with its largest fields replaced by ``{"$omitted": why, "bytes": n}``
    until it encodes to at most ``limit`` bytes (fields under 256 bytes are kept)."""
    import msgspec

    encode = msgspec.msgpack.Encoder().encode
    out = dict(payload)
    sizes = sorted(((len(encode(v)), k) for k, v in out.items()), reverse=True)
    total = len(encode(out))
    for size, key in sizes:
        if total <= limit or size < 256:
            break
        out[key] = {"$omitted": why, "bytes": size}
        total -= size
    return out


def max_event_bytes() -> int:
    """The payload size over which the hook slims a payload (``TRACED_HOOK_MAX_BYTES``)."""
    try:
        return int(os.environ.get("TRACED_HOOK_MAX_BYTES") or MAX_EVENT_BYTES)
    except ValueError:
        return MAX_EVENT_BYTES


def oversized(payload: dict[str, Any], limit: int) -> bool:
    """Whether ``payload`` encodes to more than ``limit`` bytes (cheap for the usual small ones)."""
    import msgspec

    return len(msgspec.msgpack.encode(payload)) > limit


# ============================================================================ call clocks


def stamps_root() -> Path:
    """``<state>/hooks``: the hook's own small state (never session files)."""
    from traced import paths

    return paths.state_dir() / "hooks"


def put_stamp(root: Path, session_id: str, call_id: str, ts: float) -> None:
    """Keep the PreToolUse time of ``call_id`` (a 0600 file in a 0700 dir)."""
    if not (valid_name(session_id) and valid_name(call_id)):
        return
    directory = root / session_id
    root.parent.parent.mkdir(parents=True, exist_ok=True)  # $XDG_STATE_HOME
    for level in (root.parent, root, directory):  # each one 0700, unlike mkdir(parents=True)
        if not level.is_dir():
            level.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(directory / call_id, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, repr(ts).encode())
    finally:
        os.close(fd)


def take_stamp(root: Path, session_id: str, call_id: str) -> float | None:
    """The PreToolUse time of ``call_id``, removing it; None when there is none."""
    if not (valid_name(session_id) and valid_name(call_id)):
        return None
    path = root / session_id / call_id
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass
    try:
        return float(data)
    except ValueError:
        return None


def drop_stamps(root: Path, session_id: str) -> None:
    """Remove a session's clocks (calls that never got a result) at SessionEnd."""
    if not valid_name(session_id):
        return
    directory = root / session_id
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(directory / name)
        except OSError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


def sweep_stamps(root: Path, max_age: float = STAMP_MAX_AGE, now: float | None = None) -> None:
    """Remove the clocks of sessions untouched for ``max_age`` seconds (they never ended)."""
    cutoff = (now if now is not None else time.time()) - max_age
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        try:
            if os.stat(root / name).st_mtime < cutoff:
                drop_stamps(root, name)
        except OSError:
            pass


# ============================================================================ running


def options_from(skill: str | None = None, target: str | None = None,
                 idle_timeout: str | float | None = None) -> Options:
    """Options from flags, then ``TRACED_HOOK_SKILL``/``TRACED_HOOK_TARGET``/``TRACED_HOOK_IDLE_TIMEOUT``."""
    env = os.environ
    skill = skill or env.get("TRACED_HOOK_SKILL") or DEFAULT_SKILL
    if not valid_name(skill):
        raise HookError(f"invalid skill {skill!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    target = target or env.get("TRACED_HOOK_TARGET") or "global"
    if target not in ("global", "repo"):
        target = os.path.abspath(os.path.expanduser(target))
    raw = idle_timeout if idle_timeout is not None else env.get("TRACED_HOOK_IDLE_TIMEOUT")
    try:
        timeout = float(raw) if raw not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise HookError(f"invalid idle timeout {raw!r}") from None
    return Options(skill=skill, target=target, idle_timeout=max(timeout, 0.0))


def run(text: str | bytes, options: Options, socket_path: str | None = None, now: float | None = None) -> Plan:
    """Record one hook event: parse, translate, time the tool call, talk to the daemon."""
    hook = parse(text)
    plan = translate(hook, options, now if now is not None else time.time())
    root = stamps_root()
    if plan.take:
        plan.set_duration(take_stamp(root, plan.session_id, plan.take))
    if plan.stamp:
        try:
            put_stamp(root, plan.session_id, plan.stamp, plan.ts)
        except OSError:
            pass  # no duration for this call; the event itself still counts
    from traced.ids import new_ulid
    from traced.shellclient import ShellClient

    client_id = new_ulid()
    try:
        try:  # the fast path: no msgspec import
            with ShellClient(socket_path, name="traced-hook", client_id=client_id, timeout=HOOK_TIMEOUT) as fast:
                execute(plan, fast)
        except OSError:
            # daemon away or the connection broke: the full client reconnects, then spools;
            # the same client_id makes the daemon drop whatever the fast path already wrote
            from traced.client import Client

            try:
                spool_after = float(os.environ.get("TRACED_SPOOL_AFTER") or HOOK_SPOOL_AFTER)
            except ValueError:
                spool_after = HOOK_SPOOL_AFTER
            with Client(socket_path, name="traced-hook", timeout=HOOK_TIMEOUT, spool_after=spool_after,
                        client_id=client_id) as client:
                execute(plan, client)
    finally:
        if plan.event == "SessionEnd":
            drop_stamps(root, plan.session_id)
        elif plan.event == "SessionStart":
            sweep_stamps(root)
    return plan


def execute(plan: Plan, client: Client | ShellClient) -> None:
    """Send ``plan`` through ``client``.

    While the client spools (daemon down) it cannot learn that a session is
    unknown, so every event is then preceded by an open: for a session that
    exists, that is a no-op resume when the spool is ingested.
    """
    from traced.errors import RequestError

    sid = plan.session_id
    if plan.open_first or client.spooling:
        client.open(**plan.open)
    for phase, payload in plan.records:
        _emit(client, plan, phase, payload)
    if plan.end is not None:
        outcome, summary = plan.end
        try:
            client.end(sid, outcome, summary)
        except RequestError as e:
            if e.code == "session_closed":  # ended already (the idle timeout): keep that ending
                return
            if e.code != "unknown_session":
                raise
            client.open(**plan.open)
            client.end(sid, outcome, summary)


def _emit(client: Client | ShellClient, plan: Plan, phase: str, payload: dict[str, Any]) -> None:
    """Emit one record; (re)open the session or slim the payload when the daemon asks for it."""
    from traced.errors import RequestError

    limit = max_event_bytes()
    if oversized(payload, limit):
        # a frame over the daemon's limit costs the connection (and would be resent on reconnect)
        payload = slim(payload, "too_large", limit)
    reopened = slimmed = False
    while True:
        try:
            client.emit(plan.session_id, phase, payload, ts=plan.ts)
            return
        except RequestError as e:
            if e.code in ("unknown_session", "session_closed") and not reopened:
                # hooks installed mid-conversation, a daemon that lost the session, or one
                # ended by the idle timeout while the conversation went on: (re)open it
                client.open(**plan.open)
                reopened = True
            elif e.code == "invalid_event" and not slimmed:
                # over the daemon's string/depth/key limits: keep the record, drop the bulk
                payload = slim(payload, e.code, 0)
                slimmed = True
            else:
                raise


# ============================================================================ install


def traced_argv() -> list[str]:
    """How to run this ``traced``: the running executable, else the venv's, else PATH's."""
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "traced" and os.access(argv0, os.X_OK):
        return [os.path.abspath(argv0)]
    sibling = os.path.join(os.path.dirname(sys.executable), "traced")
    if os.access(sibling, os.X_OK):
        return [sibling]
    found = shutil.which("traced")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "traced.cli"]


def hook_command(argv: list[str] | None = None, extra: list[str] | None = None) -> str:
    """The shell command Claude Code runs: ``<abs path to traced> hook claude-code [options]``."""
    import shlex

    return shlex.join([*(argv or traced_argv()), "hook", "claude-code", *(extra or [])])


def is_ours(entry: Any) -> bool:
    """Whether a settings hook entry runs ``traced … hook claude-code``."""
    import shlex

    if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
        return False
    try:
        tokens = shlex.split(entry["command"])
    except ValueError:
        return False
    for i in range(1, len(tokens) - 1):
        if tokens[i] == "hook" and tokens[i + 1] == "claude-code":
            return any(os.path.basename(t) == "traced" or t == "traced.cli" for t in tokens[:i])
    return False


def merge_settings(settings: dict[str, Any], command: str | None) -> dict[str, Any]:
    """A copy of ``settings`` with our hook entries installed (``command``) or removed (None).

    Nothing else changes: other keys, other hooks and their order stay. An
    entry of ours that already runs ``command`` stays where it is (so a second
    install changes nothing); older entries of ours (another path, other
    options) are replaced. Containers our removal empties are dropped.
    """
    out: dict[str, Any] = json.loads(json.dumps(settings))
    hooks = out.get("hooks")
    had_hooks = isinstance(hooks, dict) and bool(hooks)
    if hooks is None:
        hooks = {}
    if not isinstance(hooks, dict):
        raise ValueError("settings key 'hooks' is not an object")
    events = list(HOOK_EVENTS) + [e for e in hooks if e not in HOOK_EVENTS]
    for event in events:
        groups = hooks.get(event)
        if groups is not None and not isinstance(groups, list):
            raise ValueError(f"settings key 'hooks.{event}' is not a list")
        had_groups = bool(groups)
        present = False
        kept_groups: list[Any] = []
        for group in groups or []:
            entries = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(entries, list):
                kept_groups.append(group)
                continue
            kept: list[Any] = []
            for entry in entries:
                if not is_ours(entry):
                    kept.append(entry)
                elif command is not None and not present and entry.get("command") == command:
                    present = True
                    kept.append(entry)
            if kept or not entries:
                kept_groups.append({**group, "hooks": kept} if len(kept) != len(entries) else group)
        if command is not None and not present and event in HOOK_EVENTS:
            entry = {"type": "command", "command": command}
            kept_groups.append({"matcher": "*", "hooks": [entry]} if event in TOOL_EVENTS else {"hooks": [entry]})
        if kept_groups or (groups is not None and not had_groups):
            hooks[event] = kept_groups
        else:
            hooks.pop(event, None)
    if hooks or ("hooks" in out and not had_hooks):
        out["hooks"] = hooks
    else:
        out.pop("hooks", None)
    return out


def settings_path(scope: str, cwd: str | None = None) -> Path:
    """``~/.claude/settings.json`` (user) or ``<git root or cwd>/.claude/settings.json`` (project)."""
    if scope == "user":
        return Path.home() / ".claude" / "settings.json"
    here = Path(cwd or os.getcwd()).absolute()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate / ".claude" / "settings.json"
    return here / ".claude" / "settings.json"


def _indent(text: str) -> str | int:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip()
        if stripped and len(stripped) < len(line):
            return line[: len(line) - len(stripped)]
    return 2


def render(settings: dict[str, Any], original: str) -> str:
    """``settings`` as JSON in the original file's indentation, with a final newline."""
    return json.dumps(settings, indent=_indent(original) if original else 2, ensure_ascii=False) + "\n"


class InstallResult:
    """What ``install`` did: the file, its text before and after, the diff."""

    __slots__ = ("after", "before", "diff", "path", "written")

    def __init__(self, path: Path, before: str, after: str, diff: str, written: bool) -> None:
        self.path = path
        self.before = before
        self.after = after
        self.diff = diff
        self.written = written

    @property
    def changed(self) -> bool:
        """Whether the settings change (or would, with --dry-run)."""
        return self.before != self.after


def install(path: Path, command: str, uninstall: bool = False, dry_run: bool = False) -> InstallResult:
    """Merge our hook entries into (or out of) the settings file at ``path``."""
    import difflib

    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = ""
    try:
        current = json.loads(before) if before.strip() else {}
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); fix it first, nothing was changed") from None
    if not isinstance(current, dict):
        raise ValueError(f"{path}: the settings are not a JSON object; nothing was changed")
    merged = merge_settings(current, None if uninstall else command)
    after = before if merged == current else render(merged, before)
    diff = "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"a/{path}" if before else "/dev/null", tofile=f"b/{path}",
    ))
    written = False
    if after != before and not dry_run:
        _write_atomic(path, after)
        written = True
    return InstallResult(path, before, after, diff, written)


def _write_atomic(path: Path, text: str) -> None:
    target = Path(os.path.realpath(path))  # a symlinked settings.json (dotfiles) stays a symlink
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(target).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    tmp = target.with_name(f".{target.name}.traced-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)
