"""traced: a local trace recorder daemon for AI-agent skills.

``import traced`` is light: the clients and errors load on first use, so the
shell path (``traced event``) pays only for what it runs.
"""

from __future__ import annotations

from traced._version import __version__

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Any

    from traced.client.aio import AsyncClient
    from traced.client.blocking import Client
    from traced.client.session import AsyncSession, Session
    from traced.errors import DaemonUnavailable, RequestError, TracedError
    from traced.format.vocab import Outcome, Phase, Reason

_LAZY = {
    "Client": "traced.client.blocking",
    "Session": "traced.client.session",
    "AsyncClient": "traced.client.aio",
    "AsyncSession": "traced.client.session",
    "DaemonUnavailable": "traced.errors",
    "RequestError": "traced.errors",
    "TracedError": "traced.errors",
    "Phase": "traced.format.vocab",
    "Outcome": "traced.format.vocab",
    "Reason": "traced.format.vocab",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'traced' has no attribute {name!r}")
    from importlib import import_module  # here: the package imports warnings

    return getattr(import_module(module), name)


__all__ = [
    "AsyncClient",
    "AsyncSession",
    "Client",
    "DaemonUnavailable",
    "Outcome",
    "Phase",
    "Reason",
    "RequestError",
    "Session",
    "TracedError",
    "__version__",
]
