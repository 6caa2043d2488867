"""``traced serve --mirror nats://…``: real daemons and a real ``nats-server -js``.

Two origins (two machines of a fleet) forward to JetStream; the mirror reads the stream
through a durable consumer and writes every record into its own root. The broker and the
mirror are both restarted along the way: the mirror must still hold every record of the
origins exactly once (its files equal theirs byte for byte), and its ``traced usage`` must
be the sum of theirs.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.conftest import Daemon, wait_for
from tests.forward.test_nats import NATS_SERVER, NatsServer

pytestmark = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server not on PATH (Debian: apt-get install nats-server)")
pytest.importorskip("nats", reason="nats-py not installed (pip install 'traced[nats]')")


def _sessions(root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in root.glob("*/*/*/trace.jsonl")}


def _same_records(origins: Daemon | list[Daemon], mirror: Daemon) -> bool:
    theirs = {sid: d for o in (origins if isinstance(origins, list) else [origins])
              for sid, d in _sessions(o.root).items()}
    ours = _sessions(mirror.root)
    if set(theirs) != set(ours):
        return False
    return all((ours[sid] / "trace.jsonl").read_bytes() == (theirs[sid] / "trace.jsonl").read_bytes()
               for sid in theirs)


def _work(d: Daemon, skill: str, n: int) -> None:
    with d.client() as c, c.session(skill=skill, input={"n": n}) as s:
        for i in range(n):
            s.llm_call("claude-x", provider="anthropic", input_tokens=100 + i, output_tokens=10,
                       cache_read_tokens=1000, cache_write_tokens=5, cost_usd=0.01)
            s.tool_call("Bash", {"cmd": f"echo {i}"}, call_id=f"c{i}")
            s.tool_result("Bash", ok=i % 3 != 0, call_id=f"c{i}", result_summary="ok")
        s.end("success", summary=f"{skill} done")


def test_mirror_holds_every_record_once_across_broker_and_mirror_restarts(short_tmp: Path) -> None:
    broker = NatsServer(short_tmp)
    broker.start()
    for sub in ("o", "p", "m"):
        (short_tmp / sub).mkdir()
    origin = Daemon(short_tmp / "o", ["--forward", broker.url])
    other = Daemon(short_tmp / "p", ["--forward", broker.url])  # a second machine of the fleet
    mirror = Daemon(short_tmp / "m", ["--mirror", f"{broker.url}?durable=fleet"])
    try:
        origin.start()
        other.start()
        mirror.start()
        _work(origin, "alpha", 5)
        _work(other, "delta", 2)
        wait_for(lambda: _same_records([origin, other], mirror), what="the mirror to hold alpha and delta")

        broker.stop()  # the broker goes away while the origin keeps recording
        _work(origin, "beta", 4)
        broker.start()
        wait_for(lambda: _same_records([origin, other], mirror),
                 what="the mirror to catch up after the broker restart")

        assert mirror.stop(signal.SIGTERM) == 0  # the mirror goes away; the stream keeps its place
        _work(origin, "gamma", 3)
        mirror.start()
        wait_for(lambda: _same_records([origin, other], mirror), what="the mirror to catch up after its own restart")

        status = json.loads(mirror.cli("status", "--json", check=True).stdout)["mirror"]
        assert status["durable"] == "fleet" and status["rejected"] == 0 and status["last_error"] is None
        text = mirror.cli("status", check=True).stdout
        assert f"mirror {broker.url}" in text and "written" in text

        roots = {sid: o.root for o in (origin, other) for sid in _sessions(o.root)}
        theirs = {sid: d for o in (origin, other) for sid, d in _sessions(o.root).items()}
        ours = _sessions(mirror.root)
        for sid, sdir in ours.items():
            assert sdir.relative_to(mirror.root) == theirs[sid].relative_to(roots[sid])  # same layout
            meta = json.loads((sdir / "meta.json").read_text())
            their_meta = json.loads((theirs[sid] / "meta.json").read_text())
            for key in ("session_id", "skill", "started_at", "ended_at", "outcome", "summary", "tool_calls",
                        "errors", "steps", "usage"):
                assert meta.get(key) == their_meta.get(key), (sid, key)
            assert meta["host"] == socket.gethostname()
        first, second, fleet = (json.loads(d.cli("usage", "--json", check=True).stdout)
                                for d in (origin, other, mirror))
        assert fleet["rows"] == sorted(first["rows"] + second["rows"], key=lambda r: r["key"])
        for key in ("sessions", "success", "llm_calls", "input_tokens", "output_tokens", "cache_read_tokens",
                    "cache_write_tokens"):
            assert fleet["total"][key] == first["total"][key] + second["total"][key], key
        assert fleet["total"]["cost_usd"] == pytest.approx(first["total"]["cost_usd"] + second["total"]["cost_usd"])
        assert (fleet["total"]["llm_calls"], fleet["total"]["sessions"]) == (14, 4)
    finally:
        for d in (origin, other, mirror):
            if d.alive():
                d.stop(signal.SIGKILL)
        broker.stop()

