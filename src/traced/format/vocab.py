"""The vocabulary of DESIGN §2: phases, outcomes, finalize reasons, tool kinds.

Plain string constants are the one spelling every module uses; the
``StrEnum`` classes (``traced.Phase``, ``traced.Outcome``, ``traced.Reason``)
are built from them on first use, so the shell path pays nothing for them.
Readers ignore phases they do not know.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Any, Final

# --- phases: devboy's ----------------------------------------------------------------
START: Final = "start"
DECISION: Final = "decision"
TOOL_CALL: Final = "tool_call"
TOOL_RESULT: Final = "tool_result"
VERIFY: Final = "verify"
ARTIFACT: Final = "artifact"
NOTE: Final = "note"
END: Final = "end"
# --- phases: traced's additions --------------------------------------------------------
USER_PROMPT: Final = "user_prompt"
LLM_CALL: Final = "llm_call"
HOOK: Final = "hook"

DEVBOY_PHASES: Final = (START, DECISION, TOOL_CALL, TOOL_RESULT, VERIFY, ARTIFACT, NOTE, END)
"""devboy's ``Phase`` enum: the phases devboy's own readers parse (others they skip)."""
PHASES: Final = (*DEVBOY_PHASES, USER_PROMPT, LLM_CALL, HOOK)
PHASE_PATTERN: Final = r"[a-z][a-z0-9_]{0,63}\Z"
"""Any phase name: snake_case, at most 64 characters (``PHASE_RE``: compiled on first use)."""
RESERVED_PHASES: Final = frozenset({START, END})
"""Written by the daemon itself, on open and close: a client may not emit them."""

# --- outcomes and reasons --------------------------------------------------------------
SUCCESS: Final = "success"
FAILURE: Final = "failure"
ABORTED: Final = "aborted"
OUTCOMES: Final = (SUCCESS, FAILURE, ABORTED)

OWNER_EXITED: Final = "owner_exited"
IDLE_TIMEOUT: Final = "idle_timeout"
RECOVERED_AFTER_RESTART: Final = "recovered_after_restart"
REASONS: Final = (OWNER_EXITED, IDLE_TIMEOUT, RECOVERED_AFTER_RESTART)
"""Why a watcher finalized a session (its outcome is then ``aborted``)."""

_ENUMS: Final = {"Phase": PHASES, "Outcome": OUTCOMES, "Reason": REASONS}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``Phase``, ``Outcome`` and ``Reason``: StrEnums built from the constants on first use;
    ``PHASE_RE``: compiled on first use, then a plain module attribute (``import re`` would cost
    the shell path about 6 ms)."""
    if name == "PHASE_RE":
        import re

        globals()[name] = pattern = re.compile(PHASE_PATTERN)
        return pattern
    values = _ENUMS.get(name)
    if values is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        from enum import StrEnum

        enum = StrEnum(name, [(v.upper(), v) for v in values])  # type: ignore[misc]
        enum.__module__ = "traced"
        _built[name] = enum
    return _built[name]
