"""``traced event``, whole: its fast path, its parser, its payload rules.

Shell skills run it once per event, so its start-up is the cost that
matters: a plain command line is parsed without argparse, the event goes
through the stdlib ``ShellClient`` (no msgspec, anyio or structlog). When the
daemon cannot be reached or the connection breaks before the ack, the full
client takes over with the SAME (client_id, seq) key: it reconnects, resends
(the daemon drops a duplicate) and finally spools.
"""

from __future__ import annotations

import os
import sys
import time

from traced.client.shell import ShellClient, spool_after_default
from traced.errors import EXIT_ERROR, EXIT_USAGE, CliError, RequestError
from traced.format.ids import new_ulid

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    import argparse
    from typing import Any


def json_arg(text: str | bytes, what: str) -> Any:
    """``text`` parsed as JSON (``wire.fit.parse_json``: BOM, invalid UTF-8 and lone surrogates
    repaired, numbers exact); CliError (exit 2) naming ``what`` when it is not JSON."""
    from traced.wire.fit import parse_json

    try:
        return parse_json(text)
    except ValueError as e:
        import json  # loaded already when the text was not JSON

        if isinstance(e, json.JSONDecodeError):
            raise CliError(f"invalid JSON in {what}: {e.msg} at line {e.lineno} column {e.colno}",
                           EXIT_USAGE) from e
        raise CliError(f"invalid JSON in {what}: {e}", EXIT_USAGE) from e


def _read_payload(args: argparse.Namespace) -> Any:
    text: str | bytes
    if args.payload_file is not None:
        source = "--payload-file"
        try:
            if args.payload_file == "-":
                text = sys.stdin.buffer.read()
            else:
                with open(args.payload_file, "rb") as f:
                    text = f.read()
        except OSError as e:
            raise CliError(f"cannot read {args.payload_file}: {e.strerror}") from e
    elif args.payload == "-":
        source, text = "stdin", sys.stdin.buffer.read()
    elif args.payload is not None:
        source, text = "--payload", args.payload
    else:
        return {}
    payload = json_arg(text, source)
    if not isinstance(payload, dict):
        raise CliError(f"payload must be a JSON object, not {type(payload).__name__}", EXIT_USAGE)
    return payload


def event_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The payload of ``traced event``, from --payload/--payload-file/stdin and --attach."""
    payload: dict[str, Any] = _read_payload(args)
    if args.attach:
        if args.phase != "artifact":
            raise CliError("--attach goes with --phase artifact", EXIT_USAGE)
        payload = {"path": os.path.abspath(args.attach), **payload, "attach": True}
    return payload


def cmd_event(args: argparse.Namespace, *, budget: float | None = None, offline: bool = False) -> int:
    """Append one event; print its step (the full client: reconnects, then spools).

    ``budget``: seconds left for reaching the daemon (default ``TRACED_SPOOL_AFTER``);
    ``offline``: the daemon just timed out, so the event goes to the spool at once.
    """
    from traced.client.blocking import Client

    payload = getattr(args, "payload_value", None)
    if payload is None:
        payload = event_payload(args)
    left = spool_after_default() if budget is None else max(budget, 0.0)
    with Client(args.socket, name="traced-cli", client_id=args.client_id, timeout=max(left, 0.05),
                spool_after=left, offline=offline) as client:
        step = client.emit(args.session_id, args.phase, payload, ts=getattr(args, "ts", None))
    print(step or 0)  # 0: the daemon is away and the event went to the spool
    return 0


def add_event_parser(sub: Any) -> None:
    """``traced event``: shared by the full parser and the shell fast path."""
    p = sub.add_parser("event", help="append one event; prints its step",
                       usage="traced event ID --phase P [--payload JSON | --payload-file F | -] [--attach PATH]")
    p.add_argument("session_id", metavar="ID")
    p.add_argument("--phase", required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--payload", help="JSON object, or - for stdin")
    src.add_argument("--payload-file", metavar="F", help="file holding the JSON object (- for stdin)")
    p.add_argument("--attach", metavar="PATH", help="with --phase artifact: the daemon copies the file into "
                   "<session>/artifacts/")
    p.set_defaults(func=cmd_event, client_id=None)


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


class Args:
    """The parsed command line of the fast path (argparse's Namespace without argparse)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def quick_args(argv: list[str]) -> Args | None:
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
    return Args(session_id=positional[1], client_id=None, **values)


def run(argv: list[str]) -> int:
    """Parse ``argv`` (a ``traced event …`` command line), append the event, print its step."""
    args: Any = quick_args(argv)
    if args is None:
        from traced.cli.options import base_parser

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
    from traced.wire.fit import fit, payload_budget

    deadline = time.monotonic() + spool_after_default()  # one deadline for the whole command
    try:
        with ShellClient(args.socket, name="traced-cli", client_id=args.client_id, deadline=deadline) as client:
            args.payload_value = payload = fit(payload, payload_budget(client.frame_limit), 64, client.max_keys)
            step = client.emit(args.session_id, args.phase, payload, ts=args.ts)
    except RequestError as e:
        print(f"traced: {e}", file=sys.stderr)
        return EXIT_USAGE if e.code == "too_large" else EXIT_ERROR
    except TimeoutError:  # the daemon does not answer: spool now, same key
        return cmd_event(args, offline=True)
    except OSError:  # daemon away or connection lost: the full client takes over, same key
        return cmd_event(args, budget=deadline - time.monotonic())
    print(step)
    return 0
