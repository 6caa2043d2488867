"""Counts and flags are no secrets: a secret-named key whose value is a small number, a boolean
or null; and a plural or count-qualified name (``max_keys``, ``MaxKeys``, ``secrets``), whatever its value."""

from __future__ import annotations

from typing import Any

import pytest

from traced.redaction.redactor import Redactor

R = Redactor([])


@pytest.mark.parametrize(
    ("payload", "kept"),
    [
        ({"MaxKeys": 1000, "max_keys": 50, "num_keys": 3, "total_keys": 0}, True),
        ({"secrets": 0, "cookies": 2, "password": None, "api_key": False, "x_token": True}, True),
        ({"token_budget_secret": 99_999.5, "auth": -3}, True),
        ({"password": 123456}, False),  # a PIN
        ({"api_key": 10**20}, False),
        ({"api_key": "1000"}, False),  # a string under a secret name: redacted whatever it looks like
        (
            {"MaxKeys": "1000", "max_keys": "50", "num_keys": "x", "total_keys": "0", "n_tokens": "7"},
            True,
        ),  # not secret names
        ({"secrets": "1000", "cookies": "2", "passwords": "3", "keys": "4", "tokens": "5"}, True),
        ({"max_api_keys": "10", "api_key_count": "2", "num_secrets": "0"}, True),
    ],
)
def test_counts_and_flags_are_kept(payload: dict[str, Any], kept: bool) -> None:
    out, count = R.redact(payload)
    if kept:
        assert (out, count) == (payload, 0)
    else:
        assert out == dict.fromkeys(payload, "<redacted:secret-key>")
        assert count == len(payload)


def test_in_text_too() -> None:
    text = "MaxKeys: 1000\nmax_keys=50 num_keys=3 total_keys: 0 secrets: 0 cookies: 2\npassword: 12 api_key=0"
    assert R.redact_text(text) == (text, 0)
