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


def render(info: dict[str, Any], out: TextIO) -> None:
    """Write the status as labelled lines and a table of the busiest open sessions."""
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
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"{label:<{width}}  {value}\n")
    sessions = info.get("sessions") or []
    if sessions:
        out.write("\n")
        header = ("SKILL", "SESSION", "STEPS", "IDLE", "OWNER")
        table = [header] + [
            (str(s["skill"]), str(s["session_id"]), str(s["steps"]), _duration(s["idle_s"]),
             str(s.get("owner_pid") or "-"))
            for s in sessions
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
