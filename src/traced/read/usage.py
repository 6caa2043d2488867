"""Token and cost aggregation over ``llm_call`` records, by skill, model, provider or day.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from traced.format.accounting import reported_cost
from traced.format.records import count
from traced.read.sessions import ScanStats, SessionInfo, scan
from traced.read.trace import Entry, iter_trace
from traced.read.window import Window, local_date

LOCAL_PROVIDERS: Final = frozenset({"ollama", "lmstudio", "llamacpp", "local", "vllm"})
GROUPINGS: Final = ("skill", "model", "provider", "day")
NONE_KEY: Final = "-"


def is_local(provider: str | None) -> bool:
    """Whether ``provider`` names a local runtime, whose calls cost nothing."""
    return provider is not None and provider.lower() in LOCAL_PROVIDERS


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
        local = is_local(call.provider)
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
        attempts: list[str | None] = [call.provider, None] if call.provider else [None]
        for provider in attempts:
            try:
                result = catalog.calc_price(
                    usage, call.model, provider_id=provider, genai_request_timestamp=when
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
    def cost_per_success(self) -> float | None:
        """Known cost per successful session; None without successes or known cost."""
        cost = self.cost_usd
        return cost / self.success if cost is not None and self.success else None

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
            "local": self.local,
            "unknown_cost_sessions": self.unknown_cost_sessions,
            "unknown_cost_calls": self.unknown_cost_calls,
            "price_source": self.price_source,
            "cache_hit_rate": rnd(self.cache_hit_rate, 4),
            "cost_per_success": rnd(self.cost_per_success, 10),
            "tokens_per_s": rnd(self.tokens_per_s, 2),
        }


@dataclass(slots=True)
class UsageReport:
    """Rows of one grouping over one window, plus the total."""

    window: Window | None
    by: str
    rows: list[UsageRow]
    total: UsageRow

    def to_json(self) -> dict[str, Any]:
        """``{"window": …, "by": …, "rows": [...], "total": {...}}``."""
        return {
            "window": None if self.window is None else self.window.to_json(),
            "by": self.by,
            "rows": [r.to_json() for r in self.rows],
            "total": self.total.to_json(),
        }


def _session_day(info: SessionInfo) -> str:
    start = info.started
    return local_date(start).isoformat() if start is not None else info.ref.date


def aggregate(
    sessions: Iterable[tuple[SessionInfo, Sequence[LlmCall]]],
    by: str = "skill",
    *,
    pricer: Pricer | None = None,
    window: Window | None = None,
) -> UsageReport:
    """Group sessions and their calls by ``skill``, ``model``, ``provider`` or ``day``.

    A session whose calls span several models (or providers) counts once in each
    of their rows, and once in the total. Sessions without calls go under ``-``.
    """
    if by not in GROUPINGS:
        raise ValueError(f"bad grouping {by!r}: use one of {', '.join(GROUPINGS)}")
    pricer = pricer or Pricer()
    rows: dict[str, UsageRow] = {}
    total = UsageRow("total")
    for info, calls in sessions:
        priced = [(c, pricer.price(c)) for c in calls]
        total.add_session(info, priced)
        groups: dict[str, list[tuple[LlmCall, Price]]] = {}
        if by == "skill":
            groups[info.skill] = priced
        elif by == "day":
            groups[_session_day(info)] = priced
        else:
            for item in priced:
                key = (item[0].model if by == "model" else item[0].provider) or NONE_KEY
                groups.setdefault(key, []).append(item)
            if not groups:
                groups[NONE_KEY] = []
        for key, items in groups.items():
            row = rows.get(key)
            if row is None:
                row = rows[key] = UsageRow(key)
            row.add_session(info, items)
    return UsageReport(window, by, [rows[k] for k in sorted(rows)], total)


def session_calls(info: SessionInfo) -> list[LlmCall]:
    """The ``llm_call`` records of a session; skips reading when meta.json says there are none."""
    if not info.running and info.phases is not None and info.phases.get("llm_call", 0) == 0:
        return []
    return [LlmCall.from_entry(e) for e in iter_trace(info.ref.trace_path) if e.phase == "llm_call"]


def collect(
    roots: Sequence[Path],
    window: Window | None,
    *,
    skill: str | None = None,
    stats: ScanStats | None = None,
    infos: Sequence[SessionInfo] | None = None,
) -> list[tuple[SessionInfo, list[LlmCall]]]:
    """Each session in ``window`` with its ``llm_call`` records, newest first."""
    if infos is None:
        infos = scan(roots, window, skill=skill, stats=stats)
    return [(info, session_calls(info)) for info in infos]
