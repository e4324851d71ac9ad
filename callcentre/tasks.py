"""Owned background tasks: every task we start is kept, cancelled and awaited (STYLE: no fire-and-forget)."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger(__name__)


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel the tasks and wait until each has finished; a task's own failure is logged, not raised.

    If the caller itself is cancelled while waiting, that cancellation propagates (it is not swallowed)."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    results = await asyncio.gather(*live, return_exceptions=True)
    for t, r in zip(live, results, strict=True):
        if isinstance(r, Exception):
            log.error("background task failed", task=t.get_name(), error=f"{type(r).__name__}: {r}")
