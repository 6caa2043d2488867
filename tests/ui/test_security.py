"""The UI's gate over plain HTTP (no browser): token, Host, CORS, CSP, read-only, loopback only.

Kinds from the field: DNS rebinding against localhost servers (quick-lint-js#951, restview#51,
bytebase/dbhub#304: validate Host), tokens left in URLs (jupyter/notebook#2127: clear it
after use), trace text breaking out of an inline script (wso2/vscode-extensions#828).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import fixtures_traces as ft
from tests.ui.conftest import Ui, start_ui
from traced.ui.guard import CSP

PATHS = ["/", f"/session/{ft.REVIEW_ID}", "/usage", "/api/sessions", f"/api/session/{ft.REVIEW_ID}",
         f"/api/session/{ft.REVIEW_ID}/record/1", "/api/usage?since=30d", "/static/app.js", "/static/app.css",
         "/api/events", "/no/such/page"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sec") / "sessions"
    ft.build_tree(root)
    return root


@pytest.fixture(scope="module")
def ui(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    server = start_ui([tree], tmp_path_factory.mktemp("ui"))
    yield server
    server.stop()


def raw(ui: Ui, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as-is (to control Host exactly); (status, head)."""
    host, port = ui.hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), head


@pytest.mark.parametrize("path", PATHS)
def test_no_token_no_entry(ui: Ui, path: str) -> None:
    status, headers, body = ui.get(path, cookie=False)
    assert status == 401
    assert "set-cookie" not in headers
    assert ft.REVIEW_ID.encode() not in body


def test_wrong_token_or_cookie_is_refused(ui: Ui) -> None:
    status, headers, _ = ui.get("/?token=" + "A" * len(ui.token), cookie=False)
    assert status == 403 and "set-cookie" not in headers
    assert ui.get("/?token=", cookie=False)[0] == 403
    assert ui.get("/api/sessions", {"Cookie": f"traced_ui_{ui.port}=nope"}, cookie=False)[0] == 401
    other_port = f"traced_ui_{ui.port + 1}={ui.token}"  # another UI's cookie name
    assert ui.get("/api/sessions", {"Cookie": other_port}, cookie=False)[0] == 401
    assert ui.get("/api/sessions", {"Cookie": "garbage;;=="}, cookie=False)[0] == 401


def test_token_becomes_a_strict_httponly_cookie_and_leaves_the_url(ui: Ui) -> None:
    status, headers, body = ui.get(f"/usage?since=7d&token={ui.token}", cookie=False)
    assert status == 200
    assert headers["set-cookie"] == f"traced_ui_{ui.port}={ui.token}; HttpOnly; SameSite=Strict; Path=/"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"] == CSP
    # the page moves on, by itself, to the same address without the token
    assert re.findall(r'<meta http-equiv="refresh" content="([^"]*)">', body.decode()) == ["0;url=/usage?since=7d"]
    assert ui.token not in body.decode()
    assert ui.get("/usage?since=7d")[0] == 200


@pytest.mark.parametrize("host", [
    b"evil.example", b"evil.example:{port}", b"localhost:{port}", b"127.0.0.1", b"127.0.0.1:1",
    b"127.0.0.1.:{port}", b"127.0.0.2:{port}", b"[::1]:{port}", b"", b"127.0.0.1:{port}.evil.example",
])
def test_a_host_that_is_not_the_listen_address_is_refused(ui: Ui, host: bytes) -> None:
    """DNS rebinding: the attacker's page reaches 127.0.0.1 under its own name, token or not."""
    value = host.replace(b"{port}", str(ui.port).encode())
    for target in (b"/api/sessions", b"/?token=" + ui.token.encode()):
        req = (b"GET " + target + b" HTTP/1.1\r\nHost: " + value + b"\r\nCookie: " + ui.cookie().encode() +
               b"\r\nConnection: close\r\n\r\n")
        status, head = raw(ui, req)
        assert status == 403, (value, head)
        assert b"set-cookie" not in head.lower()
    ok = (b"GET /api/sessions HTTP/1.1\r\nHost: " + ui.hostport.encode() + b"\r\nCookie: " + ui.cookie().encode() +
          b"\r\nConnection: close\r\n\r\n")
    assert raw(ui, ok)[0] == 200


def test_no_host_header_is_refused(ui: Ui) -> None:
    status, _ = raw(ui, b"GET /api/sessions HTTP/1.0\r\nCookie: " + ui.cookie().encode() + b"\r\n\r\n")
    assert status == 403


