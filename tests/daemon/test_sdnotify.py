"""traced.daemon.sdnotify against real sockets: a datagram socket the test binds for
NOTIFY_SOCKET, and real descriptors passed to child processes for LISTEN_FDS
(both hand-made with dup2 and by systemd's own systemd-socket-activate)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from traced.daemon.sdnotify import Notifier, listen_fds

SRC = Path(__file__).resolve().parents[2] / "src"
NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without any systemd variables (pytest may run under systemd)."""
    for name in (*NOTIFY_VARS, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short private directory for socket files (AF_UNIX paths max out at 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture
def path_receiver(sock_dir: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound at a file-system path: (NOTIFY_SOCKET value, socket)."""
    path = str(sock_dir / "notify")
    sock = _receiver(path)
    yield path, sock
    sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound at an abstract name: ("@name", socket)."""
    name = f"traced-test-notify-{uuid.uuid4().hex}"
    sock = _receiver("\0" + name)
    yield "@" + name, sock
    sock.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _socket_inodes() -> set[str]:
    """The sockets this process holds open, by inode ("socket:[1234]")."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory fd listdir used, already closed
        if target.startswith("socket:"):
            found.add(target)
    return found


# --- Notifier ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_messages_arrive_byte_exact(
    kind: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address, receiver = request.getfixturevalue(f"{kind}_receiver")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = Notifier.from_env()
    assert notifier.enabled
    try:
        notifier.ready()
        notifier.ready("listening on /run/user/1000/traced/traced.sock")
        notifier.status("3 sessions open")
        notifier.status("two\nlines")
        notifier.stopping()
        notifier.watchdog()
        notifier.mainpid(4242)
        notifier.notify("EXTEND_TIMEOUT_USEC=5000000", "", "STATUS=ünïcode")
        notifier.status("bad \ud800 surrogate")
        expected = [
            b"READY=1",
            b"READY=1\nSTATUS=listening on /run/user/1000/traced/traced.sock",
            b"STATUS=3 sessions open",
            b"STATUS=two lines",
            b"STOPPING=1",
            b"WATCHDOG=1",
            b"MAINPID=4242",
            "EXTEND_TIMEOUT_USEC=5000000\nSTATUS=ünïcode".encode(),
            b"STATUS=bad ? surrogate",
        ]
        assert [receiver.recv(4096) for _ in expected] == expected
    finally:
        notifier.close()


def test_reloading_carries_monotonic_usec(
    path_receiver: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = path_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    notifier = Notifier.from_env()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready()
    first, second = receiver.recv(4096), receiver.recv(4096)
    notifier.close()
    lines = first.decode().split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after
    assert len(lines) == 2
    assert second == b"READY=1"


def test_one_socket_is_reused(
    path_receiver: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = path_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    before = _socket_inodes()
    notifier = Notifier.from_env()
    notifier.watchdog()
    opened = _socket_inodes() - before
    assert len(opened) == 1  # connected once ...
    assert receiver.recv(64) == b"WATCHDOG=1"
    for i in range(50):
        notifier.status(str(i))
        assert receiver.recv(64) == f"STATUS={i}".encode()
    assert _socket_inodes() - before == opened  # ... and reused
    notifier.close()
    assert not (_socket_inodes() & opened)


def test_a_full_queue_drops_without_blocking_long(
    path_receiver: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manager that does not read fills the queue: sends time out, never raise."""
    address, receiver = path_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    before = _socket_inodes()
    notifier = Notifier.from_env(send_timeout=0.05)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 0.5 or sent < 20:  # far past the queue length
        notifier.status(str(sent))
        sent += 1
        if time.monotonic() - start > 30:
            break
    full_before = time.monotonic()
    notifier.watchdog()  # one more against a full queue: bounded by send_timeout
    assert time.monotonic() - full_before < 1.0
    received = []
    receiver.settimeout(0.2)
    try:
        while True:
            received.append(receiver.recv(64))
    except TimeoutError:
        pass
    assert received[0] == b"STATUS=0"
    assert 0 < len(received) < sent + 1  # the overflow was dropped, in order
    assert received == [f"STATUS={i}".encode() for i in range(len(received))]
    assert len(_socket_inodes() - before) == 1  # no reconnect churn on timeouts
    notifier.ready()  # the queue drained: notifications flow again
    receiver.settimeout(5)
    assert receiver.recv(64) == b"READY=1"
    notifier.close()


def test_reconnects_after_the_manager_socket_is_replaced(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(sock_dir / "notify")
    first = _receiver(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier.from_env()
    notifier.status("one")
    assert first.recv(64) == b"STATUS=one"
    first.close()
    os.unlink(path)
    second = _receiver(path)
    try:
        notifier.status("two")
        assert second.recv(64) == b"STATUS=two"
    finally:
        second.close()
        notifier.close()


def test_never_raises_when_nobody_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing"))
    notifier = Notifier.from_env()
    assert notifier.enabled
    notifier.ready("x")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    notifier.close()


def test_no_op_without_notify_socket() -> None:
    fds = _open_fds()
    notifier = Notifier.from_env()
    assert not notifier.enabled
    notifier.ready("x")
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog()
    notifier.mainpid(1)
    notifier.notify("READY=1")
    notifier.close()
    assert _open_fds() == fds  # no socket was even created
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "relative/notify", "vsock:2:1234", "@"])
def test_unusable_notify_socket_disables(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    notifier = Notifier.from_env()
    assert not notifier.enabled
    notifier.ready()


def test_from_env_unset_env(
    path_receiver: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = path_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_env(unset_env=True)
    for name in NOTIFY_VARS:
        assert name not in os.environ
    assert notifier.watchdog_interval() == 1.0
    notifier.ready()
    assert receiver.recv(64) == b"READY=1"
    notifier.close()


def test_from_env_keeps_env_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@whatever")
    monkeypatch.setenv("WATCHDOG_USEC", "1")
    Notifier.from_env()
    assert os.environ["NOTIFY_SOCKET"] == "@whatever"
    assert os.environ["WATCHDOG_USEC"] == "1"


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("500000", "self", 0.25),
        ("30000000", "other", None),
        (None, None, None),
        (None, "self", None),
        ("0", None, None),
        ("soon", None, None),
        ("-5", None, None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@traced-test-unused")
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_env().watchdog_interval() == expected


# --- listen_fds ---------------------------------------------------------------

# Runs in a child. argv: a JSON list of inherited fds to place at 3, 4, ...;
# then LISTEN_PID is set to the child's own pid (unless LISTEN_PID_OFFSET
# says otherwise) and the child re-execs itself, keeping its pid, to call
# listen_fds() exactly as a socket-activated daemon does at startup.
CHILD = r"""
import json, os, socket, sys
if os.environ.get("STAGE") != "2":
    fds = json.loads(sys.argv[1])
    for i, fd in enumerate(fds):
        os.dup2(fd, 3 + i)  # inheritable
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid() + int(os.environ.get("LISTEN_PID_OFFSET", "0")))
    os.environ["LISTEN_FDNAMES"] = ":".join(f"fd{i}" for i in range(len(fds)))
    os.environ["STAGE"] = "2"
    os.execv(sys.executable, [sys.executable, "-c", os.environ["CHILD"], *sys.argv[1:]])

from traced.daemon.sdnotify import listen_fds
try:
    socks = listen_fds(unset_env=os.environ.get("UNSET", "1") == "1")
except ValueError as exc:
    print(json.dumps({"error": str(exc)}), flush=True)
    sys.exit(0)
report = {
    "socks": [
        {
            "fd": s.fileno(),
            "family": s.family.name,
            "type": s.type.name,
            "name": s.getsockname() if s.family == socket.AF_UNIX else None,
            "inheritable": s.get_inheritable(),
        }
        for s in socks
    ],
    "env": {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")},
}
print(json.dumps(report), flush=True)
for s in socks:
    if s.type == socket.SOCK_STREAM and s.family == socket.AF_UNIX and s.getsockname():
        conn, _ = s.accept()          # the listening socket really listens
        conn.sendall(b"accepted\n")
        conn.close()
    elif s.type == socket.SOCK_STREAM:
        s.sendall(b"pair\n")          # the socketpair end really is connected
    elif s.type == socket.SOCK_DGRAM:
        data, addr = s.recvfrom(64)   # the datagram socket really is bound
        s.sendto(data.upper(), addr)
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["CHILD"] = CHILD
    env.update(extra)
    return env


def _spawn(fds: list[int], **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(fds)],
        env=_child_env(**extra),
        pass_fds=fds,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_listen_fds_in_an_activated_child(sock_dir: Path) -> None:
    sock_path = str(sock_dir / "traced.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()
    ours, theirs = socket.socketpair()
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dgram.bind(("127.0.0.1", 0))
    fds = [listener.fileno(), theirs.fileno(), dgram.fileno()]
    child = _spawn(fds)
    try:
        assert child.stdout is not None
        report = json.loads(child.stdout.readline())
        assert report["socks"] == [
            {
                "fd": 3,
                "family": "AF_UNIX",
                "type": "SOCK_STREAM",
                "name": sock_path,
                "inheritable": False,
            },
            {"fd": 4, "family": "AF_UNIX", "type": "SOCK_STREAM", "name": "", "inheritable": False},
            {
                "fd": 5,
                "family": "AF_INET",
                "type": "SOCK_DGRAM",
                "name": None,
                "inheritable": False,
            },
        ]
        assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(sock_path)
        assert client.makefile("rb").readline() == b"accepted\n"
        client.close()
        ours.settimeout(10)
        assert ours.makefile("rb").readline() == b"pair\n"
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(10)
        probe.sendto(b"ping", dgram.getsockname())
        assert probe.recv(64) == b"PING"
        probe.close()
        assert child.wait(10) == 0, child.stderr.read() if child.stderr else ""
    finally:
        child.kill()
        child.wait()
        for s in (listener, ours, theirs, dgram):
            s.close()


def test_listen_fds_keeps_env_when_asked() -> None:
    a, b = socket.socketpair()
    child = _spawn([b.fileno()], UNSET="0")
    try:
        out, _err = child.communicate(timeout=10)
        report = json.loads(out.splitlines()[0])
        assert len(report["socks"]) == 1
        assert report["env"]["LISTEN_FDS"] == "1"
        assert report["env"]["LISTEN_PID"].isdigit()
        assert report["env"]["LISTEN_FDNAMES"] == "fd0"
    finally:
        a.close()
        b.close()


def test_listen_fds_ignores_another_pids_fds() -> None:
    a, b = socket.socketpair()
    child = _spawn([b.fileno()], LISTEN_PID_OFFSET="1")
    try:
        out, _err = child.communicate(timeout=10)
        report = json.loads(out.splitlines()[0])
        assert report["socks"] == []
        # Unset even so, like sd_listen_fds(): grandchildren must not see them.
        assert report["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}
    finally:
        a.close()
        b.close()


def test_listen_fds_rejects_a_non_socket() -> None:
    r, w = os.pipe()
    child = _spawn([r])
    try:
        out, _err = child.communicate(timeout=10)
        report = json.loads(out.splitlines()[0])
        assert "descriptor 3 is not a usable socket" in report["error"]
    finally:
        os.close(r)
        os.close(w)


def test_listen_fds_without_activation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert listen_fds() == []
    monkeypatch.setenv("LISTEN_FDS", "2")  # but no LISTEN_PID
    assert listen_fds(unset_env=False) == []
    assert os.environ["LISTEN_FDS"] == "2"
    monkeypatch.setenv("LISTEN_PID", "not-a-pid")
    assert listen_fds() == []
    assert "LISTEN_FDS" not in os.environ
    assert "LISTEN_PID" not in os.environ


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed"
)
def test_listen_fds_under_systemd_socket_activate(sock_dir: Path) -> None:
    """systemd's own launcher sets LISTEN_* and passes the socket: the real protocol."""
    sock_path = str(sock_dir / "traced.sock")
    script = (
        "import json, os, socket\n"
        "from traced.daemon.sdnotify import listen_fds\n"
        "names = os.environ.get('LISTEN_FDNAMES')\n"
        "socks = listen_fds()\n"
        "conn, _ = socks[0].accept()\n"
        "conn.sendall(json.dumps({'n': len(socks), 'fd': socks[0].fileno(),\n"
        "    'name': socks[0].getsockname(), 'type': socks[0].type.name,\n"
        "    'fdnames': names, 'left': os.environ.get('LISTEN_FDS'),\n"
        "    'cloexec': not socks[0].get_inheritable()}).encode() + b'\\n')\n"
        "conn.close()\n"
    )
    env = _child_env()
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            sock_path,
            "--fdname=traced.socket",
            "-E",
            "PYTHONPATH",
            sys.executable,
            "-c",
            script,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "Listening on <path> as 3."
        assert "Listening on" in line, line
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(sock_path)  # the first connection makes it exec the child
        report = json.loads(client.makefile("rb").readline())
        client.close()
        assert report == {
            "n": 1,
            "fd": 3,
            "name": sock_path,
            "type": "SOCK_STREAM",
            "fdnames": "traced.socket",
            "left": None,
            "cloexec": True,
        }
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
