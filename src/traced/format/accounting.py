"""Accounting: the meta.json counters, one rule for the daemon and the readers alike.

``account`` folds one record into ``tool_calls``, ``errors``, ``phases`` and
``usage`` (DESIGN §2, devboy's finalize rule: tool_calls = count of
``tool_call`` records, errors = count of ``tool_result`` records with
``ok: false``). The daemon calls it as it writes (meta.json), the readers as
they read a trace that has no usable meta.json; both get the same numbers.
"""

from __future__ import annotations

from typing import Any, Protocol

from traced.format import vocab
from traced.format.records import Usage, count, number


class Counters(Protocol):
    """What ``account`` folds into: meta.json's ``Meta`` and the readers' ``TraceSummary``."""

    tool_calls: int
    errors: int
    phases: dict[str, int]
    usage: Usage


def account(counters: Counters, phase: str, payload: Any) -> None:
    """Fold one written (or read) record into ``counters``."""
    phases = counters.phases
    phases[phase] = phases.get(phase, 0) + 1
    if phase == vocab.TOOL_CALL:
        counters.tool_calls += 1
    elif phase == vocab.TOOL_RESULT:
        if isinstance(payload, dict) and payload.get("ok") is False:
            counters.errors += 1
    elif phase == vocab.LLM_CALL:
        add_usage(counters.usage, payload)


def add_usage(usage: Usage, payload: Any) -> None:
    """Add one ``llm_call`` payload's tokens (counts) and cost (USD) to ``usage``.

    Tolerant: odd or missing token fields count as 0; a ``cost_usd`` that is not a
    finite number >= 0 makes the call's cost unknown (``unknown_cost_calls``).
    """
    if not isinstance(payload, dict):
        payload = {}
    u = payload.get("usage")
    if isinstance(u, dict):
        usage.input_tokens += count(u.get("input_tokens"))
        usage.output_tokens += count(u.get("output_tokens"))
        usage.cache_read_tokens += count(u.get("cache_read_tokens"))
        usage.cache_write_tokens += count(u.get("cache_write_tokens"))
    usage.llm_calls += 1
    cost = reported_cost(payload)
    if cost is None:
        usage.unknown_cost_calls += 1
    else:
        usage.cost_usd = round((usage.cost_usd or 0.0) + cost, 10)


MAX_CALL_COST_USD = 1_000_000.0
"""No single LLM call costs a million dollars: a larger ``cost_usd`` is a writer's error, and is
unknown (sums of such figures would overflow to ``inf`` and print as ``$inf``)."""


def reported_cost(payload: Any) -> float | None:
    """An ``llm_call`` payload's ``cost_usd`` (USD) when it is a finite number in
    ``[0, MAX_CALL_COST_USD]``, else None (unknown)."""
    cost = number(payload.get("cost_usd")) if isinstance(payload, dict) else None
    return cost if cost is not None and 0 <= cost <= MAX_CALL_COST_USD else None


def usage_from_meta(value: object) -> Usage | None:
    """meta.json's ``usage`` object read tolerantly, or None when absent or not an object."""
    if not isinstance(value, dict):
        return None
    cost = number(value.get("cost_usd"))
    return Usage(
        input_tokens=count(value.get("input_tokens")),
        output_tokens=count(value.get("output_tokens")),
        cache_read_tokens=count(value.get("cache_read_tokens")),
        cache_write_tokens=count(value.get("cache_write_tokens")),
        cost_usd=cost if cost is not None and cost >= 0 else None,
        llm_calls=count(value.get("llm_calls")),
        unknown_cost_calls=count(value.get("unknown_cost_calls")),
    )


CALL_SOURCES = frozenset({"transcript", "otlp"})
"""The two client ids that report the same Claude Code API calls (the transcript read by the hook
and by ``traced import``; the OTLP receiver's ``api_request``): only between them do equal token
counts name one call. Two processes of a skill calling a model with the same prompt are two calls."""


def call_keys(payload: Any) -> list[tuple[str, bool]]:
    """The keys that name one API call in an ``llm_call`` payload, each with whether it matches
    across any two records (True) or only across two sources (False):

    - ``rid:<request_id>``: the provider's request id (Anthropic's ``req_…``), when present;
    - ``fp:<model>|<input>|<output>|<cache read>|<cache write>``: the exact token counts, which
      Claude Code's OTLP ``api_request`` (it has no request id) shares with the transcript's
      record of the same response. It matches only between the two ``CALL_SOURCES``, never two
      records of one source (a transcript may hold two responses with equal counts), nor two
      records whose request ids differ.

    The request-id key, when present, comes first.
    """
    if type(payload) is not dict:
        return []
    keys: list[tuple[str, bool]] = []
    rid = payload.get("request_id")
    if type(rid) is str and 0 < len(rid) <= 256:
        keys.append(("rid:" + rid, True))
    model, usage = payload.get("model"), payload.get("usage")
    if type(model) is str and 0 < len(model) <= 256 and type(usage) is dict:
        counts = [usage.get(k) for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")]
        if all(c is None or type(c) is int for c in counts) and any(counts):
            keys.append(("fp:" + model + "|" + "|".join(str(c or 0) for c in counts), False))
    return keys
