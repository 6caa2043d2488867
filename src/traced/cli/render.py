"""Rendering for people, one home: tables, clocks, durations, byte sizes, record lines, the status view.

Plain aligned text without ANSI when piped; rich tables with colour on a TTY
(rich is imported only then). Times are shown in local time. Nothing here
reads files or talks to the daemon.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from traced.errors import EXIT_USAGE, exit_code
from traced.format import layout
from traced.format.records import summarize

if TYPE_CHECKING:
    from traced.read.trace import Entry

def report(command: str, exc: BaseException, stream: TextIO | None = None) -> int:
    """Print ``exc`` as one line (``traced <command>: [error: ]<message>``); return its exit code."""
    import sys

    code = exit_code(exc)
    prefix = f"traced {command}: " if command else "traced: "
    text = " ".join(str(exc).split()) or type(exc).__name__
    (stream or sys.stderr).write(f"{prefix}{'error: ' if code == EXIT_USAGE and command else ''}{text}\n")
    return code


PROGRESS_THRESHOLD = 10_000
"""Scans over this many sessions show a progress bar (on a TTY only)."""

Cell = str | tuple[str, str | None]
"""A table cell: its text, or (text, rich style)."""

def _escapes(keep: str) -> dict[int, str]:
    """A str.translate table writing C0/C1 controls, DEL and the bidi overrides as escapes."""
    codes = [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A),
             0x2028, 0x2029]
    return {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in codes if chr(c) not in keep}


LINE_ESCAPES: Final = _escapes("\n\t")
CELL_ESCAPES: Final = _escapes("")


def visible(text: str, *, cell: bool = False) -> str:
    """``text`` safe for a terminal: a control character (ESC, BEL, NUL, CR, C1), DEL or a bidi
    override from a trace is shown as ``\\x1b``/``\\u202e``, never sent to the terminal, where it
    could retitle the window, move the cursor or hide lines. A line keeps its newlines and tabs;
    a table cell (``cell``) keeps neither."""
    return text.translate(CELL_ESCAPES if cell else LINE_ESCAPES)


def cell_style(cell: Cell) -> str | None:
    """A cell's rich style, None for plain text."""
    return None if isinstance(cell, str) else cell[1]


GAP = 2
"""Spaces between table columns (rich's SIMPLE_HEAD box pads the same)."""


def terminal_width(stream: TextIO) -> int | None:
    """``$COLUMNS`` when set, else the terminal's width on a TTY, else None (no limit)."""
    import os

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if stream.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return None


class Fit:
    """How one column gives way when a table is too wide.

    ``short``: rank at which its cells switch to ``short(text)``; ``drop``: rank at
    which it is dropped (0: never). Lower ranks go first. ``shrink``: the one column
    cut with ``…`` when nothing else is left to give.
    """

    __slots__ = ("drop", "short", "short_rank", "shrink")

    def __init__(self, drop: int = 0, short: Any = None, short_rank: int = 0,
                 shrink: bool = False) -> None:
        self.drop = drop
        self.short = short
        self.short_rank = short_rank
        self.shrink = shrink


KEEP = Fit()
"""A column that never gives way."""

MIN_SHRUNK = 6
"""Narrowest a shrunk column gets (characters, ``…`` included)."""


def fit_columns(
    headers: Sequence[str], texts: list[list[str]], fit: Sequence[Fit], width: int
) -> tuple[list[int], list[list[str]]]:
    """The columns kept (indices) and the cells, shortened, so that the table fits ``width``."""
    keep = list(range(len(headers)))
    texts = [list(row) for row in texts]

    def col_width(i: int) -> int:
        return max([len(headers[i]), *(len(row[i]) for row in texts)])

    def total() -> int:
        return sum(col_width(i) for i in keep) + GAP * (len(keep) - 1)

    moves = sorted(
        [(f.short_rank, 0, i) for i, f in enumerate(fit) if f.short is not None and f.short_rank]
        + [(f.drop, 1, i) for i, f in enumerate(fit) if f.drop]
    )
    for _rank, kind, i in moves:
        if total() <= width:
            break
        if kind == 0:
            for row in texts:
                row[i] = fit[i].short(row[i])
        elif i in keep:
            keep.remove(i)
    # what went in a rank that did not need all of its room comes back, most important first
    for _rank, kind, i in reversed(moves):
        if kind == 1 and i not in keep:
            keep.append(i)
            keep.sort()
            if total() > width:
                keep.remove(i)
    over = total() - width
    shrink = [i for i in keep if fit[i].shrink]
    if over > 0 and shrink:
        i = shrink[0]
        limit = max(col_width(i) - over, MIN_SHRUNK, len(headers[i]))
        for row in texts:
            if len(row[i]) > limit:
                row[i] = row[i][: limit - 1] + "…"
    return list(keep), [[row[i] for i in keep] for row in texts]


