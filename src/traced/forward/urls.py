"""Forwarding destinations: parsing ``--forward URL``, headers, display form and identity.

Accepted URLs:

- ``nats://[user:pass@|token@]host:port[?stream=TRACED&subject=traced&duplicate_window=120&creds=FILE]``
  (``tls://`` for NATS over TLS);
- ``http(s)://host:port[/path][?header=Name:Value&service=traced&project=NAME]``: OTLP/HTTP
  protobuf. An empty path (or ``/``) means ``/v1/traces``; any other path is used as is.
- ``otlp``: OTLP/HTTP protobuf to where the standard ``OTEL_EXPORTER_OTLP_*`` variables
  say (OpenTelemetry's "OTLP Exporter Configuration"): ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  used as is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` as a base URL with ``v1/traces``
  appended, else ``http://localhost:4318/v1/traces``.

For every OTLP destination the daemon's environment also gives headers
(``OTEL_EXPORTER_OTLP_HEADERS``, overridden per name by ``…_TRACES_HEADERS``, then by
``header=``, then by ``[forward_headers]``), the timeout (``…_TRACES_TIMEOUT``, else
``…_TIMEOUT``, in milliseconds), the compression (``…_COMPRESSION``: ``gzip`` unless
``none``) and the resource (``OTEL_RESOURCE_ATTRIBUTES``, with ``service.name`` from
``service=``, else ``OTEL_SERVICE_NAME``, else that list, else ``traced``).

``header=Name:Value`` may be repeated; values may reference the daemon's environment as
``${VAR}`` so secrets stay out of config files and process listings. Headers and
credentials never appear in ``status`` and never change a destination's identity (the
directory holding its cursors), so rotating a token keeps the cursors.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from traced.errors import ForwardURLError

NATS_SCHEMES: Final = ("nats", "tls")
OTLP_SCHEMES: Final = ("http", "https")
DEFAULT_OTLP_PATH: Final = "/v1/traces"
_ENV_RE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SUBJECT_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_NATS_KEYS: Final = frozenset({"stream", "subject", "duplicate_window", "creds", "durable"})
_OTLP_KEYS: Final = frozenset({"header", "service", "project"})
OTLP_ENV_KEYWORD: Final = "otlp"
DEFAULT_OTLP_ENDPOINT: Final = "http://localhost:4318/"
DEFAULT_TIMEOUT: Final = 10.0


@dataclass(slots=True)
class Destination:
    """One parsed forwarding destination."""

    kind: str
    """``nats`` or ``otlp``."""
    url: str
    """The URL to connect to, without our own query parameters (credentials kept)."""
    display: str
    """The URL for humans and ``status``: no credentials, no header values."""
    identity: str
    """What makes two destinations the same place (scheme, host, port, path, stream, subject)."""
    headers: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    """Seconds per request (OTLP)."""
    gzip: bool = True
    """Compress request bodies (OTLP)."""
    resource: dict[str, str] = field(default_factory=dict)
    """Resource attributes from the environment (OTLP); ``service.name`` always set."""

    @property
    def key(self) -> str:
        """A short stable hash of the identity: the name of the cursor directory."""
        return hashlib.sha256(self.identity.encode()).hexdigest()[:16]


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` with the variable's value ('' when unset)."""
    env = os.environ if environ is None else environ
    return _ENV_RE.sub(lambda m: env.get(m.group(1), ""), value)


def _netloc(host: str | None, port: int | None) -> str:
    host = host or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}" if port else host


