"""``traced hook``: record agent hook events, and install the hooks.

``traced hook claude-code|codex|gemini`` runs once per hook event of that
agent, so it has its own fast path (``run``): no argparse, and a contract it
keeps whatever its arguments: it prints nothing on stdout (Claude Code and
Codex would add it to the conversation; Gemini CLI requires JSON or nothing)
and always exits 0, because all three read exit code 2 as "block this
action". A problem, including a bad or unknown option, is one line on stderr.
``traced hook install`` goes through the full parser. See docs/claude-code.md,
docs/codex.md and docs/gemini.md.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    import argparse

_VALUED = {"--skill": "skill", "--target": "target", "--idle-timeout": "idle_timeout", "--socket": "socket"}


def run(argv: list[str]) -> int | None:
    """``traced [--socket P] hook <agent> [options]``: record one event from stdin; always 0.

    Returns None for anything else under ``hook`` (``install``, ``--help``), which
    the full parser handles.
    """
    words = list(argv)
    try:
        at = words.index("hook")
    except ValueError:
        return None
    rest = words[at + 1 :]
    if rest and (rest[0] == "install" or "-h" in rest or "--help" in rest):
        return None
    from traced.integrations.hooks.run import AGENTS

    if not rest:  # an agent's settings with the agent's name missing must not block its tools either
        _complain(f"no agent named (known: {', '.join(AGENTS)}); nothing recorded")
        return 0
    if rest[0] not in AGENTS:  # a typo in an agent's settings must not block its tools (exit 2)
        _complain(f"unknown agent {rest[0]!r} (known: {', '.join(AGENTS)}); nothing recorded")
        return 0
    options: dict[str, str | None] = dict.fromkeys(_VALUED.values())
    unknown: list[str] = []
    for part in (words[:at], rest[1:]):
        i = 0
        while i < len(part):
            word = part[i]
            key, eq, value = word.partition("=")
            if key in _VALUED and eq:
                options[_VALUED[key]] = value
            elif word in _VALUED and i + 1 < len(part):
                options[_VALUED[word]] = part[i + 1]
                i += 1
            else:
                unknown.append(word)
            i += 1
    if unknown:
        _complain(f"ignoring unknown arguments {' '.join(unknown)!r}")
    record(rest[0], options)
    return 0


def record(agent: str, options: dict[str, str | None]) -> None:
    """Record one ``agent`` hook event read from stdin within the hook's budget; never raises.

    stdout belongs to the agent (Gemini CLI parses it as JSON, Claude Code and Codex may add
    it to the conversation): it is pointed at stderr first, so nothing of ours can land there.
    """
    try:
        import os
        import time

        try:
            os.dup2(2, 1)
        except OSError:
            pass

        from traced.errors import HookError
        from traced.integrations.hooks import run as hook_run

        deadline = time.monotonic() + hook_run.budget()
        table = hook_run.agent_named(agent)
        try:
            opts = hook_run.options_from(options.get("skill"), options.get("target"), options.get("idle_timeout"))
        except HookError as e:  # a bad option costs the option, never the event
            _complain(f"{e}; recording with the defaults")
            from traced.integrations.hooks.core import Options

            opts = Options()
        data = read_json_value(0, deadline - hook_run.SPOOL_RESERVE)
        hook_run.run(data, table, opts, options.get("socket"), deadline=deadline)
    except BaseException as e:  # the hook must exit 0 whatever happens
        _complain(e)
    finally:
        drain(0)


def drain(fd: int, most: float = 0.5, idle: float = 0.02) -> None:
    """Read and drop what is left on ``fd`` (a pipe): until EOF, ``idle`` seconds without data,
    or ``most`` seconds in all. Never raises.

    A hook that exits while its agent is still writing the payload (bytes after the first JSON
    value, a payload over the read limit, a read cut by the budget) makes that write fail with
    EPIPE, which agents report as a hook failure ("failed to write hook stdin: Broken pipe")
    or, unhandled, crash on.
    """
    try:
        import os
        import select
        import time

        end = time.monotonic() + most
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], min(idle, left))
            if not ready or not os.read(fd, 1 << 20):
                return
    except BaseException:
        pass


def read_json_value(fd: int, deadline: float, limit: int = 64 * 1024 * 1024) -> bytes:
    """The bytes of the first complete JSON value on ``fd``: read until it is complete, EOF or
    ``deadline`` (``time.monotonic()`` seconds), whichever comes first; at most ``limit`` bytes.

    An agent may write one object and keep the pipe open: the hook must not wait for EOF.
    """
    import os
    import select
    import time

    from traced.wire.cjson import raw_decode

    chunks: list[bytes] = []
    size = 0
    while size < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.rstrip().endswith((b"}", b"]")):  # a value may be complete: try it
            text = b"".join(chunks).decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
            try:
                _value, end = raw_decode(text)
            except ValueError:
                continue
            return text[:end].encode("utf-8", "surrogatepass")
    return b"".join(chunks)


def _complain(error: BaseException | str) -> None:
    try:
        import sys

        if isinstance(error, str):
            text = error
        else:
            text = " ".join(str(error).split()) or type(error).__name__
            if type(error).__name__ not in ("HookError", "RequestError", "DaemonUnavailable"):
                text = f"{type(error).__name__}: {text}"
        print(f"traced hook: {text[:300]}", file=sys.stderr)
    except BaseException:
        pass


def cmd_record(args: argparse.Namespace) -> int:
    """The parser's entry for ``traced hook <agent>`` (``--help`` lands here): same as ``run``."""
    record(args.hook_command, {"skill": args.skill, "target": args.target, "idle_timeout": args.idle_timeout,
                               "socket": getattr(args, "socket", None)})
    return 0