def compact_count(text: str) -> str:
    """``12,345,678`` -> ``12.3M``, ``12,345`` -> ``12.3k``; other text unchanged."""
    digits = text.replace(",", "")
    if not digits.isdigit():
        return text
    n = int(digits)
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


class Out:
    """Where output goes: rich on a TTY, plain text otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._console: Any = None
        self.width = terminal_width(stream)
        """Columns tables must fit in; None: unlimited (a pipe without ``$COLUMNS``)."""

    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        return self._console

    def line(self, text: str = "", style: str | None = None) -> None:
        text = visible(text)
        if self.tty:
            self.console().print(text, style=style, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")

    def json_line(self, obj: Any) -> None:
        import msgspec

        self.stream.write(msgspec.json.encode(obj).decode() + "\n")

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[Cell]],
        right: str,
        fit: Sequence[Fit] | None = None,
    ) -> None:
        """Print a table; ``right`` holds one char per column: ``r`` right-aligns it.

        With ``fit`` (one per column) and a known width (``self.width``), columns are
        shortened and dropped in their rank order until the table fits, and the
        ``shrink`` column is cut with ``…`` as a last resort.
        """
        texts = [[visible(c if isinstance(c, str) else c[0], cell=True) for c in row] for row in rows]
        keep = list(range(len(headers)))
        if fit is not None and self.width is not None:
            keep, texts = fit_columns(headers, texts, fit, self.width)
        headers = [headers[i] for i in keep]
        right = "".join(right[i] for i in keep)
        styles = [[cell_style(row[i]) for i in keep] for row in rows]
        if self.tty:
            from rich import box
            from rich.table import Table
            from rich.text import Text

            table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
            for head, align in zip(headers, right, strict=True):
                table.add_column(head, justify="right" if align == "r" else "left", no_wrap=True,
                                 overflow="ellipsis")
            for row, style in zip(texts, styles, strict=True):
                table.add_row(*(Text(t, style=st or "") for t, st in zip(row, style, strict=True)))
            self.console().print(table)
            return
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


def clock(epoch: float | None, ms: bool = False) -> str:
    if epoch is None:
        return "-"
    from datetime import datetime

    moment = datetime.fromtimestamp(epoch)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if ms else text


def clock_tz(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    from datetime import datetime

    return f"{clock(epoch)} {datetime.fromtimestamp(epoch).astimezone().strftime('%Z')}"


def dur_ms(ms: float | None) -> str:
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


def dur_s(seconds: float | None) -> str:
    return "-" if seconds is None else dur_ms(seconds * 1000)


def text_cell(value: Any, limit: int | None) -> str:
    """A payload value as one line; spilled blobs shown as ``<blob N bytes>``."""
    return summarize(unblob(value), limit if limit is not None else 1 << 62) or ""


def unblob(value: Any) -> Any:
    """``value`` with blob references shown as ``<blob N bytes>``."""
    if layout.blob_digest(value) is not None:
        return f"<blob {value.get('size', '?')} bytes>"
    if isinstance(value, dict):
        return {k: unblob(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unblob(v) for v in value]
    return value


def compact_json(value: Any) -> str:
    """Exact one-line JSON (strings keep their whitespace, escaped), blobs shown as markers."""
    import msgspec

    return msgspec.json.encode(unblob(value)).decode()


def args_text(args: Any, limit: int | None) -> str:
    if isinstance(args, dict) and args:
        return text_cell(" ".join(f"{k}={text_cell(v, None)}" for k, v in args.items()), limit)
    return "" if args is None else text_cell(args, limit)


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def ok_cell(value: Any) -> tuple[str, str | None]:
    if value is True:
        return ("ok", "green")
    if value is False:
        return ("error", "red")
    return ("", None)


# =========================================================================== describing records


def tool_name(p: dict[str, Any]) -> str:
    name = as_str(p.get("tool"))
    server, kind = as_str(p.get("server")), as_str(p.get("kind"))
    if server:
        name = f"{server}/{name}"
    if kind and kind != "tool":
        name = f"{name} ({kind})"
    return name


def llm_text(p: dict[str, Any]) -> str:
    from traced.read.usage import LlmCall, Pricer, cost_text

    call = LlmCall.from_payload(p)
    price = Pricer().price(call)  # the catalog is imported only for a call with no reported cost
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
        name, detail = tool_name(p), args_text(p.get("args"), limit)
    elif phase == "tool_result":
        name, ok = tool_name(p), ok_cell(p.get("ok"))
        dur = nonneg(p.get("duration_ms"))
        error = p.get("error")
        detail = text_cell(error, limit) if error not in (None, "") else text_cell(
            p.get("result_summary") or "", limit
        )
    elif phase == "llm_call":
        model, provider = as_str(p.get("model")), as_str(p.get("provider"))
        name = f"{provider}/{model}" if provider else model
        dur, detail = nonneg(p.get("latency_ms")), llm_text(p)
    elif phase == "hook":
        name = as_str(p.get("event")) + (f":{p['name']}" if isinstance(p.get("name"), str) else "")
        dur, ok = nonneg(p.get("duration_ms")), ok_cell(p.get("ok"))
    elif phase == "verify":
        name, ok = as_str(p.get("check")), ok_cell(p.get("ok"))
        detail = text_cell(p.get("output") or "", limit)
    elif phase == "artifact":
        name = as_str(p.get("kind"))
        size = nonneg(p.get("size_bytes"))
        detail = text_cell(p.get("path") or "", limit) + (f" ({size:,.0f} bytes)" if size else "")
    elif phase == "note":
        detail = text_cell(p.get("message") or "", limit)
    elif phase == "user_prompt":
        detail = text_cell(p.get("prompt") or p.get("prompt_id") or "", limit)
    elif phase == "start":
        bits = []
        if p.get("input") is not None:
            bits.append("input=" + text_cell(p.get("input"), None))
        if isinstance(p.get("cwd"), str):
            bits.append(f"cwd={p['cwd']}")
        detail = text_cell(" ".join(bits), limit)
    elif phase == "end":
        outcome = as_str(p.get("outcome"))
        ok = (outcome, OUTCOME_STYLE.get(outcome))
        reason = as_str(p.get("reason"))
        detail = text_cell(p.get("summary") or (f"reason={reason}" if reason else ""), limit)
    else:
        detail = text_cell(entry.payload if entry.payload is not None else "", limit)
    return name, dur, ok, detail


def nonneg(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def tail_line(e: Entry, skill: str, session_id: str) -> str:
    """One record as ``traced tail`` prints it (``tail -f`` too)."""
    name, _, ok, detail = describe(e, 120)
    ok_text = ok if isinstance(ok, str) else ok[0]
    parts = [clock(e.epoch, ms=True), skill, session_id[:10], f"#{e.step}", e.phase, name, ok_text, detail]
    return visible(" ".join(x for x in parts if x), cell=True)


def human_bytes(n: int) -> str:
    """``512 B``, ``12.3 KiB``, ``4.0 MiB``."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    parts += [f"{h}h"] if h or d else []
    parts += [f"{m}m", f"{s}s"]
    return " ".join(parts)


