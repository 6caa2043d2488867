"""``traced event`` on the fast path (see ``shellclient``): no msgspec, anyio or structlog.

Shell skills run it once per event, so its start-up is the cost that
matters. When the daemon cannot be reached or the connection breaks before
the ack, the full client takes over with the SAME (client_id, seq) key: it
reconnects, resends (the daemon drops a duplicate) and finally spools.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

from traced.cli import EXIT_ERROR, EXIT_USAGE, CliError, add_event_parser, base_parser, cmd_event, event_payload
from traced.errors import RequestError
from traced.ids import new_ulid
from traced.shellclient import ShellClient

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from typing import Any


def _bare_dash(argv: list[str]) -> list[str]:
    """A bare ``-`` (``--payload JSON | --payload-file F | -``) means ``--payload -``."""
    out: list[str] = []
    for i, word in enumerate(argv):
        if word == "-" and (i == 0 or argv[i - 1] not in ("--payload", "--payload-file", "--socket", "--phase")):
            out += ["--payload", "-"]
        else:
            out.append(word)
    return out


_VALUED = {"--socket": "socket", "--phase": "phase", "--payload": "payload", "--payload-file": "payload_file",
           "--attach": "attach"}


def quick_args(argv: list[str]) -> SimpleNamespace | None:
    """The arguments of a plain, well-formed ``event`` command line, or None.

    argparse costs several milliseconds per run (its gettext lookups stat
    locale files), a third of this command's budget; anything unusual (help,
    an unknown flag, a missing value, both payload options) goes to argparse,
    which gives the usual messages.
    """
    values: dict[str, str | None] = dict.fromkeys(_VALUED.values())
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        key = _VALUED.get(word)
        if key is not None:
            if i + 1 >= len(argv) or values[key] is not None:
                return None
            values[key] = argv[i + 1]
            i += 2
        elif word == "-" and values["payload"] is None:
            values["payload"] = "-"
            i += 1
        elif word.startswith("-"):
            return None
        else:
            positional.append(word)
            i += 1
    if positional[:1] != ["event"] or len(positional) != 2 or values["phase"] is None:
        return None
    if values["payload"] is not None and values["payload_file"] is not None:
        return None
    return SimpleNamespace(session_id=positional[1], client_id=None, **values)


def run(argv: list[str]) -> int:
    """Parse ``argv`` (a ``traced event …`` command line), append the event, print its step."""
    args: Any = quick_args(argv)
    if args is None:
        parser, sub = base_parser()
        add_event_parser(sub)
        args = parser.parse_args(_bare_dash(argv))
    try:
        payload = event_payload(args)
    except CliError as e:
        print(f"traced: {e}", file=sys.stderr)
        return e.code
    args.client_id = new_ulid()
    args.payload_value = payload
    args.ts = time.time()
    try:
        with ShellClient(args.socket, name="traced-cli", client_id=args.client_id) as client:
            step = client.emit(args.session_id, args.phase, payload, ts=args.ts)
    except RequestError as e:
        print(f"traced: {e}", file=sys.stderr)
        return EXIT_USAGE if e.code == "too_large" else EXIT_ERROR
    except OSError:  # daemon away or connection lost: the full client takes over, same key
        return cmd_event(args)
    print(step)
    return 0
