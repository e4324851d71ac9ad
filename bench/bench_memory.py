"""Memory per concurrent call: callers in the IVR, and callers waiting for an agent.

The in-process stack of bench_screenpop (the real server and the simulator over loopback, one process)
so that tracemalloc can split each allocation by its traceback into the simulator's (any frame in
callcentre/sim/ or in this benchmark's own code: the callers' tasks, its counters) and the server's
(the rest: FastAGI session, IVR, call distribution, AMI tracker; both ends' asyncio streams are
attributed to whoever created them). Two kinds of concurrent call:

* **in the IVR** (the target): known owners identified by caller ID who chose repair and a category
  and are speaking their message (RECORD FILE in progress: owner look-up done, the call's record
  written, no ticket yet). Recordings may last 10 minutes here (``ivr.record_max_seconds``), so that
  every caller of both batches is in one at the same time;
* **waiting** for an agent (music on hold, in the call distribution's queue), with one agent busy on
  a long call so that callers queue.

For each: N callers for the RSS delta (without tracemalloc, after ``malloc_trim``; server and
simulator together, an upper bound), then M more under tracemalloc (the figure).
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

from bench import REPO, quiet_logs, rss_bytes, trim_heap
from bench.bench_screenpop import BenchStack, fill_queue, keep_staffed, start_stack, stop_stack, wait_for

_SIM = "/callcentre/sim/"
_LOAD = str(REPO / "bench") + "/"  # the benchmark's own bookkeeping (callers' tasks, counters)


def _load_side(tb: tracemalloc.Traceback) -> bool:
    """Allocated by the simulator or by this benchmark, not by the server."""
    return any(_SIM in f.filename or f.filename.startswith(_LOAD) for f in tb)
TARGET_BYTES_PER_IVR_CALL = 30 * 1024


def _split(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, int]:
    """Bytes grown (server, simulator), by whether any frame of the allocation is in the simulator."""
    server = sim = 0
    for stat in after.compare_to(before, "traceback"):
        if _load_side(stat.traceback):
            sim += stat.size_diff
        else:
            server += stat.size_diff
    return server, sim


def top_server_lines(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int = 12) -> list[str]:
    """Where the server's growth was allocated (the innermost frame outside the simulator)."""
    sizes: dict[str, int] = {}
    for stat in after.compare_to(before, "traceback"):
        if _load_side(stat.traceback) or stat.size_diff <= 0:
            continue
        frame = stat.traceback[-1]
        key = f"{frame.filename.split('/site-packages/')[-1].split('/work/')[-1]}:{frame.lineno}"
        sizes[key] = sizes.get(key, 0) + stat.size_diff
    return [f"{size:>9} {where}" for where, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:n]]


async def _run_waiting(calls: int, traced: int, warmup: int, settle: float,
                       progress: Callable[[str], None]) -> dict[str, Any]:
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
                "server_top_lines": top_server_lines(snap0, snap1),
            }
        finally:
            await stop_stack(st)


class _Recording:
    """Which simulated channels are in a RECORD FILE right now (AGIExecStart/End seen by the PBX)."""

    def __init__(self) -> None:
        self.now: set[str] = set()
        self.started = 0

    def __call__(self, fields: list[tuple[str, str]]) -> None:
        kind = fields[0][1]
        if kind not in ("AGIExecStart", "AGIExecEnd"):
            return
        f = dict(fields)
        if not f.get("Command", "").upper().startswith("RECORD FILE"):
            return
        if kind == "AGIExecStart":
            self.now.add(f.get("Uniqueid", ""))
            self.started += 1
        else:
            self.now.discard(f.get("Uniqueid", ""))


async def _known_callers(st: BenchStack) -> list[str]:
    """Example owners the directory knows as exactly one owner (no unit question in the IVR)."""
    from bench.bench_agi import CANDIDATE_CALLERS
    from callcentre.domain import callerid

    c = st.cfg.centre
    out = []
    for number in CANDIDATE_CALLERS:
        normalised = callerid.normalise(number, country_code=c.country_code, trunk_prefix=c.trunk_prefix,
                                        intl_prefix=c.international_prefix, area_code=c.area_code)
        if normalised and len(await st.services.directory.find_by_phone(normalised)) == 1:
            out.append(number)
    return out


async def _place_in_ivr(st: BenchStack, callers: list[str], rec: _Recording, count: int, timeout: float) -> bool:  # noqa: ASYNC109
    """``count`` more callers who stay in the IVR (speaking a long message); wait until all are recording."""
    from callcentre.sim.scripts import CallerScript, Record

    target = len(rec.now) + count
    for n in range(count):
        st.place(CallerScript(callers[n % len(callers)], inputs=["2", "1", Record(seconds=1e6, end_with=None)],
                              channel_tech="PJSIP", silences_before_giving_up=0))
        if n % 50 == 49:
            await asyncio.sleep(0)
    return await wait_for(lambda: len(rec.now) >= target, timeout, 0.05)


