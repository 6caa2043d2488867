"""Time windows of the reading commands: ``today``, ``7d``, ``YYYY-MM-DD``, ``A..B`` (local calendar dates)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

from traced.format.layout import DATE_RE


def parse_epoch(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp (``Z``, offset or naive = UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def local_midnight(day: date) -> float:
    """Epoch seconds of local midnight starting ``day``."""
    return datetime.combine(day, dtime()).timestamp()


def local_date(epoch: float) -> date:
    """The local calendar date of ``epoch``."""
    return datetime.fromtimestamp(epoch).date()


@dataclass(frozen=True, slots=True)
class Window:
    """A range of local calendar dates, both ends inclusive."""

    first: date
    last: date
    label: str = ""

    @property
    def start(self) -> float:
        """Epoch of the window's first instant (local midnight of ``first``)."""
        return local_midnight(self.first)

    @property
    def end(self) -> float:
        """Epoch just past the window (local midnight after ``last``)."""
        return local_midnight(self.last + timedelta(days=1))

    def contains(self, epoch: float) -> bool:
        """Whether ``epoch`` falls inside the window."""
        return self.start <= epoch < self.end

    def dir_range(self) -> tuple[str, str]:
        """The UTC date-directory names that can hold sessions started in the window."""
        lo = datetime.fromtimestamp(self.start, UTC).date()
        hi = datetime.fromtimestamp(self.end - 1e-6, UTC).date()
        return lo.isoformat(), hi.isoformat()

    def to_json(self) -> dict[str, str]:
        """``{"since": label, "first": date, "last": date}``."""
        return {"since": self.label, "first": self.first.isoformat(), "last": self.last.isoformat()}


def _parse_day(text: str) -> date:
    if not DATE_RE.match(text):
        raise ValueError(f"not a date (YYYY-MM-DD): {text!r}")
    return date.fromisoformat(text)


def parse_window(text: str, today: date | None = None) -> Window:
    """Parse ``today``, ``Nd`` (today and the N-1 days before), ``YYYY-MM-DD`` or ``A..B``.

    Dates are local calendar dates; ``A..B`` includes both ends. Raises ValueError.
    """
    spec = text.strip()
    today = today or date.today()
    if spec == "today":
        return Window(today, today, spec)
    if spec == "yesterday":
        day = today - timedelta(days=1)
        return Window(day, day, spec)
    match = re.fullmatch(r"(\d{1,5})d", spec)
    if match:
        days = int(match.group(1))
        if days < 1:
            raise ValueError(f"bad window {text!r}: need at least 1d")
        return Window(today - timedelta(days=days - 1), today, spec)
    if ".." in spec:
        a, _, b = spec.partition("..")
        first = _parse_day(a.strip()) if a.strip() else date(1970, 1, 2)
        last = _parse_day(b.strip()) if b.strip() else today
        if last < first:
            raise ValueError(f"bad window {text!r}: {last} is before {first}")
        return Window(first, last, spec)
    try:
        day = _parse_day(spec)
    except ValueError:
        raise ValueError(
            f"bad window {text!r}: use today, 7d, 30d, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
        ) from None
    return Window(day, day, spec)
