"""Env and key names are normalised by hand (the shell path never imports ``re``): the same as the
regular expressions they replace, for any string."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traced.redaction.names import _normalize_key

_CAMEL_ACRONYM = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_TRAILING_DIGITS = re.compile(r"_?[0-9]+$")


def _by_regex(name: str) -> str:
    s = _CAMEL.sub(r"\1_\2", _CAMEL_ACRONYM.sub(r"\1_\2", name)).lower()
    s = _NON_WORD.sub("_", s).strip("_")
    return _TRAILING_DIGITS.sub("", s)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="aAbZz09_-. \nİéK\u212a", max_size=14) | st.text(max_size=14))
def test_normalize_key_is_the_regex_rules(name: str) -> None:
    assert _normalize_key(name) == _by_regex(name)


@pytest.mark.parametrize(("name", "norm"), [
    ("GITHUB_TOKEN", "github_token"), ("APIKey2", "api_key"), ("HTTPServerKey", "http_server_key"),
    ("x-Auth.Token", "x_auth_token"), ("AWS_SECRET_ACCESS_KEY_1", "aws_secret_access_key"),
    ("__", ""), ("123", ""), ("a1_2", "a1"), ("MaxKeys", "max_keys"), ("ABCDefGHIjk", "abc_def_gh_ijk"),
])
def test_normalize_key_examples(name: str, norm: str) -> None:
    assert _normalize_key(name) == norm == _by_regex(name)
