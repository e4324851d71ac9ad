"""Process-level settings for ``callcentre serve``: malloc arenas (before any thread starts) and the
garbage collector's thresholds (:func:`tune_gc`).

glibc's malloc gives each thread that allocates its own arena (up to eight per core). Ours are the
database threads (aiosqlite runs each SQLite connection in a thread of its own) and the default
executor (password hashing): each arena kept its own free lists, and under steady traffic their
fragmented free space grew the server's RSS by about half a megabyte a minute with nothing live
behind it (BENCHMARKS.md, soak). With one arena that free space is reused instead, at no cost we
could measure (ticket benchmark: 645 vs 642 tickets/s one at a time, 668 vs 654/s with 20 writers).
An operator's own ``MALLOC_ARENA_MAX`` wins (glibc has already applied it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import platform

import structlog

log = structlog.get_logger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt() parameter number
DEFAULT_ARENAS = 1


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas; True if applied. Call before the first thread is started."""
    if os.environ.get("MALLOC_ARENA_MAX") or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
    except (OSError, AttributeError):
        return False
    if ok:
        log.debug("malloc arenas limited", arenas=arenas)
    return ok


# The garbage collector's thresholds for a server that holds many calls at once (see tune_gc).
GC_THRESHOLDS = (2_000, 2, 2_500)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> tuple[int, int, int]:
    """Short young collections and rare full ones; returns the thresholds it replaced.

    With CPython's defaults (700, 10, 10) a FastAGI session's objects (a call lasts seconds to
    minutes) live long enough to reach the oldest generation, and with a thousand calls each wave
    of them soon meets the "a quarter more than at the last full pass" rule: a full collection of
    every live object (50-200 ms with 1,000 calls on the benchmark machine) every few seconds, which
    was most of the FastAGI latency tail. Here the middle generation is collected after every
    second young collection, so it stays small (a few milliseconds at most while a thousand calls
    arrive), and a full collection waits for 2,500 of those (several minutes at a thousand calls)
    instead of 10. Ended sessions are freed by reference counting (tests/test_agi_server.py), so
    little cyclic garbage waits for the full pass. Measured in BENCHMARKS.md (FastAGI).
    """
    old = gc.get_threshold()
    gc.set_threshold(*thresholds)
    log.debug("garbage collector thresholds set", thresholds=thresholds, previous=old)
    return old  # type: ignore[return-value]
