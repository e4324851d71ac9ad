"""structlog set-up: console output for people, JSON lines for machines.

Every call's logger is bound with ``uniqueid``, ``channel`` and ``caller`` so one call can be
followed from its first AGI line to its closed ticket (``grep 1795351990.1``).
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", fmt: str = "console", stream=None) -> None:
    stream = stream or sys.stderr
    lvl = getattr(logging, level.upper(), logging.INFO)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty() if hasattr(stream, "isatty") else False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info, renderer]
        if fmt == "json"
        else [*shared, structlog.processors.StackInfoRenderer(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (panoramisk, aiohttp, alembic) go to the same stream.
    logging.basicConfig(level=max(lvl, logging.INFO), stream=stream, format="%(levelname)s %(name)s: %(message)s", force=True)
