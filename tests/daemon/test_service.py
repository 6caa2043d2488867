"""The daemon under a service manager: socket activation, sd_notify, watchdog (real processes)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def collect(self, until: Any, timeout: float = 30.0) -> list[tuple[float, str]]:
        """Receive datagrams until ``until(messages)`` is true."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"notify messages so far: {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))
        return self.messages

    def has(self, text: str) -> Any:
        return lambda msgs: any(text in m for _, m in msgs)


def test_ready_status_watchdog_and_stopping(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    notify = NotifySocket(d.base / "notify.sock")
    d.env.update({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    d.start(wait=False)
    msgs = notify.collect(notify.has("READY=1"))
    ready = next(m for _, m in msgs if "READY=1" in m)
    assert "STATUS=" in ready
    with d.client() as c:  # READY=1 came only once the socket accepts
        assert c.status()["pid"] == d.proc.pid  # type: ignore[union-attr]
    notify.collect(lambda m: sum("WATCHDOG=1" in x for _, x in m) >= 5)
    pings = [t for t, m in notify.messages if "WATCHDOG=1" in m]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 0.4, "pings at half of WATCHDOG_USEC"
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGHUP)
    notify.collect(notify.has("RELOADING=1"))
    reloading = next(m for _, m in notify.messages if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in reloading
    assert d.stop(signal.SIGTERM) == 0
    notify.collect(notify.has("STOPPING=1"))


def test_status_line_is_refreshed(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    notify = NotifySocket(d.base / "notify.sock")
    d.env.update({"NOTIFY_SOCKET": str(notify.path), "TRACED_STATUS_EVERY": "0.2"})
    d.start()
    with d.client() as c, c.session(skill="st"):
        notify.collect(lambda m: any("STATUS=1 sessions open" in x for _, x in m))


def test_wedged_writer_stops_the_watchdog(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    notify = NotifySocket(d.base / "notify.sock")
    d.env.update({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000",
                  "TRACED_FAULT_WEDGE_SECONDS": "1.5"})
    d.entry = "tests.faults"  # the product has no fault hooks: a test-only wrapper adds this one
    d.start()
    notify.collect(lambda m: sum("WATCHDOG=1" in x for _, x in m) >= 3)
    with d.client() as c:
        opened = c.open("wedge")
        wedged_at = time.monotonic()
        c.emit(opened.session_id, "fault_wedge", {})
        released = time.monotonic()
    assert released - wedged_at >= 1.4
    notify.collect(lambda m: any(t > released and "WATCHDOG=1" in x for t, x in m))
    during = [t for t, x in notify.messages if "WATCHDOG=1" in x and wedged_at + 0.2 < t < released - 0.05]
    assert during == [], "no pings while the writer is wedged"


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
def test_socket_activation(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    d.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in d.env.items() if k != "TRACED_SOCKET"}
    # systemd-socket-activate passes no environment on but what -E names: without these the
    # daemon would write into the real user's state directory
    keep = [f"-E{k}={env[k]}" for k in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "PYTHONPATH")
            if k in env]
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(d.socket), *keep, sys.executable, "-m",
                             "traced", "serve", "--log-format", "json"],
                            env=env, stderr=open(d.log, "ab"))  # noqa: SIM115
    try:
        wait_for(d.socket.exists, what="systemd-socket-activate to bind the socket")
        # the first connection starts the daemon, and it is served
        res = d.cli("status", "--json", check=True)
        info = json.loads(res.stdout)
        assert info["socket_source"] == "activated" and info["socket"] == str(d.socket)
        with d.client() as c, c.session(skill="activated") as s:
            assert s.note("via an activated socket") == 2
        assert len(list(d.root.glob("*/activated/*/trace.jsonl"))) == 1  # in the test's own root
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_sigterm_while_starting_up_is_a_graceful_stop(daemon_factory: Any) -> None:
    """Signals are taken from the "starting" log line on: a SIGTERM during recovery or right
    after the bind (a test, systemd, a user's ^C) stops the daemon with exit 0, its socket
    removed, instead of killing it with the signal's default action."""
    d: Daemon = daemon_factory(start=False)
    d.start(wait=False)
    wait_for(lambda: '"event": "starting"' in d.log.read_text() or not d.alive(), 60, what="the starting line")
    assert d.stop(signal.SIGTERM) == 0, d.log.read_text()
    assert not d.socket.exists()
    assert '"event": "stopped"' in d.log.read_text()
