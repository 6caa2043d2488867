"""``traced tail -f`` following the files (daemon down), on lines other writers make (issue #15):
a relative ``--root`` prints only new lines, and an invalid UTF-8 byte, a BOM or a line nested
1,000 deep never stops the follow."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests import fixtures_traces as fx
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
SID = "01JE0TA1L000000000000000001"


class Follower:
    """``traced tail -f --json`` as a subprocess, its stdout lines in a queue."""

    def __init__(self, cwd: Path, root: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "traced", "tail", "-f", "--json", "--root", root],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
        return obj

    def close(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err.decode()


def test_file_follow_survives_odd_lines_and_a_relative_root(tmp_path: Path) -> None:
    root = tmp_path / "rel-root"
    t0 = "2026-11-21T10:00:00.000000Z"
    old = fx.numbered([fx.rec(t0, "s", SID, "start", {}), fx.rec(t0, "s", SID, "note", {"message": "old"})])
    sdir = fx.write_session(root, "2026-11-21", "s", SID, list(old), None)
    trace = sdir / "trace.jsonl"
    env = {**os.environ, "TRACED_SOCKET": str(tmp_path / "no-daemon.sock"), "TZ": "UTC"}
    follower = Follower(tmp_path, "rel-root", env)  # a path relative to cwd
    try:
        n = 0

        def append(raw: bytes) -> None:
            with open(trace, "ab") as f:
                f.write(raw)

        def probe() -> bool:
            nonlocal n
            n += 1
            append(fx.encode(fx.rec(t0, "s", SID, "note", {"message": f"probe {n}"})))
            try:
                follower.lines.get(timeout=0.5)
            except queue.Empty:
                return False
            return True

        wait_for(probe, timeout=30, what="the follower to print a new line")
        while not follower.lines.empty():  # probes written while it started
            follower.lines.get_nowait()
        append(fx.encode(fx.rec(t0, "s", SID, "note", {"message": "next"})))
        assert follower.next()["payload"] == {"message": "next"}  # not the whole session again
        append(b'{"ts":"2026-11-21T10:00:01Z","skill":"s","session_id":"' + SID.encode()
               + b'","phase":"tool_result","payload":{"tool":"Read","ok":false,"error":"caf\xe9"}}\n')
        assert follower.next()["payload"]["error"] == "caf\ufffd"
        append(b"[" * 1000 + b"]" * 1000 + b"\n")
        append(b"\xef\xbb\xbf" + fx.encode(fx.rec(t0, "s", SID, "note", {"message": "after bom"})))
        assert follower.next()["payload"] == {"message": "after bom"}
        assert follower.proc.poll() is None
    finally:
        err = follower.close()
    assert "Traceback" not in err and "following the files" in err
