"""The UI's test harness: a real ``traced ui`` process and one real headless Chromium for the module.

The browser is Debian's ``chromium`` driven through the system ``/usr/bin/chromedriver``
(Selenium Manager never downloads anything: the driver path is given). A test that
fails leaves a screenshot in ``$TRACED_UI_SHOTS`` (default: a temp dir, printed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@dataclass
class Ui:
    """A running ``traced ui``: its URL (token included), address and process."""

    url: str
    proc: subprocess.Popen[str]
    roots: list[Path]
    env: dict[str, str]
    stderr: Path
    logged_in: set[int] = field(default_factory=set)

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    @property
    def hostport(self) -> str:
        return self.base.removeprefix("http://")

    @property
    def port(self) -> int:
        return int(self.hostport.rsplit(":", 1)[1])

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    def cookie(self) -> str:
        return f"traced_ui_{self.port}={self.token}"

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            cookie: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request (no redirects followed): (status, headers lower-cased, body)."""
        hdrs = dict(headers or {})
        if cookie:
            hdrs.setdefault("Cookie", self.cookie())
        req = urllib.request.Request(self.base + path, headers=hdrs, method=method)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=20) as res:
                return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def start_ui(roots: list[Path], tmp: Path, env: dict[str, str] | None = None, *extra: str,
             no_open: bool = True) -> Ui:
    """``traced ui --no-open`` on a free loopback port; returns once the URL is printed and it answers."""
    env = {**os.environ, **(env or {})}
    env.setdefault("TRACED_SOCKET", str(tmp / "no-daemon.sock"))
    env["PYTHONUNBUFFERED"] = "1"
    errf = tmp / f"ui-{len(list(tmp.glob('ui-*.err')))}.err"
    args = [a for r in roots for a in ("--root", str(r))]
    with open(errf, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "traced", "ui", *(["--no-open"] if no_open else []),
                                 *args, *extra],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), (url, errf.read_text())
    ui = Ui(url, proc, roots, env, errf)

    def answers() -> bool:
        try:
            return ui.get("/api/sessions")[0] == 200
        except OSError:
            return False

    wait_for(answers, 30, what=lambda: f"traced ui to answer; stderr: {errf.read_text()}")
    return ui


@pytest.fixture
def ui_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Ui] = []

    def make(roots: list[Path], env: dict[str, str] | None = None, *extra: str) -> Ui:
        ui = start_ui(roots, tmp_path, env, *extra)
        made.append(ui)
        return ui

    yield make
    for ui in made:
        ui.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for every UI test (Debian's, through the system chromedriver)."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--force-device-scale-factor=1", "--lang=en-US"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.stash[_REPORT] = rep
    return rep


_REPORT = pytest.StashKey[Any]()
_SHOTS = Path(os.environ.get("TRACED_UI_SHOTS") or tempfile.mkdtemp(prefix="traced-ui-shots-"))


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The shared browser for one test; a screenshot of it lands in the shots dir if the test fails."""
    yield browser
    rep = request.node.stash.get(_REPORT, None)
    if rep is not None and rep.failed:
        _SHOTS.mkdir(parents=True, exist_ok=True)
        shot = _SHOTS / f"{request.node.name}.png"
        browser.save_screenshot(str(shot))
        print(f"\nscreenshot of the failing page: {shot}", file=sys.stderr)


def login(driver: Any, ui: Ui, path: str = "/") -> None:
    """Open ``path`` with the token once per server (the cookie holds it after)."""
    if ui.port not in ui.logged_in:
        driver.get(ui.url)  # sets the cookie, then the page moves on to / by itself
        wait_for(lambda: driver.current_url == ui.base + "/" and driver.execute_script(
            "return document.readyState === 'complete' && !!document.getElementById('app')"), 15,
            what="the token page to move on to /")
        ui.logged_in.add(ui.port)
    driver.get(ui.base + path)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
