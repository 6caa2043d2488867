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
runs on the hook's path, which never imports msgspec).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the shell path
if TYPE_CHECKING:
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


def _cut_depth(value: Any, depth: int, max_depth: int) -> Any:
    t = type(value)
    if t is dict or t is list:
        if depth > max_depth:
            return {"$omitted": "too_deep", "depth": depth}
        if t is dict:
            return {k: _cut_depth(v, depth + 1, max_depth) for k, v in value.items()}
        return [_cut_depth(v, depth + 1, max_depth) for v in value]
    return value


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


def fit(payload: dict[str, Any], max_bytes: int, max_depth: int = 64) -> dict[str, Any]:
    """``payload`` within ``max_depth`` (the top map is depth 1) and ``max_bytes`` (MessagePack).

    Returns ``payload`` itself when it already fits, else a new payload with
    the markers above. The result can still exceed ``max_bytes`` when every
    leaf left is smaller than ``MIN_OMIT``.
    """
    out = payload
    if max_depth > 0 and _deeper_than(payload, max_depth):
        out = _cut_depth(payload, 1, max_depth)
    total = _size(out)
    if total <= max_bytes:
        return out
    if out is payload:
        out = _cut_depth(payload, 1, 1 << 30)  # a copy we may change in place
    leaves: list[tuple[int, tuple[Any, ...]]] = []
    _leaves(out, (), leaves)
    leaves.sort(key=lambda leaf: leaf[0], reverse=True)
    for size, path in leaves:
        if total <= max_bytes:
            break
        marker = {"$omitted": "too_large", "bytes": size}
        parent: Any = out
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = marker
        total -= size - _size(marker)
    return out


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
