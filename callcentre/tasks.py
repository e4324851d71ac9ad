"""Owned background tasks: every task we start is kept, cancelled and awaited (STYLE: no fire-and-forget).

:func:`run_periodically` is the one shape of a service loop (escalation, call-backs, reconciliation,
webhooks, the wallboard push): wait, run one step, log a failed step with its traceback and go on.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

Step = Callable[[], Awaitable[object]]


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


async def run_periodically(
    name: str,
    step: Step,
    interval: float | Callable[[], float],
    *,
    wake: asyncio.Event | None = None,
    wait_first: bool = False,
    min_gap: float = 0.0,
) -> None:
    """Run ``step`` for ever with ``interval`` seconds (a number, or a function asked after each step)
    between runs; returns only when cancelled.

    A step that raises is logged with its traceback and the loop goes on: a database hiccup must not
    end a service loop. ``wake`` (an event) ends a wait early: it is cleared just before each step, so a
    ``set()`` during the wait, or during a step, runs the next step at once (a wake is never lost).
    ``min_gap`` (seconds) is the least time between two steps however often ``wake`` is set.
    ``wait_first`` waits before the first step.
    """
    if wait_first:
        await _wait(interval, wake)
    while True:
        if wake is not None:
            wake.clear()
        try:
            await step()
        except Exception:  # CancelledError is not an Exception: cancellation still ends the loop
            log.exception("periodic step failed", task=name)
        if min_gap > 0:
            await asyncio.sleep(min_gap)
        await _wait(interval, wake)


async def _wait(interval: float | Callable[[], float], wake: asyncio.Event | None) -> None:
    seconds = interval() if callable(interval) else interval
    if wake is None:
        await asyncio.sleep(seconds)
        return
    if wake.is_set():
        return
    try:
        await asyncio.wait_for(wake.wait(), seconds)
    except TimeoutError:
        pass


__all__ = ["Step", "cancel_and_wait", "run_periodically"]
