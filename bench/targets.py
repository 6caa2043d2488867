# ruff: noqa: RUF001
"""Issue #19's targets: each one a ratio to a reference measured in the same ``scripts/bench`` run.

``evaluate(values)`` takes every row of one run (row key -> one value per run, or per invocation
for the ``traced event`` rows) and returns one ``Verdict`` per target: the measured figure, the
bound and ``PASS``/``MISS``/``not measured``. No I/O and no imports from the rest of bench/, so
tests/test_bench_targets.py loads this file alone.

A ratio is the median of the per-run ratios when both rows hold one value per run of the same
loop (the rows were measured interleaved, so drift cancels run by run); otherwise (the
invocations of mode 4, or rows of unequal length) it is the ratio of the two medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PASS, MISS, NOT_MEASURED, INFO = "PASS", "MISS", "not measured", "info"


@dataclass(frozen=True)
class Target:
    label: str
    keys: tuple[str, ...]
    """candidate row keys: the first one with values is measured"""
    ref: str | None
    """the reference row (a ratio), or None: the row's own median is compared (``unit``)"""
    op: str
    """``>=`` or ``<=``; empty for an information line without a verdict"""
    bound: float
    unit: str = "×"
    """``×`` for ratios; ``ms`` for a bound in milliseconds on a row in µs"""
    paired: bool = True
    """per-run ratios (rows measured in the same run loop); False: ratio of the medians"""


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float
    """the median ratio (or the median in ``unit``); NaN when not measured"""
    low: float
    high: float
    """min and max of the per-run ratios (or values); equal to value for a ratio of medians"""
    runs: int
    key: str | None
    """the row that was measured (one of ``target.keys``)"""
    verdict: str

    @property
    def measured(self) -> str:
        if self.verdict == NOT_MEASURED:
            return "not measured"
        f = _fmt(self.value, self.target.unit)
        if self.runs > 1 and self.low != self.high:
            f += f" ({_fmt(self.low, self.target.unit, False)}–{_fmt(self.high, self.target.unit, False)})"
        return f

    @property
    def need(self) -> str:
        if not self.target.op:
            return "–"
        return f"{'≥' if self.target.op == '>=' else '≤'} {_fmt(self.target.bound, self.target.unit)}"


def _fmt(v: float, unit: str, with_unit: bool = True) -> str:
    if unit == "ms":
        return f"{v:.2f}{' ms' if with_unit else ''}"
    return f"{v:.2f}{'×' if with_unit else ''}"


HOOKS = ("claude-code", "codex", "gemini")

TARGETS: tuple[Target, ...] = (
    Target("1. pipelined 200 B, C client: traced / minimal Python server", ("pipe200.c",), "pipe200.mini", ">=", 0.8),
    Target("1. pipelined 2 KB, C client: traced / minimal Python server", ("pipe2000.c",), "pipe2000.mini", ">=",
           0.8),
    Target("2. acked, C client, 16 conns: throughput / minimal server's", ("ack16.c",), "ack16.mini", ">=", 0.8),
    Target("2. acked, C client, 1 conn: p50 / minimal server's", ("ack1.c.p50",), "ack1.mini.p50", "<=", 1.2),
    Target("3. `fsync=always`, C client, 64 conns on 64 sessions: throughput / 1 `fdatasync` per event",
           ("dur.c",), "dur.fsync1", ">=", 6.0),
    Target("3. `fsync=always`, C client, 64 conns on 64 sessions: ack p99", ("dur.c.p99",), None, "<=", 5.0,
           unit="ms"),
    Target("4. events round-robin over all open sessions / 1 session", ("scale.spread",), "scale.base", ">=", 0.8),
    Target("5. redaction on / off, 200 B (pipelined, C client)", ("redact200",), None, ">=", 0.8),
    Target("5. redaction on / off, 2 KB code edits (pipelined, C client)", ("redact2000",), None, ">=", 0.8),
    Target("6. `traced event` / `python -c pass`", ("cli.event",), "cli.py", "<=", 2.0, paired=False),
    *(Target(f"6. `traced hook {h}` (a tool call that writes a record) / `python -c pass`",
             (f"cli_hook_{h}", f"cli.hook.{h}", *(("cli.hook",) if h == "claude-code" else ())), "cli.hook.py",
             "<=", 2.5, paired=False) for h in HOOKS),
)

