"""Running one agent hook event: parse, translate, time, talk to the daemon (any agent).

The fast path is the stdlib ``ShellClient``; when the daemon is away or the
connection breaks, the full ``Client`` takes over with the same client id
(so the daemon drops what the fast path already wrote), reconnects, and
finally spools.
"""

from __future__ import annotations

import os
import time

from traced.errors import HookError
from traced.format.layout import valid_name
from traced.integrations.hooks.clocks import (
    away_lately,
    delivered_before,
    drop_stamps,
    note_away,
    put_stamp,
    stamps_root,
    sweep_stamps,
    take_stamp,
)
from traced.integrations.hooks.core import CALL, DENIED, END, FAILURE, RESULT, START, Options, Plan, parse, translate
from traced.wire.fit import fit, payload_budget

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

    from traced.client.blocking import Client
    from traced.client.shell import ShellClient
    from traced.integrations.hooks.core import Agent

AGENTS: Final = ("claude-code", "codex", "gemini")
"""The agents ``traced hook <agent>`` records (each has a table module here)."""
TOOL_KINDS: Final = frozenset({CALL, RESULT, FAILURE, DENIED})

HOOK_BUDGET: Final = 0.8
"""Seconds one hook invocation may take, all included (``TRACED_HOOK_BUDGET`` overrides): well
inside Claude Code's 1.5 s for SessionEnd hooks. Past it, the event is spooled at once."""


def agent_named(name: str) -> Agent:
    """The table of agent ``name`` (one of ``AGENTS``), importing only that one. Raises HookError."""
    if name == "claude-code":
        from traced.integrations.hooks.claude_code import AGENT
    elif name == "codex":
        from traced.integrations.hooks.codex import AGENT
    elif name == "gemini":
        from traced.integrations.hooks.gemini import AGENT
    else:
        raise HookError(f"unknown agent {name!r} (known: {', '.join(AGENTS)})")
    return AGENT
SPOOL_RESERVE: Final = 0.25
"""Seconds of the budget kept for writing the spool (it imports the full client and redactor)."""
MAX_DEPTH: Final = 64
"""The daemon's default payload depth limit; deeper subtrees are marked, not sent."""
MAX_KEYS: Final = 10000
"""The daemon's default limit on map keys in one payload, until its welcome says."""


def max_event_bytes(frame_limit: int = 0) -> int:
    """The payload size the hook fits events into: the daemon's frame limit less slack.

    ``TRACED_HOOK_MAX_BYTES`` overrides it.
    """
    try:
        explicit = int(os.environ.get("TRACED_HOOK_MAX_BYTES") or 0)
    except ValueError:
        explicit = 0
    return explicit or payload_budget(frame_limit)


