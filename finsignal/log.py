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


class _SlowTaskToDebug(logging.Filter):
    """kafka-python's "Task ... is blocking the event loop" warning, kept for DEBUG.

    kafka-python 3 warns when one step of its network thread takes over 0.1 s. In our processes the
    model's forward passes hold the GIL longer than that, so it fires on healthy runs and points at
    no fault of ours; consumer lag and delivery latency (metrics, the worker's summary) show real stalls.
    """

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "kafka.net.selector" and "blocking the event loop" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.show
        return True


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog and stdlib logging once, for every component.

    `FINSIGNAL_LOG_FORMAT` = `json` | `console` (default: console on a terminal, else JSON);
    `FINSIGNAL_LOG_LEVEL` = a level name (default INFO). Libraries' stdlib log records (kafka-python,
    redis, websockets) are rendered in the same format, from WARNING up.
    """
    level = (level or os.environ.get("FINSIGNAL_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("FINSIGNAL_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.set_name("finsignal")
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    handler.addFilter(_SlowTaskToDebug(show=level == "DEBUG"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "finsignal"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # kafka-python is chatty at INFO about every reconnect and rebalance step.
    logging.getLogger("kafka").setLevel(logging.WARNING)