def _rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    finalized = info.get("finalized") or {}
    rows = [
        ("daemon", f"pid {info.get('pid')}, traced {info.get('version')}, up {_duration(info.get('uptime_s', 0))}"),
        ("socket", f"{info.get('socket', '?')} ({info.get('socket_source', '?')})"),
        ("roots", ", ".join(info.get("roots") or [str(info.get("root"))])),
        ("connections", str(info.get("connections", 0))),
        ("open sessions", str(info.get("open_sessions", 0))),
        ("events written", f"{info.get('events_written', 0)} ({info.get('events_per_s_1m', 0):.1f}/s over 1 min)"),
        ("bytes written", human_bytes(info.get("bytes_written", 0))),
        ("redactions", str(info.get("redactions", 0))),
        ("finalized", ", ".join(f"{k} {v}" for k, v in sorted(finalized.items())) or "none"),
        ("spool backlog", str(info.get("spool_backlog", 0))),
        ("client events lost", str(info.get("client_events_lost", 0))),
        ("write errors", str(info.get("write_errors", 0))),
        ("fsync", str(info.get("fsync"))),
    ]
    for disk in info.get("disk") or []:
        size = f"{human_bytes(disk['bytes'])} ({disk['bytes']:,} bytes)"
        err = f", error: {disk['error']}" if disk.get("error") else ""
        rows.append(("disk", f"{disk['root']}: {disk['sessions']} sessions, {size}{err}"))
    rows.append(("retention", _retention(info.get("retention"))))
    for fw in info.get("forwarders") or []:
        lag = f"lag {fw.get('lag_records', '?')} records / {fw.get('lag_seconds', '?')}s"
        err = f", last error: {fw['last_error']}" if fw.get("last_error") else ""
        if fw.get("config_error"):
            err = f", CONFIGURATION ERROR (fix the URL or credentials): {fw['config_error']}"
        rows.append((f"forward {fw.get('url', '?')}", f"{lag}, sent {fw.get('sent', 0)}{err}"))
    otlp = info.get("otlp")
    if otlp:
        token = otlp.get("token_file") or f"${otlp.get('token_source', 'TRACED_OTLP_TOKEN')}"
        rows.append(("otlp receiver", f"{otlp.get('endpoint')} (token: {token})"))
        rows.append(("otlp received", f"{otlp.get('spans', 0)} spans ({otlp.get('spans_ignored', 0)} not GenAI), "
                     f"{otlp.get('logs', 0)} logs ({otlp.get('logs_ignored', 0)} ignored), "
                     f"{otlp.get('records_written', 0)} records, {otlp.get('rejected', 0)} rejected"))
    mirror = info.get("mirror")
    if mirror:
        err = f", last error: {mirror['last_error']}" if mirror.get("last_error") else ""
        rows.append((f"mirror {mirror.get('url', '?')}",
                     f"{mirror.get('state', '?')}, written {mirror.get('written', 0)} records of "
                     f"{mirror.get('sessions', 0)} sessions, duplicates {mirror.get('duplicates', 0)}{err}"))
    return rows


