"""Fixtures: a real ``traced serve`` subprocess on a real Unix socket in a short temp dir."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def _describe(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str | Callable[[], str] = "the condition",
             every: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; the only way tests wait.

    Every readiness wait in the suite goes through here (or ``await_for``): a condition
    with a deadline, never a fixed sleep. The deadline is generous (a loaded CI machine
    can be many times slower than a laptop) and only costs time when the test fails. The
    predicate is asked once more after the deadline, so a starved poller does not fail a
    condition that did hold. ``what`` (or a callable giving it, e.g. a log tail) names the
    condition in the AssertionError.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {_describe(what)} (last: {value!r})")
        time.sleep(every)


async def await_for(predicate: Callable[[], T], timeout: float = 30.0, what: str | Callable[[], str] = "the condition",
                    every: float = 0.01) -> T:
    """``wait_for`` for async tests: polls with ``anyio.sleep`` so the event loop keeps running."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {_describe(what)} (last: {value!r})")
        await anyio.sleep(every)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as this process's state and runtime dirs (an in-process Registry writes there)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for var in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "TRACED_ROOT", "TRACED_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="td-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def set_tz(name: str | None) -> None:
    """Set (or, with None, unset) TZ for this process and re-read it."""
    if name is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = name
    time.tzset()


@pytest.fixture
def utc() -> Iterator[None]:
    """TZ=UTC for one test (the reading commands' goldens are in UTC); the old TZ after."""
    old = os.environ.get("TZ")
    set_tz("UTC")
    yield
    set_tz(old)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A sessions root holding the generated tree of tests/fixtures_traces.py."""
    from tests import fixtures_traces

    r = tmp_path / "sessions"
    fixtures_traces.build_tree(r)
    return r


class Daemon:
    """A ``traced serve`` process the test controls: start, stop, kill -9, restart."""

    def __init__(self, base: Path, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.base = base
        self.socket = base / "run" / "traced.sock"
        self.state = base / "state"
        self.root = self.state / "traced" / "sessions"
        self.log = base / "daemon.log"
        self.extra_args = list(extra_args or [])
        self.env = {
            **os.environ,
            "TRACED_SOCKET": str(self.socket),
            "XDG_STATE_HOME": str(self.state),
            "XDG_CONFIG_HOME": str(base / "config"),
            "XDG_RUNTIME_DIR": str(base / "run"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        for var in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "NOTIFY_SOCKET", "LISTEN_FDS",
                    "LISTEN_PID", "TRACED_ROOT"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.entry = "traced"
        """The module run as the daemon: ``tests.faults`` injects test-only faults."""

    def start(self, *args: str, wait: bool = True, preexec: Any = None) -> Daemon:
        cmd = [sys.executable, "-m", self.entry, "serve", "--log-format", "json",
               *self.extra_args, *args]
        if self.entry != "traced":
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=logf,
                                     preexec_fn=preexec)
        logf.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the socket accepts (the daemon binds only after recovery and arming its watchers)."""

        def accepting() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket))
                except OSError:
                    return False
                return True

        wait_for(accepting, timeout, what=lambda: f"the daemon to accept; its log:\n{self.log.read_text()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cli(self, *args: str, input: str | None = None, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "traced", *args], env={**self.env, **(env or {})},
                             input=input, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"traced {' '.join(args)} -> {res.returncode}: {res.stderr}")
        return res

    def client(self) -> Any:
        from traced import Client

        return Client(self.socket, spool_dir=self.state / "traced" / "spool")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


@pytest.fixture
def daemon_factory(short_tmp: Path) -> Iterator[Any]:
    made: list[Daemon] = []

    def make(*args: str, env: dict[str, str] | None = None, start: bool = True) -> Daemon:
        d = Daemon(short_tmp, list(args), env)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        if d.alive():
            d.stop(signal.SIGKILL)
    # every meta.json and trace line a test made the daemon write must stay readable by devboy's own types
    from tests.devboy_schema import check_root

    for root in {d.root for d in made}:
        check_root(root)


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory()
    return d


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a trace, parsed; fails on a torn or invalid line."""
    data = Path(path).read_bytes()
    assert data == b"" or data.endswith(b"\n"), "trace must end with a newline"
    return [json.loads(line) for line in data.splitlines()]


def assert_gap_free(records: list[dict[str, Any]]) -> None:
    steps = [r["step"] for r in records]
    assert steps == list(range(1, len(records) + 1)), f"steps not gap-free: {steps[:20]}…"


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, str]:
    """Run ``python -m traced *argv`` with its stdout on a pseudo-terminal; (exit code, what it printed)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "traced", *argv], stdout=slave, stderr=subprocess.PIPE,
                            env=env, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode()
