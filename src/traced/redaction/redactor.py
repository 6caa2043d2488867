"""Redaction of secrets in event payloads, before a record reaches disk (DESIGN §2).

Three kinds of rule, each kept as data:

- **secret-named keys** (``SECRET_KEY_NAMES``, ``SECRET_SUFFIX_WORDS``,
  ``NON_SECRET_QUALIFIERS``): the value of a key such as ``api_key`` or
  ``Authorization`` becomes ``<redacted:secret-key>``, whatever its type (except
  null, booleans and "", which carry no secret);
- **credential shapes** (``SHAPE_RULES``): a table of named regexes, each starting with
  a literal trigger; only the matching segment of a string becomes ``<redacted:NAME>``;
- **env values**: exact occurrences of the daemon's (constructor) and the client's
  (``with_values``) secret env values become ``<redacted:env-value>``.

Hot path: key verdicts are cached; strings shorter than any match are skipped; ONE
compiled pre-filter per value set (a trie-shaped regex of every rule's triggers and
every env value) is the only scan a clean string pays, and short clean strings are
remembered; rules run only where their trigger was seen; unchanged containers are never
copied, so a clean payload comes back as the very same object. ``python -m
traced.redaction.redactor`` prints µs per payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from ahocorasick_rs import AhoCorasick, MatchKind

from traced.redaction.names import (  # rule 1 lives there (light, for the shell client); re-exported
    _KEY_CACHE,
    NON_SECRET_QUALIFIERS,
    SECRET_ENV_MIN_LEN,
    SECRET_KEY_NAMES,
    SECRET_SUFFIX_WORDS,
    _words,
    is_secret_key,
    secret_env_values,
)

__all__ = [
    "NON_SECRET_QUALIFIERS",
    "SECRET_ENV_MIN_LEN",
    "SECRET_KEY_NAMES",
    "SECRET_SUFFIX_WORDS",
    "Redactor",
    "is_secret_key",
    "secret_env_values",
]

MARKER_PREFIX: Final = "<redacted:"
SECRET_KEY_MARKER: Final = "<redacted:secret-key>"
ENV_VALUE_MARKER: Final = "<redacted:env-value>"

# ---------------------------------------------------------------------------
# Rule 1: secret-named keys
# ---------------------------------------------------------------------------
#
# Names are normalised first (camelCase -> snake, '-', '.', ' ' -> '_', lower case,
# trailing counter digits dropped), so ``X-Api-Key``, ``apiKey`` and ``API_KEY_2`` all
# end in ``api_key``. A name is secret when it is in SECRET_KEY_NAMES, or when its last
# word is in SECRET_SUFFIX_WORDS and the word before it is not a NON-secret qualifier
# for that suffix.
#
# Why qualifiers and not a plain "ends with _key": ``*_KEY`` is THE convention for
# secret env vars (OPENAI_API_KEY, STRIPE_KEY, AWS_SECRET_ACCESS_KEY), yet in data a
# ``*_key`` is just as often structural (primary_key, sort_key, cache_key,
# idempotency_key). We fail closed: an unknown ``<x>_key`` is redacted, and only
# qualifiers known to name a database/cache/lookup/public key pass. Plural ``tokens`` is
# never a suffix word, which keeps usage counters (input_tokens, max_tokens,
# cache_read_tokens) intact; singular ``<x>_token`` has its own allow-list for tokenizer
# and pagination tokens (eos_token, next_token, page_token).


SMALL_NUMBER = 100_000
"""A number under a secret-named key below this is a count or a limit (``MaxKeys: 1000``,
``secrets: 0``, ``cookies: 2``), not a credential; a 6-digit PIN is at or above it."""


def _keeps_value(value: Any) -> bool:
    """Values under a secret key that carry no secret and stay: flags, null, "", small numbers, markers."""
    if value is None or value is True or value is False or value == "":
        return True
    t = type(value)
    if t is int or t is float:
        return bool(-SMALL_NUMBER < value < SMALL_NUMBER)
    return t is str and value.startswith(MARKER_PREFIX)


# ---------------------------------------------------------------------------
# Rule 2: credential shapes
# ---------------------------------------------------------------------------
#
# Every match STARTS with one of its rule's literal ``triggers``. One trie-shaped regex
# of all triggers (and all env values) finds the candidate positions; at each, only the
# rules owning that trigger are tried, anchored (``pattern.match(text, pos)``), in table
# order. That gives the semantics of one big alternation (leftmost match, then the
# earlier rule) at the cost of a literal scan, which is what clean text pays.

Check = Callable[[str, "re.Match[str]"], bool]
"""Validator: (segment to replace, match) -> is it really a credential?"""


@dataclass(frozen=True, slots=True)
class ShapeRule:
    """One credential shape. ``(?P<v>...)`` in ``pattern`` marks the part to replace."""

    name: str
    """Marker name: ``<redacted:NAME>``."""
    pattern: str
    """Regex; every match starts with one of ``triggers`` (lookbehinds may peek before)."""
    triggers: tuple[str, ...]
    check: Check | None = None
    """Extra validation of a match, for shapes that English words can take."""


# Start of a token: the char before must not continue a word ('task-…', 'x_ghp_…').
_LB: Final = r"(?<![A-Za-z0-9_\-])"
_LB_WORD: Final = r"(?<![A-Za-z0-9_])"
_B64URL: Final = r"[A-Za-z0-9_\-]"
_DIGIT: Final = re.compile(r"[0-9]")
_NAME_BEFORE: Final = re.compile(r"[A-Za-z0-9_]*\Z")


def _has_digit(segment: str, _m: re.Match[str]) -> bool:
    return _DIGIT.search(segment) is not None


_AUTH_HEADER_BEFORE: Final = re.compile(r"""authorization["']?\s*[:=]\s*["']?\Z""", re.I)


def _in_auth_header(m: re.Match[str]) -> bool:
    start = m.start()
    return _AUTH_HEADER_BEFORE.search(m.string, max(0, start - 24), start) is not None


def _is_high_entropy(segment: str, min_len: int) -> bool:
    """Token-like: long enough, and a digit or mixed case ('instrument' is neither)."""
    if len(segment) < min_len:
        return False
    return _DIGIT.search(segment) is not None or not (segment.islower() or segment.isupper())


def _is_bearer_token(segment: str, m: re.Match[str]) -> bool:
    """After ``Authorization:`` anything is the credential; in free text ('the bearer
    2024-05-01 date') only a long token-like word is."""
    if _in_auth_header(m):
        return not _is_placeholder(segment)
    return _is_high_entropy(segment, 16)


def _is_header_credential(segment: str, _m: re.Match[str]) -> bool:
    return not _is_placeholder(segment) and _is_high_entropy(segment, 8)


def _is_basic_credential(segment: str, _m: re.Match[str]) -> bool:
    """``Basic`` + base64 of a printable ``user:password`` ('basic features' is not)."""
    try:
        text = base64.b64decode(segment, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in text and text.isprintable()


_PLACEHOLDERS: Final = _words("pass password passwd secret pwd changeme example token")


def _is_placeholder(value: str) -> bool:
    """'$TOKEN', '<password>', '{pw}', '%s', '****', 'pass', '", "': no secret in it."""
    v = value.strip("\"'")
    return (
        not any(c.isalnum() for c in v)
        or v.startswith(("$", "<", "{", "%"))
        or set(v) <= {"*", "x", "X", "."}
        or v.lower() in _PLACEHOLDERS
    )


def _is_url_password(segment: str, _m: re.Match[str]) -> bool:
    return not _is_placeholder(segment)


def _is_secret_assignment(segment: str, m: re.Match[str]) -> bool:
    """``NAME=value`` where NAME (read back from the match start) is a secret name."""
    start = m.start()
    head = _NAME_BEFORE.search(m.string, max(0, start - 128), start)
    name = (head.group() if head else "") + m.group().split("=", 1)[0]
    return is_secret_key(name) and not _is_placeholder(segment)


SHAPE_RULES: Final[tuple[ShapeRule, ...]] = (
    ShapeRule(
        "private-key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",  # a cut-off block too
        ("-----BEGIN",),
    ),
    ShapeRule(
        "github-token",
        _LB + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    ShapeRule("gitlab-token", _LB + r"glpat-" + _B64URL + "{20,}", ("glpat-",)),
    ShapeRule("anthropic-key", _LB + r"sk-ant-" + _B64URL + "{20,}", ("sk-ant-",)),
    ShapeRule(
        "openai-key",
        _LB + r"sk-(?:proj-|svcacct-|admin-)?" + _B64URL + "{20,}",
        ("sk-",),
        _has_digit,  # 'sk-learn-compatible-estimators' has none
    ),
    ShapeRule(
        "slack-token",
        _LB + r"(?:xox[abposr]|xapp)-[A-Za-z0-9\-]{10,}",
        ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xapp-"),
        _has_digit,  # 'xoxo-hugs-and-kisses' has none
    ),
    ShapeRule(
        "slack-webhook",
        r"(?<=https://)hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,}",
        ("hooks.slack.com/services/",),
    ),
    ShapeRule(
        "stripe-key",
        _LB + r"[spr]k_(?:live|test)_[A-Za-z0-9]{16,}",
        ("sk_live_", "sk_test_", "pk_live_", "pk_test_", "rk_live_", "rk_test_"),
    ),
    ShapeRule("google-api-key", _LB + r"AIza[A-Za-z0-9_\-]{35}", ("AIza",)),
    ShapeRule("huggingface-token", _LB + r"hf_[A-Za-z0-9]{34,}", ("hf_",)),
    ShapeRule("npm-token", _LB + r"npm_[A-Za-z0-9]{36,}", ("npm_",)),
    ShapeRule(
        "aws-access-key-id",
        _LB + r"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        ("AKIA", "ASIA"),
    ),
    ShapeRule(
        "jwt",
        _LB + r"eyJ" + _B64URL + r"{8,}\." + _B64URL + r"{8,}\." + _B64URL + "*",
        ("eyJ",),
    ),
    ShapeRule(
        "bearer-token",
        _LB_WORD + r"(?:Bearer|bearer|BEARER)[ \t]+(?P<v>[A-Za-z0-9._~+/\-]+=*)",
        ("Bearer", "bearer", "BEARER"),
        _is_bearer_token,
    ),
    ShapeRule(
        "basic-auth",
        _LB_WORD + r"(?:Basic|basic|BASIC)[ \t]+(?P<v>[A-Za-z0-9+/]{8,}={0,2})"
        r"(?![A-Za-z0-9+/=])",
        ("Basic", "basic", "BASIC"),
        _is_basic_credential,
    ),
    ShapeRule(
        # 'Authorization: Token abc123', 'Authorization: <raw>'; Bearer/Basic have rules.
        "auth-header",
        _LB_WORD + r"""(?:Authorization|authorization|AUTHORIZATION)["']?[ \t]*[:=][ \t]*"""
        r"""["']?(?!(?:Bearer|bearer|BEARER|Basic|basic|BASIC)[ \t])"""
        r"""(?:[A-Za-z][A-Za-z0-9_\-]*[ \t]+)?(?P<v>[^\s"',;]+)""",
        ("Authorization", "authorization", "AUTHORIZATION"),
        _is_header_credential,
    ),
    ShapeRule(
        # scheme://user:PASSWORD@host -> only the password; a ':port/' never has an '@'.
        "url-password",
        r"(?<=[A-Za-z0-9])://[^\s/?#@:]*:(?P<v>[^\s/?#@]+)@",
        ("://",),
        _is_url_password,
    ),
    ShapeRule(
        # Shell / .env assignment of a secret-named var: `GITHUB_TOKEN=abc123 gh ...`.
        # The match starts at the suffix word; the check reads the full name back.
        "secret-assignment",
        r"(?:TOKEN|SECRET|KEY|PASSWORD|PASSWD|PASSPHRASE|AUTH|PAT)"
        r"""=(?P<v>"[^"\n]*"|'[^'\n]*'|[^\s"'`;&|()]+)""",
        ("TOKEN=", "SECRET=", "KEY=", "PASSWORD=", "PASSWD=", "PASSPHRASE=", "AUTH=", "PAT="),
        _is_secret_assignment,
    ),
)
"""The credential shapes, in priority order (earlier wins at the same position)."""

_MIN_LEN: Final = 7  # shortest possible match ('A_KEY=x', 'a://:p@'); env values are >= 8

_RuleEntry = tuple[re.Pattern[str], str, bool, Check | None]
"""(pattern, marker, replace only group 'v'?, check)."""

_COMPILED_RULES: Final[tuple[_RuleEntry, ...]] = tuple(
    (re.compile(r.pattern), f"{MARKER_PREFIX}{r.name}>", "(?P<v>" in r.pattern, r.check) for r in SHAPE_RULES
)


def _trie(words: Iterable[str]) -> tuple[str, list[str]]:
    """(regex matching any of ``words`` shaped as a trie, the words it can return).

    Only presence matters, so a word subsumes its extensions ('sk-' covers 'sk-ant-').
    sre scans for the first characters with a charset, then follows one branch.
    """
    trie: dict[str, Any] = {}
    for word in sorted(words, key=len):
        node = trie
        for ch in word:
            if "" in node:
                break
            node = node.setdefault(ch, {})
        else:
            node.clear()
            node[""] = {}
    kept: list[str] = []

    def emit(node: dict[str, Any], prefix: str) -> str:
        if "" in node:
            kept.append(prefix)
            return ""
        alts = [re.escape(ch) + emit(sub, prefix + ch) for ch, sub in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie, "").removeprefix("(?:").removesuffix(")"), kept


# ---------------------------------------------------------------------------
# Rule 3: env values
# ---------------------------------------------------------------------------


def _usable_values(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v for v in values if type(v) is str and len(v) >= SECRET_ENV_MIN_LEN)


_CLEAN_MAX_LEN: Final = 48
_CLEAN_CAP: Final = 1024


@dataclass(frozen=True, slots=True)
class _Compiled:
    clean_check: AhoCorasick
    """Aho-Corasick over the same words as ``prefilter``: the one scan clean text pays.
    (sre tries the trie's branches at nearly every position, ~46 ns/char; this is ~6x faster.)"""
    prefilter: re.Pattern[str]
    """Trie of every shape trigger and every env value: finds the candidate positions."""
    hits: dict[str, tuple[_RuleEntry, ...]]
    """Word the pre-filter returned -> the shape rules that may start there, in order."""
    env: AhoCorasick | None
    """The env values (leftmost-longest matches), or None: any number and length of values,
    no regex built from them."""
    env_values: tuple[str, ...]
    clean: set[str]
    """Short strings that already passed the pre-filter clean ('Bash', model names)."""


def _shape_prefilter() -> tuple[re.Pattern[str], list[str], dict[str, tuple[_RuleEntry, ...]]]:
    """The trie regex over the shape rules' triggers (short literals), once per process."""
    regex, kept = _trie({t for rule in SHAPE_RULES for t in rule.triggers})
    hits = {
        word: tuple(
            compiled
            for rule, compiled in zip(SHAPE_RULES, _COMPILED_RULES, strict=True)
            if any(t.startswith(word) for t in rule.triggers)
        )
        for word in kept
    }
    return re.compile(regex), kept, hits


_PREFILTER, _TRIGGERS, _HITS = _shape_prefilter()


@lru_cache(maxsize=256)
def _compile(values: frozenset[str]) -> _Compiled:
    """The matchers for one set of env values. Aho-Corasick automata only: building them is
    linear in the values' total length (20,000 values: ~15 ms), whatever their number or size."""
    ordered = tuple(sorted(values, key=lambda v: (-len(v), v)))
    env = AhoCorasick(list(ordered), matchkind=MatchKind.LeftmostLongest) if ordered else None
    return _Compiled(AhoCorasick([*_TRIGGERS, *ordered]), _PREFILTER, _HITS, env, ordered, set())


# ---------------------------------------------------------------------------
# The redactor
# ---------------------------------------------------------------------------


class Redactor:
    """Applies the three rules to JSON-like payloads; cheap to derive per connection."""

    __slots__ = ("_c", "_values", "enabled")

    def __init__(self, values: Iterable[str] = (), enabled: bool = True) -> None:
        """``values``: the daemon's secret env values; ``enabled=False`` redacts nothing."""
        self.enabled = enabled
        self._values = _usable_values(values)
        self._c = _compile(self._values)

    def with_values(self, values: Iterable[str]) -> Redactor:
        """A Redactor that also redacts ``values`` (a client's, from ``hello``).

        ``self`` is untouched; compiled patterns are cached per value set.
        """
        extra = _usable_values(values) - self._values
        if not extra:
            return self
        return Redactor(self._values | extra, self.enabled)

    def redact_text(self, text: str) -> tuple[str, int]:
        """Redact env values and credential shapes in one string: (text, redactions)."""
        if not self.enabled:
            return text, 0
        return self._text(text)

    def redact(self, payload: Any) -> tuple[Any, int]:
        """Redact a JSON-like payload without mutating it.

        Returns (redacted copy, redactions), or (``payload`` itself, 0) when nothing
        matched; only the containers on the path to a change are copied.
        """
        if not self.enabled:
            return payload, 0
        return self._walk(payload)

    def _text(self, text: str) -> tuple[str, int]:
        if len(text) < _MIN_LEN or text in self._c.clean:
            return text, 0
        if not self._c.clean_check.find_matches_as_indexes(text):
            self._remember_clean(text)
            return text, 0
        n = 0
        env = self._c.env
        if env is not None:
            found = env.find_matches_as_indexes(text)
            if found:
                parts: list[str] = []
                pos = 0
                for _i, start, end in found:
                    parts.append(text[pos:start])
                    parts.append(ENV_VALUE_MARKER)
                    pos = end
                parts.append(text[pos:])
                text, n = "".join(parts), len(found)
        m = self._c.prefilter.search(text)
        if m is None:
            return text, n
        text, k = self._shapes(text, m)
        return text, n + k

    def _shapes(self, text: str, m: re.Match[str] | None) -> tuple[str, int]:
        """Replace credential shapes, trying the rules of each pre-filter hit ``m``."""
        search = self._c.prefilter.search
        hits = self._c.hits
        out: list[str] = []
        pos = count = 0
        while m is not None:
            at = m.start()
            for pattern, marker, inner, check in hits[m.group()]:
                r = pattern.match(text, at)
                if r is None:
                    continue
                s, e = r.span("v") if inner else r.span()
                segment = text[s:e]
                # Not a credential, or already holds a marker (keeps redaction idempotent).
                if (check is not None and not check(segment, r)) or MARKER_PREFIX in segment:
                    continue
                out.append(text[pos:at])
                if s > at:  # the kept head ('://USER:') may hold a credential too
                    head = text[at:s]
                    head, k = self._shapes(head, search(head, 1))
                    out.append(head)
                    count += k
                out.append(marker)
                pos = e
                count += 1
                break
            m = search(text, max(at + 1, pos))
        if not count:
            return text, 0
        out.append(text[pos:])
        return "".join(out), count

    def _remember_clean(self, text: str) -> None:
        if len(text) <= _CLEAN_MAX_LEN:
            clean = self._c.clean
            if len(clean) >= _CLEAN_CAP:
                clean.clear()
            clean.add(text)

    def _walk(self, obj: Any) -> tuple[Any, int]:
        t = type(obj)
        if t is str:
            return self._text(obj)
        if t is dict:
            return self._dict(obj)
        if t is list:
            return self._list(obj)
        return obj, 0

    # _dict/_list inline the clean-string test (too short, or no pre-filter hit) and the
    # key-cache lookup: most values are clean, and a call per value would double the cost.

    def _dict(self, obj: dict[str, Any]) -> tuple[Any, int]:
        copy: dict[str, Any] | None = None
        total = 0
        clean = self._c.clean
        key_cache = _KEY_CACHE
        for key, value in obj.items():
            secret = key_cache.get(key)
            if secret is None:
                secret = type(key) is str and is_secret_key(key)
            if secret:
                if _keeps_value(value):
                    continue
                new: Any = SECRET_KEY_MARKER
                n = 1
            else:
                t = type(value)
                if t is str:
                    if len(value) < _MIN_LEN or value in clean:
                        continue
                    new, n = self._text(value)
                elif t is dict:
                    new, n = self._dict(value)
                elif t is list:
                    new, n = self._list(value)
                else:
                    continue
                if not n:
                    continue
            if copy is None:
                copy = dict(obj)
            copy[key] = new
            total += n
        return (obj if copy is None else copy), total

    def _list(self, obj: list[Any]) -> tuple[Any, int]:
        copy: list[Any] | None = None
        total = 0
        clean = self._c.clean
        for i, value in enumerate(obj):
            t = type(value)
            if t is str:
                if len(value) < _MIN_LEN or value in clean:
                    continue
                new, n = self._text(value)
            elif t is dict:
                new, n = self._dict(value)
            elif t is list:
                new, n = self._list(value)
            else:
                continue
            if n:
                if copy is None:
                    copy = list(obj)
                copy[i] = new
                total += n
        return (obj if copy is None else copy), total


def _bench() -> None:
    """Microbenchmark: ``python -m traced.redaction.redactor`` prints µs per typical payload.

    Each kind runs over 1000 variants whose commands, summaries and call ids differ
    (as in a real session), so only genuinely recurring strings hit the clean cache.
    """
    env = ["s3cr3t-" + "q" * 20, "ghp_" + "A1b2C3d4" * 4 + "xyzw", "hunter2hunter2"]
    redactor = Redactor(env).with_values(["client-secret-value-42"])

    def tool_call(i: int) -> Any:
        return {
            "tool": "Bash",
            "args": {
                "command": f"git log --oneline -{i} && ls -la src/traced/mod{i}.py",
                "description": f"Show the last {i} commits",
            },
            "call_id": f"toolu_01HXYZ3K9P2QW8E7R6T{i:08d}",
            "kind": "tool",
        }

    def llm_call(i: int) -> Any:
        return {
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "usage": {"input_tokens": 1234 + i, "output_tokens": 567, "cache_read_tokens": i},
            "cost_usd": 0.0123,
            "latency_ms": 842 + i,
            "finish_reason": "end_turn",
        }

    def tool_result(i: int) -> Any:
        return {
            "tool": "Read",
            "ok": True,
            "duration_ms": 12,
            "result_summary": f"Read {i} lines of src/traced/session.py; the basic "
            "flow opens the journal, then appends records.",
            "call_id": f"toolu_01HXYZ3K9P2QW8E7R6T{i:08d}",
        }

    def tool_call_secret(i: int) -> Any:
        return {
            "tool": "Bash",
            "args": {
                "command": f"curl -H 'Authorization: Bearer abc123def456ghi{i:06d}' https://api.example.com/v1/items"
            },
            "call_id": f"toolu_01HXYZ3K9P2QW8E7R6T{i:08d}",
        }

    kinds = {
        "tool_call": tool_call,
        "llm_call": llm_call,
        "tool_result": tool_result,
        "tool_call+secret": tool_call_secret,
    }
    for label, make in kinds.items():
        batch = [make(i) for i in range(1000)]
        size = sum(len(json.dumps(p)) for p in batch) // len(batch)

        def run(batch: list[Any] = batch) -> None:
            for p in batch:
                redactor.redact(p)

        import timeit

        best = min(timeit.repeat(run, number=10, repeat=7)) / (10 * len(batch))
        print(f"{label:18} {size:4d} B  {best * 1e6:6.2f} µs/payload")


if __name__ == "__main__":
    _bench()
