
"""The reading commands: ``ls``, ``show``, ``replay``, ``tail``, ``usage``, ``prune``.

They work straight from the files, without the daemon. The main CLI calls
``add_parsers(subparsers)`` to build its parser, and runs ``args.func(args)``.

Only ``argparse`` is imported at module top: everything heavy (the reader,
msgspec, rich, genai-prices) is imported inside the handlers. Output goes
through ``cli.render``: plain text when piped, rich on a TTY, ``--json``
everywhere. Exit codes follow ``errors.exit_code``: 0 ok, 1 session not found,
2 bad argument (including an ambiguous id prefix).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from traced.cli.render import (
    KEEP,
    OUTCOME_STYLE,
    Cell,
    Fit,
    Out,
    as_str,
    clock,
    clock_tz,
    compact_count,
    compact_json,
    describe,
    dur_ms,
    dur_s,
    human_bytes,
    llm_text,
    report,
    tail_line,
    text_cell,
)
from traced.errors import EXIT_USAGE, CliError, ReadError
from traced.format.pairing import pair_positions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from traced.read.sessions import Session, SessionInfo, SessionRef
    from traced.read.trace import Entry
    from traced.read.usage import ToolReport, UsageReport
    from traced.read.window import Window

OUTCOME_CHOICES = ("success", "failure", "aborted", "running")
GROUP_CHOICES = ("skill", "model", "provider", "day", "tool", "server")
SHOW_DETAIL_WIDTH = 100


def _arg_error(message: str) -> CliError:
    """A bad argument found after parsing (exit code 2)."""
    return CliError(message, EXIT_USAGE)


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
    p.add_argument("--html", action="store_true",
                   help="one self-contained HTML page with the waterfall (no network access), to stdout")
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
        description="Tokens and cost from llm_call records, grouped; or, with --by tool|server, "
        "calls, errors and p50/p95 durations of tools and MCP servers. Missing costs are priced "
        "offline with genai-prices; unknown models stay unknown, and a figure that leaves some "
        "cost out is marked +? (a lower bound).",
    )
    p.add_argument("--since", metavar="WHEN", default="7d",
                   help=window_help + "; selects calls by their own time (default 7d)")
    p.add_argument("--by", choices=GROUP_CHOICES, default="skill",
                   help="grouping (default skill); tool and server: calls, errors and durations "
                   "of tools and MCP servers")
    p.add_argument("--skill", metavar="S", help="only this skill")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser(
        "prune", parents=[common], help="delete old sessions (ended, or abandoned unfinished)",
        description="Delete sessions older than AGE, then the date and skill directories left empty. "
        "An ended session goes when it ended before the cutoff (its ended_at). An unfinished one "
        "(no ended_at; without meta.json, no end record) is abandoned, and goes, when nothing in its "
        "directory was written since the cutoff (newest mtime of trace.jsonl, meta.json, blobs, "
        "artifacts), nor in the last day, and the running daemon does not hold it (it is asked; with "
        "no daemon listening nothing is held; a daemon that does not answer, or a spool still waiting "
        "for a stopped daemon, keeps every unfinished session). Never follows a symlink; each "
        "session is renamed aside and checked again before it is deleted. Exit 1 when a removal "
        "failed. See docs/reading.md.",
    )
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 2w, 12h")
    p.add_argument("--dry-run", action="store_true",
                   help="only list what would be removed (paths, exact sizes), remove nothing")
    p.set_defaults(func=cmd_prune)


# =========================================================================== plumbing


def _run(
    name: str, body: Callable[[argparse.Namespace, Out], int], args: argparse.Namespace
) -> int:
    import sys

    out = Out(sys.stdout)
    try:
        return body(args, out)
    except (CliError, ReadError) as exc:  # named after the command; anything else goes to main
        return report(name, exc)


def _roots(args: argparse.Namespace) -> list[Path]:
    from traced.read.sessions import reading_roots

    value = getattr(args, "root", None)
    return reading_roots([value] if isinstance(value, str) else value)


def _window(text: str) -> Window:
    from traced.read.window import parse_window

    try:
        return parse_window(text)
    except ValueError as exc:
        raise _arg_error(str(exc)) from None


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


# =========================================================================== ls


def cmd_ls(args: argparse.Namespace) -> int:
    """``traced ls``: one row per session, newest first."""
    return _run("ls", _ls, args)


def _ls(args: argparse.Namespace, out: Out) -> int:
    from traced.read.sessions import iter_refs, scan

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
    from traced.read.sessions import all_session_ids, unique_prefixes
    from traced.read.usage import Pricer

    # the directory's name: what show/replay look up (a record may claim another session_id)
    # the prefixes must be unique among every session; the refs walked above are all of them
    # unless a window or a skill narrowed the walk (then the names are listed once more)
    universe = [r.session_id for r in refs] if window is None and args.skill is None else all_session_ids(roots)
    short = unique_prefixes([i.ref.session_id for i in infos], universe)
    pricer = Pricer()
    rows = [_ls_row(i, short.get(i.ref.session_id, i.ref.session_id), pricer) for i in infos]
    out.table(
        ["STARTED", "SKILL", "ID", "STEPS", "TURNS", "DURATION", "OUTCOME", "TOOLS", "ERRORS",
         "TOKENS IN/OUT", "COST"],
        rows,
        "lllrrrlrrrr",
        fit=LS_FIT,
    )
    return 0


def _short_clock(text: str) -> str:
    """``2026-11-21 10:00:00`` -> ``11-21 10:00``."""
    return text[5:16] if len(text) == 19 else text


def _tokens_short(text: str) -> str:
    a, sep, b = text.partition("/")
    return f"{compact_count(a)}/{compact_count(b)}" if sep else text


LS_FIT = (
    Fit(short=_short_clock, short_rank=1), Fit(shrink=True), KEEP, Fit(drop=4), Fit(drop=2),
    Fit(drop=6), KEEP, Fit(drop=3), Fit(drop=7), Fit(drop=5, short=_tokens_short, short_rank=1),
    KEEP,
)
"""How ``ls`` fits a narrow terminal: dates lose year and seconds, then TURNS, TOOLS,
STEPS, TOKENS, DURATION and ERRORS go, in that order; the skill is cut last.
ID (a unique prefix), OUTCOME and COST always stay."""


def _ls_row(info: SessionInfo, short_id: str, pricer: Any) -> list[Cell]:
    from traced.read.usage import session_cost

    outcome = "running" if info.running else (info.outcome or "?")
    usage = info.usage
    tokens = f"{usage.input_tokens:,}/{usage.output_tokens:,}" if usage and usage.llm_calls else "-"
    return [
        clock(info.started),
        info.skill,
        short_id,
        "-" if info.steps is None else str(info.steps),
        str(info.turns) if info.turns else "-",
        "-" if info.running else dur_s(info.duration),
        (outcome, OUTCOME_STYLE.get(outcome)),
        str(info.tool_calls),
        (str(info.errors), "red" if info.errors else None),
        tokens,
        session_cost(info, pricer).replace(" + unknown", "+?"),
    ]


# =========================================================================== show


def cmd_show(args: argparse.Namespace) -> int:
    """``traced show ID``: the timeline of one session."""
    return _run("show", _show, args)


def _load(args: argparse.Namespace) -> Session:
    from traced.read.sessions import find_session, load_session

    return load_session(find_session(_roots(args), args.session))


def _notes_to_stderr(session: Session) -> None:
    import sys

    for note in session.stats.problems():
        sys.stderr.write(f"traced: {session.info.session_id}: {note}\n")


def _show(args: argparse.Namespace, out: Out) -> int:
    session = _load(args)
    if getattr(args, "html", False):
        import sys

        from traced.ui.export import render

        sys.stdout.write(render(session))
        _notes_to_stderr(session)
        return 0
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
        f"session {info.session_id}  skill {info.skill}  started {clock_tz(info.started)}  "
        f"{status}" + ("" if info.running else f" after {dur_s(info.duration)}"),
        style="bold",
    )
    pairs = pair_positions((e.pos, e.phase, e.payload) for e in session.entries)
    by_pos = {e.pos: e for e in session.entries}
    base = next((e.epoch for e in session.entries if e.epoch is not None), None)
    limit = None if args.full else SHOW_DETAIL_WIDTH
    rows: list[list[Cell]] = []
    for e in entries:
        if args.full:
            name, dur, ok, _ = describe(e, None)
            detail = compact_json(_resolved(e.payload, session.info.ref.path))
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
        rows.append([str(e.step), rel, e.phase, name, dur_ms(dur), ok, pair, detail])
    out.table(["STEP", "TIME", "PHASE", "NAME", "DUR", "OK", "PAIR", "DETAIL"], rows, "rrllrlll")
    for text in _totals(session, entries):
        out.line(text)
    for note in session.stats.problems():
        out.line(note, style="yellow")
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _cost_of(entries: Iterable[Entry]) -> tuple[int, int, int, str]:
    """(llm calls, input tokens, output tokens, cost text), priced as ``usage`` prices them."""
    from traced.read.usage import LlmCall, Pricer, UsageRow

    pricer = Pricer()
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
        second = f"outcome {info.outcome or '?'} after {dur_s(info.duration)}"
        if info.reason:
            second += f" (reason {info.reason})"
    return [first, second]


# =========================================================================== replay


def cmd_replay(args: argparse.Namespace) -> int:
    """``traced replay ID``: a readable transcript of one session."""
    return _run("replay", _replay, args)


def _resolved(value: Any, session_dir: Path) -> Any:
    """``value`` with spilled blobs read back (``--full``)."""
    from traced.format.layout import resolve_blobs

    return resolve_blobs(value, session_dir)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width] + "…[truncated]"


def _indent(text: str, prefix: str) -> str:
    pad = " " * len(prefix)
    return prefix + text.replace("\n", "\n" + pad)


def _full_text(session: Session, value: Any) -> str:
    """A value's text for the transcript, with spilled blobs read back when present."""
    from traced.format.layout import blob_digest, read_blob

    if blob_digest(value) is not None:
        data = read_blob(session.info.ref.path, value)
        if data is None:
            return f"<blob {value.get('size', '?')} bytes, missing>"
        return data.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return text_cell(value, None)