NOTES = {
    "codex": "Codex runs hooks only with its hooks feature on in config.toml: `[features] codex_hooks = true` "
             "(newer releases: `hooks = true`); review them with /hooks if it asks",
    "gemini": "Gemini CLI may ask you to trust the hooks of a project settings file",
}


def cmd_install(args: argparse.Namespace) -> int:
    """Merge traced's hook entries into (or, with --uninstall, out of) an agent's hook settings."""
    import sys
    from pathlib import Path

    from traced.errors import EXIT_ERROR, EXIT_USAGE
    from traced.format.layout import valid_name
    from traced.integrations.hooks import install

    agent = args.agent
    if args.settings:
        path = Path(args.settings).expanduser().absolute()
    else:
        path = install.settings_path("project" if args.project else "user", agent=agent)
    extra: list[str] = []
    if args.skill:
        if not valid_name(args.skill):
            print(f"traced: invalid --skill {args.skill!r}", file=sys.stderr)
            return EXIT_USAGE
        extra += ["--skill", args.skill]
    if args.target:
        target = args.target
        extra += ["--target", target if target in ("global", "repo") else str(Path(target).expanduser().absolute())]
    if args.idle_timeout is not None:
        extra += ["--idle-timeout", f"{args.idle_timeout:g}"]
    if args.agent_version:
        version = install.parse_version(args.agent_version)
        if version is None:
            print(f"traced: invalid --agent-version {args.agent_version!r}", file=sys.stderr)
            return EXIT_USAGE
    elif args.uninstall or all(tuple(since) == (0,) for _e, since in install.table(agent).INSTALL_EVENTS):
        version = None  # nothing to gate
    else:
        version = install.agent_version(agent)
    command = install.hook_command(extra=extra, agent=agent, portable=args.project)
    try:
        events = install.install_events(agent, version)
        result = install.install(path, command, uninstall=args.uninstall, dry_run=args.dry_run, agent=agent,
                                 events=events)
    except (ValueError, OSError) as e:
        print(f"traced: {e}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(result.diff)
    if version is not None and not args.uninstall:
        left = len(install.install_events(agent)) - len(events)
        if left:
            print(f"traced: {agent} {'.'.join(map(str, version))} does not know {left} newer hook events; "
                  "they are left out (install again after an upgrade)", file=sys.stderr)
    if not result.changed:
        print(f"traced: {path} is already up to date", file=sys.stderr)
    elif args.dry_run:
        print(f"traced: dry run, {path} not changed", file=sys.stderr)
    else:
        what = "removed traced's hooks from" if args.uninstall else "installed traced's hooks in"
        print(f"traced: {what} {path}", file=sys.stderr)
        if not args.uninstall and agent in NOTES and (agent != "gemini" or args.project):
            print(f"traced: note: {NOTES[agent]}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``hook`` command group to ``sub``."""
    from traced.integrations.hooks.run import AGENTS

    p = sub.add_parser(
        "hook", help="record agent hook events (Claude Code, Codex, Gemini CLI) and install the hooks",
        description="Record agent hook events. `traced hook claude-code|codex|gemini` is what the agent runs; "
                    "`traced hook install <agent>` sets it up.",
    )
    hsub = p.add_subparsers(dest="hook_command", metavar="COMMAND", required=True)

    names = {"claude-code": "Claude Code", "codex": "Codex", "gemini": "Gemini CLI"}
    for agent in AGENTS:
        c = hsub.add_parser(
            agent, help=f"record one {names[agent]} hook event from stdin (prints nothing, exits 0)",
            description=f"Read one {names[agent]} hook JSON object from stdin and record it. Prints nothing "
                        "on stdout and always exits 0; falls back to the spool when the daemon is down.",
        )
        c.add_argument("--skill", help=f"skill name of the sessions (default: $TRACED_HOOK_SKILL or {agent})")
        c.add_argument("--target", help="global, repo, or a directory (default: $TRACED_HOOK_TARGET or global)")
        c.add_argument("--idle-timeout", metavar="SECONDS",
                       help="abort a session idle this long (default: $TRACED_HOOK_IDLE_TIMEOUT or the daemon's)")
        c.set_defaults(func=cmd_record)

    i = hsub.add_parser(
        "install", help="add traced's hooks to an agent's settings (prints a unified diff)",
        description="Merge `traced hook <agent>` entries into the agent's hook settings (Claude Code: "
                    "settings.json, Codex: hooks.json, Gemini CLI: settings.json) for every event traced "
                    "records, leaving everything else as it is. Running it twice changes nothing; "
                    "--uninstall removes only traced's entries.",
    )
    i.add_argument("agent", choices=AGENTS)
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true",
                       help="the user's settings (~/.claude, $CLAUDE_CONFIG_DIR; ~/.codex, $CODEX_HOME; ~/.gemini)")
    where.add_argument("--project", action="store_true",
                       help="the project's settings at the git root (or the current directory), with a command "
                            "found on PATH, so it works for everyone who clones the repo")
    where.add_argument("--settings", metavar="FILE", help="this settings file (e.g. .claude/settings.local.json)")
    i.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    i.add_argument("--uninstall", action="store_true", help="remove traced's entries")
    i.add_argument("--skill", help="record under this skill name (baked into the hook command)")
    i.add_argument("--target", help="global, repo, or a directory (baked into the hook command)")
    i.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="baked into the hook command")
    i.add_argument("--agent-version", metavar="X.Y.Z",
                   help="register only the events this agent version knows (default: asks `<agent> --version`; "
                        "all events when the agent is not on PATH)")
    i.set_defaults(func=cmd_install)
