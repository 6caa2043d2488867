"""Token and cost aggregation over ``llm_call`` records, and tool/MCP-server attribution.

``usage --by skill|model|provider|day`` aggregates ``llm_call`` records;
``usage --by tool|server`` aggregates tool calls (calls, errors, durations).
A window selects **records by their own ``ts``**, not sessions by their start:
a session that runs past midnight, or is resumed days later in its old date
directory, puts each call on the day it was made. A session counts in a row
when it has records there in the window (or, without any, when it started in
the window).

The shape follows fizeau's AggregateUsage: per-row session counts by outcome,
token totals, the sum of the costs that are known, how many sessions had a
cost that is not, and derived rates (cache hit rate, cost per success, tokens/s).

Costs come from, in order:

1. ``cost_usd`` reported in the record (source ``"reported"``);
2. a local provider (ollama, lmstudio, llamacpp, local, vllm) costs ``$0 (local)``
   (source ``"local"``);
3. the ``genai-prices`` catalog bundled with that package, offline, imported
   only when the first call needs it (source ``"genai-prices <version>"``).

A model the catalog does not know has an unknown cost, never $0.

Token convention: traced's ``input_tokens`` excludes cache reads and writes
(so the cache hit rate is ``cache_read / (input + cache_read + cache_write)``);
genai-prices counts them inside ``input_tokens``, so the sum is passed to it.

Model ids with a provider prefix, as LiteLLM and OpenRouter write them
(``anthropic/claude-sonnet-4-5``, ``openrouter/openai/gpt-4o-mini``,
``bedrock/anthropic.claude-…``, ``ollama/llama3``), price like the bare id at
that provider (see ``price_candidates``).

A figure derived from a partly unknown cost is *partial*: it is a lower bound,
and it is shown with ``+?`` (``partial`` in JSON), never as exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeAlias, TypeVar

from traced.format.accounting import reported_cost
from traced.format.pairing import Pairer, tool_key
from traced.format.records import count
from traced.read.sessions import ScanStats, SessionInfo, iter_refs, load_info
from traced.read.trace import Entry, iter_trace
from traced.read.window import Window, local_date

LOCAL_PROVIDERS: Final = frozenset({
    "ollama", "ollama_chat", "lmstudio", "lm_studio", "llamacpp", "llama.cpp", "llamafile",
    "local", "vllm", "hosted_vllm",
})
CALL_GROUPINGS: Final = ("skill", "model", "provider", "day")
TOOL_GROUPINGS: Final = ("tool", "server")
GROUPINGS: Final = CALL_GROUPINGS + TOOL_GROUPINGS
NONE_KEY: Final = "-"

PROVIDER_ALIASES: Final = {
    # LiteLLM / OpenRouter prefixes and OpenTelemetry gen_ai.provider.name values ->
    # genai-prices provider ids.
    "anthropic": "anthropic", "claude": "anthropic",
    "openai": "openai", "azure": "azure", "azure_ai": "azure", "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "bedrock": "aws", "bedrock_converse": "aws", "aws": "aws", "aws.bedrock": "aws",
    "amazon": "aws",
    "gemini": "google", "google": "google", "vertex_ai": "google", "vertex": "google",
    "vertex_ai_beta": "google", "gcp.gemini": "google", "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google", "google_genai": "google",
    "openrouter": "openrouter", "mistral": "mistral", "mistralai": "mistral",
    "mistral_ai": "mistral", "groq": "groq", "deepseek": "deepseek", "xai": "x-ai",
    "x-ai": "x-ai", "x_ai": "x-ai", "together_ai": "together", "together": "together",
    "togethercomputer": "together", "fireworks_ai": "fireworks", "fireworks": "fireworks",
    "cohere": "cohere", "cohere_chat": "cohere", "perplexity": "perplexity",
    "cerebras": "cerebras", "moonshot": "moonshotai", "moonshotai": "moonshotai",
    "meta": "meta", "meta-llama": "meta", "zai": "zai", "novita": "novita",
}


BEDROCK_ID: Final = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|jp|au|ca)\.)?"
    r"(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|qwen|openai|writer)\.[\w.:-]+$"
)
"""An AWS Bedrock model id, with or without a cross-region inference prefix."""


def is_local(provider: str | None) -> bool:
    """Whether ``provider`` names a local runtime, whose calls cost nothing."""
    return provider is not None and provider.lower() in LOCAL_PROVIDERS


def price_candidates(model: str, provider: str | None) -> Iterator[tuple[str, str | None]]:
    """The (model, genai-prices provider id) lookups to try for one call, best first.

    The model as recorded at its provider; then, for each ``prefix/`` in front of
    the id (``openrouter/anthropic/claude-sonnet-4-5``), the rest at that prefix's
    provider and at any provider. Unknown prefixes are kept as part of the id
    (``meta-llama/Llama-3…`` is a whole Hugging Face id) but also stripped.
    """
    seen: set[tuple[str, str | None]] = set()

    def once(m: str, p: str | None) -> Iterator[tuple[str, str | None]]:
        if m and (m, p) not in seen:
            seen.add((m, p))
            yield m, p

    hint = PROVIDER_ALIASES.get(provider.lower(), provider.lower()) if provider else None
    yield from once(model, hint)
    if BEDROCK_ID.match(model.rsplit("/", 1)[-1]):  # us.anthropic.claude-…-v1:0
        yield from once(model.rsplit("/", 1)[-1], "aws")
    rest = model
    while "/" in rest:
        prefix, rest = rest.split("/", 1)
        mapped = PROVIDER_ALIASES.get(prefix.lower())
        if mapped is not None:
            yield from once(rest, mapped)
            if mapped == "openrouter":
                continue
        yield from once(rest, hint)
        yield from once(rest, None)
    yield from once(model, None)


def model_is_local(model: str | None) -> bool:
    """Whether a model id carries a local runtime's prefix (``ollama/llama3``)."""
    return model is not None and "/" in model and is_local(model.split("/", 1)[0])


