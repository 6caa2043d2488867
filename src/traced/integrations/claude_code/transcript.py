"""Claude Code transcripts -> traced records, sans-IO.

A transcript is the JSONL file Claude Code keeps per session
(``~/.claude/projects/<project>/<session_id>.jsonl``; subagents in
``<session_id>/subagents/agent-<id>.jsonl``). Each line is one object with
``type`` (``user``, ``assistant``, ``system``, ``summary``, …), ``uuid``,
``timestamp`` (ISO 8601, UTC), ``sessionId``, ``isSidechain``, ``cwd`` and, for
``user``/``assistant``, the Messages API ``message``.

One API response is written as several ``assistant`` lines (one per content
block, and streaming partials) sharing ``message.id`` and ``requestId``, with
the usage repeated or growing: a response is counted once, under the largest
value each usage field reached (ccusage/ccusage#797, #994). A line whose
``sessionId`` names another session is a copy (a forked or resumed
conversation replays its parent's lines): it was counted there, not here.

Claude's usage maps onto traced's (whose ``input_tokens`` excludes cache
tokens, as Claude's does): ``input_tokens``, ``output_tokens``,
``cache_read_input_tokens`` -> ``cache_read_tokens``,
``cache_creation_input_tokens`` -> ``cache_write_tokens``.

Two users: the hook (``Reader`` with ``full=False``: only ``llm_call`` records,
other lines barely parsed) and ``traced import`` (``full=True``: prompts, tool
calls and results paired by id, LLM calls, in order, with their times).
Stdlib only: it runs on the hook's path.
"""

from __future__ import annotations

import json

from traced.format import vocab

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Final

PROVIDER: Final = "anthropic"
SYNTHETIC_MODEL: Final = "<synthetic>"
"""The model of lines Claude Code makes up itself (API errors, "No response requested."): no API call."""
USAGE_FIELDS: Final = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)
"""(Claude's usage field, traced's)."""
SKIPPED_PROMPTS: Final = ("<local-command-stdout>", "<local-command-stderr>", "[Request interrupted by user")
"""User lines that are Claude Code's own output, not a prompt."""


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines of ``data`` (without their newline) and the bytes they span.

    A last line with no newline yet is left out (the agent is still writing
    it): the caller keeps its offset there and reads it again next time.
    """
    end = data.rfind(b"\n") + 1
    if not end:
        return [], 0
    return data[:end].split(b"\n")[:-1], end


def parse_time(value: Any) -> float | None:
    """An ISO 8601 timestamp (``2025-10-20T09:14:02.118Z``) as epoch seconds; None if it is not one."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    if len(value) <= 30 and value.endswith("Z") and value[4] == "-" and value[10] == "T":  # the usual shape
        try:
            seconds = _epoch_day(int(value[:4]), int(value[5:7]), int(value[8:10])) * 86400
            seconds += int(value[11:13]) * 3600 + int(value[14:16]) * 60
            return seconds + float(value[17:-1])
        except ValueError:
            return None
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _epoch_day(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil)."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError("not a date")
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(message: dict[str, Any]) -> dict[str, int] | None:
    """traced's ``usage`` of one Messages API ``message`` (None without one).

    ``cache_write_1h_tokens``: the part of the cache writes made with the 1-hour
    TTL (priced higher than 5-minute writes), when the line says so.
    """
    raw = message.get("usage")
    if not isinstance(raw, dict):
        return None
    usage = {ours: _count(raw.get(theirs)) for theirs, ours in USAGE_FIELDS}
    creation = raw.get("cache_creation")
    if isinstance(creation, dict) and _count(creation.get("ephemeral_1h_input_tokens")):
        usage["cache_write_1h_tokens"] = _count(creation.get("ephemeral_1h_input_tokens"))
    return usage


def merge_usage(into: dict[str, int], other: dict[str, int]) -> None:
    """Keep the largest value of each field (a response's lines repeat or grow its usage)."""
    for key, value in other.items():
        if value > into.get(key, 0):
            into[key] = value


