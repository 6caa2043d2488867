"""Claude Code's table for the shared hook core (its hooks reference, code.claude.com/docs/en/hooks).

Every current event is recorded: the ones with a meaning of their own map onto
traced's phases below; every other one (``Stop``, ``StopFailure``,
``PostCompact``, ``UserPromptExpansion``, ``TaskCreated``, ``Notification``…)
is a ``hook`` record with the event's own fields. ``INSTALL_EVENTS`` is what
``traced hook install claude-code`` registers, each with the first Claude Code
version known to have it (an older Claude Code skips a settings file that names
an event it does not know, so install leaves those out). ``WorktreeCreate`` is
never registered: a hook there *replaces* git's worktree creation.

Hot path: plain data only.
"""

from __future__ import annotations

from traced.integrations.hooks.core import CALL, DENIED, END, FAILURE, PROMPT, RESULT, START, Agent

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Final

AGENT: Final = Agent(
    "claude-code",
    {
        "SessionStart": START, "UserPromptSubmit": PROMPT, "PreToolUse": CALL, "PostToolUse": RESULT,
        "PostToolUseFailure": FAILURE, "PermissionDenied": DENIED, "SessionEnd": END,
    },
    name_keys={
        "SessionStart": "source", "SubagentStart": "agent_type", "SubagentStop": "agent_type",
        "PreCompact": "trigger", "PostCompact": "trigger", "Notification": "notification_type",
        "SessionEnd": "reason", "StopFailure": "error", "UserPromptExpansion": "command_name",
        "TaskCreated": "task_subject", "TaskCompleted": "task_subject", "TeammateIdle": "teammate_name",
        "ConfigChange": "source", "InstructionsLoaded": "load_reason", "FileChanged": "file_path",
        "Elicitation": "mcp_server_name", "ElicitationResult": "mcp_server_name", "Setup": "trigger",
    },
    common=frozenset({"transcript_path", "permission_mode", "prompt_id"}),
    labels=("transcript_path", "permission_mode", "model"),
    success_reasons=frozenset({"clear", "logout", "prompt_input_exit", "resume"}),
    skill_tool="Skill",
    provider="anthropic",
    stop_events=frozenset({"Stop", "SubagentStop", "PreCompact", "SessionEnd"}),
)
AGENT.on_stop = "traced.integrations.claude_code.usage:record_usage"
"""Usage and cost: the transcript's new API responses, recorded before the end-of-turn event."""

TOOL_EVENTS: Final = ("PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest", "PermissionDenied")
"""Events matched against a tool name: registered with ``"matcher": "*"``."""

NEVER_REGISTERED: Final = frozenset({"WorktreeCreate"})
"""A hook on WorktreeCreate replaces git's worktree creation: traced must never register it."""

INSTALL_EVENTS: Final = (
    # (event, first Claude Code version known to have it; (0,) = as old as traced's hooks)
    ("SessionStart", (0,)), ("UserPromptSubmit", (0,)), ("PreToolUse", (0,)), ("PostToolUse", (0,)),
    ("PostToolUseFailure", (0,)), ("Notification", (0,)), ("Stop", (0,)), ("SubagentStart", (0,)),
    ("SubagentStop", (0,)), ("PreCompact", (0,)), ("SessionEnd", (0,)),
    ("PermissionRequest", (2, 0, 45)), ("TeammateIdle", (2, 1, 33)), ("TaskCompleted", (2, 1, 33)),
    ("PostCompact", (2, 1, 76)), ("Elicitation", (2, 1, 76)), ("ElicitationResult", (2, 1, 76)),
    ("StopFailure", (2, 1, 78)), ("TaskCreated", (2, 1, 84)), ("PermissionDenied", (2, 1, 88)),
    # dates not pinned down: the version from which a settings file naming an unknown event
    # is no longer skipped whole (2.1.122) is a safe upper bound
    ("Setup", (2, 1, 122)), ("UserPromptExpansion", (2, 1, 122)), ("PostToolBatch", (2, 1, 122)),
    ("MessageDisplay", (2, 1, 122)), ("InstructionsLoaded", (2, 1, 122)), ("ConfigChange", (2, 1, 122)),
    ("CwdChanged", (2, 1, 122)), ("DirectoryAdded", (2, 1, 122)), ("FileChanged", (2, 1, 122)),
    ("WorktreeRemove", (2, 1, 122)),
)
"""Every event of the current hooks reference but WorktreeCreate (30 of 31)."""

TIMEOUTS: Final = {"SessionEnd": 1}
"""Seconds per entry: SessionEnd hooks share a 1.5 s budget (a longer timeout would raise it)."""
TIMEOUT: Final = 2
"""Seconds for every other entry: the hook bounds itself to 0.8 s; this only caps a wedged one."""
