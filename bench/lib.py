# ruff: noqa: PLR0124
"""Shared pieces of scripts/bench: the daemon under test, payloads, frames, checks, stats."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable
SEQ0 = "0000000000"
SEQ64_BASE = 1 << 32
"""The C client's ``seq`` (idempotency key) of event i is SEQ64_BASE + i: always a msgpack uint64
(8 bytes after 0xcf), so ``tdclient`` can stamp it in place (TDC_SEQ64)."""


class BenchFailure(Exception):
    """A correctness check failed: the result must not be reported as a number."""


# --- stats ---------------------------------------------------------------------------------


@dataclass
class Series:
    """One value per run."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(float(v))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[i]


# --- machine ------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    from importlib.metadata import version

    import anyio  # noqa: F401

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:
            return "?"

    fs = "?"
    with contextlib.suppress(Exception):
        fs = subprocess.run(["df", "--output=fstype", tempfile.gettempdir()], check=False, capture_output=True,
                            text=True).stdout.split()[-1]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "msgspec": v("msgspec"),
        "anyio": v("anyio"),
        "uvloop": v("uvloop"),
        "traced": v("traced"),
        "tmp_fs": fs,
        "git": _git_rev(),
    }


def _os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               check=False, capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip() or "?"
        return rev + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:
        return "?"


def cpu_times() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return []


def steal_share(before: list[int], after: list[int]) -> float:
    """Fraction of CPU time the hypervisor stole between two ``cpu_times()`` snapshots."""
    if len(before) < 8 or len(after) < 8:
        return float("nan")
    d = [a - b for a, b in zip(after, before, strict=False)]
    total = sum(d[:8])
    return d[7] / total if total > 0 else float("nan")


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy (user+nice+system+irq+steal) over ``seconds``, from /proc/stat."""

    def snap() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]), idle

    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except (OSError, ValueError, IndexError):
        return float("nan")


def raise_nofile(want: int = 65536) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit as far as allowed; returns the (soft, hard) in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < want:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM (kB) of a process."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# --- the daemon under test ----------------------------------------------------------------


class Daemon:
    """A ``traced serve`` subprocess on a short temp socket (like tests/conftest.py)."""

    def __init__(self, base: Path, name: str, args: Iterable[str] = ()) -> None:
        self.base = base / name
        self.base.mkdir(parents=True)
        self.socket = self.base / "run" / "traced.sock"
        self.state = self.base / "state"
        self.root = self.state / "traced" / "sessions"
        self.log = self.base / "daemon.log"
        self.args = list(args)
        self.env = {
            **os.environ,
            "TRACED_SOCKET": str(self.socket),
            "XDG_STATE_HOME": str(self.state),
            "XDG_CONFIG_HOME": str(self.base / "config"),
            "XDG_RUNTIME_DIR": str(self.base / "run"),
            "PYTHONUNBUFFERED": "1",
        }
        for var in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
                    "TRACED_ROOT", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Daemon:
        cmd = [PY, "-m", "traced", "serve", "--log-format", "json", *self.args]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchFailure(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.socket))
                return self
            except OSError:
                time.sleep(0.02)
            finally:
                probe.close()
        raise BenchFailure(f"daemon not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchFailure(f"daemon died:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def client(self) -> Any:
        from traced import Client

        return Client(self.socket, spool=False, spool_after=0.0, name="bench")

    def errors_logged(self) -> list[str]:
        """Error/exception lines of the daemon's log."""
        bad = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                if '"level":"error"' in line.replace(" ", "") or "Traceback" in line:
                    bad.append(line[:300])
        return bad


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tdb-", dir="/tmp"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# --- realistic events ---------------------------------------------------------------------

_CMDS = (
    "git diff --stat HEAD~3 -- src/traced/server.py",
    "pytest -q tests/test_daemon.py -k pipelined",
    "rg -n 'def handle' src/ --type py",
    "ls -la /home/dev/proj/src/traced",
    "npm run build -- --mode production",
    "cargo test -p core --lib -- parser",
)

_CODE = "".join(
    f"    def handle_{i}(self, request: Request) -> Response:\n"
    f"        \"\"\"Route {i}: validate, then answer from the cache or the backend.\"\"\"\n"
    f"        if not request.user.can('route_{i}'):\n            raise Forbidden(request.path)\n"
    f"        return self.backend.fetch(request, timeout=self.timeout)\n\n"
    for i in range(40)
)


