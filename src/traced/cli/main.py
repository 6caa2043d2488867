"""The ``traced`` command line: one ``main(argv) -> int``, one error and exit-code convention.

Thin: every handler imports what it needs. ``traced event`` and ``traced
hook …`` are dispatched to their own fast paths (``cli.event``, ``cli.hook``)
before argparse is even imported. Errors become one line on stderr and the
exit codes of ``errors.exit_code``: 0 ok, 1 error, 2 usage, 3 daemon not
running, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

from traced.cli.options import add_globals, base_parser, command_word
from traced.errors import EXIT_NOT_RUNNING, EXIT_USAGE, CliError, ConfigError, DaemonUnavailable, TracedError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    import argparse
    from typing import Any


def _client(args: argparse.Namespace, spool: bool = True) -> Any:
    from traced.client.blocking import Client

    if not spool:
        return Client(args.socket, name="traced-cli", spool=False, spool_after=0.0)
    return Client(args.socket, name="traced-cli")


# --- serve / status / start / end ----------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from traced.daemon import config, serve

    overrides: dict[str, Any] = {
        "socket": args.socket, "root": args.root[-1] if args.root else None, "fsync": args.fsync,
        "log_level": args.log_level, "log_format": args.log_format,
        "idle_timeout": args.idle_timeout, "max_frame": args.max_frame,
        "forward": args.forward or None, "otlp_listen": args.otlp_listen, "mirror": args.mirror,
    }
    if args.otlp_allow_remote:
        overrides["otlp_allow_remote"] = True
    if args.no_redaction:
        overrides["redaction"] = False
    try:
        cfg = config.load(args.config, overrides)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    return serve.run(cfg, args.config, overrides)


def cmd_status(args: argparse.Namespace) -> int:
    """Show the daemon's status; exit 3 when it is not running."""
    import json

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
    info["disk"] = _disk(info)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from traced.cli.render import render_status

    render_status(info, sys.stdout)
    return 0


def _disk(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Disk used per root the daemon writes to, measured here (not in the daemon): one walk of
    each root, about 0.1 s per 10,000 sessions with a warm cache."""
    from traced.read.prune import disk_usage, real_roots

    roots = info.get("roots") or [info.get("root")]
    return [disk_usage(r).to_json() for r in real_roots(str(r) for r in roots if r)]


# --- shell-friendly session commands -----------------------------------------


def _parse_meta(pairs: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--meta takes key=value, got {pair!r}", EXIT_USAGE)
        meta[key] = value
    return meta


def cmd_start(args: argparse.Namespace) -> int:
    """Open a session; print {session_id, session_dir, trace_path} as one JSON line."""
    import json

    from traced.cli.event import json_arg
    from traced.format import layout

    target = args.target
    if target not in ("global", "repo"):
        target = os.path.abspath(target)
    value = json_arg(args.input, "--input") if args.input is not None else None
    with _client(args) as client:
        opened = client.open(
            args.skill, session_id=args.session_id, target=target, input=value,
            meta=_parse_meta(args.meta), owner_pid=args.pid if args.pid else -1,
            idle_timeout=args.idle_timeout,
        )
    out = {"session_id": opened.session_id, "session_dir": opened.dir,
           "trace_path": os.path.join(opened.dir, layout.TRACE)}
    if opened.resumed:
        out["resumed"] = True
    if opened.root_fallback:
        out["root_fallback"] = opened.root_fallback
    if client.spooling:
        out["spooled"] = True
    print(json.dumps(out))
    return 0


def cmd_end(args: argparse.Namespace) -> int:
    """End a session; print its meta.json with --json."""
    import json

    with _client(args) as client:
        meta = client.end(args.session_id, args.outcome, args.summary)
    if args.json:
        print(json.dumps(meta))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the web UI until interrupted."""
    from traced.read.sessions import reading_roots
    from traced.ui.serve import run

    roots = reading_roots(getattr(args, "root", None))
    return run(args.listen, roots, args.socket, open_browser=not args.no_open)


# --- parser -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole ``traced`` argument parser."""
    import argparse

    from traced.cli import hook, importer, read, service

    parser, sub = base_parser()

    p = sub.add_parser("serve", help="run the daemon in the foreground")
    p.add_argument("--config", help="TOML config file (default $XDG_CONFIG_HOME/traced/config.toml)")
    p.add_argument("--root", action="append", metavar="DIR", default=argparse.SUPPRESS,
                   help="global root of session directories")
    p.add_argument("--fsync", choices=["never", "batch", "always"])
    p.add_argument("--idle-timeout", type=float, help="seconds before an idle session is aborted")
    p.add_argument("--max-frame", type=int, help="largest accepted frame in bytes")
    p.add_argument("--no-redaction", action="store_true", help="write payloads unredacted")
    p.add_argument("--forward", action="append", help="forward records to URL (repeatable)")
    p.add_argument("--otlp-listen", metavar="HOST:PORT",
                   help="receive OTLP/HTTP on /v1/traces and /v1/logs (loopback only; see docs/otlp-receiver.md)")
    p.add_argument("--otlp-allow-remote", action="store_true",
                   help="let --otlp-listen bind an address that is not loopback")
    p.add_argument("--mirror", metavar="URL", help="write every record of a JetStream stream that other daemons "
                   "forward to into this root (nats://HOST:PORT[?stream=…&durable=…])")
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

    from traced.cli.event import add_event_parser

    add_event_parser(sub)

    p = sub.add_parser("end", help="end a session")
    p.add_argument("session_id", metavar="ID")
    p.add_argument("--outcome", required=True, choices=["success", "failure", "aborted"])
    p.add_argument("--summary")
    p.add_argument("--json", action="store_true", help="print the final meta.json")
    p.set_defaults(func=cmd_end)

    read.add_parsers(sub)
    p = sub.add_parser("ui", help="the local web UI: sessions, waterfalls, usage (prints its URL first)")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="loopback address to serve on (default 127.0.0.1 and a free port)")
    p.add_argument("--root", action="append", metavar="DIR", default=argparse.SUPPRESS,
                   help="sessions root to read (repeatable; default: every root the daemon writes to)")
    p.add_argument("--no-open", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_ui)
    hook.add_parsers(sub)
    service.add_parsers(sub)
    importer.add_parsers(sub)
    add_globals(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``traced`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    word = command_word(argv)
    if word == "event":
        from traced.cli import event

        return event.run(argv)
    if word == "hook":
        from traced.cli import hook

        code = hook.run(argv)
        if code is not None:
            return code
    from traced.cli.render import report

    try:
        args = build_parser().parse_args(argv)
        code = args.func(args)
        return int(code)
    except (TracedError, KeyboardInterrupt) as e:
        return report("", e)
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
