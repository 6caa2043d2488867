"""Finding a session by its id alone (``layout.sessions_by_id``): what a ``close`` naming no skill means
when two skills hold the same id on one date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traced.format import layout


def _session(root: Path, day: str, skill: str, sid: str, ended: bool | None) -> str:
    sdir = root / day / skill / sid
    sdir.mkdir(parents=True)
    (sdir / "trace.jsonl").write_text("{}\n")
    if ended is not None:
        meta = {"session_id": sid, "skill": skill, "ended_at": "2026-12-01T00:00:01Z" if ended else None}
        (sdir / "meta.json").write_text(json.dumps(meta))
    return str(sdir)


@pytest.mark.parametrize(
    ("a_ended", "b_ended", "want"),
    [
        (True, False, "b"),  # the one in flight, though a comes first by name
        (False, True, "a"),
        (False, False, "a"),  # both in flight (or both ended): the first by name
        (True, True, "a"),
        (True, None, "b"),  # no meta.json yet: in flight
    ],
)
def test_one_id_under_two_skills_on_one_date_finds_the_one_in_flight(tmp_path: Path, a_ended: bool,
                                                                     b_ended: bool | None, want: str) -> None:
    dirs = {"a": _session(tmp_path, "2026-12-01", "a", "shared-id", a_ended),
            "b": _session(tmp_path, "2026-12-01", "b", "shared-id", b_ended)}
    _session(tmp_path, "2026-11-30", "c", "shared-id", False)  # an older date never wins
    assert layout.sessions_by_id(str(tmp_path))["shared-id"] == dirs[want]
    assert layout.sessions_by_id(str(tmp_path), lo="2026-12-01")["shared-id"] == dirs[want]


def test_the_newest_date_wins_and_lo_bounds_the_walk(tmp_path: Path) -> None:
    old = _session(tmp_path, "2026-11-28", "a", "old-id", False)
    new = _session(tmp_path, "2026-12-01", "z", "new-id", True)
    _session(tmp_path, "2026-11-29", "a", "new-id", False)  # older: the newest date wins, ended or not
    future = _session(tmp_path, "2026-12-03", "b", "future-id", None)  # a client's clock ahead
    (tmp_path / "2026-12-01" / "a").mkdir()
    (tmp_path / "2026-12-01" / "a" / "linked-id").symlink_to(old)  # a symlinked dir is no session
    index = layout.sessions_by_id(str(tmp_path))
    assert (index["old-id"], index["new-id"], index["future-id"]) == (old, new, future)
    assert "linked-id" not in index
    assert layout.sessions_by_id(str(tmp_path), lo="2026-11-30") == {"new-id": new, "future-id": future}
