"""The global options and the top-level parser, shared by the full CLI and the fast paths.

argparse is imported when a parser is built, not at module import: ``traced
event`` and the hooks parse a plain command line without it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    import argparse
    from typing import Any

SOCKET_HELP = "daemon socket (default: $TRACED_SOCKET or $XDG_RUNTIME_DIR/traced/traced.sock)"
ROOT_HELP = "sessions root (repeatable for the reading commands; default: the daemon's roots)"


def base_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The top-level ``traced`` parser (global options) and its sub-parsers action."""
    import argparse

    from traced import __version__

    parser = argparse.ArgumentParser(prog="traced", description="Record and read session traces of AI-agent skills.")
    parser.add_argument("--version", action="version", version=f"traced {__version__}")
    parser.add_argument("--socket", default=None, help=SOCKET_HELP)
    parser.add_argument("--root", action="append", metavar="DIR", default=None, help=ROOT_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, sub


def add_globals(parser: argparse.ArgumentParser) -> None:
    """Accept the global options after the sub-command too (``traced serve --socket P``), in
    every sub-parser that does not define them itself; given before or after, they land alike."""
    import argparse

    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in {id(p): p for p in action.choices.values()}.values():
            have = {opt for a in child._actions for opt in a.option_strings}
            if "--socket" not in have:
                child.add_argument("--socket", default=argparse.SUPPRESS, help=SOCKET_HELP)
            if "--root" not in have:
                child.add_argument("--root", action="append", metavar="DIR", default=argparse.SUPPRESS,
                                   help=ROOT_HELP)
            add_globals(child)


def command_word(argv: list[str]) -> str:
    """The sub-command word of ``argv`` (skipping the global ``--socket X``), or ''."""
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
