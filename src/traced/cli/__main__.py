"""``python -m traced.cli``: the ``traced`` command (older hook entries run it this way)."""

import sys

from traced.cli.main import main

sys.exit(main())
