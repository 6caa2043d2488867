"""The ``traced`` command line (argparse). Thin: every handler imports what it needs.

``traced event`` runs once per event from shell skills, so this module and the
client path import no anyio, structlog, watchfiles or rich.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    import argparse
    from typing import Any

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class CliError(Exception):
    """A one-line error for stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _client(args: argparse.Namespace, spool: bool = True) -> Any:
    from traced.client import Client

    if not spool:
        return Client(args.socket, name="traced-cli", spool=False, spool_after=0.0)
    return Client(args.socket, name="traced-cli")


def _request_errors() -> tuple[type[BaseException], ...]:
    from traced.errors import TracedError

    return (TracedError,)


# --- serve / status ---------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from traced import config, daemon

    overrides: dict[str, Any] = {
        "socket": args.socket, "root": args.root, "fsync": args.fsync,
        "log_level": args.log_level, "log_format": args.log_format,
        "idle_timeout": args.idle_timeout, "max_frame": args.max_frame,
        "forward": args.forward or None,
    }
    if args.no_redaction:
        overrides["redaction"] = False
    try:
        cfg = config.load(args.config, overrides)
    except config.ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    return daemon.run(cfg, args.config)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the daemon's status; exit 3 when it is not running."""
    from traced.errors import DaemonUnavailable

    try:
        with _client(args, spool=False) as client:
            info = client.status()
    except DaemonUnavailable as e:
        if args.json:
            print(json.dumps({"running": False, "error": str(e)}))
        else:
            print(f"traced is not running ({e})")
        return EXIT_NOT_RUNNING
    info["running"] = True
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from traced.statusview import render

    render(info, sys.stdout)
    return 0


# --- shell-friendly session commands -----------------------------------------


def _parse_meta(pairs: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--meta takes key=value, got {pair!r}", EXIT_USAGE)
        meta[key] = value
    return meta


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"invalid JSON in {what}: {e.msg} at line {e.lineno} column {e.colno}",
                       EXIT_USAGE) from e


def cmd_start(args: argparse.Namespace) -> int:
    """Open a session; print {session_id, session_dir, trace_path} as one JSON line."""
    target = args.target
    if target not in ("global", "repo"):
        target = os.path.abspath(target)
    value = _json_arg(args.input, "--input") if args.input is not None else None
    with _client(args) as client:
        opened = client.open(
            args.skill, session_id=args.session_id, target=target, input=value,
            meta=_parse_meta(args.meta), owner_pid=args.pid if args.pid else -1,
            idle_timeout=args.idle_timeout,
        )
    out = {"session_id": opened.session_id, "session_dir": opened.dir,
           "trace_path": os.path.join(opened.dir, "trace.jsonl")}
    if opened.resumed:
        out["resumed"] = True
    if opened.root_fallback:
        out["root_fallback"] = opened.root_fallback
    if client.spooling:
        out["spooled"] = True
    print(json.dumps(out))
    return 0


def _read_payload(args: argparse.Namespace) -> Any:
    if args.payload_file is not None:
        source = "--payload-file"
        try:
            if args.payload_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.payload_file, encoding="utf-8") as f:
                    text = f.read()
        except OSError as e:
            raise CliError(f"cannot read {args.payload_file}: {e.strerror}") from e
    elif args.payload == "-":
        source, text = "stdin", sys.stdin.read()
    elif args.payload is not None:
        source, text = "--payload", args.payload
    else:
        return {}
    payload = _json_arg(text, source)
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


def cmd_event(args: argparse.Namespace) -> int:
    """Append one event; print its step (the full client: reconnects, then spools)."""
    from traced.client import Client

    payload = getattr(args, "payload_value", None)
    if payload is None:
        payload = event_payload(args)
    with Client(args.socket, name="traced-cli", client_id=args.client_id) as client:
        step = client.emit(args.session_id, args.phase, payload, ts=getattr(args, "ts", None))
    print(step or 0)  # 0: the daemon is away and the event went to the spool
    return 0


def cmd_end(args: argparse.Namespace) -> int:
    """End a session; print its meta.json with --json."""
    with _client(args) as client:
        meta = client.end(args.session_id, args.outcome, args.summary)
    if args.json:
        print(json.dumps(meta))
    return 0


# --- parser -------------------------------------------------------------------


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


def base_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The top-level parser (global options) and its sub-parsers action."""
    import argparse  # not at module top: `traced event` usually does without it

    parser = argparse.ArgumentParser(
        prog="traced", description="Record and read session traces of AI-agent skills.")
    from traced import __version__

    parser.add_argument("--version", action="version", version=f"traced {__version__}")
    parser.add_argument("--socket", default=None, help="daemon socket (default: $TRACED_SOCKET or "
                        "$XDG_RUNTIME_DIR/traced/traced.sock)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, sub


def build_parser() -> argparse.ArgumentParser:
    """The whole ``traced`` argument parser."""
    parser, sub = base_parser()

    p = sub.add_parser("serve", help="run the daemon in the foreground")
    p.add_argument("--config", help="TOML config file (default $XDG_CONFIG_HOME/traced/config.toml)")
    p.add_argument("--root", help="global root of session directories")
    p.add_argument("--fsync", choices=["never", "batch", "always"])
    p.add_argument("--idle-timeout", type=float, help="seconds before an idle session is aborted")
    p.add_argument("--max-frame", type=int, help="largest accepted frame in bytes")
    p.add_argument("--no-redaction", action="store_true", help="write payloads unredacted")
    p.add_argument("--forward", action="append", help="forward records to URL (repeatable)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", help="is the daemon running, and what is it doing (exit 3: not running)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("start", help="open a session; prints {session_id, session_dir, trace_path}")
    p.add_argument("--skill", required=True)
    p.add_argument("--target", default="global", help="global, repo, or a directory")
    p.add_argument("--pid", type=int, default=0, help="owner pid: the session aborts when it exits "
                   "(a shell skill passes $$); without it only the idle timeout applies")
    p.add_argument("--meta", action="append", default=[], metavar="K=V", help="label (repeatable)")
    p.add_argument("--session-id", help="use this id (e.g. an agent's own) instead of a new ULID")
    p.add_argument("--input", help="the session's input, as JSON")
    p.add_argument("--idle-timeout", type=float)
    p.set_defaults(func=cmd_start)

    add_event_parser(sub)

    p = sub.add_parser("end", help="end a session")
    p.add_argument("session_id", metavar="ID")
    p.add_argument("--outcome", required=True, choices=["success", "failure", "aborted"])
    p.add_argument("--summary")
    p.add_argument("--json", action="store_true", help="print the final meta.json")
    p.set_defaults(func=cmd_end)

    try:
        from traced import readcli
    except ImportError:  # pragma: no cover - the reading commands ship with the package
        readcli = None  # type: ignore[assignment]
    if readcli is not None:
        readcli.add_parsers(sub)
    from traced import hookcli

    hookcli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``traced`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if _command(argv) == "event":
            from traced import shellevent

            return shellevent.run(argv)
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        return code
    except CliError as e:
        print(f"traced: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except _request_errors() as e:
        from traced.errors import DaemonUnavailable

        print(f"traced: {e}", file=sys.stderr)
        return EXIT_NOT_RUNNING if isinstance(e, DaemonUnavailable) else EXIT_ERROR


def _command(argv: list[str]) -> str:
    """The sub-command word of ``argv`` (skipping the global ``--socket X``)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--socket":
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return word
    return ""


if __name__ == "__main__":
    sys.exit(main())
