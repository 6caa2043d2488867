"""``traced import claude-code|codex [PATH…]``: past sessions from the agents' own transcripts.

The work is ``integrations.importer``'s; this module parses the command line and shows
progress: a rich progress bar on a terminal, otherwise a line on stderr every
``PROGRESS_EVERY`` sessions. The totals go to stdout (one JSON object with ``--json``).
Exit code 0, or 1 when a transcript could not be imported (the others still are).
See docs/import.md.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

PROGRESS_EVERY = 100


def cmd_import(args: argparse.Namespace) -> int:
    """Import the sessions of ``args.agent``; print the totals."""
    import json
    from contextlib import contextmanager

    from traced.client.blocking import Client
    from traced.errors import EXIT_ERROR, EXIT_USAGE, CliError
    from traced.format.layout import valid_name
    from traced.integrations import importer
    from traced.integrations.claude_code.transcript import CLIENT_ID
    from traced.read.sessions import reading_roots

    if args.skill and not valid_name(args.skill):
        raise CliError(f"invalid --skill {args.skill!r}", EXIT_USAGE)
    target = args.target
    if target not in ("global", "repo"):
        import os

        target = os.path.abspath(os.path.expanduser(target))

    @contextmanager
    def progress() -> Iterator[Callable[[int, int], None]]:
        if not sys.stderr.isatty() or args.json:
            def plain(done: int, total: int) -> None:
                if done % PROGRESS_EVERY == 0 or done == total:
                    print(f"traced import: {done}/{total} sessions", file=sys.stderr, flush=True)

            yield plain
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"importing {args.agent} sessions", total=None)

            def rich(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield rich

    def connect() -> Client:
        return Client(args.socket, name="traced-import", client_id=CLIENT_ID)

    with progress() as report:
        totals = importer.run_import(args.agent, args.paths, connect, reading_roots(getattr(args, "root", None)),
                                     skill=args.skill, target=target, progress=report)
    spooled = totals.spooled
    if args.json:
        out: dict[str, Any] = totals.to_json()
        print(json.dumps(out))
    else:
        print(f"{totals.found} sessions found: {totals.new} new, {totals.updated} updated, "
              f"{totals.unchanged} unchanged, {totals.failed} failed; "
              f"{totals.records} records ({totals.llm_calls} LLM calls) sent"
              + (" (spooled: the daemon is away)" if spooled else ""))
        for error in totals.errors[:20]:
            print(f"traced import: {error}", file=sys.stderr)
    return EXIT_ERROR if totals.failed else 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``import`` command to ``sub``."""
    from traced.integrations.importer import AGENTS

    p = sub.add_parser(
        "import", help="import past sessions from Claude Code or Codex transcripts",
        description="Turn the agent's own transcripts into traced sessions (prompts, tool calls and results, "
                    "LLM calls with usage, start and end times), through the daemon. Running it again, or "
                    "after the hooks recorded a session, adds nothing twice. Default PATH: every transcript "
                    "in $CLAUDE_CONFIG_DIR/projects (~/.claude/projects) or $CODEX_HOME/sessions (~/.codex/sessions).",
    )
    p.add_argument("agent", choices=AGENTS)
    p.add_argument("paths", nargs="*", metavar="PATH", help="transcript files or directories to search")
    p.add_argument("--skill", help="record under this skill (default: the agent's, as its hook does)")
    p.add_argument("--target", default="global", help="global, repo, or a directory (default: global)")
    p.add_argument("--json", action="store_true", help="print the totals as one JSON object")
    p.set_defaults(func=cmd_import)
