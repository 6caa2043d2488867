"""A session handle is usable as returned, and is its own context manager, as files and sockets are."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import anyio
import pytest

from tests.conftest import Daemon, read_trace
from traced import AsyncClient


def test_session_without_with_is_usable_and_ends_only_when_asked(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session(skill="handle", owner_pid=-1)
        entered = s.__enter__()  # by hand, then the manager is dropped: nothing may end the session
        del entered
        gc.collect()
        assert s.session_id == s.id and len(s.session_id) == 26
        assert s.note("still open") == 2
        meta = s.end("success", summary="done by hand")
    assert (meta["outcome"], meta["summary"], meta["steps"]) == ("success", "done by hand", 3)
    assert [r["phase"] for r in read_trace(Path(s.trace_path))] == ["start", "note", "end"]


def test_the_handle_as_a_context_manager_ends_failure_on_an_exception(daemon: Daemon) -> None:
    with daemon.client() as c:
        s = c.session(skill="handle", owner_pid=-1)
        with pytest.raises(KeyError), s:
            raise KeyError("gone")
    meta = json.loads((Path(s.dir) / "meta.json").read_text())
    assert (meta["outcome"], meta["summary"]) == ("failure", "KeyError: 'gone'")


def test_async_session_awaited_or_used_with_async_with(daemon: Daemon) -> None:
    async def go() -> tuple[str, str]:
        async with AsyncClient(daemon.socket, spool=False) as c:
            s = await c.session("ahandle", owner_pid=-1)
            assert await s.note("awaited") == 2
            await s.end()
            async with c.session("ahandle", owner_pid=-1) as s2:
                assert await s2.note("in a block") == 2
            return s.session_id, s2.session_id

    first, second = anyio.run(go)
    for sid in (first, second):
        (path,) = daemon.root.glob(f"*/ahandle/{sid}/meta.json")
        assert json.loads(path.read_text())["outcome"] == "success"
