"""``traced show ID --html``: one self-contained HTML file with the session's waterfall.

The page's script and stylesheet are inlined and allowed by their sha256 hashes
in the file's own Content-Security-Policy (``default-src 'none'``: no network
at all, no other script). The session (``model.session_view``) and every record,
blobs read back, ride in a ``<script type="application/json">`` block whose
``<``, ``>``, ``&`` and line separators are escaped, so no trace text can close
the block. The export needs only the readers: no server library.
"""

from __future__ import annotations

import base64
import hashlib
import html
from pathlib import Path
from typing import Any, Final

import msgspec

from traced.read.sessions import Session
from traced.read.usage import Pricer
from traced.ui import model

STATIC: Final = Path(__file__).parent / "static"
_ESCAPES: Final = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
                   ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def embed_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>``, no ``<!--``)."""
    raw = msgspec.json.encode(data)
    for old, new in _ESCAPES:
        raw = raw.replace(old, new)
    return raw.decode()


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render(session: Session, pricer: Pricer | None = None) -> str:
    """The export of ``session`` as one HTML document (str)."""
    view = model.session_view(session, pricer or Pricer())
    data = {"view": view, "records": model.all_records(session)}
    script = (STATIC / "app.js").read_text()
    style = (STATIC / "app.css").read_text()
    csp = (f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    sid = session.info.session_id
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{html.escape(csp, quote=True)}\">"
        "<meta name=\"referrer\" content=\"no-referrer\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>traced · session {html.escape(sid)}</title>"
        f"<link rel=\"icon\" href=\"data:,\"><style>{style}</style></head>"
        f"<body data-page=\"session\" data-static=\"1\" data-session=\"{html.escape(sid, quote=True)}\">"
        f"<script type=\"application/json\" id=\"traced-data\">{embed_json(data)}</script>"
        f"<div id=\"app\"></div><script>{script}</script></body></html>\n"
    )
