"""Daemon configuration: a msgspec Struct filled from a TOML file, then ``TRACED_*`` env, then flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from traced import locations
from traced.errors import ConfigError

FsyncPolicy = Literal["never", "batch", "always"]
Positive = Annotated[int, msgspec.Meta(ge=1)]
"""A limit: 0 or less would refuse or cut everything (the config says so at start and on reload)."""


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every setting of ``traced serve``; see docs/configuration.md."""

    socket: str = ""
    """Socket path; empty: ``$TRACED_SOCKET`` or ``$XDG_RUNTIME_DIR/traced/traced.sock``."""
    root: str = ""
    """Global root; empty: ``$STATE_DIRECTORY`` or ``$XDG_STATE_HOME/traced/sessions``."""
    fsync: FsyncPolicy = "batch"
    fsync_interval: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    wal: bool = True
    """``fsync = "always"`` or ``"batch"``: a sync round makes its lines durable with one fdatasync of
    the daemon-wide write-ahead log (true), or with concurrent fdatasyncs of every trace touched (false)."""
    wal_checkpoint_bytes: Annotated[int, msgspec.Meta(ge=1, le=16 * 1024**3)] = 64 * 1024 * 1024
    """``fsync = "always"`` or ``"batch"``: the write-ahead log's size (bytes) at which the traces it covers are
    fdatasynced and it starts over (see docs/configuration.md)."""
    idle_timeout: float = 1800.0
    max_frame: Annotated[int, msgspec.Meta(ge=4096)] = 8 * 1024 * 1024
    """Largest frame (bytes, at least 4 KiB: a smaller one refuses the protocol's own requests); 8 MiB
    because large strings spill to blobs, so a big event no longer means a big line (raw LLM bodies
    and long tool outputs fit whole)."""
    max_connections: Positive = 1024
    max_open_sessions: Positive = 20000
    max_sessions_per_connection: Positive = 1000
    max_payload_depth: Positive = 64
    """At least 1 (the payload map itself); deeper subtrees are kept as ``too_deep`` markers."""
    max_payload_keys: Positive = 10000
    max_string: Positive = 8 * 1024 * 1024
    spill_threshold: Positive = 64 * 1024
    """Payload strings longer than this (chars) go to ``<session>/blobs/<sha256>``."""
    artifact_max_bytes: int = 64 * 1024 * 1024
    """Largest file an ``artifact`` event may ask the daemon to copy."""
    partial_frame_timeout: float = 30.0
    connection_idle_timeout: float = 600.0
    """Seconds a connection may stay silent before it is closed (0: never); clients reconnect."""
    fd_cache: int = 16384
    """Trace files kept open (LRU); clamped at start to what RLIMIT_NOFILE allows."""
    subscriber_buffer: Positive = 10000
    """Records held for a slow ``subscribe`` reader before it gets a gap."""
    redaction: bool = True
    allow_root: bool = False
    """Let uid 0 connect to a daemon of another uid."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    forward: list[str] = []
    forward_headers: dict[str, dict[str, str]] = {}
    """Extra headers per forward URL (``${VAR}`` is expanded), e.g. a backend's project name."""
    otlp_listen: str = ""
    """``HOST:PORT`` of the OTLP/HTTP receiver (``/v1/traces``, ``/v1/logs``); empty: off. See docs/otlp-receiver.md."""
    otlp_allow_remote: bool = False
    """Let ``otlp_listen`` bind an address that is not loopback (the token is then the only guard)."""
    otlp_max_body: int = 16 * 1024 * 1024
    """Largest OTLP request body in bytes, as sent and after gzip (413 beyond)."""
    otlp_rate: float = 100.0
    """OTLP requests per second, with bursts of as many (429 with Retry-After beyond)."""
    retention: str = ""
    """Delete sessions older than this once a day (``"90d"``, ``"12w"``; at least ``1d``); ``""``/``"off"``: never.
    The rule is ``traced prune``'s (``read.prune``): ended before the cutoff, or unfinished and unwritten since."""
    retention_dry_run: bool = False
    """Only log what the daily retention pass would delete."""

    def __post_init__(self) -> None:
        from traced.read.prune import parse_retention

        parse_retention(self.retention)  # ValueError: msgspec makes it a ValidationError naming the field

    def retention_seconds(self) -> float | None:
        """``retention`` in seconds; None when off."""
        from traced.read.prune import parse_retention

        return parse_retention(self.retention)
    mirror: str = ""
    """``nats://…``: mirror the JetStream stream other daemons forward to into this root."""
    otlp_capture_content: bool = False
    """OTLP export: send tool arguments and results, prompts and the session input (opt-in content)."""

    def socket_path(self) -> Path:
        """The resolved socket path."""
        return Path(self.socket) if self.socket else locations.socket_path()

    def root_path(self) -> Path:
        """The resolved global root."""
        return Path(self.root) if self.root else locations.default_root()


def _fields() -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(Config)}


def load(file: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
         env: dict[str, str] | None = None) -> Config:
    """Build the config: defaults < TOML file < ``TRACED_<FIELD>`` env < ``overrides``."""
    data: dict[str, Any] = {}
    path = Path(file) if file else locations.config_path()
    if path.exists():
        try:
            loaded = msgspec.toml.decode(path.read_bytes())
        except msgspec.DecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: not a table")
        data.update(loaded)
    elif file:
        raise ConfigError(f"config file not found: {path}")
    environ = os.environ if env is None else env
    for name in _fields():
        value = environ.get(f"TRACED_{name.upper()}")
        if value is None or name in ("socket", "root", "forward_headers"):  # socket/root: locations.py
            continue
        data[name] = value.split(",") if name == "forward" else value
    if overrides:
        data.update({k: v for k, v in overrides.items() if v is not None})
    days = data.get("retention")
    if isinstance(days, int | float) and not isinstance(days, bool):
        raise ConfigError(f'bad configuration: retention = {days} has no unit: write retention = "{days}d" '
                          '(days; also h and w), or "off"')
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"bad configuration: {e}") from e
