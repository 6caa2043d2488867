"""Making a payload fit the daemon's limits on the sending side, losing as little as possible.

Used where a sender must never fail (the agent hooks): instead of a refused
event, the event lands with the least it can lose, each loss marked in
place:

- a subtree nested deeper than ``max_depth`` becomes
  ``{"$omitted": "too_deep", "depth": N}`` (N: the depth it started at);
- while the payload is over ``max_bytes``, the largest leaf (a string or
  bytes of 256 bytes or more, anywhere in the payload) becomes
  ``{"$omitted": "too_large", "bytes": n}``; its small siblings stay.

Sizes are MessagePack bytes, estimated without a codec (stdlib only: this
runs on the hook's path, which never imports msgspec). ``repair`` makes what
JSON can hold and MessagePack cannot (lone surrogates, integers past 64 bits)
holdable, losing nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MIN_OMIT = 256
"""Leaves smaller than this many bytes are never omitted."""


def _str_size(value: str) -> int:
    n = len(value.encode("utf-8", "surrogatepass"))
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


def _size(value: Any) -> int:
    """The MessagePack size of ``value`` in bytes (exact for what msgpack encodes)."""
    t = type(value)
    if t is str:
        return _str_size(value)
    if t is dict:
        n = len(value)
        return (1 if n < 16 else 3 if n < 65536 else 5) + sum(_size(k) + _size(v) for k, v in value.items())
    if t is list or t is tuple:
        n = len(value)
        return (1 if n < 16 else 3 if n < 65536 else 5) + sum(_size(v) for v in value)
    if t is bytes or t is bytearray:
        n = len(value)
        return n + (2 if n < 256 else 3 if n < 65536 else 5)
    if t is float:
        return 9
    if t is int:
        return 1 if -32 <= value < 128 else 9
    return 1


def cut_depth(value: Any, max_depth: int, depth: int = 1) -> Any:
    """``value`` with every map or list deeper than ``max_depth`` replaced by
    ``{"$omitted": "too_deep", "depth": N}`` (N: its depth; the top value is depth 1).

    Iterative: a payload nested thousands deep is cut without recursion errors.
    """
    if type(value) is not dict and type(value) is not list:
        return value
    if depth > max_depth:
        return {"$omitted": "too_deep", "depth": depth}
    top: Any = {} if type(value) is dict else []
    stack = [(value, top, depth)]
    while stack:
        src, dst, d = stack.pop()
        items = src.items() if type(src) is dict else enumerate(src)
        for k, v in items:
            t = type(v)
            if t is dict or t is list:
                if d + 1 > max_depth:
                    child: Any = {"$omitted": "too_deep", "depth": d + 1}
                else:
                    child = {} if t is dict else []
                    stack.append((v, child, d + 1))
            else:
                child = v
            if type(dst) is dict:
                dst[k] = child
            else:
                dst.append(child)
    return top


def repair(value: Any, big_int: Callable[[int], Any] | None = None) -> Any:
    """``value`` with what MessagePack cannot hold made holdable, nothing dropped.

    Every string (keys too) with a lone UTF-16 surrogate gets U+FFFD in its place;
    with ``big_int``, every integer past 64 bits becomes ``big_int(n)``. Cut the
    depth first (``cut_depth``): this walk recurses.
    """
    t = type(value)
    if t is str:
        return _text(value)
    if t is dict:
        return {_text(k) if type(k) is str else k: repair(v, big_int) for k, v in value.items()}
    if t is list or t is tuple:
        return [repair(v, big_int) for v in value]
    if t is int and big_int is not None and not -(2**63) <= value < 2**64:
        return big_int(value)
    return value


def _text(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _leaves(value: Any, path: tuple[Any, ...], out: list[tuple[int, tuple[Any, ...]]]) -> None:
    t = type(value)
    if t is dict:
        for k, v in value.items():
            _leaves(v, (*path, k), out)
    elif t is list:
        for i, v in enumerate(value):
            _leaves(v, (*path, i), out)
    elif t is str or t is bytes or t is bytearray:
        size = _size(value)
        if size >= MIN_OMIT:
            out.append((size, path))


def fit(payload: dict[str, Any], max_bytes: int, max_depth: int = 64, max_keys: int = 0) -> dict[str, Any]:
    """``payload`` within ``max_depth`` (the top map is depth 1), ``max_bytes`` (MessagePack) and
    ``max_keys`` (map keys in all, 0: no limit).

    Returns ``payload`` itself when it already fits, else a new payload with the
    markers of the module doc. When omitting the largest leaves is not enough (many
    small leaves, too many keys), the largest maps and lists go next, each replaced
    by ``{"$omitted": "too_large", "bytes": n}``. The top map's own scalars always stay.
    """
    out = payload
    if max_depth > 0 and _deeper_than(payload, max_depth):
        out = cut_depth(payload, max_depth)
    total = _size(out)
    keys = _keys(out) if max_keys else 0
    if total <= max_bytes and (not max_keys or keys <= max_keys):
        return out
    if out is payload:
        out = cut_depth(payload, 1 << 30)  # a copy we may change in place
    leaves: list[tuple[int, tuple[Any, ...]]] = []
    _leaves(out, (), leaves)
    leaves.sort(key=lambda leaf: leaf[0], reverse=True)
    for size, path in leaves:
        if total <= max_bytes:
            break
        marker = {"$omitted": "too_large", "bytes": size}
        _put(out, path, marker)
        total -= size - _size(marker)
        keys += 2
    if total <= max_bytes and (not max_keys or keys <= max_keys):
        return out
    containers: list[tuple[int, int, tuple[Any, ...]]] = []
    _containers(out, (), containers)
    # the bulk first, as deep as it goes: a map whose one child holds most of it is not omitted
    # whole while that child can go (its small siblings stay)
    biggest_child: dict[tuple[Any, ...], int] = {}
    for size, _n, path in containers:
        parent = path[:-1]
        biggest_child[parent] = max(biggest_child.get(parent, 0), size)
    containers.sort(key=lambda c: (biggest_child.get(c[2], 0) * 2 < c[0], c[0], c[1]), reverse=True)
    gone: list[tuple[Any, ...]] = []
    for size, nkeys, path in containers:
        if total <= max_bytes and (not max_keys or keys <= max_keys):
            break
        if any(path[: len(g)] == g for g in gone):
            continue  # inside a subtree already omitted
        marker = {"$omitted": "too_large", "bytes": size}
        _put(out, path, marker)
        gone.append(path)
        total -= size - _size(marker)
        keys -= nkeys - 2
    return out


def _put(root: Any, path: tuple[Any, ...], value: Any) -> None:
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _keys(value: Any) -> int:
    """Map keys in ``value`` in all (what the daemon's ``max_payload_keys`` counts)."""
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is dict:
            n += len(v)
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
    return n


def _containers(value: Any, path: tuple[Any, ...], out: list[tuple[int, int, tuple[Any, ...]]]) -> None:
    """(size, keys, path) of every map and list below the top one."""
    t = type(value)
    if t is dict:
        for k, v in value.items():
            if type(v) is dict or type(v) is list:
                out.append((_size(v), _keys(v), (*path, k)))
                _containers(v, (*path, k), out)
    elif t is list:
        for i, v in enumerate(value):
            if type(v) is dict or type(v) is list:
                out.append((_size(v), _keys(v), (*path, i)))
                _containers(v, (*path, i), out)


def _deeper_than(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        t = type(v)
        if t is dict or t is list:
            if depth > max_depth:
                return True
            stack.extend((c, depth + 1) for c in (v.values() if t is dict else v))
    return False


FRAME_SLACK = 64 * 1024
"""Bytes of a frame kept for the message around the payload."""
DEFAULT_FRAME = 8 * 1024 * 1024
"""The daemon's default ``max_frame``, until its welcome says."""


def payload_budget(frame_limit: int = 0) -> int:
    """The payload size (MessagePack bytes) that fits a frame of ``frame_limit`` bytes (0: the default)."""
    return max((frame_limit or DEFAULT_FRAME) - FRAME_SLACK, 1024)


def parse_json(data: bytes | str) -> Any:
    """JSON input from a shell, a file or an agent's hook, read the way it was meant.

    A UTF-8 byte-order mark is skipped; invalid UTF-8 bytes and lone surrogates
    (``\\ud83d`` escapes) become U+FFFD; raw control characters inside strings
    are kept; a backslash that starts no JSON escape (an unescaped Windows
    path) stays a backslash; numbers of any size stay exact (an integer past 64
    bits travels as ``EXT_BIGINT``). Raises ValueError (not JSON, or nested
    deeper than the parser can go).
    """
    from traced.wire import cjson

    text = bytes(data).decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else data
    text = text.removeprefix("\ufeff")
    try:
        try:  # strict=False: raw control characters inside strings (agents write them) are kept
            return repair(cjson.loads(text))
        except ValueError as e:
            import json

            if not isinstance(e, json.JSONDecodeError) or "escape" not in e.msg:
                raise
            # a Windows path written without escaping (C:\Users\x): its backslashes kept as they are
            import re

            fixed = re.sub(r'\\(?![\\/"bfnrt]|u[0-9a-fA-F]{4})', r"\\\\", text)
            try:
                return repair(json.loads(fixed, strict=False))
            except json.JSONDecodeError:
                raise e from None
    except RecursionError:
        raise ValueError("nested deeper than the JSON parser can go") from None
