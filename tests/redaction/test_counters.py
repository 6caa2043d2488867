"""A secret-named key whose value is a small number, a boolean or null is a count or a flag."""

from __future__ import annotations

from typing import Any

import pytest

from traced.redaction.redactor import Redactor

R = Redactor([])


@pytest.mark.parametrize(("payload", "kept"), [
    ({"MaxKeys": 1000, "max_keys": 50, "num_keys": 3, "total_keys": 0}, True),
    ({"secrets": 0, "cookies": 2, "password": None, "api_key": False, "x_token": True}, True),
    ({"token_budget_secret": 99_999.5, "auth": -3}, True),
    ({"password": 123456}, False),  # a PIN
    ({"api_key": 10**20}, False),
    ({"MaxKeys": "1000"}, False),  # a string under a secret key: redacted whatever it looks like
])
def test_small_numbers_under_secret_keys(payload: dict[str, Any], kept: bool) -> None:
    out, count = R.redact(payload)
    if kept:
        assert (out, count) == (payload, 0)
    else:
        assert out == dict.fromkeys(payload, "<redacted:secret-key>")
        assert count == len(payload)
