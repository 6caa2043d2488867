"""Retention against a real daemon: ``traced prune`` asks it what it holds, its daily pass, ``status`` disk use.

Failure kinds from other tools' trackers: a cleanup that deleted sessions still in use
(anthropics/claude-code#76173: a session resumed after the window was gone), a silent sweep of
hundreds of sessions at start (anthropics/claude-code#85466: here every pass is logged, counted in
``status`` and can be a dry run), and a zero retention that wiped everything
(anthropics/claude-code#23710, #68713: refused with a clear message).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, wait_for
from tests.read.test_prune import DAY, age, session, size
from traced.cli.render import human_bytes


def status(d: Daemon) -> dict[str, Any]:
    res = d.cli("status", "--json", check=True)
    info: dict[str, Any] = json.loads(res.stdout)
    return info


def held_session(d: Daemon, sid: str) -> Path:
    """An old session in an old date directory that the daemon holds open: written 60 days ago,
    resumed now (it is open in the daemon), then its files aged back to 80 days."""
    now = time.time()
    sdir = session(d.root, sid, started=now - 90 * DAY, ended=now - 60 * DAY)
    out = json.loads(d.cli("start", "--skill", "s", "--session-id", sid, check=True).stdout)
    assert out["session_dir"] == str(sdir) and out["resumed"] is True
    age(sdir, now - 80 * DAY)
    return sdir


def test_prune_keeps_what_the_daemon_holds_and_lists_exactly_what_goes(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    now = time.time()
    held = held_session(d, "held-open")
    abandoned = session(d.root, "abandoned", started=now - 90 * DAY, written=now - 80 * DAY)
    done = session(d.root, "done", started=now - 60 * DAY, ended=now - 60 * DAY, blob=b"z" * 5000)
    recent = session(d.root, "recent", started=now - 90 * DAY, written=now - 3600)

    dry = d.cli("prune", "--older-than", "30d", "--dry-run", "--json", check=True)
    doc = json.loads(dry.stdout)
    assert [(r["path"], r["bytes"], r["reason"]) for r in doc["removed"]] == [
        (str(abandoned), size(abandoned), "abandoned"), (str(done), size(done), "ended")]
    assert doc["held"] == 1 and doc["dry_run"] is True and doc["abandoned_rule"] is True
    assert doc["bytes_freed"] == size(abandoned) + size(done)
    assert all(p.is_dir() for p in (held, abandoned, done, recent))  # a dry run removes nothing

    text = d.cli("prune", "--older-than", "30d", "--dry-run", check=True).stdout.splitlines()
    assert text[0].startswith(f"would remove {abandoned}  ") and f"({size(abandoned):,} bytes)  abandoned" in text[0]
    assert text[2] == "kept 1 old sessions the daemon holds"

    res = d.cli("prune", "--older-than", "30d", "--json", check=True)
    doc = json.loads(res.stdout)
    assert doc["sessions"] == 2 and doc["held"] == 1 and doc["errors"] == []
    assert not abandoned.exists() and not done.exists()
    assert held.is_dir() and recent.is_dir()
    # the held session is still the daemon's to write to and to end
    assert d.cli("event", "held-open", "--phase", "note", "--payload", '{"message": "still here"}').returncode == 0
    assert d.cli("end", "held-open", "--outcome", "success").returncode == 0

    # with the daemon down nothing is held: the old unfinished session goes too (recent stays)
    d2 = session(d.root, "left-open", started=now - 90 * DAY, written=now - 80 * DAY)
    d.stop()
    # ... unless the spool holds events a client wrote while the daemon was away: they may be that session's
    segment = d.state / "traced" / "spool" / "01JCLIENT0000000000000000-000000000001.spool"
    segment.parent.mkdir(parents=True, exist_ok=True)
    segment.write_bytes(b"")
    res = d.cli("prune", "--older-than", "30d", "--json", check=True)
    doc = json.loads(res.stdout)
    assert doc["removed"] == [] and doc["abandoned_rule"] is False and "1 spool segments wait" in doc["note"]
    assert d2.is_dir()
    text = d.cli("prune", "--older-than", "30d", check=True).stdout.splitlines()
    assert text[0].startswith("note: no daemon at ") and text[0].endswith(
        "so every unfinished session is kept")
    segment.unlink()
    res = d.cli("prune", "--older-than", "30d", "--json", check=True)
    doc = json.loads(res.stdout)
    assert [r["session_id"] for r in doc["removed"]] == ["left-open"] and doc["held"] == 0
    assert not d2.exists() and recent.is_dir()


def test_status_shows_disk_used_per_root(daemon_factory: Any, short_tmp: Path) -> None:
    d: Daemon = daemon_factory()
    now = time.time()
    a = session(d.root, "a", started=now - 9 * DAY, ended=now - 9 * DAY, blob=b"q" * 7777)
    b = session(d.root, "b", started=now - 8 * DAY, writer="devboy")
    lock = d.root / ".traced-daemon.lock"  # the only file of the daemon's own in a root
    assert d.proc is not None and lock.read_text() == f"{d.proc.pid}\n"
    other = short_tmp / "other"
    other.mkdir()
    out = json.loads(d.cli("start", "--skill", "x", "--target", str(other), check=True).stdout)
    d.cli("end", out["session_id"], "--outcome", "success", check=True)
    info = status(d)
    expected_main = size(a) + size(b) + lock.stat().st_size
    assert info["disk"] == sorted([
        {"root": str(other), "sessions": 1, "bytes": size(other), "error": None},
        {"root": str(d.root), "sessions": 2, "bytes": expected_main, "error": None},
    ], key=lambda r: str(r["root"]))
    assert size(other) > 0
    plain = d.cli("status", check=True).stdout
    disks = [x.split(None, 1)[1] for x in plain.splitlines() if x.startswith("disk ")]
    assert sorted(disks) == sorted([
        f"{d.root}: 2 sessions, {human_bytes(expected_main)} ({expected_main:,} bytes)",
        f"{other}: 1 sessions, {human_bytes(size(other))} ({size(other):,} bytes)"])
    assert any(x.split() == ["retention", "off"] for x in plain.splitlines())


def test_daily_pass_runs_at_start_dry_run_first(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(env={"TRACED_RETENTION": "30d", "TRACED_RETENTION_DRY_RUN": "true"}, start=False)
    now = time.time()
    old = session(d.root, "old-done", started=now - 60 * DAY, ended=now - 60 * DAY, writer="devboy")
    abandoned = session(d.root, "abandoned", started=now - 90 * DAY, written=now - 45 * DAY, writer="foreign")
    recent = session(d.root, "recent-done", started=now - 5 * DAY, ended=now - 5 * DAY)
    inflight = session(d.root, "in-flight", started=now - 90 * DAY, written=now - 60)
    gone = size(old) + size(abandoned)
    d.start()

    def last_run() -> dict[str, Any] | None:
        run: dict[str, Any] | None = status(d)["retention"]["last_run"]
        return run

    run = wait_for(last_run, what="the first retention pass")
    assert (run["dry_run"], run["would_remove"], run["would_free"], run["removed"], run["errors"]) == (
        True, 2, gone, 0, 0)
    assert all(p.is_dir() for p in (old, abandoned, recent, inflight))
    logged = {e["path"]: e["bytes"] for e in d.logs() if e.get("event") == "retention_would_remove"}
    assert logged == {str(old): size(old), str(abandoned): size(abandoned)}
    row = next(x for x in d.cli("status", check=True).stdout.splitlines() if x.startswith("retention "))
    assert row.split(None, 1)[1] == (f"30d (dry run), last pass {run['at']}: would remove 2 sessions, "
                                     f"would free {human_bytes(gone)}, 0 errors")

    d.stop()
    d.env["TRACED_RETENTION_DRY_RUN"] = "false"
    d.start()
    wait_for(lambda: not old.exists() and not abandoned.exists(), what="the pass to remove the old sessions")
    run = wait_for(last_run, what="the pass to be reported")
    assert (run["dry_run"], run["removed"], run["bytes_freed"], run["errors"]) == (False, 2, gone, 0)
    assert recent.is_dir() and inflight.is_dir()
    passes = [e for e in d.logs() if e.get("event") == "retention_pass" and not e["dry_run"]]
    assert [(e["removed"], e["bytes_freed"]) for e in passes] == [(2, gone)]


def test_the_pass_runs_after_recovery_and_spares_re_adopted_sessions(daemon_factory: Any) -> None:
    """A daemon killed with sessions open: the next one re-adopts them before its first pass, which
    must not take them for abandoned however old their files look."""
    d: Daemon = daemon_factory()
    held = held_session(d, "left-by-a-crash")
    d.kill9()
    age(held, time.time() - 80 * DAY)
    d.env["TRACED_RETENTION"] = "30d"
    d.start()
    run = wait_for(lambda: status(d)["retention"]["last_run"], what="the first pass")
    assert (run["removed"], run["held"], run["errors"]) == (0, 1, 0)
    assert held.is_dir()
    assert d.cli("end", "left-by-a-crash", "--outcome", "success").returncode == 0


def test_reload_turns_retention_on_and_the_pass_keeps_open_sessions(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    cfg = d.base / "config" / "traced" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('retention = "off"\n')
    d.start()
    now = time.time()
    held = held_session(d, "held-open")
    abandoned = session(d.root, "abandoned", started=now - 90 * DAY, written=now - 80 * DAY)
    assert status(d)["retention"]["last_run"] is None
    cfg.write_text('retention = "30d"\n')
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: not abandoned.exists(), what="the pass after the reload")
    run = wait_for(lambda: status(d)["retention"]["last_run"], what="the pass to be reported")
    assert (run["removed"], run["held"], run["errors"]) == (1, 1, 0)
    assert held.is_dir()
    assert d.cli("end", "held-open", "--outcome", "success").returncode == 0
    # a bad value on reload is refused and the old setting stays
    cfg.write_text('retention = "0d"\n')
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "reload_failed" and "under a day" in e.get("error", "")
                         for e in d.logs()), what="the refused reload")
    assert status(d)["retention"]["setting"] == "30d"


def test_bad_retention_values_are_refused_at_start(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    cases = [  # the other values: tests/read/test_prune.py and test_config_names_the_bad_retention
        ({"TRACED_RETENTION": "0d"}, None, 'retention \'0d\' is under a day'),
        ({}, "retention = 90\n", 'retention = 90 has no unit: write retention = "90d"'),
    ]
    cfg = d.base / "config" / "traced" / "config.toml"
    cfg.parent.mkdir(parents=True)
    for env, text, message in cases:
        cfg.write_text(text or "")
        res = d.cli("serve", env=env)
        assert res.returncode == 2, res.stderr
        assert message in res.stderr, res.stderr
        assert not d.socket.exists()


@pytest.mark.parametrize(("toml", "message"), [
    ('retention = "0d"', "retention '0d' is under a day: it would delete sessions hours after they end; "
                         'use at least "1d", or "off" to keep everything'),
    ('retention = "90 days"', 'bad retention \'90 days\': use "off" or an age such as "90d", "12w"'),
    ("retention = 30", 'retention = 30 has no unit: write retention = "30d" (days; also h and w), or "off"'),
    ("retention = true", "Expected `str`, got `bool` - at `$.retention`"),
    ('retention_dry_run = "maybe"', "Expected `bool`, got `str` - at `$.retention_dry_run`"),
])
def test_config_names_the_bad_retention(tmp_path: Path, toml: str, message: str) -> None:
    from traced.daemon import config
    from traced.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    assert str(exc.value) == f"bad configuration: {message}"


def test_config_retention_on_and_off(tmp_path: Path) -> None:
    from traced.daemon import config

    path = tmp_path / "config.toml"
    path.write_text('retention = "12w"\nretention_dry_run = true\n')
    cfg = config.load(path, env={})
    assert (cfg.retention_seconds(), cfg.retention_dry_run) == (84 * DAY, True)
    assert config.load(path, env={"TRACED_RETENTION": "off"}).retention_seconds() is None
    path.write_text("")
    assert (config.load(path, env={}).retention, config.load(path, env={}).retention_seconds()) == ("", None)


@pytest.mark.parametrize("name", ["max_payload_depth", "max_payload_keys", "max_string", "spill_threshold",
                                  "max_frame", "max_connections", "max_open_sessions",
                                  "max_sessions_per_connection", "subscriber_buffer", "fsync_interval",
                                  "wal_checkpoint_bytes"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_config_refuses_limits_under_one(tmp_path: Path, name: str, value: str) -> None:
    """A depth limit of 0 let the fast path keep a map the walked path cut to a marker; a limit
    under 1 only ever refuses or cuts everything."""
    from traced.daemon import config
    from traced.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(f"{name} = {value}\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    bound = {"fsync_interval": "> 0.0", "max_frame": ">= 4096"}.get(name, ">= 1")
    assert str(exc.value).endswith(f"{bound} - at `$.{name}`"), str(exc.value)


def test_config_refuses_a_frame_limit_under_4_kib(tmp_path: Path) -> None:
    """``max_frame = 10`` refused every request but the smallest (``status`` failed ``too_large``) and
    hooks lost their events: 4 KiB at least, at start and on reload."""
    from traced.daemon import config
    from traced.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text("max_frame = 4095\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    assert str(exc.value).endswith("Expected `int` >= 4096 - at `$.max_frame`"), str(exc.value)
    path.write_text("max_frame = 4096\n")
    assert config.load(path, env={}).max_frame == 4096


@pytest.mark.parametrize("value", ["1e30", "17179869185", "17179869184.5"])
def test_config_refuses_a_log_that_would_never_checkpoint(tmp_path: Path, value: str) -> None:
    """``wal_checkpoint_bytes`` past 16 GiB (or not an integer) is refused: the log would grow without end."""
    from traced.daemon import config
    from traced.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(f"wal_checkpoint_bytes = {value}\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    assert str(exc.value).endswith("- at `$.wal_checkpoint_bytes`"), str(exc.value)
    path.write_text("wal_checkpoint_bytes = 17179869184\n")
    assert config.load(path, env={}).wal_checkpoint_bytes == 16 * 1024**3
