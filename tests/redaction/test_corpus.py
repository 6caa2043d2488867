"""The redaction corpus (tests/redaction/corpus.py), case by case and as a score.

Per case: the output is exactly the expected one (markers, boundaries, untouched text), and
a near-miss comes back as the very same object. As a score: precision and recall, printed,
with the issue #14 thresholds.

- recall: credentials whose secrets are all gone / credentials;
- precision: credentials redacted / (credentials redacted + near-misses changed).
"""

from __future__ import annotations

import json
import re
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


# --- the corpus as agents' tools print it -------------------------------------------------------
# Tools hand text on escaped once more (JSON in a string: an MCP result, ``gh api``, a Codex
# ``function_call_output``), so every newline before a name or a token is the two characters
# ``\n``, glued to it; and terminals colour words (``ESC[1;32m``), raw or as ``\u001b`` in JSON
# text. A secret must be gone from every credential of the corpus in each form, and a near-miss
# escaped once more must come back unchanged. Sources: gitleaks/gitleaks#1710 (secrets next to
# an escaped ``\n`` not detected), excitedjs/dreamux#412 (a ``\n`` serialized into JSON hid every
# line of a ``.env`` but the first), Mininglamp-OSS/openclaw-channel-octo#154 (prefixes missed
# when a word character is glued before them), Suryansh-23/secretty#1 (secrets across ANSI escapes).


def _values(obj: Any, f: Any) -> Any:
    """``obj`` with ``f`` applied to every string value (keys unchanged)."""
    if isinstance(obj, str):
        return f(obj)
    if isinstance(obj, dict):
        return {k: _values(v, f) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_values(v, f) for v in obj]
    return obj


def _escaped(s: str) -> str:
    return json.dumps(s)[1:-1]


def _coloured(s: str) -> str:
    return re.sub(r"(\S+)", "\x1b[1;32m\\1\x1b[0m", s)


_FORMS = {
    "escaped-once-more": _escaped,
    "terminal-colours": _coloured,
    "colours-in-json-text": lambda s: _escaped(_coloured(s)),
    "tput-colours": lambda s: re.sub(r"(\S+)", "\x1b[32m\\1\x1b(B\x1b[m", s),  # tput sgr0 on xterm
    "escaped-twice": lambda s: _escaped(_escaped(s)),
}
_LIVE = [c for c in CREDENTIALS if not c.miss]


@pytest.mark.parametrize("form", _FORMS)
def test_every_credential_is_redacted_as_tools_print_it(form: str) -> None:
    leaked = {}
    for case in _LIVE:
        out, n = REDACTOR.redact(_values(case.payload, _FORMS[form]))
        if _leaked(case, out) or n == 0:
            leaked[case.name] = out
    assert leaked == {}
    assert len(_LIVE) >= 130


def test_every_near_miss_escaped_once_more_is_kept() -> None:
    changed = {}
    for case in NEAR_MISSES:
        payload = _values(case.payload, _escaped)
        out, n = REDACTOR.redact(payload)
        if out != payload or n:
            changed[case.name] = out
    assert changed == {}
