"""The known phases and outcomes, as string enums (loaded on first use)."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """The known phases (readers ignore others)."""

    START = "start"
    DECISION = "decision"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    VERIFY = "verify"
    ARTIFACT = "artifact"
    NOTE = "note"
    END = "end"
    USER_PROMPT = "user_prompt"
    LLM_CALL = "llm_call"
    HOOK = "hook"


class Outcome(StrEnum):
    """How a session ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    ABORTED = "aborted"
