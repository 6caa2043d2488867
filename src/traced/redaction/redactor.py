"""Redaction of secrets in event payloads, before a record reaches disk (DESIGN §2).

Four kinds of rule, each kept as data:

- **secret-named keys** (``names``: ``SECRET_KEY_NAMES``, ``SECRET_SUFFIX_WORDS``,
  ``NON_SECRET_QUALIFIERS``): the value of a key such as ``api_key`` or ``Authorization``
  becomes ``<redacted:secret-key>``, whatever its type (except null, booleans, "" and small
  numbers, which carry no secret); under a bare plural such as ``cookies`` a MAPPING's values
  are secrets (``SECRET_CONTAINER_NAMES``);
- **credential shapes** (``SHAPE_RULES``): self-delimiting tokens with a literal prefix
  (``ghp_``, ``AKIA``, ``-----BEGIN ... PRIVATE KEY-----``): only the token becomes
  ``<redacted:NAME>``;
- **context rules** (``CONTEXT_RULES``): a secret named in the text itself: ``NAME=value``,
  ``"name": "value"``, ``name: value``, ``--name value``, ``?name=value&`` for any secret
  NAME (the key rule's names, read back from the text), ``Authorization:`` headers,
  ``Bearer``/``Basic`` credentials, ``scheme://user:PASSWORD@host``, ``mysql -pPASSWORD``;
- **env values**: exact occurrences of the daemon's (constructor) and the client's
  (``with_values``) secret env values become ``<redacted:env-value>``.

Design (the hot path): every trigger of every rule is a short literal, and rules only run
where one was seen. A payload is scanned ONCE: its strings are joined, encoded, folded
(``_FOLD``: A-Z -> a-z, 0-9 -> 0, so one literal covers every case and digit) and handed to
ONE Aho-Corasick automaton of at most 64 literals (``_TEDDY_MAX``), which the automaton
library runs as a SIMD (Teddy) search; the triggers are ordered so that similar literals
share a Teddy bucket (``_bucket_order``). A clean payload costs that scan and nothing else,
and comes back as the very same object. Only strings with a hit are looked at again, only at
their hits (anchored regexes, a few string operations), and only the containers on the path
to a change are copied. ``python -m traced.redaction.redactor`` prints µs per payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import string
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any, Final

from ahocorasick_rs import AhoCorasick, BytesAhoCorasick, MatchKind

from traced.redaction.names import (  # rule 1 lives there (light, for the shell client); re-exported
    COUNT_WORDS,
    NON_SECRET_QUALIFIERS,
    SECRET_CONTAINER_NAMES,
    SECRET_ENV_MIN_LEN,
    SECRET_KEY_NAMES,
    SECRET_SUFFIX_WORDS,
    _normalize_key,
    _words,
    is_secret_key,
    secret_env_values,
)

__all__ = [
    "CONTEXT_RULES",
    "COUNT_WORDS",
    "NON_SECRET_QUALIFIERS",
    "SECRET_CONTAINER_NAMES",
    "SECRET_ENV_MIN_LEN",
    "SECRET_KEY_NAMES",
    "SECRET_SUFFIX_WORDS",
    "SHAPE_RULES",
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
# and pagination tokens (eos_token, next_token, page_token). A count word before the last
# word (``max_keys``, ``num_keys``, ``MaxKeys``) or a bare plural (``secrets``, ``cookies``)
# names a count, a limit or a list of names, never a secret.


SMALL_NUMBER = 100_000
"""A number under a secret-named key below this is a count or a limit (``secret: 0``,
``password_retries: 3``), not a credential; a 6-digit PIN is at or above it. The same holds
for an unquoted integer after a secret name in text (``"api_key": 0``)."""


def _keeps_value(value: Any) -> bool:
    """Values under a secret key that carry no secret and stay: flags, null, "", small numbers, markers."""
    if value is None or value is True or value is False or value == "":
        return True
    t = type(value)
    if t is int or t is float:
        return bool(-SMALL_NUMBER < value < SMALL_NUMBER)
    return t is str and value.startswith(MARKER_PREFIX)


_PLAIN: Final = 0
_SECRET: Final = 1
_CONTAINER: Final = 2
_KEY_KINDS: dict[Any, int] = {}
_KEY_KINDS_MAX: Final = 8192


def _key_kind(key: Any) -> int:
    """_SECRET (a secret name), _CONTAINER (``cookies``, ``secrets``: its mapping holds secrets) or _PLAIN."""
    kind = _PLAIN
    if type(key) is str:
        if is_secret_key(key):
            kind = _SECRET
        elif _normalize_key(key) in SECRET_CONTAINER_NAMES:
            kind = _CONTAINER
    if len(_KEY_KINDS) >= _KEY_KINDS_MAX:
        _KEY_KINDS.clear()
    _KEY_KINDS[key] = kind
    return kind


def _container_changes(mapping: dict[Any, Any]) -> bool:
    for value in mapping.values():
        if not _keeps_value(value):
            return True
    return False


def _redact_container(mapping: dict[Any, Any]) -> tuple[dict[Any, Any], int]:
    """``{"sid": "abc", "n": 2}`` under ``cookies``: every value is a secret, except flags and counts."""
    out = dict(mapping)
    n = 0
    for key, value in mapping.items():
        if not _keeps_value(value):
            out[key] = SECRET_KEY_MARKER
            n += 1
    return out, n


# ---------------------------------------------------------------------------
# Triggers: the one scan
# ---------------------------------------------------------------------------
#
# Text is scanned folded: ASCII letters lower-cased and every digit turned into '0', so one
# literal covers every spelling ('token' finds TOKEN, Token and token; 'sk0' finds SK7...).
# A trigger is at least 3 bytes long (Teddy fingerprints the first 3) and, once folded,
# contains no upper-case letter and no digit but '0'.

_FOLD: Final = bytes.maketrans(
    string.ascii_uppercase.encode() + string.digits.encode(),
    string.ascii_lowercase.encode() + b"0" * 10,
)
_TEDDY_MAX: Final = 64
"""The automaton library runs a SIMD (Teddy) search for at most 64 literals, and a byte-wise
automaton (3-4x slower) beyond; env values share the budget left by the triggers."""
_MIN_LEN: Final = 7
"""Shorter strings are never scanned: no credential, trigger context or env value fits."""


def _fold(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass").translate(_FOLD)


# ---------------------------------------------------------------------------
# Rule 2: credential shapes
# ---------------------------------------------------------------------------

Check = Callable[[str, "re.Match[str]"], bool]
"""Validator: (segment to replace, match) -> is it really a credential?"""


@dataclass(frozen=True, slots=True)
class ShapeRule:
    """One credential shape. ``(?P<v>...)`` in ``pattern`` marks the part to replace."""

    name: str
    """Marker name: ``<redacted:NAME>``."""
    pattern: str
    """Regex, tried (anchored) where the token starts; lookbehinds may peek before."""
    triggers: tuple[str, ...]
    """Folded literals the scan looks for; the token starts ``back`` characters before one."""
    check: Check | None = None
    """Extra validation of a match, for shapes that English words can take."""
    back: int = 0
    lead: str = ""
    """Characters the token may have any number of (up to 16) before ``back`` (Telegram's bot id)."""


# Start of a token: the char before must not continue a word ('task-…', 'x_ghp_…').
_LB: Final = r"(?<![A-Za-z0-9_\-])"
_LB_WORD: Final = r"(?<![A-Za-z0-9_])"
_END: Final = r"(?![A-Za-z0-9_\-])"
_DIGIT: Final = re.compile(r"[0-9]")


def _has_digit(segment: str, _m: re.Match[str]) -> bool:
    return _DIGIT.search(segment) is not None


SHAPE_RULES: Final[tuple[ShapeRule, ...]] = (
    ShapeRule(
        "private-key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",  # a cut-off block too
        ("-----begin",),
    ),
    ShapeRule(
        "github-token", _LB + r"gh[pousr]_[A-Za-z0-9]{36,}", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")
    ),
    ShapeRule("github-token", _LB + r"github_pat_[A-Za-z0-9_]{22,}", ("_pat",), back=6),
    ShapeRule(
        "gitlab-token", _LB + r"gl(?:pat|dt|rt|ptt|cbt|ft|soat|oas)-[A-Za-z0-9_\-]{20,}", ("glpat-", "gldt-", "glrt-")
    ),
    ShapeRule("anthropic-key", _LB + r"sk-ant-[A-Za-z0-9_\-]{20,}", ("sk-",)),
    ShapeRule(
        "openai-key",
        _LB + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
        ("sk-",),
        _has_digit,  # 'sk-learn-compatible-estimators' has none
    ),
    ShapeRule(
        "slack-token",
        _LB + r"(?:xox[abposre]|xapp)[.\-][A-Za-z0-9.\-]{10,}",
        ("xox", "xapp-"),
        _has_digit,  # 'xoxo-hugs-and-kisses' has none
    ),
    ShapeRule(
        "slack-webhook",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,}",
        ("hooks.slack.com",),
    ),
    ShapeRule("stripe-key", _LB + r"[sr]k_(?:live|test|prod)_[A-Za-z0-9]{10,}", ("k_live_", "k_test_"), back=1),
    ShapeRule("stripe-key", _LB + r"whsec_[A-Za-z0-9]{24,}", ("whsec_",)),
    ShapeRule("google-api-key", _LB + r"AIza[A-Za-z0-9_\-]{35}", ("aiza",)),
    ShapeRule("google-oauth-secret", _LB + r"GOCSPX-[A-Za-z0-9_\-]{28}", ("gocspx-",)),
    ShapeRule("huggingface-token", _LB + r"(?:hf_|api_org_)[A-Za-z0-9]{34,}", ("hf_",)),
    ShapeRule("npm-token", _LB + r"npm_[A-Za-z0-9]{36}" + _END, ("npm_",)),
    ShapeRule("pypi-token", _LB + r"pypi-AgE[A-Za-z0-9_\-]{50,}", ("pypi-",)),
    ShapeRule("aws-access-key-id", _LB + r"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", ("akia", "asia")),
    ShapeRule(
        "jwt",
        _LB + r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        ("eyj",),
    ),
    ShapeRule("sendgrid-key", _LB + r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}" + _END, ("sg.",)),
    ShapeRule(
        # SK + 32 hex is an API key (AC + 32 hex is the account SID: an id, not a secret).
        "twilio-key",
        _LB + r"SK[0-9a-fA-F]{32}(?![A-Za-z0-9])",
        ("sk0", "ska", "skb", "skc", "skd", "ske", "skf"),
    ),
    ShapeRule("heroku-key", _LB + r"HRKU-[A-Za-z0-9_\-]{20,}", ("hrku-",)),
    ShapeRule("digitalocean-token", _LB + r"do[opr]_v1_[a-f0-9]{64}", ("_v0_",), back=3),
    ShapeRule("shopify-token", _LB + r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", ("shp",)),
    ShapeRule("newrelic-key", _LB + r"NR(?:AK|II|AA|JS)-[A-Za-z0-9\-]{19,32}" + _END, ("nrak-", "nrii-")),
    ShapeRule("telegram-bot-token", r"(?<![0-9])[0-9]{5,16}:A[A-Za-z0-9_\-]{34}" + _END, ("0:a",), lead=string.digits),
    ShapeRule(
        "azure-client-secret",
        r"(?<![A-Za-z0-9_~.\-])[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34}(?![A-Za-z0-9_~.\-])",
        ("0q~",),
        back=3,
    ),
    ShapeRule(
        "discord-webhook",
        r"/api/webhooks/[0-9]{17,20}/(?P<v>[A-Za-z0-9_\-]{60,68})",
        ("/api/webhooks/",),
    ),
    ShapeRule("vault-token", _LB + r"hv[sb]\.[A-Za-z0-9_\-]{90,}", ("hvs.",)),
    ShapeRule("mailgun-key", _LB + r"key-[0-9a-f]{32}" + _END, ("key",)),
    ShapeRule("age-secret-key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}", ("secret",), back=4),
)
"""The credential shapes. They run before the context rules, so a token under a secret name
keeps its own marker (``OPENAI_API_KEY=<redacted:openai-key>``)."""


# ---------------------------------------------------------------------------
# Rule 3: context rules
# ---------------------------------------------------------------------------
#
# A context rule is a function (text, trigger start, trigger end) -> (start, end, marker)
# of the segment to replace, or None. They run after the shapes, leftmost trigger first.

Span = tuple[int, int, str]
ContextRule = Callable[[str, int, int], Span | None]

_PLACEHOLDERS: Final = _words("pass password passwd secret pwd changeme example token")
_REDACTED_WORDS: Final = _words("redacted masked hidden filtered removed")


def _is_reference(value: str) -> bool:
    """'$TOKEN', '${X}', '{{ secrets.X }}', '<password>', '%s', '%X%', '****', 'xxx', '[REDACTED]':
    a reference to, or a mask of, a secret; no secret in it."""
    v = value.strip("\"'")
    return (
        not any(c.isalnum() for c in v)
        or v.startswith(("$", "<", "{", "%", "!", "@"))
        or set(v) <= {"*", "x", "X", ".", "•", "-", "_"}
        or v.strip("*[]()<>").lower() in _REDACTED_WORDS
    )


def _is_placeholder(value: str) -> bool:
    """A reference, or a word that stands for a credential in docs ('pass', 'token')."""
    return _is_reference(value) or value.strip("\"'").lower() in _PLACEHOLDERS


def _is_high_entropy(segment: str, min_len: int) -> bool:
    """Token-like: long enough, and a digit or mixed case ('instrument' is neither)."""
    if len(segment) < min_len:
        return False
    return _DIGIT.search(segment) is not None or not (segment.islower() or segment.isupper())


# --- NAME = value -----------------------------------------------------------------

_NAME_CHARS: Final = string.ascii_letters + string.digits + "_.-"
_NAME_TAIL: Final = re.compile(r"[A-Za-z0-9_.\-]*")
_SEP_START: Final = frozenset("\"'\\ \t:=>")
_SEP: Final = re.compile(r"""(?P<cq>\\*["'])?[ \t]*(?P<sep>:=|=>|=(?![=~])|:(?!:))[ \t]*""")
_QUOTED: Final = re.compile(r"""(?P<oq>\\*["'`])(?P<v>[^"'`\n]*?)(?P=oq)""")
_BARE_EQ: Final = re.compile(r"""[^\s"'`,;&|<>(){}\[\]\\]+""")  # after '=': '&' and ';' end a URL/DSN value
_BARE_COLON: Final = re.compile(r"""[^\s"'`,;|<>(){}\[\]\\]+""")
_FLAG_VALUE: Final = re.compile(r"""[ \t]+(?:(?P<oq>["'])(?P<qv>[^"'\n]*)(?P=oq)|(?P<uv>[^\s"'`;&|<>()\-][^\s"'`;&|<>()]*))""")
_XML_VALUE: Final = re.compile(r">(?P<v>[^<\n]+)</")
_REST_OF_LINE: Final = re.compile(r"""[^\n\r"'`\\]*""")
_ANNOTATED: Final = re.compile(r"[ \t]*(?:\[[^\]\n]*\])?[ \t]*=[ \t]*")
_CODE_WORD: Final = re.compile(r"[A-Za-z_]+(?:\.[A-Za-z_]+)*")
_FLAG_WORDS: Final = _words("true false null none nil yes no on off undefined required optional")
_INT: Final = re.compile(r"-?[0-9]+")

_ASSIGNMENT_MARKER: Final = "<redacted:secret-assignment>"
_AUTH_MARKER: Final = "<redacted:auth-header>"

_N_PLAIN: Final = 0
_N_SECRET: Final = 1
_N_AUTH: Final = 2  # ...authorization: a header value with a scheme
_N_COOKIE: Final = 3  # cookie, set-cookie: the rest of the header line
_N_PWD: Final = 4  # Pwd= in a connection string (but PWD=/home/u in an env dump)
_NAME_KINDS: dict[str, int] = {}


def _name_kind(name: str) -> int:
    kind = _NAME_KINDS.get(name)
    if kind is None:
        norm = _normalize_key(name)
        if norm.endswith("authorization"):
            kind = _N_AUTH
        elif norm in ("cookie", "set_cookie"):
            kind = _N_COOKIE
        elif norm == "pwd":
            kind = _N_PWD
        else:
            kind = _N_SECRET if is_secret_key(name) else _N_PLAIN
        if len(_NAME_KINDS) >= _KEY_KINDS_MAX:
            _NAME_KINDS.clear()
        _NAME_KINDS[name] = kind
    return kind


def _is_literal_secret(value: str, quoted: bool, after: str) -> bool:
    """Is ``value`` (after a secret name) a credential, rather than code, prose, a path or a count?

    Quoted, it is a literal: a secret unless it is a reference or a flag. Unquoted, it may
    also be code (``api_key=api_key``, ``token = get_token()``, ``password: str``), prose
    (``Token: required``) or a path (``SSL_KEY=/etc/ssl/key.pem``); a credential has a digit
    or a character that no identifier has.
    """
    if not value or MARKER_PREFIX in value or _is_reference(value):
        return False
    if value.lower() in _FLAG_WORDS:
        return False
    if _INT.fullmatch(value) and abs(int(value)) < SMALL_NUMBER:
        return False  # a count or a limit, as under a secret-named key
    if quoted:
        return True
    return not (after in ("(", "[") or value.startswith(("/", "~/", "./", "../")) or _CODE_WORD.fullmatch(value))


def _assignment(text: str, hs: int, he: int) -> Span | None:
    """``NAME=value``, ``"name": "value"``, ``name: value``, ``--name value``, ``<name>value</name>``
    where NAME (the identifier around the trigger) is a secret name."""
    if text[he - 1] == "=":  # 'sig=', 'pwd=': the name ends before the '='
        ne = he - 1
    else:
        ne = _NAME_TAIL.match(text, he).end()
        while text[ne - 1] in ".-" and ne > he:  # 'the token.': a full stop ends the name
            ne -= 1
        if ne < len(text) and text[ne] not in _SEP_START:
            return None  # 'keys,', 'token)', 'key.lower()': not followed by a separator
    lo = max(0, hs - 64)
    window = text[lo:hs]
    ns = hs - (len(window) - len(window.rstrip(_NAME_CHARS)))
    while ns < hs and text[ns] in ".-":
        ns += 1
    name = text[ns:ne]
    kind = _name_kind(name)
    if kind == _N_PLAIN or (ns > 0 and text[ns - 1] in "$%"):  # '$API_KEY': a reference
        return None
    flag = ns >= 2 and text[ns - 2 : ns] == "--"
    if ns > 0 and text[ns - 1] == "<" and text.startswith(">", ne):  # <password>hunter2</password>
        x = _XML_VALUE.match(text, ne)
        if x is None or not _is_literal_secret(x.group("v").strip(), True, ""):
            return None
        return x.start("v"), x.end("v"), _ASSIGNMENT_MARKER
    m = _SEP.match(text, ne)
    if m is None:
        if not flag:
            return None
        f = _FLAG_VALUE.match(text, ne)  # --password hunter2
        if f is None:
            return None
        v = "qv" if f.group("qv") is not None else "uv"
        if not _is_literal_secret(f.group(v), v == "qv", text[f.end(v) : f.end(v) + 1]):
            return None
        return f.start(v), f.end(v), _ASSIGNMENT_MARKER
    pos = m.end()
    sep = m.group("sep")
    if kind == _N_AUTH:
        return _auth_value(text, pos)
    if kind == _N_COOKIE and sep == ":":
        r = _REST_OF_LINE.match(text, pos)
        value = r.group().rstrip()
        if not value or _is_reference(value):
            return None
        return pos, pos + len(value), _ASSIGNMENT_MARKER
    q = _QUOTED.match(text, pos)
    if q is not None:
        s, e = q.span("v")
        quoted = True
    else:
        b = (_BARE_EQ if sep[0] == "=" else _BARE_COLON).match(text, pos)
        if b is None:
            return None
        s, e = b.span()
        while e > s and text[e - 1] == ".":  # 'password=hunter2.' ends a sentence
            e -= 1
        quoted = False
    value = text[s:e]
    if kind == _N_PWD and (sep != "=" or value.startswith(("/", "~"))):
        return None
    if not quoted and sep == ":" and _CODE_WORD.fullmatch(value):  # password: str = "hunter2"
        a = _ANNOTATED.match(text, e)
        q = _QUOTED.match(text, a.end()) if a is not None else None
        if q is None:
            return None
        s, e = q.span("v")
        value, quoted = text[s:e], True
    if not _is_literal_secret(value, quoted, text[e : e + 1]):
        return None
    return s, e, _ASSIGNMENT_MARKER


_AUTH_VALUE: Final = re.compile(
    r"""(?P<q>\\*["'])?(?:(?P<scheme>[A-Za-z][A-Za-z0-9_\-]*)[ \t]+)?(?P<v>[^\s"'`,;\\]+)"""
)


def _auth_value(text: str, pos: int) -> Span | None:
    """After ``Authorization:``: ``Token abc``/``<raw>`` -> the credential; ``Digest k=v, ...`` and
    other parameter lists -> the rest of the line. ``Bearer``/``Basic`` have their own rules."""
    m = _AUTH_VALUE.match(text, pos)
    if m is None:
        return None
    scheme = (m.group("scheme") or "").lower()
    if scheme in ("bearer", "basic"):
        return None
    s, e = m.span("v")
    if scheme and "=" in m.group("v"):  # Digest username="u", response="..."; AWS4-HMAC-SHA256 Credential=...
        rest = _REST_OF_LINE.match(text, s).group()
        q = m.group("q")
        if q:  # the header is quoted: it ends at its quote
            rest = rest.split(q[-1], 1)[0]
        return s, s + len(rest.rstrip()), _AUTH_MARKER
    value = m.group("v")
    if _is_placeholder(value) or not _is_high_entropy(value, 8):
        return None
    return s, e, _AUTH_MARKER


# --- Bearer / Basic -------------------------------------------------------------------

_AUTH_HEADER_BEFORE: Final = re.compile(r"""authorization["']?\s*[:=]\s*["']?\Z""", re.I)
_BEARER: Final = re.compile(_LB_WORD + r"(?:Bearer|bearer|BEARER)[ \t]+(?P<v>[A-Za-z0-9._~+/\-]+=*)")
_BASIC: Final = re.compile(_LB_WORD + r"(?:Basic|basic|BASIC)[ \t]+(?P<v>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")


def _bearer(text: str, hs: int, _he: int) -> Span | None:
    """After ``Authorization:`` anything is the credential; in free text ('the bearer
    2024-05-01 date') only a long token-like word is."""
    m = _BEARER.match(text, hs)
    if m is None:
        return None
    segment = m.group("v")
    if MARKER_PREFIX in segment:
        return None
    if _AUTH_HEADER_BEFORE.search(text, max(0, hs - 24), hs) is not None:
        ok = not _is_placeholder(segment)
    else:
        ok = _is_high_entropy(segment, 16)
    return (m.start("v"), m.end("v"), "<redacted:bearer-token>") if ok else None


def _basic(text: str, hs: int, _he: int) -> Span | None:
    """``Basic`` + base64 of a printable ``user:password`` ('basic features' is not)."""
    m = _BASIC.match(text, hs)
    if m is None:
        return None
    try:
        decoded = base64.b64decode(m.group("v"), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if ":" not in decoded or not decoded.isprintable():
        return None
    return m.start("v"), m.end("v"), "<redacted:basic-auth>"


# --- scheme://user:PASSWORD@host ---------------------------------------------------------

_AUTHORITY: Final = re.compile(r"""[^\s/?#"'`<>\\]*""")


def _url_password(text: str, hs: int, he: int) -> Span | None:
    """Only the password: the authority's userinfo ends at its LAST '@' (a password may hold
    '@': ``postgresql://dune:UlF@x@db:15432/dune``), the password starts at its first ':'."""
    if hs == 0 or not text[hs - 1].isalnum():
        return None
    authority = _AUTHORITY.match(text, he).group()
    at = authority.rfind("@")
    if at < 0:
        return None
    colon = authority.find(":", 0, at)
    if colon < 0:
        return None
    password = authority[colon + 1 : at]
    if not password or MARKER_PREFIX in password or _is_reference(password):
        return None
    return he + colon + 1, he + at, "<redacted:url-password>"


# --- mysql -pPASSWORD, sshpass -p PASSWORD -----------------------------------------------

_SEGMENT_END: Final = re.compile(r"[\n;|]|&&")
_MYSQL_P: Final = re.compile(r"""[ \t]-p(?P<v>"[^"\n]*"|'[^'\n]*'|[^\s"'`;&|()<>]+)""")
_SSHPASS_P: Final = re.compile(r"""[ \t]+-p[ \t]*(?P<v>"[^"\n]*"|'[^'\n]*'|[^\s"'`;&|()<>]+)""")


def _flag_password(pattern: re.Pattern[str], text: str, start: int) -> Span | None:
    end = _SEGMENT_END.search(text, start)
    m = pattern.search(text, start, end.start() if end else len(text))
    if m is None:
        return None
    s, e = m.span("v")
    if text[s] in "\"'":
        s, e = s + 1, e - 1
    if s >= e or _is_reference(text[s:e]):
        return None
    return s, e, "<redacted:password-flag>"


def _mysql_password(text: str, hs: int, he: int) -> Span | None:
    """``mysql -u root -pSECRET db`` (mysql, mysqldump, mysqladmin, mariadb): the password is glued to -p."""
    if hs > 0 and text[hs - 1].isalnum():
        return None
    return _flag_password(_MYSQL_P, text, he)


def _sshpass_password(text: str, hs: int, he: int) -> Span | None:
    """``sshpass -p SECRET ssh ...``."""
    if text[max(0, hs - 3) : hs].lower() != "ssh":
        return None
    return _flag_password(_SSHPASS_P, text, he)


CONTEXT_RULES: Final[dict[str, tuple[tuple[str, ...], ContextRule]]] = {
    "secret-assignment": (
        ("key", "token", "secret", "pass", "auth", "cookie", "credential", "bearer", "_pat", "sig=", "pwd="),
        _assignment,
    ),
    "bearer-token": (("bearer",), _bearer),
    "basic-auth": (("basic",), _basic),
    "url-password": (("://",), _url_password),
    "password-flag": (("mysql", "mariadb"), _mysql_password),
    "password-flag/sshpass": (("pass",), _sshpass_password),
}
"""Context rules by marker: (folded triggers, rule). ``secret-assignment`` also makes
``auth-header`` (``Authorization: Token ...``, ``Proxy-Authorization: Digest ...``)."""


# ---------------------------------------------------------------------------
# The trigger table
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shape:
    pattern: re.Pattern[str]
    marker: str
    inner: bool
    """Replace only group 'v'?"""
    check: Check | None
    back: int
    lead: str


_Entry = tuple[tuple[_Shape, ...], tuple[ContextRule, ...]]


def _trigger_table() -> dict[str, _Entry]:
    shapes: dict[str, list[_Shape]] = {}
    for rule in SHAPE_RULES:
        shape = _Shape(
            re.compile(rule.pattern), f"{MARKER_PREFIX}{rule.name}>", "(?P<v>" in rule.pattern, rule.check,
            rule.back, rule.lead,
        )  # fmt: skip
        for t in rule.triggers:
            shapes.setdefault(t, []).append(shape)
    contexts: dict[str, list[ContextRule]] = {}
    for triggers, fn in CONTEXT_RULES.values():
        for t in triggers:
            contexts.setdefault(t, []).append(fn)
    table = {t: (tuple(shapes.get(t, ())), tuple(contexts.get(t, ()))) for t in {*shapes, *contexts}}
    for t in table:
        if len(t) < 3 or t != t.lower() or any(c.isdigit() and c != "0" for c in t):
            raise ValueError(f"trigger {t!r} is not folded or shorter than 3")
    return table


def _bucket_order(words: list[str]) -> list[str]:
    """``words`` ordered so that Teddy puts similar ones in the same bucket.

    Teddy gives pattern i the bucket 15 - i % 16 (unless a pattern with the same low nibbles
    came first), and a bucket matches any mix of its patterns' nibbles: 'ghp_' with 'gho_'
    costs nothing, 'ghp_' with 'auth' also matches 'ahth', 'guth'... So runs of sorted
    neighbours get the ids c, c + 16, c + 32...: one bucket each, few false candidates.
    """
    ordered = sorted(words)
    n = len(ordered)
    out = [""] * n
    k = 0
    for column in range(16):
        for i in range(column, n, 16):
            out[i] = ordered[k]
            k += 1
    return out


_TABLE: Final = _trigger_table()
_TRIGGERS: Final = _bucket_order(list(_TABLE))
_ENTRIES: Final = tuple(_TABLE[t] for t in _TRIGGERS)


# ---------------------------------------------------------------------------
# Rule 4: env values
# ---------------------------------------------------------------------------


def _usable_values(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v for v in values if type(v) is str and len(v) >= SECRET_ENV_MIN_LEN and "\x00" not in v)


@dataclass(frozen=True, slots=True)
class _Compiled:
    scan: BytesAhoCorasick
    """The one scan: every trigger and, while they fit in _TEDDY_MAX, every folded env value."""
    entries: tuple[_Entry | None, ...]
    """Pattern id -> (shapes, context rules); None for an env value."""
    env_scan: BytesAhoCorasick | None
    """The folded env values that did not fit in ``scan`` (a second scan), or None."""
    env: AhoCorasick | None
    """The env values, exact and leftmost-longest, for the strings that had a hit; or None."""


@lru_cache(maxsize=256)
def _compile(values: frozenset[str]) -> _Compiled:
    """The automata for one set of env values: linear in the values' total length."""
    ordered = sorted(values, key=lambda v: (-len(v), v))
    env = AhoCorasick(ordered, matchkind=MatchKind.LeftmostLongest) if ordered else None
    folded = sorted({_fold(v) for v in ordered})
    triggers = [t.encode() for t in _TRIGGERS]
    entries: list[_Entry | None] = list(_ENTRIES)
    env_scan = None
    if len(triggers) + len(folded) <= _TEDDY_MAX:
        triggers += folded
        entries += [None] * len(folded)
    elif folded:
        env_scan = BytesAhoCorasick(folded, matchkind=MatchKind.LeftmostFirst)
    scan = BytesAhoCorasick(triggers, matchkind=MatchKind.LeftmostFirst)
    return _Compiled(scan, tuple(entries), env_scan, env)


# ---------------------------------------------------------------------------
# The redactor
# ---------------------------------------------------------------------------

_Hits = list[tuple[int, int, int]]


class _Rebuild:
    """The second walk's cursor: the n-th scanned string and what it became."""

    __slots__ = ("changed", "i")

    def __init__(self, changed: dict[int, tuple[str, int]]) -> None:
        self.changed = changed
        self.i = 0


class Redactor:
    """Applies the four rules to JSON-like payloads; cheap to derive per connection."""

    __slots__ = ("_c", "_values", "enabled")

    def __init__(self, values: Iterable[str] = (), enabled: bool = True) -> None:
        """``values``: the daemon's secret env values; ``enabled=False`` redacts nothing."""
        self.enabled = enabled
        self._values = _usable_values(values)
        self._c = _compile(self._values)

    def with_values(self, values: Iterable[str]) -> Redactor:
        """A Redactor that also redacts ``values`` (a client's, from ``hello``).

        ``self`` is untouched; compiled automata are cached per value set.
        """
        extra = _usable_values(values) - self._values
        if not extra:
            return self
        return Redactor(self._values | extra, self.enabled)

    def redact_text(self, text: str) -> tuple[str, int]:
        """Redact env values, credential shapes and context rules in one string: (text, redactions)."""
        if not self.enabled or len(text) < _MIN_LEN:
            return text, 0
        hits = self._scan(text)
        if not hits:
            return text, 0
        if not text.isascii():
            hits = _char_offsets(text, hits)
        return self._process(text, hits)

    def redact(self, payload: Any) -> tuple[Any, int]:
        """Redact a JSON-like payload without mutating it.

        Returns (redacted copy, redactions), or (``payload`` itself, 0) when nothing
        matched; only the containers on the path to a change are copied.
        """
        if not self.enabled:
            return payload, 0
        t = type(payload)
        strings: list[str] = []
        if t is dict:
            secret = self._collect_dict(payload, strings)
        elif t is list:
            secret = self._collect_list(payload, strings)
        elif t is str:
            return self.redact_text(payload)
        else:
            return payload, 0
        changed = self._strings(strings) if strings else {}
        if not changed and not secret:
            return payload, 0
        walk = _Rebuild(changed)
        return self._rebuild_dict(payload, walk) if t is dict else self._rebuild_list(payload, walk)

    # --- the scan ---------------------------------------------------------------------

    def _scan(self, text: str) -> _Hits:
        """Hits (pattern id, start, end) in ``text``'s UTF-8 bytes; the one scan clean text pays."""
        raw = (text.encode() if text.isascii() else text.encode("utf-8", "surrogatepass")).translate(_FOLD)
        hits = self._c.scan.find_matches_as_indexes(raw)
        env_scan = self._c.env_scan
        if env_scan is not None:
            n = len(self._c.entries)  # an id past the table: an env value
            hits += [(n, s, e) for _i, s, e in env_scan.find_matches_as_indexes(raw)]
        return hits

    def _strings(self, strings: list[str]) -> dict[int, tuple[str, int]]:
        """Scan all of a payload's strings at once; {index: (redacted, count)} of those that changed."""
        if len(strings) == 1:
            text = strings[0]
            out, n = self.redact_text(text)
            return {0: (out, n)} if n else {}
        hay = "\x00".join(strings)  # no trigger or env value holds a NUL: no hit spans two strings
        hits = self._scan(hay)
        if not hits:
            return {}
        if not hay.isascii():
            hits = _char_offsets(hay, hits)
        starts = [0, *accumulate(len(s) + 1 for s in strings)]
        per_string: dict[int, _Hits] = {}
        for pid, s, e in hits:
            i = bisect_right(starts, s) - 1
            base = starts[i]
            per_string.setdefault(i, []).append((pid, s - base, e - base))
        changed: dict[int, tuple[str, int]] = {}
        for i, string_hits in per_string.items():
            out, n = self._process(strings[i], string_hits)
            if n:
                changed[i] = (out, n)
        return changed

    # --- one string, at its hits ------------------------------------------------------------

    def _process(self, text: str, hits: _Hits) -> tuple[str, int]:
        """Apply the rules at ``hits`` (character offsets): env values, then shapes, then context."""
        spans: list[Span] = []
        env = self._c.env
        if env is not None:  # a hit may hide an env value that starts inside it: match them all
            spans = [(s, e, ENV_VALUE_MARKER) for _i, s, e in env.find_matches_as_indexes(text)]
        entries = self._c.entries
        n_entries = len(entries)
        for pid, hs, _he in hits:
            if pid >= n_entries or (entry := entries[pid]) is None:
                continue
            for shape in entry[0]:
                start = hs - shape.back
                if shape.lead:
                    window = text[max(0, start - 16) : start]
                    start -= len(window) - len(window.rstrip(shape.lead))
                if start < 0:
                    continue
                m = shape.pattern.match(text, start)
                if m is None:
                    continue
                s, e = m.span("v") if shape.inner else m.span()
                segment = text[s:e]
                # Not a credential, or already holds a marker (keeps redaction idempotent).
                if (shape.check is not None and not shape.check(segment, m)) or MARKER_PREFIX in segment:
                    continue
                if _free(spans, s, e):
                    spans.append((s, e, shape.marker))
                    break
        for pid, hs, he in hits:
            if pid >= n_entries or (entry := entries[pid]) is None or not entry[1] or not _free(spans, hs, hs + 1):
                continue
            for rule in entry[1]:
                span = rule(text, hs, he)
                if span is not None and _free(spans, span[0], span[1]):
                    spans.append(span)
                    break
        if not spans:
            return text, 0
        spans.sort()
        out: list[str] = []
        pos = 0
        for s, e, marker in spans:
            out.append(text[pos:s])
            out.append(marker)
            pos = e
        out.append(text[pos:])
        return "".join(out), len(spans)

    # --- the walks ------------------------------------------------------------------------
    #
    # _collect_* gather the strings to scan (in order) and say whether a secret-named key
    # needs redacting; _rebuild_* walk the same way, counting the same strings, and copy
    # only what changed. The two MUST skip and descend alike: they share _key_kind,
    # _keeps_value and _MIN_LEN, and tests/redaction checks them with hypothesis.

    def _collect_dict(self, obj: dict[Any, Any], out: list[str]) -> bool:
        secret = False
        kinds = _KEY_KINDS
        for key, value in obj.items():
            kind = kinds.get(key)
            if kind is None:
                kind = _key_kind(key)
            t = type(value)
            if kind:
                if kind == _SECRET:
                    secret = secret or not _keeps_value(value)
                    continue
                if t is dict:  # a container's mapping
                    secret = secret or _container_changes(value)
                    continue
                if t is list:
                    secret = self._collect_list(value, out, True) or secret
                    continue
            if t is str:
                if len(value) >= _MIN_LEN:
                    out.append(value)
            elif t is dict:
                secret = self._collect_dict(value, out) or secret
            elif t is list:
                secret = self._collect_list(value, out) or secret
        return secret

    def _collect_list(self, obj: list[Any], out: list[str], container: bool = False) -> bool:
        secret = False
        for value in obj:
            t = type(value)
            if t is str:
                if len(value) >= _MIN_LEN:
                    out.append(value)
            elif t is dict:
                if container:
                    secret = secret or _container_changes(value)
                else:
                    secret = self._collect_dict(value, out) or secret
            elif t is list:
                secret = self._collect_list(value, out) or secret
        return secret

    def _rebuild_dict(self, obj: dict[Any, Any], walk: _Rebuild) -> tuple[Any, int]:
        copy: dict[Any, Any] | None = None
        total = 0
        kinds = _KEY_KINDS
        for key, value in obj.items():
            kind = kinds.get(key)
            if kind is None:
                kind = _key_kind(key)
            t = type(value)
            new: Any
            if kind == _SECRET:
                if _keeps_value(value):
                    continue
                new, n = SECRET_KEY_MARKER, 1
            elif kind == _CONTAINER and t is dict:
                if not _container_changes(value):
                    continue
                new, n = _redact_container(value)
            elif kind == _CONTAINER and t is list:
                new, n = self._rebuild_list(value, walk, True)
            elif t is str:
                if len(value) < _MIN_LEN:
                    continue
                i = walk.i
                walk.i = i + 1
                hit = walk.changed.get(i)
                if hit is None:
                    continue
                new, n = hit
            elif t is dict:
                new, n = self._rebuild_dict(value, walk)
            elif t is list:
                new, n = self._rebuild_list(value, walk)
            else:
                continue
            if not n:
                continue
            if copy is None:
                copy = dict(obj)
            copy[key] = new
            total += n
        return (obj if copy is None else copy), total

    def _rebuild_list(self, obj: list[Any], walk: _Rebuild, container: bool = False) -> tuple[Any, int]:
        copy: list[Any] | None = None
        total = 0
        for i, value in enumerate(obj):
            t = type(value)
            new: Any
            if t is str:
                if len(value) < _MIN_LEN:
                    continue
                k = walk.i
                walk.i = k + 1
                hit = walk.changed.get(k)
                if hit is None:
                    continue
                new, n = hit
            elif t is dict:
                if container:
                    if not _container_changes(value):
                        continue
                    new, n = _redact_container(value)
                else:
                    new, n = self._rebuild_dict(value, walk)
            elif t is list:
                new, n = self._rebuild_list(value, walk)
            else:
                continue
            if n:
                if copy is None:
                    copy = list(obj)
                copy[i] = new
                total += n
        return (obj if copy is None else copy), total


def _free(spans: list[Span], s: int, e: int) -> bool:
    """Does [s, e) overlap none of ``spans``?"""
    for s2, e2, _m in spans:
        if s < e2 and s2 < e:
            return False
    return True


def _char_offsets(text: str, hits: _Hits) -> _Hits:
    """Byte offsets into ``text``'s UTF-8 -> character offsets (hits start and end on characters)."""
    raw = text.encode("utf-8", "surrogatepass")

    def char(b: int) -> int:
        return len(raw[:b].decode("utf-8", "surrogatepass"))

    return [(pid, char(s), char(e)) for pid, s, e in hits]


# ---------------------------------------------------------------------------
# python -m traced.redaction.redactor
# ---------------------------------------------------------------------------

_CMDS: Final = (
    "git diff --stat HEAD~3 -- src/traced/server.py",
    "pytest -q tests/test_daemon.py -k pipelined",
    "rg -n 'def handle' src/ --type py",
    "ls -la /home/dev/proj/src/traced",
    "npm run build -- --mode production",
    "cargo test -p core --lib -- parser",
)
_CODE: Final = "".join(
    f"    def handle_{i}(self, request: Request) -> Response:\n"
    f'        """Route {i}: validate, then answer from the cache or the backend."""\n'
    f"        if not request.user.can('route_{i}'):\n            raise Forbidden(request.path)\n"
    f"        return self.backend.fetch(request, timeout=self.timeout)\n\n"
    for i in range(40)
)


def _bench_payload(size: int, i: int, secret: bool) -> Any:
    """scripts/bench's events (bench/lib.py): a 200 B Bash call, a 2 KB Edit of source code."""
    cid = f"toolu_{i:010d}"
    if size <= 200:
        cmd = f"{_CMDS[i % len(_CMDS)]} #{i % 997}"
        if secret:
            cmd = f"curl -H 'Authorization: Bearer abc123def456ghi{i:06d}' https://api.example.com/v1/items"
        return {"tool": "Bash", "args": {"cmd": cmd, "timeout": 120000}, "call_id": cid}
    k = i % 30
    old = _CODE[k * 40 : k * 40 + 880]
    new = old.replace("fetch", "fetch_cached") + f"# {i}\n"
    if secret:
        new += f'API_KEY = "sk-proj-{i:06d}abcdefghijklmnopqrstuvwxyz"\n'
    return {
        "tool": "Edit",
        "call_id": cid,
        "kind": "tool",
        "args": {"file_path": f"/home/dev/proj/src/app/handlers_{i % 97}.py", "old_string": old, "new_string": new},
    }


def _bench() -> None:
    """Microbenchmark: ``python -m traced.redaction.redactor`` prints µs per payload.

    The payloads are scripts/bench's (200 B Bash calls, 2 KB Edits of source code), clean and
    with a secret, 1000 variants each, under a redactor with a few env values as in the daemon.
    """
    import timeit

    env = ["s3cr3t-" + "q" * 20, "ghp_" + "A1b2C3d4" * 4 + "xyzw", "hunter2hunter2"]
    redactor = Redactor(env).with_values(["client-secret-value-42"])
    for size in (200, 2000):
        for secret in (False, True):
            batch = [_bench_payload(size, i, secret) for i in range(1000)]
            length = sum(len(json.dumps(p)) for p in batch) // len(batch)

            def run(batch: list[Any] = batch) -> None:
                for p in batch:
                    redactor.redact(p)

            best = min(timeit.repeat(run, number=10, repeat=7)) / (10 * len(batch))
            label = f"{'2 KB Edit' if size > 200 else '200 B Bash'}{' + secret' if secret else ''}"
            print(f"{label:20} {length:5d} B  {best * 1e6:6.2f} µs/payload")


if __name__ == "__main__":
    _bench()
