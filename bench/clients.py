# ruff: noqa: PLR0917
"""Load from Python: N forked client processes, each a real ``traced.Client``.

Every child connects and opens its own session first, then all start together
(a barrier); each reports its start/end on CLOCK_MONOTONIC (shared by all
processes), so throughput = all events / (last end - first start).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from lib import BenchFailure, payload

_ctx = mp.get_context("fork")


class ChildResult(msgspec.Struct):
    idx: int
    t0: float
    t1: float
    n: int
    session_dir: str
    lat_us: list[float] = []
    error: str = ""


@dataclass
class ClientsRun:
    """The outcome of one multi-process run."""

    events: int
    elapsed: float
    session_dirs: list[str]
    lat_us: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.elapsed


def _child(idx: int, sock: str, size: int, n: int, ack: bool, barrier: Any, out: str) -> None:
    code = 0
    try:
        from traced import Client

        pay = [payload(size, idx * n + i) for i in range(n)]
        lat: list[float] = []
        with Client(sock, spool=False, spool_after=0.0, name=f"bench-{idx}") as client:
            opened = client.open("bench", meta={"bench": "clients"})
            s = client.attach(opened.session_id)
            barrier.wait(120)
            if ack:
                clock = time.perf_counter_ns
                emit = s.event
                t0 = time.monotonic()
                for p in pay:
                    a = clock()
                    step = emit("tool_call", p)
                    lat.append((clock() - a) / 1000.0)
                    if not step:
                        raise BenchFailure(f"no step in ack: {step!r}")
                t1 = time.monotonic()
            else:
                emit = s.event
                t0 = time.monotonic()
                for p in pay:
                    emit("tool_call", p, ack=False)
                client.sync()
                t1 = time.monotonic()
            client.end(opened.session_id, "success")
        res = ChildResult(idx, t0, t1, n, opened.dir, lat)
    except BaseException as e:  # reported to the parent, which fails the run
        res = ChildResult(idx, 0.0, 0.0, 0, "", [], f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        code = 1
        try:
            barrier.abort()
        except Exception:
            pass
    Path(out).write_bytes(msgspec.msgpack.encode(res))
    os._exit(code)


def run_clients(sock: Path, nclients: int, n_each: int, size: int, ack: bool, tmp: Path) -> ClientsRun:
    """Fork ``nclients`` processes, each sending ``n_each`` events to its own session."""
    barrier = _ctx.Barrier(nclients)
    procs = []
    outs = []
    for i in range(nclients):
        out = tmp / f"child-{os.getpid()}-{i}.res"
        outs.append(out)
        p = _ctx.Process(target=_child, args=(i, str(sock), size, n_each, ack, barrier, str(out)))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(600)
        if p.is_alive():
            p.kill()
            raise BenchFailure("a client process hung")
    results = []
    for out in outs:
        try:
            res = msgspec.msgpack.decode(out.read_bytes(), type=ChildResult)
        except (OSError, msgspec.DecodeError) as e:
            raise BenchFailure(f"a client process left no result: {e}") from e
        out.unlink()
        if res.error:
            raise BenchFailure(f"client {res.idx} failed: {res.error}")
        results.append(res)
    t0 = min(r.t0 for r in results)
    t1 = max(r.t1 for r in results)
    lat: list[float] = []
    for r in results:
        lat.extend(r.lat_us)
    return ClientsRun(sum(r.n for r in results), t1 - t0, [r.session_dir for r in results], lat)
