"""Codex's table for the shared hook core (developers.openai.com/codex/hooks; openai/codex
``codex-rs/hooks``: the ``*.command.input`` schemas).

Codex sends Claude Code's shapes (``session_id``, ``transcript_path``, ``cwd``,
``model``, ``permission_mode``, ``turn_id``, ``tool_use_id``…) for SessionStart,
UserPromptSubmit, PreToolUse, PostToolUse, Stop and, in newer versions,
PermissionRequest, PreCompact/PostCompact, SubagentStart/SubagentStop and
StopFailure. It has no SessionEnd: a Codex session ends by traced's idle
timeout. Hooks carry no token usage (``traced import codex`` reads the rollout
files for that). Hot path: plain data only.
"""

from __future__ import annotations

from traced.integrations.hooks.core import CALL, PROMPT, RESULT, START, Agent

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Final

AGENT: Final = Agent(
    "codex",
    {"SessionStart": START, "UserPromptSubmit": PROMPT, "PreToolUse": CALL, "PostToolUse": RESULT},
    name_keys={"SessionStart": "source", "StopFailure": "error", "PreCompact": "trigger",
               "PostCompact": "trigger", "SubagentStart": "agent_type", "SubagentStop": "agent_type"},
    common=frozenset({"transcript_path", "permission_mode", "model", "turn_id"}),
    labels=("transcript_path", "permission_mode", "model"),
    provider="openai",
    stop_events=frozenset({"Stop", "SubagentStop", "PreCompact"}),
)

INSTALL_EVENTS: Final = (
    ("SessionStart", (0,)), ("UserPromptSubmit", (0,)), ("PreToolUse", (0,)), ("PostToolUse", (0,)),
    ("Stop", (0,)), ("PreCompact", (0,)), ("PostCompact", (0,)), ("SubagentStart", (0,)),
    ("SubagentStop", (0,)), ("StopFailure", (0,)),
)
"""Codex ignores an event name it does not know in hooks.json (no deny_unknown_fields there)."""
TOOL_EVENTS: Final = ()
"""No matcher at all: a group without one matches every tool."""
TIMEOUTS: Final[dict[str, int]] = {}
TIMEOUT: Final = 2
"""Whole seconds: Codex refuses the whole hooks.json when a timeout is a JSON float."""
