"""Codex CLI rollouts -> traced records, sans-IO.

Codex keeps one JSONL file per session, ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl``
(``CODEX_HOME`` defaults to ``~/.codex``). Each line is ``{timestamp, type, payload}``:

- ``session_meta``: ``{id, timestamp, cwd, originator, cli_version, model_provider?, git?}``;
- ``turn_context``: ``{cwd, model, effort, approval_policy, sandbox_policy, …}`` (the model of the calls after it);
- ``event_msg``: ``user_message {message}`` (what the user typed), ``token_count {info:
  {total_token_usage, last_token_usage, model_context_window} | null, rate_limits}``,
  ``agent_message``, …;
- ``response_item``: the Responses API items: ``message``, ``reasoning``, ``function_call {name,
  arguments, call_id}``, ``function_call_output {call_id, output}``, ``custom_tool_call {name, input,
  call_id}``, ``custom_tool_call_output``, ``local_shell_call``, ``web_search_call``.

One ``token_count`` with ``info`` follows each model response (after the items it produced: its
``llm_call`` is put before them); Codex may write the same totals
twice, so a call is the growth of ``total_token_usage`` (``last_token_usage`` when there are no
totals, or when the running total drops: a resumed session), and a ``token_count`` that adds
nothing is not a call (ccusage/ccusage#824, #1288). A forked or subagent session's file starts
with its own ``session_meta``, then its parent's and a burst of the parent's history stamped at
the fork (ccusage/ccusage#1349): what is stamped within ``REPLAY_WINDOW`` of the start after a
second ``session_meta`` only sets the baseline of the totals. OpenAI counts cached tokens inside
``input_tokens`` and reasoning inside ``output_tokens``; traced's ``input_tokens`` excludes the
cache: ``input_tokens - cached_input_tokens`` -> ``input_tokens``, ``cached_input_tokens`` ->
``cache_read_tokens``, ``output_tokens`` as it is (``reasoning_tokens`` kept beside it).
"""

from __future__ import annotations

import json
from typing import Any, Final

from traced.format import vocab
from traced.integrations.claude_code.transcript import Item, parse_time

PROVIDER: Final = "openai"
TOKEN_FIELDS: Final = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
                       "total_tokens")
REPLAY_WINDOW: Final = 2.0
"""Seconds after a fork's start within which its lines are the parent's history replayed."""
CALL_ITEMS: Final = ("function_call", "custom_tool_call", "local_shell_call")
OUTPUT_ITEMS: Final = ("function_call_output", "custom_tool_call_output")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tokens(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, dict):
        return None
    return {k: _count(raw.get(k)) for k in TOKEN_FIELDS}


def traced_usage(delta: dict[str, int]) -> dict[str, int]:
    """traced's ``usage`` of one call's OpenAI token counts."""
    cached = delta["cached_input_tokens"]
    usage = {"input_tokens": max(delta["input_tokens"] - cached, 0), "output_tokens": delta["output_tokens"],
             "cache_read_tokens": cached, "cache_write_tokens": 0}
    if delta["reasoning_output_tokens"]:
        usage["reasoning_tokens"] = delta["reasoning_output_tokens"]
    return usage


