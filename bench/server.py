"""Server processes for the benchmarks, started the way ``callcentre serve`` starts the server.

``python -m bench.server KIND --stats FILE`` (configured by ``CALLCENTRE_…`` variables, like
``callcentre serve``; stops on SIGTERM):

* ``serve``: exactly ``callcentre serve`` (malloc arenas limited before any thread, logging configured
  from the configuration, :func:`callcentre.app.serve`: migrations, every service, the web part, the
  FastAGI listener, ``gc.freeze()`` after start-up);
* ``fastagi``: the same process settings around the real :class:`~callcentre.agi.server.FastAGIServer`
  alone, running the protocol-only IVR-like handler of bench/bench_agi.py (no database);
* ``echo``: the floor, a bare asyncio server that sends recorded command lines (``--lines FILE``: JSON,
  script name -> lines) and reads each reply, doing nothing else.

In every kind a :class:`LoopMonitor` runs in the server's own event loop: how late a 5 ms sleep wakes
up (event-loop lag: everything else that ran meanwhile without yielding, or the process not being
scheduled) and every garbage collection with its generation and duration. Both are written to
``--stats`` at exit with ``time.monotonic()`` stamps (one clock for every process on Linux), so the
load client can attribute a latency tail to the level during which it happened.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time
from array import array
from pathlib import Path
from typing import Any


class LoopMonitor:
    """Event-loop lag (sampled every ``interval`` s) and garbage-collection pauses of this process."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lag_at = array("d")
        self.lag = array("d")
        self.gc_events: list[tuple[float, int, float, int]] = []  # (end monotonic, generation, seconds, collected)
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            self.gc_events.append((time.monotonic(), info.get("generation", -1), now - self._gc_start,
                                   info.get("collected", 0)))

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._sample(), name="bench-loop-monitor")

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval
        while True:
            t = loop.time()
            await asyncio.sleep(interval)
            self.lag_at.append(time.monotonic())
            self.lag.append(max(0.0, loop.time() - t - interval))

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({
            "pid": os.getpid(),
            "lag": [[round(a, 6), round(v, 6)] for a, v in zip(self.lag_at, self.lag, strict=True)],
            "gc": [[round(a, 6), g, round(s, 6), c] for a, g, s, c in self.gc_events],
        }), encoding="utf-8")


def window_stats(stats: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """Lag p99/max and GC pauses of a server process between two ``time.monotonic()`` stamps."""
    from bench import percentile

    lags = [v for at, v in stats.get("lag", []) if start <= at <= end]
    gcs = [(g, s) for at, g, s, _c in stats.get("gc", []) if start <= at <= end]
    return {
        "lag_samples": len(lags),
        "lag_p99_ms": round(percentile(lags, 99) * 1000, 2),
        "lag_max_ms": round(max(lags, default=0.0) * 1000, 2),
        "gc_collections": len(gcs),
        "gc_max_ms": round(max((s for _g, s in gcs), default=0.0) * 1000, 2),
        "gc_gen2": sum(1 for g, _s in gcs if g == 2),
    }


# ---------------------------------------------------------------------------------------- kinds

async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(cfg: Any, monitor: LoopMonitor) -> None:
    from callcentre.app import serve

    monitor.start()
    try:
        await serve(cfg)
    finally:
        await monitor.stop()


async def _fastagi(cfg: Any, monitor: LoopMonitor) -> None:
    from bench.bench_agi import ivr_like
    from callcentre.agi.server import FastAGIServer

    server = FastAGIServer(cfg.agi, lambda env: ivr_like, prompt_path=cfg.prompts.asterisk_path)
    await server.start()
    gc.freeze()  # as callcentre.app.serve does after start-up
    monitor.start()
    try:
        await _until_signalled()
    finally:
        server.stop_accepting()
        await server.stop(grace_seconds=2.0)
        await monitor.stop()


async def _echo(host: str, port: int, lines: dict[str, list[str]], monitor: LoopMonitor) -> None:
    payloads = {script: [(ln + "\n").encode() for ln in seq] for script, seq in lines.items()}

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = ""
        try:
            while True:
                line = (await reader.readline()).strip()
                if not line:
                    break
                if line.startswith(b"agi_network_script:"):
                    script = line.split(b":", 1)[1].strip().decode()
            for data in payloads.get(script, []):
                writer.write(data)
                if not await reader.readline():
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, host, port, backlog=4096)
    gc.freeze()
    monitor.start()
    try:
        await _until_signalled()
    finally:
        server.close()
        await server.wait_closed()
        await monitor.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("serve", "fastagi", "echo"))
    p.add_argument("--stats", type=Path, required=True, help="where to write the loop monitor's figures at exit")
    p.add_argument("--lines", type=Path, default=None, help="echo: JSON file, script -> command lines")
    p.add_argument("--port", type=int, default=0, help="echo: the port to listen on")
    p.add_argument("--profile", type=Path, default=None,
                   help="run under cProfile (from the start, or between SIGUSR1 and SIGUSR2 with "
                        "--profile-window); write its stats here at exit")
    p.add_argument("--profile-window", action="store_true", help="profile only between SIGUSR1 and SIGUSR2")
    a = p.parse_args(argv)
    profiler = None
    if a.profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        if a.profile_window:
            signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
            signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
        else:
            profiler.enable()

    from bench import raise_fd_limit
    from callcentre.config import load_config
    from callcentre.logging import configure_logging
    from callcentre.runtime import limit_malloc_arenas, tune_gc

    raise_fd_limit(16384)
    monitor = LoopMonitor()
    if a.kind == "echo":
        lines = json.loads(a.lines.read_text(encoding="utf-8")) if a.lines else {}
        asyncio.run(_echo("127.0.0.1", a.port, lines, monitor))
    else:
        cfg = load_config(None)  # CALLCENTRE_… variables only, as configured by the benchmark
        configure_logging(cfg.logging.level, cfg.logging.format)
        limit_malloc_arenas()  # before any thread exists, as callcentre serve does
        tune_gc()
        asyncio.run(_serve(cfg, monitor) if a.kind == "serve" else _fastagi(cfg, monitor))
    monitor.dump(a.stats)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(a.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
