"""``wire.cjson`` is ``json`` without its import: the same values, the same bytes, the same errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traced.wire import cjson

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                               max_size=4),
                      max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from(["", " ", "\n\t\r "]), st.booleans())
def test_loads_reads_what_json_reads(value: Any, pad: str, ascii_only: bool) -> None:
    text = pad + json.dumps(value, ensure_ascii=ascii_only) + pad
    assert cjson.loads(text) == json.loads(text, strict=False)
    # every prefix is either a whole value in both or an error in both, with json's message
    for cut in range(0, len(text), max(1, len(text) // 7)):
        try:
            want: Any = json.loads(text[:cut], strict=False)
        except json.JSONDecodeError as e:
            with pytest.raises(json.JSONDecodeError) as got:
                cjson.loads(text[:cut])
            assert (got.value.msg, got.value.pos) == (e.msg, e.pos)
        else:
            assert cjson.loads(text[:cut]) == want


@settings(max_examples=300, deadline=None)
@given(values, st.booleans(), st.booleans(), st.sampled_from([(", ", ": "), (",", ":")]))
def test_dumps_writes_json_s_bytes(value: Any, sort_keys: bool, ascii_only: bool, separators: tuple[str, str]) -> None:
    assert cjson.dumps(value, sort_keys=sort_keys, ensure_ascii=ascii_only, separators=separators, default=str) == \
        json.dumps(value, sort_keys=sort_keys, ensure_ascii=ascii_only, separators=separators, default=str)


@pytest.mark.parametrize("text", [
    '{"a": "raw\ttab\x01ctl"}',  # raw control characters are kept (strict=False)
    "NaN", "[Infinity, -Infinity]", "12345678901234567890123456789", "-0.0", "1e400", '"\\ud83d"',
    ' \n{"k": [1, 2.5, true, false, null, {}]}\r\n',
])
def test_loads_edge_cases(text: str) -> None:
    got, want = cjson.loads(text), json.loads(text, strict=False)
    if isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got)
    else:
        assert repr(got) == repr(want)


@pytest.mark.parametrize(("text", "msg"), [
    ("", "Expecting value"), ("   ", "Expecting value"), ("{} {}", "Extra data"), ('{"a": 1,}', None),
    ("[1, 2", None), ('{"a": "\\x"}', "Invalid \\escape"), ("\ufeff{}", None),
])
def test_loads_errors_are_json_s(text: str, msg: str | None) -> None:
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text, strict=False)
    with pytest.raises(json.JSONDecodeError) as got:
        cjson.loads(text)
    assert (got.value.msg, got.value.lineno, got.value.colno) == (want.value.msg, want.value.lineno,
                                                                  want.value.colno)
    if msg is not None:
        assert got.value.msg == msg


def test_raw_decode_returns_the_first_value_and_where_it_ends() -> None:
    assert cjson.raw_decode('{"a": [1]}  {"b": 2}') == ({"a": [1]}, 10)
    assert cjson.raw_decode('x {"a": 1}', 2) == ({"a": 1}, 10)
    assert cjson.raw_decode('"tab\there"') == ("tab\there", 10)
    for partial in ('{"a": [1]', '{"a": {"b": 1}', "", " {}"):
        with pytest.raises(ValueError):
            cjson.raw_decode(partial)


def test_dumps_default_and_errors() -> None:
    assert cjson.dumps({"b": frozenset([1]), "a": 1.5}, sort_keys=True, default=str) == \
        '{"a": 1.5, "b": "frozenset({1})"}'
    assert cjson.dumps(["é\ud83d"], ensure_ascii=False, separators=(",", ":"), default=str) == '["é\ud83d"]'
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        cjson.dumps(loop, default=str)
    with pytest.raises(TypeError, match="not JSON serializable"):
        cjson.dumps({1j})


@pytest.mark.parametrize("text", ["{bad", '{"a": [1, 2', '{"a": 1,}', '"open', "[1,]"])
def test_loads_errors_in_a_fresh_interpreter(text: str) -> None:
    """Where ``json`` was never imported (the per-event paths), CPython 3.11's scanner cannot find
    ``json.decoder`` to raise its error and returns NULL: a SystemError, unless cjson catches it."""
    code = ("import sys; from traced.wire import cjson\n"
            "assert 'json.decoder' not in sys.modules\n"
            "try:\n    cjson.loads(sys.argv[1])\nexcept ValueError as e:\n    print(type(e).__name__, e.msg)\n")
    res = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, timeout=60, check=False)
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text, strict=False)
    assert (res.returncode, res.stdout.strip()) == (0, f"JSONDecodeError {want.value.msg}"), res.stderr
