"""Retention's rule and its safe removal (``read.prune``), on real files; no daemon.

Failure kinds from other tools' trackers, each a test here:
- anthropics/claude-code#62250: deletion keyed on file mtime removed sessions that a maintenance
  pass had given old mtimes -> an ended session goes by its own ``ended_at``, never by mtime;
- anthropics/claude-code#2543, #76173: "older than" must mean last activity, not creation -> a
  session started long ago but written to now (or resumed) stays;
- anthropics/claude-code#23710, #68713: ``cleanupPeriodDays = 0`` wiped every transcript ->
  ``retention`` under a day is refused, and an unfinished session needs a day without writes;
- logrotate/logrotate#218, #10 and itzg/docker-mc-backup#174: symlinks made a cleanup act twice
  or on the wrong files -> symlinks are never followed, a root reached twice is read once;
- logrotate/logrotate#144: a file already gone is not an error -> a session removed by someone
  else in between counts as vanished;
- logrotate/logrotate#514: the age boundary moved by a day -> exact boundaries, to the second.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from traced.read import prune
from traced.read.prune import Facts, judge

NOW = time.time()
DAY = 86400.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def age(path: Path, epoch: float) -> None:
    """Give ``path`` and everything below it the mtime ``epoch`` (symlinks themselves, not targets)."""
    for dirpath, dirs, files in os.walk(path, topdown=False):
        for name in (*files, *dirs):
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(path, (epoch, epoch), follow_symlinks=False)


def session(
    root: Path, sid: str, *, started: float, ended: float | None = None, writer: str = "traced",
    written: float | None = None, skill: str = "s", blob: bytes = b"",
) -> Path:
    """A session directory as ``writer`` (traced, devboy, or a trace-only "foreign") leaves it."""
    sdir = root / iso(started)[:10] / skill / sid
    sdir.mkdir(parents=True)
    lines = [{"ts": iso(started), "skill": skill, "session_id": sid, "phase": "start", "payload": {}}]
    if ended is not None:
        lines.append({"ts": iso(ended), "skill": skill, "session_id": sid, "phase": "end",
                      "payload": {"outcome": "success"}})
    (sdir / "trace.jsonl").write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    meta: dict[str, Any] | None
    if writer == "traced":
        meta = {"session_id": sid, "skill": skill, "devboy_version": "traced 0.1.0", "started_at": iso(started),
                "ended_at": iso(ended) if ended is not None else None, "tool_calls": 0, "errors": 0, "steps": 1}
    elif writer == "devboy":  # devboy's own SessionMeta: none of traced's fields, ended_at only once ended
        meta = {"session_id": sid, "skill": skill, "devboy_version": "0.9.1", "started_at": iso(started),
                "tool_calls": 0, "errors": 0}
        if ended is not None:
            meta.update(ended_at=iso(ended), outcome="success")
    else:
        meta = None
    if meta is not None:
        (sdir / "meta.json").write_text(json.dumps(meta))
    if blob:
        (sdir / "blobs").mkdir()
        (sdir / "blobs" / ("a" * 64)).write_bytes(blob)
    age(sdir, written if written is not None else (ended or started))
    return sdir


def size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def chosen(root: Path | list[Path], days: float = 30, **kw: Any) -> dict[str, str]:
    roots = root if isinstance(root, list) else [root]
    return {c.session_id: c.reason for c in prune.plan(roots, days * DAY, now=NOW, **kw).candidates}


# --------------------------------------------------------------------------- the rule, pure


@pytest.mark.parametrize(("facts", "held", "want"), [
    (Facts(True, NOW - 30 * DAY - 1, None, NOW), False, "ended"),  # ended a second before the cutoff
    (Facts(True, NOW - 30 * DAY + 1, None, NOW - 99 * DAY), False, None),  # a second after; old mtime
    (Facts(True, None, NOW - 31 * DAY, NOW), False, "ended"),  # no ended_at: started_at
    (Facts(True, None, None, NOW - 31 * DAY), False, "ended"),  # neither: the last write
    (Facts(False, None, NOW - 99 * DAY, NOW - 30 * DAY - 1), False, "abandoned"),
    (Facts(False, None, NOW - 99 * DAY, NOW - 30 * DAY + 1), False, None),  # written since the cutoff
    (Facts(False, None, NOW - 99 * DAY, NOW - 99 * DAY), True, None),  # held by the daemon
    (Facts(True, NOW - 99 * DAY, None, NOW - 99 * DAY), True, None),
    (Facts(True, NOW + 99 * DAY, NOW - 99 * DAY, NOW - 99 * DAY), False, None),  # a clock ahead: kept
    (Facts(False, None, NOW - 99 * DAY, NOW + 99 * DAY), False, None),
])
def test_judge(facts: Facts, held: bool, want: str | None) -> None:
    assert judge(facts, cutoff=NOW - 30 * DAY, now=NOW, held=held) == want


def test_an_unfinished_session_needs_a_day_without_writes_even_at_age_zero() -> None:
    hour_ago = Facts(False, None, NOW - 2 * DAY, NOW - 3600)
    assert judge(hour_ago, cutoff=NOW, now=NOW, held=False) is None
    assert judge(Facts(False, None, None, NOW - DAY - 1), cutoff=NOW, now=NOW, held=False) == "abandoned"
    assert judge(Facts(True, NOW - 3600, None, NOW - 3600), cutoff=NOW, now=NOW, held=False) == "ended"


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * DAY), ("2w", 14 * DAY), ("12h", 43200.0),
                                               (" 7 d ", 7 * DAY), ("0d", 0.0)])
def test_parse_age(text: str, seconds: float) -> None:
    assert prune.parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30 days", "-1d", "1.5d", "30m", "d", "1e3d"])
def test_parse_age_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="use a number of hours, days or weeks"):
        prune.parse_age(text)


@pytest.mark.parametrize(("text", "want"), [("", None), ("off", None), ("OFF", None), ("90d", 90 * DAY),
                                            ("1d", DAY), ("24h", DAY), ("12w", 84 * DAY)])
def test_parse_retention(text: str, want: float | None) -> None:
    assert prune.parse_retention(text) == want


@pytest.mark.parametrize(("value", "message"), [
    ("0d", "under a day"), ("0", "bad retention '0'"), ("23h", "under a day"), ("forever", "bad retention"),
    ("-5d", "bad retention"), (90, "must be a string"),
])
def test_parse_retention_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prune.parse_retention(value)


# --------------------------------------------------------------------------- which sessions


def test_ended_by_ended_at_and_abandoned_by_last_write(tmp_path: Path) -> None:
    session(tmp_path, "old-done", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    session(tmp_path, "recent-done", started=NOW - 5 * DAY, ended=NOW - 5 * DAY)
    session(tmp_path, "abandoned", started=NOW - 90 * DAY, written=NOW - 89 * DAY)
    # started long ago, still written to today (a long agent run): in flight
    session(tmp_path, "in-flight", started=NOW - 90 * DAY, written=NOW - 60)
    # ended recently after a resume, in its old date directory: last activity counts, not creation
    session(tmp_path, "resumed", started=NOW - 90 * DAY, ended=NOW - 2 * DAY)
    # ended recently, but its files got old mtimes (restored with cp -p / rsync -a): ended_at decides
    session(tmp_path, "restored", started=NOW - 5 * DAY, ended=NOW - 5 * DAY, written=NOW - 200 * DAY)
    # ended long ago, files touched today (copied without -p): still ended long ago
    session(tmp_path, "touched", started=NOW - 60 * DAY, ended=NOW - 60 * DAY, written=NOW)
    assert chosen(tmp_path) == {"old-done": "ended", "abandoned": "abandoned", "touched": "ended"}


def test_a_blob_written_recently_keeps_an_unfinished_session(tmp_path: Path) -> None:
    sdir = session(tmp_path, "spilling", started=NOW - 90 * DAY, written=NOW - 90 * DAY, blob=b"x" * 10)
    os.utime(sdir / "blobs" / ("a" * 64), (NOW - 3600, NOW - 3600))
    assert chosen(tmp_path) == {}
    assert prune.last_write(str(sdir)) == pytest.approx(NOW - 3600)


def test_other_writers_sessions(tmp_path: Path) -> None:
    session(tmp_path, "devboy-done", started=NOW - 60 * DAY, ended=NOW - 60 * DAY, writer="devboy")
    session(tmp_path, "devboy-recent", started=NOW - 3 * DAY, ended=NOW - 3 * DAY, writer="devboy")
    session(tmp_path, "devboy-crashed", started=NOW - 60 * DAY, writer="devboy")  # no ended_at, ever
    session(tmp_path, "trace-only-done", started=NOW - 60 * DAY, ended=NOW - 60 * DAY, writer="foreign")
    session(tmp_path, "trace-only-running", started=NOW - 60 * DAY, writer="foreign", written=NOW - 60)
    session(tmp_path, "trace-only-old", started=NOW - 60 * DAY, writer="foreign")
    assert chosen(tmp_path) == {"devboy-done": "ended", "devboy-crashed": "abandoned",
                                "trace-only-done": "ended", "trace-only-old": "abandoned"}


def test_trace_only_session_ended_by_its_last_record_despite_a_torn_tail(tmp_path: Path) -> None:
    sdir = session(tmp_path, "torn", started=NOW - 60 * DAY, ended=NOW - 59 * DAY, writer="foreign",
                   written=NOW - 60)  # written to a minute ago: only its end record can make it go
    with open(sdir / "trace.jsonl", "ab") as f:
        f.write(b'{"ts": "2026-')  # a torn last line after the end
    os.utime(sdir / "trace.jsonl", (NOW - 60, NOW - 60))
    assert chosen(tmp_path) == {"torn": "ended"}


def test_unreadable_metas_never_hang_nor_crash(tmp_path: Path) -> None:
    fifo = session(tmp_path, "fifo-meta", started=NOW - 60 * DAY, ended=NOW - 60 * DAY, writer="foreign")
    os.mkfifo(fifo / "meta.json")  # reading it would block forever
    dir_meta = session(tmp_path, "dir-meta", started=NOW - 60 * DAY, writer="foreign", written=NOW - 60)
    (dir_meta / "meta.json").mkdir()
    broken = session(tmp_path, "broken-meta", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    (broken / "meta.json").write_bytes(b"[" * 100_000)  # nested past any recursion limit
    deep = session(tmp_path, "not-utf8", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    (deep / "meta.json").write_bytes(b'{"ended_at": "caf\xe9", "started_at": null}')
    for sdir in (fifo, dir_meta, broken, deep):
        age(sdir, NOW - 60 * DAY if sdir is not dir_meta else NOW - 60)
    done: dict[str, str] = {}
    worker = threading.Thread(target=lambda: done.update(chosen(tmp_path)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "plan blocked on a FIFO"
    # the FIFO and the broken meta count as no meta: their trace's end record decides;
    # an ended_at that is not a time falls back to the last write
    assert done == {"fifo-meta": "ended", "broken-meta": "ended", "not-utf8": "ended"}


def test_symlinks_are_never_followed_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    victim = session(outside, "victim", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    precious = outside / "precious.txt"
    precious.write_text("keep me")
    day = iso(NOW - 60 * DAY)[:10]
    (root / day / "s").mkdir(parents=True)
    os.symlink(victim, root / day / "s" / "linked-session")  # a session dir that is a symlink
    os.symlink(outside / day, root / iso(NOW - 61 * DAY)[:10])  # a date dir that is a symlink
    (root / day / "linked-skill").symlink_to(victim.parent, target_is_directory=True)
    old = session(root, "old", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    os.symlink(precious, old / "artifacts-link")  # inside a session that goes
    (old / "artifacts").mkdir()
    os.symlink(outside, old / "artifacts" / "dir-link")
    age(old, NOW - 60 * DAY)
    # the same root twice, once through a symlink: read once
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    plan = prune.plan([root, alias], 30 * DAY, now=NOW)
    assert [c.session_id for c in plan.candidates] == ["old"]
    done = prune.remove(plan.candidates, 30 * DAY, now=NOW)
    assert done.errors == [] and [c.session_id for c in done.removed] == ["old"]
    assert not old.exists()
    assert precious.read_text() == "keep me" and victim.is_dir() and (victim / "trace.jsonl").is_file()
    assert (root / day / "s" / "linked-session").is_symlink()  # left alone too
    assert prune.disk_usage(root).sessions == 0  # symlinked sessions are not counted as ours


def test_remove_keeps_a_session_written_to_after_the_plan(tmp_path: Path) -> None:
    sdir = session(tmp_path, "back", started=NOW - 90 * DAY, written=NOW - 80 * DAY)
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
    assert [c.reason for c in plan.candidates] == ["abandoned"]
    with open(sdir / "trace.jsonl", "ab") as f:  # the writer comes back
        f.write(b'{"phase": "note", "payload": {}}\n')
    done = prune.remove(plan.candidates, 30 * DAY, now=NOW)
    assert [c.session_id for c in done.kept] == ["back"] and done.removed == [] and done.errors == []
    assert (sdir / "trace.jsonl").is_file()
    assert [p.name for p in sdir.parent.iterdir()] == ["back"]  # renamed back, nothing left aside


def test_remove_keeps_a_session_opened_after_the_plan(tmp_path: Path) -> None:
    session(tmp_path, "reopened", started=NOW - 90 * DAY, written=NOW - 80 * DAY)
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
    done = prune.remove(plan.candidates, 30 * DAY, now=NOW, held=lambda sid, _p: sid == "reopened")
    assert [c.session_id for c in done.kept] == ["reopened"]


def test_the_held_check_and_the_rename_run_together_through_claim(tmp_path: Path) -> None:
    """The daemon runs "held? else rename aside" on its loop (``claim``), so no open slips in between."""
    for sid in ("a", "b"):
        session(tmp_path, sid, started=NOW - 90 * DAY, written=NOW - 80 * DAY)
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
    opened = {"b"}  # opened by a client after the plan
    seen: list[list[str]] = []

    def claim(step: Any) -> bool:
        seen.append(sorted(p.name for p in (tmp_path / iso(NOW - 90 * DAY)[:10] / "s").iterdir()))
        return bool(step())

    done = prune.remove(plan.candidates, 30 * DAY, now=NOW, held=lambda sid, _p: sid in opened, claim=claim)
    assert seen == [["a", "b"], ["b"]]  # nothing renamed before its claim ran
    assert [c.session_id for c in done.removed] == ["a"] and [c.session_id for c in done.kept] == ["b"]
    assert (tmp_path / iso(NOW - 90 * DAY)[:10] / "s" / "b" / "trace.jsonl").is_file()


def test_a_session_removed_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    import shutil

    a = session(tmp_path, "a", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    b = session(tmp_path, "b", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
    shutil.rmtree(a)  # another prune got there first
    done = prune.remove(plan.candidates, 30 * DAY, now=NOW)
    assert done.vanished == 1 and done.errors == [] and [c.session_id for c in done.removed] == ["b"]
    assert not b.exists() and not b.parent.exists()  # emptied skill and date dirs go too
    assert done.dirs_removed == [str(b.parent), str(b.parent.parent)]


def test_held_sessions_are_counted_and_kept(tmp_path: Path) -> None:
    session(tmp_path, "held", started=NOW - 90 * DAY, written=NOW - 80 * DAY)
    session(tmp_path, "free", started=NOW - 90 * DAY, written=NOW - 80 * DAY)
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW, held=lambda sid, _p: sid == "held")
    assert [c.session_id for c in plan.candidates] == ["free"] and plan.held == 1
    assert chosen(tmp_path, abandoned=False) == {}


def test_sizes_are_exact(tmp_path: Path) -> None:
    sdir = session(tmp_path, "big", started=NOW - 60 * DAY, ended=NOW - 60 * DAY, blob=b"y" * 12345)
    expected = size(sdir)
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
    assert [c.bytes for c in plan.candidates] == [expected]
    assert prune.disk_usage(tmp_path).to_json() == {"root": str(tmp_path), "sessions": 1, "bytes": expected,
                                                     "error": None}
    done = prune.remove(plan.candidates, 30 * DAY, now=NOW)
    assert done.bytes_freed == expected
    assert prune.disk_usage(tmp_path).to_json() == {"root": str(tmp_path), "sessions": 0, "bytes": 0,
                                                     "error": None}


def test_disk_usage_of_a_missing_root(tmp_path: Path) -> None:
    assert prune.disk_usage(tmp_path / "nope").to_json() == {
        "root": str(tmp_path / "nope"), "sessions": 0, "bytes": 0, "error": "No such file or directory"}


def test_an_interrupted_removal_is_finished_later(tmp_path: Path) -> None:
    """A crash between the rename aside and the end of the delete leaves a hidden directory that no
    reader shows but that still uses disk: the next prune removes it, once nobody can be at work on it."""
    stale = session(tmp_path, "x", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    stale = stale.rename(stale.parent / ".prune-x.4242")
    age(stale, NOW - 7200)
    fresh = session(tmp_path, "y", started=NOW - 60 * DAY, ended=NOW - 60 * DAY)
    fresh = fresh.rename(fresh.parent / ".prune-y.4243")
    age(fresh, NOW - 60)  # a prune at work right now
    plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
    assert [(c.session_id, c.reason, c.bytes) for c in plan.candidates] == [(".prune-x.4242", "leftover", size(stale))]
    assert prune.disk_usage(tmp_path).to_json()["bytes"] == size(stale) + size(fresh)  # counted, not listed
    done = prune.remove(plan.candidates, 30 * DAY, now=NOW)
    assert [c.session_id for c in done.removed] == [".prune-x.4242"] and done.errors == []
    assert not stale.exists() and fresh.is_dir()


def test_two_prunes_at_once_remove_each_session_once(tmp_path: Path) -> None:
    """Two ``traced prune`` (or a prune and the daemon's pass) racing over one root."""
    for i in range(60):
        session(tmp_path, f"s{i:03d}", started=NOW - 60 * DAY, ended=NOW - 60 * DAY, skill=f"k{i % 3}")
    results: list[prune.Removal] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        plan = prune.plan([tmp_path], 30 * DAY, now=NOW)
        barrier.wait()
        results.append(prune.remove(plan.candidates, 30 * DAY, now=NOW))

    workers = [threading.Thread(target=one) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [r.errors for r in results] == [[], []]
    assert sum(len(r.removed) for r in results) == 60
    assert sum(len(r.removed) + r.vanished for r in results) == 120
    assert list(tmp_path.iterdir()) == []


def test_a_directory_with_files_no_session_has_is_never_deleted(tmp_path: Path) -> None:
    """A directory that became a root (``--target DIR``) may hold <date>/<a>/<b>/ directories of its
    own that look like sessions (an old meta.json beside a database): prune keeps them."""
    lookalike = session(tmp_path, "lookalike", started=NOW - 90 * DAY, ended=NOW - 90 * DAY)
    (lookalike / "important.db").write_bytes(b"user data")
    age(lookalike, NOW - 90 * DAY)
    real = session(tmp_path, "real", started=NOW - 90 * DAY, ended=NOW - 90 * DAY)
    (real / ".meta.json.123.4.tmp").write_bytes(b"{}")  # traced's own temp file is a session's
    (real / "blobs").mkdir()
    age(real, NOW - 90 * DAY)
    result = prune.plan([tmp_path], 30 * DAY, now=NOW)
    assert [c.session_id for c in result.candidates] == ["real"]
    assert result.foreign == [str(lookalike)]
    prune.remove(result.candidates, 30 * DAY, now=NOW)
    assert (lookalike / "important.db").read_bytes() == b"user data" and not real.exists()
