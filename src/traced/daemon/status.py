"""The daemon's counters for ``traced status`` (the reply itself is put together in ``serve``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """Counters for ``traced status``: events, bytes, redactions, write errors, sessions."""

    started: float = field(default_factory=time.time)
    events_written: int = 0
    bytes_written: int = 0
    redactions: int = 0
    write_errors: int = 0
    sessions_opened: int = 0
    sessions_closed: int = 0
    finalized: dict[str, int] = field(default_factory=dict)
    torn_tails_moved: int = 0
    wal_replayed_lines: int = 0
    """Lines the write-ahead log put back into their traces at start (a power cut had taken them)."""
    wal_stale_lines: int = 0
    """Logged lines left out at start: they belonged to an earlier trace at the same path."""
    client_events_lost: int = 0
    """Events clients reported lost: the daemon was away and their spool could not be written."""
    recent: list[tuple[float, int]] = field(default_factory=list)
    """(second, events) buckets for the last minute's rate."""

    def count_events(self, n: int) -> None:
        """Add ``n`` written events to the totals and the per-second buckets."""
        self.events_written += n
        now = int(time.monotonic())
        recent = self.recent
        if recent and recent[-1][0] == now:
            recent[-1] = (now, recent[-1][1] + n)
        else:
            recent.append((now, n))
            while recent and recent[0][0] < now - 60:
                recent.pop(0)

    def rate(self, window: float = 60.0) -> float:
        """Events per second over the last ``window`` seconds."""
        now = time.monotonic()
        total = sum(n for sec, n in self.recent if sec >= now - window)
        return total / window

