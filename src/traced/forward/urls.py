"""Forwarding destinations: parsing ``--forward URL``, headers, display form and identity.

Accepted URLs:

- ``nats://[user:pass@|token@]host:port[?stream=TRACED&subject=traced&duplicate_window=120&creds=FILE]``
  (``tls://`` for NATS over TLS);
- ``http(s)://host:port[/path][?header=Name:Value&service=traced&project=NAME]``: OTLP/HTTP
  protobuf. An empty path means ``/v1/traces``.

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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from traced.errors import ForwardURLError

NATS_SCHEMES: Final = ("nats", "tls")
OTLP_SCHEMES: Final = ("http", "https")
DEFAULT_OTLP_PATH: Final = "/v1/traces"
_ENV_RE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SUBJECT_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_NATS_KEYS: Final = frozenset({"stream", "subject", "duplicate_window", "creds"})
_OTLP_KEYS: Final = frozenset({"header", "service", "project"})


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
    """Parse a ``--forward`` URL; ``headers`` (from the config) are added to OTLP requests."""
    raw = url.strip()
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
        for name, value in (headers or {}).items():
            hdrs[name] = value
        for name in list(hdrs):
            if not _HEADER_NAME_RE.match(name):
                raise ForwardURLError(f"--forward {_scrub(raw)!r}: bad header name {name!r}")
            hdrs[name] = expand_env(hdrs[name], environ)
            if "\r" in hdrs[name] or "\n" in hdrs[name]:
                raise ForwardURLError(f"--forward {_scrub(raw)!r}: header {name} has a line break")
        path = parts.path or DEFAULT_OTLP_PATH
        target = urlunsplit((scheme, parts.netloc, path, urlencode(rest), ""))
        shown = [("header", f"{name}:***") for name in hdrs]
        display = urlunsplit((scheme, netloc, path, urlencode(rest + shown, safe=":*"), ""))
        identity = urlunsplit((scheme, netloc, path, urlencode(rest), ""))
        return Destination("otlp", target, display, identity, hdrs, options)
    raise ForwardURLError(f"--forward {_scrub(raw)!r}: unknown scheme {scheme!r} "
                          "(nats://, tls://, http:// or https://)")


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
