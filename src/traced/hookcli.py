"""The ``hook`` command group: ``traced hook claude-code`` and ``traced hook install``.

The main CLI calls ``add_parsers(subparsers)`` and runs ``args.func(args)``.
Only ``argparse`` is imported here: ``traced hook claude-code`` runs once per
Claude Code hook event, so everything else is imported inside the handlers.

The hook contract: ``traced hook claude-code`` prints nothing on stdout (Claude
Code would add it to the conversation) and always exits 0; on an internal
error it writes one line to stderr. See docs/claude-code.md.
"""

from __future__ import annotations

import argparse

AGENTS = ("claude-code",)


def cmd_claude_code(args: argparse.Namespace) -> int:
    """Record one Claude Code hook event read from stdin; never fails the hook."""
    try:
        import sys

        from traced import hooks

        options = hooks.options_from(args.skill, args.target, args.idle_timeout)
        hooks.run(sys.stdin.buffer.read(), options, getattr(args, "socket", None))
    except BaseException as e:  # the hook must exit 0 whatever happens
        _complain(e)
    return 0


def _complain(error: BaseException) -> None:
    try:
        import sys

        text = " ".join(str(error).split()) or type(error).__name__
        if type(error).__name__ not in ("HookError", "RequestError", "DaemonUnavailable"):
            text = f"{type(error).__name__}: {text}"
        print(f"traced hook: {text[:300]}", file=sys.stderr)
    except BaseException:
        pass


def cmd_install(args: argparse.Namespace) -> int:
    """Merge traced's hook entries into (or, with --uninstall, out of) Claude Code settings."""
    import sys
    from pathlib import Path

    from traced import hooks

    if args.settings:
        path = Path(args.settings).expanduser().absolute()
    else:
        path = hooks.settings_path("project" if args.project else "user")
    extra: list[str] = []
    if args.skill:
        if not hooks.valid_name(args.skill):
            print(f"traced: invalid --skill {args.skill!r}", file=sys.stderr)
            return 2
        extra += ["--skill", args.skill]
    if args.target:
        target = args.target
        extra += ["--target", target if target in ("global", "repo") else str(Path(target).expanduser().absolute())]
    if args.idle_timeout is not None:
        extra += ["--idle-timeout", f"{args.idle_timeout:g}"]
    command = hooks.hook_command(extra=extra)
    try:
        result = hooks.install(path, command, uninstall=args.uninstall, dry_run=args.dry_run)
    except (ValueError, OSError) as e:
        print(f"traced: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(result.diff)
    if not result.changed:
        print(f"traced: {path} is already up to date", file=sys.stderr)
    elif args.dry_run:
        print(f"traced: dry run, {path} not changed", file=sys.stderr)
    else:
        what = "removed traced's hooks from" if args.uninstall else "installed traced's hooks in"
        print(f"traced: {what} {path}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``hook`` command group to ``sub``."""
    p = sub.add_parser(
        "hook", help="record agent hook events (Claude Code) and install the hooks",
        description="Record agent hook events. `traced hook claude-code` is what Claude Code runs; "
                    "`traced hook install claude-code` sets it up.",
    )
    hsub = p.add_subparsers(dest="hook_command", metavar="COMMAND", required=True)

    c = hsub.add_parser(
        "claude-code", help="record one Claude Code hook event from stdin (prints nothing, exits 0)",
        description="Read one Claude Code hook JSON object from stdin and record it. Prints nothing on "
                    "stdout and always exits 0; falls back to the spool when the daemon is down.",
    )
    c.add_argument("--skill", help="skill name of the sessions (default: $TRACED_HOOK_SKILL or claude-code)")
    c.add_argument("--target", help="global, repo, or a directory (default: $TRACED_HOOK_TARGET or global)")
    c.add_argument("--idle-timeout", metavar="SECONDS",
                   help="abort a session idle this long (default: $TRACED_HOOK_IDLE_TIMEOUT or the daemon's)")
    c.set_defaults(func=cmd_claude_code)

    i = hsub.add_parser(
        "install", help="add traced's hooks to Claude Code settings (prints a unified diff)",
        description="Merge `traced hook claude-code` entries into Claude Code's settings.json for every "
                    "event traced records, leaving everything else as it is. Running it twice changes "
                    "nothing; --uninstall removes only traced's entries.",
    )
    i.add_argument("agent", choices=AGENTS)
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="~/.claude/settings.json (the default)")
    where.add_argument("--project", action="store_true",
                       help=".claude/settings.json at the git root (or the current directory)")
    where.add_argument("--settings", metavar="FILE", help="this settings file (e.g. .claude/settings.local.json)")
    i.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    i.add_argument("--uninstall", action="store_true", help="remove traced's entries")
    i.add_argument("--skill", help="record under this skill name (baked into the hook command)")
    i.add_argument("--target", help="global, repo, or a directory (baked into the hook command)")
    i.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="baked into the hook command")
    i.set_defaults(func=cmd_install)
