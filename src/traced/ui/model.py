"""What the web pages show, computed from the readers' objects (sans-IO: no server, no event loop).

``session_view`` turns a loaded ``Session`` into the waterfall's JSON: one lane per
turn, one row per tool call (paired with its result by ``format.pairing``, the rule
``show`` uses), per LLM call, per hook, with notes/decisions/verifies/artifacts as
markers on their turn's lane. Times are seconds relative to the first record; the
cost of each LLM call comes from ``read.usage.Pricer`` (the code of ``traced usage``).

Subagents: a record whose payload carries ``agent_id`` ran inside a subagent. Its
rows are nested under the ``Task``/``Agent`` call that was open (started, not yet
answered) when that agent's first record arrived; without such a call they stay at
the top level.

``usage_view`` is ``traced usage --json`` for the whole window, plus the same report
for each day of it (the stacked chart) and the sessions that cost the most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from traced.format.layout import resolve_blobs
from traced.format.pairing import Pairer, tool_key
from traced.format.records import summarize
from traced.read.sessions import Session, SessionInfo
from traced.read.trace import Entry
from traced.read.usage import (
    LlmCall,
    Pricer,
    UsageRow,
    aggregate,
    aggregate_tools,
    collect,
    cost_text,
    session_cost_usd,
    within,
)
from traced.read.window import Window

MARKER_PHASES: Final = frozenset({"note", "decision", "verify", "artifact"})
SPAWNING_TOOLS: Final = frozenset({"Task", "Agent"})
"""Tool names that start a subagent (Claude Code's)."""
KINDS: Final = frozenset({"tool", "skill", "mcp", "hook"})
LABEL_WIDTH: Final = 120
"""Characters of a row's one-line summary (the full payload is fetched on click)."""


def _num(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _short(value: Any) -> str:
    return summarize(value, LABEL_WIDTH) or ""


def cost_of(calls: Sequence[LlmCall], pricer: Pricer) -> dict[str, Any]:
    """``{cost_usd, cost, unknown_cost_calls, llm_calls, input_tokens, output_tokens}`` of some calls.

    ``cost_usd`` sums the known costs (None when none is known); ``cost`` is the text
    ``traced usage`` prints (``unknown``, ``$0.0123 + unknown``, ``$0 (local)``, ``-``).
    """
    row = UsageRow("calls")
    row.add_calls((c, pricer.price(c)) for c in calls)
    return {
        "cost_usd": row.cost_usd,
        "cost": row.cost_display,
        "unknown_cost_calls": row.unknown_cost_calls,
        "llm_calls": row.llm_calls,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
    }


def session_row(info: SessionInfo, pricer: Pricer) -> dict[str, Any]:
    """One line of the sessions page: ``ls --json``'s fields plus the ``cost`` that ``traced ls`` shows
    (``read.usage.session_cost``) and ``cost_usd``, the known part of it (USD, None: none known)."""
    out = info.to_json()
    out["cost_usd"], out["cost"] = session_cost_usd(info, pricer)  # sorted and drawn by the priced cost
    return out


@dataclass(slots=True)
class _Row:
    data: dict[str, Any]
    children: list[_Row] = field(default_factory=list)


@dataclass(slots=True)
class _Lane:
    turn: int
    t: float
    label: str
    markers: list[dict[str, Any]] = field(default_factory=list)
    rows: list[_Row] = field(default_factory=list)


class _Builder:
    """Folds entries into lanes and rows, in file order."""

    def __init__(self, base: float | None, pricer: Pricer) -> None:
        self.base = base
        self.pricer = pricer
        self.last = 0.0
        self.lanes: dict[int, _Lane] = {}
        self.turn = 0
        self.pairer: Pairer[_Row] = Pairer()
        self.agents: dict[str, _Row] = {}
        """agent_id -> the spawning call's row."""
        self.open_spawns: list[_Row] = []
        self.calls: list[LlmCall] = []
        self.early: dict[str, tuple[Entry, _Lane, str, dict[str, Any]]] = {}
        """call_id -> a result still waiting for its call."""

    def rel(self, e: Entry) -> float:
        """Seconds since the first record (records without a time take the previous one's)."""
        if e.epoch is not None and self.base is not None:
            self.last = max(e.epoch - self.base, 0.0)
        return self.last

    def lane(self, e: Entry, t: float) -> _Lane:
        """The record's turn lane; a record without a turn joins the latest turn."""
        if e.turn is not None:
            self.turn = e.turn
        turn = self.turn
        lane = self.lanes.get(turn)
        if lane is None:
            label = "before the first prompt" if turn == 0 else f"turn {turn}"
            lane = self.lanes[turn] = _Lane(turn, t, label)
        return lane

    def place(self, e: Entry, lane: _Lane, row: _Row) -> None:
        agent = _text(e.get("agent_id"))
        if agent:
            parent = self.agents.get(agent)
            if parent is None and self.open_spawns:
                parent = self.agents[agent] = self.open_spawns[-1]
            if parent is not None:
                row.data["depth"] = parent.data["depth"] + 1
                row.data["agent"] = _text(e.get("agent_type")) or agent
                parent.children.append(row)
                return
        lane.rows.append(row)

    def add(self, e: Entry) -> None:
        t = self.rel(e)
        lane = self.lane(e, t)
        phase = e.phase
        if phase == "user_prompt":
            prompt = _short(e.get("prompt"))
            if prompt:
                lane.label = f"turn {lane.turn}: {prompt}"
            lane.markers.append({"pos": e.pos, "step": e.step, "phase": phase, "t": t, "label": prompt, "ok": None})
        elif phase in MARKER_PHASES:
            lane.markers.append(self.marker(e, t))
        elif phase == "tool_call":
            self.tool_call(e, lane, t)
        elif phase == "tool_result":
            self.tool_result(e, lane, t)
        elif phase == "llm_call":
            self.llm_call(e, lane, t)
        elif phase == "hook":
            dur = _num(e.get("duration_ms"))
            d = dur / 1000 if dur is not None else 0.0
            ok = e.get("ok")
            name = _text(e.get("event")) + (f" {_text(e.get('name'))}" if e.get("name") else "")
            row = _Row({"k": "hook", "kind": "hook", "pos": e.pos, "step": e.step, "t": max(t - d, 0.0),
                        "d": d, "name": name or "hook", "ok": ok if isinstance(ok, bool) else None,
                        "ms": dur, "depth": 0})
            self.place(e, lane, row)
        elif phase in ("start", "end"):
            lane.markers.append(self.marker(e, t))

    def marker(self, e: Entry, t: float) -> dict[str, Any]:
        p = e.payload if isinstance(e.payload, dict) else {}
        label = {
            "note": p.get("message"), "verify": p.get("check"), "artifact": p.get("path"),
            "decision": p.get("choice") or p.get("decision") or p,
            "start": p.get("input"), "end": p.get("outcome"),
        }.get(e.phase, p)
        ok = p.get("ok")
        return {"pos": e.pos, "step": e.step, "phase": e.phase, "t": t, "label": _short(label),
                "ok": ok if isinstance(ok, bool) else None}

    def tool_call(self, e: Entry, lane: _Lane, t: float) -> None:
        tool, call_id = tool_key(e.payload)
        kind = _text(e.get("kind"))
        row = _Row({"k": "tool", "kind": kind if kind in KINDS else "tool", "pos": e.pos, "step": e.step,
                    "rpos": None, "t": t, "d": None, "name": tool or "?", "server": _text(e.get("server")),
                    "ok": None, "ms": None, "label": _short(e.get("args")), "depth": 0})
        early = self.pairer.call(tool, call_id, row)
        self.place(e, lane, row)
        if early is not None:  # the result came first (async hooks): complete now
            self.early.pop(call_id, None)
            self.complete(row, early.data)
        elif tool in SPAWNING_TOOLS and not e.get("agent_id"):
            self.open_spawns.append(row)

    def tool_result(self, e: Entry, lane: _Lane, t: float) -> None:
        tool, call_id = tool_key(e.payload)
        ok = e.get("ok")
        result: dict[str, Any] = {"pos": e.pos, "t": t, "ok": ok if isinstance(ok, bool) else None,
                  "ms": _num(e.get("duration_ms")), "error": _short(e.get("error"))}
        call = self.pairer.result(tool, call_id, _Row(result))
        if call is not None:
            self.complete(call, result)
        elif call_id:  # its call may still come (async hooks); if not, it shows on its own at the end
            self.early[call_id] = (e, lane, tool, result)
        else:
            self.orphan(e, lane, tool, result)

    def orphan(self, e: Entry, lane: _Lane, tool: str, result: dict[str, Any]) -> None:
        """A result whose call never came: its own bar, ending at its time."""
        ms = result["ms"]
        d = ms / 1000 if ms is not None else 0.0
        row = _Row({"k": "tool", "kind": "tool", "pos": e.pos, "step": e.step, "rpos": e.pos,
                    "t": max(result["t"] - d, 0.0), "d": d, "name": tool or "?", "server": "",
                    "ok": result["ok"], "ms": ms, "label": "(result without its call)", "depth": 0})
        self.place(e, lane, row)

    def complete(self, row: _Row, result: dict[str, Any]) -> None:
        data = row.data
        data["rpos"] = result["pos"]
        data["ok"] = result["ok"]
        data["d"] = max(result["t"] - data["t"], 0.0)
        data["ms"] = result["ms"] if result["ms"] is not None else round(data["d"] * 1000, 3)
        if result.get("error"):
            data["error"] = result["error"]
        if row in self.open_spawns:
            self.open_spawns.remove(row)

    def llm_call(self, e: Entry, lane: _Lane, t: float) -> None:
        call = LlmCall.from_entry(e)
        self.calls.append(call)
        price = self.pricer.price(call)
        start = max(t - (call.latency_ms or 0.0) / 1000, 0.0)  # never before the session; ends at its record
        d = t - start
        cost = cost_text(price.cost_usd, calls=1, unknown=price.cost_usd is None, local=price.local)
        row = _Row({"k": "llm", "kind": "llm", "pos": e.pos, "step": e.step, "t": start, "d": d,
                    "name": call.model or "?", "provider": call.provider, "in": call.input_tokens,
                    "out": call.output_tokens, "cache_read": call.cache_read_tokens,
                    "cost": cost, "cost_usd": price.cost_usd, "ms": call.latency_ms, "ok": True, "depth": 0})
        self.place(e, lane, row)

    def flat(self, end: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for e, lane, tool, result in self.early.values():
            self.orphan(e, lane, tool, result)
        self.early.clear()
        if list(self.lanes) == [0]:
            self.lanes[0].label = "all steps (no turns)"

        def walk(row: _Row) -> None:
            if row.data["k"] == "tool" and row.data["d"] is None:  # still open: to the end, pending
                row.data["open"] = True
                row.data["d"] = max(end - row.data["t"], 0.0)
            rows.append(row.data)
            for child in row.children:
                walk(child)

        for turn in sorted(self.lanes):
            lane = self.lanes[turn]
            rows.append({"k": "lane", "turn": turn, "t": lane.t, "label": lane.label, "markers": lane.markers,
                         "depth": 0})
            for row in lane.rows:
                walk(row)
        return rows


def session_view(session: Session, pricer: Pricer, now: float | None = None) -> dict[str, Any]:
    """The waterfall of one session: ``{session, span, rows, totals, problems}``.

    ``rows`` is flat, in display order: ``{"k": "lane"}`` headers (one per turn, with its
    ``markers``), then ``tool`` / ``llm`` / ``hook`` rows with ``t`` (start, s), ``d`` (s),
    ``depth`` (subagent nesting), ``pos`` (record position, for the payload), ``ok``.
    ``span`` is seconds from the first record to the end (``now`` while running).
    """
    entries = session.entries
    base = next((e.epoch for e in entries if e.epoch is not None), None)
    builder = _Builder(base, pricer)
    for e in entries:
        builder.add(e)
    info = session.info
    end = builder.last
    if info.running and now is not None and base is not None:
        end = max(end, now - base)
    rows = builder.flat(end)
    for row in rows:
        if row["k"] != "lane":
            end = max(end, row["t"] + row["d"])
    totals = cost_of(builder.calls, pricer)
    totals["tool_calls"] = sum(e.phase == "tool_call" for e in entries)
    totals["errors"] = sum(e.phase == "tool_result" and e.get("ok") is False for e in entries)
    totals["records"] = len(entries)
    return {
        "session": session_row(info, pricer),
        "start": base,
        "span": end,
        "rows": rows,
        "totals": totals,
        "problems": session.stats.problems(),
    }


def record_view(session: Session, pos: int) -> dict[str, Any] | None:
    """The record at position ``pos`` (1-based) with blobs read back, and its paired record if any."""
    if not 1 <= pos <= len(session.entries):
        return None
    entry = session.entries[pos - 1]
    path: Path = session.info.ref.path
    out: dict[str, Any] = {"record": resolve_blobs(entry.raw, path)}
    if entry.phase in ("tool_call", "tool_result"):
        from traced.format.pairing import pair_positions

        pairs = pair_positions((e.pos, e.phase, e.payload) for e in session.entries)
        other = pairs.get(pos)
        if other is not None:
            out["paired"] = resolve_blobs(session.entries[other - 1].raw, path)
    return out


def all_records(session: Session) -> list[dict[str, Any]]:
    """Every record with blobs read back (the static export carries them all)."""
    path = session.info.ref.path
    return [resolve_blobs(e.raw, path) for e in session.entries]


def matches(info: SessionInfo, query: str) -> bool:
    """Whether ``query`` (case-insensitive) is in the session's id, skill, summaries, prompts or tool names.

    meta.json answers first; the trace is read only when it does not.
    """
    needle = query.casefold()
    if not needle:
        return True
    fields = (info.session_id, info.skill, info.summary, info.input_summary, info.outcome, info.reason)
    if any(needle in f.casefold() for f in fields if f):
        return True
    from traced.read.trace import iter_trace

    for e in iter_trace(info.ref.trace_path):
        if e.phase == "user_prompt":
            text = e.get("prompt")
        elif e.phase in ("tool_call", "tool_result"):
            text = f"{_text(e.get('tool'))} {_text(e.get('server'))} {_text(e.get('name'))}"
        elif e.phase == "start":
            text = _short(e.get("input"))
        else:
            continue
        if isinstance(text, str) and needle in text.casefold():
            return True
    return False


def _days(window: Window) -> list[Window]:
    out = []
    day = window.first
    while day <= window.last:
        out.append(Window(day, day, day.isoformat()))
        day += timedelta(days=1)
    return out


MAX_CHART_DAYS: Final = 366


def usage_view(roots: Sequence[Path], window: Window, stack: str, pricer: Pricer, top: int = 10) -> dict[str, Any]:
    """``{report, tools, days, top}`` for the usage page.

    ``report`` is ``traced usage --since W --by STACK --json`` (each row with its ``cost`` text
    added, as the table prints it); ``days`` holds, per day of the window, that same report
    for the day alone (``--since DAY``: the calls made that day), trimmed to
    the chart's fields; ``tools`` is ``traced usage --since W --by tool --json``; ``top`` the
    ``top`` sessions with the highest known cost.
    Raises ValueError for a bad ``stack`` or a window over ``MAX_CHART_DAYS`` days.
    """
    if (window.last - window.first).days >= MAX_CHART_DAYS:
        raise ValueError(f"window too long for the chart (at most {MAX_CHART_DAYS} days)")
    collected = collect(roots, window, tools=True)
    report = aggregate(collected, stack, pricer=pricer, window=window)
    tools = aggregate_tools(collected, "tool", window=window)
    days = []
    for day in _days(window):  # what collect(roots, day) gives, without reading the files again
        inside = [item for item in (within(s, day) for s in collected) if item is not None]
        daily = aggregate(inside, stack, pricer=pricer, window=day)
        days.append({
            "day": day.label,
            "rows": [_chart_row(r) for r in daily.rows if r.llm_calls],
            "total": _chart_row(daily.total),
        })
    ranked = []
    for item in collected:
        if not item.calls:
            continue
        info = item.info
        cost = cost_of(item.calls, pricer)
        ranked.append({"session_id": info.session_id, "skill": info.skill, "started_at": info.started_at,
                       "outcome": "running" if info.running else info.outcome, **cost})
    ranked.sort(key=lambda r: (r["cost_usd"] is not None, r["cost_usd"] or 0.0, r["unknown_cost_calls"]),
                reverse=True)
    shown = report.to_json()
    for out, row in zip(shown["rows"], report.rows, strict=True):
        out["cost"] = row.cost_display
    shown["total"]["cost"] = report.total.cost_display
    return {"report": shown, "tools": tools.to_json(), "days": days, "top": ranked[:top]}


def _chart_row(row: UsageRow) -> dict[str, Any]:
    return {"key": row.key, "cost_usd": row.cost_usd, "cost": row.cost_display,
            "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
            "cache_read_tokens": row.cache_read_tokens, "llm_calls": row.llm_calls,
            "unknown_cost_calls": row.unknown_cost_calls}
