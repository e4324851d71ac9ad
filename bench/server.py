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

The longest stall of a window is taken apart with the loop thread's own kernel accounting
(``/proc/thread-self/schedstat`` and ``getrusage(RUSAGE_THREAD)``, read at every sample): the CPU time
the thread used during it (our code running without yielding), the time it sat runnable on a run
queue (the machine not scheduling us), page faults and context switches. What is left is time
blocked in the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import sys
import threading
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
        # Per sample, the loop thread's accounting since the previous sample: CPU seconds, seconds
        # runnable but waiting for a CPU, minor and major page faults, involuntary context switches.
        self.cpu = array("d")
        self.queued = array("d")
        self.faults = array("l")
        self.major_faults = array("l")
        self.preempted = array("l")
        self.gc_events: list[tuple[float, int, float, int]] = []  # (end monotonic, generation, seconds, collected)
        self._gc_start = 0.0
        self._beat = 0.0
        self.stall_stacks: list[tuple[float, float, str]] = []  # BENCH_STALL_STACKS: (at, late, stack)
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
        if os.environ.get("BENCH_STALL_STACKS"):  # diagnosis only: a thread that takes the GIL perturbs the loop
            self._beat = time.monotonic()
            threading.Thread(target=self._watch, args=(threading.main_thread().ident,), daemon=True).start()

    def _watch(self, main: int | None) -> None:
        """Every 2 ms: if the loop has not woken for 8 ms, note what the loop thread is running."""
        import traceback

        while self._task is not None and not self._task.done():
            time.sleep(0.002)
            late = time.monotonic() - self._beat
            if late > 0.008 + self.interval and main is not None:
                frame = sys._current_frames().get(main)
                if frame is not None:
                    stack = "".join(traceback.format_stack(frame, limit=14))
                    self.stall_stacks.append((time.monotonic(), late, stack))

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval
        account = _thread_accounting
        last = account()
        while True:
            t = loop.time()
            await asyncio.sleep(interval)
            self._beat = now_at = time.monotonic()
            self.lag_at.append(now_at)
            self.lag.append(max(0.0, loop.time() - t - interval))
            now = account()
            self.cpu.append(now[0] - last[0])
            self.queued.append(now[1] - last[1])
            self.faults.append(now[2] - last[2])
            self.major_faults.append(now[3] - last[3])
            self.preempted.append(now[4] - last[4])
            last = now

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.figures()), encoding="utf-8")

    def figures(self) -> dict[str, Any]:
        """What :func:`window_stats` reads (and ``dump`` writes)."""
        return {
            "pid": os.getpid(),
            "lag": [[round(a, 6), round(v, 6)] for a, v in zip(self.lag_at, self.lag, strict=True)],
            "accounting": [[round(c, 6), round(q, 6), f, m, i] for c, q, f, m, i in zip(
                self.cpu, self.queued, self.faults, self.major_faults, self.preempted, strict=True)],
            "gc": [[round(a, 6), g, round(s, 6), c] for a, g, s, c in self.gc_events],
            "stall_stacks": [[round(a, 6), round(late, 6), st] for a, late, st in self.stall_stacks],
        }


def _thread_accounting() -> tuple[float, float, int, int, int]:
    """This thread's (CPU s, run-queue wait s, minor faults, major faults, involuntary switches)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            cpu_ns, wait_ns, _slices = f.read().split()
        cpu, queued = int(cpu_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):  # not Linux, or no schedstats: the CPU time from getrusage alone
        cpu = queued = 0.0
    r = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
    if not cpu:
        cpu = r.ru_utime + r.ru_stime
    return cpu, queued, r.ru_minflt, r.ru_majflt, r.ru_nivcsw


def window_stats(stats: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """Lag p99/max and GC pauses of a server process between two ``time.monotonic()`` stamps.

    ``longest_stall`` takes the largest lag sample apart (see the module docstring): of its
    ``lag_ms``, ``cpu_ms`` were spent running this loop's thread, ``queued_ms`` waiting for a CPU,
    and ``gc_ms`` in collections that ended inside it.
    """
    from bench import percentile

    lag = stats.get("lag", [])
    accounting = stats.get("accounting", [])
    inside = [i for i, (at, _v) in enumerate(lag) if start <= at <= end]
    lags = [lag[i][1] for i in inside]
    gcs = [(at, g, s) for at, g, s, _c in stats.get("gc", []) if start <= at <= end]
    out: dict[str, Any] = {
        "lag_samples": len(lags),
        "lag_p99_ms": round(percentile(lags, 99) * 1000, 2),
        "lag_max_ms": round(max(lags, default=0.0) * 1000, 2),
        "gc_collections": len(gcs),
        "gc_max_ms": round(max((s for _a, _g, s in gcs), default=0.0) * 1000, 2),
        "gc_gen2": sum(1 for _a, g, _s in gcs if g == 2),
        "gc_max_ms_by_generation": {str(gen): round(max((s for _a, g, s in gcs if g == gen), default=0.0) * 1000, 2)
                                    for gen in sorted({g for _a, g, _s in gcs})},
    }
    if inside and len(accounting) == len(lag):
        worst = max(inside, key=lambda i: lag[i][1])
        at, value = lag[worst]
        began = lag[worst - 1][0] if worst else at - value
        cpu, queued, faults, major, preempted = accounting[worst]
        out["longest_stall"] = {
            "lag_ms": round(value * 1000, 2), "cpu_ms": round(cpu * 1000, 2), "queued_ms": round(queued * 1000, 2),
            "gc_ms": round(sum(s for a, _g, s in gcs if began <= a <= at) * 1000, 2),
            "minor_faults": faults, "major_faults": major, "preempted": preempted,
        }
    stacks = sorted((x for x in stats.get("stall_stacks", []) if start <= x[0] <= end), key=lambda x: -x[1])
    if stacks:  # BENCH_STALL_STACKS: what the loop thread ran in the window's three longest stalls
        out["stall_stacks"] = [{"late_ms": round(late * 1000, 2), "stack": st} for _a, late, st in stacks[:3]]
    return out


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
