"""Tickets: creations per second and latency through SqlTicketStore.create_ticket, on SQLite and on PostgreSQL.

Each ticket is timed from the call of ``create_ticket`` to its return, which happens only after the
row is committed (the day's counter, the insert, the commit), through the engine's one writer, which
groups the tickets waiting at the same moment into one transaction (``tickets_per_commit``).

* one at a time: one IVR call after another (every ticket is its own transaction);
* ``concurrency`` at once: that many calls creating tickets back to back (a busy hour).

SQLite runs twice: with the product's setting (WAL, ``synchronous=NORMAL``: a commit survives a crash
of the process, not a power cut) and with ``synchronous=FULL`` (an fsync per commit: survives a power
cut), so the price of the stronger promise is measured in the same run. PostgreSQL runs when
``CALLCENTRE_BENCH_PG_URL`` names a database the benchmark may fill
(``postgresql+asyncpg://user:pass@127.0.0.1/db``); its tables are created by the migrations and the
tickets it wrote are deleted afterwards.

The machine is shared: every figure is measured ``runs`` times (default 3) with the load average
(``uptime``) at its start; the figure reported is the run with the median rate, all runs are kept.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import latency_ms, quiet_logs

PG_ENV = "CALLCENTRE_BENCH_PG_URL"
TARGET_PER_S = 2000
TARGET_P99_MS = 20.0


def uptime() -> str:
    """The load averages as ``uptime`` prints them (1, 5, 15 minutes)."""
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def _draft(n: int, run_id: str) -> Any:
    from callcentre.domain.model import Priority, TicketDraft, TicketKind

    return TicketDraft(
        kind=TicketKind.REPAIR if n % 3 else TicketKind.COMPLAINT,
        category="water" if n % 3 else "property",
        priority=Priority.GENERAL,
        caller_id_raw="13800138000",
        caller_id="+8613800138000",
        call_uniqueid=f"bench-{run_id}-{n}",
        caller_name="Zhang San",
        ivr_path="2>1>rec",
        channel=f"PJSIP/owner-phone-{n:08x}",
        voice_file=f"/var/spool/asterisk/callcentre/bench-{n}.wav",
    )


async def _measure(url: str, count: int, width: int, synchronous: str) -> dict[str, Any]:
    """``count`` tickets by ``width`` workers on a fresh engine; the tickets are deleted afterwards."""
    from sqlalchemy import delete

    from callcentre.config import DatabaseConfig
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.models import TicketRow
    from callcentre.storage.repo import SqlTicketStore
    from callcentre.storage.writer import writer_of

    await upgrade(url, progress=None)
    engine = create_engine(DatabaseConfig(url=url), sqlite_synchronous=synchronous)
    store = SqlTicketStore(session_factory(engine))
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    writer = writer_of(engine)
    try:
        await store.create_ticket(_draft(-1, run_id), None)  # connections open, statements compiled
        groups_before = writer.groups
        latencies: list[float] = []
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                t = time.perf_counter()
                await store.create_ticket(_draft(n, run_id), None)
                latencies.append(time.perf_counter() - t)

        load = uptime()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(width)))
        elapsed = time.perf_counter() - t0
        out: dict[str, Any] = {"tickets": count, "per_s": round(count / elapsed), "latency": latency_ms(latencies),
                               "uptime": load}
        out["tickets_per_commit"] = round(count / max(1, writer.groups - groups_before), 2)
        return out
    finally:
        async with session_factory(engine)() as s, s.begin():
            await s.execute(delete(TicketRow).where(TicketRow.call_uniqueid.like(f"bench-{run_id}-%")))
        await engine.dispose()


def _figure(url: str, count: int, width: int, runs: int, synchronous: str = "NORMAL") -> dict[str, Any]:
    """``runs`` measurements; the one with the median rate, with every run beside it."""
    all_runs = [asyncio.run(_measure(url, count, width, synchronous)) for _ in range(runs)]
    median = statistics.median_low([r["per_s"] for r in all_runs])
    chosen = next(r for r in all_runs if r["per_s"] == median)
    return {**chosen, "runs": [{k: r[k] for k in ("per_s", "latency", "uptime")} for r in all_runs]}


def _database(url: str, count: int, concurrency: int, runs: int, synchronous: str = "NORMAL") -> dict[str, Any]:
    return {
        "sequential": _figure(url, count, 1, runs, synchronous),
        f"concurrent_{concurrency}": _figure(url, count, concurrency, runs, synchronous),
    }


def _say(progress: Callable[[str], None], name: str, res: dict[str, Any]) -> None:
    for label, fig in res.items():
        rates = ", ".join(f"{r['per_s']}/s p99 {r['latency']['p99_ms']} ms ({r['uptime']})" for r in fig["runs"])
        progress(f"  {name} {label}: {fig['per_s']}/s, p50 {fig['latency']['p50_ms']} ms, p99 {fig['latency']['p99_ms']} ms"
                 f"  [runs: {rates}]")


def run(count: int = 2000, concurrency: int = 20, runs: int = 3, pg_url: str | None = None,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    quiet_logs()
    out: dict[str, Any] = {"target_per_s": TARGET_PER_S, "target_p99_ms_concurrent": TARGET_P99_MS}
    with tempfile.TemporaryDirectory(prefix="cc-bench-tickets-") as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'tickets.db'}"
        out["sqlite"] = _database(url, count, concurrency, runs)
        _say(progress, "sqlite", out["sqlite"])
        out["sqlite_synchronous_full"] = _database(url, count, concurrency, runs, "FULL")
        _say(progress, "sqlite (synchronous=FULL)", out["sqlite_synchronous_full"])
    pg_url = pg_url or os.environ.get(PG_ENV)
    if pg_url:
        out["postgresql"] = _database(pg_url, count, concurrency, runs)
        _say(progress, "postgresql", out["postgresql"])
    else:
        out["postgresql"] = None
        progress(f"  postgresql: skipped ({PG_ENV} not set)")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
