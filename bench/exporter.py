"""The OTLP exporter's throughput: ``.venv/bin/python bench/exporter.py [--sessions N] [--runs R]`` prints spans/s out.

Writes N sessions of realistic records (start, prompt, 4 LLM calls, 8 tool call/result
pairs with 200 B to 2 KB arguments, a note, end: 13 spans each) straight into a temp root,
then runs the real forwarder (catch-up scan, reads by byte offset, span building,
protobuf, gzip, HTTP POST, cursors) against an OTLP/HTTP receiver in another process
that decodes every request and counts its spans. The time is from the forwarder's
start until every cursor reached its session's end; the receiver's span count must
equal the expected count (else the run FAILs). The best of R runs is reported, as
wall-clock spans/s and as spans per CPU second of the exporter's process (steadier on a
shared machine; the receiver's CPU is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

RECEIVER = r"""
import gzip, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
count = [0]
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with lock:
            count[0] += n
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        out = str(count[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""

LLM_CALLS = 4
TOOL_PAIRS = 8
SPANS_PER_SESSION = LLM_CALLS + TOOL_PAIRS + 1


def write_sessions(root: Path, n: int) -> None:
    """n sessions in traced's layout, every line with its step."""
    date = time.strftime("%Y-%m-%d", time.gmtime())
    for i in range(n):
        sid = f"bench-{i:06d}"
        sdir = root / date / "bench" / sid
        sdir.mkdir(parents=True)
        lines: list[dict[str, Any]] = []

        def rec(phase: str, payload: dict[str, Any], lines: list[dict[str, Any]] = lines, sid: str = sid) -> None:
            n = len(lines)
            ts = f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.{n:06d}Z"
            lines.append({"ts": ts, "skill": "bench", "session_id": sid, "step": n + 1, "turn": 1,
                          "phase": phase, "payload": payload})

        rec("start", {"input": {"task": f"task {i}"}, "cwd": "/work/x"})
        rec("user_prompt", {"text": "do the thing " * 10})
        for k in range(TOOL_PAIRS):
            if k % 2 == 0:
                rec("llm_call", {"model": "claude-sonnet-4-5", "provider": "anthropic", "latency_ms": 1200,
                                 "usage": {"input_tokens": 1830, "output_tokens": 300, "cache_read_tokens": 9000,
                                           "cache_write_tokens": 500}, "cost_usd": 0.01, "finish_reason": "stop"})
            args = {"cmd": "ls -la " + "x" * 180} if k % 2 else {"file_path": "/a/b.py", "new_string": "y" * 2000}
            rec("tool_call", {"tool": "Bash" if k % 2 else "Edit", "args": args, "call_id": f"c{k}", "kind": "tool"})
            rec("tool_result", {"tool": "Bash" if k % 2 else "Edit", "ok": k != 3, "call_id": f"c{k}",
                                "result_summary": "ok " * 20, "duration_ms": 12})
        rec("note", {"message": "done"})
        rec("end", {"outcome": "success", "summary": "finished"})
        (sdir / "trace.jsonl").write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))


async def run_once(root: Path, state: Path, url: str, n: int) -> tuple[float, float, int]:
    from traced.forward.cursor import CursorStore
    from traced.forward.engine import Forwarder
    from traced.forward.otlp import OtlpSink
    from traced.forward.urls import parse

    dest = parse(url, environ={})
    store = CursorStore(state, dest.display)
    store.load()
    store.first_run = store.last_active = 1.0  # everything on disk is new to this destination
    fw = Forwarder(dest, OtlpSink(dest), store, lambda: [str(root)])
    t0 = time.perf_counter()
    c0 = time.process_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(fw.run)
        while True:
            await anyio.sleep(0.01)
            if fw.state == "idle" and fw.sent and not fw.behind:
                break
            if time.perf_counter() - t0 > 300:
                raise SystemExit(f"FAIL: not caught up after 300 s (sent {fw.sent}, error {fw.last_error})")
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        tg.cancel_scope.cancel()
    if fw.last_error:
        raise SystemExit(f"FAIL: {fw.last_error}")
    return elapsed, cpu, fw.retries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one run; print the top 25 by cumulative time")
    args = ap.parse_args()
    recv = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        port = int(recv.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1/traces"
        best = best_cpu = float("inf")
        with tempfile.TemporaryDirectory(prefix="tb-exp.") as tmp:
            root = Path(tmp) / "root"
            write_sessions(root, args.sessions)
            expected = 0
            for run in range(args.runs):
                state = Path(tmp) / f"state{run}"
                if args.profile and run == 0:
                    import cProfile
                    import pstats

                    prof = cProfile.Profile()
                    prof.enable()
                    elapsed, cpu, retries = anyio.run(run_once, root, state, url, args.sessions)
                    prof.disable()
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                else:
                    elapsed, cpu, retries = anyio.run(run_once, root, state, url, args.sessions)
                expected += args.sessions * SPANS_PER_SESSION
                import urllib.request

                got = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/").read())
                if got != expected:
                    print(f"FAIL: the receiver counted {got} spans, expected {expected}", file=sys.stderr)
                    return 1
                spans = args.sessions * SPANS_PER_SESSION
                print(f"run {run + 1}: {spans} spans in {elapsed:.2f} s: {spans / elapsed:,.0f} spans/s, "
                      f"{spans / cpu:,.0f} spans per CPU second of the exporter ({retries} retries)", flush=True)
                best = min(best, elapsed)
                best_cpu = min(best_cpu, cpu)
        spans = args.sessions * SPANS_PER_SESSION
        print(f"exporter: {spans / best:,.0f} spans/s out, {spans / best_cpu:,.0f} spans per CPU second "
              f"(best of {args.runs}, {args.sessions} sessions x {SPANS_PER_SESSION} spans, pid {os.getpid()})")
        return 0
    finally:
        recv.terminate()
        recv.wait()


if __name__ == "__main__":
    sys.exit(main())
