"""Every error a traced user can see, all under ``TracedError``.

``except traced.TracedError`` catches anything traced raises on purpose. The
classes that also name a builtin base (``ValueError``, ``LookupError``) keep
it, so older callers that caught the builtin still do. Light by design: the
shell path imports this module.

Errors that never leave the daemon (a short write inside the journal) are not
here; a client sees them as ``RequestError`` with the wire code ``io_error``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


class TracedError(Exception):
    """Base of every error traced raises on purpose."""


# --- talking to the daemon ------------------------------------------------------


class DaemonUnavailable(TracedError):
    """Raised when nothing answers on the socket, the peer is not the user's daemon,
    or the connection closed before a reply arrived (and spooling is off)."""


class RequestError(TracedError):
    """Raised when the daemon answered a request with ``error {code, message}``.

    ``code`` is one of the wire codes of docs/protocol.md (``bad_frame``,
    ``too_large``, ``unknown_session``, ``session_closed``, ``invalid_name``,
    ``invalid_event``, ``forbidden``, ``overloaded``, ``io_error``, ``internal``).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FrameTooLarge(TracedError):
    """Raised when a frame header announces more bytes than the limit (``too_large`` on the wire)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


# --- what a client sends -------------------------------------------------------------


class InvalidName(TracedError, ValueError):
    """Raised when a skill or session name is outside ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``
    (``invalid_name`` on the wire)."""


class InvalidEvent(TracedError, ValueError):
    """Raised when an event breaks a rule: a bad phase, a reserved phase, a payload that is
    not a map, a bad outcome (``invalid_event`` on the wire). The message says which."""


class ArtifactRefused(TracedError, ValueError):
    """Raised when an ``artifact`` event asks for a copy the daemon may not make: a symlink,
    a path outside the home and the session root, not a regular file, or over the size cap."""


# --- configuration and running -----------------------------------------------------


class ConfigError(TracedError, ValueError):
    """Raised when a config file, a ``TRACED_*`` variable or a flag has a bad value."""


class AlreadyRunning(TracedError):
    """Raised when another daemon already holds this socket or this state directory."""


class ForwardURLError(TracedError, ValueError):
    """Raised when a ``--forward`` URL is malformed or its extra is not installed."""


class OtlpRequestError(TracedError, ValueError):
    """Raised when an OTLP/HTTP request cannot be accepted; ``status`` is the HTTP status the
    receiver answers with (400 bad body, 413 too large, 415 unsupported media type or encoding)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HookError(TracedError, ValueError):
    """Raised when an agent hook's input cannot be recorded (not a JSON object,
    no or an invalid session id, no event name)."""


EXIT_OK = 0
EXIT_ERROR = 1
"""Something failed (including: no session matches the id)."""
EXIT_USAGE = 2
"""Bad arguments (including an ambiguous id prefix), as argparse does."""
EXIT_NOT_RUNNING = 3
"""The daemon is not running (``traced status``, and commands that need it)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C. ``traced hook …`` never uses any code but 0: an agent reads 2 as "block"."""


class CliError(TracedError):
    """Raised by a CLI command for a one-line message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- reading ----------------------------------------------------------------------------


class ReadError(TracedError, LookupError):
    """Base of the readers' lookup errors."""


class SessionNotFound(ReadError):
    """Raised when no session under the roots matches an id or id prefix."""


class AmbiguousSession(ReadError):
    """Raised when several sessions match an id prefix; ``candidates`` lists them."""

    def __init__(self, ident: str, candidates: Sequence[Any]) -> None:
        self.ident = ident
        self.candidates = list(candidates)
        shown = ", ".join(f"{c.session_id} ({c.date}/{c.skill})" for c in self.candidates[:10])
        more = f" and {len(self.candidates) - 10} more" if len(self.candidates) > 10 else ""
        super().__init__(f"ambiguous session id {ident!r}: {len(self.candidates)} sessions match: {shown}{more}")


def exit_code(exc: BaseException) -> int:
    """The CLI's one exit-code convention for an error (see the ``EXIT_*`` codes)."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, AmbiguousSession | ConfigError):
        return EXIT_USAGE
    if isinstance(exc, DaemonUnavailable):
        return EXIT_NOT_RUNNING
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR
