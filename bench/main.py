# ruff: noqa: RUF001, PLR0917, PLR0124
"""scripts/bench: traced's ingest throughput, ack latency, CLI cost and scale, with peers in the same run.

Run through ``scripts/bench [--quick]``. Every mode checks what landed (every
event exactly once, gap-free steps); a failed check prints FAIL and exits 1.
See docs/benchmarks.md for what each row measures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import clients
import lib
import peers
import targets
from lib import BenchFailure, Daemon, Series, percentile


@contextlib.contextmanager
def pinned(server_pid: int | None) -> Iterator[set[int] | None]:
    """For a one-connection latency run: the server's event loop (the thread whose id is its pid)
    on CPU 0, the client on CPU 1 (yielded), the server's affinity restored after.

    Why: on this 2-vCPU VM a one-connection round trip is bimodal. When the scheduler puts client
    and server on one CPU a wake-up is a context switch; on two, it is an idle vCPU's wake-up, ~40 µs
    more (the minimal server's p50: 10 µs against 58 µs). Left to the scheduler, each run drew one
    at random, and a ratio between two servers compared draws (docs/benchmarks.md). Yields None
    (nothing pinned) without a pid or with fewer than 2 CPUs.
    """
    cpus = os.sched_getaffinity(0)
    if server_pid is None or not {0, 1} <= cpus:
        yield None
        return
    before = os.sched_getaffinity(server_pid)
    os.sched_setaffinity(server_pid, {0})
    try:
        yield {1}
    finally:
        try:
            os.sched_setaffinity(server_pid, before)
        except ProcessLookupError:
            pass


# --- parameters ---------------------------------------------------------------------------


@dataclass
class Params:
    runs: int
    """runs of the durable, scale modes (pipelined/acked: ``busy_runs``)"""
    busy_runs: int
    pipe_n: dict[int, int]
    """events per run in the pipelined mode, by event size"""
    naive_cap: int
    ack_each: int
    """events per client, 16 acked clients"""
    ack_one: int
    durable_each: int
    """events per client, 64 acked clients, fsync=always"""
    cli_runs: int
    scale_sessions: int
    scale_conns: int
    scale_n: int
    scale_spread_n: int
    ls_sessions: int
    ls_runs: int
    import_sessions: int
    """Claude Code transcripts imported per run (each: 2 turns, a subagent, 9 API responses)"""
    hook_responses: int
    """API responses in the transcript a Stop hook reads (at most 500 are taken per invocation)"""
    otlp_batches: int = 40
    """OTLP requests per run (each a batch of ``OTLP_BATCH`` GenAI spans of one trace)"""
    shard_n: int = 40_000
    """events per run of each row of the multi-core prototype (mode 11)"""


FULL = Params(runs=3, busy_runs=5, pipe_n={200: 200_000, 2000: 40_000}, naive_cap=100_000, ack_each=4_000,
              ack_one=10_000, durable_each=300, cli_runs=40, scale_sessions=10_000, scale_conns=1_000,
              scale_n=200_000, scale_spread_n=50_000, ls_sessions=10_000, ls_runs=5, import_sessions=1_000,
              hook_responses=500, otlp_batches=400, shard_n=200_000)
QUICK = Params(runs=3, busy_runs=3, pipe_n={200: 12_000, 2000: 3_000}, naive_cap=12_000, ack_each=200,
               ack_one=1_000, durable_each=20, cli_runs=30, scale_sessions=500, scale_conns=50, scale_n=10_000,
               scale_spread_n=2_000, ls_sessions=500, ls_runs=3, import_sessions=100, hook_responses=300,
               otlp_batches=24)

PIPE_CLIENTS = 8
SHARDS = 2
"""daemons in the multi-core prototype (mode 11)"""
ASYNCIO = {"TRACED_EVENT_LOOP": "asyncio"}
"""the daemon's env for its asyncio rows (src/traced/daemon/serve.py ``run``; the default is uvloop)"""
OTLP_BATCH = 512
"""spans per OTLP request: the SDK's BatchSpanProcessor default (max_export_batch_size)"""
OTLP_CLIENTS = 4
BATCH = 256
"""events per ``emit_batch`` frame in the C-client batch row (traced.Client's BATCH_EVENTS)"""
ACK_CLIENTS = 16
DURABLE_CLIENTS = 64
SIZE_NAME = {200: "200 B", 2000: "2 KB"}

# --- results --------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    name: str
    unit: str
    series: Series = field(default_factory=Series)
    ref: str | None = None
    """key of the row this one is compared with"""
    note: str = ""


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.order: list[str] = []
        self.notes: list[str] = []
        self.params: dict[str, str] = {}

    def row(self, key: str, section: str, name: str, unit: str, ref: str | None = None, note: str = "") -> Row:
        if key not in self.rows:
            self.rows[key] = Row(section, name, unit, ref=ref, note=note)
            self.order.append(key)
        return self.rows[key]

    def add(self, key: str, value: float, section: str = "", name: str = "", unit: str = "",
            ref: str | None = None, note: str = "") -> None:
        self.row(key, section, name, unit, ref, note).series.add(value)

    def get(self, key: str) -> Row | None:
        r = self.rows.get(key)
        return r if r is not None and r.series.values else None

    def ratio(self, key: str, ref: str) -> float:
        a, b = self.get(key), self.get(ref)
        if a is None or b is None or not b.series.median:
            return float("nan")
        return a.series.median / b.series.median


# --- helpers ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.p = QUICK if args.quick else FULL
        if args.runs:
            self.p.runs = self.p.busy_runs = args.runs
        self.work = work
        self.res = Results()
        self.daemons: list[Daemon] = []
        self.tdclient: str | None = None
        self.rsyslog_bin: str | None = None
        self.hyperfine: str | None = None
        self.log = self.res.notes

    def say(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # setup

    def setup(self) -> None:
        self.res.params["runs"] = (f"{self.p.busy_runs} per row in modes 1, 2 and 6; {self.p.runs} in modes 3, 5 "
                                   f"and 11; {self.p.cli_runs} invocations in mode 4; {self.p.ls_runs} in mode 7")
        soft, hard = lib.raise_nofile(65536)
        self.res.params["RLIMIT_NOFILE"] = f"{soft}/{hard}"
        need = self.p.scale_conns + 64
        if soft < need:
            self.log.append(f"RLIMIT_NOFILE {soft} < {need}: the scale mode uses fewer connections")
            self.p.scale_conns = max(10, soft - 64)
        self.tdclient = self._build_tdclient()
        if not self.args.no_rsyslog:
            self.rsyslog_bin = peers.ensure_rsyslog(self.log)
        else:
            self.log.append("--no-rsyslog: the rsyslog column is skipped")
        self.hyperfine = shutil.which("hyperfine")

    def _build_tdclient(self) -> str | None:
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None and os.geteuid() == 0 and shutil.which("apt-get"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "gcc", "libc6-dev"]
            if subprocess.run(cmd, env=env, check=False, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
                subprocess.run(cmd, env=env, check=False, capture_output=True)
            gcc = shutil.which("gcc")
            if gcc:
                self.log.append("installed gcc with apt-get")
        if gcc is None:
            self.log.append("no C compiler: the C-client rows and the rsyslog column are skipped")
            return None
        out = self.work / "tdclient"
        res = subprocess.run([gcc, "-O2", "-Wall", "-pthread", "-o", str(out), str(lib.HERE / "tdclient.c")],
                             check=False, capture_output=True, text=True)
        if res.returncode != 0:
            raise BenchFailure(f"building tdclient failed:\n{res.stderr}")
        return str(out)

    def daemon(self, name: str, *args: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(self.work, name, args)
        d.env.update(env or {})
        d.start()
        self.daemons.append(d)
        self.warm_up(d)
        return d

    def check_loop(self, d: Daemon, want: str) -> None:
        """The daemon runs the event loop its row is named after: uvloop's extension is mapped or not."""
        try:
            maps = Path(f"/proc/{d.pid}/maps").read_text()
        except OSError:
            return
        has = "uvloop/loop" in maps
        if has != (want == "uvloop"):
            if want == "uvloop" and importlib.util.find_spec("uvloop") is None:
                self.log.append("uvloop is not installed: the uvloop rows ran on asyncio")
                return
            raise BenchFailure(f"daemon {d.base.name} should run on {want}, but uvloop is "
                               f"{'' if has else 'not '}loaded")

    def warm_up(self, d: Daemon) -> None:
        """A short unmeasured load first, so run 1 does not pay for a cold daemon (imports, caches)."""
        from traced import Client

        with Client(d.socket, spool=False, spool_after=0.0, name="bench-warmup") as c:
            opened = c.open("bench", owner_pid=-1, meta={"bench": "warm-up"})
            s = c.attach(opened.session_id)
            for i in range(2000):
                s.event("tool_call", lib.payload(200 if i % 2 else 2000, i), ack=i % 10 == 0)
            c.sync()
            c.end(opened.session_id, "success")
        self.verify_sessions([opened.dir], 2000, f"warm-up of {d.base.name}")

    def retire(self, d: Daemon) -> None:
        """Kill a daemon whose output was checked, and delete its files.

        SIGKILL, not SIGTERM: a graceful stop fdatasyncs every open session and waits ~5 s
        for watchfiles, which would land on the next mode's measurements.
        """
        d.check_alive()
        errs = d.errors_logged()
        if errs:
            self.log.append(f"daemon {d.base.name} logged {len(errs)} error lines, first: {errs[0]}")
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        if not self.args.keep:
            shutil.rmtree(d.state, ignore_errors=True)

    def discard(self, dirs: list[str]) -> None:
        """Delete checked session dirs: less page cache to write back during later runs."""
        if not self.args.keep:
            for sd in dirs:
                shutil.rmtree(sd, ignore_errors=True)

    def post_mortem(self) -> None:
        """The state and log tail of every daemon still meant to be running, on stderr."""
        for d in self.daemons:
            if d.proc is None:
                continue
            state = "alive" if d.proc.poll() is None else f"exited {d.proc.returncode}"
            try:
                tail = d.log.read_text(errors="replace").splitlines()[-8:]
            except OSError:
                tail = []
            print(f"--- daemon {d.base.name} ({state}), last log lines:", file=sys.stderr)
            for line in tail:
                print("    " + line[:400], file=sys.stderr)

    def reap(self) -> None:
        for d in self.daemons:
            if d.proc is None:
                continue
            if d.proc.poll() is None:
                d.proc.terminate()
        deadline = time.monotonic() + 15
        for d in self.daemons:
            if d.proc is None:
                continue
            try:
                d.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(5)

    def open_sessions(self, d: Daemon, k: int) -> list[Any]:
        with d.client() as c:
            return [c.open("bench", owner_pid=-1, meta={"bench": "c-client"}) for _ in range(k)]

    def sync_counts(self, d: Daemon) -> tuple[int, int]:
        """The daemon's (sync rounds, trace fdatasyncs) so far (0, 0 from a daemon without rounds)."""
        with d.client() as c:
            info = c.status()
        return int(info.get("sync_rounds", 0)), int(info.get("fsyncs", 0))

    def end_sessions(self, d: Daemon, opened: list[Any]) -> None:
        with d.client() as c:
            for o in opened:
                c.end(o.session_id, "success")

    def tdclient_cmd(self, mode: str, sock: Path, n: int, conns: int, records: list[bytes],
                     seqoff: int | list[int], tail: bytes | None = None, batch: int = 65536,
                     tag: str = "", hello: bool = True) -> tuple[list[str], dict[str, str]]:
        """The ``tdclient`` command line and env; its files are named by ``tag`` (one per concurrent process).

        ``hello``: each connection first says ``hello`` with its own client_id, and each event's
        ``seq`` is stamped (``lib.SEQ64_BASE`` + its sequence number), as ``traced.Client`` does:
        the daemon's idempotency window is at work. False for peers that speak no traced.
        """
        assert self.tdclient is not None
        env = dict(os.environ)
        recsize = len(records[0])
        if any(len(r) != recsize for r in records):
            raise BenchFailure("records of unequal size")
        recf = self.work / f"records{tag}.bin"
        recf.write_bytes(b"".join(records))
        offs = ",".join(str(o) for o in seqoff) if isinstance(seqoff, list) else str(seqoff)
        cmd = [self.tdclient, mode, str(sock), str(n), str(conns), str(recf), str(recsize), offs, str(batch)]
        if tail is not None:
            tailf = self.work / f"tail{tag}.bin"
            tailf.write_bytes(tail)
            cmd.append(str(tailf))
        if hello:
            heads, size = lib.hello_frames(conns)
            headf = self.work / f"head{tag}.bin"
            headf.write_bytes(heads)
            seq64 = lib.seq64_offsets(records[0])
            if len(seq64) != (len(seqoff) if isinstance(seqoff, list) else 1):
                raise BenchFailure(f"{len(seq64)} seq fields in a record for its {seqoff} sequence numbers")
            env.update(TDC_HEAD=str(headf), TDC_HEADSIZE=str(size), TDC_SEQ64=",".join(map(str, seq64)),
                       TDC_SEQBASE=str(lib.SEQ64_BASE))
        return cmd, env

    def run_tdclient(self, mode: str, sock: Path, n: int, conns: int, records: list[bytes], seqoff: int | list[int],
                     tail: bytes | None = None, batch: int = 65536, hello: bool = True,
                     server_pid: int | None = None) -> dict[str, Any]:
        """``server_pid``: pin that process's event loop (its main thread) to CPU 0 and the client
        to CPU 1 for the run (``pinned``)."""
        cmd, env = self.tdclient_cmd(mode, sock, n, conns, records, seqoff, tail, batch, hello=hello)
        with pinned(server_pid) as client_cpus:
            res = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=900,
                                 preexec_fn=None if client_cpus is None else partial(os.sched_setaffinity, 0,
                                                                                   client_cpus))
        if res.returncode != 0:
            raise BenchFailure(f"tdclient {mode} failed ({res.returncode}): {res.stdout} {res.stderr}")
        out: dict[str, Any] = json.loads(res.stdout)
        return out

    def verify_sessions(self, dirs: list[str], n: int, what: str, keyed: bool = False) -> None:
        """Each session: start + events (+ end), gap-free; all events 0..n-1 exactly once.

        ``keyed``: every event also carries the C client's idempotency key (``client_seq``).
        """
        seqs: list[int] = []
        for sd in dirs:
            tc = lib.check_trace(Path(sd) / "trace.jsonl")
            if tc.phases.get("start") != 1 or tc.phases.get("end", 0) > 1 or set(tc.phases) - {
                    "start", "tool_call", "end"}:
                raise BenchFailure(f"{what}: unexpected records in {sd}: {tc.phases}")
            if keyed:
                lib.check_keyed(tc, f"{what}: {sd}")
            seqs.extend(tc.events)
        lib.check_exactly_once(seqs, n, what)

    # --- mode 1 + 6: pipelined ingest and redaction cost -------------------------------------

    def mode_pipelined(self) -> None:
        p = self.p
        A = self.daemon("pipe")
        B = self.daemon("pipe-noredact", "--no-redaction")
        C = self.daemon("pipe-asyncio", env=ASYNCIO) if self.tdclient else None
        self.check_loop(A, "uvloop")
        if C is not None:
            self.check_loop(C, "asyncio")
        use_rs = bool(self.rsyslog_bin and self.tdclient)
        if use_rs:
            assert self.rsyslog_bin
            self.res.params["rsyslog"] = peers.rsyslog_version(self.rsyslog_bin)
        rs: peers.Rsyslog | None = None
        mini = peers.MiniServer(lib.PY, self.work).start() if self.tdclient else None
        try:
            for size in (200, 2000):
                n = p.pipe_n[size]
                sec = f"1. Pipelined ingest, {PIPE_CLIENTS} clients, {SIZE_NAME[size]} events"
                line, loff = lib.peer_line(size)
                lines = peers.stamped_lines(line, loff, n)
                self.res.params[f"pipelined {SIZE_NAME[size]}"] = (
                    f"{n:,} events/run; emit frame {len(lib.emit_frame('X' * 26, size, False)[0])} B; "
                    f"peer line {len(line)} B")
                for run in range(p.busy_runs):
                    self.say(f"pipelined {SIZE_NAME[size]} run {run + 1}/{p.busy_runs}")
                    k = f"pipe{size}"
                    # traced, Python clients
                    r = clients.run_clients(A.socket, PIPE_CLIENTS, n // PIPE_CLIENTS, size, False, self.work)
                    self.verify_sessions(r.session_dirs, r.events, "pipelined Python clients")
                    self.discard(r.session_dirs)
                    self.res.add(f"{k}.py", r.rate, sec, "traced, Python clients (`ack=False` + `sync()`)", "ev/s",
                                 ref=f"{k}.rsyslog")
                    if self.tdclient:
                        rows: list[tuple[Daemon, str, str, int, str]] = [
                            (A, "c", "traced, C client", 1, "rsyslog"),
                            (A, "cb", f"traced, C client, `emit_batch` of {BATCH}", BATCH, "rsyslog"),
                            (B, "c.noredact", "traced `--no-redaction`, C client", 1, "rsyslog")]
                        if C is not None and size == 200:
                            rows.append((C, "c.asyncio", "traced on asyncio (`TRACED_EVENT_LOOP=asyncio`), C client",
                                         1, "c"))
                        for d, key, label, per, ref in rows:
                            nn = n if per == 1 else n // (PIPE_CLIENTS * per) * PIPE_CLIENTS * per
                            rate, cpu = self._pipe_c(d, size, nn, PIPE_CLIENTS, per)
                            self.res.add(f"{k}.{key}", rate, sec, label, "ev/s", ref=f"{k}.{ref}")
                            self.res.add(f"{k}.{key}.cpu", cpu, sec, f"{label}: daemon CPU per event", "µs",
                                         ref=f"{k}.{ref}.cpu")
                    if mini is not None:
                        out, cpu = self._mini_run(mini, "stream", size, n, PIPE_CLIENTS, ack=False)
                        label = "reference: minimal Python server (asyncio.Protocol + uvloop), C client"
                        self.res.add(f"{k}.mini", out["msgs_per_s"], sec, label, "ev/s", ref=f"{k}.rsyslog")
                        self.res.add(f"{k}.mini.cpu", cpu, sec, "minimal Python server: CPU per event", "µs",
                                     ref=f"{k}.rsyslog.cpu")
                    if use_rs:
                        assert self.tdclient and self.rsyslog_bin
                        rs = peers.Rsyslog(self.rsyslog_bin, self.work).start()  # fresh each run
                        start = rs.size()
                        cpu0 = lib.cpu_seconds(rs.proc.pid) if rs.proc else float("nan")
                        out = self.run_tdclient("stream", rs.socket, n, PIPE_CLIENTS, [line], loff, hello=False)
                        done = rs.wait_size(start + n * len(line))
                        cpu1 = lib.cpu_seconds(rs.proc.pid) if rs.proc else float("nan")
                        rs.check_region(start, n, loff, len(line), "rsyslog")
                        self.res.add(f"{k}.rsyslog", n / (done - out["start_mono"]), sec,
                                     "rsyslog imptcp (Unix stream) → omfile, C client", "ev/s")
                        self.res.add(f"{k}.rsyslog.cpu", (cpu1 - cpu0) / n * 1e6, sec,
                                     "rsyslog: daemon CPU per event", "µs")
                        rs.stop()
                        rs.remove()
                        rs = None
                    out_file = self.work / "peer.out"
                    el = peers.raw_oswrite(out_file, lines)
                    lib.check_lines_file(out_file, n, loff, len(line), "raw os.write")
                    self.res.add(f"{k}.raw", n / el, sec, "raw `os.write` per line, 1 Python process", "ev/s",
                                 ref=f"{k}.rsyslog")
                    el = peers.raw_batched(out_file, lines)
                    lib.check_lines_file(out_file, n, loff, len(line), "raw batched")
                    self.res.add(f"{k}.rawbatch", n / el, sec, "raw `os.write` of 64 KiB batches, 1 Python process",
                                 "ev/s", ref=f"{k}.rsyslog")
                    nn = min(n, p.naive_cap)
                    el = peers.naive_openclose(out_file, lines[:nn])
                    lib.check_lines_file(out_file, nn, loff, len(line), "naive writer")
                    self.res.add(f"{k}.naive", nn / el, sec, "naive `with open(path, 'ab')` per event, 1 process",
                                 "ev/s", ref=f"{k}.rsyslog")
                    out_file.unlink()
                del lines
        finally:
            if rs is not None:
                rs.stop()
            if mini is not None:
                mini.stop()
            self.retire(A)
            self.retire(B)
            if C is not None:
                self.retire(C)
        # 6: redaction cost (same runs as above)
        for size in (200, 2000):
            k = f"pipe{size}"
            for src in ("c", "py"):
                on = self.res.get(f"{k}.{src}")
                off = self.res.get(f"{k}.c.noredact")
                if on is None or off is None or src == "py":
                    continue
                sec = "6. Redaction cost (pipelined, C client, same runs as 1)"
                ratios = [a / b for a, b in zip(on.series.values, off.series.values, strict=False)]
                for v in ratios:
                    self.res.add(f"redact{size}", v, sec,
                                 f"{SIZE_NAME[size]}: throughput redaction on / `--no-redaction`", "×")

    def _mini_run(self, mini: peers.MiniServer, mode: str, size: int, n: int, conns: int,
                  ack: bool) -> tuple[dict[str, Any], float]:
        """The C client against the minimal Python server; checks its output; returns (tdclient out, CPU µs/ev)."""
        from traced.format.ids import new_ulid

        assert mini.proc is not None
        sids = [new_ulid() for _ in range(conns)]
        frames, off = lib.emit_frames(sids, size, ack)
        cpu0 = lib.cpu_seconds(mini.proc.pid)
        out = self.run_tdclient(mode, mini.socket, n, conns, frames, off,
                                tail=None if ack else lib.sync_frame(),
                                server_pid=mini.proc.pid if ack and conns == 1 else None)
        cpu = (lib.cpu_seconds(mini.proc.pid) - cpu0) / n * 1e6
        seqs: list[int] = []
        for sid in sids:
            seqs.extend(lib.check_trace(mini.trace(sid), need_start=False).events)
        lib.check_exactly_once(seqs, n, "minimal Python server")
        mini.reset()
        return out, cpu

    def _pipe_c(self, d: Daemon, size: int, n: int, conns: int, per: int = 1) -> tuple[float, float]:
        opened = self.open_sessions(d, conns)
        frames = []
        off: int | list[int] = 0
        for o in opened:
            if per == 1:
                f, off = lib.emit_frame(o.session_id, size, ack=False)
            else:
                f, off = lib.batch_frame(o.session_id, size, per)
            frames.append(f)
        cpu0 = lib.cpu_seconds(d.pid)
        out = self.run_tdclient("stream", d.socket, n, conns, frames, off, tail=lib.sync_frame())
        cpu1 = lib.cpu_seconds(d.pid)
        self.verify_sessions([o.dir for o in opened], n, f"pipelined C client ({d.base.name})", keyed=True)
        self.end_sessions(d, opened)
        self.discard([o.dir for o in opened])
        return float(out["msgs_per_s"]), (cpu1 - cpu0) / n * 1e6

    # --- mode 2: acked ingest -----------------------------------------------------------------

    def mode_acked(self) -> None:
        p = self.p
        d = self.daemon("acked")
        da = self.daemon("acked-asyncio", env=ASYNCIO) if self.tdclient else None
        if da is not None:
            self.check_loop(da, "asyncio")
        mini = peers.MiniServer(lib.PY, self.work).start() if self.tdclient else None
        sec = "2. Acked ingest (`s.event(...)`, each call awaits its ack), 200 B events"
        self.res.params["acked"] = (f"{ACK_CLIENTS} clients × {p.ack_each:,} events; 1 client × {p.ack_one:,} "
                                    "events per run")
        try:
            for run in range(p.busy_runs):
                self.say(f"acked run {run + 1}/{p.busy_runs}")
                for nc, each, tag in ((ACK_CLIENTS, p.ack_each, "16"), (1, p.ack_one, "1")):
                    r = clients.run_clients(d.socket, nc, each, 200, True, self.work)
                    self.verify_sessions(r.session_dirs, r.events, f"acked Python x{nc}")
                    self.discard(r.session_dirs)
                    lat = sorted(r.lat_us)
                    label = f"traced, {nc} Python client{'s' if nc > 1 else ''}"
                    self.res.add(f"ack{tag}.py", r.rate, sec, f"{label}: throughput", "ev/s")
                    self.res.add(f"ack{tag}.py.p50", percentile(lat, 50), sec, f"{label}: ack latency p50", "µs")
                    self.res.add(f"ack{tag}.py.p99", percentile(lat, 99), sec, f"{label}: ack latency p99", "µs")
                    if self.tdclient:
                        out = self._ack_c(d, nc, each)
                        label = f"traced, C client, {nc} conn{'s' if nc > 1 else ''}"
                        self.res.add(f"ack{tag}.c", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s",
                                     ref=f"ack{tag}.mini")
                        self.res.add(f"ack{tag}.c.p50", out["lat_us"]["p50"], sec, f"{label}: ack latency p50", "µs",
                                     ref=f"ack{tag}.mini.p50")
                        self.res.add(f"ack{tag}.c.p99", out["lat_us"]["p99"], sec, f"{label}: ack latency p99", "µs",
                                     ref=f"ack{tag}.mini.p99")
                    if da is not None:
                        out = self._ack_c(da, nc, each)
                        label = f"traced on asyncio, C client, {nc} conn{'s' if nc > 1 else ''}"
                        self.res.add(f"ack{tag}.c.asyncio", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s",
                                     ref=f"ack{tag}.c")
                        self.res.add(f"ack{tag}.c.asyncio.p50", out["lat_us"]["p50"], sec,
                                     f"{label}: ack latency p50", "µs", ref=f"ack{tag}.c.p50")
                        self.res.add(f"ack{tag}.c.asyncio.p99", out["lat_us"]["p99"], sec,
                                     f"{label}: ack latency p99", "µs", ref=f"ack{tag}.c.p99")
                    if mini is not None:
                        out, _cpu = self._mini_run(mini, "ack", 200, nc * each, nc, ack=True)
                        label = f"reference: minimal Python server, C client, {nc} conn{'s' if nc > 1 else ''}"
                        self.res.add(f"ack{tag}.mini", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s")
                        self.res.add(f"ack{tag}.mini.p50", out["lat_us"]["p50"], sec, f"{label}: ack latency p50",
                                     "µs")
                        self.res.add(f"ack{tag}.mini.p99", out["lat_us"]["p99"], sec, f"{label}: ack latency p99",
                                     "µs")
        finally:
            if mini is not None:
                mini.stop()
            self.retire(d)
            if da is not None:
                self.retire(da)

    def _ack_c(self, d: Daemon, nc: int, each: int) -> dict[str, Any]:
        """``tdclient ack`` with ``nc`` connections, each on its own session; checks what landed."""
        opened = self.open_sessions(d, nc)
        frames, off = lib.emit_frames([o.session_id for o in opened], 200, True)
        out = self.run_tdclient("ack", d.socket, nc * each, nc, frames, off,
                                server_pid=d.proc.pid if nc == 1 and d.proc is not None else None)
        self.verify_sessions([o.dir for o in opened], nc * each, f"acked C x{nc} ({d.base.name})", keyed=True)
        self.end_sessions(d, opened)
        self.discard([o.dir for o in opened])
        return out

    # --- mode 3: durable acks -------------------------------------------------------------------

    def mode_durable(self) -> None:
        p = self.p
        d = self.daemon("durable", "--fsync", "always")
        # design (a), for comparison in the same run: no write-ahead log, concurrent fdatasyncs of the traces
        nolog = lib.Daemon(self.work, "durable-nolog", ["--fsync", "always"])
        nolog.env["TRACED_WAL"] = "false"
        self.daemons.append(nolog.start())
        self.warm_up(nolog)
        # the ceiling: the same acked load with no sync at all (what durability adds to the acked path)
        nosync = self.daemon("durable-nosync", "--fsync", "never")
        sec = f"3. Durable acks (`--fsync always`), {DURABLE_CLIENTS} acked clients, 200 B events"
        self.res.params["durable"] = f"{DURABLE_CLIENTS} clients × {p.durable_each:,} events per run"
        try:
            for run in range(p.runs):
                self.say(f"durable run {run + 1}/{p.runs}")
                r = clients.run_clients(d.socket, DURABLE_CLIENTS, p.durable_each, 200, True, self.work)
                self.verify_sessions(r.session_dirs, r.events, "durable Python")
                self.discard(r.session_dirs)
                lat = sorted(r.lat_us)
                label = f"traced, {DURABLE_CLIENTS} Python clients"
                self.res.add("dur.py", r.rate, sec, f"{label}: throughput", "ev/s")
                self.res.add("dur.py.p50", percentile(lat, 50), sec, f"{label}: ack latency p50", "µs")
                self.res.add("dur.py.p99", percentile(lat, 99), sec, f"{label}: ack latency p99", "µs")
                if self.tdclient:
                    opened = self.open_sessions(d, DURABLE_CLIENTS)
                    frames, off = lib.emit_frames([o.session_id for o in opened], 200, True)
                    n = DURABLE_CLIENTS * p.durable_each
                    before = self.sync_counts(d)
                    out = self.run_tdclient("ack", d.socket, n, DURABLE_CLIENTS, frames, off)
                    rounds, syncs = (a - b for a, b in zip(self.sync_counts(d), before, strict=True))
                    self.verify_sessions([o.dir for o in opened], n, "durable C", keyed=True)
                    self.end_sessions(d, opened)
                    self.discard([o.dir for o in opened])
                    label = f"traced, C client, {DURABLE_CLIENTS} conns"
                    self.res.add("dur.c", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s")
                    self.res.add("dur.c.p50", out["lat_us"]["p50"], sec, f"{label}: ack latency p50", "µs")
                    self.res.add("dur.c.p99", out["lat_us"]["p99"], sec, f"{label}: ack latency p99", "µs")
                    if rounds:
                        self.res.add("dur.c.per_round", n / rounds, sec, f"{label}: events per sync round", "")
                        self.res.add("dur.c.sessions_per_round", syncs / rounds, sec,
                                     f"{label}: traces made durable per round", "")
                    # the same without the write-ahead log: each round fdatasyncs its traces concurrently
                    opened = self.open_sessions(nolog, DURABLE_CLIENTS)
                    frames = [lib.emit_frame(o.session_id, 200, ack=True)[0] for o in opened]
                    before = self.sync_counts(nolog)
                    out = self.run_tdclient("ack", nolog.socket, n, DURABLE_CLIENTS, frames, off)
                    rounds, syncs = (a - b for a, b in zip(self.sync_counts(nolog), before, strict=True))
                    self.verify_sessions([o.dir for o in opened], n, "durable C, no log")
                    self.end_sessions(nolog, opened)
                    self.discard([o.dir for o in opened])
                    label = f"traced without the log (`wal = false`), C client, {DURABLE_CLIENTS} conns"
                    self.res.add("dur.c.nolog", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s")
                    self.res.add("dur.c.nolog.p99", out["lat_us"]["p99"], sec, f"{label}: ack latency p99", "µs")
                    if rounds:
                        self.res.add("dur.c.nolog.per_round", n / rounds, sec, f"{label}: events per sync round", "")
                    opened = self.open_sessions(nosync, DURABLE_CLIENTS)
                    frames = [lib.emit_frame(o.session_id, 200, ack=True)[0] for o in opened]
                    out = self.run_tdclient("ack", nosync.socket, n, DURABLE_CLIENTS, frames, off)
                    self.verify_sessions([o.dir for o in opened], n, "acked C, fsync never")
                    self.end_sessions(nosync, opened)
                    self.discard([o.dir for o in opened])
                    label = f"ceiling: the same with `--fsync never`, C client, {DURABLE_CLIENTS} conns"
                    self.res.add("dur.c.nosync", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s")
                    self.res.add("dur.c.nosync.p99", out["lat_us"]["p99"], sec, f"{label}: ack latency p99", "µs")
                    # the same, all connections on ONE session: group commit can cover them all
                    shared = self.open_sessions(d, 1)
                    frame, off = lib.emit_frame(shared[0].session_id, 200, ack=True)
                    out = self.run_tdclient("ack", d.socket, n, DURABLE_CLIENTS, [frame], off)
                    self.verify_sessions([shared[0].dir], n, "durable C, shared session", keyed=True)
                    self.end_sessions(d, shared)
                    self.discard([shared[0].dir])
                    label = f"traced, C client, {DURABLE_CLIENTS} conns → 1 shared session"
                    self.res.add("dur.c1", out["msgs_per_s"], sec, f"{label}: throughput", "ev/s")
                    self.res.add("dur.c1.p50", out["lat_us"]["p50"], sec, f"{label}: ack latency p50", "µs")
                    self.res.add("dur.c1.p99", out["lat_us"]["p99"], sec, f"{label}: ack latency p99", "µs")
                # physical reference: one process, write + fdatasync per event (no batching)
                out_file = self.work / "fsync.out"
                line, loff = lib.peer_line(200)
                nn = 200 if self.args.quick else 1000
                lines = peers.stamped_lines(line, loff, nn)
                with contextlib.suppress(FileNotFoundError):
                    out_file.unlink()
                fd = os.open(out_file, peers.FLAGS, 0o600)
                t0 = time.perf_counter()
                for ln in lines:
                    os.write(fd, ln)
                    os.fdatasync(fd)
                el = time.perf_counter() - t0
                os.close(fd)
                lib.check_lines_file(out_file, nn, loff, len(line), "fdatasync peer")
                out_file.unlink()
                self.res.add("dur.fsync1", nn / el, sec, "reference: `os.write` + `fdatasync` per event, 1 process",
                             "ev/s")
        finally:
            self.retire(d)
            self.retire(nolog)
            self.retire(nosync)

    # --- mode 4: traced event from a shell --------------------------------------------------------

    def mode_cli(self) -> None:
        p = self.p
        d = self.daemon("cli")
        sec = "4. `traced event` from a shell (wall time per invocation)"
        try:
            with d.client() as c:
                opened = c.open("bench", owner_pid=-1)
            traced_bin = str(Path(sys.executable).parent / "traced")
            if not os.path.exists(traced_bin):
                traced_bin = shutil.which("traced") or traced_bin
            env = dict(d.env)
            self.res.params["per-event .pyc"] = _compile_traced()
            payload = '{"message":"bench: step done","file":"src/app.py"}'
            ev_cmd = [traced_bin, "event", opened.session_id, "--phase", "note", "--payload", payload]
            py_cmd = [sys.executable, "-c", "pass"]
            warm = 3
            if self.hyperfine:
                self.say(f"traced event: hyperfine, {p.cli_runs} runs")
                jf = self.work / "hf.json"
                q = lambda a: " ".join(_shq(x) for x in a)  # noqa: E731
                res = subprocess.run([self.hyperfine, "-N", "--style", "none", "--warmup", str(warm),
                                      "--runs", str(p.cli_runs), "--export-json", str(jf), q(ev_cmd), q(py_cmd)],
                                     env=env, check=False, capture_output=True, text=True, timeout=600)
                if res.returncode != 0:
                    raise BenchFailure(f"hyperfine failed: {res.stderr[-1000:]}")
                data = json.loads(jf.read_text())["results"]
                ev_times = [t * 1000 for t in data[0]["times"]]
                py_times = [t * 1000 for t in data[1]["times"]]
                if any(c != 0 for c in data[0].get("exit_codes", [])):
                    raise BenchFailure("traced event exited non-zero under hyperfine")
                tool = "hyperfine -N"
            else:
                self.say(f"traced event: timing loop, {p.cli_runs} runs")
                ev_times, py_times = [], []
                for i in range(warm + p.cli_runs):
                    for cmd, acc in ((ev_cmd, ev_times), (py_cmd, py_times)):
                        t0 = time.perf_counter()
                        res = subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE)
                        el = (time.perf_counter() - t0) * 1000
                        if res.returncode != 0:
                            raise BenchFailure(f"{cmd[:2]} exited {res.returncode}: {res.stderr[-500:]!r}")
                        if i >= warm:
                            acc.append(el)
                tool = "subprocess timing loop"
            self.res.params["traced event"] = f"{p.cli_runs} runs each after {warm} warm-ups, {tool}"
            tc = lib.check_trace(Path(opened.dir) / "trace.jsonl")
            want = warm + p.cli_runs
            if tc.phases.get("note", 0) != want or tc.lines != want + 1:
                raise BenchFailure(f"traced event: {tc.phases.get('note', 0)} note records, expected {want}")
            r1 = self.res.row("cli.event", sec, "`traced event ID --phase note --payload '{…}'`", "ms",
                              ref="cli.py")
            r2 = self.res.row("cli.py", sec, "`python -c pass` (same venv)", "ms")
            r1.series.values = ev_times
            r2.series.values = py_times
            r1.note = f"{len(ev_times)} invocations"
            r2.note = f"{len(py_times)} invocations"
            self._hook_times(d, traced_bin, env, sec)
        finally:
            self.retire(d)

    def _hook_times(self, d: Daemon, traced_bin: str, env: dict[str, str], sec: str) -> None:
        """`traced hook claude-code|codex|gemini` per event, each a tool call that writes a record
        (PreToolUse, PreToolUse, BeforeTool), interleaved with `python -c pass` in one loop; checked:
        exactly one tool_call per invocation, gap-free. Then SessionEnd against a daemon that accepts
        but never answers (SIGSTOP): each must finish (or spool) in 1 s."""
        runs = max(5, self.p.cli_runs // 2)
        warm = 3
        sid = "bench-hook-session"
        base = {"session_id": sid, "transcript_path": "/tmp/x.jsonl", "cwd": "/tmp"}

        def hook(agent: str, event: dict[str, Any]) -> float:
            t0 = time.perf_counter()
            body = {**base, "session_id": f"{sid}-{agent}", **event}  # a session id belongs to one agent
            res = subprocess.run([traced_bin, "hook", agent], input=json.dumps(body).encode(),
                                 env=env, check=False, capture_output=True, timeout=60)
            el = (time.perf_counter() - t0) * 1000
            if res.returncode != 0 or res.stdout or res.stderr:
                raise BenchFailure(f"traced hook {agent} exited {res.returncode}: {res.stderr[-500:]!r}")
            return el

        def tool_event(agent: str, i: int) -> dict[str, Any]:
            """A tool call whose record carries ``i`` (each invocation's input differs: no duplicate)."""
            command = {"command": f"ls bench-{i}"}
            if agent == "gemini":  # no call id: paired by the call clock
                return {"hook_event_name": "BeforeTool", "tool_name": "run_shell_command", "tool_input": command,
                        "timestamp": "2026-01-01T00:00:00Z"}
            extra = {"turn_id": "turn-1", "model": "gpt-5.1-codex"} if agent == "codex" else {}
            return {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": f"toolu_{i}",
                    "tool_input": command, "permission_mode": "default", **extra}

        agents = ("claude-code", "codex", "gemini")
        py_cmd = [sys.executable, "-c", "pass"]
        times: dict[str, list[float]] = {a: [] for a in (*agents, "py")}
        for agent in agents:
            hook(agent, {"hook_event_name": "SessionStart", "source": "startup"})
        for i in range(warm + runs):
            for agent in agents:
                el = hook(agent, tool_event(agent, i))
                if i >= warm:
                    times[agent].append(el)
            t0 = time.perf_counter()
            if subprocess.run(py_cmd, env=env, check=False).returncode != 0:
                raise BenchFailure("python -c pass failed")
            if i >= warm:
                times["py"].append((time.perf_counter() - t0) * 1000)
        for agent in agents:
            _check_hook_trace(d, agent, f"{sid}-{agent}", warm + runs)
        self.res.params["traced hook"] = (f"{runs} runs each after {warm} warm-ups, subprocess timing loop, "
                                          "interleaved with `python -c pass`")
        ref = self.res.row("cli.hook.py", sec, "`python -c pass` (same venv, interleaved with the hooks)", "ms")
        ref.series.values = times["py"]
        ref.note = f"{len(times['py'])} invocations"
        for agent, rid, what in (("claude-code", "cli.hook", "PreToolUse"), ("codex", "cli.hook.codex", "PreToolUse"),
                                 ("gemini", "cli.hook.gemini", "BeforeTool")):
            r = self.res.row(rid, sec, f"`traced hook {agent}` ({what}, writes a record)", "ms", ref="cli.hook.py")
            r.series.values = times[agent]
            r.note = f"{len(times[agent])} invocations, one tool_call each (checked)"
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
        try:
            wedged = [hook("claude-code", {"hook_event_name": "SessionEnd", "reason": "other",
                                           "session_id": f"{sid}-{i}"}) for i in range(3)]
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        w = self.res.row("cli.hook.wedged", sec, "`traced hook claude-code` SessionEnd, daemon stopped (SIGSTOP)",
                         "ms")
        w.series.values = wedged
        w.note = "spooled within the hook's budget; ingested once the daemon runs again"

    # --- mode 5: scale ----------------------------------------------------------------------------

    def mode_scale(self) -> None:
        p = self.p
        sec = (f"5. Scale: {p.scale_conns:,} connections + {p.scale_sessions:,} open sessions "
               f"(pipelined, C client, {PIPE_CLIENTS} conns, 200 B)")
        self.res.params["scale"] = (f"{p.scale_conns:,} idle connections, {p.scale_sessions:,} sessions "
                                    f"({p.scale_sessions // p.scale_conns} per connection); "
                                    f"{p.scale_n:,} events per throughput run, {p.scale_spread_n:,} spread")
        if not self.tdclient:
            self.log.append("scale mode skipped: no C client")
            return
        for run in range(p.runs):
            self.say(f"scale run {run + 1}/{p.runs}")
            d = self.daemon(f"scale{run}")
            conns: list[socket.socket] = []
            try:
                single = self.open_sessions(d, 1)[0]
                frame, off = lib.emit_frame(single.session_id, 200, ack=False)
                rss0 = lib.proc_status(d.pid).get("VmRSS", 0) / 1024
                out = self.run_tdclient("stream", d.socket, p.scale_n, PIPE_CLIENTS, [frame], off,
                                        tail=lib.sync_frame())
                tc = lib.check_trace(Path(single.dir) / "trace.jsonl")
                lib.check_exactly_once(tc.events, p.scale_n, "scale: single session")
                lib.check_keyed(tc, "scale: single session")
                base_rate = float(out["msgs_per_s"])
                self.res.add("scale.base", base_rate, sec, "1 open session: 8 conns → that session", "ev/s")
                self.res.add("scale.rss0", rss0, sec, "daemon RSS, fresh (1 session)", "MB")
                # 1,000 connections, each opening sessions_per_conn sessions
                t0 = time.monotonic()
                conns, sessions = open_many(d.socket, p.scale_conns, p.scale_sessions)
                el = time.monotonic() - t0
                self.res.add("scale.open", len(sessions) / el, sec,
                             f"opening {p.scale_sessions:,} sessions over {p.scale_conns:,} new connections",
                             "sessions/s")
                time.sleep(0.2)
                st = lib.proc_status(d.pid)
                self.res.add("scale.rss", st.get("VmRSS", 0) / 1024, sec,
                             f"daemon RSS with {p.scale_conns:,} conns + {p.scale_sessions:,} sessions open", "MB")
                with d.client() as c:
                    info = c.status()
                if info.get("open_sessions", 0) < p.scale_sessions or info.get("connections", 0) < p.scale_conns:
                    raise BenchFailure(f"scale: daemon reports {info.get('open_sessions')} sessions, "
                                       f"{info.get('connections')} connections")
                # the same single-session load, now with everything else open
                out = self.run_tdclient("stream", d.socket, p.scale_n, PIPE_CLIENTS, [frame], off,
                                        tail=lib.sync_frame())
                tc = lib.check_trace(Path(single.dir) / "trace.jsonl")
                lib.check_exactly_once(tc.events[p.scale_n:], p.scale_n, "scale: single session, loaded")
                lib.check_keyed(tc, "scale: single session, loaded")
                self.res.add("scale.loaded", out["msgs_per_s"], sec,
                             "same load, with the connections + sessions open (idle)", "ev/s", ref="scale.base")
                # load spread over every open session
                frames = [lib.emit_frame(sid, 200, ack=False)[0] for sid, _ in sessions]
                out = self.run_tdclient("stream", d.socket, p.scale_spread_n, PIPE_CLIENTS, frames, off,
                                        tail=lib.sync_frame())
                self.verify_sessions([sd for _, sd in sessions], p.scale_spread_n, "scale: spread", keyed=True)
                self.res.add("scale.spread", out["msgs_per_s"], sec,
                             f"events round-robin over all {p.scale_sessions:,} sessions", "ev/s", ref="scale.base")
                st = lib.proc_status(d.pid)
                self.res.add("scale.rss1", st.get("VmRSS", 0) / 1024, sec, "daemon RSS after that traffic", "MB")
                self.res.add("scale.hwm", st.get("VmHWM", 0) / 1024, sec, "daemon peak RSS (VmHWM)", "MB")
            finally:
                for s in conns:
                    s.close()
                self.retire(d)

    # --- mode 11: the multi-core prototype: sessions sharded over daemons --------------------------

    def mode_shard(self) -> None:
        """The pipelined 200 B load (C client, 8 connections, each on its own session) into 1 daemon,
        then the same load with the sessions sharded over 2 daemons by a hash of the session id.

        Both rows run SHARDS ``tdclient`` processes of 8/SHARDS connections each, started together,
        so only the number of daemons differs. Throughput: all events / (last end - first start).
        """
        p = self.p
        if not self.tdclient:
            self.log.append("shard mode skipped: no C client")
            return
        n = p.shard_n
        sec = (f"11. Multi-core prototype: sessions sharded over {SHARDS} daemons by a hash of the session id "
               f"(pipelined, C client, {PIPE_CLIENTS} conns, 200 B)")
        self.res.params["shard"] = (f"{n:,} events per run; {SHARDS} `tdclient` processes × "
                                    f"{PIPE_CLIENTS // SHARDS} connections in both rows; shard = crc32(session id) "
                                    f"mod {SHARDS}")
        one = self.daemon("shard-1")
        many = [self.daemon(f"shard-{chr(97 + i)}") for i in range(SHARDS)]
        try:
            for run in range(p.runs):
                self.say(f"shard run {run + 1}/{p.runs}")
                for key, ds, label in (("shard.1", [one], "1 daemon"),
                                       ("shard.2", many, f"{SHARDS} daemons, each owns the sessions hashed to it")):
                    rate, cpu = self._sharded(ds, n)
                    ref = None if key == "shard.1" else "shard.1"
                    self.res.add(key, rate, sec, f"{label}: throughput", "ev/s", ref=ref)
                    self.res.add(f"{key}.cpu", cpu, sec, f"{label}: daemon CPU per event (all daemons)", "µs",
                                 ref=None if ref is None else "shard.1.cpu")
        finally:
            for d in (one, *many):
                self.retire(d)

    def _sharded(self, daemons: list[Daemon], n: int) -> tuple[float, float]:
        """One run: PIPE_CLIENTS sessions, each opened on (and fed through) the daemon its id hashes to.

        Returns (events/s over all daemons, daemon CPU µs per event summed over the daemons).
        """
        import zlib

        from traced.format.ids import new_ulid

        per = PIPE_CLIENTS // SHARDS  # sessions (= connections) per tdclient process
        want = [per * SHARDS // len(daemons)] * len(daemons)
        ids: list[list[str]] = [[] for _ in daemons]
        while any(len(ids[i]) < want[i] for i in range(len(daemons))):
            sid = new_ulid()
            owner = zlib.crc32(sid.encode()) % len(daemons)
            if len(ids[owner]) < want[owner]:
                ids[owner].append(sid)
        # SHARDS client processes of `per` connections; process j talks to one daemon
        jobs: list[tuple[Daemon, list[Any]]] = []
        for d, sids in zip(daemons, ids, strict=True):
            with d.client() as c:
                opened = [c.open("bench", owner_pid=-1, session_id=sid, meta={"bench": "shard"}) for sid in sids]
            if [o.session_id for o in opened] != sids:
                raise BenchFailure("shard: the daemon did not open the session ids it was given")
            jobs += [(d, opened[i:i + per]) for i in range(0, len(opened), per)]
        each = n // len(jobs)
        cmds = []
        for j, (d, opened) in enumerate(jobs):
            frames, off = lib.emit_frames([o.session_id for o in opened], 200, False)
            cmds.append(self.tdclient_cmd("stream", d.socket, each, len(opened), frames, off, tail=lib.sync_frame(),
                                          tag=f"-shard{j}"))
        cpu0 = [lib.cpu_seconds(d.pid) for d in daemons]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for cmd, env in cmds]
        outs = []
        try:
            for proc in procs:
                so, se = proc.communicate(timeout=900)
                if proc.returncode != 0:
                    raise BenchFailure(f"tdclient (shard) failed ({proc.returncode}): {so} {se}")
                outs.append(json.loads(so))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        cpu = sum(lib.cpu_seconds(d.pid) - c0 for d, c0 in zip(daemons, cpu0, strict=True))
        for d, opened in jobs:
            self.verify_sessions([o.dir for o in opened], each, f"shard ({d.base.name})", keyed=True)
        for d, opened in jobs:
            self.end_sessions(d, opened)
            self.discard([o.dir for o in opened])
        start = min(o["start_mono"] for o in outs)
        end = max(o["start_mono"] + o["elapsed_s"] for o in outs)
        return each * len(jobs) / (end - start), cpu / (each * len(jobs)) * 1e6

    # --- mode 7: ls -----------------------------------------------------------------------------

    def mode_ls(self) -> None:
        p = self.p
        sec = f"7. `traced ls --root DIR --since 30d` over {p.ls_sessions:,} sessions"
        root = self.work / "ls-root"
        self.say(f"ls: generating {p.ls_sessions:,} sessions")
        t0 = time.monotonic()
        generate_sessions(root, p.ls_sessions)
        self.res.params["ls"] = (f"{p.ls_sessions:,} ended sessions (8 records each) over 20 days, generated in "
                                 f"{time.monotonic() - t0:.1f}s; {p.ls_runs} runs per row; output to a pipe")
        traced_bin = str(Path(sys.executable).parent / "traced")
        env = {k: v for k, v in os.environ.items() if k not in ("TRACED_ROOT", "STATE_DIRECTORY")}
        env["TZ"] = "UTC"
        for run in range(p.ls_runs):
            self.say(f"ls run {run + 1}/{p.ls_runs}")
            for key, extra, label in (("ls.table", [], "table output"), ("ls.json", ["--json"], "`--json` output")):
                cmd = [traced_bin, "ls", "--root", str(root), "--since", "30d", *extra]
                t0 = time.perf_counter()
                res = subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=600)
                el = time.perf_counter() - t0
                if res.returncode != 0:
                    raise BenchFailure(f"traced ls failed: {res.stderr[-1000:]!r}")
                lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
                if extra:
                    ids = {json.loads(ln)["session_id"] for ln in lines}
                    if len(ids) != p.ls_sessions:
                        raise BenchFailure(f"traced ls --json listed {len(ids)} sessions, expected {p.ls_sessions}")
                elif len(lines) < p.ls_sessions:
                    raise BenchFailure(f"traced ls printed {len(lines)} lines for {p.ls_sessions} sessions")
                self.res.add(key, el, sec, label, "s")


    # --- mode 8: the OTLP receiver ----------------------------------------------------------------

    def mode_otlp(self) -> None:
        """POST batches of GenAI spans (half chat, half execute_tool) to ``--otlp-listen`` from
        OTLP_CLIENTS keep-alive connections; every span must land as its records, exactly once."""
        import threading
        import urllib.parse

        from traced import Client

        p = self.p
        sec = f"8. OTLP receiver: protobuf `/v1/traces`, {OTLP_CLIENTS} clients × batches of {OTLP_BATCH} GenAI spans"
        self.res.params["otlp"] = (f"{p.otlp_batches} requests per run of {OTLP_BATCH} spans (one trace each: "
                                   "chat spans -> llm_call, execute_tool spans -> tool_call + tool_result)")
        for run in range(p.busy_runs):
            self.say(f"otlp run {run + 1}/{p.busy_runs}")
            d = Daemon(self.work, f"otlp-{run}", ["--otlp-listen", "127.0.0.1:0"])
            d.env["TRACED_OTLP_RATE"] = "1000000"
            d.start()
            self.daemons.append(d)
            try:
                with Client(d.socket, spool=False, spool_after=0.0, name="bench") as c:
                    info = c.status()["otlp"]
                token = (d.state / "traced" / "otlp-token").read_text().strip()
                url = urllib.parse.urlsplit(info["endpoint"])
                for gz in (False, True):
                    bodies = [_otlp_body(run * 2 + gz, i) for i in range(p.otlp_batches)]
                    if gz:
                        import gzip

                        bodies = [gzip.compress(b, 1) for b in bodies]
                    errors: list[str] = []
                    threads = [threading.Thread(target=_otlp_post, args=(
                        url.hostname, url.port, token, gz, bodies[k::OTLP_CLIENTS], errors))
                        for k in range(OTLP_CLIENTS)]
                    t0 = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    el = time.perf_counter() - t0
                    if errors:
                        raise BenchFailure(f"otlp: {len(errors)} requests failed, first: {errors[0]}")
                    spans = p.otlp_batches * OTLP_BATCH
                    key, label = ("otlp.gzip", "gzip") if gz else ("otlp.pb", "uncompressed")
                    self.res.add(key, spans / el, sec, f"spans into records, {label}", "spans/s")
                self._verify_otlp(d, 2 * p.otlp_batches)
            finally:
                self.retire(d)

    def _verify_otlp(self, d: Daemon, sessions: int) -> None:
        """Each trace is one session: start, then OTLP_BATCH/2 llm_call and as many tool_call/tool_result pairs."""
        dirs = sorted(d.root.glob("*/*/*"))
        if len(dirs) != sessions:
            raise BenchFailure(f"otlp: {len(dirs)} sessions, expected {sessions}")
        half = OTLP_BATCH // 2
        for sd in dirs:
            tc = lib.check_trace(sd / "trace.jsonl")
            if tc.phases != {"start": 1, "llm_call": half, "tool_call": half, "tool_result": half}:
                raise BenchFailure(f"otlp: unexpected records in {sd}: {tc.phases}")

    # --- mode 9: import -------------------------------------------------------------------------

    def mode_import(self) -> None:
        """`traced import claude-code` of N generated transcripts (the fixture conversation, ids made
        unique), then again (nothing to add); and a Stop hook reading a long transcript's new part."""
        p = self.p
        sec = f"9. Usage from transcripts: `traced import claude-code` of {p.import_sessions:,} sessions; hook at Stop"
        traced_bin = str(Path(sys.executable).parent / "traced")
        t0 = time.monotonic()
        src = self.work / "claude-projects"
        size = generate_transcripts(src, p.import_sessions)
        self.res.params["import"] = (
            f"{p.import_sessions:,} Claude Code transcripts ({size / 1e6:.1f} MB; each 2 turns, 6 tool calls, "
            f"a subagent, 9 API responses written as 11 lines: 23 records), generated in "
            f"{time.monotonic() - t0:.1f}s; {p.runs} runs, a fresh daemon each; the import's progress goes to a pipe")
        for run in range(p.runs):
            self.say(f"import run {run + 1}/{p.runs}")
            d = self.daemon(f"import{run}")
            try:
                for key, label, expect in (("import.first", "first import (every session new)", "new"),
                                           ("import.again", "the same again (nothing to add)", "unchanged")):
                    t1 = time.perf_counter()
                    res = subprocess.run([traced_bin, "import", "claude-code", str(src), "--json"], env=d.env,
                                         check=False, capture_output=True, timeout=900)
                    el = time.perf_counter() - t1
                    if res.returncode != 0:
                        raise BenchFailure(f"traced import failed: {res.stderr[-1000:]!r}")
                    out = json.loads(res.stdout)
                    if out[expect] != p.import_sessions or out["failed"]:
                        raise BenchFailure(f"traced import: {out}, expected {p.import_sessions} {expect}")
                    if f"{p.import_sessions}/{p.import_sessions} sessions".encode() not in res.stderr:
                        raise BenchFailure(f"traced import showed no progress: {res.stderr[-300:]!r}")
                    self.res.add(key, el, sec, label, "s")
                    self.res.add(key + ".rate", p.import_sessions / el, sec, f"{label}: sessions/s", "sessions/s")
                usage = subprocess.run([traced_bin, "usage", "--since", "3000d", "--json"], env=d.env,
                                       check=True, capture_output=True, timeout=600)
                total = json.loads(usage.stdout)["total"]
                if total["llm_calls"] != 9 * p.import_sessions or total["output_tokens"] != 1669 * p.import_sessions:
                    raise BenchFailure(f"after the import, usage shows {total['llm_calls']} calls, "
                                       f"{total['output_tokens']} output tokens")
                self._stop_hook(d, traced_bin, sec)
            finally:
                self.retire(d)

    def _stop_hook(self, d: Daemon, traced_bin: str, sec: str) -> None:
        """A Stop hook whose transcript gained ``hook_responses`` API responses since the last one."""
        n = self.p.hook_responses
        sid = "0b1e5c3a-7d2f-4e8b-9a6c-5d4e3f2a1b0c"
        path = d.base / "transcript" / f"{sid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(long_transcript(sid, n))
        event = {"session_id": sid, "transcript_path": str(path), "cwd": "/tmp", "hook_event_name": "Stop",
                 "stop_hook_active": False}
        t0 = time.perf_counter()
        res = subprocess.run([traced_bin, "hook", "claude-code"], input=json.dumps(event).encode(), env=d.env,
                             check=False, capture_output=True, timeout=60)
        el = (time.perf_counter() - t0) * 1000
        if res.returncode != 0 or res.stdout or res.stderr:
            raise BenchFailure(f"traced hook Stop: {res.returncode} {res.stderr[-500:]!r}")
        traces = list(d.root.glob(f"*/claude-code/{sid}/trace.jsonl"))
        calls = sum('"phase":"llm_call"' in line for line in traces[0].read_text().splitlines()) if traces else 0
        if calls != n:
            raise BenchFailure(f"traced hook Stop recorded {calls} of {n} API responses")
        self.res.add("import.hook", el, sec, f"`traced hook claude-code` Stop, {n:,} new API responses "
                     f"({path.stat().st_size / 1e6:.1f} MB of transcript)", "ms")


    def mode_exporter(self) -> None:
        """The OTLP exporter (``bench/exporter.py``): spans/s out of the real forwarder to a receiver process."""
        sessions = 300 if self.args.quick else 2000
        sec = f"10. OTLP exporter: {sessions:,} sessions x 13 spans to an OTLP/HTTP receiver"
        self.say(f"exporter: {sessions:,} sessions")
        cmd = [sys.executable, str(lib.HERE / "exporter.py"), "--sessions", str(sessions), "--runs", "3"]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise BenchFailure(f"bench/exporter.py failed: {(res.stdout + res.stderr)[-1000:]!r}")
        for line in res.stdout.splitlines():
            m = re.match(r"run \d+: \d+ spans in [\d.]+ s: ([\d,]+) spans/s, ([\d,]+) spans per CPU second", line)
            if m:
                self.res.add("exporter.rate", float(m.group(1).replace(",", "")), sec, "spans/s out (wall clock)",
                             "spans/s")
                self.res.add("exporter.cpu", float(m.group(2).replace(",", "")), sec,
                             "spans per CPU second of the exporter's process", "spans/s")
        if self.res.get("exporter.rate") is None:
            raise BenchFailure(f"bench/exporter.py printed no run: {res.stdout[-500:]!r}")


def _otlp_post(host: str, port: int, token: str, gz: bool, bodies: list[bytes], errors: list[str]) -> None:
    """POST ``bodies`` one after the other on one keep-alive connection; failures go to ``errors``."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=120)
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"}
    if gz:
        headers["Content-Encoding"] = "gzip"
    try:
        for body in bodies:
            conn.request("POST", "/v1/traces", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200 or data:
                errors.append(f"{resp.status} {data[:200]!r}")
    finally:
        conn.close()


def _otlp_body(run: int, i: int) -> bytes:
    """One ExportTraceServiceRequest: a trace of OTLP_BATCH spans (chat and execute_tool alternating)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bench-agent"
    spans = rs.scope_spans.add().spans
    trace = (run << 32 | i + 1).to_bytes(16, "big")
    t0 = 1_764_500_000_000_000_000 + i * 1_000_000_000
    for n in range(OTLP_BATCH):
        s = spans.add()
        s.trace_id, s.span_id, s.name = trace, (n + 1).to_bytes(8, "big"), "span"
        s.start_time_unix_nano, s.end_time_unix_nano = t0 + n * 1000, t0 + n * 1000 + 500
        attrs = ({"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-sonnet-4-5",
                  "gen_ai.provider.name": "anthropic"} if n % 2 == 0 else
                 {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "Bash",
                  "gen_ai.tool.call.id": f"toolu_{n}", "gen_ai.tool.call.arguments": '{"cmd": "git status"}'})
        for k, v in attrs.items():
            a = s.attributes.add()
            a.key, a.value.string_value = k, v
        if n % 2 == 0:
            for k, iv in (("gen_ai.usage.input_tokens", 11330), ("gen_ai.usage.output_tokens", 412),
                          ("gen_ai.usage.cache_read.input_tokens", 9000)):
                a = s.attributes.add()
                a.key, a.value.int_value = k, iv
    return bytes(req.SerializeToString())


def generate_transcripts(root: Path, n: int) -> int:
    """``n`` copies of the fixture conversation (main + subagent transcript), each with its own session
    and message ids, written long ago; returns the bytes written."""
    fixture = lib.REPO / "tests" / "fixtures" / "claude_code" / "transcript"
    sid = "5f0c2b1e-8d3a-4c7e-9b21-3e6f7a9d4c10"
    main = (fixture / f"{sid}.jsonl").read_bytes()
    sub = (fixture / sid / "subagents" / "agent-a4f1c2e9.jsonl").read_bytes()
    size = 0
    for i in range(n):
        new = f"5f0c2b1e-8d3a-4c7e-9b21-{i:012d}".encode()
        project = root / f"-home-dev-src-project{i % 20}"
        (project / new.decode() / "subagents").mkdir(parents=True, exist_ok=True)
        for data, path in ((main, project / f"{new.decode()}.jsonl"),
                           (sub, project / new.decode() / "subagents" / "agent-a4f1c2e9.jsonl")):
            body = data.replace(sid.encode(), new).replace(b"msg_01", b"msg_%06d" % i)
            path.write_bytes(body)
            os.utime(path, (1_700_000_000, 1_700_000_000))
            size += len(body)
    return size


def long_transcript(sid: str, n: int) -> bytes:
    """A transcript of ``n`` API responses (a tool call and its result each), Claude Code's shape."""
    out = []
    for i in range(n):
        base = {"parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/tmp", "sessionId": sid,
                "version": "2.0.21", "gitBranch": "main"}
        ts = f"2025-10-20T{9 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
        usage = {"input_tokens": 5, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 20000 + i,
                 "output_tokens": 120, "service_tier": "standard"}
        message = {"id": f"msg_bench{i:08d}", "type": "message", "role": "assistant",
                   "model": "claude-sonnet-4-5-20250929", "stop_reason": "tool_use", "usage": usage,
                   "content": [{"type": "tool_use", "id": f"toolu_bench{i:08d}", "name": "Bash",
                                "input": {"command": f"pytest -q tests/test_{i}.py"}}]}
        out.append({**base, "type": "assistant", "message": message, "requestId": f"req_bench{i:08d}",
                    "uuid": f"a{i:035d}", "timestamp": ts})
        result = {"role": "user", "content": [{"tool_use_id": f"toolu_bench{i:08d}", "type": "tool_result",
                                               "content": "." * 2000 + "\n12 passed in 0.84s"}]}
        out.append({**base, "type": "user", "message": result, "uuid": f"u{i:035d}", "timestamp": ts})
    return b"".join(json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in out)

def _compile_traced() -> str:
    """Compile traced's .pyc files, as pip does when it installs a wheel; returns a note for the
    params. An editable checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise recompile
    every module the per-event paths import on every invocation (~15 ms on the bench machine)."""
    import compileall

    import traced

    pkg = os.path.dirname(traced.__file__)
    ok = compileall.compile_dir(pkg, quiet=1)
    return f"traced's .pyc compiled before timing ({'ok' if ok else 'FAILED'}), as a wheel install does"


def _check_hook_trace(d: Daemon, agent: str, sid: str, n: int) -> None:
    """The hook session of ``agent``: steps gap-free, one start, then exactly one tool_call per
    invocation 0..n-1 (``ls bench-<i>`` in its input), in order."""
    [path] = d.root.glob(f"*/{agent}/{sid}/trace.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if [r["step"] for r in rows] != list(range(1, len(rows) + 1)):
        raise BenchFailure(f"traced hook {agent}: steps not gap-free in {path}")
    phases = [r["phase"] for r in rows]
    if phases != ["start"] + ["tool_call"] * n:
        raise BenchFailure(f"traced hook {agent}: {phases.count('tool_call')} tool_call records for {n} "
                           f"invocations (phases {sorted(set(phases))})")
    got = [r["payload"].get("args", {}).get("command") for r in rows[1:]]
    if got != [f"ls bench-{i}" for i in range(n)]:
        raise BenchFailure(f"traced hook {agent}: tool_call records are not invocations 0..{n - 1} once each")


def _shq(s: str) -> str:
    import shlex

    return shlex.quote(s)


def open_many(sock: Path, nconns: int, nsessions: int) -> tuple[list[socket.socket], list[tuple[str, str]]]:
    """``nconns`` connections (hello each), opening ``nsessions`` sessions between them, pipelined.

    Returns the open sockets and (session_id, dir) of every session.
    """
    from traced.format.ids import new_ulid
    from traced.wire import protocol
    from traced.wire.framing import Framer
    from traced.wire.protocol import encode

    per = [nsessions // nconns + (1 if i < nsessions % nconns else 0) for i in range(nconns)]
    socks: list[socket.socket] = []
    now = time.time()
    try:
        for i in range(nconns):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock))
            socks.append(s)
            buf = encode(protocol.Hello(id=1, client=f"bench-idle-{i}", client_id=new_ulid(), pid=os.getpid(),
                                        cwd="/tmp"))
            for j in range(per[i]):
                encode(protocol.Open(id=2 + j, skill="bench", session_id=new_ulid(), owner_pid=-1, cwd="/tmp",
                                     meta={"bench": "scale"}, ts=now), buf)
            s.sendall(buf)
        sessions: list[tuple[str, str]] = []
        for i, s in enumerate(socks):
            framer = Framer(1 << 24)
            want = 1 + per[i]
            got = 0
            while got < want:
                data = s.recv(1 << 16)
                if not data:
                    raise BenchFailure(f"scale: the daemon closed connection {i} of {nconns} after {got} of "
                                       f"{want} replies")
                for body in framer.feed(data):
                    rep = protocol.decode_reply(body)
                    got += 1
                    if isinstance(rep, protocol.Error):
                        raise BenchFailure(f"scale: open failed: {rep.code}: {rep.message}")
                    if isinstance(rep, protocol.Opened):
                        sessions.append((rep.session_id, rep.dir))
        if len(sessions) != nsessions:
            raise BenchFailure(f"scale: {len(sessions)} sessions opened, expected {nsessions}")
        return socks, sessions
    except BaseException:
        for s in socks:
            s.close()
        raise


def generate_sessions(root: Path, n: int) -> None:
    """``n`` ended sessions in the documented on-disk format (DESIGN §2), spread over the last 20 days."""
    from traced.format.ids import new_ulid
    from traced.format.records import Meta, Record, Usage, format_ts, json_encoder

    enc = json_encoder.encode
    now = time.time()
    skills = ("review", "summarize", "fix-tests", "triage", "release-notes")
    for i in range(n):
        start = now - 3600 - (i * 20 * 86400.0 / n)
        skill = skills[i % len(skills)]
        sid = new_ulid(start)
        day = time.strftime("%Y-%m-%d", time.gmtime(start))
        sdir = root / day / skill / sid
        sdir.mkdir(parents=True, exist_ok=True)
        recs = [
            ("start", {"input": f"task {i}", "cwd": "/home/dev/proj"}),
            ("user_prompt", {"prompt_id": "p1", "prompt": "Please review the change"}),
            ("tool_call", {"tool": "Bash", "args": {"cmd": "git diff --stat"}, "call_id": f"c{i}"}),
            ("tool_result", {"tool": "Bash", "ok": i % 7 != 0, "duration_ms": 40, "call_id": f"c{i}"}),
            ("llm_call", {"provider": "anthropic", "model": "claude-sonnet-4-5",
                          "usage": {"input_tokens": 1200 + i % 100, "output_tokens": 340}, "cost_usd": 0.0123}),
            ("note", {"message": "looks fine"}),
            ("artifact", {"path": "review.md", "kind": "report"}),
            ("end", {"outcome": "success" if i % 7 else "failure", "summary": "done"}),
        ]
        buf = bytearray()
        for step, (phase, pay) in enumerate(recs, 1):
            buf += enc(Record(ts=format_ts(start + step), skill=skill, session_id=sid, step=step,
                              turn=1 if step > 1 and phase != "end" else None, phase=phase, payload=pay))
            buf += b"\n"
        (sdir / "trace.jsonl").write_bytes(bytes(buf))
        meta = Meta(session_id=sid, skill=skill, devboy_version="traced 0.1.0", started_at=format_ts(start + 1),
                    ended_at=format_ts(start + len(recs)), outcome="success" if i % 7 else "failure",
                    summary="done", input_summary=f"task {i}", tool_calls=1, errors=0 if i % 7 else 1,
                    steps=len(recs), turns=1,
                    phases={ph: 1 for ph, _ in recs},
                    usage=Usage(input_tokens=1200 + i % 100, output_tokens=340, cost_usd=0.0123, llm_calls=1),
                    host="devbox", cwd="/home/dev/proj", target="global")
        (sdir / "meta.json").write_bytes(enc(meta))


# --- report ---------------------------------------------------------------------------------

TARGETS: list[tuple[str, str, Callable[[Results], tuple[str, bool | None]]]] = []


def _target(name: str, need: str) -> Callable[[Callable[[Results], tuple[str, bool | None]]], Any]:
    def deco(fn: Callable[[Results], tuple[str, bool | None]]) -> Any:
        TARGETS.append((name, need, fn))
        return fn

    return deco


def _med(res: Results, key: str) -> float:
    r = res.get(key)
    return r.series.median if r else float("nan")


def _ok(x: float, cond: bool) -> bool | None:
    return None if x != x else cond


@_target("(1) pipelined ingest vs rsyslog, same run", "≥ 1.0×")
def _t1(res: Results) -> tuple[str, bool | None]:
    parts, oks = [], []
    for size in (200, 2000):
        for src, label in (("py", "Python"), ("c", "C"), ("cb", "C batch")):
            r = res.ratio(f"pipe{size}.{src}", f"pipe{size}.rsyslog")
            parts.append(f"{SIZE_NAME[size]} {label} {r:.2f}×")
            oks.append(_ok(r, r >= 1.0))
    return "; ".join(parts), (None if None in oks else all(oks))


@_target("(2) acked, 16 clients", "≥ 100k ev/s, p99 ≤ 0.5 ms")
def _t2(res: Results) -> tuple[str, bool | None]:
    rate, p99 = _med(res, "ack16.py"), _med(res, "ack16.py.p99")
    return f"{rate:,.0f} ev/s, p99 {p99 / 1000:.2f} ms", _ok(rate, rate >= 100_000 and p99 <= 500)


@_target("(2) acked, 1 client", "p50 ≤ 60 µs, p99 ≤ 150 µs")
def _t2b(res: Results) -> tuple[str, bool | None]:
    p50, p99 = _med(res, "ack1.py.p50"), _med(res, "ack1.py.p99")
    return f"p50 {p50:.0f} µs, p99 {p99:.0f} µs", _ok(p50, p50 <= 60 and p99 <= 150)


@_target("(3) fsync=always, 64 clients on 64 sessions (issue #19)", "≥ 6× `fdatasync` per event, p99 ≤ 5 ms")
def _t3(res: Results) -> tuple[str, bool | None]:
    key = "dur.c" if res.get("dur.c") is not None else "dur.py"
    rate, p99, r = _med(res, key), _med(res, f"{key}.p99"), res.ratio(key, "dur.fsync1")
    return (f"{rate:,.0f} ev/s = {r:.2f}× the reference, p99 {p99 / 1000:.2f} ms ({key})",
            _ok(rate, r >= 6.0 and p99 <= 5000))


@_target("(4) `traced event` vs `python -c pass`", "≤ 2×")
def _t4(res: Results) -> tuple[str, bool | None]:
    r = res.ratio("cli.event", "cli.py")
    return f"{_med(res, 'cli.event'):.1f} ms vs {_med(res, 'cli.py'):.1f} ms = {r:.2f}×", _ok(r, r <= 2.0)


@_target("(4b) a hook invocation whatever the daemon's state", "≤ 1 s wall")
def _t4b(res: Results) -> tuple[str, bool | None]:
    live, wedged = res.get("cli.hook"), res.get("cli.hook.wedged")
    if live is None or wedged is None:
        return "not measured", None
    worst = max([*live.series.values, *wedged.series.values])
    ratio = res.ratio("cli.hook", "cli.hook.py")
    return (f"live {live.series.median:.1f} ms ({ratio:.2f}× `python -c pass`), daemon stopped "
            f"{wedged.series.median:.0f} ms; worst {worst:.0f} ms", _ok(worst, worst <= 1000))


@_target("(8) import of the history", "1,000 sessions ≤ 60 s; Stop hook ≤ 1 s")
def _t8(res: Results) -> tuple[str, bool | None]:
    first, again, hook = _med(res, "import.first"), _med(res, "import.again"), _med(res, "import.hook")
    n = res.params.get("import", "").split(" ", 1)[0]
    scaled = first * 1000 / max(int(n.replace(",", "") or 1), 1)
    return (f"{n} sessions in {first:.1f} s (again: {again:.1f} s; ~{scaled:.0f} s per 1,000); Stop hook {hook:.0f} ms",
            _ok(first, scaled <= 60 and hook <= 1000))


@_target("(5) scale: RSS with the connections + sessions open", "≤ 200 MB")
def _t5(res: Results) -> tuple[str, bool | None]:
    rss = max(_med(res, "scale.rss"), _med(res, "scale.rss1"))
    return f"{rss:.0f} MB", _ok(rss, rss <= 200)


@_target("(5) scale: throughput vs single session", "≥ 0.8×")
def _t5b(res: Results) -> tuple[str, bool | None]:
    a, b = res.ratio("scale.loaded", "scale.base"), res.ratio("scale.spread", "scale.base")
    return f"idle sessions open {a:.2f}×; spread over all {b:.2f}×", _ok(a, a >= 0.8 and b >= 0.8)


@_target("(6) redaction cost", "on/off ≥ 0.8×")
def _t6(res: Results) -> tuple[str, bool | None]:
    a, b = _med(res, "redact200"), _med(res, "redact2000")
    return f"200 B {a:.2f}×, 2 KB {b:.2f}×", _ok(a, a >= 0.8 and b >= 0.8)


@_target("(8) OTLP receiver: spans into records", "≥ 12k spans/s (2× the exporter's 5-6k, issue #17)")
def _t8(res: Results) -> tuple[str, bool | None]:
    x = _med(res, "otlp.pb")
    return f"{x:,.0f} spans/s uncompressed, {_med(res, 'otlp.gzip'):,.0f} gzip", _ok(x, x >= 12_000)


def row_values(res: Results) -> dict[str, list[float]]:
    """Row key -> its values (one per run, or per invocation), for bench/targets.py."""
    return {k: r.series.values for k, r in res.rows.items()}


def render(res: Results, info: dict[str, str], args: argparse.Namespace, elapsed: float) -> str:
    out: list[str] = []
    w = out.append
    w(f"# traced benchmark — {info['date']}{' (--quick)' if args.quick else ''}")
    w("")
    w(f"- machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, kernel {info['kernel']}, {info['os']}, "
      f"/tmp on {info['tmp_fs']}")
    w(f"- Python {info['python']}, msgspec {info['msgspec']}, anyio {info['anyio']}, uvloop {info['uvloop']}, "
      f"traced {info['traced']} (git {info['git']})")
    w(f"- wall time of the whole benchmark: {elapsed:.0f} s")
    head = ("CPU steal", "machine load")
    for k in head:
        if k in res.params:
            w(f"- {k}: {res.params[k]}")
    w("")
    out.extend(targets.markdown(row_values(res)))
    w("")
    w("## Parameters")
    w("")
    for k, v in res.params.items():
        if k not in head:
            w(f"- {k}: {v}")
    w("")
    w("## Rows")
    w("")
    w("Each row: median, min and max over the runs (for `traced event`: over the invocations). "
      "`ratio` = this row's median / the median of the row named in `vs`, measured in the same runs. "
      "Clients, daemon and peers share the same CPUs.")
    sections: dict[str, list[str]] = {}
    for key in res.order:
        if res.rows[key].series.values:
            sections.setdefault(res.rows[key].section, []).append(key)
    first = {sec: i for i, sec in reversed(list(enumerate(sections)))}

    def _order(sec: str) -> tuple[int, int]:
        head = sec.split(".", maxsplit=1)[0]
        return (int(head) if head.isdigit() else 99, first[sec])

    for sec, keys in sorted(sections.items(), key=lambda kv: _order(kv[0])):
        w("")
        w(f"### {sec}")
        w("")
        w("| row | median | min | max | unit | vs | ratio |")
        w("|---|---:|---:|---:|---|---|---:|")
        for key in keys:
            r = res.rows[key]
            s = r.series
            ref = res.rows.get(r.ref) if r.ref else None
            ratio = res.ratio(key, r.ref) if r.ref else float("nan")
            vs = ""
            if ref is not None and r.ref:
                vs = ref.name.split(":")[0].split(" (")[0]
                if "rsyslog" in r.ref:
                    vs = "rsyslog CPU/event" if r.ref.endswith(".cpu") else "rsyslog"
                elif ".mini" in r.ref:
                    vs = "minimal Python server"
                elif ".asyncio" in key:
                    vs = "the same on uvloop"
                elif r.ref.endswith(".cpu"):
                    vs += " CPU/event"
            name = r.name + (f" ({r.note})" if r.note else "")
            w(f"| {name} | {lib.fmt_num(s.median, r.unit)} | {lib.fmt_num(s.min, r.unit)} "
              f"| {lib.fmt_num(s.max, r.unit)} | {r.unit} | {vs} | {'' if ratio != ratio else f'{ratio:.2f}×'} |")
    w("")
    w("### Absolute figures of earlier issues (#5, #8, #17)")
    w("")
    w("| target | required | measured (medians) | verdict |")
    w("|---|---|---|---|")
    for name, need, fn in TARGETS:
        try:
            text, ok = fn(res)
        except Exception as e:  # a missing row
            text, ok = f"n/a ({e})", None
        if "nan" in text:
            text, ok = "not measured", None
        verdict = "n/a" if ok is None else ("met" if ok else "**missed**")
        w(f"| {name} | {need} | {text} | {verdict} |")
    if res.notes:
        w("")
        w("### Notes")
        w("")
        for n in res.notes:
            w(f"- {n}")
    w("")
    return "\n".join(out)


MODES = ("pipelined", "acked", "durable", "cli", "scale", "shard", "ls", "otlp", "import", "exporter")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer events and sessions: under a minute")
    ap.add_argument("--runs", type=int, default=0, help="runs per mode (default 3; at least 3 are reported)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--no-rsyslog", action="store_true", help="skip the rsyslog peer")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (daemon logs, traces)")
    ap.add_argument("--out-dir", default=str(lib.REPO / "bench-results"), help="where the .md report goes")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m!r}")
    if args.runs and args.runs < 3:
        print("note: fewer than 3 runs requested", file=sys.stderr)
    busy = lib.cpu_busy(0.5 if args.quick else 1.0)
    t_start = time.monotonic()
    info = lib.machine_info()
    code = 0
    with lib.workdir(keep=args.keep) as work:
        bench = Bench(args, work)
        try:
            bench.setup()
            run_t0 = lib.cpu_times()
            steals = []
            for m in modes:
                t0 = lib.cpu_times()
                getattr(bench, f"mode_{m}")()
                steals.append(f"{m} {lib.steal_share(t0, lib.cpu_times()):.0%}")
            total_steal = lib.steal_share(run_t0, lib.cpu_times())
            bench.res.params["CPU steal"] = (
                f"{total_steal:.0%} of the CPU time during the run went to other VMs on the host "
                f"(/proc/stat steal; by mode: {', '.join(steals)})")
            if total_steal > 0.05:
                bench.res.notes.append(
                    f"the hypervisor stole {total_steal:.0%} of the CPU time during the run: latency rows and "
                    "run-to-run spread suffer most; compare ratios measured in the same run, not absolute numbers "
                    "across runs")
        except BenchFailure as e:
            bench.post_mortem()
            print(f"FAIL: {e}", flush=True)
            code = 1
        except Exception:
            traceback.print_exc()
            bench.post_mortem()
            print("FAIL: the benchmark crashed", flush=True)
            code = 1
        finally:
            bench.reap()
            if args.keep:
                print(f"kept {work}", file=sys.stderr)
        if code:
            return code
        busy_after = lib.cpu_busy(0.5 if args.quick else 1.0)
        load = os.getloadavg()
        bench.res.params["machine load"] = (
            f"{busy:.0%} of the CPUs busy in the second before the run, {busy_after:.0%} after it; "
            f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if busy > 0.10 or busy_after > 0.10:
            bench.res.notes.append(
                "other processes were using the CPUs around the run: treat the numbers as noisy and re-run on an "
                "idle machine")
        report = render(bench.res, info, args, time.monotonic() - t_start)
    print(report)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.md"
    path.write_text(report)
    print(f"written to {path}", file=sys.stderr)
    print("\n".join(targets.plain(row_values(bench.res))), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
