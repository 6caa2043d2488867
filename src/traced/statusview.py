"""Rendering of ``traced status`` for people: aligned plain text (a table on a TTY)."""

from __future__ import annotations

from typing import Any, TextIO


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


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
        ("bytes written", _human_bytes(info.get("bytes_written", 0))),
        ("redactions", str(info.get("redactions", 0))),
        ("finalized", ", ".join(f"{k} {v}" for k, v in sorted(finalized.items())) or "none"),
        ("spool backlog", str(info.get("spool_backlog", 0))),
        ("write errors", str(info.get("write_errors", 0))),
        ("fsync", str(info.get("fsync"))),
    ]
    for fw in info.get("forwarders") or []:
        lag = f"lag {fw.get('lag_records', '?')} records / {fw.get('lag_seconds', '?')}s"
        err = f", last error: {fw['last_error']}" if fw.get("last_error") else ""
        rows.append((f"forward {fw.get('url', '?')}", f"{lag}, sent {fw.get('sent', 0)}{err}"))
    return rows


def _session_rows(info: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (str(s["skill"]), str(s["session_id"]), str(s["steps"]), _duration(s["idle_s"]), str(s.get("owner_pid") or "-"))
        for s in info.get("sessions") or []
    ]


SESSION_HEADER = ("SKILL", "SESSION", "STEPS", "IDLE", "OWNER")


def render(info: dict[str, Any], out: TextIO) -> None:
    """The status: a rich table on a TTY, labelled plain lines otherwise."""
    if out.isatty():
        render_rich(info, out)
    else:
        render_plain(info, out)


def render_rich(info: dict[str, Any], out: TextIO) -> None:
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


def render_plain(info: dict[str, Any], out: TextIO) -> None:
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
