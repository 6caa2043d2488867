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

Object keys get the string rules too (``Redactor._kind``, "Keys" below): ``{"ghp_...": 3}``
becomes ``{"<redacted:github-token>": 3}``; keys that become equal are all kept (``NAME<2>``...).

Design (the hot path). Every rule fires only where one of its literal triggers occurs, and
all the triggers and env values are found by ONE scan:

- a payload's strings are joined (NUL-separated), encoded and folded (``_fold_table``: A-Z ->
  a-z, 0-9 -> 0, bytes no literal holds -> NUL), so one literal covers every case and digit;
- one Aho-Corasick automaton of at most 64 literals (``_TEDDY_MAX``) scans that, which the
  library runs as a SIMD (Teddy) search; the triggers are ordered so that literals alike
  share a Teddy bucket (``_TEDDY_BUCKETS``): ~0.2 ns per byte of clean code;
- a short payload whose folded text already scanned clean costs no scan (``_Compiled.clean``:
  scripts/bench's Bash calls differ only in digits of their call id);
- the daemon's reads skip even the walk: ``Redactor.redactions`` scans the events' msgpack as
  received (msgpack writes strings unescaped) with a coarser fold of the same literals, and
  dismisses hits in short strings (fixstr) that change nothing, such as the key ``input_tokens``
  (``_wire_suspects``, ``_inert_at``): ~0.5 ns per byte of a 2 KB edit, no Python per value.

A clean payload costs the walk and that scan, and comes back as the very same object: no
regex runs on it. A string with a hit gets the rules at its hits only (anchored regexes and
string operations on one line around each), and only the containers on the path to a change
are copied. ``bench/redaction.py`` prints µs per payload.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter
from typing import Any, Final

import msgspec
from ahocorasick_rs import BytesAhoCorasick, MatchKind

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
        name = _shown_text(key)  # a key in a terminal's colours: the name it shows (cached, as the kind is)
        if is_secret_key(name):
            kind = _SECRET
        elif _normalize_key(name) in SECRET_CONTAINER_NAMES:
            kind = _CONTAINER
    if len(_KEY_KINDS) >= _KEY_KINDS_MAX:
        _KEY_KINDS.clear()
    _KEY_KINDS[key] = kind
    return kind


def _container_changes(mapping: dict[Any, Any]) -> bool:
    return not all(map(_keeps_value, mapping.values()))


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
# Keys: the same rules as strings
# ---------------------------------------------------------------------------
#
# A str key is redacted as ``redact_text`` would redact it (a map keyed by git remote URLs with
# credentials, a cache keyed by tokens, header lines parsed into keys) and counts its
# redactions. Its kind (secret-named, container, plain) is read from the key it BECOMES, with
# markers and duplicate suffixes read as spaces and nothing, so redaction stays idempotent:
# ``<redacted:github-token>`` names no secret, though ``github_token`` does. Keys that become
# equal are all kept: the first (in order) keeps the redacted name, unless an unchanged key
# already has it; each other takes the first free of ``NAME<2>``, ``NAME<3>``... (a ``<``
# starts no secret value, so a suffix never gives a second redaction something to take).

_RENAMED: Final = 4
"""A kind's bit (``Redactor._kind``): ``redact_text`` changes this key."""
_KIND: Final = 3
_KEYS_CAP: Final = 1024
"""Keys remembered per set of env values (``_Compiled.keys``, ``plain_json``), then forgotten all at
once: like ``_CLEAN_CAP``, bounded by the 256 value sets ``_compile`` keeps; a miss costs one scan."""
_MARKER: Final = re.compile(r"<redacted:[a-z0-9\-]+>")
_DUPLICATE: Final = re.compile(r"(?:<[0-9]+>)+\Z")


def _key_name(key: str) -> str:
    """The name a key holding a marker gives: without its duplicate suffixes, markers as spaces."""
    return _MARKER.sub(" ", _DUPLICATE.sub("", key))


def _free_name(name: str, taken: set[Any]) -> str:
    """``name``, or the first of ``name<2>``, ``name<3>``... not in ``taken``."""
    k = 1
    free = name
    while free in taken:
        k += 1
        free = f"{name}<{k}>"
    return free


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
_CLEAN_MAX_LEN: Final = 160
"""Payloads whose strings take at most this many bytes are remembered clean (folded)..."""
_KEY_WORDS: Final = (b"pat", b"sig")
"""The words that make a key secret (``github_pat``, ``SIG``) holding no trigger: every other secret
name (``names``) holds one, so a payload's JSON with no trigger and neither word ending a run of
letters has no secret-named key (``redact_all``'s prefilter; tests/redaction holds the names to it)."""
_LOWERS_TO_ASCII: Final = ("\u0130".encode(), "\u212a".encode())
"""The only characters whose ``str.lower()`` holds ASCII letters (İ, the Kelvin sign): a key normalised
with them may spell a secret name its bytes do not (``api_\u212aey``), so the prefilter stands aside."""
_JSON_LINES: Final = msgspec.json.Encoder()
_JSON_SCAN_MAX: Final = 640
"""Without their msgpack (``redact_all``'s ``wires``), payloads up to this size on the wire (bytes)
are prefiltered on their JSON: at 200 B that costs 0.4 us against 1.1 us for the walk. At 2 KB of
code it costs 4.8 us against 2.4 us (bench/hotpath.py's edits): encoding 0.9 us (the code's
newlines and quotes are escaped), folding and scanning more bytes than the strings hold, a
second scan for the key words 0.8 us (so few literals make the library pick a byte-frequency
prefilter, which folded text defeats: see _NEVER_FOLDED), and a hit in every ``file_path`` key
that ``_in_plain_key`` must dismiss. The daemon hands ``wires``: neither runs there."""
_WIRE_COLON: Final = b"-./~=:"
"""The triggers' punctuation, which the wire prefilter (``_wire_fold``) folds to one byte, ':'."""
_WIRE_ENDS: Final = (b"\x00", b"0", b"_", b":")
"""What the wire prefilter's fold gives that is not a letter: the bytes after a key word (``_KEY_WORDS``)."""
_FIXSTR_MAX: Final = 31
"""The longest string msgpack writes with a one-byte header (fixstr, 0xA0 | length)."""
_ASCII: Final = bytes(range(128))
_BATCH_SCAN: Final = 16384
"""Characters of strings ``redact_all`` joins for one scan: past a few pages, copying the joined
text costs more than the calls it saves (2 KB payloads scan faster 8 at a time than 300)."""
_WIRE_BATCH: Final = 65536
"""Bytes of msgpack ``_wire_suspects`` folds and scans at a time (about one read of the socket): one
pass of Python per read, not per 16 KB (``_BATCH_SCAN``: there, copying the strings cost more)."""
_CLEAN_CAP: Final = 1024
"""...up to this many of them (160 KB at most per value set), then forgotten all at once."""
_REACH: Final = 4096
"""How far a context rule reads on from its trigger (a header, a command, a URL's authority):
rules cost O(hits), never O(hits x length), on a megabyte of one line."""
_SHAPE_REACH: Final = 65536
"""Likewise for a credential shape: a private key block is a few KB."""
_MAX_ROUNDS: Final = 8
"""Rounds of shapes + context rules over a string (another only when a rule's segment overlapped
one taken first): a bound that real text never meets, as every round takes one more segment."""


def _fold(text: str, table: bytes = _FOLD) -> bytes:
    return text.encode("utf-8", "surrogatepass").translate(table)


def _fold_table(literals: Iterable[bytes]) -> bytes:
    """_FOLD, and every byte that no literal holds (space, newline, brackets, most non-ASCII) -> NUL.

    Teddy's buckets match nibbles, so a bucket of 'pass' and '-----begin' also takes a space
    for a first byte; a NUL is in no bucket, so fewer false candidates reach verification.
    """
    used = set(b"".join(literals))
    return bytes(c if c in used else 0 for c in _FOLD)


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


# Glued escapes. Text escaped once more (JSON in a tool's output: ``A=1\nGH_TOKEN=…``), a URL's
# ``%XX``, a C ``\x1b`` or ``\012`` and a terminal's colour code (``ESC[32m``) end in a letter or
# digit glued to what follows; it starts a word all the same. So does a diff's ``-`` at a line's
# start or in ``[-…-]``.
_ESCAPE: Final = r"\\(?:u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|[0-7]{1,3}|[nrtbfva])|%[0-9A-Fa-f]{2}|\[[0-?]*[A-Za-z]"
_ESCAPE_AT: Final = re.compile(_ESCAPE)
_AFTER_ESCAPE: Final = "|".join([
    r"(?<=\\[nrtbfva])", r"(?<=\\u[0-9A-Fa-f]{4})", r"(?<=\\x[0-9A-Fa-f]{2})", r"(?<=%[0-9A-Fa-f]{2})",
    *(rf"(?<=\\[0-7]{{{k}}})" for k in (1, 2, 3)),
    *(rf"(?<=\[[0-?]{{{k}}}[A-Za-z])" for k in range(9)),  # ESC[m … ESC[38;5;208m
])
_AFTER_ESCAPE_AT: Final = re.compile(_AFTER_ESCAPE)
_DIFF_MINUS: Final = r"(?<=^-)|(?<=\n-)|(?<=[\[{]-)"
# Start of a token: the char before must not continue a word ('task-…', 'x_ghp_…'), unless it ends an escape.
_LB: Final = rf"(?:(?<![A-Za-z0-9_\-])|{_AFTER_ESCAPE}|{_DIFF_MINUS})"
_LB_WORD: Final = rf"(?:(?<![A-Za-z0-9_])|{_AFTER_ESCAPE})"
# A terminal's control sequences, raw or written as an escape in text (``\u001b``, ``\x1b``, ``\033``,
# ``\e``, ``\27``, with their backslashes doubled in text escaped twice, or ``^[`` as ``cat -v`` shows
# ESC): CSI (``ESC[1;32m``, ``ESC[K``, ``ESC[>4;2m``), OSC up to BEL or ST (an ``ESC]8;;URL`` link),
# a charset (``ESC(B``, which ``tput sgr0`` writes), ``ESC7``/``ESC8``, and SI/SO. A string whose
# secrets they hide is redacted as the text a terminal shows (``Redactor._process``).
_ESC: Final = r"(?:\x1b|\\{1,4}(?:u001[bB]|x1[bB]|033|e|27)|\^\[)"  # {1,4}: a run of backslashes stays linear
_ANSI: Final = re.compile(
    _ESC + r"(?:\[[0-?]*[ -/]*[@-~]|[\]P_^X][^\x07\x1b\n]{0,1024}?"  # CSI; OSC, DCS, APC... to BEL or ST
    r"(?:\x07|\x1b\\|" + _ESC + r"\\|\\{1,4}(?:u0007|x07|a))"
    r"|[()%#][0-9A-Za-z]|[ ][A-Za-z]|[78=>cM])|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c\n]{0,1024}?[\x07\x9c]|[\x0e\x0f]"
)
_ANSI_INTRO: Final = re.compile(r"[\x1b\x0e\x0f\x9b\x9d\\]|\^\[")
"""What every match of ``_ANSI`` starts with: a string without it has no code to take out."""
# A raw ESC makes a string looked at even with no trigger in it (the codes may split a name). Not
# SI/SO nor C1's one-character CSI and OSC: their bytes are common in msgpack (small integers,
# lengths, ``false``), so the daemon's prefilter could not look for them cheaply; they are taken
# out only from a string something else makes looked at.


def _shown_text(text: str) -> str:
    """``text`` as a terminal shows it: its codes (``_ANSI``) taken out, codes nested in codes too
    (up to four passes, each linear)."""
    for _pass in range(4):
        stripped = _ANSI.sub("", text)
        if stripped == text:
            break
        text = stripped
    return text

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
    ShapeRule("github-token", _LB + r"gh[pousr]_[A-Za-z0-9]{36,}", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
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
"""(text, trigger start, trigger end) -> the span to replace, or None."""

_PLACEHOLDERS: Final = _words("pass password passwd secret pwd changeme example token")
_REDACTED_WORDS: Final = _words("redacted masked hidden filtered removed")


_MASK: Final = re.compile(r"[\W_xX]*")  # no letter or digit but x: '****', 'xxxx', '...', '•••', '___'


def _is_reference(value: str) -> bool:
    """'$TOKEN', '${X}', '{{ secrets.X }}', '<password>', '%s', '%X%', '****', 'xxx', '[REDACTED]':
    a reference to, or a mask of, a secret; no secret in it."""
    v = value.strip("\"'")
    return not v or v[0] in "$<{%!@" or _MASK.fullmatch(v) is not None or v.strip("*[]()<>").lower() in _REDACTED_WORDS


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
_QUOTED: Final = r"""(?P<oq>\\*["'`])(?P<qv>[^"'`\n]*?)(?P=oq)"""
_UV_MAX: Final = 4096
"""An unquoted value's characters read by the regex; a longer one is read on by ``_UV_REST`` and is a
secret whatever follows it (each hit re-reading a long run to its end was quadratic: 25,000 ``pwd=``
then ``(`` took 7.8 s per 100 KB)."""
_VALUE: Final = r"""(?:""" + _QUOTED + r"""|(?P<uv>[^\s"'`,;|<>(){}\[\]\\]{1,""" + str(_UV_MAX) + "}))"
_UV_REST: Final = re.compile(r"""[^\s"'`,;|<>(){}\[\]\\]*""")
_SEP_VALUE: Final = re.compile(r"""(?:\\*["'])?[ \t]*(?P<sep>:=|=>|=(?![=~])|:(?!:))[ \t]*(?P<at>)""" + _VALUE + "?")
_FLAG_VALUE: Final = re.compile(r"[ \t]+(?P<sep>)(?P<at>)(?!-)" + _VALUE)
_URL_END: Final = re.compile(r"[&;]")  # after '=': '&' and ';' end a URL or connection-string value
_XML_VALUE: Final = re.compile(r">(?P<v>[^<\n]+)</")
_LINE: Final = re.compile(r"[^\n\r]*")

_ANNOTATED: Final = re.compile(r"""[ \t]*(?:\[[^\]\n]*\])?[ \t]*=[ \t]*""" + _QUOTED)
_CODE_WORD: Final = re.compile(r"[A-Za-z_]+(?:\.[A-Za-z_]+)*")
_FLAG_WORDS: Final = _words("true false null none nil yes no on off undefined required optional")
_INT: Final = re.compile(r"-?[0-9]+")

_ASSIGNMENT_MARKER: Final = "<redacted:secret-assignment>"
FAILED_MARKER: Final = "<redacted:redaction-failed>"
"""What a string becomes when redacting it raised (a bug): the whole string, never the text as it came."""
_AUTH_MARKER: Final = "<redacted:auth-header>"
_COOKIE_MARKER: Final = "<redacted:cookie>"

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


_USERINFO: Final = re.compile(r"://[^\s/?#@\"'`<>\\]*\Z")  # from '://' to the name: no '/', '@', ...


def _in_userinfo(text: str, pos: int) -> bool:
    """Is ``pos`` in a URL's authority, before its '@' (``https://gitlab+deploy-token-7:...@``)?"""
    scheme = text.rfind("://", max(0, pos - 64), pos)
    return scheme >= 0 and _USERINFO.match(text, scheme, pos) is not None


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


def _name_start(text: str, ns: int, limit: int) -> int:
    """Where a name found to start at ``ns`` starts past an escape glued to it (``\\nGH_TOKEN``,
    ``%0APASSWORD``), or ``ns`` when none is (or the escape would reach ``limit``)."""
    m = _ESCAPE_AT.match(text, ns - 1) if ns > 0 else None
    return m.end() if m is not None and m.end() < limit else ns


def _assignment(text: str, hs: int, he: int) -> Span | None:
    """``NAME=value``, ``"name": "value"``, ``name: value``, ``--name value``, ``<name>value</name>``
    where NAME (the identifier around the trigger) is a secret name."""
    if text[he - 1] == "=":  # 'sig=', 'pwd=': the name ends before the '='
        ne = he - 1
    else:
        ne = _NAME_TAIL.match(text, he).end()  # type: ignore[union-attr]  # '*': it always matches
        while text[ne - 1] in ".-" and ne > he:  # 'the token.': a full stop ends the name
            ne -= 1
        if ne < len(text) and text[ne] not in _SEP_START:
            return None  # 'keys,', 'token)', 'key.lower()': not followed by a separator
    window = text[max(0, hs - 64) : hs]
    ns = hs - (len(window) - len(window.rstrip(_NAME_CHARS)))
    while ns < hs and text[ns] in ".-":
        ns += 1
    kind = _name_kind(text[ns:ne])
    glued = _name_start(text, ns, hs + 1)  # '\nGH_TOKEN=', '%0APASSWORD=': the name is past the escape
    if glued != ns and (kind == _N_PLAIN or text[ns - 1] == "%"):
        ns, kind = glued, _name_kind(text[glued:ne])
    before = text[ns - 1] if ns > 0 else ""
    if kind == _N_PLAIN or before in ("$", "%"):  # '$API_KEY': a reference
        return None
    if before == "<" and text.startswith(">", ne):  # <password>hunter2</password>
        x = _XML_VALUE.match(text, ne)
        if x is None or not _is_literal_secret(x.group("v").strip(), True, ""):
            return None
        return x.start("v"), x.end("v"), _ASSIGNMENT_MARKER
    m = _SEP_VALUE.match(text, ne)
    if m is None:
        if text[max(0, ns - 2) : ns] != "--":
            return None
        m = _FLAG_VALUE.match(text, ne)  # --password hunter2
        if m is None:
            return None
        sep = " "
    else:
        sep = m.group("sep")
        if sep == ":" and _in_userinfo(text, ns):  # https://x-access-token:PASSWORD@host: url-password's
            return None
    if kind == _N_AUTH and (m.group("uv") or "").lower() in ("bearer", "basic"):
        return None  # their own rules
    opener = ""  # the quote before the name, with its escapes: -H "Cookie: a=1; b=2"
    if before in ('"', "'"):
        k = ns - 1
        while k > 0 and text[k - 1] == "\\":
            k -= 1
        opener = text[k:ns]
        if m.group("oq") == opener and text[ne : ne + 1] not in ("\\", '"', "'"):
            return None  # 'input("Password: ")': the name's string is not closed, the next quote closes it
    if kind in (_N_AUTH, _N_COOKIE):
        pos = m.end("at")
        if kind == _N_AUTH:
            return _auth_value(text, pos, opener)
        if sep == ":" and m.group("qv") is None:  # Cookie: a=1; b=2 -> the rest of the header
            e = _header_end(text, pos, opener)
            if e <= pos or _is_reference(text[pos:e]):
                return None
            return pos, e, _COOKIE_MARKER
    long_value = False
    if m.group("qv") is not None:
        s, e = m.span("qv")
        quoted = True
    elif m.group("uv") is not None:
        s, e = m.span("uv")
        long_value = e - s == _UV_MAX
        if long_value:
            e = _UV_REST.match(text, e).end()  # type: ignore[union-attr]  # '*': it always matches
        if sep[0] == "=":  # ?token=abc&x=1, Password=abc;Server=...
            cut = _URL_END.search(text, s, e)
            if cut is not None:
                e = cut.start()
        while e > s and text[e - 1] == ".":  # 'password=hunter2.' ends a sentence
            e -= 1
        quoted = False
    else:
        return None
    value = text[s:e]
    if kind == _N_PWD and (sep != "=" or value.startswith(("/", "~"))):
        return None
    if not quoted and sep == ":" and _CODE_WORD.fullmatch(value):  # password: str = "hunter2"
        a = _ANNOTATED.match(text, e)
        if a is None:
            return None
        s, e = a.span("qv")
        value, quoted = text[s:e], True
    if not long_value and not _is_literal_secret(value, quoted, text[e : e + 1]):
        return None
    return s, e, _ASSIGNMENT_MARKER


_AUTH_VALUE: Final = re.compile(
    r"""(?P<q>\\*["'])?(?:(?P<scheme>[A-Za-z][A-Za-z0-9_\-]*)[ \t]+)?(?P<v>[^\s"'`,;\\]+)"""
)


def _header_end(text: str, pos: int, quote: str) -> int:
    """Where a header value starting at ``pos`` ends: the line's end, or the quote around the header."""
    line = _LINE.match(text, pos, pos + _REACH).group()  # type: ignore[union-attr]  # '*': it always matches
    if quote:
        end = _closing(quote).search(line)
        if end is not None:
            line = line[: end.start()]
    return pos + len(line.rstrip())


@lru_cache(maxsize=16)
def _closing(quote: str) -> re.Pattern[str]:
    """``quote`` (with its escapes: ``\\"`` in JSON text) where no further backslash escapes it."""
    return re.compile(r"(?<!\\)" + re.escape(quote))


def _auth_value(text: str, pos: int, opener: str) -> Span | None:
    """After ``Authorization:``: ``Token abc``/``<raw>`` -> the credential; ``Digest k=v, ...`` and
    other parameter lists -> the rest of the header. ``Bearer``/``Basic`` have their own rules."""
    m = _AUTH_VALUE.match(text, pos)
    if m is None:
        return None
    scheme = (m.group("scheme") or "").lower()
    if scheme in ("bearer", "basic"):
        return None
    s, e = m.span("v")
    if scheme and "=" in m.group("v"):  # Digest username="u", response="..."; AWS4-HMAC-SHA256 Credential=...
        return s, _header_end(text, s, m.group("q") or opener), _AUTH_MARKER
    value = m.group("v")
    if _is_placeholder(value) or not _is_high_entropy(value, 8):
        return None
    return s, e, _AUTH_MARKER


# --- Bearer / Basic -------------------------------------------------------------------

_BEARER: Final = re.compile(_LB_WORD + r"(?:Bearer|bearer|BEARER)[ \t]+(?P<v>[A-Za-z0-9._~+/\-]+=*)")
_BASIC: Final = re.compile(_LB_WORD + r"(?:Basic|basic|BASIC)[ \t]+(?P<v>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")


def _after_authorization(text: str, pos: int) -> bool:
    """Does ``Authorization:`` (or ``"authorization" =``...) end right before ``pos``?"""
    before = text[max(0, pos - 32) : pos].rstrip(" \t\"'\\")
    if not before.endswith((":", "=")):
        return False
    return before[:-1].rstrip(" \t\"'\\")[-13:].lower() == "authorization"


def _bearer(text: str, hs: int, _he: int) -> Span | None:
    """After ``Authorization:`` anything is the credential; in free text ('the bearer
    2024-05-01 date') only a long token-like word is."""
    m = _BEARER.match(text, hs)
    if m is None:
        return None
    segment = m.group("v")
    if MARKER_PREFIX in segment:
        return None
    ok = not _is_placeholder(segment) if _after_authorization(text, hs) else _is_high_entropy(segment, 16)
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

_AUTHORITY: Final = re.compile(r"""(?:[^\s/?#"'`<>\\]|<redacted:[a-z0-9\-]+>)*""")  # a marker may be in it
_USER: Final = re.compile(r"(?:[^:<]|<redacted:[a-z0-9\-]+>)*:")


def _url_password(text: str, hs: int, he: int) -> Span | None:
    """Only the password: the authority's userinfo ends at its LAST '@' (a password may hold
    '@': ``postgresql://dune:UlF@x@db:15432/dune``), the password starts at its first ':'."""
    if hs == 0 or not text[hs - 1].isalnum():
        return None
    authority = _AUTHORITY.match(text, he, he + _REACH).group()  # type: ignore[union-attr]  # '*' always matches
    at = authority.rfind("@")
    if at < 0:
        return None
    user = _USER.match(authority, 0, at)
    if user is None:
        return None
    password = authority[user.end() : at]
    if not password or MARKER_PREFIX in password or _is_reference(password):
        return None
    return he + user.end(), he + at, "<redacted:url-password>"


# --- mysql -pPASSWORD, sshpass -p PASSWORD -----------------------------------------------

_SEGMENT_END: Final = re.compile(r"[\n;|]|&&")
_MYSQL_P: Final = re.compile(r"[ \t]-p(?=\S)")  # -pSECRET: glued (-p alone prompts)
_SSHPASS_P: Final = re.compile(r"[ \t]+-p[ \t]*")
_FLAG_ARG: Final = re.compile(r"""\"[^"\n]*\"|'[^'\n]*'|[^\s"'`;&|()<>]+""")


def _flag_password(flag: re.Pattern[str], text: str, start: int) -> Span | None:
    """The argument of the first ``flag`` after ``start`` in this command (up to ``;``, ``|``, ``&&``)."""
    limit = min(len(text), start + _REACH // 4)  # a command line
    end = _SEGMENT_END.search(text, start, limit)
    f = flag.search(text, start, end.start() if end else limit)
    if f is None:
        return None
    m = _FLAG_ARG.match(text, f.end())
    if m is None:
        return None
    s, e = m.span()
    if text[s] in "\"'":
        s, e = s + 1, e - 1
    if s >= e or _is_reference(text[s:e]):
        return None
    return s, e, "<redacted:password-flag>"


def _mysql_password(text: str, hs: int, he: int) -> Span | None:
    """``mysql -u root -pSECRET db`` (mysql, mysqldump, mysqladmin, mariadb): the password is glued to -p."""
    if hs > 0 and text[hs - 1].isalnum() and _AFTER_ESCAPE_AT.match(text, hs) is None:
        return None
    return _flag_password(_MYSQL_P, text, he)


def _sshpass_password(text: str, hs: int, he: int) -> Span | None:
    """``sshpass -p SECRET ssh ...``."""
    if text[max(0, hs - 3) : hs].lower() != "ssh":
        return None
    return _flag_password(_SSHPASS_P, text, he)


CONTEXT_RULES: Final[dict[str, tuple[tuple[str, ...], ContextRule]]] = {
    "bearer-token": (("bearer",), _bearer),
    "basic-auth": (("basic",), _basic),
    "url-password": (("://",), _url_password),
    "password-flag": (("mysql", "mariadb"), _mysql_password),
    "password-flag/sshpass": (("pass",), _sshpass_password),
    "secret-assignment": (
        ("key", "token", "secret", "pass", "auth", "cookie", "credential", "bearer", "_pat", "sig=", "pwd="),
        _assignment,
    ),
}
"""Context rules by marker: (folded triggers, rule), tried in this order at a trigger.
``secret-assignment`` also makes ``auth-header`` (``Authorization: Token ...``,
``Proxy-Authorization: Digest ...``)."""


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


_TEDDY_BUCKETS: Final = (
    ("k_test_", "://", "hvs.", "auth"), ("pass", "basic", "0q~", "mysql"), ("akia", "key", "aiza", "token"),
    ("shp", "xapp-", "/api/webhooks/", "xox"), ("gho_", "0:a", "hooks.slack.com", "asia"),
    ("ghu_", "ghp_", "ghr_", "glpat-"), ("credential", "hf_", "bearer", "hrku-"),
    ("gldt-", "k_live_", "gocspx-", "npm_"), ("mariadb", "glrt-", "-----begin"), ("nrak-", "nrii-", "ghs_"),
    ("secret", "skc", "ske"), ("_v0_", "whsec_", "sk-"), ("eyj", "skf", "sig="), ("ska", "sg.", "skd"),
    ("_pat", "pwd=", "pypi-"), ("sk0", "cookie", "skb"),
)  # fmt: skip
"""The triggers in Teddy's 16 buckets. Teddy matches a bucket by the nibbles of its literals'
first 3 bytes, any mix of them ('ghp_' with 'auth' also takes 'ahth', 'guth'...), so literals
that share bytes go together. Found by a local search minimising the (position, bucket)
matches over traced's own source and docs: 2 KB of code or Markdown scans 20-30% faster than
with sorted runs, 1.5-3x faster than in an arbitrary order. A trigger missing here still
works (it goes last), only a little slower; tests/redaction checks that none is missing."""


def _bucket_order(triggers: Iterable[str], buckets: tuple[tuple[str, ...], ...] = _TEDDY_BUCKETS) -> list[str]:
    """The triggers in pattern-id order, so that each of ``buckets`` is one Teddy bucket.

    Teddy gives pattern i the bucket 15 - i % 16 (unless a literal with the same low nibbles
    came first): bucket 15 - c holds the ids c, c + 16, c + 32...
    """
    wanted = set(triggers)
    flat: list[str] = [t for group in buckets for t in group if t in wanted]
    flat += sorted(wanted - set(flat))
    n = len(flat)
    out = [""] * n
    k = 0
    for column in range(16):
        for i in range(column, n, 16):
            out[i] = flat[k]
            k += 1
    return out


_Overlap = tuple[int, int, bytes]


def _overlaps(triggers: list[str]) -> tuple[dict[str, tuple[_Overlap, ...]], ...]:
    """Per trigger id: {folded character right after it: ((offset, id, trigger), ...)} of the
    triggers that may start inside it and go on past it ('' for those inside it).

    The scan reports non-overlapping matches, so 'shp' in 'sshpass' hides 'pass': a string
    with a hit looks for them again (``Redactor._hidden``).
    """
    table: list[dict[str, tuple[_Overlap, ...]]] = []
    for a in triggers:
        found: dict[str, list[_Overlap]] = {}
        for k in range(1, len(a)):
            for j, b in enumerate(triggers):
                if a[k:].startswith(b):
                    found.setdefault("", []).append((k, j, b.encode()))
                elif b.startswith(a[k:]):
                    found.setdefault(b[len(a) - k], []).append((k, j, b.encode()))
        table.append({c: tuple(v) for c, v in found.items()})
    return tuple(table)


_TABLE: Final = _trigger_table()
_TRIGGERS: Final = _bucket_order(list(_TABLE))
_ENTRIES: Final = tuple(_TABLE[t] for t in _TRIGGERS)
_OVERLAPS: Final = _overlaps(_TRIGGERS)
_FOLD_CHAR: Final = {c: _fold(c).decode() for c in string.ascii_uppercase + string.digits}


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
    env: BytesAhoCorasick | None
    """The env values (UTF-8), exact and leftmost-longest, for the strings that had a hit; or None."""
    clean: set[bytes]
    """Short payloads (their strings joined and folded) already scanned clean under these values."""
    fold: bytes
    """The translation table the scan's input goes through (``_fold_table``)."""
    env_hiders: frozenset[int]
    """Triggers an env value may start at or inside of (the scan would report the trigger only)."""
    key_words: BytesAhoCorasick
    """``_KEY_WORDS`` as they end a run of letters in folded text: each word followed by each byte the
    fold gives that is not a letter (``pat_``, ``pat0``, ``pat\\x00``...): ``redact_all``'s prefilter."""
    wire_fold: bytes
    """``fold``, then the triggers' punctuation -> ':' and every other byte that is no letter, '0' or '_'
    -> NUL (``_wire_fold``): the wire prefilter's translation table."""
    wire_scan: BytesAhoCorasick | None
    """The wire prefilter (``Redactor._wire_suspects``): the triggers, the key words followed by each of
    ``_WIRE_ENDS`` and, while they fit in _TEDDY_MAX, the env values, all through ``wire_fold``; None when
    an env value holds too few bytes that fold to something (the prefilter then stands aside)."""
    wire_env: BytesAhoCorasick | None
    """The env values that did not fit in ``wire_scan``, or None."""
    wire_kinds: tuple[int, ...]
    """Per ``wire_scan`` pattern: _W_TRIGGER, _W_KEY_WORD or _W_ENV (how a hit on it may be dismissed)."""
    inert: dict[bytes, bool]
    """``Redactor._inert_at``'s answers: 4 bytes, a fixstr's header and its UTF-8 -> may its hits go?"""
    json_ok: bool
    """Whether ``scan`` finds in a payload's JSON (``redact_all``'s prefilter) every hit it finds in the
    payload's strings: true unless an env value holds a character JSON escapes (or no UTF-8)."""
    keys: dict[Any, int] = field(default_factory=dict)
    """Object key -> its kind (``Redactor._kind``: _PLAIN/_SECRET/_CONTAINER, | _RENAMED when
    ``redact_text`` changes the key under these values); keys recur in every event."""
    renamed: dict[Any, tuple[str, int]] = field(default_factory=dict)
    """The keys of ``keys`` with _RENAMED -> (redacted key, redactions)."""
    plain_json: dict[bytes, bool] = field(default_factory=dict)
    """A key's JSON bytes -> whether it is _PLAIN (``_in_plain_key``)."""


@lru_cache(maxsize=256)
def _compile(values: frozenset[str]) -> _Compiled:
    """The automata for one set of env values: linear in the values' total length."""
    ordered = sorted(values, key=lambda v: (-len(v), v))
    env = (
        BytesAhoCorasick([v.encode("utf-8", "surrogatepass") for v in ordered], matchkind=MatchKind.LeftmostLongest)
        if ordered
        else None
    )
    folded = sorted({_fold(v) for v in ordered})
    triggers = [t.encode() for t in _TRIGGERS]
    fold = _fold_table([*triggers, *folded])
    entries: list[_Entry | None] = list(_ENTRIES)
    env_scan = None
    if len(triggers) + len(folded) <= _TEDDY_MAX:
        triggers += folded
        entries += [None] * len(folded)
    elif folded:
        env_scan = BytesAhoCorasick(folded, matchkind=MatchKind.LeftmostFirst)
    scan = BytesAhoCorasick(triggers, matchkind=MatchKind.LeftmostFirst)
    json_ok = all(_json_verbatim(v) for v in values) and all(fold[b] == b for b in b"".join(_KEY_WORDS))
    ends = sorted({fold[b] for b in range(256)} - set(range(0x61, 0x7B)))
    key_words = BytesAhoCorasick([w + bytes([b]) for w in _KEY_WORDS for b in ends], matchkind=MatchKind.LeftmostFirst)
    wire_fold, wire_scan, wire_env, wire_kinds = _wire_prefilter(fold, folded)
    return _Compiled(scan, tuple(entries), env_scan, env, set(), fold, _env_hiders(folded), key_words, wire_fold,
                     wire_scan, wire_env, wire_kinds, {}, json_ok)


_WIRE_LITERALS: Final = {"_pat": "hub_pat_"}
"""Triggers the wire prefilter looks for as a longer literal: '_pat' is in every ``file_path``, and
all it finds is a ``github_pat_`` token or a name whose last word is 'pat', which the key words find."""
_WIRE_BUCKETS: Final = (
    ("k_test_", "://", "0q~", "auth"), ("pass", "basic", "whsec_", "mysql"), ("akia", "key", "aiza", "token"),
    ("shp", "xapp-", "/api/webhooks/", "cookie"), ("gho_", "0:a", "hooks.slack.com", "asia"),
    ("ghu_", "ghp_", "ghr_", "glpat-"), ("credential", "hf_", "bearer", "hrku-"),
    ("gldt-", "k_live_", "gocspx-", "sig_"), ("pat\x00", "pat0", "pat_", "xox"), ("sig\x00", "sig0", "npm_", "sig="),
    ("secret", "skc", "skb", "skf"), ("ska", "skd", "sk0", "ske"), ("_v0_", "pwd=", "sk-", "sg."),
    ("mariadb", "glrt-", "-----begin", "eyj"), ("nrak-", "nrii-", "ghs_", "_pat"), ("hvs.", "pypi-", "pat:"),
)  # fmt: skip
"""``_TEDDY_BUCKETS`` for the wire prefilter, by trigger and by key word with its end (as it folds
there: ``_wire_fold``, ``_WIRE_LITERALS``). Found the same way, over traced's source, tests and
docs: the key words in buckets of their own save ~15% of the scan (a 2 KB edit: 0.29 us against
0.42 us with ``_TEDDY_BUCKETS`` and the key words last)."""
_NEVER_FOLDED: Final = tuple(bytes((0x80 + i, 0x80, 0x80)) for i in range(4))
"""Literals ``_wire_fold`` never yields (it yields ASCII only). A few values alone make the library
pick a byte-frequency prefilter that folded text defeats (3 env values: 3.5 us per 2 KB); with
these it runs Teddy (0.1 us)."""
_W_TRIGGER: Final = 0
_W_KEY_WORD: Final = 1  # its last byte only says that the word ends there
_W_ENV: Final = 2  # never dismissed


def _wire_fold(fold: bytes) -> bytes:
    """``fold``, then ``_WIRE_COLON`` -> ':' and all but letters, '0', '_' and NUL -> NUL.

    It is coarser than ``fold`` (each byte folds to what ``fold`` gives it, folded once more), so a
    literal ``fold`` finds, this table finds folded the same way: the prefilter loses no hit. What
    it buys: only four bytes that are no letter remain, so the key words with each byte that may end
    them (``_WIRE_ENDS``) fit in the one Teddy scan next to the triggers.
    """
    def g(b: int) -> int:
        if 0x61 <= b <= 0x7A or b in b"0_":
            return b
        return 0x3A if b in _WIRE_COLON else 0
    return bytes(g(b) for b in fold)


def _wire_prefilter(
    fold: bytes, folded_values: list[bytes]
) -> tuple[bytes, BytesAhoCorasick | None, BytesAhoCorasick | None, tuple[int, ...]]:
    """The wire prefilter's table, automata and pattern kinds (see ``_Compiled.wire_scan``)."""
    table = _wire_fold(fold)
    sources = {t: (_WIRE_LITERALS.get(t, t).encode().translate(table), _W_TRIGGER) for t in _TRIGGERS}
    taken = {p for p, _kind in sources.values()}
    for w in _KEY_WORDS:
        for e in _WIRE_ENDS:
            p = (w + e).translate(table)
            if p not in taken:  # 'sig' and ':' is the trigger 'sig=': as a trigger, it is checked whole
                sources[(w + e).decode()] = (p, _W_KEY_WORD)
                taken.add(p)
    patterns = [sources[name][0] for name in _bucket_order(sources, _WIRE_BUCKETS)]
    kinds = [sources[name][1] for name in _bucket_order(sources, _WIRE_BUCKETS)]
    # A value's fold, without the NULs at its ends (it still finds the value): then no literal starts
    # with a NUL, so none starts on the NUL that ends a key word's hit, which may be another object's.
    values = sorted({v.translate(table).strip(b"\x00") for v in folded_values})
    if any(len(v) < 3 for v in values):
        return table, None, None, ()
    env = None
    if len(patterns) + len(values) <= _TEDDY_MAX:
        patterns += values
        kinds += [_W_ENV] * len(values)
    elif values:
        env = BytesAhoCorasick([*values, *_NEVER_FOLDED], matchkind=MatchKind.LeftmostFirst)
    return table, BytesAhoCorasick(patterns, matchkind=MatchKind.LeftmostFirst), env, tuple(kinds)


def _in_plain_key(data: bytes, hs: int, he: int, redactor: Redactor) -> bool:
    """Whether ``data[hs:he]`` (JSON; a match, so no ``"`` in it) lies in an object key that names no
    secret and that ``redact_text`` leaves as it is (``file_path`` holds the trigger ``_pat``, a key
    ``ghp_...`` is a token): ``redact`` reads keys by name and redacts them (``Redactor._kind``)."""
    close = data.find(b'"', he)
    if close < 0 or data[close + 1 : close + 2] != b":" or data[close - 1] == 0x5C:  # 0x5C: a backslash
        return False
    start = data.rfind(b'"', 0, hs)
    if start <= 0 or data[start - 1] not in b"{," or data[start - 1 : start] == b"\\":
        return False
    raw = data[start + 1 : close]
    cache = redactor._c.plain_json
    plain = cache.get(raw)
    if plain is not None:
        return plain
    try:
        key = raw.decode() if b"\\" not in raw else msgspec.json.decode(data[start : close + 1])
    except (UnicodeDecodeError, msgspec.DecodeError):
        return False
    if type(key) is not str:
        return False
    kind = redactor._c.keys.get(key)
    if kind is None:
        kind = redactor._kind(key)
    if len(cache) >= _KEYS_CAP:
        cache.clear()
    cache[raw] = plain = kind == _PLAIN
    return plain


def _json_verbatim(value: str) -> bool:
    """Whether ``value`` appears in JSON as its UTF-8 bytes (msgspec escapes only ``"``, ``\\`` and
    control characters; it writes all else, non-ASCII included, as UTF-8)."""
    try:
        raw = value.encode()
    except UnicodeEncodeError:  # a lone surrogate (os.environ's surrogateescape)
        return False
    return not any(b < 0x20 or b in b'"\\' for b in raw)


def _env_hiders(folded: list[bytes]) -> frozenset[int]:
    """Ids of the triggers an env value (folded, sorted) may start at or inside of: a value
    starts with one of the trigger's tails, or a tail starts with a value."""
    values = set(folded)
    hiders = set()
    for i, t in enumerate(_TRIGGERS):
        for k in range(len(t)):
            tail = t[k:].encode()
            j = bisect_left(folded, tail)  # the first value >= tail: it starts with tail if any does
            if (j < len(folded) and folded[j].startswith(tail)) or any(
                tail[:n] in values for n in range(SECRET_ENV_MIN_LEN, len(tail) + 1)
            ):
                hiders.add(i)
                break
    return frozenset(hiders)


# ---------------------------------------------------------------------------
# The redactor
# ---------------------------------------------------------------------------

_Hits = list[tuple[int, int, int]]
Wire = bytes | msgspec.Raw
"""A payload's msgpack (or a msgpack document holding it), as ``redact_all`` takes it."""


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
        if not hits and "\x1b" not in text:  # (raw terminal codes may split a name: ``_process``)
            return text, 0
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
        if not strings:
            return self._rebuild(payload, {}) if secret else (payload, 0)
        # The one scan, of all the strings joined (no trigger or env value holds a NUL).
        c = self._c
        hay = strings[0] if len(strings) == 1 else "\x00".join(strings)
        ascii_ = hay.isascii()
        raw = hay.encode() if ascii_ else hay.encode("utf-8", "surrogatepass")
        codes = "\x1b" in hay  # raw terminal codes may split a name: such strings are looked at anyway
        if len(raw) <= _CLEAN_MAX_LEN:
            # A clean scan depends on the folded text only, and short payloads recur folded
            # ('pytest -q … #0', 'toolu_0000…', 'claude-sonnet-0'): remember those.
            folded: bytes | bytearray = raw.translate(c.fold)
            if folded in c.clean and not codes:
                return self._rebuild(payload, {}) if secret else (payload, 0)
        else:
            folded = bytearray(raw).translate(c.fold)  # (bytearray's translate is ~15% faster)
        hits = c.scan.find_matches_as_indexes(folded)
        if c.env_scan is not None:
            n_entries = len(c.entries)  # an id past the table: an env value
            hits += [(n_entries, s, e) for _i, s, e in c.env_scan.find_matches_as_indexes(folded)]
            hits.sort(key=itemgetter(1))
        if not hits and not codes:
            if len(raw) <= _CLEAN_MAX_LEN:
                if len(c.clean) >= _CLEAN_CAP:
                    c.clean.clear()
                c.clean.add(bytes(folded))
            return self._rebuild(payload, {}) if secret else (payload, 0)
        if hits and not ascii_:
            hits = _char_offsets(raw, hits)
        changed = self._changed(strings, hits, codes)
        return self._rebuild(payload, changed) if changed or secret else (payload, 0)

    def redact_all(
        self, payloads: list[Any], sizes: list[int] | None = None, wires: Sequence[Wire] | None = None
    ) -> list[tuple[Any, int]]:
        """Redact several payloads with few scans: the same as ``[self.redact(p) for p in payloads]``.

        Only the payloads a prefilter finds something in are redacted on their own (``redact``);
        the rest come back as they are, with 0. ``wires``: for each payload, the msgpack it was
        decoded from (or a valid msgpack document holding it: the daemon's frame), which
        ``_wire_suspects`` scans as it is, with no walk and no encoding. Without them, ``sizes``:
        each payload's size on the wire (bytes), when known. A payload up to ``_JSON_SCAN_MAX``
        is then prefiltered on its JSON (``_json_suspects``); a larger one, or any without a
        size, by walking its strings and scanning them ~16 KB at a time (``_walk_suspects``).
        """
        out = [(p, 0) for p in payloads]
        for i, redacted, n in self.redactions(payloads, sizes, wires):
            out[i] = (redacted, n)
        return out

    def redactions(
        self, payloads: list[Any], sizes: list[int] | None = None, wires: Sequence[Wire] | None = None
    ) -> list[tuple[int, Any, int]]:
        """``redact_all`` for the caller that keeps the payloads: (index, redacted copy, redactions)
        of those that changed, in order; the others are to be kept as they are."""
        if not self.enabled:
            return []
        if len(payloads) < 2:
            suspects: Iterable[int] = range(len(payloads))
        else:
            found = None
            if wires is not None and len(wires) == len(payloads) and self._c.wire_scan is not None:
                found = self._wire_suspects(wires)
            suspects = sorted(found if found is not None else self._suspects(payloads, sizes))
        out = []
        for i in suspects:
            redacted, n = self.redact(payloads[i])
            if n:
                out.append((i, redacted, n))
        return out

    def _suspects(self, payloads: list[Any], sizes: list[int] | None) -> set[int]:
        """The payloads the JSON prefilter (those up to ``_JSON_SCAN_MAX``) or the walk finds something in."""
        suspects: set[int] = set()
        small = ([i for i, n in enumerate(sizes) if n <= _JSON_SCAN_MAX]
                 if sizes is not None and self._c.json_ok else [])
        found = self._json_suspects([payloads[i] for i in small]) if small else None
        if found is None:
            small = []
        else:
            suspects.update(small[k] for k in found)
        taken = set(small)
        rest = [i for i in range(len(payloads)) if i not in taken]
        if rest:
            suspects.update(rest[k] for k in self._walk_suspects([payloads[i] for i in rest]))
        return suspects

    def _wire_suspects(self, wires: Sequence[Wire]) -> set[int] | None:
        """The prefilter on msgpack: the payloads whose msgpack holds a hit (a trigger, an env value,
        a key word ending a run of letters) that ``_inert_at`` cannot dismiss; None when a payload
        holds a character ``_LOWERS_TO_ASCII`` names.

        Why this is enough: msgpack writes a string as its UTF-8 bytes, unescaped, so the
        folded bytes hold every hit ``redact`` finds in the strings (``_wire_fold`` folds no
        less than ``fold``), and every secret-named key holds a trigger or a key word
        ending a run of letters (a key's last byte is followed by its value's header: a
        non-ASCII byte, which folds to NUL, or a small integer, which is no secret). A match the
        scan hid (it reports non-overlapping matches) overlaps one it reported, starting
        inside it: ``_inert_at`` dismisses a hit only where that one is dismissed too.
        """
        c = self._c
        scan = c.wire_scan
        if scan is None:
            return None
        kinds = c.wire_kinds
        n_kinds = len(kinds)
        suspects: set[int] = set()
        n = len(wires)
        i = 0
        while i < n:
            j = min(n, i + _WIRE_BATCH // (len(wires[i]) + 1) + 1)  # a read's worth at a time
            data = bytearray(b"\x00").join(wires[i:j])  # NUL: no literal holds one, but at a key word's end
            if (data.find(0xE2) >= 0 or data.find(0xC4) >= 0) and _lowers_to_ascii(data):  # (memchr first)
                return None
            folded = data.translate(c.wire_fold)  # (a bytearray's: ~15% faster than a bytes')
            hits = scan.find_matches_as_indexes(folded)
            if c.wire_env is not None:
                hits += [(n_kinds, s, e) for _pid, s, e in c.wire_env.find_matches_as_indexes(folded)]
            starts: list[int] | None = None
            for pid, hs, he in hits:
                kind = kinds[pid] if pid < n_kinds else _W_ENV
                if kind != _W_ENV and self._inert_at(data, hs, he - kind):
                    continue
                if starts is None:
                    starts = list(accumulate(map((1).__add__, map(len, wires[i:j])), initial=0))
                # an env value's fold may span a NUL: every payload it touches
                suspects.update(range(i + bisect_right(starts, hs) - 1, i + bisect_right(starts, he - 1)))
            if data.find(0x1B) >= 0:  # a raw ESC: the codes may split a name (memchr, ~1 µs per 64 KiB)
                starts = starts or list(accumulate(map((1).__add__, map(len, wires[i:j])), initial=0))
                suspects.update(i + bisect_right(starts, at) - 1 for at in _positions(data, 0x1B))
            i = j
        return suspects

    def _inert_at(self, data: bytes | bytearray, hs: int, he: int) -> bool:
        """Whether ``data[hs:he]`` (msgpack; a trigger or key word, all ASCII) is in no string, or in
        a fixstr that changes nothing, as a key or as a string (``inert``): ``file_path``,
        ``input_tokens``, a session id. Never wrong, sometimes too careful.

        The last non-ASCII byte before the hit must be a fixstr's header (0xA0 | n) whose n bytes
        hold the hit. It is no string's content: no lead byte comes before it as UTF-8 would
        need (``_continues``), and a string never starts with a continuation byte (0x80-0xBF).
        Nor is it a str8/16/32 length (the bytes that could be their headers are checked). So
        either it is that fixstr's header, or no string holds the hit (nothing between is a
        header, all ASCII).
        """
        lo = hs - _FIXSTR_MAX - 1 if hs > _FIXSTR_MAX else 0
        h = lo + len(data[lo:hs].rstrip(_ASCII)) - 1  # the header
        e = h + data[h] - 0x9F  # its string's end: h + 1 + n
        if h < lo or e <= h or e < he or e > h + 1 + _FIXSTR_MAX or e > len(data):
            return False
        # what the answer depends on: the 4 bytes before the header (NULs before a document's start), the string
        window = bytes(data[h - 4 : e] if h >= 4 else b"\x00" * (4 - h) + data[:e])
        inert = self._c.inert.get(window)
        if inert is None:
            inert = self._inert(window)
            if len(self._c.inert) >= _KEY_KINDS_MAX:
                self._c.inert.clear()
            self._c.inert[window] = inert
        return inert

    def _inert(self, window: bytes) -> bool:
        """``_inert_at``'s answer from 4 bytes, a fixstr's header and its string."""
        if 0xDB in window[:3] or window[2] == 0xDA or _continues(window, 4):
            return False  # a str16 / str32 length; or a character's continuation
        try:
            key = window[5:].decode()
        except UnicodeDecodeError:
            return False
        kind = _KEY_KINDS.get(key)
        if kind is None:
            kind = _key_kind(key)
        return kind == _PLAIN and self.redact_text(key)[1] == 0

    def _walk_suspects(self, payloads: list[Any]) -> set[int]:
        """The payloads with a secret-named key or a hit in their strings (walked, scanned in groups)."""
        suspects: set[int] = set()
        strings: list[str] = []
        ends: list[int] = []
        """Per payload of the current group: how many strings were collected up to its last one."""
        size = first = 0
        for i, p in enumerate(payloads):
            before = len(strings)
            t = type(p)
            if t is dict:
                if self._collect_dict(p, strings):
                    suspects.add(i)
            elif t is list:
                if self._collect_list(p, strings):
                    suspects.add(i)
            elif t is str:
                suspects.add(i)
            ends.append(len(strings))
            for k in range(before, len(strings)):
                size += len(strings[k]) + 1
            if size >= _BATCH_SCAN or i == len(payloads) - 1:
                suspects.update(first + k for k in self._hit_payloads(strings, ends))
                strings, ends, size, first = [], [], 0, i + 1
        return suspects

    def _json_suspects(self, payloads: list[Any]) -> set[int] | None:
        """The prefilter: the payloads whose JSON the scan finds a trigger or env value in, or a
        secret key word in (``_KEY_WORDS``) — the only ones ``redact`` could change; None when the
        payloads have no JSON form or hold a character ``_LOWERS_TO_ASCII`` names.

        Why this is enough: msgspec writes a string's characters as they are, escaping only ``"``,
        ``\\`` and control characters, none of which a trigger holds (nor, with ``json_ok``, an env
        value); the same fold and automaton then find in the JSON every hit they find in the
        strings, plus some in keys and numbers (those payloads are only redacted the full way).
        Each payload is one line and no literal spans a newline, so a hit names its payload, and
        a match the scan hid (it reports non-overlapping matches) overlaps one it reported.
        """
        try:
            data = _JSON_LINES.encode_lines(payloads)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
            return None
        if not data.isascii() and any(c in data for c in _LOWERS_TO_ASCII):
            return None
        c = self._c
        suspects = {i for i, p in enumerate(payloads) if type(p) is str}  # redact_text, as in redact
        first = pos = 0
        end = len(data)
        while pos < end:  # a chunk of ~16 KB of whole lines at a time (see _BATCH_SCAN)
            stop = data.find(b"\n", pos + _BATCH_SCAN)
            stop = end if stop < 0 else stop + 1
            chunk = data[pos:stop]
            folded = chunk.translate(c.fold)  # (a newline folds to NUL: lines are found in ``chunk``)
            hits = c.scan.find_matches_as_indexes(folded)
            if c.env_scan is not None:
                hits += c.env_scan.find_matches_as_indexes(folded)
            starts = [hs for _pid, hs, he in hits if not _in_plain_key(chunk, hs, he, self)]
            starts += _positions(chunk, b"\\u001b")  # a raw ESC, as JSON writes it
            # a key word ending a run of letters ("pat" in a path does not), in a key (values have triggers)
            starts += [hs for _pid, hs, he in c.key_words.find_matches_as_indexes(folded)
                       if not _in_plain_key(chunk, hs, he - 1, self)]
            if starts:
                newlines = []
                at = chunk.find(b"\n")
                while at >= 0:
                    newlines.append(at)
                    at = chunk.find(b"\n", at + 1)
                suspects.update(first + bisect_left(newlines, hs) for hs in starts)
            first += chunk.count(b"\n")
            pos = stop
        return suspects

    def _hit_payloads(self, strings: list[str], ends: list[int]) -> list[int]:
        """Indexes (into ``ends``) of the payloads whose ``strings`` the one scan finds a hit in."""
        if not strings:
            return []
        hay = "\x00".join(strings)
        hits = self._scan(hay)  # as in redact: no trigger or env value holds a NUL
        at = [hs for _pid, hs, _he in hits] + _positions(hay, "\x1b")  # and raw ESCs
        if not at:
            return []
        starts = list(accumulate((len(x) + 1 for x in strings), initial=0))
        return [bisect_right(ends, bisect_right(starts, hs) - 1) for hs in at]

    def _rebuild(self, payload: Any, changed: dict[int, tuple[str, int]]) -> tuple[Any, int]:
        walk = _Rebuild(changed)
        return self._rebuild_dict(payload, walk) if type(payload) is dict else self._rebuild_list(payload, walk)

    # --- the scan ---------------------------------------------------------------------

    def _scan(self, text: str) -> _Hits:
        """Hits (pattern id, start, end) in ``text`` (characters); the one scan clean text pays."""
        ascii_ = text.isascii()
        raw = text.encode() if ascii_ else text.encode("utf-8", "surrogatepass")
        fold = self._c.fold
        folded = raw.translate(fold) if len(raw) < 256 else bytearray(raw).translate(fold)  # (~15% faster)
        hits = self._c.scan.find_matches_as_indexes(folded)
        env_scan = self._c.env_scan
        if env_scan is not None:
            n = len(self._c.entries)  # an id past the table: an env value
            hits += [(n, s, e) for _i, s, e in env_scan.find_matches_as_indexes(folded)]
            hits.sort(key=itemgetter(1))
        if hits and not ascii_:
            hits = _char_offsets(raw, hits)
        return hits

    def _changed(self, strings: list[str], hits: _Hits, codes: bool = False) -> dict[int, tuple[str, int]]:
        """{index: (redacted, count)} of the ``strings`` that changed, from the hits in them joined
        (and, with ``codes``, every string holding a raw terminal code)."""
        per_string: dict[int, _Hits] = {}
        if codes:
            per_string.update((i, []) for i, x in enumerate(strings) if "\x1b" in x)
        if len(strings) == 1:
            per_string[0] = hits
        elif hits:  # hits come in order: walk the strings along
            k = base = 0
            end = len(strings[0])
            for pid, s, e in hits:
                while s > end:  # past string k and its NUL
                    k += 1
                    base = end + 1
                    end = base + len(strings[k])
                per_string.setdefault(k, []).append((pid, s - base, e - base))
        changed: dict[int, tuple[str, int]] = {}
        for i, string_hits in per_string.items():
            out, n = self._process(strings[i], string_hits)
            if n:
                changed[i] = (out, n)
        return changed

    # --- one string, at its hits ------------------------------------------------------------

    def _maybe_env(self, hits: _Hits) -> bool:
        """May ``text`` hold an env value: a hit on one, or a trigger one may start inside of?"""
        n_triggers = len(_TRIGGERS)
        hiders = self._c.env_hiders
        for pid, _s, _e in hits:  # noqa: SIM110  (a loop: no generator to build on this path)
            if pid >= n_triggers or pid in hiders:
                return True
        return False

    def _hidden(self, text: str, hits: _Hits) -> _Hits:
        """``hits`` and the triggers they hid (a non-overlapping scan reports one match per span)."""
        n_triggers = len(_TRIGGERS)
        for pid, _hs, _he in hits:
            if pid >= n_triggers or _OVERLAPS[pid]:
                break
        else:
            return hits  # nothing can hide anything
        extra: _Hits = []
        for pid, hs, he in hits:
            if pid < n_triggers:
                overlaps = _OVERLAPS[pid]
                if not overlaps:
                    continue
                c = text[he : he + 1]
                for k, tid, t in (*overlaps.get("", ()), *overlaps.get(_FOLD_CHAR.get(c, c), ())):
                    p = hs + k
                    if _fold(text[p : p + len(t)]) == t:
                        extra.append((tid, p, p + len(t)))
            else:  # a folded env value that was not one (those were replaced): rescan what it hid
                found = self._scan(text[hs + 1 : he + 16])
                extra += [(i, hs + 1 + s, hs + 1 + e) for i, s, e in found if i < n_triggers]
        if not extra:
            return hits
        return sorted({*hits, *extra}, key=lambda h: h[1])

    def _process(self, text: str, hits: _Hits) -> tuple[str, int]:
        """Apply the rules at ``hits`` (character offsets), one kind after the other: env values,
        then shapes, then context rules. Each kind sees the text the one before left, markers
        included, so a token keeps its own marker under a secret name
        (``OPENAI_API_KEY=<redacted:openai-key>``). After a round that replaced something, the
        lines that changed get another round (rules read one line, and up to 72 characters before
        a trigger), until nothing is left that a second pass would take: redaction is idempotent.
        Only strings holding a secret pay for that.

        A string with a terminal's control codes in it (``_ANSI``) is redacted as it is, then as
        the text a terminal shows, the codes taken out of that result (one pass, markers kept): when
        the codes hid a secret (``\x1b[1mGH_TOKEN\x1b[0m=…``), the record is that second text and
        loses them; else it keeps them."""
        try:
            return self._shown(text, hits)
        except Exception:  # a bug, or input no rule foresaw: never the text as it came
            return FAILED_MARKER, 1

    def _shown(self, text: str, hits: _Hits) -> tuple[str, int]:
        """``_process``'s work: the text as it is, then as a terminal shows it."""
        out, count = self._redact_at(text, hits)
        plain = _shown_text(out) if _ANSI_INTRO.search(out) else out
        if plain != out:
            found = self._scan(plain)
            if found:
                shown, n = self._redact_at(plain, found)
                if n:
                    return shown, count + n
        return out, count

    def _redact_at(self, text: str, hits: _Hits) -> tuple[str, int]:
        """``_process`` without the terminal's codes: the rules at ``hits`` in ``text`` as it is."""
        count = 0
        env = self._c.env
        if env is not None and self._maybe_env(hits):
            raw = text.encode("utf-8", "surrogatepass")
            found = env.find_matches_as_indexes(raw)
            if found:
                if not text.isascii():
                    found = _char_offsets(raw, found)
                env_spans = [(s, e, ENV_VALUE_MARKER) for _i, s, e in found]
                text, count, hits = self._replace(text, env_spans, all_lines=True)
        entries = self._c.entries
        n_entries = len(entries)
        for _round in range(_MAX_ROUNDS):
            hits = self._hidden(text, hits)
            spans: list[Span] = []
            for pid, hs, he in hits:
                if pid >= n_entries or (entry := entries[pid]) is None or not entry[0]:
                    continue
                if spans and not _free(spans, hs, he):
                    continue  # inside a token already taken (a key block holds many)
                for shape in entry[0]:
                    start = hs - shape.back
                    if shape.lead:
                        window = text[max(0, start - 16) : start]
                        start -= len(window) - len(window.rstrip(shape.lead))
                    if start < 0:
                        continue
                    m = shape.pattern.match(text, start, start + _SHAPE_REACH)
                    if m is None:
                        continue
                    s, e = m.span("v") if shape.inner else m.span()
                    segment = text[s:e]
                    # Not a credential, or already holds a marker (keeps redaction idempotent).
                    if (shape.check is not None and not shape.check(segment, m)) or MARKER_PREFIX in segment:
                        continue
                    if not spans or _free(spans, s, e):
                        insort(spans, (s, e, shape.marker))
                        break
            if spans:
                text, n, hits = self._replace(text, spans, all_lines=True)
                count += n
                hits = self._hidden(text, hits)
            spans = []
            for pid, hs, he in hits:
                if pid >= n_entries or (entry := entries[pid]) is None or not entry[1]:
                    continue
                if spans and not _free(spans, hs, he):
                    continue
                for rule in entry[1]:
                    span = rule(text, hs, he)
                    if span is None:
                        continue
                    if not spans or _free(spans, span[0], span[1]):
                        insort(spans, span)
                        break
            if not spans:
                break
            # Every round that replaced something rescans the lines it changed: a rule's segment may
            # have overlapped one taken first, or a replacement may have changed what a rule reads
            # on its line (a quote it closed on: 'Cookie: `…Cookie: 0`'), so the next pass would differ.
            text, n, hits = self._replace(text, spans)
            count += n
            if not hits:
                break
        return text, count

    def _replace(
        self, text: str, spans: list[Span], all_lines: bool = False, rescan: bool = True
    ) -> tuple[str, int, _Hits]:
        """``text`` with ``spans`` replaced by their markers, their number, and the hits to look at
        next (none unless ``rescan``): outside the markers, and (unless ``all_lines``) on the lines
        that changed."""
        spans.sort()
        out: list[str] = []
        pos = length = 0
        changed: list[tuple[int, int]] = []  # the markers, in the new text
        for s, e, marker in spans:
            out.append(text[pos:s])
            length += s - pos
            out.append(marker)
            changed.append((length, length + len(marker)))
            length += len(marker)
            pos = e
        out.append(text[pos:])
        text = "".join(out)
        hits = self._scan(text) if rescan else []
        if not hits:
            return text, len(spans), hits
        starts = [s for s, _e in changed]
        lines: list[tuple[int, int]] = []  # the changed lines, merged
        if not all_lines:
            for s, e in changed:
                ls = text.rfind("\n", 0, s) + 1
                if lines and ls <= lines[-1][1]:
                    lines[-1] = (lines[-1][0], _line_end(text, e))
                else:
                    lines.append((ls, _line_end(text, e)))
        line_starts = [ls for ls, _le in lines]
        kept = []
        for hit in hits:
            hs = hit[1]
            i = bisect_right(starts, hs) - 1
            if i >= 0 and hs < changed[i][1]:
                continue  # inside a marker
            if not all_lines:
                j = bisect_right(line_starts, hs) - 1
                if j < 0 or hs > lines[j][1]:
                    continue  # on a line that did not change
            kept.append(hit)
        return text, len(spans), kept

    # --- the walks ------------------------------------------------------------------------
    #
    # _collect_* gather the strings to scan (in order) and say whether a secret-named key
    # needs redacting; _rebuild_* walk the same way, counting the same strings, and copy
    # only what changed. The two MUST skip and descend alike: they share _key_kind,
    # _keeps_value and _MIN_LEN, and tests/redaction checks them against per-string
    # redaction with hypothesis.

    def _collect_dict(self, obj: dict[Any, Any], out: list[str]) -> bool:
        secret = False
        kinds = self._c.keys
        for key, value in obj.items():
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(key)
            if kind > _CONTAINER:  # a key redact_text changes
                secret = True
                kind &= _KIND
            t = type(value)
            if kind:
                if kind == _SECRET:
                    secret = secret or not _keeps_value(value)
                    continue
                if t is dict:  # a container's mapping
                    secret = secret or self._container_changes(value)
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
                if container:  # a container's list of mappings (Playwright's cookies)
                    secret = secret or self._container_changes(value)
                    continue
                secret = self._collect_dict(value, out) or secret
            elif t is list:
                secret = self._collect_list(value, out) or secret
        return secret

    def _rebuild_dict(self, obj: dict[Any, Any], walk: _Rebuild) -> tuple[Any, int]:
        copy: dict[Any, Any] | None = None
        total = 0
        renames = False
        kinds = self._c.keys
        for key, value in obj.items():
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(key)
            if kind > _CONTAINER:
                renames = True
                kind &= _KIND
            t = type(value)
            new: Any
            if kind == _SECRET:
                if _keeps_value(value):
                    continue
                new, n = SECRET_KEY_MARKER, 1
            elif kind == _CONTAINER and t is dict:
                if not self._container_changes(value):
                    continue
                new, n = self._redact_container(value)
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
        if renames:
            return self._rename_keys(obj if copy is None else copy, total)
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
                    if not self._container_changes(value):
                        continue
                    new, n = self._redact_container(value)
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

    # --- keys -------------------------------------------------------------------------------

    def _kind(self, key: Any) -> int:
        """``key``'s kind under these values (cached): _PLAIN, _SECRET or _CONTAINER for the key it
        becomes, | _RENAMED when ``redact_text`` changes it (then in ``_Compiled.renamed``)."""
        c = self._c
        if len(c.keys) >= _KEYS_CAP:
            c.keys.clear()
            c.renamed.clear()
        if type(key) is not str:
            c.keys[key] = plain = _key_kind(key)
            return plain
        new, n = self.redact_text(key)
        if n and new != key:
            c.renamed[key] = (new, n)
        else:
            new = key
        name = _key_name(new) if MARKER_PREFIX in new else new
        kind = _KEY_KINDS.get(name)
        if kind is None:
            kind = _key_kind(name)
        if new is not key:
            kind |= _RENAMED
        c.keys[key] = kind
        return kind

    def _renames(self, mapping: dict[Any, Any]) -> bool:
        """Does ``redact_text`` change a key of ``mapping``?"""
        kinds = self._c.keys
        for key in mapping:
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(key)
            if kind > _CONTAINER:
                return True
        return False

    def _rename_keys(self, mapping: dict[Any, Any], total: int) -> tuple[dict[Any, Any], int]:
        """``mapping`` (a fresh copy, or the original if no value changed) with its keys redacted, in
        order, none dropped (duplicates get ``<2>``, ``<3>``...), and ``total`` + their redactions."""
        c = self._c
        new_keys: list[tuple[str, int] | None] = []
        for key in mapping:
            kind = c.keys.get(key)
            if kind is None:
                kind = self._kind(key)
            new_keys.append(c.renamed[key] if kind > _CONTAINER else None)
        taken = {key for key, new in zip(mapping, new_keys, strict=True) if new is None}
        out: dict[Any, Any] = {}
        for (key, value), new in zip(mapping.items(), new_keys, strict=True):
            if new is None:
                out[key] = value
                continue
            name = _free_name(new[0], taken)
            taken.add(name)
            out[name] = value
            total += new[1]
        return out, total

    def _container_changes(self, mapping: dict[Any, Any]) -> bool:
        return _container_changes(mapping) or self._renames(mapping)

    def _redact_container(self, mapping: dict[Any, Any]) -> tuple[dict[Any, Any], int]:
        """``_redact_container``, keys redacted too."""
        out, n = _redact_container(mapping)
        return self._rename_keys(out, n) if self._renames(mapping) else (out, n)


def _lowers_to_ascii(data: bytes | bytearray) -> bool:
    """Does ``data`` hold one of ``_LOWERS_TO_ASCII`` (found from their lead bytes, which memchr finds fast)?"""
    for char in _LOWERS_TO_ASCII:
        lead = char[0]
        at = data.find(lead)
        for _ in range(8):
            if at < 0:
                break
            if data.startswith(char, at):
                return True
            at = data.find(lead, at + 1)
        else:
            if data.find(char, at) >= 0:
                return True
    return False


def _continues(data: bytes | bytearray, at: int) -> bool:
    """Could ``data[at]`` (0x80-0xBF) continue a UTF-8 character: is there a lead byte 1, 2 or 3 bytes
    before it, with continuation bytes between?"""
    b1 = data[at - 1]
    if b1 >= 0xC0:
        return True
    if b1 < 0x80 or at < 2:
        return False
    b2 = data[at - 2]
    return b2 >= 0xE0 or (0x80 <= b2 < 0xC0 and at >= 3 and data[at - 3] >= 0xF0)


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _free(spans: list[Span], s: int, e: int) -> bool:
    """Does [s, e) overlap none of ``spans`` (sorted, disjoint)?"""
    i = bisect_left(spans, (s,))  # the first span starting at or after s
    return (i == len(spans) or e <= spans[i][0]) and (i == 0 or spans[i - 1][1] <= s)


def _char_offsets(raw: bytes, hits: _Hits) -> _Hits:
    """Offsets into ``raw`` (UTF-8) -> offsets into its text (hits start and end on characters),
    decoding it once, piece by piece, up to the last hit."""
    out: _Hits = []
    byte = char = 0
    for pid, s, e in sorted(hits, key=itemgetter(1)):
        char += len(raw[byte:s].decode("utf-8", "surrogatepass"))
        byte = s
        out.append((pid, char, char + len(raw[s:e].decode("utf-8", "surrogatepass"))))
    return out


def _positions(data: Any, needle: Any) -> list[int]:
    """Every offset of ``needle`` in ``data`` (str or bytes alike)."""
    out = []
    at = data.find(needle)
    while at >= 0:
        out.append(at)
        at = data.find(needle, at + 1)
    return out