def options_from(skill: str | None = None, target: str | None = None,
                 idle_timeout: str | float | None = None) -> Options:
    """Options from flags, then ``TRACED_HOOK_SKILL``/``TRACED_HOOK_TARGET``/``TRACED_HOOK_IDLE_TIMEOUT``
    (skill "": the agent's name). Raises HookError for an invalid value."""
    env = os.environ
    skill = skill or env.get("TRACED_HOOK_SKILL") or ""
    if skill and not valid_name(skill):
        raise HookError(f"invalid skill {skill!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    target = target or env.get("TRACED_HOOK_TARGET") or "global"
    if target not in ("global", "repo"):
        target = os.path.abspath(os.path.expanduser(target))
    raw = idle_timeout if idle_timeout is not None else env.get("TRACED_HOOK_IDLE_TIMEOUT")
    try:
        timeout = float(raw) if raw not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise HookError(f"invalid idle timeout {raw!r}") from None
    if not 0.0 <= timeout < 1e9:  # negative, NaN, infinite
        raise HookError(f"invalid idle timeout {raw!r}: seconds, 0 or more")
    return Options(skill=skill, target=target, idle_timeout=timeout)


def budget() -> float:
    """The hook's time budget in seconds (``TRACED_HOOK_BUDGET``, else ``HOOK_BUDGET``)."""
    try:
        return float(os.environ.get("TRACED_HOOK_BUDGET") or HOOK_BUDGET)
    except ValueError:
        return HOOK_BUDGET


def run(text: str | bytes, agent: Agent, options: Options, socket_path: str | None = None, *,
        now: float | None = None, deadline: float | None = None) -> Plan:
    """Record one hook event of ``agent``: parse, translate, time the call, talk to the daemon.

    ``deadline`` (``time.monotonic()`` seconds, default: the budget from now)
    bounds everything: a daemon that does not answer in time, or that is away
    and does not come back in time, gets the event spooled instead (redacted,
    ingested when it is back). An event with nothing to send (a model request's
    start, a streamed chunk before the last) opens no connection. Raises HookError
    for input that cannot be recorded.
    """
    deadline = deadline if deadline is not None else time.monotonic() + budget()
    hook = parse(text)
    plan = translate(hook, agent, options, now if now is not None else time.time())
    plan.deadline = deadline - SPOOL_RESERVE
    root = stamps_root()
    call = plan.take or plan.stamp
    if call and plan.kind in TOOL_KINDS:  # the same hook registered twice delivers the same bytes twice
        import zlib

        body = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        if delivered_before(root, plan.session_id, f"{plan.event}-{call}", zlib.crc32(body)):
            return plan
    if plan.take:
        taken = take_stamp(root, plan.session_id, plan.take)
        plan.set_duration(*(taken or (None, "")))
    if plan.stamp:
        try:
            put_stamp(root, plan.session_id, plan.stamp, plan.ts, plan.stamp_call)
        except OSError:
            pass  # no duration for this call; the event itself still counts
    if plan.idle:
        return plan
    if agent.on_stop is not None and plan.event in agent.stop_events:
        left = deadline - SPOOL_RESERVE - time.monotonic()
        stop_hook(agent.on_stop, hook, plan, socket_path, time.monotonic() + max(left, 0.0) * 0.6)
    from traced.client.shell import ShellClient
    from traced.format.ids import new_ulid

    client_id = new_ulid()
    try:
        try:  # the fast path: no msgspec import, the daemon answers inside the budget
            with ShellClient(socket_path, name="traced-hook", client_id=client_id,
                             deadline=deadline - SPOOL_RESERVE) as fast:
                execute(plan, fast)
        except OSError as e:
            # daemon away, wedged, or the connection broke: the full client reconnects while the
            # budget lasts (never after a time-out, nor when a hook just now found no daemon
            # either), then spools; the same client_id makes the daemon drop whatever the fast
            # path already wrote
            from traced.client.blocking import Client

            left = deadline - SPOOL_RESERVE - time.monotonic()
            away = isinstance(e, (FileNotFoundError, ConnectionRefusedError))  # no socket, or no one on it
            offline = isinstance(e, TimeoutError) or left <= 0.05 or (away and away_lately(root))
            with Client(socket_path, name="traced-hook", timeout=max(left, 0.05), spool_after=max(left, 0.0),
                        client_id=client_id, offline=offline) as client:
                execute(plan, client)
            if away:
                note_away(root, client.spooling)
    finally:
        if plan.kind == END:
            drop_stamps(root, plan.session_id)
        elif plan.kind == START:
            sweep_stamps(root)
    return plan


def _open(client: Client | ShellClient, plan: Plan) -> None:
    """Open (or resume) the plan's session; a target the daemon refuses costs the target, not the event."""
    from traced.errors import RequestError

    try:
        client.open(**plan.open)
    except RequestError as e:
        if e.code not in ("invalid_name", "forbidden") or plan.open.get("target") in (None, "global"):
            raise
        import sys

        print(f"traced hook: {e.message}; recording under the global root", file=sys.stderr)
        plan.open["target"] = "global"
        client.open(**plan.open)


def stop_hook(on_stop: Callable[..., None] | str, hook: dict[str, Any], plan: Plan, socket_path: str | None,
              deadline: float) -> None:
    """Run the agent's end-of-turn hook point (``Agent.on_stop``; a ``"module:function"`` is
    imported now). What it raises is one line on stderr: the event is still recorded."""
    try:
        if isinstance(on_stop, str):
            import importlib

            module, _, name = on_stop.partition(":")
            func: Callable[..., None] = getattr(importlib.import_module(module), name)
        else:
            func = on_stop
        func(hook, plan, socket_path, deadline, _open)
    except Exception as e:
        import sys

        print(f"traced hook: {plan.event}: {type(e).__name__}: {' '.join(str(e).split())[:200]}", file=sys.stderr)


def execute(plan: Plan, client: Client | ShellClient) -> None:
    """Send ``plan`` through ``client``.

    While the client spools (daemon down) it cannot learn that a session is
    unknown, so every event is then preceded by an open: for a session that
    exists, that is a no-op resume when the spool is ingested.
    """
    from traced.errors import RequestError

    sid = plan.session_id
    if plan.open_first or client.spooling:
        _open(client, plan)
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
            _open(client, plan)
            client.end(sid, outcome, summary)


def _emit(client: Client | ShellClient, plan: Plan, phase: str, payload: dict[str, Any]) -> None:
    """Emit one record; (re)open the session or slim the payload when the daemon asks for it."""
    from traced.errors import RequestError

    # a frame over the daemon's limit costs the connection: fit it first, losing the least
    payload = fit(payload, max_event_bytes(client.frame_limit), MAX_DEPTH, client.max_keys or MAX_KEYS)
    reopened = slimmed = False
    while True:
        try:
            client.emit(plan.session_id, phase, payload, ts=plan.ts, late=plan.late)
            return
        except RequestError as e:
            if e.code in ("unknown_session", "session_closed") and not reopened:
                # hooks installed mid-conversation, a daemon that lost the session, or one
                # ended by the idle timeout while the conversation went on: (re)open it; a late
                # event's open never reopens an ended session (it is then appended as late)
                _open(client, plan)
                reopened = True
            elif e.code == "invalid_event" and not slimmed:
                # over the daemon's string/key limits: keep the record, drop the bulk
                payload = fit(payload, 0, MAX_DEPTH, 1)
                slimmed = True
            else:
                raise