INFO_LINES: tuple[Target, ...] = (
    Target("far mark: pipelined 200 B, C client: traced / rsyslog", ("pipe200.c",), "pipe200.rsyslog", "", 0),
    Target("far mark: pipelined 2 KB, C client: traced / rsyslog", ("pipe2000.c",), "pipe2000.rsyslog", "", 0),
    Target("3. the same with 64 Python clients: throughput / 1 `fdatasync` per event", ("dur.py",), "dur.fsync1",
           "", 0),
    Target("3. the same with 64 Python clients: ack p99", ("dur.py.p99",), None, "", 0, unit="ms"),
    Target("event loop: pipelined 200 B, C client: asyncio / uvloop", ("pipe200.c.asyncio",), "pipe200.c", "", 0),
    Target("event loop: acked, C client, 16 conns, throughput: asyncio / uvloop", ("ack16.c.asyncio",), "ack16.c",
           "", 0),
    Target("event loop: acked, C client, 1 conn, p50: asyncio / uvloop", ("ack1.c.asyncio.p50",), "ack1.c.p50", "",
           0),
    Target("multi-core prototype: pipelined 200 B, 2 daemons (sessions sharded) / 1 daemon", ("shard.2",), "shard.1",
           "", 0),
)


def _ratios(a: Sequence[float], b: Sequence[float], paired: bool) -> list[float]:
    if paired and len(a) == len(b):
        return [x / y for x, y in zip(a, b, strict=True) if y]
    mb = statistics.median(b)
    return [statistics.median(a) / mb] if mb else []


def judge(t: Target, values: Mapping[str, Sequence[float]]) -> Verdict:
    """One target against the rows of one run; ``values`` maps row key -> its values (empty: not run)."""
    key = next((k for k in t.keys if values.get(k)), None)
    ref = values.get(t.ref) if t.ref else None
    if key is None or (t.ref and not ref):
        nan = float("nan")
        return Verdict(t, nan, nan, nan, 0, key, NOT_MEASURED)
    own = list(values[key])
    xs = _ratios(own, ref, t.paired) if ref is not None else [v / 1000 for v in own] if t.unit == "ms" else own
    if not xs:
        nan = float("nan")
        return Verdict(t, nan, nan, nan, 0, key, NOT_MEASURED)
    med = statistics.median(xs)
    met = med >= t.bound if t.op == ">=" else med <= t.bound
    verdict = INFO if not t.op else PASS if met else MISS
    return Verdict(t, med, min(xs), max(xs), len(xs), key, verdict)


def evaluate(values: Mapping[str, Sequence[float]]) -> tuple[list[Verdict], list[Verdict]]:
    """(the targets' verdicts, the information lines) for one run's rows."""
    return [judge(t, values) for t in TARGETS], [judge(t, values) for t in INFO_LINES]


def markdown(values: Mapping[str, Sequence[float]]) -> list[str]:
    """The report's Targets section (lines of Markdown)."""
    targets, info = evaluate(values)
    out = ["## Targets (issue #19)", "",
           "Each figure: the median over the runs of this run's ratio to its reference (min–max of the per-run "
           "ratios in brackets); `traced event` and the hooks: the ratio of the medians over the invocations. "
           "Rows in the sections below.", "",
           "| target | measured | required | verdict |", "|---|---:|---|---|"]
    for v in targets:
        mark = f"**{v.verdict}**" if v.verdict == MISS else v.verdict
        out.append(f"| {v.target.label} | {v.measured} | {v.need} | {mark} |")
    out += ["", "| also measured (no target) | measured |", "|---|---:|"]
    out += [f"| {v.target.label} | {v.measured} |" for v in info]
    return out


def plain(values: Mapping[str, Sequence[float]]) -> list[str]:
    """The same as text lines, for stderr."""
    targets, info = evaluate(values)
    out = ["Targets (issue #19), medians of this run's ratios:"]
    for v in targets:
        out.append(f"  {v.verdict:<12} {v.target.label}: {v.measured} (required {v.need})")
    for v in info:
        if v.verdict != NOT_MEASURED:
            out.append(f"  {'':<12} {v.target.label}: {v.measured}")
    return out
