"""structlog set-up, done once at start-up by ``app`` or ``cli``.

``merge_contextvars`` comes first so a worker's bound ``incident_id``, ``rule``
and ``source`` reach every line; the redaction processor comes last before
rendering. JSON in production, a readable console format on a terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import structlog

from daemon.redact import redact_processor

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", *, cache: bool = True
) -> None:
    """Configure structlog and route the standard library's loggers through it."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
    # Libraries (uvicorn, aiokafka, kubernetes) log through the stdlib: quieter, same stream.
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), stream=sys.stderr, format="%(name)s: %(message)s")


@contextmanager
def logging_for_command(level: str = "warning") -> Iterator[None]:
    """Log at ``level`` to stderr while a CLI command runs the daemon's code, then restore what was set.

    Commands that print a report on stdout (``rollbackd replay``) must not have it mixed with log lines.
    """
    saved = structlog.get_config()
    configure_logging(level, "auto", cache=False)
    try:
        yield
    finally:
        structlog.configure(**saved)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
