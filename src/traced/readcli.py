
"""The reading commands: ``ls``, ``show``, ``replay``, ``tail``, ``usage``, ``prune``.

They work straight from the files, without the daemon. The main CLI calls
``add_parsers(subparsers)`` to build its parser, and runs ``args.func(args)``.

Only ``argparse`` is imported at module top: ``traced event`` (the hot path)
imports this module to build its parser, so everything heavy (the reader,
msgspec, rich, genai-prices) is imported inside the handlers.

Output: rich tables with colour on a TTY; plain aligned text without ANSI when
piped; ``--json`` everywhere for scripts. Times are shown in local time.
Exit codes: 0 ok, 1 session not found, 2 bad argument (including an ambiguous
id prefix).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path
    from typing import TextIO

    from traced.reader import Entry, Session, SessionInfo, SessionRef, Window
    from traced.usage import UsageReport

PROGRESS_THRESHOLD = 10_000
"""Scans over this many sessions show a progress bar (on a TTY only)."""
OUTCOME_CHOICES = ("success", "failure", "aborted", "running")
GROUP_CHOICES = ("skill", "model", "provider", "day")
SHOW_DETAIL_WIDTH = 100

Cell = str | tuple[str, str | None]
"""A table cell: its text, or (text, rich style)."""


class ArgError(Exception):
    """A bad argument found after parsing: exit code 2."""


# =========================================================================== parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        action="append",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="sessions root to read (repeatable; default: the daemon's global root)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return common


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ls``, ``show``, ``replay``, ``tail``, ``usage`` and ``prune`` to ``sub``."""
    common = _common()
    window_help = "today, 7d, 30d, YYYY-MM-DD or A..B (local dates, inclusive)"

    p = sub.add_parser(
        "ls", parents=[common], help="list sessions, newest first",
        description="List sessions, newest first (reads meta.json; no daemon needed).",
    )
    p.add_argument("--since", metavar="WHEN", help=window_help)
    p.add_argument("--skill", metavar="S", help="only this skill")
    p.add_argument("--outcome", choices=OUTCOME_CHOICES, help="only this outcome")
    p.add_argument("--running", action="store_true", help="only sessions in flight")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N sessions")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser(
        "show", parents=[common], help="a session's timeline",
        description="A session's timeline, one line per record, with totals.",
    )
    p.add_argument("session", metavar="ID", help="session id, unambiguous prefix, or directory")
    p.add_argument("--turn", type=int, metavar="N", help="only records of agent turn N")
    p.add_argument("--full", action="store_true", help="whole payloads instead of summaries")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "replay", parents=[common], help="a session as a readable transcript",
        description="A session as a readable transcript, step by step.",
    )
    p.add_argument("session", metavar="ID", help="session id, unambiguous prefix, or directory")
    p.add_argument(
        "--width", type=_positive_int, default=200, metavar="N",
        help="cut long texts to N characters (default 200)",
    )
    p.add_argument("--full", action="store_true", help="never cut texts; spilled blobs are read back whole")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "tail", parents=[common], help="the latest records across sessions",
        description="The last N records across the newest sessions (-f: follow new ones).",
    )
    p.add_argument("-n", type=_positive_int, default=20, metavar="N", help="records (default 20)")
    p.add_argument("--skill", metavar="S", help="only this skill")
    p.add_argument("--session", metavar="ID", help="only this session (id or prefix)")
    p.add_argument("--phase", metavar="P", help="only this phase")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser(
        "usage", parents=[common], help="tokens and cost over a window",
        description="Tokens and cost from llm_call records, grouped. Missing costs are "
        "priced offline with genai-prices; unknown models stay unknown.",
    )
    p.add_argument("--since", metavar="WHEN", default="7d", help=window_help + " (default 7d)")
    p.add_argument("--by", choices=GROUP_CHOICES, default="skill", help="grouping (default skill)")
    p.add_argument("--skill", metavar="S", help="only this skill")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser(
        "prune", parents=[common], help="delete old finished sessions",
        description="Delete finished sessions that ended before the cutoff (never running "
        "ones), then empty date and skill directories.",
    )
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(func=cmd_prune)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one reading command, e.g. ``main(["ls", "--root", "/tmp/r"])`` (for tests and -m)."""
    parser = argparse.ArgumentParser(prog="traced", description="Read traced session traces.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parsers(sub)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


# =========================================================================== plumbing


def _run(
    name: str, body: Callable[[argparse.Namespace, _Out], int], args: argparse.Namespace
) -> int:
    import sys

    from traced.reader import AmbiguousSession, ReadError

    out = _Out(sys.stdout)
    try:
        return body(args, out)
    except (ArgError, AmbiguousSession) as exc:
        sys.stderr.write(f"traced {name}: error: {exc}\n")
        return 2
    except ReadError as exc:
        sys.stderr.write(f"traced {name}: {exc}\n")
        return 1
    except BrokenPipeError:
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        return 130


def _roots(args: argparse.Namespace) -> list[Path]:
    from pathlib import Path

    value = getattr(args, "root", None)
    if not value:
        from traced.paths import default_root

        return [default_root()]
    if isinstance(value, str | Path):
        value = [value]
    return [Path(v).expanduser() for v in value]


def _window(text: str) -> Window:
    from traced.reader import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise ArgError(str(exc)) from None


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


class _Out:
    """Where output goes: rich on a TTY, plain text otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._console: Any = None

    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        return self._console

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.tty:
            self.console().print(text, style=style, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")

    def json_line(self, obj: Any) -> None:
        import msgspec

        self.stream.write(msgspec.json.encode(obj).decode() + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell]], right: str) -> None:
        """Print a table; ``right`` holds one char per column: ``r`` right-aligns it."""
        if self.tty:
            from rich import box
            from rich.table import Table
            from rich.text import Text

            table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
            for head, align in zip(headers, right, strict=True):
                table.add_column(head, justify="right" if align == "r" else "left")
            for row in rows:
                table.add_row(
                    *(Text(c) if isinstance(c, str) else Text(c[0], style=c[1] or "") for c in row)
                )
            self.console().print(table)
            return
        texts = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
        widths = [len(h) for h in headers]
        for row in texts:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def fmt(cells: Sequence[str]) -> str:
            parts = [
                c.rjust(w) if a == "r" else c.ljust(w)
                for c, w, a in zip(cells, widths, right, strict=True)
            ]
            return "  ".join(parts).rstrip()

        self.stream.write(fmt(headers) + "\n")
        for row in texts:
            self.stream.write(fmt(row) + "\n")

    def track(self, items: list[Any], label: str) -> Iterable[Any]:
        """Wrap a long scan in a progress bar on a TTY; pass through otherwise."""
        if not self.tty or len(items) <= PROGRESS_THRESHOLD:
            return items
        from rich.console import Console
        from rich.progress import track

        return track(items, description=label, console=Console(stderr=True), transient=True)