def _retention(ret: Any) -> str:
    """``90d, last run <at>: removed 3 sessions, freed 1.2 MiB, 0 errors`` (or ``off``)."""
    if not isinstance(ret, dict):
        return "unknown"
    setting = str(ret.get("setting") or "off")
    text = setting + (" (dry run)" if ret.get("dry_run") else "")
    last = ret.get("last_run")
    if not isinstance(last, dict):
        return text if setting == "off" else f"{text}, no pass yet"
    if last.get("dry_run"):
        did = (f"would remove {last.get('would_remove', 0)} sessions, "
               f"would free {human_bytes(int(last.get('would_free', 0)))}")
    else:
        did = f"removed {last.get('removed', 0)} sessions, freed {human_bytes(int(last.get('bytes_freed', 0)))}"
    return f"{text}, last pass {last.get('at')}: {did}, {last.get('errors', 0)} errors"


def _session_rows(info: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (str(s["skill"]), str(s["session_id"]), str(s["steps"]), _duration(s["idle_s"]), str(s.get("owner_pid") or "-"))
        for s in info.get("sessions") or []
    ]


SESSION_HEADER = ("SKILL", "SESSION", "STEPS", "IDLE", "OWNER")


def render_status(info: dict[str, Any], out: TextIO) -> None:
    """The status: a rich table on a TTY, labelled plain lines otherwise."""
    if out.isatty():
        _status_rich(info, out)
    else:
        _status_plain(info, out)


def _status_rich(info: dict[str, Any], out: TextIO) -> None:
    """Tables with colour for a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out)
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    for label, value in _rows(info):
        style = "red" if label == "write errors" and value != "0" else None
        table.add_row(label, value, style=style)
    console.print(table)
    rows = _session_rows(info)
    if rows:
        sessions = Table(title="open sessions (most recent activity first)", title_justify="left")
        for name in SESSION_HEADER:
            sessions.add_column(name, justify="right" if name in ("STEPS", "IDLE", "OWNER") else "left")
        for row in rows:
            sessions.add_row(*row)
        console.print(sessions)


def _status_plain(info: dict[str, Any], out: TextIO) -> None:
    """Aligned plain text for pipes and logs."""
    rows = _rows(info)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"{label:<{width}}  {value}\n")
    rows_s = _session_rows(info)
    if rows_s:
        out.write("\n")
        header = SESSION_HEADER
        table = [header, *rows_s]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
