"""The peers traced is measured against: rsyslog over a Unix stream socket, and plain file appends."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lib import HERE, BenchFailure, check_lines_file


def ensure_rsyslog(log: list[str]) -> str | None:
    """The rsyslogd path, installing Debian's package when missing and we are root; None to skip."""
    found = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log.append("rsyslogd is not installed and we are not root: the rsyslog column is skipped")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "rsyslog"]
    res = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True, text=True)
        res = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    found = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
    if not found:
        log.append(f"installing rsyslog failed ({res.stderr.strip()[-200:]}): the rsyslog column is skipped")
        return None
    log.append("installed rsyslog with apt-get")
    return found


def rsyslog_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "-v"], check=False, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


class Rsyslog:
    """rsyslogd in the foreground, as nobody when we are root, imptcp on a Unix stream socket -> omfile."""

    def __init__(self, binary: str, base: Path) -> None:
        self.binary = binary
        self.dir = base / "rsyslog"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        os.chmod(base, 0o711)  # rsyslogd runs as nobody: it must reach its dir (but list nothing)
        (self.dir / "rsyslog-work").mkdir()
        os.chmod(self.dir, 0o1777)
        os.chmod(self.dir / "rsyslog-work", 0o1777)
        self.socket = self.dir / "rs-stream.sock"
        self.out = self.dir / "out.log"
        self.log = self.dir / "rsyslog.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Rsyslog:
        conf = (HERE / "rsyslog.conf.in").read_text().replace("@D@", str(self.dir))
        (self.dir / "rsyslog.conf").write_text(conf)
        drop = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                if os.geteuid() == 0 and shutil.which("setpriv") else [])
        cmd = [*drop, self.binary, "-n", "-f", str(self.dir / "rsyslog.conf"), "-i", str(self.dir / "rsyslog.pid")]
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchFailure(f"rsyslogd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.01)
        time.sleep(0.2)
        return self

    def size(self) -> int:
        try:
            return self.out.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_size(self, size: int, timeout: float = 120.0) -> float:
        """Poll (every 1 ms) until the output holds ``size`` bytes; returns the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            cur = self.size()
            if cur >= size:
                return now
            if now > deadline:
                raise BenchFailure(f"rsyslog: {cur} of {size} bytes after {timeout}s")
            if self.proc is None or self.proc.poll() is not None:
                raise BenchFailure("rsyslogd died")
            time.sleep(0.001)

    def check_region(self, start: int, n: int, seqoff: int, reclen: int, what: str) -> None:
        """The ``n`` lines appended after offset ``start`` hold every seq exactly once."""
        tmp = self.dir / "region.chk"
        with open(self.out, "rb") as f:
            f.seek(start)
            tmp.write_bytes(f.read())
        try:
            check_lines_file(tmp, n, seqoff, reclen, what)
        finally:
            tmp.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class MiniServer:
    """bench/miniserver.py: the floor cost of a Python daemon speaking traced's protocol."""

    def __init__(self, python: str, base: Path) -> None:
        self.python = python
        self.dir = base / "mini"
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "out").mkdir(parents=True)
        self.socket = self.dir / "mini.sock"
        self.out = self.dir / "out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MiniServer:
        with open(self.dir / "mini.log", "wb") as logf:
            self.proc = subprocess.Popen([self.python, str(HERE / "miniserver.py"), str(self.socket), str(self.out)],
                                         stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchFailure(f"miniserver did not start: {(self.dir / 'mini.log').read_text()[-2000:]}")
            time.sleep(0.01)
        return self

    def trace(self, sid: str) -> Path:
        return self.out / f"{sid}.jsonl"

    def reset(self) -> None:
        for f in self.out.iterdir():
            f.unlink()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def stamped_lines(line: bytes, seqoff: int, n: int) -> list[bytes]:
    """``n`` copies of ``line`` with the 10-digit field at ``seqoff`` set to 0..n-1."""
    head, tail = line[:seqoff], line[seqoff + 10:]
    return [b"%s%010d%s" % (head, i, tail) for i in range(n)]


FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def raw_oswrite(path: Path, lines: list[bytes]) -> float:
    """One Python process, fd kept open with O_APPEND, one os.write per line: seconds."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    write = os.write
    t0 = time.perf_counter()
    fd = os.open(path, FLAGS, 0o600)
    for line in lines:
        write(fd, line)
    os.close(fd)
    return time.perf_counter() - t0


def raw_batched(path: Path, lines: list[bytes], batch: int = 64 * 1024) -> float:
    """Like raw_oswrite, but lines are joined into ~64 KiB writes (what traced does per read)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    per = max(1, batch // max(1, len(lines[0])))
    write = os.write
    join = b"".join
    t0 = time.perf_counter()
    fd = os.open(path, FLAGS, 0o600)
    for i in range(0, len(lines), per):
        write(fd, join(lines[i: i + per]))
    os.close(fd)
    return time.perf_counter() - t0


def naive_openclose(path: Path, lines: list[bytes]) -> float:
    """What a skill writing its own JSONL does: ``with open(path, "ab")`` per event."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    t0 = time.perf_counter()
    for line in lines:
        with open(path, "ab") as f:
            f.write(line)
    return time.perf_counter() - t0
