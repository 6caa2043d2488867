"""A minimal Python ingest server speaking traced's wire protocol: the reference for "Python can do this much".

asyncio.Protocol on uvloop (as shared/peerbench's ``pyproto``): frames from each read are
decoded with msgspec, each event becomes a JSONL line with a per-session step counter, all
lines of one read are written with one ``os.write`` per session file (O_APPEND), then acks
(or ``synced``) go out in one ``transport.write``. No validation, no redaction, no
idempotency, no meta.json: what is left is the floor cost of a Python daemon on this machine.

usage: python miniserver.py SOCKET OUTDIR
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

import msgspec

_dec = msgspec.msgpack.Decoder()
_enc = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class Sessions:
    def __init__(self, outdir: str) -> None:
        self.outdir = outdir
        self.fds: dict[str, int] = {}
        self.steps: dict[str, int] = {}

    def fd(self, sid: str) -> int:
        fd = self.fds.get(sid)
        if fd is None:
            if "/" in sid or sid in ("", ".", ".."):
                raise ValueError("bad session id")
            fd = self.fds[sid] = os.open(os.path.join(self.outdir, sid + ".jsonl"), FLAGS, 0o600)
        return fd


def _frame(msg: dict[str, Any]) -> bytes:
    body = _enc.encode(msg)
    return len(body).to_bytes(4, "big") + body


class Conn(asyncio.Protocol):
    def __init__(self, sessions: Sessions) -> None:
        self.s = sessions
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end = 0, len(buf)
        lines: dict[str, bytearray] = {}
        out = bytearray()
        s = self.s
        while end - pos >= 4:
            size = int.from_bytes(buf[pos:pos + 4], "big")
            if end - pos - 4 < size:
                break
            msg = _dec.decode(buf[pos + 4:pos + 4 + size])
            pos += 4 + size
            op = msg.get("op")
            if op in ("emit", "emit_batch"):
                sid = msg["session_id"]
                evs = msg["events"] if op == "emit_batch" else (msg,)
                acc = lines.setdefault(sid, bytearray())
                step = s.steps.get(sid, 0)
                for ev in evs:
                    step += 1
                    acc += _json.encode({"ts": ev.get("ts") or time.time(), "session_id": sid, "step": step,
                                         "phase": ev.get("phase"), "payload": ev.get("payload")})
                    acc += b"\n"
                s.steps[sid] = step
                if msg.get("ack", True):
                    out += _frame({"op": "ack", "id": msg.get("id", 0), "step": step})
            elif op == "sync":
                self._flush(lines)
                out += _frame({"op": "synced", "id": msg.get("id", 0)})
            elif op == "hello":
                out += _frame({"op": "welcome", "id": msg.get("id", 0)})
            else:
                out += _frame({"op": "error", "id": msg.get("id", 0), "code": "bad_frame", "message": str(op)})
        if pos:
            del buf[:pos]
        self._flush(lines)
        if out and self.transport is not None:
            self.transport.write(bytes(out))

    def _flush(self, lines: dict[str, bytearray]) -> None:
        for sid, acc in lines.items():
            if acc:
                fd = self.s.fd(sid)
                with memoryview(acc) as view:
                    done = 0
                    while done < len(view):
                        done += os.write(fd, view[done:])
                acc.clear()


async def main(path: str, outdir: str) -> None:
    loop = asyncio.get_running_loop()
    sessions = Sessions(outdir)
    server = await loop.create_unix_server(lambda: Conn(sessions), path, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    else:
        uvloop.run(main(sys.argv[1], sys.argv[2]))
