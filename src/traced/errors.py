"""Errors shared by the daemon and the clients."""

from __future__ import annotations


class TracedError(Exception):
    """Base of every error traced raises."""


class DaemonUnavailable(TracedError):
    """Nothing listens on the socket (or it refused us)."""


class RequestError(TracedError):
    """The daemon answered a request with ``error {code, message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
