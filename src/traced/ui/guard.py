"""The UI's gate (DESIGN §6b), as plain ASGI middleware in front of every route.

In order, for every HTTP request:

1. the ``Host`` header must be exactly the listen address (``127.0.0.1:PORT``):
   anything else is refused with 403, which defeats DNS rebinding;
2. ``?token=…`` with the right token sets the session cookie (HttpOnly,
   SameSite=Strict, named after the port because cookies ignore ports) and
   moves on (a refresh from that page, see ``_continue``) to the same URL
   without the token, so it leaves the address bar and never reaches a
   ``Referer``; a wrong token gets 403;
3. otherwise the cookie must hold the token (compared in constant time): 401.

Every response gets a strict Content-Security-Policy (scripts and styles from
the UI itself only, no inline code, no framing, no other origin), ``nosniff``,
``no-referrer`` and ``no-store``. No CORS header is ever sent. WebSocket
requests are closed: the UI has none.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from html import escape
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def cookie_name(port: int) -> str:
    """The session cookie's name: one per port, since two UIs on one host share cookies."""
    return f"traced_ui_{port}"


class Guard:
    """Host check, token (URL once, then cookie) and security headers around ``app``."""

    def __init__(self, app: ASGIApp, token: str, host: str, port: int) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = {f"{host}:{port}".encode()}
        """Accepted ``Host`` values (bytes, lower case): the listen address only."""
        self.cookie = cookie_name(port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").lower()
        if host not in self.hosts:
            await _plain(send, 403, "refused: Host header is not this server's listen address\n")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given:
            if not hmac.compare_digest(given[-1].encode(), self.token):
                await _plain(send, 403, "wrong token\n")
                return
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = quote(scope.get("path", "/"), safe="/") + (f"?{rest}" if rest else "")
            cookie = f"{self.cookie}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/"
            await _continue(send, location, cookie)
            return
        if not self._has_cookie(headers.get(b"cookie", b"")):
            await _plain(send, 401, "unauthorized: open the URL that `traced ui` printed (it holds the token)\n")
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", [])
                        if not k.lower().startswith(b"access-control-")]
                message["headers"] = kept + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_secured)

    def _has_cookie(self, raw: bytes) -> bool:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw.decode("latin-1"))
        except CookieError:
            return False
        morsel = jar.get(self.cookie)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.token)


async def _continue(send: Send, location: str, cookie: str) -> None:
    """Set the cookie, then move on to ``location`` from this very page.

    Not a 303: when the token URL is reached from another site (the redirect file that
    ``traced ui`` opens, a link in a chat), a redirect stays part of that cross-site
    navigation, and the browser would not send the new SameSite=Strict cookie with it.
    A refresh from this page is a navigation of this site.
    """
    url = escape(location, quote=True)
    body = (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={url}">'
            f'<title>traced ui</title></head><body><a href="{url}">continue</a></body></html>\n').encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               *SECURITY_HEADERS, (b"set-cookie", cookie.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               *SECURITY_HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
