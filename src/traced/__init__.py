"""traced: a local trace recorder daemon for AI-agent skills.

``import traced`` stays light (no anyio): ``AsyncClient`` loads on first use.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from traced.client import Client, Session
from traced.errors import DaemonUnavailable, RequestError, TracedError

if TYPE_CHECKING:
    from traced.aclient import AsyncClient, AsyncSession


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


def __getattr__(name: str) -> Any:
    if name in ("AsyncClient", "AsyncSession"):
        from traced import aclient

        return getattr(aclient, name)
    raise AttributeError(f"module 'traced' has no attribute {name!r}")


__all__ = [
    "AsyncClient",
    "AsyncSession",
    "Client",
    "DaemonUnavailable",
    "Outcome",
    "Phase",
    "RequestError",
    "Session",
    "TracedError",
    "__version__",
]
