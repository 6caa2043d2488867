"""The event bus: records fan out to subscribers as they land, after redaction.

Publishing never waits: each subscriber has a bounded buffer, and a full
buffer drops records for that subscriber only, leaving a ``gap`` notice in
their place. A slow reader therefore never slows ingest or other readers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio

from traced.format.records import Record, json_encoder

DEFAULT_BUFFER = 10_000


@dataclass(slots=True, eq=False)
class Subscriber:
    """One subscription: its filter, its bounded buffer, its drop count."""

    skill: str = ""
    session_id: str = ""
    phase: str = ""
    capacity: int = DEFAULT_BUFFER
    buffer: deque[bytes | int] = field(default_factory=deque)
    """Encoded lines, and ints standing for a gap of that many dropped records."""
    dropped: int = 0
    """Records dropped since the last gap notice was queued."""
    total_dropped: int = 0
    wake: anyio.Event = field(default_factory=anyio.Event)

    def matches(self, rec: Record) -> bool:
        """Whether ``rec`` passes this subscriber's filter."""
        return ((not self.skill or rec.skill == self.skill)
                and (not self.session_id or rec.session_id == self.session_id)
                and (not self.phase or rec.phase == self.phase))

    def take(self) -> list[bytes | int]:
        """Everything buffered, plus a pending gap; resets the wake-up."""
        items = list(self.buffer)
        self.buffer.clear()
        if self.dropped:
            items.append(self.dropped)
            self.dropped = 0
        self.wake = anyio.Event()
        return items


class Bus:
    """All subscribers of the daemon."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.published = 0

    def subscribe(self, sub: Subscriber) -> Subscriber:
        """Add a subscriber."""
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a subscriber."""
        self.subscribers.discard(sub)

    def publish(self, records: Iterable[Record]) -> None:
        """Offer written records to every subscriber; O(1) when nobody listens."""
        if not self.subscribers:
            return
        encode = json_encoder.encode
        for rec in records:
            line: bytes | None = None
            for sub in self.subscribers:
                if not sub.matches(rec):
                    continue
                if len(sub.buffer) >= sub.capacity:
                    sub.dropped += 1
                    sub.total_dropped += 1
                else:
                    if sub.dropped:
                        sub.buffer.append(sub.dropped)
                        sub.dropped = 0
                    if line is None:
                        line = encode(rec)
                    sub.buffer.append(line)
                sub.wake.set()
            self.published += 1

    def status(self) -> dict[str, int]:
        """Counts for ``traced status``."""
        return {"subscribers": len(self.subscribers),
                "subscriber_drops": sum(s.total_dropped for s in self.subscribers)}