def _replay(args: argparse.Namespace, out: Out) -> int:
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
    out.line(f"Started:  {clock_tz(info.started)}")
    if info.cwd:
        out.line(f"Cwd:      {info.cwd}")
    out.line(f"Model(s): {', '.join(models) if models else '-'}")
    if info.input_summary:
        out.line(f"Input:    {_cut(info.input_summary, width)}")
    base = next((e.epoch for e in session.entries if e.epoch is not None), None)
    pairs = pair_positions((e.pos, e.phase, e.payload) for e in session.entries)
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
        extra = ", ".join(x for x in (ok_text, dur_ms(dur)) if x)
        body = []
        if p.get("result_summary") not in (None, ""):
            body.append(field("Output", p["result_summary"]))
        if p.get("error") not in (None, ""):
            body.append(field("Error", p["error"]))
        return f"< {name}" + (f" ({extra})" if extra else ""), body
    if phase == "llm_call":
        timing = f"{dur_ms(dur)}, " if dur is not None else ""
        body = [field(k.capitalize(), p[k]) for k in ("response", "content") if k in p]
        return f"[LLM] {name} ({timing}{llm_text(p)})", body
    if phase == "hook":
        extra = ", ".join(x for x in (ok_text, dur_ms(dur)) if x)
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
    outcome = info.outcome or (as_str(end.get("outcome")) if end else "") or "?"
    lines = [
        f"=== End ({outcome}) ===",
        f"Duration: {dur_s(info.duration)} | {tokens} | Cost: {cost}",
    ]
    if info.reason:
        lines.append(f"Reason: {info.reason}")
    summary = info.summary or (as_str(end.get("summary")) if end else "")
    if summary:
        lines.append(f"Summary: {_cut(summary, width)}")
    return lines