OUTCOME_STYLE = {"success": "green", "failure": "red", "aborted": "yellow", "running": "cyan"}


def _clock(epoch: float | None, ms: bool = False) -> str:
    if epoch is None:
        return "-"
    from datetime import datetime

    moment = datetime.fromtimestamp(epoch)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if ms else text


def _clock_tz(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    from datetime import datetime

    return f"{_clock(epoch)} {datetime.fromtimestamp(epoch).astimezone().strftime('%Z')}"


def _dur_ms(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f}s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _dur_s(seconds: float | None) -> str:
    return "-" if seconds is None else _dur_ms(seconds * 1000)


def _text(value: Any, limit: int | None) -> str:
    """A payload value as one line; spilled blobs shown as ``<blob N bytes>``."""
    from traced.reader import is_blob, one_line

    if is_blob(value):
        return f"<blob {value.get('size', '?')} bytes>"
    return one_line(_unblob(value), limit if limit is not None else 1 << 62)


def _unblob(value: Any) -> Any:
    from traced.reader import is_blob

    if is_blob(value):
        return f"<blob {value.get('size', '?')} bytes>"
    if isinstance(value, dict):
        return {k: _unblob(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unblob(v) for v in value]
    return value


def _compact_json(value: Any) -> str:
    """Exact one-line JSON (strings keep their whitespace, escaped), blobs shown as markers."""
    import msgspec

    return msgspec.json.encode(_unblob(value)).decode()


def _args_text(args: Any, limit: int | None) -> str:
    if isinstance(args, dict) and args:
        return _text(" ".join(f"{k}={_text(v, None)}" for k, v in args.items()), limit)
    return "" if args is None else _text(args, limit)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ok(value: Any) -> tuple[str, str | None]:
    if value is True:
        return ("ok", "green")
    if value is False:
        return ("error", "red")
    return ("", None)


# =========================================================================== describing records


def _tool_name(p: dict[str, Any]) -> str:
    name = _str(p.get("tool"))
    server, kind = _str(p.get("server")), _str(p.get("kind"))
    if server:
        name = f"{server}/{name}"
    if kind and kind != "tool":
        name = f"{name} ({kind})"
    return name


def _llm_text(p: dict[str, Any]) -> str:
    from traced.usage import LlmCall, Pricer, cost_text

    call = LlmCall.from_payload(p)
    price = Pricer(catalog=False).price(call)
    parts = [f"{call.input_tokens:,} in / {call.output_tokens:,} out"]
    if call.cache_read_tokens or call.cache_write_tokens:
        parts.append(f"cache {call.cache_read_tokens:,}r/{call.cache_write_tokens:,}w")
    parts.append(cost_text(price.cost_usd, calls=1, unknown=price.cost_usd is None,
                           local=price.local).replace("unknown", "cost unknown"))
    return ", ".join(parts)


def describe(entry: Entry, limit: int | None) -> tuple[str, float | None, Cell, str]:
    """(name, duration ms, ok cell, detail) of one record for the timeline."""
    p = entry.payload if isinstance(entry.payload, dict) else {}
    phase = entry.phase
    name, detail = "", ""
    dur: float | None = None
    ok: Cell = ""
    if phase == "tool_call":
        name, detail = _tool_name(p), _args_text(p.get("args"), limit)
    elif phase == "tool_result":
        name, ok = _tool_name(p), _ok(p.get("ok"))
        dur = _num(p.get("duration_ms"))
        error = p.get("error")
        detail = _text(error, limit) if error not in (None, "") else _text(
            p.get("result_summary") or "", limit
        )
    elif phase == "llm_call":
        model, provider = _str(p.get("model")), _str(p.get("provider"))
        name = f"{provider}/{model}" if provider else model
        dur, detail = _num(p.get("latency_ms")), _llm_text(p)
    elif phase == "hook":
        name = _str(p.get("event")) + (f":{p['name']}" if isinstance(p.get("name"), str) else "")
        dur, ok = _num(p.get("duration_ms")), _ok(p.get("ok"))
    elif phase == "verify":
        name, ok = _str(p.get("check")), _ok(p.get("ok"))
        detail = _text(p.get("output") or "", limit)
    elif phase == "artifact":
        name = _str(p.get("kind"))
        size = _num(p.get("size_bytes"))
        detail = _text(p.get("path") or "", limit) + (f" ({size:,.0f} bytes)" if size else "")
    elif phase == "note":
        detail = _text(p.get("message") or "", limit)
    elif phase == "user_prompt":
        detail = _text(p.get("prompt") or p.get("prompt_id") or "", limit)
    elif phase == "start":
        bits = []
        if p.get("input") is not None:
            bits.append("input=" + _text(p.get("input"), None))
        if isinstance(p.get("cwd"), str):
            bits.append(f"cwd={p['cwd']}")
        detail = _text(" ".join(bits), limit)
    elif phase == "end":
        outcome = _str(p.get("outcome"))
        ok = (outcome, OUTCOME_STYLE.get(outcome))
        reason = _str(p.get("reason"))
        detail = _text(p.get("summary") or (f"reason={reason}" if reason else ""), limit)
    else:
        detail = _text(entry.payload if entry.payload is not None else "", limit)
    return name, dur, ok, detail


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def pair_tools(entries: Sequence[Entry]) -> dict[int, int]:
    """Pair tool_call and tool_result records (by ``call_id``, else in order per tool).

    Returns ``{pos: paired pos}`` in both directions.
    """
    from collections import deque

    by_id: dict[str, int] = {}
    by_tool: dict[str, deque[int]] = {}
    pairs: dict[int, int] = {}
    for e in entries:
        if e.phase not in ("tool_call", "tool_result"):
            continue
        cid, tool = e.get("call_id"), _str(e.get("tool"))
        if e.phase == "tool_call":
            if isinstance(cid, str) and cid:
                by_id[cid] = e.pos
            else:
                by_tool.setdefault(tool, deque()).append(e.pos)
            continue
        call = by_id.pop(cid, None) if isinstance(cid, str) else None
        if call is None and by_tool.get(tool):
            call = by_tool[tool].popleft()
        if call is not None:
            pairs[call], pairs[e.pos] = e.pos, call
    return pairs


# =========================================================================== ls


def cmd_ls(args: argparse.Namespace) -> int:
    """``traced ls``: one row per session, newest first."""
    return _run("ls", _ls, args)


def _ls(args: argparse.Namespace, out: _Out) -> int:
    from traced.reader import iter_refs, scan

    window = _window(args.since) if args.since else None
    roots = _roots(args)
    refs = list(iter_refs(roots, window, skill=args.skill))
    infos = scan(roots, window, skill=args.skill, refs=out.track(refs, "reading sessions"))
    running = args.running or args.outcome == "running"
    if running:
        infos = [i for i in infos if i.running]
    elif args.outcome:
        infos = [i for i in infos if not i.running and i.outcome == args.outcome]
    if args.limit:
        infos = infos[: args.limit]
    if _json(args):
        for info in infos:
            out.json_line(info.to_json())
        return 0
    rows = [_ls_row(i) for i in infos]
    out.table(
        ["STARTED", "SKILL", "ID", "STEPS", "TURNS", "DURATION", "OUTCOME", "TOOLS", "ERRORS",
         "TOKENS IN/OUT", "COST"],
        rows,
        "lllrrrlrrrr",
    )
    return 0


def _ls_row(info: SessionInfo) -> list[Cell]:
    from traced.usage import cost_text

    outcome = "running" if info.running else (info.outcome or "?")
    usage = info.usage
    tokens = f"{usage.input_tokens:,}/{usage.output_tokens:,}" if usage and usage.llm_calls else "-"
    cost = (
        cost_text(usage.cost_usd, calls=usage.llm_calls, unknown=usage.unknown_cost_calls,
                  local=False).replace(" + unknown", "+?")
        if usage
        else "-"
    )
    return [
        _clock(info.started),
        info.skill,
        info.session_id,
        "-" if info.steps is None else str(info.steps),
        str(info.turns) if info.turns else "-",
        "-" if info.running else _dur_s(info.duration),
        (outcome, OUTCOME_STYLE.get(outcome)),
        str(info.tool_calls),
        (str(info.errors), "red" if info.errors else None),
        tokens,
        cost,
    ]


# =========================================================================== show


def cmd_show(args: argparse.Namespace) -> int:
    """``traced show ID``: the timeline of one session."""
    return _run("show", _show, args)


def _load(args: argparse.Namespace) -> Session:
    from traced.reader import find_session, load_session

    return load_session(find_session(_roots(args), args.session))


def _notes_to_stderr(session: Session) -> None:
    import sys

    for note in session.stats.problems():
        sys.stderr.write(f"traced: {session.info.session_id}: {note}\n")


def _show(args: argparse.Namespace, out: _Out) -> int:
    session = _load(args)
    entries = session.entries
    if args.turn is not None:
        entries = [e for e in entries if e.turn == args.turn]
    if _json(args):
        for e in entries:
            out.json_line(_resolved(e.raw, session.info.ref.path) if args.full else e.raw)
        _notes_to_stderr(session)
        return 0
    info = session.info
    status = "running" if info.running else (info.outcome or "?")
    out.line(
        f"session {info.session_id}  skill {info.skill}  started {_clock_tz(info.started)}  "
        f"{status}" + ("" if info.running else f" after {_dur_s(info.duration)}"),
        style="bold",
    )
    pairs = pair_tools(session.entries)
    by_pos = {e.pos: e for e in session.entries}
    base = next((e.epoch for e in session.entries if e.epoch is not None), None)
    limit = None if args.full else SHOW_DETAIL_WIDTH
    rows: list[list[Cell]] = []
    for e in entries:
        if args.full:
            name, dur, ok, _ = describe(e, None)
            detail = _compact_json(_resolved(e.payload, session.info.ref.path))
        else:
            name, dur, ok, detail = describe(e, limit)
        pair = ""
        if e.phase == "tool_call":
            other = pairs.get(e.pos)
            pair = f"->{by_pos[other].step}" if other else "->?"
            if other is None:
                ok = ("pending", "yellow")
        elif e.phase == "tool_result" and e.pos in pairs:
            call = by_pos[pairs[e.pos]]
            pair = f"<-{call.step}"
            if dur is None and call.epoch is not None and e.epoch is not None:
                dur = max(e.epoch - call.epoch, 0.0) * 1000
        rel = "" if e.epoch is None or base is None else f"+{e.epoch - base:.3f}s"
        rows.append([str(e.step), rel, e.phase, name, _dur_ms(dur), ok, pair, detail])
    out.table(["STEP", "TIME", "PHASE", "NAME", "DUR", "OK", "PAIR", "DETAIL"], rows, "rrllrlll")
    for text in _totals(session, entries):
        out.line(text)
    for note in session.stats.problems():
        out.line(note, style="yellow")
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _cost_of(entries: Iterable[Entry]) -> tuple[int, int, int, str]:
    """(llm calls, input tokens, output tokens, cost text) priced without the catalog."""
    from traced.usage import LlmCall, Pricer, UsageRow

    pricer = Pricer(catalog=False)
    calls = [LlmCall.from_entry(e) for e in entries if e.phase == "llm_call"]
    row = UsageRow("session")
    row.add_calls((c, pricer.price(c)) for c in calls)
    return row.llm_calls, row.input_tokens, row.output_tokens, row.cost_display


def _totals(session: Session, entries: Sequence[Entry]) -> list[str]:
    tool_calls = sum(e.phase == "tool_call" for e in entries)
    errors = sum(e.phase == "tool_result" and e.get("ok") is False for e in entries)
    calls, tin, tout, cost = _cost_of(entries)
    first = (
        f"{_n(len(entries), 'record')}, {_n(tool_calls, 'tool call')} ({_n(errors, 'error')}), "
        f"{_n(calls, 'llm call')}"
    )
    if calls:
        first += f", tokens {tin:,} in / {tout:,} out, cost {cost}"
    info = session.info
    if info.running:
        second = "running (no end yet)"
    else:
        second = f"outcome {info.outcome or '?'} after {_dur_s(info.duration)}"
        if info.reason:
            second += f" (reason {info.reason})"
    return [first, second]


# =========================================================================== replay


def cmd_replay(args: argparse.Namespace) -> int:
    """``traced replay ID``: a readable transcript of one session."""
    return _run("replay", _replay, args)


def _resolved(value: Any, session_dir: Path) -> Any:
    """``value`` with spilled blobs read back (``--full``)."""
    from traced.blobs import resolve

    return resolve(value, session_dir)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width] + "…[truncated]"


def _indent(text: str, prefix: str) -> str:
    pad = " " * len(prefix)
    return prefix + text.replace("\n", "\n" + pad)


def _full_text(session: Session, value: Any) -> str:
    """A value's text for the transcript, with spilled blobs read back when present."""
    from traced.reader import is_blob, one_line, read_blob

    if is_blob(value):
        data = read_blob(session.info.ref.path, value)
        if data is None:
            return f"<blob {value.get('size', '?')} bytes, missing>"
        return data.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return one_line(_unblob(value), 1 << 62)


def _replay(args: argparse.Namespace, out: _Out) -> int:
    session = _load(args)
    info = session.info
    if _json(args):
        out.json_line(
            {
                "session": info.to_json(),
                "records": [e.raw for e in session.entries],
                "malformed_lines": session.stats.malformed,
                "torn": session.stats.torn,
            }
        )
        return 0
    width: int = 1 << 62 if getattr(args, "full", False) else args.width
    models: list[str] = []
    for e in session.entries:
        model = e.get("model") if e.phase == "llm_call" else None
        if isinstance(model, str):
            provider = e.get("provider")
            label = f"{model} ({provider})" if isinstance(provider, str) else model
            if label not in models:
                models.append(label)
    out.line(f"=== Session {info.session_id} ===", style="bold")
    version = f" {info.skill_version}" if info.skill_version else ""
    out.line(f"Skill:    {info.skill}{version}")
    out.line(f"Started:  {_clock_tz(info.started)}")
    if info.cwd:
        out.line(f"Cwd:      {info.cwd}")
    out.line(f"Model(s): {', '.join(models) if models else '-'}")
    if info.input_summary:
        out.line(f"Input:    {_cut(info.input_summary, width)}")
    base = next((e.epoch for e in session.entries if e.epoch is not None), None)
    pairs = pair_tools(session.entries)
    by_pos = {e.pos: e for e in session.entries}
    end: Entry | None = None
    for e in session.entries:
        if e.phase == "end":
            end = e
            continue
        rel = "" if e.epoch is None or base is None else f" +{e.epoch - base:.3f}s"
        turn = f" turn {e.turn}" if e.turn is not None else ""
        head, body = _replay_block(session, e, width, pairs, by_pos)
        out.line("")
        out.line(f"[{e.step}{rel}{turn}] {head}", style="bold")
        for text in body:
            out.line(text)
    out.line("")
    for text in _replay_end(session, end, width):
        out.line(text, style="bold" if text.startswith("===") else None)
    for note in session.stats.problems():
        out.line(note, style="yellow")
    return 0


def _replay_block(
    session: Session, e: Entry, width: int, pairs: dict[int, int], by_pos: dict[int, Entry]
) -> tuple[str, list[str]]:
    p = e.payload if isinstance(e.payload, dict) else {}
    name, dur, ok, _ = describe(e, None)
    ok_text = ok if isinstance(ok, str) else ok[0]
    phase = e.phase

    def field(label: str, value: Any) -> str:
        return _indent(_cut(_full_text(session, value), width), f"  {label}: ")

    if phase == "start":
        body = [field("Input", p["input"])] if p.get("input") is not None else []
        return "[Start]", body
    if phase == "user_prompt":
        return "[User]", [_indent(_cut(_full_text(session, p.get("prompt", "")), width), "  ")]
    if phase == "tool_call":
        other = pairs.get(e.pos)
        link = f" -> [{by_pos[other].step}]" if other else " (no result)"
        return f"> {name}{link}", [field("Input", p.get("args", {}))]
    if phase == "tool_result":
        other = pairs.get(e.pos)
        if dur is None and other is not None:
            call = by_pos[other]
            if call.epoch is not None and e.epoch is not None:
                dur = (e.epoch - call.epoch) * 1000
        extra = ", ".join(x for x in (ok_text, _dur_ms(dur)) if x)
        body = []
        if p.get("result_summary") not in (None, ""):
            body.append(field("Output", p["result_summary"]))
        if p.get("error") not in (None, ""):
            body.append(field("Error", p["error"]))
        return f"< {name}" + (f" ({extra})" if extra else ""), body
    if phase == "llm_call":
        timing = f"{_dur_ms(dur)}, " if dur is not None else ""
        body = [field(k.capitalize(), p[k]) for k in ("response", "content") if k in p]
        return f"[LLM] {name} ({timing}{_llm_text(p)})", body
    if phase == "hook":
        extra = ", ".join(x for x in (ok_text, _dur_ms(dur)) if x)
        return f"[Hook] {name}" + (f" ({extra})" if extra else ""), []
    if phase == "verify":
        body = [field("Output", p["output"])] if p.get("output") not in (None, "") else []
        return f"[Verify] {name}: {ok_text or '?'}", body
    if phase == "artifact":
        _, _, _, detail = describe(e, None)
        return f"[Artifact] {detail}" + (f" ({name})" if name else ""), []
    if phase == "note":
        return "[Note]", [_indent(_cut(_full_text(session, p.get("message", "")), width), "  ")]
    if phase == "decision":
        return "[Decision]", [_indent(_cut(_full_text(session, e.payload), width), "  ")]
    return f"[{phase}]", [_indent(_cut(_full_text(session, e.payload), width), "  ")]


def _replay_end(session: Session, end: Entry | None, width: int) -> list[str]:
    info = session.info
    _calls, tin, tout, cost = _cost_of(session.entries)
    tokens = f"Tokens: {tin:,} in / {tout:,} out"
    if info.running and end is None:
        return ["=== Running (no end yet) ===", f"{tokens} | Cost: {cost}"]
    outcome = info.outcome or (_str(end.get("outcome")) if end else "") or "?"
    lines = [
        f"=== End ({outcome}) ===",
        f"Duration: {_dur_s(info.duration)} | {tokens} | Cost: {cost}",
    ]
    if info.reason:
        lines.append(f"Reason: {info.reason}")
    summary = info.summary or (_str(end.get("summary")) if end else "")
    if summary:
        lines.append(f"Summary: {_cut(summary, width)}")
    return lines


# =========================================================================== tail


def cmd_tail(args: argparse.Namespace) -> int:
    """``traced tail``: the last N records across the newest sessions (``-f`` follows)."""
    if getattr(args, "follow", False):
        from traced.follow import follow

        return follow(args)
    return _run("tail", _tail, args)


def _tail(args: argparse.Namespace, out: _Out) -> int:
    from collections import deque

    from traced.reader import find_session, iter_trace, load_info

    roots = _roots(args)
    n: int = args.n
    if args.session:
        ref = find_session(roots, args.session)
        info = load_info(ref, with_trace=False)
        batches: Iterable[list[SessionInfo]] = [[info] if info is not None else []]
    else:
        batches = _newest_first(roots, args.skill)
    picked: list[tuple[float, int, SessionInfo, Entry]] = []
    order = 0
    for batch in batches:
        contributed = False
        for info in batch:
            ended = info.ended
            if len(picked) >= n and ended is not None and ended < picked[0][0]:
                continue  # finished before the oldest record kept: nothing newer inside
            last: deque[Entry] = deque(maxlen=n)
            for e in iter_trace(info.ref.trace_path):
                if not args.phase or e.phase == args.phase:
                    last.append(e)
            for e in last:
                order += 1
                picked.append((e.epoch or 0.0, order, info, e))
            contributed = contributed or bool(last)
        picked = sorted(picked, key=lambda t: (t[0], t[1]))[-n:]
        if len(picked) >= n and not contributed:
            break
    for _, _, info, e in picked:
        if _json(args):
            out.json_line(e.raw)
            continue
        out.line(tail_line(e, info.skill, info.session_id))
    return 0


def tail_line(e: Entry, skill: str, session_id: str) -> str:
    """One record as ``traced tail`` prints it (``tail -f`` too)."""
    name, _, ok, detail = describe(e, 120)
    ok_text = ok if isinstance(ok, str) else ok[0]
    parts = [_clock(e.epoch, ms=True), skill, session_id[:10], f"#{e.step}", e.phase, name, ok_text, detail]
    return " ".join(x for x in parts if x)


def _newest_first(roots: Sequence[Path], skill: str | None) -> Iterable[list[SessionInfo]]:
    """Sessions one date directory at a time, newest date first (meta only)."""
    from traced.reader import date_dirs, iter_refs, scan

    for day, _holders in date_dirs(roots):
        refs: list[SessionRef] = list(iter_refs(roots, None, skill=skill, since=day, until=day))
        yield scan(roots, None, skill=skill, refs=refs)


# =========================================================================== usage


def cmd_usage(args: argparse.Namespace) -> int:
    """``traced usage``: tokens and cost over a window, grouped."""
    return _run("usage", _usage, args)


def _usage(args: argparse.Namespace, out: _Out) -> int:
    from traced.reader import iter_refs, scan
    from traced.usage import Pricer, aggregate, collect

    window = _window(args.since)
    roots = _roots(args)
    refs = list(iter_refs(roots, window, skill=args.skill))
    infos = scan(roots, window, skill=args.skill, refs=out.track(refs, "reading sessions"))
    report = aggregate(collect(roots, window, infos=infos), args.by, pricer=Pricer(),
                       window=window)
    if _json(args):
        out.json_line(report.to_json())
        return 0
    render_usage(report, out)
    return 0


def render_usage(report: UsageReport, out: _Out) -> None:
    """Print a usage report as a table with a total row."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.1f}%"

    def cost(value: float | None) -> str:
        from traced.usage import money

        return "-" if value is None else money(value)

    rows: list[list[Cell]] = []
    for row in [*report.rows, report.total]:
        rows.append([
            "TOTAL" if row is report.total else row.key,
            str(row.sessions), str(row.success), str(row.failure), str(row.aborted),
            str(row.running),
            f"{row.input_tokens:,}", f"{row.output_tokens:,}",
            f"{row.cache_read_tokens:,}", f"{row.cache_write_tokens:,}",
            pct(row.cache_hit_rate), row.cost_display, str(row.unknown_cost_sessions),
            cost(row.cost_per_success),
            "-" if row.tokens_per_s is None else f"{row.tokens_per_s:.1f}",
        ])
    window = report.window
    span = "all time" if window is None else f"{window.first}..{window.last}"
    out.line(f"usage {span} by {report.by}", style="bold")
    out.table(
        [report.by.upper(), "SESSIONS", "OK", "FAIL", "ABORT", "RUN", "IN", "OUT", "CACHE R",
         "CACHE W", "HIT", "COST", "UNKNOWN", "$/OK", "TOK/S"],
        rows,
        "lrrrrrrrrrrrrrr",
    )
    if report.total.price_source:
        out.line(f"prices: {report.total.price_source}")


# =========================================================================== prune


def cmd_prune(args: argparse.Namespace) -> int:
    """``traced prune --older-than 30d``: delete old finished sessions."""
    return _run("prune", _prune, args)


def _parse_age(text: str) -> float:
    import re

    match = re.fullmatch(r"\s*(\d{1,6})\s*d\s*", text)
    if not match:
        raise ArgError(f"bad --older-than {text!r}: use a number of days, e.g. 30d")
    return int(match.group(1)) * 86400.0


def _prune(args: argparse.Namespace, out: _Out) -> int:
    import os
    import shutil
    import time
    from datetime import UTC, datetime

    from traced.reader import dir_size, iter_refs, load_info

    cutoff = time.time() - _parse_age(args.older_than)
    until = datetime.fromtimestamp(cutoff, UTC).date().isoformat()
    roots = _roots(args)
    removed: list[dict[str, Any]] = []
    touched: set[tuple[Path, str]] = set()
    refs = list(iter_refs(roots, None, until=until))
    for ref in out.track(refs, "scanning sessions"):
        touched.add((ref.root, ref.date))
        info = load_info(ref)
        if info is None or info.running:
            continue
        finished = info.ended if info.ended is not None else info.started
        if finished is None or finished >= cutoff:
            continue
        size = dir_size(ref.path)
        if not args.dry_run:
            shutil.rmtree(ref.path)
        removed.append({
            "session_id": info.session_id, "skill": ref.skill, "date": ref.date,
            "path": str(ref.path), "bytes": size,
        })
    dirs_removed: list[str] = []
    if not args.dry_run:
        for root, day in sorted(touched):
            day_dir = root / day
            try:
                skill_dirs = sorted(
                    p for p in day_dir.iterdir() if p.is_dir() and not p.is_symlink()
                )
            except OSError:
                continue
            for path in [*skill_dirs, day_dir]:
                try:
                    os.rmdir(path)  # only succeeds when empty
                    dirs_removed.append(str(path))
                except OSError:
                    pass
    freed = sum(r["bytes"] for r in removed)
    if _json(args):
        out.json_line({
            "dry_run": bool(args.dry_run), "removed": removed, "sessions": len(removed),
            "bytes_freed": freed, "dirs_removed": dirs_removed,
        })
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        out.line(f"{verb} {r['date']}/{r['skill']}/{r['session_id']}  {_bytes(r['bytes'])}")
    freed_verb = "would free" if args.dry_run else "freed"
    out.line(
        f"{verb} {len(removed)} sessions, {freed_verb} {_bytes(freed)} ({freed:,} bytes)",
        style="bold",
    )
    return 0


def _bytes(n: int) -> str:
    """``512 B``, ``12.3 KiB``, ``4.0 MiB``."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


if __name__ == "__main__":
    raise SystemExit(main())
