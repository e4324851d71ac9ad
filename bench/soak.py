"""Soak: continuous simulated traffic through the full stack for N minutes (default 30; not run in CI).

``python -m bench.soak --minutes 30``. The real server (FastAGI, AMI link, SQLite or
``--database-url``, call distribution, web) against the PBX simulator, fed by the simulator's realistic
caller mix (callcentre.sim.runner.make_caller: repairs, complaints, self-service, a person, unknown
callers, hang-ups) with agents who answer, one who never does. Every minute: RSS, asyncio tasks,
open file descriptors, calls placed / finished. At the end, after the last call:

* no memory growth trend: the least-squares slope of RSS over the second half of the run;
* no leaked tasks or sockets: tasks and open fds back to what they were before the first call;
* every call accounted for: each call the simulator placed is in the calls table with an outcome,
  and calls in = with a ticket + answered by an agent + hung up / abandoned + self-service done +
  other outcomes (voice message without a ticket, fallback queue), with nothing left over.

Exit status 1 when a check fails, so it can gate a release.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import open_fds, open_sockets, quiet_logs, rss_bytes, trim_heap
from bench.bench_screenpop import start_stack, stop_stack, wait_for

# Growth allowed over the second half of the run before it is called a trend (caches warm, the
# tracker keeps a bounded history of 2,000 finished calls, SQLite's page cache grows with the file).
GROWTH_LIMIT_BYTES_PER_MIN = 512 * 1024
AGENTS = ((2.0, 30.0), (3.0, 40.0), (4.0, 25.0), (6.0, 50.0), (None, 0.0))


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope (bytes per minute) of (seconds, rss) samples; 0 with fewer than 3."""
    if len(samples) < 3:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [float(v) for _, v in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


@dataclass(frozen=True, slots=True)
class CallSummary:
    """What reconciliation needs of a simulated call (the full CallResult, with every command line,
    would make the simulator's own memory grow in the very process whose growth we watch)."""

    uniqueid: str
    fallback_queue: bool
    answered: bool
    ended: str


def drain_results(pbx: Any, into: list[CallSummary]) -> None:
    into.extend(CallSummary(r.uniqueid, r.fallback_queue, r.variables.get("DIALSTATUS") == "ANSWER", r.ended.value)
                for r in pbx.results)
    pbx.results.clear()


async def reconcile(st: Any, results: list[CallSummary]) -> dict[str, Any]:
    """Every simulated call against the calls and tickets tables."""
    from sqlalchemy import select

    from callcentre.storage.models import CallRow, TicketRow

    async with st.services.session_factory() as s:
        calls = {r.uniqueid: r for r in (await s.execute(select(CallRow))).scalars()}
        with_ticket = set((await s.execute(select(TicketRow.call_uniqueid))).scalars())
    buckets: Counter[str] = Counter()
    unaccounted: list[str] = []
    for res in results:
        row = calls.get(res.uniqueid)
        if res.fallback_queue:
            buckets["fallback_queue"] += 1
        elif res.uniqueid in with_ticket:
            buckets["ticket"] += 1
        elif res.answered:
            buckets["answered"] += 1
        elif row is None or row.outcome is None:
            unaccounted.append(res.uniqueid)
        elif row.outcome == "hung_up":
            buckets["hung_up_or_abandoned"] += 1
        elif row.outcome == "done":
            buckets["self_service_done"] += 1
        else:
            buckets[f"outcome_{row.outcome}_without_ticket"] += 1
    figures = st.services.acd.metrics()
    return {
        "calls_in": len(results),
        "buckets": dict(buckets),
        "accounted": sum(buckets.values()),
        "unaccounted": len(unaccounted),
        "unaccounted_sample": unaccounted[:10],
        "calls_table_rows": len(calls),
        "tickets": len(with_ticket),
        "acd_answered": figures.get("calls_answered"),
        "acd_abandoned": figures.get("calls_abandoned"),
        "sim_ended": dict(Counter(r.ended for r in results)),
    }


def _is_sqlite(st: Any) -> bool:
    return st.services.engine.url.get_backend_name() == "sqlite"


def _pooled(st: Any) -> int:
    """Database connections the pool holds open: sockets on PostgreSQL, files on SQLite."""
    if _is_sqlite(st):
        return 0
    pool = st.services.engine.pool
    return int(pool.checkedin()) + int(pool.checkedout())


async def soak(minutes: float, *, rate: float, concurrency: int, speed: float, seed: int,
               database_url: str | None, say: Callable[[str], None], settle: float = 2.0) -> dict[str, Any]:
    from callcentre.sim.runner import DEFAULT_MIX, _pick, make_caller
    from callcentre.sim.scripts import AgentScript

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="cc-soak-") as d:
        st = await start_stack(Path(d), agents=len(AGENTS), speed=speed, serve_web=True, database_url=database_url,
                               extra_env={"CALLCENTRE_ACD__WRAPUP_SECONDS": "1"})
        try:
            for n, (answer, talk) in enumerate(AGENTS):
                st.pbx.add_agent(AgentScript(st.interface(n), answer_after=answer, talk_seconds=talk))
                await st.services.acd.agent_action(st.agent_ids[n], "ready")
            await asyncio.sleep(settle)
            trim_heap()
            base_tasks, base_fds, base_rss = len(asyncio.all_tasks()), open_fds(), rss_bytes()
            base_socks, base_pool = open_sockets(), _pooled(st)
            say(f"soak: {minutes} min, {rate}/s, <= {concurrency} at once, speed {speed}; "
                f"baseline rss {base_rss / 2**20:.1f} MiB, tasks {base_tasks}, fds {base_fds}")
            placed = 0
            done: list[CallSummary] = []
            kinds: Counter[str] = Counter()
            samples: list[tuple[float, int]] = []
            minute_rows: list[dict[str, Any]] = []
            gate = asyncio.Semaphore(concurrency)
            loop = asyncio.get_running_loop()
            start = loop.time()
            end = start + minutes * 60
            next_sample, next_print = start, start + 60
            while loop.time() < end:
                await gate.acquire()
                kind = _pick(rng, DEFAULT_MIX)
                kinds[kind.value] += 1
                task = st.place(make_caller(kind, rng))
                task.add_done_callback(lambda _t: gate.release())
                placed += 1
                now = loop.time()
                if now >= next_sample:
                    drain_results(st.pbx, done)
                    trim_heap()  # RSS then reflects what is held, not what glibc keeps cached
                    samples.append((now - start, rss_bytes()))
                    next_sample += 10
                if now >= next_print:
                    row = {"minute": round((now - start) / 60), "rss_mib": round(rss_bytes() / 2**20, 1),
                           "tasks": len(asyncio.all_tasks()), "fds": open_fds(), "sockets": open_sockets(),
                           "placed": placed,
                           "finished": len(done) + len(st.pbx.results)}
                    minute_rows.append(row)
                    say("  minute {minute}: rss {rss_mib} MiB, tasks {tasks}, fds {fds} (sockets {sockets}), placed {placed}, "
                        "finished {finished}".format(**row))
                    next_print += 60
                await asyncio.sleep(1.0 / rate)
            say(f"soak: traffic stopped after {placed} calls; waiting for the last calls to end")
            await wait_for(lambda: not st.caller_tasks, 180.0, 0.2)
            await wait_for(lambda: st.services.agi.active_sessions == 0, 30.0, 0.1)
            await asyncio.sleep(settle)
            drain_results(st.pbx, done)
            trim_heap()
            end_tasks, end_fds, end_rss = len(asyncio.all_tasks()), open_fds(), rss_bytes()
            end_socks, end_pool = open_sockets(), _pooled(st)
            recon = await reconcile(st, done)
            half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
            slope = slope_per_minute(half)
            checks = {
                "no_memory_growth_trend": slope <= GROWTH_LIMIT_BYTES_PER_MIN,
                "no_leaked_tasks": end_tasks <= base_tasks,
                # Idle database connections kept by the pool are not leaks (sockets on PostgreSQL).
                "no_leaked_sockets": end_socks - max(0, end_pool - base_pool) <= base_socks,
                "every_call_finished": recon["calls_in"] == placed and not st.caller_tasks,
                "every_call_accounted_for": recon["unaccounted"] == 0 and recon["accounted"] == recon["calls_in"],
            }
            return {
                "minutes": minutes, "placed": placed, "by_kind": dict(kinds), "per_minute": minute_rows,
                "rss_mib": {"baseline": round(base_rss / 2**20, 1), "end": round(end_rss / 2**20, 1)},
                "rss_slope_kib_per_min_second_half": round(slope / 1024, 1),
                "tasks": {"baseline": base_tasks, "end": end_tasks},
                "fds": {"baseline": base_fds, "end": end_fds},
                "sockets": {"baseline": base_socks, "end": end_socks},
                "db_pool_connections": {"baseline": base_pool, "end": end_pool, "sqlite": _is_sqlite(st)},
                "reconciliation": recon, "checks": checks, "ok": all(checks.values()),
            }
        finally:
            await stop_stack(st)


def run(minutes: float = 30.0, *, rate: float = 5.0, concurrency: int = 60, speed: float = 20.0, seed: int = 1,
        database_url: str | None = None, settle: float = 2.0, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``settle``: seconds of quiet before the baseline and after the last call (timers, pools)."""
    quiet_logs()
    return asyncio.run(soak(minutes, rate=rate, concurrency=concurrency, speed=speed, seed=seed,
                            database_url=database_url, say=progress, settle=settle))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to run traffic (default 30)")
    p.add_argument("--rate", type=float, default=5.0, help="new calls per second (default 5)")
    p.add_argument("--concurrency", type=int, default=60, help="calls in progress at most (default 60)")
    p.add_argument("--speed", type=float, default=20.0, help="simulated time runs this much faster (default 20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--database-url", default=None, help="a PostgreSQL URL instead of a temporary SQLite file")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.rate <= 0 or a.concurrency < 1 or a.speed <= 0:
        p.error("--minutes, --rate and --speed must be positive and --concurrency at least 1")
    result = run(a.minutes, rate=a.rate, concurrency=a.concurrency, speed=a.speed, seed=a.seed,
                 database_url=a.database_url)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n", encoding="utf-8")
    for name, ok in result["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
