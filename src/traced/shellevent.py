"""``traced event`` on the fast path: stdlib + ``minipack``; no msgspec, anyio or structlog.

Shell skills run it once per event, so its start-up is the cost that
matters. It speaks the same protocol as ``Client`` (hello, then one emit with
an idempotency key) and prints the step. When the daemon cannot be reached,
or the connection breaks before the ack, it hands over to the full client
with the SAME (client_id, seq) key: that one reconnects, resends (the daemon
drops a duplicate) and finally spools.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from traced import minipack
from traced.cli import EXIT_ERROR, EXIT_USAGE, CliError, add_event_parser, base_parser, cmd_event, event_payload
from traced.ids import new_ulid

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Any

SEQ = 1


def run(argv: list[str]) -> int:
    """Parse ``argv`` (a ``traced event …`` command line), append the event, print its step."""
    parser, sub = base_parser()
    add_event_parser(sub)
    args = parser.parse_args(argv)
    try:
        payload = event_payload(args)
    except CliError as e:
        print(f"traced: {e}", file=sys.stderr)
        return e.code
    args.client_id = new_ulid()
    args.payload_value = payload
    args.ts = time.time()
    try:
        reply = _emit(args, payload)
    except OSError:
        reply = None
    if reply is None:  # daemon away or connection lost: the full client takes over, same key
        return cmd_event(args)
    if reply.get("op") == "ack":
        print(reply.get("step"))
        return 0
    code, message = reply.get("code", "internal"), reply.get("message", "")
    print(f"traced: {code}: {message}", file=sys.stderr)
    return EXIT_USAGE if code == "too_large" else EXIT_ERROR


def _emit(args: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    from traced.locations import socket_location
    from traced.secretnames import secret_env_values

    path = args.socket or socket_location()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = ""
        sock.sendall(minipack.frame({
            "op": "hello", "id": 1, "version": 1, "client": "traced-cli", "client_id": args.client_id,
            "pid": os.getpid(), "cwd": cwd, "secrets": secret_env_values(os.environ),
        }))
        reader = _Replies(sock)
        welcome = reader.next()
        if welcome is None or welcome.get("op") != "welcome":
            return welcome
        body = minipack.packb({
            "op": "emit", "id": 2, "session_id": args.session_id, "phase": args.phase, "payload": payload,
            "ts": args.ts, "seq": SEQ, "ack": True,
        })
        limit = welcome.get("max_frame") or 0
        if limit and len(body) > limit:
            return {"op": "error", "code": "too_large",
                    "message": f"event of {len(body)} bytes exceeds the daemon's limit of {limit} bytes"}
        sock.sendall(len(body).to_bytes(4, "big") + body)
        return reader.next()
    finally:
        sock.close()


class _Replies:
    """Length-prefixed replies from a blocking socket, decoded with minipack."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self) -> dict[str, Any] | None:
        while True:
            if len(self.buf) >= 4:
                size = int.from_bytes(self.buf[:4], "big")
                if len(self.buf) >= 4 + size:
                    body, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
                    value = minipack.unpackb(body)
                    return value if isinstance(value, dict) else None
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