def payload(size: int, i: int, seqtext: str | None = None) -> dict[str, Any]:
    """A realistic tool_call payload; ``call_id`` carries the event's unique sequence number.

    size 200: a Bash call (frame ≈ 200 B); size 2000: an Edit with code (frame ≈ 2 KB).
    """
    cid = "toolu_" + (seqtext if seqtext is not None else f"{i:010d}")
    if size <= 200:
        return {"tool": "Bash", "args": {"cmd": f"{_CMDS[i % len(_CMDS)]} #{i % 997}", "timeout": 120000},
                "call_id": cid}
    k = i % 30
    old = _CODE[k * 40: k * 40 + 880]
    return {"tool": "Edit", "call_id": cid, "kind": "tool",
            "args": {"file_path": f"/home/dev/proj/src/app/handlers_{i % 97}.py",
                     "old_string": old, "new_string": old.replace("fetch", "fetch_cached") + f"# {i}\n"}}


def emit_frame(session_id: str, size: int, ack: bool) -> tuple[bytes, int]:
    """One framed ``emit`` (length prefix + msgpack body) and the offset of its 10-digit seq."""
    from traced.wire import protocol
    from traced.wire.protocol import encode

    msg = protocol.Emit(session_id=session_id, phase="tool_call", payload=payload(size, 7, SEQ0),
                        ts=time.time(), ack=ack, seq=SEQ64_BASE)
    frame = bytes(encode(msg))
    return frame, _seq_at(frame)


def emit_frames(session_ids: Iterable[str], size: int, ack: bool) -> tuple[list[bytes], int]:
    """One ``emit_frame`` per session (the C client's records) and the offset of their seq (the same in each)."""
    frames = []
    off = 0
    for sid in session_ids:
        frame, off = emit_frame(sid, size, ack)
        frames.append(frame)
    return frames, off


def batch_frame(session_id: str, size: int, events: int) -> tuple[bytes, list[int]]:
    """One framed ``emit_batch`` of ``events`` events (ack=False) and the offsets of their seqs."""
    from traced.wire import protocol
    from traced.wire.protocol import encode

    now = time.time()
    msg = protocol.EmitBatch(session_id=session_id, ack=False, events=[
        protocol.Event(phase="tool_call", payload=payload(size, 7 + i, SEQ0), ts=now, seq=SEQ64_BASE)
        for i in range(events)])
    frame = bytes(encode(msg))
    offs = []
    anchor = b"toolu_" + SEQ0.encode()
    at = frame.find(anchor)
    while at >= 0:
        offs.append(at + 6)
        at = frame.find(anchor, at + 16)
    if len(offs) != events:
        raise BenchFailure(f"emit_batch frame: {len(offs)} sequence fields for {events} events")
    return frame, offs


def seq64_offsets(frame: bytes) -> list[int]:
    """Offsets of the 8-byte big-endian ``seq`` values (msgpack ``"seq"`` then uint64) in a frame."""
    anchor = b"\xa3seq\xcf"
    offs = []
    at = frame.find(anchor)
    while at >= 0:
        offs.append(at + len(anchor))
        at = frame.find(anchor, at + len(anchor) + 8)
    return offs


def hello_frames(k: int) -> tuple[bytes, int]:
    """``k`` framed ``hello`` requests, each with its own client_id, all of one size: (bytes, size)."""
    from traced.format.ids import new_ulid
    from traced.wire import protocol
    from traced.wire.protocol import encode

    frames = [bytes(encode(protocol.Hello(id=1, client="tdclient", client_id=new_ulid(), pid=os.getpid(),
                                          cwd="/tmp"))) for _ in range(k)]
    if len({len(f) for f in frames}) != 1:
        raise BenchFailure("hello frames of unequal size")
    return b"".join(frames), len(frames[0])


def sync_frame() -> bytes:
    from traced.wire import protocol
    from traced.wire.protocol import encode

    return bytes(encode(protocol.Sync(id=999_999)))


def _seq_at(data: bytes) -> int:
    """Offset of the 10-digit sequence field: the digits after ``toolu_`` in call_id."""
    return data.index(b"toolu_" + SEQ0.encode()) + 6


def peer_line(size: int, session_id: str = "01JDBENCHXK6T2M9V4B7C5N1P0R") -> tuple[bytes, int]:
    """The JSONL line traced writes for such an event (as the peers get it) and its seq offset."""
    from traced.format.records import Record, format_ts, json_encoder

    rec = Record(ts=format_ts(time.time()), skill="bench", session_id=session_id, step=123456,
                 phase="tool_call", payload=payload(size, 7, SEQ0))
    line = json_encoder.encode(rec) + b"\n"
    return line, _seq_at(line)


