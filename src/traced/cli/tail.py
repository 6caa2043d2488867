"""``traced tail -f``: records as they land, from the daemon's bus, else from the files.

With the daemon up it subscribes (records arrive after redaction, in step
order per session; a gap line says when this reader fell behind). With the
daemon down it follows the trace files with watchfiles instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from traced.cli.render import tail_line
from traced.errors import DaemonUnavailable
from traced.format import layout
from traced.read.sessions import reading_roots
from traced.read.trace import decode_line, to_entry


def _emit(raw: Any, args: argparse.Namespace) -> None:
    if not isinstance(raw, dict):
        return
    sid = str(raw.get("session_id", ""))
    if args.session and not sid.startswith(args.session):
        return
    if args.skill and raw.get("skill") != args.skill:
        return
    if args.phase and raw.get("phase") != args.phase:
        return
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(raw, separators=(",", ":"), ensure_ascii=False) + "\n")
    else:
        entry = to_entry(raw, 0)
        if entry is None:
            return
        sys.stdout.write(tail_line(entry, str(raw.get("skill", "")), sid) + "\n")
    sys.stdout.flush()


def follow(args: argparse.Namespace) -> int:
    """Print new records until interrupted."""
    from traced.client.blocking import Client

    client = Client(getattr(args, "socket", None), name="traced-tail", spool=False, spool_after=0.0)
    try:
        client.connect()
    except DaemonUnavailable:
        sys.stderr.write("traced tail: daemon not running; following the files\n")
        return follow_files(args)
    try:
        for item in client.subscribe(skill=args.skill or "", phase=args.phase or ""):
            if isinstance(item, int):
                sys.stderr.write(f"traced tail: fell behind, {item} records skipped\n")
            else:
                _emit(item, args)
    except DaemonUnavailable:
        sys.stderr.write("traced tail: daemon went away; following the files\n")
        return follow_files(args)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()
    return 0


def _roots(args: argparse.Namespace) -> list[Path]:
    return reading_roots(getattr(args, "root", None))


def _traces(roots: Iterable[Path]) -> Iterable[Path]:
    for root in roots:
        yield from root.glob(f"*/*/*/{layout.TRACE}")


def follow_files(args: argparse.Namespace) -> int:
    """Follow every trace.jsonl under the roots with watchfiles (new lines only)."""
    import watchfiles

    roots = [r for r in _roots(args) if r.is_dir()]
    if not roots:
        sys.stderr.write("traced tail: no root to follow\n")
        return 1
    offsets: dict[str, int] = {}
    for trace in _traces(roots):
        try:
            offsets[str(trace)] = trace.stat().st_size
        except OSError:
            pass
    try:
        for changes in watchfiles.watch(*roots, debounce=50, step=20,
                                         watch_filter=lambda _c, p: p.endswith(layout.TRACE)):
            for _change, path in sorted(changes, key=lambda c: c[1]):
                offsets[path] = _print_new(path, offsets.get(path, 0), args)
    except KeyboardInterrupt:
        return 0
    return 0


def _print_new(path: str, offset: int, args: argparse.Namespace) -> int:
    try:
        with os.fdopen(layout.open_regular(path), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(size - offset)
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        # the readers' tolerant decoder: a BOM is skipped, invalid UTF-8 becomes U+FFFD,
        # a line nested too deep (or not JSON) is skipped; none of them stops the follow
        _emit(decode_line(line), args)
    return offset + end
