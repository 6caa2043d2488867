"""Secret-named keys and env vars: rule 1 of redaction, kept light.

It lives apart from ``redact`` (whose shape tables are compiled at import)
because the shell client imports it on every ``traced event`` to send the
values of its secret-named env vars in ``hello``. See ``redact`` for the
reasoning behind the qualifier tables.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

SECRET_ENV_MIN_LEN: Final = 8
"""Env values shorter than this are never used for value redaction (too many false hits)."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


SECRET_KEY_NAMES: Final = _words(
    """
    authorization proxy_authorization cookie set_cookie password passwd passphrase
    secret token auth api_key apikey api_token apitoken access_token accesstoken
    refresh_token refreshtoken id_token auth_token authtoken session_token client_secret
    clientsecret private_key privatekey secret_key secretkey x_api_key xapikey bearer
    credential credentials access_tokens refresh_tokens api_tokens auth_tokens sig
    """
)
"""Normalised names that are always secret (``sig``: an Azure SAS signature in a URL)."""

SECRET_CONTAINER_NAMES: Final = _words("secrets cookies passwords passphrases")
"""Bare plurals that are no secret name (``secrets: 0``, ``cookies: 2``, ``"secrets": ["DB_URL"]``)
but whose MAPPING holds secrets (``"cookies": {"sid": "..."}``): see ``Redactor``."""

COUNT_WORDS: Final = _words("max min num n nb number total count cnt")
"""A name with one of these before its last word counts or limits secrets (``max_keys``,
``num_tokens``, ``total_secret_count``): it is never a secret name, whatever its value."""

SECRET_SUFFIX_WORDS: Final = _words("token secret key password passphrase auth pat cookie credential credentials")
"""Last words that make a name secret (``github_token``, ``db_password``, ``x_auth``)."""

NON_SECRET_QUALIFIERS: Final[Mapping[str, frozenset[str]]] = {
    # <qualifier>_key: database / cache / lookup / UI / i18n keys, and public keys.
    "key": _words(
        """
        primary foreign sort partition cache idempotency dedup dedupe deduplication hash
        range row lookup unique composite compound natural surrogate candidate alternate
        shard sharding routing object bucket map dict group grouping order ordering
        cluster clustering distribution dist index join public pub entry record item
        cursor message translation i18n locale config setting settings registry shortcut
        keyboard hot modifier event metric tag label field column property attr attribute
        json dimension parent child node ref reference version state sequence correlation
        trace continuation resume page pagination react list sorting
        """
    ),
    # <qualifier>_token: LLM counters, tokenizer special tokens, pagination cursors.
    "token": _words(
        """
        input output prompt completion reasoning cached cache read write creation total
        max min num eos bos pad unk sep cls mask special start end stop next page
        pagination continuation cancellation resume sync last first image audio added
        """
    ),
    # <qualifier>_auth: flags about auth, not credentials.
    "auth": _words("requires require use needs skip no with has is enable enabled disable disabled"),
}
"""Per suffix word, qualifiers that make ``<qualifier>_<suffix>`` NOT secret."""

_PLURALS: Final = _words("keys secrets passwords passphrases cookies")
_BARE_PLURALS: Final = _PLURALS | {"tokens"}
_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_WORD: Final = _LOWER | frozenset("0123456789")
_DIGITS: Final = "0123456789"


def _normalize_key(name: str) -> str:
    """snake_case words of ``name``: ``APIKey2`` -> ``api_key``, ``x-Auth.Token`` -> ``x_auth_token``.

    By hand, not with ``re`` (the shell path runs it over every env var name and would pay
    6 ms to import ``re``); the same as, in order, ``([A-Z]+)([A-Z][a-z])`` -> ``\\1_\\2``,
    ``([a-z0-9])([A-Z])`` -> ``\\1_\\2``, lower-casing, ``[^a-z0-9]+`` -> ``_``, stripping
    ``_``, and dropping ``_?[0-9]+$`` (a test holds the two equal).
    """
    n = len(name)
    split: list[str] = []  # name with "_" between camelCase words
    for i, c in enumerate(name):
        if i and c in _UPPER:
            prev = name[i - 1]
            # an acronym's end (HTTPServer: HTTP_Server), or a lower/digit to upper step (apiKey)
            if (prev in _UPPER and i + 1 < n and name[i + 1] in _LOWER) or prev in _WORD:
                split.append("_")
        split.append(c)
    out: list[str] = []
    gap = False
    for c in "".join(split).lower():
        if c in _WORD:
            if gap and out:
                out.append("_")
            out.append(c)
            gap = False
        else:
            gap = True
    s = "".join(out)  # runs of anything else are one "_", none at either end
    trimmed = s.rstrip(_DIGITS)
    if len(trimmed) == len(s):
        return s
    return trimmed.removesuffix("_")


def _classify_key(name: str) -> bool:
    norm = _normalize_key(name)
    if norm in SECRET_KEY_NAMES:
        return True
    words = norm.split("_")
    if len(words) == 1 and words[0] in _BARE_PLURALS:  # keys, tokens, secrets, cookies: a count or a list
        return False
    if not COUNT_WORDS.isdisjoint(words[:-1]):  # max_keys, num_api_keys, MaxKeys
        return False
    last = words[-1]
    if last in _PLURALS:  # api_keys, db_passwords: a list of secrets
        last = last[:-1]
    if last.endswith(("password", "passwd", "passphrase")):  # PGPASSWORD, dbpassword
        return True
    if len(words) < 2 or last not in SECRET_SUFFIX_WORDS:
        return False
    return words[-2] not in NON_SECRET_QUALIFIERS.get(last, frozenset())


_KEY_CACHE: dict[str, bool] = {}
_KEY_CACHE_MAX: Final = 8192


def is_secret_key(name: str) -> bool:
    """True if a dict key or env var name holds a secret (``GITHUB_TOKEN``, ``api_key``).

    Never true for usage counters (``input_tokens``, ``max_tokens``), counts and limits of
    secrets (``max_keys``, ``MaxKeys``, ``num_tokens``, bare plurals such as ``secrets`` and
    ``cookies``) or structural keys (``primary_key``, ``idempotency_key``). Cached: the same
    keys recur in every event.
    """
    hit = _KEY_CACHE.get(name)
    if hit is None:
        hit = _classify_key(name)
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.clear()
        _KEY_CACHE[name] = hit
    return hit


def secret_env_values(env: Mapping[str, str]) -> list[str]:
    """Values of secret-named env vars, at least SECRET_ENV_MIN_LEN long, deduplicated.

    Absolute paths (``SSL_KEY=/etc/ssl/key.pem``) are skipped: a path says where a secret lives,
    it is not one, and redacting it everywhere would only blur traces. So are values that are
    not UTF-8: no payload string can hold them.
    """
    out: dict[str, None] = {}
    for name, value in env.items():
        if len(value) >= SECRET_ENV_MIN_LEN and not value.startswith(("/", "~/")) and is_secret_key(name):
            try:
                value.encode()
            except UnicodeEncodeError:  # not UTF-8 (os.environ's surrogateescape): no payload string holds it,
                continue  # and the hello that would carry it could not be encoded
            out[value] = None
    return list(out)


__all__ = [
    "COUNT_WORDS",
    "NON_SECRET_QUALIFIERS",
    "SECRET_CONTAINER_NAMES",
    "SECRET_ENV_MIN_LEN",
    "SECRET_KEY_NAMES",
    "SECRET_SUFFIX_WORDS",
    "is_secret_key",
    "secret_env_values",
]
