# ruff: noqa: RUF001
"""scripts/bench's verdicts on issue #19's targets (bench/targets.py), from rows of one run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "targets.py"
    spec = importlib.util.spec_from_file_location("bench_targets", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_targets"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


T = _load()


def _verdicts(values: dict[str, list[float]]) -> dict[str, tuple[str, float]]:
    targets, info = T.evaluate(values)
    return {v.target.label: (v.verdict, round(v.value, 4)) for v in (*targets, *info)}


def _label(prefix: str) -> str:
    found = [t.label for t in (*T.TARGETS, *T.INFO_LINES) if t.label.startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


def test_a_ratio_is_the_median_of_the_per_run_ratios() -> None:
    # run by run 0.7, 0.9, 0.9 (the 3rd run drifted: both rows slower): median 0.9, whereas the
    # ratio of the medians would be 70 / 100
    values = {"pipe200.c": [70.0, 90.0, 45.0], "pipe200.mini": [100.0, 100.0, 50.0]}
    v = _verdicts(values)
    assert v[_label("1. pipelined 200 B")] == ("PASS", 0.9)
    targets, _ = T.evaluate(values)
    first = targets[0]
    assert (first.low, first.high, first.runs, first.key) == (0.7, 0.9, 3, "pipe200.c")
    assert first.measured == "0.90× (0.70–0.90)"
    assert first.need == "≥ 0.80×"


def test_below_the_bound_is_a_miss_and_a_missing_row_or_reference_is_not_measured() -> None:
    values = {"pipe2000.c": [79.0, 79.0, 79.0], "pipe2000.mini": [100.0, 100.0, 100.0],
              "ack16.c": [50.0, 50.0, 50.0], "ack16.mini": [],
              "ack1.c.p50": [130.0, 110.0, 125.0], "ack1.mini.p50": [100.0, 100.0, 100.0]}
    v = _verdicts(values)
    assert v[_label("1. pipelined 2 KB")] == ("MISS", 0.79)
    assert v[_label("2. acked, C client, 16 conns")][0] == "not measured"
    assert v[_label("2. acked, C client, 1 conn")] == ("MISS", 1.25)
    assert v[_label("4. events round-robin")][0] == "not measured"


def test_durable_ratio_to_fdatasync_and_p99_bound_in_ms() -> None:
    values = {"dur.c": [12_000.0, 13_000.0, 11_000.0], "dur.fsync1": [2_000.0, 2_000.0, 2_000.0],
              "dur.c.p99": [4_000.0, 6_000.0, 4_500.0]}
    v = _verdicts(values)
    assert v[_label("3. `fsync=always`, C client, 64 conns on 64 sessions: throughput")] == ("PASS", 6.0)
    p99 = _label("3. `fsync=always`, C client, 64 conns on 64 sessions: ack p99")
    assert v[p99] == ("PASS", 4.5)
    targets, _ = T.evaluate(values)
    line = next(t for t in targets if t.target.label == p99)
    assert (line.measured, line.need) == ("4.50 ms (4.00–6.00)", "≤ 5.00 ms")


def test_cli_rows_compare_medians_and_hook_rows_are_looked_up_by_name() -> None:
    # invocations, not runs: the ratio of the medians (30 / 15), not the median of the
    # index-wise ratios (2.04), even with as many invocations of each
    values = {"cli.event": [28.0, 29.0, 31.0, 90.0], "cli.py": [15.0, 16.0, 14.0, 15.0],
              "cli.hook.py": [15.0, 15.0, 14.0], "cli.hook": [36.0, 37.0, 38.0], "cli_hook_codex": [45.0, 44.0, 46.0]}
    v = _verdicts(values)
    assert v[_label("6. `traced event`")] == ("PASS", 2.0)
    assert v[_label("6. `traced hook claude-code`")] == ("PASS", 2.4667)
    assert v[_label("6. `traced hook codex`")] == ("MISS", 3.0)
    assert v[_label("6. `traced hook gemini`")][0] == "not measured"
    # a row named for the hook wins over the older generic row
    values["cli_hook_claude-code"] = [50.0]
    assert _verdicts(values)[_label("6. `traced hook claude-code`")] == ("MISS", 3.3333)


def test_redaction_rows_are_ratios_already() -> None:
    v = _verdicts({"redact200": [0.85, 0.9, 0.7], "redact2000": [0.75, 0.7, 0.79]})
    assert v[_label("5. redaction on / off, 200 B")] == ("PASS", 0.85)
    assert v[_label("5. redaction on / off, 2 KB")] == ("MISS", 0.75)


def test_information_lines_have_no_verdict() -> None:
    v = _verdicts({"pipe200.c": [100.0, 90.0, 110.0], "pipe200.rsyslog": [500.0, 450.0, 500.0],
                   "shard.1": [70.0, 70.0, 70.0], "shard.2": [126.0, 112.0, 140.0]})
    assert v[_label("far mark: pipelined 200 B")] == ("info", 0.2)
    assert v[_label("multi-core prototype")] == ("info", 1.8)
    assert v[_label("event loop: pipelined 200 B")][0] == "not measured"


@pytest.mark.parametrize("fmt", ["markdown", "plain"])
def test_every_target_is_printed_once_with_its_verdict(fmt: str) -> None:
    values = {"pipe200.c": [80.0], "pipe200.mini": [100.0], "pipe2000.c": [70.0], "pipe2000.mini": [100.0]}
    text = "\n".join(getattr(T, fmt)(values))
    for t in T.TARGETS:
        assert text.count(t.label) == 1, t.label
    if fmt == "markdown":
        assert "| 1. pipelined 200 B, C client: traced / minimal Python server | 0.80× | ≥ 0.80× | PASS |" in text
        assert "| 0.70× | ≥ 0.80× | **MISS** |" in text
    else:
        assert "  PASS         1. pipelined 200 B" in text
        assert "  MISS         1. pipelined 2 KB" in text
