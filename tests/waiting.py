"""Bounded polling for end-to-end tests: wait until something the server does in the background is seen."""

from __future__ import annotations

import asyncio
import inspect
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], limit: float = 10.0, every: float = 0.02) -> bool:
    """True as soon as ``predicate()`` (plain or async) is true; its last value once ``limit`` seconds pass."""

    async def check() -> bool:
        value = predicate()
        return bool(await value) if inspect.isawaitable(value) else bool(value)

    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


async def until(predicate: Callable[[], Awaitable[T]], limit: float, what: str, every: float = 0.1) -> T:
    """The first truthy value of ``await predicate()``; AssertionError naming ``what`` after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while True:
        got = await predicate()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(every)
