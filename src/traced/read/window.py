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


FIRST_DAY = date(1970, 1, 2)
LAST_DAY = date(9998, 12, 31)
"""The dates a window may span: epoch seconds of their local midnights exist everywhere."""


def _parse_day(text: str, today: date) -> date:
    if text in ("today", "yesterday"):
        return today - timedelta(days=text == "yesterday")
    if not DATE_RE.match(text):
        raise ValueError(f"not a date (YYYY-MM-DD, today or yesterday): {text!r}")
    try:
        day = date.fromisoformat(text)
    except ValueError as e:
        raise ValueError(f"not a date: {text!r} ({e})") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"date out of range: {text!r} (from {FIRST_DAY} to {LAST_DAY})")
    return day


def parse_window(text: str, today: date | None = None) -> Window:
    """Parse ``today``, ``yesterday``, ``Nd`` (today and the N-1 days before), ``Nw`` (N weeks:
    7N days), ``YYYY-MM-DD`` or ``A..B`` (either end may be ``today``/``yesterday`` or left out).

    Dates are local calendar dates from 1970-01-02 to 9998-12-31; ``A..B`` includes both ends.
    Raises ValueError.
    """
    spec = text.strip()
    today = today or date.today()
    if spec in ("today", "yesterday"):
        day = _parse_day(spec, today)
        return Window(day, day, spec)
    match = re.fullmatch(r"(\d{1,5})([dw])", spec)
    if match:
        days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
        if days < 1:
            raise ValueError(f"bad window {text!r}: need at least 1d")
        first = max(today - timedelta(days=min(days - 1, (today - FIRST_DAY).days)), FIRST_DAY)
        return Window(first, today, spec)
    if ".." in spec:
        a, _, b = spec.partition("..")
        first = _parse_day(a.strip(), today) if a.strip() else FIRST_DAY
        last = _parse_day(b.strip(), today) if b.strip() else today
        if last < first:
            raise ValueError(f"bad window {text!r}: {last} is before {first}")
        return Window(first, last, spec)
    try:
        day = _parse_day(spec, today)
    except ValueError as e:
        raise ValueError(
            f"bad window {text!r}: use today, yesterday, 7d, 2w, YYYY-MM-DD or A..B ({e})"
        ) from None
    return Window(day, day, spec)
