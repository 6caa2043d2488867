"""A test-only daemon entry point: ``traced serve`` with injected faults, never on the product's path.

``python -m tests.faults serve …`` runs the real daemon after wrapping one
piece of it:

- ``TRACED_FAULT_WEDGE_SECONDS=S``: a ``fault_wedge`` event blocks the writer
  (the event loop's thread) for S seconds, as a hung ``write(2)`` on a dead NFS
  mount would, so the watchdog test can see the pings stop.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from traced.cli.main import main
from traced.daemon.registry import Live, Registry
from traced.daemon.session import Pending


def wedge(seconds: float) -> None:
    """Make ``fault_wedge`` events block the registry's critical section for ``seconds``."""
    original = Registry.append

    def append(self: Registry, live: Live, batch: Iterable[Pending]) -> Any:
        batch = list(batch)
        if any(p.phase == "fault_wedge" for p in batch):
            time.sleep(seconds)  # the injected fault itself: a hung write(2) (not a wait for anything)
        return original(self, live, batch)

    Registry.append = append  # type: ignore[method-assign]


if __name__ == "__main__":
    wedge(float(os.environ.get("TRACED_FAULT_WEDGE_SECONDS") or 0))
    sys.exit(main())
