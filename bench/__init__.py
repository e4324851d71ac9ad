"""Benchmarks and the soak test: ``python -m bench`` runs them all (see BENCHMARKS.md).

Shared helpers live here: percentiles, the machine's description, quiet logging, the fd limit.
Each benchmark module exposes ``run(**sizes) -> dict`` and never asserts on a timing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import gc
import logging
import os
import platform
import resource
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "panoramisk", "aiohttp", "SQLAlchemy", "aiosqlite", "asyncpg", "structlog", "pydantic", "argon2-cffi",
    "prometheus-client",
)


def quiet_logs() -> None:
    """Errors only, rendered cheaply: benchmarks measure the product, not the console."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR), cache_logger_on_first_use=False
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@contextmanager
def no_collection() -> Iterator[None]:
    """A load client stands in for Asterisk, phones and browsers, none of which share its collector:
    collect now, and none while it times (its full collections took 100-110 ms with a thousand
    sessions' objects, landing in whichever reply they happened to delay)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``samples``; 0.0 for an empty list."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
    return ordered[k]


def latency_ms(samples_s: list[float]) -> dict[str, float]:
    """p50 / p99 / max / mean in milliseconds of samples given in seconds."""
    if not samples_s:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {
        "n": len(samples_s),
        "p50_ms": round(percentile(samples_s, 50) * 1000, 3),
        "p99_ms": round(percentile(samples_s, 99) * 1000, 3),
        "max_ms": round(max(samples_s) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples_s) * 1000, 3),
    }


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of this process (or ``pid``) now (Linux /proc; ru_maxrss elsewhere, a peak)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_fds(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def open_sockets(pid: int | str = "self") -> int:
    """Open sockets of this process or ``pid`` (fds whose link is ``socket:[…]``), -1 where /proc is missing."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    count = 0
    for name in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def trim_heap() -> None:
    """Give freed heap back to the OS (glibc), so RSS growth is what the calls hold, not the argon2
    buffers of the agents' log-in freed earlier and silently reused."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (up to the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_average() -> str:
    """The 1, 5 and 15-minute load averages now (``uptime``'s figures), as text; "" where unknown."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return ""


def machine() -> dict[str, object]:
    """What the figures were measured on: they mean nothing without it."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_total(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": versions,
        "load_average": load_average(),
    }
