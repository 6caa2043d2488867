"""Microbenchmark of the redactor alone: ``.venv/bin/python bench/redaction.py`` prints µs per payload.

scripts/bench's payloads (lib.payload: 200 B Bash calls, 2 KB Edits of source code), clean
and with a secret added, under a redactor holding a few env values as in the daemon. "same"
repeats one text with a new call id per event, as scripts/bench sends them; "varied" cycles
1000 texts. Every timed event is a fresh object, as the daemon decodes it. scripts/bench
reports the end-to-end cost (redaction on/off); this isolates the redactor when tuning it.
"""

from __future__ import annotations

import json
import time
from itertools import count
from typing import Any

from lib import payload

from traced.redaction.redactor import Redactor


def secret_payload(size: int, i: int, seq: int) -> dict[str, Any]:
    """``lib.payload`` with a credential in it: a bearer token in the command or an API key in the code."""
    p = payload(size, i, f"{seq:010d}")
    if size <= 200:
        p["args"]["cmd"] = f"curl -H 'Authorization: Bearer abc123def456ghi{i:06d}' https://api.example.com/v1/items"
    else:
        p["args"]["new_string"] += f'API_KEY = "sk-proj-{i:06d}abcdefghijklmnopqrstuvwxyz"\n'
    return p


def main() -> None:
    env = ["s3cr3t-" + "q" * 20, "ghp_" + "A1b2C3d4" * 4 + "xyzw", "hunter2hunter2"]
    redactor = Redactor(env).with_values(["client-secret-value-42"])
    seq = count()
    for size in (200, 2000):
        for secret in (False, True):
            for varied in (False, True):
                best = float("inf")
                for _ in range(7):
                    batch = [
                        secret_payload(size, i if varied else 7, next(seq))
                        if secret
                        else payload(size, i if varied else 7, f"{next(seq):010d}")
                        for i in range(2000)
                    ]
                    start = time.perf_counter()
                    for p in batch:
                        redactor.redact(p)
                    best = min(best, (time.perf_counter() - start) / len(batch))
                length = len(json.dumps(batch[0]))
                label = f"{'2 KB Edit' if size > 200 else '200 B Bash'}{' + secret' if secret else ''}"
                print(f"{label:20} {'varied' if varied else 'same':6} {length:5d} B  {best * 1e6:6.2f} µs/payload")


if __name__ == "__main__":
    main()
