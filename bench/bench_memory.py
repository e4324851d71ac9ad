"""Memory per concurrent call: N callers waiting for an agent (in our FastAGI session, music on hold).

The stack of bench_screenpop (real server + simulator over loopback) with one agent busy on a long call
(so callers queue). We place N callers (RSS, without tracemalloc), then M more (tracemalloc), and compare before/after:

* tracemalloc: Python allocations still alive, split by traceback into the simulator's (any frame in
  callcentre/sim/) and the server's (the rest: FastAGI session, IVR, call distribution, AMI tracker,
  both ends' asyncio streams are attributed to whoever created them);
* RSS delta of the process (server + simulator + both ends of every socket: an upper bound).
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import quiet_logs, rss_bytes, trim_heap
from bench.bench_screenpop import fill_queue, keep_staffed, start_stack, stop_stack

_SIM = "/callcentre/sim/"


def _split(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, int]:
    """Bytes grown (server, simulator), by whether any frame of the allocation is in the simulator."""
    server = sim = 0
    for stat in after.compare_to(before, "traceback"):
        if any(_SIM in f.filename for f in stat.traceback):
            sim += stat.size_diff
        else:
            server += stat.size_diff
    return server, sim


async def _run(calls: int, traced: int, warmup: int, settle: float, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cc-bench-mem-") as d:
        st = await start_stack(Path(d), agents=1, serve_web=False)
        try:
            await keep_staffed(st, st.agent_ids[0])
            await fill_queue(st, warmup, progress)  # warm up: first-call imports and caches are not per call
            await asyncio.sleep(settle)
            trim_heap()
            # RSS first, without tracemalloc (its own bookkeeping would count as growth)...
            rss0 = rss_bytes()
            t = time.monotonic()
            ok = await fill_queue(st, calls, progress)
            await asyncio.sleep(settle)
            trim_heap()
            rss1 = rss_bytes()
            fill_seconds = time.monotonic() - t
            rss_calls = max(1, st.services.acd.dist.waiting_count() - warmup)
            # ...then the Python allocations of a second, smaller batch (tracemalloc slows everything
            # several times: a large batch would time out AGI replies and skew what it measures).
            tracemalloc.start(8)
            snap0 = tracemalloc.take_snapshot()
            before = st.services.acd.dist.waiting_count()
            ok = await fill_queue(st, traced, progress) and ok
            await asyncio.sleep(settle)
            gc.collect()
            snap1 = tracemalloc.take_snapshot()
            tracemalloc.stop()
            server, sim = _split(snap0, snap1)
            n = max(1, st.services.acd.dist.waiting_count() - before)
            return {
                "calls_waiting": st.services.acd.dist.waiting_count(),
                "calls_rss_batch": calls,
                "calls_traced_batch": traced,
                "all_queued": ok,
                "fill_seconds": round(fill_seconds, 1),
                "tracemalloc_server_bytes_per_call": round(server / n),
                "tracemalloc_simulator_bytes_per_call": round(sim / n),
                "rss_delta_bytes_per_call_server_and_simulator": round((rss1 - rss0) / rss_calls),
                "target_bytes_per_call": 100 * 1024,
            }
        finally:
            await stop_stack(st)


def run(calls: int = 500, traced: int = 100, warmup: int = 20, settle: float = 0.5,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``calls`` for the RSS delta, ``traced`` more under tracemalloc; ``settle``: seconds left for the
    calls' last steps (and the garbage) before each measurement."""
    quiet_logs()
    return asyncio.run(_run(calls, traced, warmup, settle, progress))


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