def parse(url: str, headers: Mapping[str, str] | None = None,
          environ: Mapping[str, str] | None = None) -> Destination:
    """Parse a ``--forward`` URL; ``headers`` (from the config) are added to OTLP requests.

    Raises ForwardURLError for a malformed URL, an unknown scheme or parameter, or OTEL_*
    variables that ask for something this exporter does not speak (gRPC, JSON).
    """
    env = os.environ if environ is None else environ
    raw = url.strip()
    if raw.lower() == OTLP_ENV_KEYWORD:
        protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                    or "http/protobuf").strip().lower()
        if protocol != "http/protobuf":
            raise ForwardURLError(f"--forward otlp: OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: "
                                  "traced exports OTLP over http/protobuf only")
        raw = otlp_endpoint(env)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as e:
        raise ForwardURLError(f"--forward {_scrub(raw)!r}: {e}") from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ForwardURLError(f"--forward {_scrub(raw)!r}: no host")
    query = parse_qsl(parts.query, keep_blank_values=True)
    netloc = _netloc(parts.hostname, port)
    if scheme in NATS_SCHEMES:
        options: dict[str, str] = {}
        for k, v in query:
            if k not in _NATS_KEYS:
                raise ForwardURLError(f"--forward {_scrub(raw)!r}: unknown parameter {k!r} "
                                      f"(known: {', '.join(sorted(_NATS_KEYS))})")
            options[k] = v
        stream = options.setdefault("stream", "TRACED")
        subject = options.setdefault("subject", "traced")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stream):
            raise ForwardURLError(f"--forward {_scrub(raw)!r}: bad stream name {stream!r}")
        if not _SUBJECT_TOKEN_RE.match(subject):
            raise ForwardURLError(f"--forward {_scrub(raw)!r}: bad subject prefix {subject!r}")
        if "duplicate_window" in options:
            try:
                if float(options["duplicate_window"]) < 0.1:
                    raise ValueError
            except ValueError:
                raise ForwardURLError(f"--forward {_scrub(raw)!r}: duplicate_window must be seconds >= 0.1") from None
        if "creds" in options:
            options["creds"] = expand_env(options["creds"], environ)
        connect = urlunsplit((scheme, parts.netloc, "", "", ""))
        display = urlunsplit((scheme, netloc, "", urlencode({"stream": stream, "subject": subject}), ""))
        identity = f"nats://{netloc}/{stream}/{subject}"
        return Destination("nats", connect, display, identity, {}, options)
    if scheme in OTLP_SCHEMES:
        hdrs: dict[str, str] = {}
        options = {}
        rest: list[tuple[str, str]] = []
        for k, v in query:
            if k == "header":
                name, sep, value = v.partition(":")
                if not sep:
                    raise ForwardURLError(f"--forward {_scrub(raw)!r}: header must be Name:Value")
                hdrs[name.strip()] = value.strip()
            elif k in _OTLP_KEYS:
                options[k] = v
            else:
                rest.append((k, v))  # someone else's parameter: passed on to the collector
        hdrs = _merge_headers(env_headers(env), hdrs, dict(headers or {}))
        for name in list(hdrs):
            if not _HEADER_NAME_RE.match(name):
                raise ForwardURLError(f"--forward {_scrub(raw)!r}: bad header name {name!r}")
            hdrs[name] = expand_env(hdrs[name], environ)
            if "\r" in hdrs[name] or "\n" in hdrs[name]:
                raise ForwardURLError(f"--forward {_scrub(raw)!r}: header {name} has a line break")
        path = parts.path if parts.path not in ("", "/") else DEFAULT_OTLP_PATH
        target = urlunsplit((scheme, parts.netloc, path, urlencode(rest), ""))
        shown = [("header", f"{name}:***") for name in hdrs]
        display = urlunsplit((scheme, netloc, path, urlencode(rest + shown, safe=":*"), ""))
        identity = urlunsplit((scheme, netloc, path, urlencode(rest), ""))
        timeout = _env_timeout(env)
        compression = (env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") or env.get("OTEL_EXPORTER_OTLP_COMPRESSION")
                       or "gzip").strip().lower()
        resource = resource_attributes(env)
        resource["service.name"] = (options.get("service") or env.get("OTEL_SERVICE_NAME", "").strip()
                                    or resource.get("service.name") or "traced")
        return Destination("otlp", target, display, identity, hdrs, options, timeout=timeout,
                           gzip=compression != "none", resource=resource)
    raise ForwardURLError(f"--forward {_scrub(raw)!r}: unknown scheme {scheme!r} "
                          "(nats://, tls://, http:// or https://)")


def otlp_endpoint(environ: Mapping[str, str]) -> str:
    """The traces URL the ``OTEL_EXPORTER_OTLP_*`` variables give (the spec's precedence).

    ``…_TRACES_ENDPOINT`` is used as is; ``…_ENDPOINT`` is a base URL that gets
    ``v1/traces`` appended to its path (``http://h:4318`` and ``http://h:4318/`` ->
    ``/v1/traces``, ``http://h/otel`` -> ``/otel/v1/traces``).
    """
    signal = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return signal
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or DEFAULT_OTLP_ENDPOINT
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + DEFAULT_OTLP_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _kv_list(value: str, what: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` with percent-encoded values (the OTEL_* list format); ValueError when malformed."""
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key = unquote(key.strip())
        if not sep or not key:
            raise ValueError(f"{what}: {item.strip()!r} is not key=value")
        out[key] = unquote(val.strip())
    return out


def env_headers(environ: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` overridden per name by ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``.

    Raises ForwardURLError for a malformed list (a silently missing auth header would
    only show as 401s later).
    """
    out: dict[str, str] = {}
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        try:
            out.update(_kv_list(environ.get(name, ""), name))
        except ValueError as e:
            raise ForwardURLError(str(e).split(":")[0] + ": malformed (expected Name=value,Name2=value2)") from None
    return out


def _merge_headers(*layers: dict[str, str]) -> dict[str, str]:
    """Later layers win, names compared without case (HTTP header names are case-insensitive)."""
    out: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            out[name.lower()] = (name, value)
    return dict(out.values())


def _env_timeout(environ: Mapping[str, str]) -> float:
    """``…_TRACES_TIMEOUT`` else ``…_TIMEOUT``, milliseconds, as seconds (the default when unset or bad)."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        value = environ.get(name, "").strip()
        if not value:
            continue
        try:
            ms = float(value)
        except ValueError:
            continue
        if ms > 0:
            return ms / 1000.0
    return DEFAULT_TIMEOUT


def resource_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` as a dict; a malformed value is discarded whole, as the SDK spec says."""
    try:
        return _kv_list(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES")
    except ValueError:
        return {}


def _scrub(url: str) -> str:
    """A URL safe to print: no password, no header values."""
    try:
        parts = urlsplit(url)
        netloc = _netloc(parts.hostname, parts.port) if parts.hostname else parts.netloc.rpartition("@")[2]
    except ValueError:
        return url.rpartition("@")[2].partition("?")[0]
    query = [(k, (v.partition(":")[0] + ":***") if k == "header" else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe=":*"), ""))


def subject_token(name: str) -> str:
    """A skill or session name as one NATS subject token: ``.`` becomes ``%2E``.

    Names match ``[A-Za-z0-9][A-Za-z0-9._-]*`` so this is reversible.
    """
    return name.replace(".", "%2E")