def response_key(entry: dict[str, Any]) -> str:
    """What identifies one API response: ``message.id``, else ``requestId``, else the line's ``uuid``."""
    message = entry.get("message")
    mid = message.get("id") if isinstance(message, dict) else None
    if isinstance(mid, str) and mid:
        return mid
    rid = entry.get("requestId")
    if isinstance(rid, str) and rid:
        return rid
    uuid = entry.get("uuid")
    return uuid if isinstance(uuid, str) else ""


class Response:
    """One API response, gathered from its lines."""

    __slots__ = ("agent_id", "cost_usd", "first_line", "first_ts", "key", "last_text", "last_ts", "message_id",
                 "model", "order", "prev_ts", "request_id", "sidechain", "stop_reason", "usage")

    def __init__(self, key: str, order: int, first_line: int = 0) -> None:
        self.key = key
        self.order = order
        self.first_line = first_line
        """The index of its first line among the lines fed."""
        self.message_id = ""
        self.request_id = ""
        self.model = ""
        self.usage: dict[str, int] = {}
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.prev_ts: float | None = None
        """The time of the line before its first one (the prompt or tool result it answers)."""
        self.stop_reason = ""
        self.agent_id = ""
        self.sidechain = False
        self.last_text = ""
        """Its last text block (what Claude Code's Stop hook gives as ``last_assistant_message``)."""
        self.cost_usd: float | None = None
        """``costUSD``, which older Claude Code versions wrote on each line (the same for every line)."""

    def payload(self) -> dict[str, Any]:
        """``llm_call {provider, model, usage, cost_usd?, latency_ms?, finish_reason?, message_id?, request_id?,
        agent_id?}`` (``cost_usd`` only when the transcript reports one)."""
        payload: dict[str, Any] = {"provider": PROVIDER, "model": self.model or "unknown",
                                   "usage": dict(self.usage)}
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            payload["usage"].setdefault(name, 0)
        if self.cost_usd is not None:
            payload["cost_usd"] = self.cost_usd
        if self.prev_ts is not None and self.last_ts is not None and self.last_ts >= self.prev_ts:
            payload["latency_ms"] = round((self.last_ts - self.prev_ts) * 1000.0, 3)
        if self.stop_reason:
            payload["finish_reason"] = self.stop_reason
        if self.message_id:
            payload["message_id"] = self.message_id
        if self.request_id:
            payload["request_id"] = self.request_id
        if self.agent_id:
            payload["agent_id"] = self.agent_id
        if self.sidechain:
            payload["sidechain"] = True
        return payload


class Item:
    """One record for ``traced import``: (time, phase, payload) and its stable source key."""

    __slots__ = ("key", "payload", "phase", "ts")

    def __init__(self, ts: float | None, phase: str, payload: dict[str, Any], key: str) -> None:
        self.ts = ts
        self.phase = phase
        self.payload = payload
        self.key = key


