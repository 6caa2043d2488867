"""structlog set-up for the daemon: JSON lines when not on a TTY, console when on one.

Log calls carry ids, sizes and counts, never payload values.
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog to write to stderr."""
    tty = sys.stderr.isatty()
    use_console = fmt == "console" or (fmt == "auto" and tty)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=tty) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
