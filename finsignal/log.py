"""Logging setup: structlog, JSON in production, readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is now, not the stream that was current at configuration.

    Test runners and embedding applications swap `sys.stderr`; a logger holding the old,
    closed stream would fail every later log call.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog and stdlib logging once, for every component.

    `FINSIGNAL_LOG_FORMAT` = `json` | `console` (default: console on a terminal, else JSON);
    `FINSIGNAL_LOG_LEVEL` = a level name (default INFO).
    """
    level = (level or os.environ.get("FINSIGNAL_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("FINSIGNAL_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python is chatty at INFO about every reconnect and rebalance step.
    logging.getLogger("kafka").setLevel(logging.WARNING)