# =========================================================================== tail


def cmd_tail(args: argparse.Namespace) -> int:
    """``traced tail``: the last N records across the newest sessions (``-f`` follows)."""
    if getattr(args, "follow", False):
        from traced.cli.tail import follow

        return follow(args)
    return _run("tail", _tail, args)


def _tail(args: argparse.Namespace, out: Out) -> int:
    from collections import deque

    from traced.read.sessions import find_session, load_info
    from traced.read.trace import iter_trace

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


def _newest_first(roots: Sequence[Path], skill: str | None) -> Iterable[list[SessionInfo]]:
    """Sessions one date directory at a time, newest date first (meta only)."""
    from traced.read.sessions import date_dirs, iter_refs, scan

    for day, _holders in date_dirs(roots):
        refs: list[SessionRef] = list(iter_refs(roots, None, skill=skill, since=day, until=day))
        yield scan(roots, None, skill=skill, refs=refs)


# =========================================================================== usage


def cmd_usage(args: argparse.Namespace) -> int:
    """``traced usage``: tokens and cost over a window, grouped."""
    return _run("usage", _usage, args)


def _usage(args: argparse.Namespace, out: Out) -> int:
    from traced.read.usage import TOOL_GROUPINGS, Pricer, aggregate, aggregate_tools, candidates, collect

    window = _window(args.since)
    roots = _roots(args)
    infos = candidates(roots, window, skill=args.skill)
    tools = args.by in TOOL_GROUPINGS
    sessions = collect(roots, window, infos=out.track(infos, "reading sessions"), tools=tools)
    report: UsageReport | ToolReport
    if tools:
        report = aggregate_tools(sessions, args.by, window=window)
    else:
        report = aggregate(sessions, args.by, pricer=Pricer(), window=window)
    if _json(args):
        out.json_line(report.to_json())
        return 0
    if tools:
        render_tools(report, out)  # type: ignore[arg-type]
    else:
        render_usage(report, out)  # type: ignore[arg-type]
    return 0


