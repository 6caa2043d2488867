"""The stdlib's C JSON codec (``_json``) without the ``json`` package's import cost.

The per-event paths (``traced event``, ``traced hook …``) parse and write a
little JSON once per process. ``import json`` pulls ``re`` and ``enum`` in
(about 6 ms of a 13 ms interpreter start-up on the bench machine); the scanner
and the encoder ``json`` itself uses are the ones of ``_json``, which costs
0.2 ms. ``loads``/``dumps`` drive them with exactly the arguments ``json``
would pass, so the results are byte-for-byte those of ``json.loads(text,
strict=False)`` and ``json.dumps``. Errors (and interpreters without
``_json``) go to ``json`` itself, for its messages.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]

_WS = " \t\n\r"  # JSON's whitespace (json.decoder.WHITESPACE)


class _Context:
    """What ``_json.make_scanner`` reads off a ``json.JSONDecoder(strict=False)``."""

    strict = False
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


def raw_decode(text: str, start: int = 0) -> tuple[Any, int]:
    """The JSON value at ``text[start]`` and the index just past it (``json.JSONDecoder(
    strict=False).raw_decode``; no whitespace skipped). Raises ValueError when no whole value
    starts there."""
    if _json is None:  # pragma: no cover
        import json

        return json.JSONDecoder(strict=False).raw_decode(text, start)
    try:
        return _json.make_scanner(_Context)(text, start)  # type: ignore[arg-type]
    except StopIteration as e:
        raise ValueError(f"Expecting value at character {e.value}") from None
    except SystemError:  # CPython 3.11's scanner raises its error through json.decoder, found only if imported
        raise ValueError(f"invalid JSON at or after character {start}") from None


def loads(text: str) -> Any:
    """``json.loads(text, strict=False)``: raw control characters inside strings are kept.

    Raises ``json.JSONDecodeError`` (a ValueError) with ``json``'s own message, and
    RecursionError for input nested deeper than the parser can go.
    """
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = raw_decode(text, start)
    except ValueError:
        pass  # json below says what is wrong, and where
    else:
        if not text[end:].strip(_WS):
            return value
    import json

    return json.loads(text, strict=False)


def dumps(value: Any, *, sort_keys: bool = False, ensure_ascii: bool = True,
          separators: tuple[str, str] = (", ", ": "), default: Callable[[Any], Any] | None = None) -> str:
    """``json.dumps(value, sort_keys=…, ensure_ascii=…, separators=…, default=…)``: one line.

    Raises TypeError for a value JSON cannot hold when ``default`` is None, ValueError for a
    circular reference.
    """
    if _json is not None and default is not None:
        item_sep, key_sep = separators
        encoder = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
        encode = _json.make_encoder({}, default, encoder, None, key_sep, item_sep, sort_keys, False, True)
        return "".join(encode(value, 0))
    import json

    return json.dumps(value, sort_keys=sort_keys, ensure_ascii=ensure_ascii, separators=separators,
                      default=default)