class Rollout:
    """Feed a rollout's complete lines in order; ``records()`` gives the session's records.

    ``session_id``, ``cwd``, ``first_ts``/``last_ts`` (epoch seconds), ``version``
    and ``provider`` come from the lines as they are read.
    """

    def __init__(self) -> None:
        self.session_id = ""
        self.cwd = ""
        self.version = ""
        self.provider = PROVIDER
        self.model = ""
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.lines = 0
        self.malformed = 0
        self.items: list[Item] = []
        self._totals: dict[str, int] | None = None
        self._prev_ts: float | None = None
        self._replay_until: float | None = None
        """Lines stamped up to this time are a copy of the parent's history (a fork)."""
        self._response_at = 0
        """Where the current response's items start: its llm_call goes before them."""
        self._calls: dict[str, tuple[str, float | None]] = {}

    def feed(self, raw: bytes) -> None:
        """Take one complete line (bytes, no newline)."""
        if not raw.strip():
            return
        self.lines += 1
        try:
            entry = json.loads(raw)
        except ValueError:
            self.malformed += 1
            return
        if not isinstance(entry, dict) or not isinstance(entry.get("payload"), dict):
            self.malformed += 1
            return
        ts = parse_time(entry.get("timestamp"))
        if ts is not None:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        kind, payload = entry.get("type"), entry["payload"]
        if (self._replay_until is not None and ts is not None and ts <= self._replay_until
                and kind != "session_meta" and not (kind == "event_msg" and payload.get("type") == "token_count")):
            return  # the parent's prompts and tool calls, copied
        if kind == "session_meta":
            self._meta(payload)
        elif kind == "turn_context":
            model = payload.get("model")
            if isinstance(model, str) and model:
                self.model = model
            if not self.cwd and isinstance(payload.get("cwd"), str):
                self.cwd = payload["cwd"]
        elif kind == "event_msg":
            self._event(payload, ts)
        elif kind == "response_item":
            self._item(payload, ts)

    def _meta(self, payload: dict[str, Any]) -> None:
        sid = payload.get("id")
        if self.session_id and isinstance(sid, str) and sid != self.session_id:
            # a forked or subagent session: its file goes on with its parent's meta and a burst
            # of the parent's history, stamped when the fork was made (ccusage#1349, #1288)
            self._replay_until = (self.first_ts or 0.0) + REPLAY_WINDOW
            return
        for attr, key in (("session_id", "id"), ("cwd", "cwd"), ("version", "cli_version"),
                          ("provider", "model_provider")):
            value = payload.get(key)
            if isinstance(value, str) and value and (attr == "provider" or not getattr(self, attr)):
                setattr(self, attr, value)
        start = parse_time(payload.get("timestamp"))
        if start is not None and (self.first_ts is None or start < self.first_ts):
            self.first_ts = start

    def _event(self, payload: dict[str, Any], ts: float | None) -> None:
        kind = payload.get("type")
        if kind == "user_message":
            text = payload.get("message")
            if isinstance(text, str) and text.strip():
                self.items.append(Item(ts, vocab.USER_PROMPT, {"prompt": text}, f"prompt:{ts}:{len(self.items)}"))
            self._prev_ts = ts
            self._response_at = len(self.items)
        elif kind == "token_count":
            self._token_count(payload.get("info"), ts)

    def _token_count(self, info: Any, ts: float | None) -> None:
        if not isinstance(info, dict):
            return
        totals = _tokens(info.get("total_token_usage"))
        last = _tokens(info.get("last_token_usage"))
        if totals is not None:
            before = self._totals or dict.fromkeys(TOKEN_FIELDS, 0)
            if self._totals is not None and totals["total_tokens"] == before["total_tokens"]:
                return  # the same totals again (a rate-limit refresh): no new call
            self._totals = totals
            if self._replay_until is not None and ts is not None and ts <= self._replay_until:
                return  # a fork's copy of its parent's history: counted in the parent
            if totals["total_tokens"] < before["total_tokens"]:  # the running total restarted (resume)
                delta = last if last is not None else totals
            else:
                delta = {k: max(totals[k] - before[k], 0) for k in TOKEN_FIELDS}
            key = f"llm:{totals['total_tokens']}:{totals['input_tokens']}:{totals['output_tokens']}"
        elif last is not None:
            delta = last
            key = f"llm:{ts}:{last['total_tokens']}"
        else:
            return
        if not any(delta[k] for k in TOKEN_FIELDS):
            return
        payload: dict[str, Any] = {"provider": self.provider or PROVIDER, "model": self.model or "unknown",
                                   "usage": traced_usage(delta)}
        if self._prev_ts is not None and ts is not None and ts >= self._prev_ts:
            payload["latency_ms"] = round((ts - self._prev_ts) * 1000.0, 3)
        self.items.insert(self._response_at, Item(ts, vocab.LLM_CALL, payload, key))
        self._response_at = len(self.items)

    def _item(self, payload: dict[str, Any], ts: float | None) -> None:
        from traced.integrations.hooks.core import one_line, split_tool

        kind = payload.get("type")
        if kind in CALL_ITEMS:
            call_id = payload.get("call_id") or payload.get("id")
            if not isinstance(call_id, str) or not call_id or call_id in self._calls:
                return
            name = payload.get("name") if isinstance(payload.get("name"), str) else "shell"
            tool, kind_, server = split_tool(name or "shell")
            args: Any = payload.get("arguments", payload.get("input", payload.get("action")))
            if isinstance(args, str) and kind != "custom_tool_call":
                try:
                    args = json.loads(args)
                except ValueError:
                    pass
            call: dict[str, Any] = {"tool": tool, "args": args if args is not None else {}, "call_id": call_id,
                                    "kind": kind_}
            if server:
                call["server"] = server
            self._calls[call_id] = (name or "shell", ts)
            self.items.append(Item(ts, vocab.TOOL_CALL, call, "call:" + call_id))
        elif kind in OUTPUT_ITEMS:
            call_id = payload.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                return
            name, started = self._calls.get(call_id, ("unknown", None))
            tool, kind_, server = split_tool(name)
            text, exit_code, seconds = _output(payload.get("output"))
            ok = exit_code in (None, 0)
            result: dict[str, Any] = {"tool": tool, "ok": ok, "call_id": call_id, "kind": kind_}
            if server:
                result["server"] = server
            if seconds is not None:
                result["duration_ms"] = round(seconds * 1000.0, 3)
            elif started is not None and ts is not None and ts >= started:
                result["duration_ms"] = round((ts - started) * 1000.0, 3)
            summary = one_line(text) if text else ""
            if not ok:
                result["error"] = summary or f"exit code {exit_code}"
                result["exit_code"] = exit_code
            elif summary:
                result["result_summary"] = summary
            self.items.append(Item(ts, vocab.TOOL_RESULT, result, "result:" + call_id))
            self._prev_ts = ts
            self._response_at = len(self.items)

    def records(self) -> list[Item]:
        """Every record, in file order."""
        return list(self.items)


def _output(raw: Any) -> tuple[str, int | None, float | None]:
    """(text, exit code, seconds) of a tool output: Codex's ``{"output", "metadata": {exit_code,
    duration_seconds}}`` JSON string, or its plain ``Exit code: N`` / ``Wall time`` text."""
    if not isinstance(raw, str):
        return (json.dumps(raw) if raw is not None else ""), None, None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, dict) and "output" in value:
        meta = value.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        code = meta.get("exit_code")
        seconds = meta.get("duration_seconds")
        return (str(value.get("output") or ""), code if isinstance(code, int) else None,
                float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None)
    code = None
    text = raw
    if raw.startswith("Exit code: "):
        head, _, rest = raw.partition("\n")
        try:
            code = int(head[len("Exit code: "):].strip())
        except ValueError:
            code = None
        if "Output:\n" in rest:
            text = rest.split("Output:\n", 1)[1]
    return text, code, None
