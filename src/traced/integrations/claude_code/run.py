"""Running one Claude Code hook event: parse, translate, time, talk to the daemon.

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
from traced.integrations.claude_code.clocks import drop_stamps, put_stamp, stamps_root, sweep_stamps, take_stamp
from traced.integrations.claude_code.translate import DEFAULT_SKILL, Options, Plan, parse, translate
from traced.wire.fit import fit

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Any, Final

    from traced.client.blocking import Client
    from traced.client.shell import ShellClient

HOOK_SPOOL_AFTER: Final = 0.5
"""Seconds the hook waits for an absent daemon before spooling (``TRACED_SPOOL_AFTER`` overrides).
Shorter than the library's 2 s: a hook blocks Claude Code while it runs."""
HOOK_TIMEOUT: Final = 5.0
"""Socket timeout of the hook's client: a hung daemon must not hang Claude Code for long."""
MAX_DEPTH: Final = 64
"""The daemon's default payload depth limit; deeper subtrees are marked, not sent."""
FRAME_SLACK: Final = 64 * 1024
"""Bytes of the frame kept for the message around the payload."""
DEFAULT_FRAME: Final = 8 * 1024 * 1024


def max_event_bytes(frame_limit: int = 0) -> int:
    """The payload size the hook fits events into: the daemon's frame limit less slack.

    ``TRACED_HOOK_MAX_BYTES`` overrides it.
    """
    try:
        explicit = int(os.environ.get("TRACED_HOOK_MAX_BYTES") or 0)
    except ValueError:
        explicit = 0
    return explicit or max((frame_limit or DEFAULT_FRAME) - FRAME_SLACK, 1024)


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
    from traced.client.shell import ShellClient
    from traced.format.ids import new_ulid

    client_id = new_ulid()
    try:
        try:  # the fast path: no msgspec import
            with ShellClient(socket_path, name="traced-hook", client_id=client_id, timeout=HOOK_TIMEOUT) as fast:
                execute(plan, fast)
        except OSError:
            # daemon away or the connection broke: the full client reconnects, then spools;
            # the same client_id makes the daemon drop whatever the fast path already wrote
            from traced.client.blocking import Client

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

    # a frame over the daemon's limit costs the connection: fit it first, losing the least
    payload = fit(payload, max_event_bytes(client.frame_limit), MAX_DEPTH)
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
                # over the daemon's string/key limits: keep the record, drop the bulk
                payload = fit(payload, 0, MAX_DEPTH)
                slimmed = True
            else:
                raise


