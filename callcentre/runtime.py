"""Process-level settings for ``callcentre serve`` that must be made before any thread starts.

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
