"""The redaction corpus (tests/redaction/corpus.py), case by case and as a score.

Per case: the output is exactly the expected one (markers, boundaries, untouched text), and
a near-miss comes back as the very same object. As a score: precision and recall, printed,
with the issue #14 thresholds.

- recall: credentials whose secrets are all gone / credentials;
- precision: credentials redacted / (credentials redacted + near-misses changed).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.redaction.corpus import CASES, CREDENTIALS, NEAR_MISSES, REDACTOR, Case
from traced.redaction.redactor import CONTEXT_RULES, SHAPE_RULES

MIN_CASES = 150
MIN_PRECISION = 0.99
MIN_RECALL = 0.95


def _strings(obj: Any) -> str:
    """Every string (and key) in ``obj``, NUL-separated: where a secret could survive."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\x00".join(f"{k}\x00{_strings(v)}" for k, v in obj.items())
    if isinstance(obj, list):
        return "\x00".join(_strings(v) for v in obj)
    return repr(obj)


def _leaked(case: Case, out: Any) -> list[str]:
    text = _strings(out)
    return [s for s in case.secrets if s in text]


def test_case_names_are_unique() -> None:
    dupes = [name for name, n in Counter(c.name for c in CASES).items() if n > 1]
    assert not dupes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case(case: Case) -> None:
    out, n = REDACTOR.redact(case.payload)
    if case.miss:  # a documented miss: if this starts failing, the miss is fixed (move it out)
        assert (out, n) == (case.payload, 0), f"now redacted: {out!r}"
    elif case.is_credential:
        assert not _leaked(case, out)
        assert out == case.expected
        assert n >= len(case.secrets) or n >= 1
    else:
        assert out is case.payload and n == 0, out


def score(redactor: Any, cases: list[Case]) -> tuple[float, float, int, int]:
    """(precision, recall, credentials redacted, near-misses changed) of ``redactor`` on ``cases``."""
    found = changed = 0
    credentials = [c for c in cases if c.is_credential]
    for case in cases:
        out, n = redactor.redact(case.payload)
        if case.is_credential:
            found += n > 0 and not _leaked(case, out)
        else:
            changed += out != case.payload
    precision = found / (found + changed) if found + changed else 0.0
    recall = found / len(credentials) if credentials else 0.0
    return precision, recall, found, changed


def test_corpus_score(capsys: pytest.CaptureFixture[str]) -> None:
    precision, recall, found, changed = score(REDACTOR, CASES)
    exact = sum(REDACTOR.redact(c.payload)[0] == c.expected for c in CASES if not c.miss)
    with capsys.disabled():
        print(
            f"\nredaction corpus: precision={precision:.3f} recall={recall:.3f} "
            f"({len(CASES)} cases: {len(CREDENTIALS)} credentials, {len(NEAR_MISSES)} near-misses; "
            f"{found} credentials redacted, {changed} near-misses changed, "
            f"{exact}/{len(CASES) - sum(bool(c.miss) for c in CASES)} outputs exact; "
            f"documented misses: {', '.join(c.name for c in CASES if c.miss) or 'none'})"
        )
    assert len(CASES) >= MIN_CASES
    assert len(CREDENTIALS) >= 90 and len(NEAR_MISSES) >= 60
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL


def test_every_rule_has_a_credential_in_the_corpus() -> None:
    markers = {f"<redacted:{rule.name}>" for rule in SHAPE_RULES}
    markers |= {f"<redacted:{name.split('/')[0]}>" for name in CONTEXT_RULES}
    markers |= {"<redacted:secret-key>", "<redacted:env-value>", "<redacted:auth-header>", "<redacted:cookie>"}
    covered = {m for c in CREDENTIALS if not c.miss for m in markers if m in _strings(c.expected)}
    assert covered == markers, markers - covered


def test_every_credential_names_its_source() -> None:
    assert all(c.source for c in CASES if c.is_credential)