async def _hang_up_all(st: BenchStack) -> None:
    tasks = list(st.caller_tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await wait_for(lambda: st.services.agi.active_sessions == 0, 30.0, 0.05)


async def _run_ivr(calls: int, traced: int, warmup: int, settle: float, speed: float,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cc-bench-mem-ivr-") as d:
        # Recordings of up to 10 minutes (one at speed 10): every caller of both batches is still speaking
        # when the last one starts, however slow the machine (tracemalloc slows everything).
        st = await start_stack(Path(d), agents=1, serve_web=False, speed=speed,
                               extra_env={"CALLCENTRE_IVR__RECORD_MAX_SECONDS": "600",
                                          "CALLCENTRE_AGI__SHUTDOWN_GRACE_SECONDS": "615"})
        rec = _Recording()
        unsubscribe = st.pbx.subscribe(rec)
        try:
            callers = await _known_callers(st)
            # Warm up (imports, caches, prepared statements), then every caller hangs up.
            if not await _place_in_ivr(st, callers, rec, warmup, 60.0):
                raise RuntimeError("the warm-up callers did not reach the recording")
            await _hang_up_all(st)
            rec.now.clear()  # a hung-up recording has no AGIExecEnd; no call is left now
            await asyncio.sleep(settle)
            trim_heap()
            rss0 = rss_bytes()
            t = time.monotonic()
            ok = await _place_in_ivr(st, callers, rec, calls, 120.0)
            await asyncio.sleep(settle)
            trim_heap()
            rss1 = rss_bytes()
            fill_seconds = time.monotonic() - t
            in_ivr_rss = len(rec.now)
            progress(f"  {in_ivr_rss} callers in the IVR at once (recording a message)")
            tracemalloc.start(8)
            snap0 = tracemalloc.take_snapshot()
            before = len(rec.now)
            ok = await _place_in_ivr(st, callers, rec, traced, 120.0) and ok
            await asyncio.sleep(settle)
            gc.collect()
            snap1 = tracemalloc.take_snapshot()
            tracemalloc.stop()
            n = len(rec.now) - before
            still = len(rec.now) >= before + traced and in_ivr_rss >= calls
            if n < traced:
                raise RuntimeError(f"only {n} of the {traced} traced callers were in the IVR when measured")
            server, sim = _split(snap0, snap1)
            return {
                "calls_in_ivr": len(rec.now),
                "calls_rss_batch": calls,
                "calls_traced_batch": traced,
                "all_in_ivr": ok and still,
                "simulator_speed": speed,
                "fill_seconds": round(fill_seconds, 1),
                "tracemalloc_server_bytes_per_call": round(server / max(1, n)),
                "tracemalloc_simulator_bytes_per_call": round(sim / max(1, n)),
                "rss_delta_bytes_per_call_server_and_simulator": round((rss1 - rss0) / max(1, in_ivr_rss)),
                "server_top_lines": top_server_lines(snap0, snap1),
            }
        finally:
            unsubscribe()
            await stop_stack(st)


def run(calls: int = 500, traced: int = 100, warmup: int = 20, settle: float = 0.5, ivr_speed: float = 10.0,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``calls`` for the RSS delta, ``traced`` more under tracemalloc, in each of the two states;
    ``settle``: seconds left for the calls' last steps (and the garbage) before each measurement."""
    quiet_logs()
    ivr = asyncio.run(_run_ivr(calls, traced, warmup, settle, ivr_speed, progress))
    progress(f"  in the IVR: server {ivr['tracemalloc_server_bytes_per_call'] / 1024:.1f} KiB per call, "
             f"simulator {ivr['tracemalloc_simulator_bytes_per_call'] / 1024:.1f} KiB")
    waiting = asyncio.run(_run_waiting(calls, traced, warmup, settle, progress))
    progress(f"  waiting: server {waiting['tracemalloc_server_bytes_per_call'] / 1024:.1f} KiB per call, "
             f"simulator {waiting['tracemalloc_simulator_bytes_per_call'] / 1024:.1f} KiB")
    return {"in_ivr": ivr, "waiting": waiting, "target_bytes_per_ivr_call": TARGET_BYTES_PER_IVR_CALL,
            "met": ivr["tracemalloc_server_bytes_per_call"] < TARGET_BYTES_PER_IVR_CALL}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
