"""Global options go where users put them; reading commands find every session the daemon wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Daemon


def test_socket_and_root_after_the_subcommand(daemon_factory: Any, short_tmp: Path) -> None:
    d: Daemon = daemon_factory(start=False)
    env = {k: v for k, v in d.env.items() if k != "TRACED_SOCKET"}
    other_root = short_tmp / "elsewhere"
    proc = subprocess.Popen([sys.executable, "-m", "traced", "serve", "--socket", str(d.socket), "--root",
                             str(other_root), "--log-format", "json"], env=env, stderr=open(d.log, "ab"))  # noqa: SIM115
    d.proc = proc
    try:
        d.wait_ready()
        for argv in (["status", "--json", "--socket", str(d.socket)], ["--socket", str(d.socket), "status", "--json"]):
            res = subprocess.run([sys.executable, "-m", "traced", *argv], env=env, capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode == 0, res.stderr
            assert json.loads(res.stdout)["root"] == str(other_root)
        start = subprocess.run([sys.executable, "-m", "traced", "start", "--skill", "opt", "--socket", str(d.socket)],
                               env=env, capture_output=True, text=True, timeout=60)
        sid = json.loads(start.stdout)["session_id"]
        for argv in (["ls", "--json", "--root", str(other_root)], ["--root", str(other_root), "ls", "--json"]):
            res = subprocess.run([sys.executable, "-m", "traced", *argv], env=env, capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode == 0, res.stderr
            assert [json.loads(line)["session_id"] for line in res.stdout.splitlines()] == [sid]
    finally:
        proc.terminate()
        proc.wait(30)


def test_reading_commands_find_sessions_in_every_root_the_daemon_wrote(daemon: Daemon, short_tmp: Path) -> None:
    repo = short_tmp / "proj"
    (repo / ".git").mkdir(parents=True)
    res = subprocess.run([sys.executable, "-m", "traced", "start", "--skill", "inrepo", "--target", "repo"],
                         env=daemon.env, cwd=repo, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["session_dir"].startswith(str(repo / ".devboy" / "sessions"))
    shown = daemon.cli("show", info["session_id"][:12], "--json", check=True)  # no --root: roots.json says where
    assert [json.loads(line)["phase"] for line in shown.stdout.splitlines()] == ["start"]
    listed = daemon.cli("ls", "--json", check=True)
    assert info["session_id"] in [json.loads(line)["session_id"] for line in listed.stdout.splitlines()]