def _span(window: Window | None) -> str:
    return "all time" if window is None else f"{window.first}..{window.last}"


def _partial(text: str) -> str:
    return text.replace(" + unknown", "+?")


USAGE_FIT = (
    Fit(shrink=True), Fit(drop=11), Fit(drop=10), Fit(drop=8), Fit(drop=2), Fit(drop=1),
    Fit(short=compact_count, short_rank=5), Fit(short=compact_count, short_rank=5),
    Fit(drop=7, short=compact_count, short_rank=5), Fit(drop=6, short=compact_count, short_rank=5),
    Fit(drop=9), Fit(short=_partial, short_rank=5), Fit(drop=4), KEEP, Fit(drop=3),
)
"""How ``usage`` fits a narrow terminal: RUN, ABORT, TOK/S and UNKNOWN go first, then token
counts are compacted (12.3k, 4.5M) and ``+ unknown`` becomes ``+?``, then CACHE W, CACHE R,
FAIL, HIT, OK and SESSIONS go; the key is cut last. COST and $/OK always stay."""


def render_usage(report: UsageReport, out: Out) -> None:
    """Print a usage report as a table with a total row."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.1f}%"

    rows: list[list[Cell]] = []
    for row in [*report.rows, report.total]:
        rows.append([
            "TOTAL" if row is report.total else row.key,
            str(row.sessions), str(row.success), str(row.failure), str(row.aborted),
            str(row.running),
            f"{row.input_tokens:,}", f"{row.output_tokens:,}",
            f"{row.cache_read_tokens:,}", f"{row.cache_write_tokens:,}",
            pct(row.cache_hit_rate), row.cost_display, str(row.unknown_cost_sessions),
            row.cost_per_success_display,
            "-" if row.tokens_per_s is None else f"{row.tokens_per_s:.1f}",
        ])
    out.line(f"usage {_span(report.window)} by {report.by}", style="bold")
    out.table(
        [report.by.upper(), "SESSIONS", "OK", "FAIL", "ABORT", "RUN", "IN", "OUT", "CACHE R",
         "CACHE W", "HIT", "COST", "UNKNOWN", "$/OK", "TOK/S"],
        rows,
        "lrrrrrrrrrrrrrr",
        fit=USAGE_FIT,
    )
    if report.total.price_source:
        out.line(f"prices: {report.total.price_source}")
    if report.total.unknown_cost_calls and report.total.priced_calls:
        out.line("+ unknown, +?: cost partly unknown; the figure is a lower bound")


TOOLS_FIT = (
    Fit(shrink=True), Fit(drop=1), KEEP, KEEP, Fit(drop=4), Fit(drop=2), Fit(drop=3), KEEP, KEEP,
)


def render_tools(report: ToolReport, out: Out) -> None:
    """Print a tool/server attribution table (durations as ``dur_ms`` text) with a total row."""
    rows: list[list[Cell]] = []
    for row in [*report.rows, report.total]:
        rate = row.error_rate
        rows.append([
            "TOTAL" if row is report.total else row.key,
            str(row.sessions), str(row.calls),
            (str(row.errors), "red" if row.errors else None),
            "-" if rate is None else f"{rate * 100:.1f}%",
            str(row.unanswered),
            dur_ms(row.total_ms) if row.durations else "-",
            dur_ms(row.quantile(0.5)) or "-", dur_ms(row.quantile(0.95)) or "-",
        ])
    out.line(f"tools {_span(report.window)} by {report.by}", style="bold")
    out.table(
        [report.by.upper(), "SESSIONS", "CALLS", "ERRORS", "ERR%", "NO RESULT", "TOTAL", "P50",
         "P95"],
        rows,
        "lrrrrrrrr",
        fit=TOOLS_FIT,
    )


# =========================================================================== prune


def cmd_prune(args: argparse.Namespace) -> int:
    """``traced prune --older-than 30d``: delete old finished sessions."""
    return _run("prune", _prune, args)


def _parse_age(text: str) -> float:
    from traced.read.prune import parse_age

    try:
        return parse_age(text)
    except ValueError as exc:
        raise _arg_error(f"bad --older-than {text!r}: use a number of hours, days or weeks, e.g. 30d") from exc


def _held(args: argparse.Namespace) -> tuple[Callable[[str, str], bool] | None, str]:
    """What the running daemon holds, as ``held(id, path)``; None when a daemon runs but did not say.

    No daemon listening: nothing is held. Returns the check and a one-line note on where it came from.
    """
    import os
    import socket as socket_mod

    from traced.client.blocking import Client
    from traced.errors import DaemonUnavailable

    client = Client(getattr(args, "socket", None), name="traced-prune", spool=False, spool_after=0.0,
                    timeout=10.0)
    try:
        with client:
            info = client.status(held=True)
    except DaemonUnavailable:
        probe = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(client.socket_path))
        except OSError:
            from traced.format.spool import segments
            from traced.locations import spool_dir

            waiting = len(segments(spool_dir()))
            if waiting:  # events of unfinished sessions may wait there, their files untouched meanwhile
                return None, (f"no daemon at {client.socket_path}, and {waiting} spool segments wait to be "
                              "written into sessions when it starts")
            return (lambda _sid, _path: False), f"no daemon at {client.socket_path}: no session is held open"
        finally:
            probe.close()
        return None, f"the daemon at {client.socket_path} did not answer"
    ids, dirs = info.get("held_sessions"), info.get("held_dirs")
    if not isinstance(ids, list) or not isinstance(dirs, list):
        return None, f"the daemon at {client.socket_path} (traced {info.get('version')}) does not list what it holds"
    held = {str(i) for i in ids} | {os.path.realpath(str(d)) for d in dirs}
    return (lambda sid, path: sid in held or os.path.realpath(path) in held), (
        f"the daemon holds {len(ids)} sessions; they are kept")


def _prune(args: argparse.Namespace, out: Out) -> int:
    import time

    from traced.read.prune import iso, plan, remove

    age = _parse_age(args.older_than)
    now = time.time()
    held, held_note = _held(args)
    check = held or (lambda _sid, _path: False)
    chosen = plan(_roots(args), age, now=now, held=check, abandoned=held is not None)
    if held is None:
        held_note += ", so every unfinished session is kept"
    if args.dry_run:
        items, kept, dirs_removed, errors = chosen.candidates, [], [], []
    else:
        done = remove(out.track(chosen.candidates, "removing sessions"), age, now=now, held=check)
        items, kept, dirs_removed, errors = done.removed, done.kept, done.dirs_removed, done.errors
    freed = sum(c.bytes for c in items)
    if _json(args):
        out.json_line({
            "dry_run": bool(args.dry_run), "cutoff": iso(chosen.cutoff),
            "removed": [c.to_json() for c in items], "sessions": len(items), "bytes_freed": freed,
            "dirs_removed": dirs_removed, "held": chosen.held, "kept_changed": [c.path for c in kept],
            "kept_foreign": chosen.foreign,
            "abandoned_rule": held is not None, "note": held_note, "errors": errors,
        })
        return 1 if errors else 0
    verb = "would remove" if args.dry_run else "removed"
    for c in items:
        out.line(f"{verb} {c.path}  {human_bytes(c.bytes)} ({c.bytes:,} bytes)  "
                 f"{c.reason} {iso(c.at)}")
    for c in kept:
        out.line(f"kept {c.path}: written to or opened while pruning")
    for path in chosen.foreign:
        out.line(f"kept {path}: it holds files that are not a session's")
    if held is None:
        out.line(f"note: {held_note}")
    elif chosen.held:
        out.line(f"kept {chosen.held} old sessions the daemon holds")
    for err in errors:
        out.line(f"error: {err}", style="red")
    freed_verb = "would free" if args.dry_run else "freed"
    out.line(
        f"{verb} {len(items)} sessions, {freed_verb} {human_bytes(freed)} ({freed:,} bytes)",
        style="bold",
    )
    return 1 if errors else 0