class Reader:
    """Feed a transcript's complete lines in file order; collect its API responses (and more).

    ``session_id``: the session the transcript belongs to (lines naming
    another are copies, skipped). ``agent_id``: the subagent whose transcript
    this is ('' for the main one). ``full``: also collect prompts, tool calls
    and results, and the session's first/last time and cwd (``traced import``).
    """

    def __init__(self, session_id: str, agent_id: str = "", full: bool = False) -> None:
        self.session_id = session_id
        self.agent_id = agent_id
        self.full = full
        self.responses: dict[str, Response] = {}
        self.items: list[Item] = []
        """With ``full``: prompts, tool calls and results, and a placeholder per response
        (phase ``llm_call``, payload filled in by ``records``), in file order."""
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.cwd = ""
        self.version = ""
        self.lines = 0
        self.fed = 0
        """Lines fed, blank ones included (``Response.first_line`` counts in these)."""
        self.tail: Response | None = None
        """The response whose lines are the last ones fed (nothing came after it yet)."""
        self.malformed = 0
        self.copies = 0
        self._prev_ts: float | None = None
        self._calls: dict[str, tuple[str, float | None]] = {}
        """tool_use id -> (tool name, time of its line), to pair results."""

    def feed_all(self, lines: Iterable[bytes]) -> None:
        """Feed every line of ``lines``."""
        for raw in lines:
            self.feed(raw)

    def feed(self, raw: bytes) -> None:
        """Take one complete line (bytes, no newline)."""
        self.fed += 1
        if not raw.strip():
            return
        self.lines += 1
        if not self.full and b'"assistant"' not in raw:
            self._prev_ts = self._quick_time(raw) or self._prev_ts
            self.tail = None
            return
        try:
            entry = json.loads(raw)
        except ValueError:
            self.malformed += 1
            return
        if not isinstance(entry, dict):
            self.malformed += 1
            return
        ts = parse_time(entry.get("timestamp"))
        sid = entry.get("sessionId")
        if isinstance(sid, str) and sid and sid != self.session_id:
            self.copies += 1
            self._prev_ts = ts or self._prev_ts
            return
        kind = entry.get("type")
        self.tail = None
        if self.full and ts is not None:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
            if not self.cwd and isinstance(entry.get("cwd"), str):
                self.cwd = entry["cwd"]
            if not self.version and isinstance(entry.get("version"), str):
                self.version = entry["version"]
        if kind == "assistant":
            self._assistant(entry, ts)
        elif kind == "user" and self.full:
            self._user(entry, ts)
            self._prev_ts = ts or self._prev_ts
        else:
            self._prev_ts = ts or self._prev_ts

    @staticmethod
    def _quick_time(raw: bytes) -> float | None:
        """The line's time without parsing it (tool results can be megabytes): its last
        ``"timestamp":"…"`` (Claude Code writes the line's own after the message)."""
        at = raw.rfind(b'"timestamp":"')
        if at < 0:
            return None
        start = at + len(b'"timestamp":"')
        end = raw.find(b'"', start, start + 40)
        return parse_time(raw[start:end].decode("ascii", "replace")) if end > 0 else None

    def _agent(self, entry: dict[str, Any]) -> str:
        agent = entry.get("agentId")
        if self.agent_id:
            return self.agent_id
        return agent if isinstance(agent, str) and entry.get("isSidechain") is True else ""

    def _assistant(self, entry: dict[str, Any], ts: float | None) -> None:
        message = entry.get("message")
        if not isinstance(message, dict):
            return
        model = message.get("model")
        usage = usage_of(message)
        if model == SYNTHETIC_MODEL or usage is None:
            return
        key = response_key(entry)
        if not key:
            return
        resp = self.responses.get(key)
        if resp is None:
            resp = self.responses[key] = Response(key, len(self.responses), self.fed - 1)
            resp.prev_ts = self._prev_ts
            resp.first_ts = ts
            mid, rid = message.get("id"), entry.get("requestId")
            resp.message_id = mid if isinstance(mid, str) else ""
            resp.request_id = rid if isinstance(rid, str) else ""
            resp.agent_id = self._agent(entry)
            resp.sidechain = entry.get("isSidechain") is True
            if self.full:
                self.items.append(Item(ts, vocab.LLM_CALL, {}, "llm:" + key))
        if isinstance(model, str) and model:
            resp.model = model
        merge_usage(resp.usage, usage)
        cost = entry.get("costUSD")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            resp.cost_usd = max(resp.cost_usd or 0.0, float(cost))
        if ts is not None and (resp.last_ts is None or ts > resp.last_ts):
            resp.last_ts = ts
        stop = message.get("stop_reason")
        if isinstance(stop, str) and stop:
            resp.stop_reason = stop
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                    resp.last_text = block["text"]
        self.tail = resp
        if self.full:
            self._tool_uses(entry, message, ts, resp.agent_id)

    def _tool_uses(self, entry: dict[str, Any], message: dict[str, Any], ts: float | None, agent: str) -> None:
        from traced.integrations.hooks.core import split_tool

        content = message.get("content")
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict) or block.get("type") not in ("tool_use", "server_tool_use"):
                continue
            call_id = block.get("id")
            if not isinstance(call_id, str) or not call_id or call_id in self._calls:
                continue
            name = block.get("name") if isinstance(block.get("name"), str) else "unknown"
            tool, kind, server = split_tool(name or "unknown")
            args = block.get("input")
            payload: dict[str, Any] = {"tool": tool, "args": args if args is not None else {},
                                       "call_id": call_id, "kind": kind}
            if server:
                payload["server"] = server
            if kind == "skill" and isinstance(args, dict):
                skill = args.get("skill") or args.get("command")
                if isinstance(skill, str) and skill:
                    payload["name"] = skill
            if agent:
                payload["agent_id"] = agent
            self._calls[call_id] = (name or "unknown", ts)
            self.items.append(Item(ts, vocab.TOOL_CALL, payload, "call:" + call_id))

    def _user(self, entry: dict[str, Any], ts: float | None) -> None:
        message = entry.get("message")
        if not isinstance(message, dict):
            return
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_result":
                    self._tool_result(entry, block, ts)
                elif block.get("type") == "text" and isinstance(block.get("text"), str):
                    texts.append(block["text"])
            text = "\n".join(texts)
        else:
            text = content if isinstance(content, str) else ""
        if (not text.strip() or entry.get("isMeta") is True or entry.get("isSidechain") is True
                or entry.get("isCompactSummary") is True or text.startswith(SKIPPED_PROMPTS)):
            return
        uuid = entry.get("uuid")
        key = uuid if isinstance(uuid, str) and uuid else f"{ts}:{len(text)}"
        payload: dict[str, Any] = {"prompt": text}
        prompt_id = entry.get("promptId")
        if isinstance(prompt_id, str) and prompt_id:
            payload["prompt_id"] = prompt_id
        self.items.append(Item(ts, vocab.USER_PROMPT, payload, "prompt:" + key))

    def _tool_result(self, entry: dict[str, Any], block: dict[str, Any], ts: float | None) -> None:
        from traced.integrations.hooks.core import one_line, split_tool, summarize_response

        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            return
        name, started = self._calls.get(call_id, ("unknown", None))
        tool, kind, server = split_tool(name)
        failed = block.get("is_error") is True
        payload: dict[str, Any] = {"tool": tool, "ok": not failed, "call_id": call_id, "kind": kind}
        if server:
            payload["server"] = server
        if started is not None and ts is not None and ts >= started:
            payload["duration_ms"] = round((ts - started) * 1000.0, 3)
        summary = summarize_response(block.get("content"))
        if failed:
            payload["error"] = summary or "tool failed"
        elif summary:
            payload["result_summary"] = one_line(summary)
        agent = self._agent(entry)
        if agent:
            payload["agent_id"] = agent
        self.items.append(Item(ts, vocab.TOOL_RESULT, payload, "result:" + call_id))

    def calls(self) -> list[Response]:
        """The responses, in the order their first line came."""
        return list(self.responses.values())

    def records(self) -> list[Item]:
        """With ``full``: every record in file order, each response's payload filled in."""
        out = []
        for item in self.items:
            if item.phase == vocab.LLM_CALL:
                resp = self.responses[item.key[4:]]
                item.payload = resp.payload()
                item.ts = resp.last_ts if resp.last_ts is not None else item.ts
            out.append(item)
        return out


def source_seq(key: str) -> int:
    """The idempotency ``seq`` of a record from a transcript: a stable 63-bit hash of its source key.

    The hook and ``traced import`` send transcript records under one client id
    (``CLIENT_ID``) with these seqs, so the daemon drops a record
    either of them already wrote, and an import finds them on disk by
    ``client_seq``. Never 0 (0 means "no key").
    """
    try:  # the C module itself: hashlib would load OpenSSL (5 ms) on the hook's path
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - another interpreter
        from hashlib import blake2b
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


CLIENT_ID: Final = "transcript"
"""The client id transcript records are sent under, by the hook and by ``traced import`` (see
``source_seq``); the daemon keeps idempotency keys per session, so one id serves every session."""