def _opt_num(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


@dataclass(slots=True)
class LlmCall:
    """One ``llm_call`` record's payload, read tolerantly."""

    model: str | None = None
    provider: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    """The reported cost (None: not reported, or negative = unknown)."""
    latency_ms: float | None = None
    epoch: float | None = None

    @classmethod
    def from_payload(cls, payload: Any, epoch: float | None = None) -> LlmCall:
        """Build from a payload ``{provider?, model, usage:{…}, cost_usd?, latency_ms?}``."""
        if not isinstance(payload, dict):
            payload = {}
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        model, provider = payload.get("model"), payload.get("provider")
        return cls(
            model=model if isinstance(model, str) and model else None,
            provider=provider if isinstance(provider, str) and provider else None,
            input_tokens=count(usage.get("input_tokens")),
            output_tokens=count(usage.get("output_tokens")),
            cache_read_tokens=count(usage.get("cache_read_tokens")),
            cache_write_tokens=count(usage.get("cache_write_tokens")),
            cost_usd=reported_cost(payload),
            latency_ms=_opt_num(payload.get("latency_ms")),
            epoch=epoch,
        )

    @classmethod
    def from_entry(cls, entry: Entry) -> LlmCall:
        """Build from a trace record of phase ``llm_call``."""
        return cls.from_payload(entry.payload, entry.epoch)


@dataclass(frozen=True, slots=True)
class Price:
    """A call's cost and where it came from; ``cost_usd`` None means unknown."""

    cost_usd: float | None
    source: str | None
    local: bool = False


UNKNOWN: Final = Price(None, None)


class Pricer:
    """Prices calls: reported cost, then local = $0, then the genai-prices catalog (lazy)."""

    def __init__(self, catalog: bool = True) -> None:
        self._use_catalog = catalog
        self._catalog: Any = None
        self._loaded = False
        self.catalog_source: str | None = None
        """``"genai-prices <version>"`` once loaded, None if unavailable."""

    def _load(self) -> Any:
        if not self._loaded:
            self._loaded = True
            if self._use_catalog:
                try:
                    import genai_prices
                except ImportError:
                    genai_prices = None  # type: ignore[assignment]
                if genai_prices is not None:
                    self._catalog = genai_prices
                    self.catalog_source = f"genai-prices {genai_prices.__version__}"
        return self._catalog

    def price(self, call: LlmCall) -> Price:
        """The cost of one call, or ``UNKNOWN``."""
        local = is_local(call.provider) or model_is_local(call.model)
        if call.cost_usd is not None:
            return Price(call.cost_usd, "reported", local=local and call.cost_usd == 0)
        if local:
            return Price(0.0, "local", local=True)
        if call.model is None:
            return UNKNOWN
        catalog = self._load()
        if catalog is None:
            return UNKNOWN
        usage = catalog.Usage(
            input_tokens=call.input_tokens + call.cache_read_tokens + call.cache_write_tokens,
            output_tokens=call.output_tokens,
            cache_read_tokens=call.cache_read_tokens,
            cache_write_tokens=call.cache_write_tokens,
        )
        when = datetime.fromtimestamp(call.epoch, UTC) if call.epoch is not None else None
        for model, provider in price_candidates(call.model, call.provider):
            try:
                result = catalog.calc_price(
                    usage, model, provider_id=provider, genai_request_timestamp=when
                )
            except LookupError:
                continue
            except Exception:  # the catalog's own validation errors: unknown, not fatal
                return UNKNOWN
            return Price(float(result.total_price), self.catalog_source)
        return UNKNOWN


def cost_text(cost: float | None, *, calls: int, unknown: int, local: bool) -> str:
    """``-`` (no calls), ``unknown``, ``$0 (local)`` or ``$1.2345`` (``+ unknown`` when partial)."""
    if calls == 0:
        return "-"
    if cost is None:
        return "unknown"
    if cost == 0 and local and unknown == 0:
        return "$0 (local)"
    text = money(cost)
    return f"{text} + unknown" if unknown else text


def money(cost: float) -> str:
    """``$0``, ``$0.0123``, ``$12.35``."""
    if cost == 0:
        return "$0"
    return f"${cost:.4f}" if cost < 10 else f"${cost:,.2f}"


@dataclass(slots=True)
class UsageRow:
    """Aggregated usage for one group (or the total)."""

    key: str
    sessions: int = 0
    success: int = 0
    failure: int = 0
    aborted: int = 0
    running: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    known_cost: float = 0.0
    priced_calls: int = 0
    local_calls: int = 0
    unknown_cost_calls: int = 0
    unknown_cost_sessions: int = 0
    latency_ms: float = 0.0
    timed_output_tokens: int = 0
    sources: set[str] = field(default_factory=set)

    def add_session(self, info: SessionInfo, calls: Sequence[tuple[LlmCall, Price]]) -> None:
        """Count one session and fold its (priced) calls in."""
        self.sessions += 1
        if info.running:
            self.running += 1
        elif info.outcome == "success":
            self.success += 1
        elif info.outcome == "aborted":
            self.aborted += 1
        else:
            self.failure += 1
        self.unknown_cost_sessions += self.add_calls(calls)

    def add_calls(self, calls: Iterable[tuple[LlmCall, Price]]) -> bool:
        """Fold priced calls in; True when any of them has an unknown cost."""
        unknown = False
        for call, price in calls:
            self.llm_calls += 1
            self.input_tokens += call.input_tokens
            self.output_tokens += call.output_tokens
            self.cache_read_tokens += call.cache_read_tokens
            self.cache_write_tokens += call.cache_write_tokens
            if call.latency_ms is not None:
                self.latency_ms += call.latency_ms
                self.timed_output_tokens += call.output_tokens
            if price.cost_usd is None:
                self.unknown_cost_calls += 1
                unknown = True
                continue
            self.priced_calls += 1
            self.known_cost += price.cost_usd
            self.local_calls += price.local
            if price.source:
                self.sources.add(price.source)
        return unknown

    @property
    def cost_usd(self) -> float | None:
        """Sum of the known costs; None when no call had a known cost."""
        return round(self.known_cost, 10) if self.priced_calls else None

    @property
    def local(self) -> bool:
        """Every priced call ran on a local provider."""
        return self.priced_calls > 0 and self.local_calls == self.priced_calls

    @property
    def cache_hit_rate(self) -> float | None:
        """cache_read / (input + cache_read + cache_write); None without input."""
        total = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / total if total else None

    @property
    def cost_partial(self) -> bool:
        """Some calls have a known cost and others not: ``cost_usd`` is a lower bound."""
        return self.priced_calls > 0 and self.unknown_cost_calls > 0

    @property
    def cost_per_success(self) -> float | None:
        """Known cost per successful session (USD; a lower bound when ``cost_partial``);
        None without successes or known cost."""
        cost = self.cost_usd
        return cost / self.success if cost is not None and self.success else None

    @property
    def cost_per_success_display(self) -> str:
        """``-`` (no success or no calls), ``unknown``, ``$0.5000`` or ``$0.5000+?`` (partial)."""
        if not self.success or not self.llm_calls:
            return "-"
        value = self.cost_per_success
        if value is None:
            return "unknown"
        return money(value) + ("+?" if self.cost_partial else "")

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of LLM latency, over calls that reported a latency."""
        return self.timed_output_tokens / (self.latency_ms / 1000) if self.latency_ms else None

    @property
    def price_source(self) -> str | None:
        """Where the known costs came from, e.g. ``"genai-prices 0.2.3, reported"``."""
        return ", ".join(sorted(self.sources)) or None

    @property
    def cost_display(self) -> str:
        """The cost as shown in tables (see ``cost_text``)."""
        return cost_text(
            self.cost_usd, calls=self.llm_calls, unknown=self.unknown_cost_calls, local=self.local
        )

    def to_json(self) -> dict[str, Any]:
        """The ``usage --json`` shape of one row."""

        def rnd(value: float | None, digits: int) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "key": self.key,
            "sessions": self.sessions,
            "success": self.success,
            "failure": self.failure,
            "aborted": self.aborted,
            "running": self.running,
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
            "cost_partial": self.cost_partial,
            "local": self.local,
            "unknown_cost_sessions": self.unknown_cost_sessions,
            "unknown_cost_calls": self.unknown_cost_calls,
            "price_source": self.price_source,
            "cache_hit_rate": rnd(self.cache_hit_rate, 4),
            "cost_per_success": rnd(self.cost_per_success, 10),
            "tokens_per_s": rnd(self.tokens_per_s, 2),
        }


class _Row(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Row)


@dataclass(slots=True)
class Report(Generic[R]):
    """The rows of one grouping over one window, plus the total: ``UsageReport`` (calls by skill,
    model, provider or day) and ``ToolReport`` (tool runs by tool or MCP server)."""

    window: Window | None
    by: str
    rows: list[R]
    total: R

    def to_json(self) -> dict[str, Any]:
        """``{"window": …, "by": …, "rows": [...], "total": {...}}``."""
        return {
            "window": None if self.window is None else self.window.to_json(),
            "by": self.by,
            "rows": [r.to_json() for r in self.rows],
            "total": self.total.to_json(),
        }


# =========================================================================== tool runs


@dataclass(slots=True)
class ToolRun:
    """One tool call with its result (paired by ``call_id``), read tolerantly.

    ``ok`` is None while no result came (the call is *unanswered*);
    ``duration_ms`` is the result's own ``duration_ms``, else the time from the
    call's ``ts`` to the result's, else None. ``epoch`` is when the call was made
    (the result's time when the call record is missing).
    """

    tool: str
    server: str | None = None
    kind: str | None = None
    ok: bool | None = None
    duration_ms: float | None = None
    epoch: float | None = None

    @property
    def label(self) -> str:
        """``server/tool`` for MCP tools, the tool name otherwise."""
        return f"{self.server}/{self.tool}" if self.server else self.tool


def _opt_str(payload: Any, key: str) -> str | None:
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, str) and value else None


def _run_of(entry: Entry) -> ToolRun:
    p = entry.payload
    return ToolRun(
        tool=tool_key(p)[0] or NONE_KEY,
        server=_opt_str(p, "server"),
        kind=_opt_str(p, "kind"),
        epoch=entry.epoch,
    )


def _complete(run: ToolRun, result: Entry, call_epoch: float | None) -> None:
    p = result.payload if isinstance(result.payload, dict) else {}
    ok = p.get("ok")
    run.ok = ok if isinstance(ok, bool) else True
    run.server = run.server or _opt_str(p, "server")
    run.kind = run.kind or _opt_str(p, "kind")
    run.duration_ms = _opt_num(p.get("duration_ms"))
    if run.duration_ms is None and call_epoch is not None and result.epoch is not None:
        run.duration_ms = max(result.epoch - call_epoch, 0.0) * 1000


def tool_runs(entries: Iterable[Entry]) -> list[ToolRun]:
    """Pair a session's ``tool_call``/``tool_result`` records into runs, in call order."""
    pairer: Pairer[tuple[ToolRun, Entry]] = Pairer()
    runs: list[ToolRun] = []
    for e in entries:
        if e.phase == "tool_call":
            run = _run_of(e)
            runs.append(run)
            early = pairer.call(*tool_key(e.payload), (run, e))
            if early is not None:  # its result came first
                _complete(run, early[1], e.epoch)
        elif e.phase == "tool_result":
            tool, call_id = tool_key(e.payload)
            call = pairer.result(tool, call_id, (ToolRun(NONE_KEY), e))
            if call is not None:
                _complete(call[0], e, call[1].epoch)
            elif not call_id:  # no call before it and no id to wait with: it counts on its own
                run = _run_of(e)
                _complete(run, e, None)
                runs.append(run)
    # results that never met their call count on their own
    for run_entry in pairer.early_results():
        run = _run_of(run_entry[1])
        _complete(run, run_entry[1], None)
        runs.append(run)
    return runs


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ascending values; None when empty."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(q * len(sorted_values)) - 1, 0)]


@dataclass(slots=True)
class ToolRow:
    """Attribution for one tool or MCP server: calls, errors, durations (ms)."""

    key: str
    sessions: int = 0
    calls: int = 0
    errors: int = 0
    unanswered: int = 0
    durations: list[float] = field(default_factory=list)

    def add(self, runs: Iterable[ToolRun]) -> None:
        """Count one session's runs of this row."""
        self.sessions += 1
        for run in runs:
            self.calls += 1
            if run.ok is None:
                self.unanswered += 1
            elif not run.ok:
                self.errors += 1
            if run.duration_ms is not None:
                self.durations.append(run.duration_ms)

    @property
    def total_ms(self) -> float:
        """Sum of the known durations (ms)."""
        return sum(self.durations)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank duration quantile (ms) over the runs with a known duration."""
        return percentile(sorted(self.durations), q)

    @property
    def error_rate(self) -> float | None:
        """errors / answered calls; None without answered calls."""
        answered = self.calls - self.unanswered
        return self.errors / answered if answered else None

    def to_json(self) -> dict[str, Any]:
        """The ``usage --by tool|server --json`` shape of one row (durations in ms)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        rate = self.error_rate
        return {
            "key": self.key,
            "sessions": self.sessions,
            "calls": self.calls,
            "errors": self.errors,
            "unanswered": self.unanswered,
            "error_rate": None if rate is None else round(rate, 4),
            "timed_calls": len(self.durations),
            "total_ms": round(self.total_ms, 3),
            "p50_ms": ms(self.quantile(0.5)),
            "p95_ms": ms(self.quantile(0.95)),
        }


UsageReport: TypeAlias = Report[UsageRow]
ToolReport: TypeAlias = Report[ToolRow]


# =========================================================================== collecting


@dataclass(slots=True)
class SessionUsage:
    """A session with its ``llm_call`` records and tool runs inside a window."""

    info: SessionInfo
    calls: list[LlmCall]
    tools: list[ToolRun] = field(default_factory=list)


def _session_day(info: SessionInfo) -> str:
    start = info.started
    return local_date(start).isoformat() if start is not None else info.ref.date


def _day(epoch: float | None, info: SessionInfo) -> str:
    return local_date(epoch).isoformat() if epoch is not None else _session_day(info)


def aggregate(
    sessions: Iterable[SessionUsage],
    by: str = "skill",
    *,
    pricer: Pricer | None = None,
    window: Window | None = None,
) -> UsageReport:
    """Group sessions' calls by ``skill``, ``model``, ``provider`` or ``day`` (the call's local date).

    A session whose calls span several models, providers or days counts once in
    each of their rows, and once in the total. Sessions without calls go under
    ``-`` (``day``: the day they started). Raises ValueError for another grouping.
    """
    if by not in CALL_GROUPINGS:
        raise ValueError(f"bad grouping {by!r}: use one of {', '.join(GROUPINGS)}")
    pricer = pricer or Pricer()
    rows: dict[str, UsageRow] = {}
    total = UsageRow("total")
    for item in sessions:
        info = item.info
        priced = [(c, pricer.price(c)) for c in item.calls]
        total.add_session(info, priced)
        groups: dict[str, list[tuple[LlmCall, Price]]] = {}
        if by == "skill":
            groups[info.skill] = priced
        elif by == "day":
            for pair in priced:
                groups.setdefault(_day(pair[0].epoch, info), []).append(pair)
            if not groups:
                groups[_session_day(info)] = []
        else:
            for pair in priced:
                key = (pair[0].model if by == "model" else pair[0].provider) or NONE_KEY
                groups.setdefault(key, []).append(pair)
            if not groups:
                groups[NONE_KEY] = []
        for key, items in groups.items():
            row = rows.get(key)
            if row is None:
                row = rows[key] = UsageRow(key)
            row.add_session(info, items)
    return UsageReport(window, by, [rows[k] for k in sorted(rows)], total)


def aggregate_tools(
    sessions: Iterable[SessionUsage], by: str = "tool", *, window: Window | None = None
) -> ToolReport:
    """Group tool runs by ``tool`` (``server/tool`` for MCP tools) or MCP ``server``.

    Tools without a server go under ``-`` when grouping by server. Rows are
    sorted by calls, most first. Raises ValueError for another grouping.
    """
    if by not in TOOL_GROUPINGS:
        raise ValueError(f"bad grouping {by!r}: use one of {', '.join(GROUPINGS)}")
    rows: dict[str, ToolRow] = {}
    total = ToolRow("total")
    for item in sessions:
        if not item.tools:
            continue
        total.add(item.tools)
        groups: dict[str, list[ToolRun]] = {}
        for run in item.tools:
            key = run.label if by == "tool" else (run.server or NONE_KEY)
            groups.setdefault(key, []).append(run)
        for key, runs in groups.items():
            row = rows.get(key)
            if row is None:
                row = rows[key] = ToolRow(key)
            row.add(runs)
    ordered = sorted(rows.values(), key=lambda r: (-r.calls, r.key))
    return ToolReport(window, by, ordered, total)


def session_calls(info: SessionInfo) -> list[LlmCall]:
    """The ``llm_call`` records of a session; skips reading when meta.json says there are none."""
    return read_session(info).calls


def session_cost_usd(info: SessionInfo, pricer: Pricer) -> tuple[float | None, str]:
    """A session's cost priced like ``usage`` prices it: (the known part in USD, None when none is
    known; the text tables show, ``cost_text``'s).

    meta.json's reported cost suffices when every call reported one; otherwise the
    session's ``llm_call`` records are read and priced (the catalog loads only then).
    """
    usage = info.usage
    if usage is None or usage.llm_calls == 0:
        return None, "-"
    if usage.unknown_cost_calls == 0:
        return usage.cost_usd, cost_text(usage.cost_usd, calls=usage.llm_calls, unknown=0, local=False)
    row = UsageRow("session")
    row.add_calls((c, pricer.price(c)) for c in session_calls(info))
    return row.cost_usd, row.cost_display


def session_cost(info: SessionInfo, pricer: Pricer) -> str:
    """A session's cost as tables show it (see ``session_cost_usd``)."""
    return session_cost_usd(info, pricer)[1]


def read_session(info: SessionInfo, *, tools: bool = False) -> SessionUsage:
    """A session's calls (and, with ``tools``, its tool runs), all of them, unwindowed.

    Reads nothing when meta.json of a finished session counts none of what is asked.
    """
    phases = info.phases if not info.running else None
    want_calls = phases is None or phases.get("llm_call", 0) > 0
    want_tools = tools and (phases is None or phases.get("tool_call", 0) + phases.get("tool_result", 0) > 0)
    if not want_calls and not want_tools:
        return SessionUsage(info, [])
    entries = [e for e in iter_trace(info.ref.trace_path)
               if e.phase in ("llm_call", "tool_call", "tool_result")]
    calls = [LlmCall.from_entry(e) for e in entries if e.phase == "llm_call"] if want_calls else []
    return SessionUsage(info, calls, tool_runs(entries) if want_tools else [])


def within(item: SessionUsage, window: Window | None) -> SessionUsage | None:
    """``item`` with only the calls and tool runs made inside ``window``; None when the
    session has none there and did not start there. A record without a usable ``ts``
    counts at the session's start."""
    if window is None:
        return item
    start = item.info.started
    started_in = start is not None and window.contains(start)

    def inside(epoch: float | None) -> bool:
        when = epoch if epoch is not None else start
        return started_in if when is None else window.contains(when)

    calls = [c for c in item.calls if inside(c.epoch)]
    tools = [t for t in item.tools if inside(t.epoch)]
    if not calls and not tools and not started_in:
        return None
    return SessionUsage(item.info, calls, tools)


def collect(
    roots: Sequence[Path],
    window: Window | None,
    *,
    skill: str | None = None,
    stats: ScanStats | None = None,
    infos: Iterable[SessionInfo] | None = None,
    tools: bool = False,
) -> list[SessionUsage]:
    """Each session with calls (and tool runs) in ``window``, newest first.

    Sessions of earlier date directories are candidates too (a call is counted on
    the day it was made), unless their files were last written before the window.
    """
    if infos is None:
        infos = candidates(roots, window, skill=skill, stats=stats)
    found = []
    for info in infos:
        item = within(read_session(info, tools=tools), window)
        if item is not None:
            found.append(item)
    return found


def candidates(
    roots: Sequence[Path],
    window: Window | None,
    *,
    skill: str | None = None,
    stats: ScanStats | None = None,
) -> list[SessionInfo]:
    """Sessions that may hold records inside ``window``: those of date directories up to the
    window's last, except earlier ones whose files were last written before it starts."""
    lo, hi = window.dir_range() if window is not None else ("", "9999-99-99")
    infos = []
    for ref in iter_refs(roots, skill=skill, until=hi, stats=stats):
        if window is not None and ref.date < lo:
            try:
                newest = max(p.stat().st_mtime for p in (ref.trace_path, ref.meta_path) if p.exists())
            except (OSError, ValueError):
                continue
            if newest < window.start:
                continue
        info = load_info(ref, stats=stats)
        if info is None or (skill is not None and info.skill != skill):
            continue
        infos.append(info)
    infos.sort(key=lambda i: i.sort_key, reverse=True)
    return infos
