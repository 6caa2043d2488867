"""Durable acks: one daemon-wide sync round covers every session its waiters touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from traced.daemon.config import Config
from traced.daemon.registry import Live, Registry
from traced.daemon.session import Pending

TS = 1_700_000_000.0


@pytest.fixture
def private_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for var in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "TRACED_ROOT", "TRACED_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def registry(private_env: Path) -> Iterator[Registry]:
    reg = Registry(Config(root=str(private_env / "root"), fsync="batch"))
    try:
        yield reg
    finally:
        reg.shutdown()


def _open(reg: Registry, k: int) -> Live:
    live, _resumed, _fallback = reg.open(skill="gc", session_id=f"01JDSESSION{k:015d}", cwd="/w",
                                         peer_uid=os.getuid(), ts=TS)
    return live


@pytest.mark.anyio
async def test_waiters_on_different_sessions_share_one_sync_round(registry: Registry) -> None:
    heard: list[tuple[str, list[int | None]]] = []
    registry.on_durable.append(lambda live, recs: heard.append((live.state.session_id, [r.step for r in recs])))
    lives = [_open(registry, k) for k in range(8)]
    await registry.durable(lives)  # the start records
    assert (registry.commit.rounds, registry.fsyncs) == (1, 8), "one round, one fdatasync per trace"
    heard.clear()
    for live in lives:
        registry.append(live, [Pending("note", {"message": "x"}, TS)])
    assert heard == [] and all(live.journal.dirty for live in lives)
    async with anyio.create_task_group() as tg:  # 8 connections, each waiting for its own session
        for live in lives:
            tg.start_soon(registry.durable, [live])
    # the first waiter leads a round of its own; the 7 that came while it ran share the next one
    assert (registry.commit.rounds, registry.fsyncs) == (3, 16)
    assert not any(live.journal.dirty for live in lives)
    assert sorted(heard) == sorted((live.state.session_id, [2]) for live in lives)
    await registry.durable(lives)  # nothing new: no round at all
    assert (registry.commit.rounds, registry.fsyncs) == (3, 16)


@pytest.mark.anyio
async def test_a_failed_fdatasync_fails_its_waiter_and_no_other(registry: Registry) -> None:
    good, bad = _open(registry, 1), _open(registry, 2)
    await registry.durable([good, bad])
    registry.append(good, [Pending("note", {"message": "g"}, TS)])
    registry.append(bad, [Pending("note", {"message": "b"}, TS)])
    os.unlink(bad.journal.path)  # its fdatasync cannot open the trace: ENOENT
    errors: list[OSError] = []

    async def wait(live: Live) -> None:
        try:
            await registry.durable([live])
        except OSError as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, good)
        tg.start_soon(wait, bad)
    assert [e.filename for e in errors] == [bad.journal.path]
    assert not good.journal.dirty and bad.journal.dirty
    await registry.sync_dirty()  # the batch tick logs it and goes on
    assert bad.journal.dirty
