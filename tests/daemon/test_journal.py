"""The journal on real files: whole lines, torn tails moved aside, atomic meta, fd LRU."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

from traced.daemon.journal import FdCache, Journal, repair_tail, scan
from traced.format.files import write_atomic


def test_repair_moves_torn_tail_aside(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(b'{"step":1,"ts":"t","skill":"s","session_id":"i","phase":"start"}\n{"step":2,"ts":"t","sk')
    moved = repair_tail(str(trace))
    assert moved == len(b'{"step":2,"ts":"t","sk')
    assert trace.read_bytes().endswith(b"\n") and trace.read_bytes().count(b"\n") == 1
    assert (tmp_path / "trace.torn").read_bytes() == b'{"step":2,"ts":"t","sk\n'
    assert repair_tail(str(trace)) == 0


def test_repair_of_a_single_torn_line_longer_than_a_chunk(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(b"x" * 200_000)
    assert repair_tail(str(trace)) == 200_000
    assert trace.read_bytes() == b""


def test_scan_recovers_last_step_turn_and_keys(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = [
        {"ts": "t", "skill": "s", "session_id": "i", "step": 1, "phase": "start", "payload": {}},
        {"ts": "t", "skill": "s", "session_id": "i", "step": 2, "turn": 1, "phase": "user_prompt",
         "payload": {}, "client_seq": "c:1"},
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in lines) + "not json\n" + '{"partial')
    st = scan(str(trace))
    assert (st.last_step, st.last_turn, st.malformed, st.keys) == (2, 1, 1, {"c:1": 2})
    assert st.torn_bytes == len('{"partial')


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    write_atomic(str(tmp_path), "meta.json", b'{"a":1}')
    write_atomic(str(tmp_path), "meta.json", b'{"a":2}', sync=False)
    assert (tmp_path / "meta.json").read_bytes() == b'{"a":2}'
    assert sorted(os.listdir(tmp_path)) == ["meta.json"]
    assert oct((tmp_path / "meta.json").stat().st_mode & 0o777) == "0o600"


def test_fd_cache_is_capped(tmp_path: Path) -> None:
    cache = FdCache(cap=4)
    journals = []
    for i in range(10):
        d = tmp_path / str(i)
        d.mkdir()
        j = Journal(str(d), cache)
        j.append(b"x\n", 1)
        journals.append(j)
    assert len(cache) == 4
    journals[0].append(b"y\n", 1)  # reopened transparently
    assert (tmp_path / "0" / "trace.jsonl").read_bytes() == b"x\ny\n"
    cache.close_all()


def test_efbig_keeps_whole_lines_only(tmp_path: Path) -> None:
    # a child process with RLIMIT_FSIZE: real EFBIG from the kernel, not a mock
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        from traced.daemon.journal import FdCache, Journal, JournalWriteError
        j = Journal({str(tmp_path)!r}, FdCache())
        line = b'{{"step":0,"pad":"' + b"p" * 77 + b'"}}\\n'
        ok = 0
        try:
            for i in range(5):
                ok += j.append(line, 1)
            batch = line * 10
            ok += j.append(batch, 10)
        except JournalWriteError as e:
            print(ok, e.lines, e.errno)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    ok, partial, err = map(int, res.stdout.split())
    assert ok == 5 and err == 27  # EFBIG
    data = (tmp_path / "trace.jsonl").read_bytes()
    assert data.endswith(b"\n") and len(data) <= 1000
    assert data.count(b"\n") == 5 + partial
    torn = (tmp_path / "trace.torn").read_bytes()
    assert torn and torn.endswith(b"\n")
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY
