"""Generate realistic session trees in a temporary root for the reader and CLI tests.

Nothing here is checked in as files: each function writes sessions the way their
writers do (traced's daemon, devboy, a crashed writer, a foreign tool), with fixed
timestamps so that outputs are deterministic (run the tests with TZ=UTC).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

WRITER = "traced 0.1.0"

REVIEW_ID = "01JD3QA8XK6T2M9V4B7C5N1P0R"
"""traced, success, 2026-11-21: every phase, paired tools, priced and unpriced llm calls."""
REVIEW2_ID = "01JD3QA8XMZZ4H7K2D9F6G3B1C"
"""traced, failure, 2026-11-20: shares the prefix ``01JD3QA8X`` with REVIEW_ID."""
LOCAL_ID = "01JD2B5W7Y0A1S2D3F4G5H6J7K"
"""traced, success, 2026-11-20, skill summarize: a local model (ollama)."""
DEVBOY_ID = "01JCZZ0DEV0B0Y000000000001"
"""devboy-written, success, 2026-11-19: no step, devboy's meta.json."""
TORN_ID = "01JCZZ1T0RN000000000000002"
"""traced, aborted, 2026-11-19: three malformed lines and a torn last line."""
ODD_ID = "foreign-session-7"
"""no meta.json, ``timestamp`` instead of ``ts``, an unknown phase; 2026-11-20."""
RUNNING_ID = "01JD3R0RUNN1NG000000000003"
"""traced, in flight (no ended_at), 2026-11-21."""


def rec(
    ts: str,
    skill: str,
    session_id: str,
    phase: str,
    payload: Any,
    *,
    step: int | None = None,
    turn: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One trace line as a dict, keys in DESIGN §2 order."""
    line: dict[str, Any] = {"ts": ts, "skill": skill, "session_id": session_id}
    if step is not None:
        line["step"] = step
    if turn is not None:
        line["turn"] = turn
    line["phase"] = phase
    line["payload"] = payload
    line.update(extra)
    return line


def at(base: str, seconds: float) -> str:
    """``base`` (ISO, Z) plus ``seconds``, formatted like traced: microseconds and Z."""
    moment = datetime.fromisoformat(base.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(obj: Any) -> bytes:
    """One compact JSON line with its newline."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def write_session(  # noqa: PLR0917 - mirrors the layout's path components
    root: Path,
    date: str,
    skill: str,
    session_id: str,
    lines: list[dict[str, Any] | bytes],
    meta: dict[str, Any] | None,
) -> Path:
    """Write ``<root>/<date>/<skill>/<id>/trace.jsonl`` (+ meta.json unless None).

    ``bytes`` items are written verbatim (malformed or torn lines).
    """
    sdir = root / date / skill / session_id
    sdir.mkdir(parents=True, exist_ok=True)
    body = b"".join(x if isinstance(x, bytes) else encode(x) for x in lines)
    (sdir / "trace.jsonl").write_bytes(body)
    if meta is not None:
        (sdir / "meta.json").write_text(json.dumps(meta, indent=2))
    return sdir


def traced_meta(
    lines: list[dict[str, Any]],
    *,
    ended: bool = True,
    cwd: str | None = None,
    malformed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """meta.json as traced's daemon writes it at the end (or as the start skeleton)."""
    first, last = lines[0], lines[-1]
    meta: dict[str, Any] = {
        "session_id": first["session_id"],
        "skill": first["skill"],
        "devboy_version": WRITER,
        "started_at": first["ts"],
        "tool_calls": 0,
        "errors": 0,
        "steps": 0,
        "turns": 0,
        "phases": {},
        "usage": {
            "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
            "cache_write_tokens": 0, "cost_usd": None, "llm_calls": 0, "unknown_cost_calls": 0,
        },
        "host": "devbox",
        "redactions": 0,
        "malformed_lines": malformed,
    }
    if cwd:
        meta["cwd"] = cwd
    if ended:
        meta["ended_at"] = last["ts"]
        meta["outcome"] = last["payload"]["outcome"]
        for key in ("summary", "reason"):
            if key in last["payload"]:
                meta[key] = last["payload"][key]
        usage = meta["usage"]
        for line in lines:
            phase, payload = line["phase"], line["payload"]
            meta["steps"] = line.get("step", meta["steps"])
            meta["turns"] = max(meta["turns"], line.get("turn", 0))
            meta["phases"][phase] = meta["phases"].get(phase, 0) + 1
            if phase == "tool_call":
                meta["tool_calls"] += 1
            elif phase == "tool_result" and payload.get("ok") is False:
                meta["errors"] += 1
            elif phase == "llm_call":
                for key, value in payload.get("usage", {}).items():
                    usage[key] += value
                usage["llm_calls"] += 1
                if "cost_usd" in payload:
                    usage["cost_usd"] = round((usage["cost_usd"] or 0) + payload["cost_usd"], 10)
                else:
                    usage["unknown_cost_calls"] += 1
    meta.update(extra)
    return meta


def numbered(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give lines gap-free steps from 1, like the daemon; ``step`` goes right after session_id."""
    out = []
    for i, line in enumerate(lines, 1):
        new = {k: line[k] for k in ("ts", "skill", "session_id")}
        new["step"] = i
        new.update({k: v for k, v in line.items() if k not in new})
        out.append(new)
    return out


BLOB_TEXT = "".join(f"line {i}: def handler(request): return respond(request)\n" for i in range(80))


def review_session(root: Path) -> Path:
    """The rich traced session (REVIEW_ID)."""
    t0, sk, sid = "2026-11-21T22:48:17.000000Z", "review", REVIEW_ID
    blob_hex = hashlib.sha256(BLOB_TEXT.encode()).hexdigest()
    diff = "diff --git a/src/app.py b/src/app.py\n" + "".join(
        f"+    handle_case_{i}(request, response, context)\n" for i in range(6)
    )
    lines = numbered([
        rec(t0, sk, sid, "start", {"input": "review PR #42", "cwd": "/home/dev/proj"}),
        rec(at(t0, 0.105), sk, sid, "user_prompt", {"prompt_id": "p1",
            "prompt": "Please review PR 42"}, turn=1),
        rec(at(t0, 0.300), sk, sid, "tool_call", {"tool": "Bash",
            "args": {"cmd": "git diff main"}, "call_id": "c1"}, turn=1),
        rec(at(t0, 0.310), sk, sid, "tool_call", {"tool": "Read",
            "args": {"path": "src/app.py"}, "call_id": "c2"}, turn=1),
        rec(at(t0, 0.322), sk, sid, "tool_result", {"tool": "Read", "ok": True,
            "duration_ms": 12, "result_summary": {"$blob": f"sha256:{blob_hex}",
                                                  "size": len(BLOB_TEXT)},
            "call_id": "c2"}, turn=1),
        rec(at(t0, 0.630), sk, sid, "tool_result", {"tool": "Bash", "ok": True,
            "duration_ms": 330, "result_summary": diff, "call_id": "c1"}, turn=1),
        rec(at(t0, 4.900), sk, sid, "llm_call", {"provider": "anthropic",
            "model": "claude-sonnet-4-5", "usage": {"input_tokens": 1200, "output_tokens": 340,
            "cache_read_tokens": 3000, "cache_write_tokens": 500}, "cost_usd": 0.0123,
            "latency_ms": 4200, "finish_reason": "tool_use"}, turn=1),
        rec(at(t0, 5.000), sk, sid, "tool_call", {"tool": "Bash",
            "args": {"cmd": "pytest -q"}}, turn=1),
        rec(at(t0, 7.100), sk, sid, "tool_result", {"tool": "Bash", "ok": False,
            "duration_ms": 2100, "error": "1 failed, 11 passed"}, turn=1),
        rec(at(t0, 7.200), sk, sid, "hook", {"event": "PostToolUse", "name": "lint",
            "ok": True, "duration_ms": 45}, turn=1),
        rec(at(t0, 8.000), sk, sid, "user_prompt", {"prompt_id": "p2",
            "prompt": "Summarize the review"}, turn=2),
        rec(at(t0, 9.600), sk, sid, "llm_call", {"provider": "openai", "model": "gpt-4o",
            "usage": {"input_tokens": 800, "output_tokens": 200}, "latency_ms": 1500}, turn=2),
        rec(at(t0, 10.000), sk, sid, "verify", {"check": "tests", "ok": True,
            "output": "12 passed"}, turn=2),
        rec(at(t0, 10.100), sk, sid, "artifact", {"path": "review.md", "kind": "report",
            "size_bytes": 2048}, turn=2),
        rec(at(t0, 10.200), sk, sid, "note", {"message": "LGTM with two nits"}, turn=2),
        rec(at(t0, 10.300), sk, sid, "decision", {"choice": "approve",
            "why": "tests pass"}, turn=2),
        rec(at(t0, 10.500), sk, sid, "end", {"outcome": "success",
            "summary": "approved with 2 nits"}, turn=2),
    ])
    sdir = write_session(root, "2026-11-21", sk, sid, list(lines),
                         traced_meta(lines, cwd="/home/dev/proj",
                                     input_summary="review PR #42"))
    (sdir / "blobs").mkdir()
    (sdir / "blobs" / blob_hex).write_text(BLOB_TEXT)
    return sdir


def review2_session(root: Path) -> Path:
    """A failed traced session on an unknown model (REVIEW2_ID)."""
    t0, sk, sid = "2026-11-20T09:00:00.000000Z", "review", REVIEW2_ID
    lines = numbered([
        rec(t0, sk, sid, "start", {"input": "review PR #41"}),
        rec(at(t0, 1.0), sk, sid, "llm_call", {"provider": "acme",
            "model": "acme-private-9000", "usage": {"input_tokens": 500,
            "output_tokens": 50}, "latency_ms": 500}),
        rec(at(t0, 2.0), sk, sid, "tool_call", {"tool": "Bash", "args": {"cmd": "make"},
                                               "call_id": "m1"}),
        rec(at(t0, 3.5), sk, sid, "tool_result", {"tool": "Bash", "ok": False,
            "error": "make: *** [all] Error 2", "call_id": "m1"}),
        rec(at(t0, 4.0), sk, sid, "end", {"outcome": "failure", "summary": "build broken"}),
    ])
    return write_session(root, "2026-11-20", sk, sid, list(lines), traced_meta(lines))


def local_session(root: Path) -> Path:
    """A traced session on a local model: one call without cost, one at $0 (LOCAL_ID)."""
    t0, sk, sid = "2026-11-20T14:30:00.000000Z", "summarize", LOCAL_ID
    lines = numbered([
        rec(t0, sk, sid, "start", {}),
        rec(at(t0, 2.0), sk, sid, "llm_call", {"provider": "ollama", "model": "llama3.1:8b",
            "usage": {"input_tokens": 2000, "output_tokens": 400}, "latency_ms": 2000}),
        rec(at(t0, 4.0), sk, sid, "llm_call", {"provider": "ollama", "model": "llama3.1:8b",
            "usage": {"input_tokens": 1000, "output_tokens": 100}, "cost_usd": 0,
            "latency_ms": 500}),
        rec(at(t0, 5.0), sk, sid, "end", {"outcome": "success"}),
    ])
    return write_session(root, "2026-11-20", sk, sid, list(lines), traced_meta(lines))


def devboy_session(root: Path) -> Path:
    """As devboy writes it: no step, RFC 3339 with nanoseconds, its own meta.json (DEVBOY_ID)."""
    sk, sid = "deploy", DEVBOY_ID
    t0 = "2026-11-19T08:00:00.123456789+00:00"
    lines = [
        rec(t0, sk, sid, "start", {"input": {"env": "staging"}}),
        rec("2026-11-19T08:00:01.000000000+00:00", sk, sid, "tool_call",
            {"tool": "kubectl", "args": {"cmd": "apply -f deploy.yaml"}}),
        rec("2026-11-19T08:00:03.500000000+00:00", sk, sid, "tool_result",
            {"tool": "kubectl", "ok": True, "result_summary": "deployment configured"}),
        rec("2026-11-19T08:00:04.000000000+00:00", sk, sid, "end",
            {"outcome": "success", "summary": "deployed to staging"}),
    ]
    meta = {
        "session_id": sid, "skill": sk, "devboy_version": "0.9.1",
        "started_at": t0, "ended_at": "2026-11-19T08:00:04.000000000+00:00",
        "outcome": "success", "summary": "deployed to staging", "tool_calls": 1, "errors": 0,
    }
    return write_session(root, "2026-11-19", sk, sid, list(lines), meta)


def torn_session(root: Path) -> Path:
    """Malformed lines (bad JSON, non-object, no phase) and a torn last line (TORN_ID)."""
    t0, sk, sid = "2026-11-19T21:00:00.000000Z", "review", TORN_ID
    good = numbered([
        rec(t0, sk, sid, "start", {}),
        rec(at(t0, 1.0), sk, sid, "note", {"message": "before the crash"}),
        rec(at(t0, 2.0), sk, sid, "tool_call", {"tool": "Bash", "args": {"cmd": "sleep 99"},
                                               "call_id": "z1"}),
    ])
    lines: list[dict[str, Any] | bytes] = [
        good[0],
        b'{"ts":"2026-11-19T21:00:00.5Z","skill":"review","session_id":"x","step":\n',
        good[1],
        b"[1, 2, 3]\n",
        b'{"ts":"2026-11-19T21:00:01.5Z","skill":"review","payload":{}}\n',
        good[2],
        b'{"ts":"2026-11-19T21:00:03.000000Z","skill":"review","session_id":"01JCZZ1T0RN',
    ]
    meta = traced_meta(good, ended=False)
    meta.update(ended_at="2026-11-19T21:30:00.000000Z", outcome="aborted",
                reason="recovered_after_restart", steps=3, malformed_lines=3)
    return write_session(root, "2026-11-19", sk, sid, lines, meta)


def odd_session(root: Path) -> Path:
    """A foreign writer: no meta.json, ``timestamp`` keys, unknown phase and fields (ODD_ID)."""
    sk, sid = "misc", ODD_ID
    lines: list[dict[str, Any] | bytes] = [
        {"timestamp": "2026-11-20T12:00:00Z", "skill": sk, "session_id": sid, "phase": "start",
         "payload": {"cwd": "/srv/job"}},
        {"timestamp": "2026-11-20T12:00:02Z", "skill": sk, "session_id": sid,
         "phase": "telemetry", "host": "ci-7", "payload": {"cpu": 0.93, "rss_mb": 512},
         "extra_field": [1, 2]},
        {"timestamp": "2026-11-20T12:00:03Z", "skill": sk, "session_id": sid, "phase": "end",
         "payload": {"outcome": "success"}, "signature": "abc"},
    ]
    return write_session(root, "2026-11-20", sk, sid, lines, None)


def running_session(root: Path) -> Path:
    """In flight: meta.json skeleton without ended_at; three records so far (RUNNING_ID)."""
    t0, sk, sid = "2026-11-21T23:10:00.000000Z", "review", RUNNING_ID
    lines = numbered([
        rec(t0, sk, sid, "start", {"input": "review PR #43"}),
        rec(at(t0, 1.0), sk, sid, "tool_call", {"tool": "Bash", "args": {"cmd": "ls"},
                                               "call_id": "r1"}),
        rec(at(t0, 2.0), sk, sid, "llm_call", {"provider": "anthropic",
            "model": "claude-sonnet-4-5", "usage": {"input_tokens": 100, "output_tokens": 10},
            "cost_usd": 0.0005}),
    ])
    return write_session(root, "2026-11-21", sk, sid, list(lines),
                         traced_meta(lines, ended=False, owner_pid=4242))


@dataclass
class Tree:
    """A generated root and the ids in it."""

    root: Path


def build_tree(root: Path) -> Tree:
    """Every fixture session above, in one root."""
    for make in (review_session, review2_session, local_session, devboy_session, torn_session,
                 odd_session, running_session):
        make(root)
    return Tree(root)


def aged_session(
    root: Path, session_id: str, days_ago: float, *, running: bool = False, skill: str = "old"
) -> Path:
    """A small traced session that started ``days_ago`` days before now (for prune)."""
    start = time.time() - days_ago * 86400
    t0 = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = numbered([
        rec(t0, skill, session_id, "start", {}),
        rec(at(t0, 1.0), skill, session_id, "note", {"message": "x" * 100}),
        rec(at(t0, 2.0), skill, session_id, "end", {"outcome": "success"}),
    ])
    if running:
        lines = lines[:2]
    meta = traced_meta(lines, ended=not running)
    return write_session(root, t0[:10], skill, session_id, list(lines), meta)


def many_sessions(root: Path, count: int, date: str = "2026-11-18") -> None:
    """``count`` small finished traced sessions on one date (for scan-cost tests)."""
    for i in range(count):
        sid = f"01JC{i:022d}"
        t0 = f"{date}T10:00:00.000000Z"
        lines = numbered([
            rec(t0, "bulk", sid, "start", {}),
            rec(at(t0, 1.0), "bulk", sid, "end", {"outcome": "success"}),
        ])
        write_session(root, date, "bulk", sid, list(lines), traced_meta(lines))
