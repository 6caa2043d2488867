"""``traced ui``: bind loopback, print the URL with its token, serve the app with uvicorn.

The socket is bound here (port 0 picks a free one) so that the URL printed
first on stdout is the real one before the server starts. ``live.follow``
runs beside the server in the same task group.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from traced.errors import EXIT_USAGE, CliError

DEFAULT_LISTEN: Final = "127.0.0.1:0"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); only loopback addresses.

    Raises CliError (exit 2) for a bad address, a bad port or a non-loopback host.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "0"
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise CliError(f"--listen: bad port in {text!r}", EXIT_USAGE) from None
    if not 0 <= port <= 65535:
        raise CliError(f"--listen: port out of range in {text!r}", EXIT_USAGE)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise CliError(f"--listen: {host!r} is not an IP address (use 127.0.0.1 or ::1)", EXIT_USAGE) from None
    if not addr.is_loopback:
        raise CliError(f"--listen: {host} is not a loopback address; the UI serves this machine only", EXIT_USAGE)
    return host, port


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CliError(f"--listen: cannot bind {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def host_header(host: str, port: int) -> str:
    """The ``Host`` a browser sends for this address (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(listen: str, roots: Sequence[Path], socket_path: str | None, open_browser: bool) -> int:
    """Serve until interrupted; the first stdout line is the URL to open (token included)."""
    try:
        import uvicorn
    except ImportError:
        from traced._version import install_hint

        raise CliError(f"traced ui needs uvicorn and starlette: {install_hint('ui', 'uvicorn starlette sse-starlette')}"
                       ) from None
    import anyio

    from traced.ui.app import State, build
    from traced.ui.guard import Guard
    from traced.ui.live import follow

    host, port = parse_listen(listen)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(32)
    where = host_header(host, port)
    url = f"http://{where}/?token={token}"
    print(url, flush=True)
    state = State(list(roots))
    guarded = Guard(build(state), token, where.rsplit(":", 1)[0], port)
    config = uvicorn.Config(guarded, log_level="warning", access_log=False, timeout_graceful_shutdown=1,
                            lifespan="off", server_header=False, proxy_headers=False)
    server = uvicorn.Server(config)
    opener = open_in_browser(url) if open_browser else None

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, state.hub, state.roots, socket_path)
            await server.serve(sockets=[sock])
            tg.cancel_scope.cancel()

    import signal

    def stop(_signum: int, _frame: object) -> None:
        # uvicorn hands SIGTERM back once it has stopped (the default action would kill the process
        # before `finally` removes the token's redirect file); outside serve it asks it to stop
        server.should_exit = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        anyio.run(main)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        if opener is not None:
            shutil.rmtree(opener, ignore_errors=True)
    return 0


def open_in_browser(url: str) -> Path | None:
    """Open ``url`` through a redirect file, so the token is never on a command line.

    A browser started as ``xdg-open URL`` shows its argv to every local user (``ps``);
    the file ``<private temp dir>/open.html`` (0600, removed when the UI exits) holds
    the URL instead (jupyter/notebook#4260). Returns that directory; None when no
    browser could be started (the printed URL still works).
    """
    import tempfile
    import webbrowser
    from html import escape

    where = Path(tempfile.mkdtemp(prefix="traced-ui-"))  # 0700
    page = where / "open.html"
    target = escape(url, quote=True)
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url='
                f'{target}"><title>traced ui</title></head><body><a href="{target}">open traced ui</a></body></html>\n')
    try:
        opened = webbrowser.open(page.as_uri())
    except Exception:  # webbrowser raises what the launcher raises
        opened = False
    if not opened:
        sys.stderr.write("traced ui: could not open a browser; open the URL above\n")
    return where
