"""``traced serve --forward URL``: forward every record to NATS JetStream or OTLP/HTTP.

The trace files are both the source of truth and the outbox. Forwarding never sits
on a skill's ack path: the registry's write hook calls :meth:`Forwarders.notify`
(O(1), "session X has records up to step N"), and one task per destination reads the
records back from trace.jsonl by byte offset, sends them in batches and moves a
durable per-session cursor (``<state>/forward/<dest-key>/cursors.log``) past what the
destination acknowledged. Only redacted data leaves the machine: the files are
written after redaction, and the forwarder reads nothing else.

Delivery is at least once to the destination, deduplicated by (session, step):
JetStream by ``Nats-Msg-Id`` within its duplicate window, OTLP by deterministic trace
and span ids; the cursor keeps anything acknowledged from being sent again, whatever
the window. See docs/forwarding.md.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from traced._version import install_hint
from traced.errors import ForwardURLError
from traced.format.layout import ensure_private_dir
from traced.forward.cursor import CursorStore
from traced.forward.engine import Forwarder, Sink
from traced.forward.urls import Destination, parse

__all__ = ["ForwardURLError", "Forwarders", "check_urls", "mirror_of"]

_EXTRAS = {"nats": ("nats", "nats-py", "nats"), "otlp": ("opentelemetry.proto", "opentelemetry-proto", "otlp")}


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_urls(urls: Iterable[str], headers: Mapping[str, Mapping[str, str]] | None = None) -> list[Destination]:
    """Parse and validate the ``forward`` URLs (raises ForwardURLError, e.g. for a missing extra)."""
    dests: list[Destination] = []
    seen: set[str] = set()
    for url in urls:
        if not url.strip():
            continue
        dest = parse(url, _headers_for(url, headers))
        if dest.key in seen:
            continue
        seen.add(dest.key)
        module, dist, extra = _EXTRAS[dest.kind]
        if not _has_module(module):
            raise ForwardURLError(f"--forward {dest.display}: needs {dist}: {install_hint(extra, dist)}")
        dests.append(dest)
    return dests


def mirror_of(url: str, root: str) -> Any:
    """``--mirror URL``: a :class:`traced.forward.mirror.Mirror` (raises ForwardURLError: not nats://, no nats-py)."""
    dest = parse(url)
    if dest.kind != "nats":
        raise ForwardURLError(f"--mirror {dest.display}: a mirror reads a NATS JetStream stream (nats:// or tls://)")
    if not _has_module("nats"):
        raise ForwardURLError(f"--mirror {dest.display}: needs nats-py: {install_hint('nats', 'nats-py')}")
    from traced.forward.mirror import Mirror

    return Mirror(dest, root)


def _headers_for(url: str, headers: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    """The ``[forward_headers."<url>"]`` table for ``url`` (matched exactly, or without its query)."""
    if not headers:
        return {}
    exact = headers.get(url) or headers.get(url.split("?", 1)[0]) or {}
    return {str(k): str(v) for k, v in exact.items()}


def _sink(dest: Destination, capture_content: bool) -> Sink:
    if dest.kind == "nats":
        from traced.forward.nats import NatsSink

        return NatsSink(dest)
    from traced.forward.otlp import OtlpSink

    return OtlpSink(dest, capture_content=capture_content)


class Forwarders:
    """Every configured destination; the daemon's single entry point for forwarding."""

    def __init__(self, urls: list[str], state_dir: Path, roots: Callable[[], Iterable[str]], *,
                 headers: Mapping[str, Mapping[str, str]] | None = None, capture_content: bool = False) -> None:
        """``capture_content``: OTLP spans carry tool arguments and results (``otlp_capture_content``)."""
        self.forwarders: list[Forwarder] = []
        base = state_dir / "forward"
        dests = check_urls(urls, headers)
        if dests:
            ensure_private_dir(base)
        for dest in dests:
            ensure_private_dir(base / dest.key)
            store = CursorStore(base / dest.key, dest.display)
            store.load()
            _describe(base / dest.key, dest)
            self.forwarders.append(Forwarder(dest, _sink(dest, capture_content), store, roots))

    def notify(self, session_dir: str, skill: str, session_id: str, last_step: int, closed: bool) -> None:
        """Session ``session_dir`` has records up to ``last_step`` in its file (sync, O(destinations))."""
        for fw in self.forwarders:
            fw.notify(session_dir, skill, session_id, last_step, closed)

    async def run(self) -> None:
        """Run every destination's forwarder until cancelled."""
        async with anyio.create_task_group() as tg:
            for fw in self.forwarders:
                tg.start_soon(fw.run)

    def status(self) -> list[dict[str, Any]]:
        """One entry per destination: url (no credentials), lag_records, lag_seconds, last_error, sent, retries…"""
        return [fw.status() for fw in self.forwarders]


def _describe(dir: Path, dest: Destination) -> None:
    """``dest.json``: which destination a cursor directory belongs to (for humans)."""
    from traced.format.files import write_atomic

    data = msgspec.json.encode({"url": dest.display, "kind": dest.kind, "identity": dest.identity})
    try:
        write_atomic(str(dir), "dest.json", data, sync=False)
    except OSError:
        pass
