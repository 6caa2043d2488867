"""Files planted in a root by another writer or a hostile local user: a FIFO or a device where
``meta.json`` or ``trace.jsonl`` should be never blocks the daemon (its loop, its start-up
recovery) or a reader; the session is refused or skipped with a clear error, and everything
else goes on (found by the newcomer/adversary pass of issue #15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures_traces as fx
from tests.conftest import Daemon, read_trace

REPO = Path(__file__).resolve().parents[2]
T0 = "2026-11-29T10:00:00.000000Z"


def foreign(root: Path, sid: str, fifo: str) -> Path:
    """A devboy-style session whose ``fifo`` (meta.json or trace.jsonl) is a named pipe."""
    sdir = root / "2026-11-29" / "foreign" / sid
    sdir.mkdir(parents=True)
    if fifo != "trace.jsonl":
        (sdir / "trace.jsonl").write_bytes(fx.encode(fx.rec(T0, "foreign", sid, "start", {}, step=1)))
    os.mkfifo(sdir / fifo)
    return sdir


@pytest.mark.parametrize("fifo", ["meta.json", "trace.jsonl"])
def test_a_fifo_in_a_session_never_blocks_the_daemon(daemon: Daemon, fifo: str) -> None:
    foreign(daemon.root, "f1", fifo)
    res = daemon.cli("start", "--skill", "foreign", "--session-id", "f1")  # resuming it touches the FIFO
    assert res.returncode != 0 or "spooled" not in res.stdout, res.stdout
    # the daemon answered (an error for that session) and still serves everyone else
    status = daemon.cli("status", "--json", check=True)
    assert json.loads(status.stdout)["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    with daemon.client() as c, c.session(skill="other") as s:
        s.note("still here")
    (other,) = daemon.root.glob("*/other/*/trace.jsonl")
    assert [r["phase"] for r in read_trace(other)] == ["start", "note", "end"]


def test_a_fifo_meta_of_an_open_session_does_not_stop_the_restart(daemon: Daemon) -> None:
    with daemon.client() as c:
        opened = c.open("victim")
        c.emit(opened.session_id, "note", {"message": "before the crash"})
        sdir = Path(opened.dir)
    daemon.kill9()
    (sdir / "meta.json").unlink()
    os.mkfifo(sdir / "meta.json")
    daemon.start()  # waits until the socket accepts: recovery did not block on the FIFO
    status = json.loads(daemon.cli("status", "--json", check=True).stdout)
    assert status["pid"] == daemon.proc.pid  # type: ignore[union-attr]


@pytest.mark.parametrize("fifo", ["meta.json", "trace.jsonl"])
def test_readers_never_block_on_a_fifo(tmp_path: Path, fifo: str) -> None:
    root = tmp_path / "root"
    fx.review_session(root)
    foreign(root, "f2", fifo)
    env = {**os.environ, "TZ": "UTC", "TRACED_SOCKET": str(tmp_path / "none.sock")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "traced", *argv, "--root", str(root)], env=env,
                              capture_output=True, text=True, timeout=60, cwd=REPO)

    for argv, shows in ((["ls"], fx.REVIEW_ID[:8]), (["ls", "--json"], fx.REVIEW_ID), (["tail"], "review"),
                        (["usage", "--since", "2026-11-01..2026-11-30"], "review"),
                        (["usage", "--since", "2026-11-01..2026-11-30", "--by", "tool"], "Bash")):
        res = run(*argv)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (argv, res.stderr)
        assert shows in res.stdout, (argv, res.stdout)  # the other sessions are all there
    for cmd in ("show", "replay"):
        res = run(cmd, "f2")
        assert res.returncode in (0, 1) and "Traceback" not in res.stderr, (cmd, res.stderr)
    prune = run("prune", "--older-than", "1d", "--dry-run")
    assert prune.returncode == 0 and "Traceback" not in prune.stderr, prune.stderr


def test_a_fifo_transcript_never_blocks_the_hook(daemon: Daemon, tmp_path: Path) -> None:
    fifo = tmp_path / "transcript.jsonl"
    os.mkfifo(fifo)
    event: dict[str, Any] = {"session_id": "11111111-2222-4333-8444-555555555555", "transcript_path": str(fifo),
                             "cwd": str(tmp_path), "hook_event_name": "Stop", "stop_hook_active": False}
    res = subprocess.run([sys.executable, "-m", "traced", "hook", "claude-code"], input=json.dumps(event),
                         env=daemon.env, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert res.returncode == 0 and res.stdout == ""
    (trace,) = daemon.root.glob("*/claude-code/*/trace.jsonl")
    assert [r["payload"].get("event") for r in read_trace(trace) if r["phase"] == "hook"] == ["Stop"]