# --- checking what landed -----------------------------------------------------------------


class _P(msgspec.Struct):
    call_id: str = ""


class _Line(msgspec.Struct):
    step: int
    phase: str
    payload: _P
    client_seq: str = ""


_line_decoder = msgspec.json.Decoder(_Line)


@dataclass
class TraceCheck:
    """What one trace.jsonl holds."""

    lines: int = 0
    events: list[int] = field(default_factory=list)
    """Sequence numbers (from call_id) of the tool_call records, in file order."""
    phases: dict[str, int] = field(default_factory=dict)
    keyed: int = 0
    """tool_call records that carry the C client's idempotency key (``client_seq`` = client_id:seq)."""


def check_trace(path: Path | str, need_start: bool = True) -> TraceCheck:
    """Parse a trace: every line valid, steps 1..n gap-free; collect the event seqs."""
    data = Path(path).read_bytes()
    if data and not data.endswith(b"\n"):
        raise BenchFailure(f"{path}: torn last line")
    tc = TraceCheck()
    expect = 1
    for raw in data.splitlines():
        try:
            line = _line_decoder.decode(raw)
        except msgspec.DecodeError as e:
            raise BenchFailure(f"{path}: invalid line {expect}: {e}: {raw[:120]!r}") from e
        if line.step != expect:
            raise BenchFailure(f"{path}: step {line.step} where {expect} was expected (gap or duplicate)")
        expect += 1
        tc.phases[line.phase] = tc.phases.get(line.phase, 0) + 1
        if line.phase == "tool_call":
            cid = line.payload.call_id
            if not cid.startswith("toolu_"):
                raise BenchFailure(f"{path}: tool_call without a bench call_id at step {line.step}")
            seq = int(cid[6:])
            tc.events.append(seq)
            client, _, key = line.client_seq.rpartition(":")
            if len(client) == 26 and key.isdigit() and int(key) >= SEQ64_BASE:  # the C client's: a ULID id
                # (the OTLP receiver's keys, otlp:<span hash>, are no bench sequence numbers)
                if int(key) != SEQ64_BASE + seq:
                    raise BenchFailure(f"{path}: step {line.step}: client_seq {line.client_seq} for event {seq}")
                tc.keyed += 1
    tc.lines = expect - 1
    if need_start and (tc.lines == 0 or tc.phases.get("start", 0) < 1):
        raise BenchFailure(f"{path}: no start record")
    return tc


def check_keyed(tc: TraceCheck, what: str) -> None:
    """Every event carried the C client's idempotency key (its ``client_seq`` was checked in check_trace)."""
    if tc.keyed != len(tc.events):
        raise BenchFailure(f"{what}: {len(tc.events) - tc.keyed} of {len(tc.events)} events carry no client_seq")


def check_exactly_once(seqs: Iterable[int], n: int, what: str) -> None:
    """Every sequence number 0..n-1 exactly once."""
    seen = bytearray(n)
    extra = 0
    total = 0
    for s in seqs:
        total += 1
        if 0 <= s < n:
            if seen[s]:
                raise BenchFailure(f"{what}: event {s} landed twice")
            seen[s] = 1
        else:
            extra += 1
    missing = n - sum(seen)
    if missing or extra:
        raise BenchFailure(f"{what}: {missing} of {n} events missing, {extra} unexpected ({total} seen)")


def check_lines_file(path: Path, n: int, seqoff: int, reclen: int, what: str) -> None:
    """A peer's output file: n lines of reclen bytes, every seq exactly once."""
    data = Path(path).read_bytes()
    if len(data) != n * reclen:
        raise BenchFailure(f"{what}: {len(data)} bytes, expected {n * reclen}")
    mv = memoryview(data)
    check_exactly_once((int(mv[i + seqoff: i + seqoff + 10]) for i in range(0, len(data), reclen)), n, what)
    if data.count(b"\n") != n:
        raise BenchFailure(f"{what}: line count != {n}")


def fmt_num(v: float, unit: str = "") -> str:
    if v != v:  # nan
        return "-"
    if unit in ("ev/s", "conn", "sessions", "lines/s"):
        return f"{v:,.0f}"
    if unit in ("µs",):
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    if unit in ("ms",):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    if unit in ("MB",):
        return f"{v:,.1f}"
    if unit == "s":
        return f"{v:.3f}"
    return f"{v:,.3g}"


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=None, separators=(",", ":"))
