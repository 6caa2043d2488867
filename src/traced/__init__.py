"""traced: a local trace recorder daemon for AI-agent skills.

``import traced`` is light: the clients and errors load on first use, so the
shell path (``traced event``) pays only for what it runs.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Any

    from traced.aclient import AsyncClient, AsyncSession
    from traced.client import Client, Session
    from traced.errors import DaemonUnavailable, RequestError, TracedError
    from traced.phases import Outcome, Phase

_LAZY = {
    "Client": "traced.client",
    "Session": "traced.client",
    "AsyncClient": "traced.aclient",
    "AsyncSession": "traced.aclient",
    "DaemonUnavailable": "traced.errors",
    "RequestError": "traced.errors",
    "TracedError": "traced.errors",
    "Phase": "traced.phases",
    "Outcome": "traced.phases",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'traced' has no attribute {name!r}")
    return getattr(import_module(module), name)


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
