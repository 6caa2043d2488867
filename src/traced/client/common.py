"""What the blocking and the async client share besides the ``Conversation``: settings and state.

The two clients differ only in how they wait (blocking sockets, anyio); the
loops themselves are written twice on purpose, once per way of waiting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from traced import locations
from traced.client.conversation import Conversation, spool_pending, spool_reply
from traced.errors import DaemonUnavailable
from traced.wire import protocol


class ClientBase:
    """Socket path, spool settings, counters and the conversation of one client."""

    def __init__(self, socket_path: str | os.PathLike[str] | None, *, name: str, timeout: float,
                 send_secrets: bool, spool_after: float | None, spool: bool,
                 spool_dir: str | os.PathLike[str] | None, client_id: str | None) -> None:
        self.socket_path = Path(socket_path) if socket_path else locations.socket_path()
        self.timeout = timeout
        """Seconds one socket operation may block."""
        self.spool_enabled = spool
        self.spool_dir = Path(spool_dir) if spool_dir else locations.spool_dir()
        self.spooled = 0
        """Events written to the spool by this client."""
        self.reconnects = 0
        """Times the connection was re-established after it broke."""
        self.server = ""
        """The daemon's name and version, from its ``welcome``."""
        self._conv = Conversation(client_id, name, send_secrets=send_secrets, spool_after=spool_after)

    @property
    def op_timeout(self) -> float:
        """Seconds one wait for the daemon may last: ``timeout``; when the client may spool, no longer
        than ``spool_after`` (0.5 s at least): a daemon that accepts and never answers counts as away.
        Without a spool there is nothing better to do than wait."""
        if not self.spool_enabled:
            return self.timeout
        return min(self.timeout, max(self._conv.spool_after, 0.5))

    @property
    def client_id(self) -> str:
        """This client's id: with each event's seq, the idempotency key."""
        return self._conv.client_id

    @property
    def name(self) -> str:
        """The client's name in the daemon's logs."""
        return self._conv.name

    @property
    def spooling(self) -> bool:
        """True once events went to the spool; reset when the daemon answers again."""
        return self._conv.spooling

    @property
    def frame_limit(self) -> int:
        """The daemon's frame limit in bytes, from its ``welcome`` (0 before it is known)."""
        return self._conv.frame_limit

    @property
    def max_keys(self) -> int:
        """The daemon's limit on map keys in one payload, from its ``welcome`` (0: not known)."""
        return self._conv.max_keys

    @property
    def spool_after(self) -> float:
        """Seconds the daemon may stay away before events go to the spool."""
        return self._conv.spool_after

    @spool_after.setter
    def spool_after(self, seconds: float) -> None:
        self._conv.spool_after = seconds

    @property
    def lost(self) -> int:
        """Events lost since the daemon last answered: it was away and the spool could not be written."""
        return self._conv.lost

    def _spool(self, msg: Any) -> protocol.Reply:
        """Write every unconfirmed emit (and ``msg``) to the spool; a local reply for ``msg``.

        Raises DaemonUnavailable when spooling is off. A spool that cannot be
        written loses the events (counted in ``lost``), never the caller's program.
        """
        if not self.spool_enabled:
            raise DaemonUnavailable(f"no traced daemon at {self.socket_path}")
        self.spooled += spool_pending(self._conv, msg, self.spool_dir)
        self._conv.spooling = True
        return spool_reply(msg)
