"""systemd's notify and socket-activation protocols, without a dependency.

Two small pieces of ``sd_notify(3)`` and ``sd_listen_fds(3)``:

* :func:`listen_fds` picks up the listening sockets a ``.socket`` unit passes
  in (``LISTEN_PID``/``LISTEN_FDS``, fds from 3 on).
* :class:`Notifier` sends state changes (``READY=1``, ``STATUS=…``,
  ``RELOADING=1``, ``STOPPING=1``, ``WATCHDOG=1``, …) as datagrams to the
  ``AF_UNIX`` socket named by ``NOTIFY_SOCKET``.

Outside systemd both are inert: :func:`listen_fds` returns ``[]`` and every
:class:`Notifier` method is a no-op, so the daemon calls them unconditionally.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Final

__all__ = ["SD_LISTEN_FDS_START", "SEND_TIMEOUT", "Notifier", "listen_fds"]

SD_LISTEN_FDS_START: Final = 3
"""The first file descriptor systemd passes (``SD_LISTEN_FDS_START``)."""

_LISTEN_VARS: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_NOTIFY_VARS: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SEND_TIMEOUT: Final = 1.0
"""Default seconds a notification may wait while the manager's queue is full."""


def _parse_int(value: str | None) -> int | None:
    """``int(value)`` for a plain decimal, else ``None``."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def listen_fds(unset_env: bool = True) -> list[socket.socket]:
    """Return the sockets passed by systemd socket activation, in order.

    Activation is recognised when ``LISTEN_PID`` equals this process's pid;
    then ``LISTEN_FDS=n`` names the descriptors ``3 … 3+n-1``. Each is wrapped
    in a :class:`socket.socket` (family, type and protocol are read from the
    descriptor) and marked close-on-exec, so child processes do not inherit
    it. Without activation, or when the variables are malformed, the result
    is ``[]``.

    With ``unset_env`` (the default) ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` are removed from ``os.environ`` whatever the outcome,
    as ``sd_listen_fds(1)`` does, so that children never misread them.

    Raises :class:`ValueError` if a passed descriptor is not a socket (for
    example a FIFO from ``ListenFIFO=``): such a unit is misconfigured for
    this daemon. Descriptors already wrapped are closed before it raises.
    """
    pid = _parse_int(os.environ.get("LISTEN_PID"))
    count = _parse_int(os.environ.get("LISTEN_FDS"))
    if unset_env:
        for name in _LISTEN_VARS:
            os.environ.pop(name, None)
    if pid is None or pid != os.getpid() or not count:
        return []
    sockets: list[socket.socket] = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            for done in sockets:
                done.close()
            raise ValueError(f"LISTEN_FDS: descriptor {fd} is not a usable socket: {exc}") from exc
        sockets.append(sock)
    return sockets


def _address(notify_socket: str) -> str | None:
    """The ``AF_UNIX`` address for a ``NOTIFY_SOCKET`` value, or ``None``.

    A leading ``@`` names an abstract socket (``\\0`` on the wire); otherwise
    the value must be an absolute path. Other forms (``vsock:``) are not
    supported and disable notifications.
    """
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        return "\0" + notify_socket[1:]
    if notify_socket.startswith("/"):
        return notify_socket
    return None


class Notifier:
    """Sends ``sd_notify`` messages to the service manager.

    Build one with :meth:`from_env`. When ``NOTIFY_SOCKET`` is absent,
    :attr:`enabled` is ``False`` and every method does nothing. Sending never
    raises: a lost notification is not worth crashing the daemon over, and
    the manager's own timeouts report it.

    One ``AF_UNIX``/``SOCK_DGRAM`` socket is connected on first use and reused;
    after a failed send it is reopened once and the message retried. When the
    manager's receive queue is full a send waits at most ``send_timeout``
    seconds and then drops that message (it is not retried). Instances are
    not synchronised: use one from one thread (the daemon's event loop).
    """

    enabled: bool
    """Whether notifications go anywhere (``NOTIFY_SOCKET`` was set and usable)."""

    def __init__(
        self,
        notify_socket: str | None,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        """Target ``notify_socket`` (a path or ``@abstract`` name; ``None`` disables).

        ``watchdog_usec`` and ``watchdog_pid`` are the values of
        ``WATCHDOG_USEC`` and ``WATCHDOG_PID``; see :meth:`watchdog_interval`.
        ``send_timeout`` bounds how long one notification may block.
        """
        self._address = _address(notify_socket) if notify_socket else None
        self.enabled = self._address is not None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._send_timeout = send_timeout
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, unset_env: bool = False, send_timeout: float = SEND_TIMEOUT) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        With ``unset_env`` the three variables are removed from
        ``os.environ`` after reading, so child processes do not inherit them.
        """
        env = os.environ
        notifier = cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_parse_int(env.get("WATCHDOG_USEC")),
            watchdog_pid=_parse_int(env.get("WATCHDOG_PID")),
            send_timeout=send_timeout,
        )
        if unset_env:
            for name in _NOTIFY_VARS:
                env.pop(name, None)
        return notifier

    def _connect(self) -> socket.socket:
        """Open and connect the datagram socket (raises ``OSError``)."""
        if self._address is None:
            raise OSError("notifications are disabled")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self._send_timeout)
            sock.connect(self._address)
        except OSError:
            sock.close()
            raise
        return sock

    def notify(self, *fields: str) -> None:
        """Send ``fields`` joined by newlines as one datagram; never raises.

        Each field is one ``KEY=VALUE`` assignment. Empty fields are skipped,
        and nothing is sent when none remain.
        """
        if not self.enabled:
            return
        message = "\n".join(field for field in fields if field)
        if not message:
            return
        data = message.encode("utf-8", "replace")
        for _attempt in range(2):
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.send(data, socket.MSG_NOSIGNAL)
                return
            except TimeoutError:
                return  # the manager is behind: drop this one, keep the socket
            except OSError:
                self.close()  # e.g. ECONNREFUSED after the manager re-created it

    def ready(self, status: str | None = None) -> None:
        """``READY=1``, with ``STATUS=`` when ``status`` is given.

        Also ends a reload announced by :meth:`reloading`.
        """
        if status is None:
            self.notify("READY=1")
        else:
            self.notify("READY=1", _status(status))

    def status(self, text: str) -> None:
        """``STATUS=text``: the one-line state ``systemctl status`` shows."""
        self.notify(_status(text))

    def reloading(self) -> None:
        """``RELOADING=1`` and ``MONOTONIC_USEC`` (``CLOCK_MONOTONIC`` in µs).

        Send :meth:`ready` once the reload is complete.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """``STOPPING=1``: a graceful shutdown has begun."""
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the keep-alive ping for ``WatchdogSec=``."""
        self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of ``WATCHDOG_USEC``.

        ``None`` when no watchdog is configured (``WATCHDOG_USEC`` unset, zero
        or malformed) or when ``WATCHDOG_PID`` names a process other than
        this one.
        """
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def mainpid(self, pid: int) -> None:
        """``MAINPID=pid``: tell the manager which process is the main one."""
        self.notify(f"MAINPID={int(pid)}")

    def close(self) -> None:
        """Close the socket; a later notification reopens it."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _status(text: str) -> str:
    """A ``STATUS=`` field with newlines flattened, so it stays one assignment."""
    return "STATUS=" + " ".join(text.splitlines())