@pytest.mark.parametrize("path", ["/", "/api/sessions", f"/api/session/{ft.REVIEW_ID}", "/static/app.js"])
def test_no_cors_and_a_strict_csp(ui: Ui, path: str) -> None:
    status, headers, _ = ui.get(path, {"Origin": "http://evil.example"})
    assert status == 200
    assert [h for h in headers if h.startswith("access-control-")] == []
    assert headers["content-security-policy"] == CSP
    assert "unsafe" not in CSP and "default-src 'none'" in CSP and "frame-ancestors 'none'" in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    pre = ui.get(path, {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}, method="OPTIONS")
    assert [h for h in pre[1] if h.startswith("access-control-")] == []


def test_pages_carry_no_inline_script_or_style(ui: Ui) -> None:
    for path in ("/", f"/session/{ft.REVIEW_ID}", "/usage"):
        body = ui.get(path)[2].decode()
        assert re.findall(r"<script[^>]*>", body) == ['<script src="/static/app.js">']
        assert "<style" not in body and re.search(r"\s(style|on\w+)=", body) is None


def test_the_ui_never_writes(ui: Ui, tree: Path) -> None:
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tree.rglob("*") if p.is_file()}
    for path in PATHS:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status = ui.get(path, method=method)[0]
            assert status in (404, 405), (method, path, status)
    for path in PATHS[:-1]:
        if path != "/api/events":
            assert ui.get(path)[0] == 200, path
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tree.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("ident", ["%2Fetc%2Fpasswd", "..", "..%2F..%2Fsessions", "-rf", ".hidden"])
def test_a_session_id_is_never_a_path(ui: Ui, ident: str) -> None:
    for path in (f"/api/session/{ident}", f"/api/session/{ident}/record/1"):
        assert ui.get(path)[0] == 404, path
    assert ui.get("/static/..%2Fguard.py")[0] == 404
    status, _, body = ui.get(f'/"><script>x</script>?token={ui.token}', cookie=False)
    assert status == 200 and b"<script>" not in body  # the path is escaped in the token page


@pytest.mark.parametrize(("path", "error"), [
    ("/api/usage?since=all", "usage needs a window"),
    ("/api/usage?since=1990-01-01..2026-11-21", "window too long"),
    ("/api/usage?since=soon", "bad window 'soon'"),
    ("/api/usage?stack=tool", "bad stack 'tool'"),
    ("/api/sessions?since=someday..today", "not a date"),
])
def test_bad_parameters_get_a_clear_400(ui: Ui, path: str, error: str) -> None:
    status, headers, body = ui.get(path)
    assert (status, headers["content-type"]) == (400, "application/json")
    assert error in json.loads(body)["error"]


def test_record_positions_out_of_range_are_404(ui: Ui) -> None:
    for pos in ("0", "18", "999999"):
        assert ui.get(f"/api/session/{ft.REVIEW_ID}/record/{pos}")[0] == 404
    assert ui.get(f"/api/session/{ft.REVIEW_ID}/record/17")[0] == 200


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "192.168.1.10:0", "example.com:80", "127.0.0.1:99999",
                                    "127.0.0.1:x"])
def test_only_loopback_is_served(listen: str, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "traced", "ui", "--no-open", "--listen", listen, "--root",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    assert res.stdout == ""
    assert res.stderr.startswith("traced: --listen: ")


def test_export_csp_allows_only_its_own_script_and_style(tree: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "traced", "show", ft.REVIEW_ID, "--root", str(tree), "--html"],
                         capture_output=True, text=True, timeout=60, check=True)
    page = res.stdout
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert meta is not None
    csp = meta.group(1).replace("&#x27;", "'")
    assert re.fullmatch(r"default-src 'none'; script-src 'sha256-[A-Za-z0-9+/=]+'; style-src 'sha256-[A-Za-z0-9+/="
                        r"]+'; img-src data:; base-uri 'none'; form-action 'none'", csp), csp
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts == [' type="application/json" id="traced-data"', ""]


def test_export_needs_no_server_library() -> None:
    """``show --html`` works without the ``ui`` extra: the export imports no Starlette, uvicorn or SSE."""
    code = ("import sys\nimport traced.ui.export, traced.cli.read\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'sse_starlette')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout.strip() == "[]"


def test_without_the_ui_extra_the_error_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['uvicorn'] = None  # as if the extra were not installed\n"
            "from traced.cli.main import main\n"
            f"sys.exit(main(['ui', '--no-open', '--root', {str(tmp_path)!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr.startswith("traced: traced ui needs uvicorn and starlette: install the extra into traced's "
                                 f"environment ({sys.prefix}): pip install 'traced-daemon[ui]'")
