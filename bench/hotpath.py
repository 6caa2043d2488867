"""The daemon's per-event path in one process, no socket: CPU µs per event, next to the minimal server's work.

``Handler.process_now`` (decode, checks, redaction, steps, the JSON line, one write(2) per run,
meta counters, idempotency keys) on frames cut as a 64 KiB read would cut them, against the
minimal server's per-event work (``bench/miniserver.py``: a msgpack decode to a dict, a step, a
JSON line, one write per read) in the same process. Thread CPU time, best of 3 thirds of the
events; real files under a temp dir, ``fsync = "never"``. Run it under py-spy for a profile::

    .venv/bin/python bench/hotpath.py [--size 200|2000] [--no-redaction] [--sessions N] [--events N]
    py-spy record -r 1000 -f raw -o prof.txt -- .venv/bin/python bench/hotpath.py --events 150000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=200, choices=(200, 2000))
    ap.add_argument("--no-redaction", action="store_true")
    ap.add_argument("--sessions", type=int, default=1, help="events round-robin over this many sessions")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--per-read", type=int, default=0,
                    help="frames per read (default: as many as 64 KiB hold); 1 with --ack is the acked path")
    ap.add_argument("--ack", action="store_true", help="each event asks for an ack")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tdh-", dir="/tmp")
    os.environ.update(XDG_STATE_HOME=f"{tmp}/state", XDG_RUNTIME_DIR=f"{tmp}/run", XDG_CONFIG_HOME=f"{tmp}/config")
    os.makedirs(f"{tmp}/run", mode=0o700)
    try:
        anyio.run(_run, args, tmp, backend_options={"use_uvloop": True})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(args: argparse.Namespace, tmp: str) -> None:
    from traced.daemon.bus import Bus
    from traced.daemon.config import Config
    from traced.daemon.handler import Connection, Handler, Peer
    from traced.daemon.registry import Live, Registry
    from traced.redaction.redactor import Redactor
    from traced.wire import protocol

    redaction = not args.no_redaction
    cfg = Config(root=f"{tmp}/root", fsync="never", redaction=redaction)
    registry = Registry(cfg)
    handler = Handler(cfg, registry, Redactor([], enabled=redaction), Bus())
    conn = Connection(peer=Peer(os.getpid(), os.getuid(), os.getgid()), redactor=handler.redactor,
                      client_id="01JDBENCHHOTPATH000000000")
    sids = []
    for _ in range(args.sessions):
        out = bytearray()
        body = bytes(protocol.encode(protocol.Open(id=1, skill="bench", owner_pid=-1)))[4:]
        await handler.process(conn, [body], out, set())
        sids.append(protocol.decode_reply(bytes(out[4:])).session_id)  # type: ignore[union-attr]
        conn.opened.clear()  # past max_sessions_per_connection: this is one process, not a client
    n = args.events - args.events % 3
    frames = [bytes(protocol.encode(protocol.Emit(
        session_id=sids[i % len(sids)], phase="tool_call", payload=lib.payload(args.size, i), ts=time.time(),
        seq=i + 1, ack=args.ack)))[4:] for i in range(n)]
    per_read = args.per_read or 65536 // (len(frames[0]) + 4)
    third = n // 3
    gc.collect()
    traced_us = []
    for rep in range(3):
        t0 = time.thread_time()
        for j in range(rep * third, (rep + 1) * third, per_read):
            chunk = frames[j : min(j + per_read, (rep + 1) * third)]
            out = bytearray()
            touched: set[Live] = set()
            now = getattr(handler, "process_now", None)  # (older revisions: process alone, to compare)
            k = now(conn, chunk, out, touched) if now is not None else 0
            if k < len(chunk):
                await handler.process(conn, chunk[k:], out, touched)
        traced_us.append((time.thread_time() - t0) / third * 1e6)
    registry.shutdown()
    os.mkdir(f"{tmp}/mini")
    mini_us = _mini(frames, third, per_read, f"{tmp}/mini")
    t, m = min(traced_us), min(mini_us)
    print(f"{args.size} B events, redaction {'on' if redaction else 'off'}, {len(sids)} session(s), "
          f"{per_read} per read: traced {t:.2f} µs/event, minimal server's work {m:.2f} µs/event, "
          f"traced / minimal {t / m:.2f}x")


def _mini(frames: list[bytes], third: int, per_read: int, outdir: str) -> list[float]:
    """The minimal server's per-event work (bench/miniserver.py's data_received without the socket:
    a file per session, one write per session per read)."""
    dec = msgspec.msgpack.Decoder()
    js = msgspec.json.Encoder()
    fds: dict[str, int] = {}
    steps: dict[str, int] = {}
    out = []
    try:
        for rep in range(3):
            t0 = time.thread_time()
            for j in range(rep * third, (rep + 1) * third, per_read):
                lines: dict[str, bytearray] = {}
                for body in frames[j : min(j + per_read, (rep + 1) * third)]:
                    msg = dec.decode(body)
                    sid = msg["session_id"]
                    acc = lines.setdefault(sid, bytearray())
                    step = steps[sid] = steps.get(sid, 0) + 1
                    acc += js.encode({"ts": msg.get("ts") or time.time(), "session_id": sid, "step": step,
                                      "phase": msg.get("phase"), "payload": msg.get("payload")})
                    acc += b"\n"
                for sid, acc in lines.items():
                    fd = fds.get(sid)
                    if fd is None:
                        fd = fds[sid] = os.open(os.path.join(outdir, sid + ".jsonl"),
                                                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    os.write(fd, acc)
            out.append((time.thread_time() - t0) / third * 1e6)
    finally:
        for fd in fds.values():
            os.close(fd)
    return out


if __name__ == "__main__":
    main()
