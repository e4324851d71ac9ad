"""Tickets: creations per second and latency through SqlTicketStore.create_ticket (idempotency check,
the day's counter, the insert, the commit), on SQLite and on PostgreSQL.

Sequential (one IVR call at a time) and with ``concurrency`` calls creating tickets at once (a busy
hour: the counter row is the contended resource). PostgreSQL runs when ``CALLCENTRE_BENCH_PG_URL``
names a database the benchmark may fill (``postgresql+asyncpg://user:pass@127.0.0.1/db``); its
tables are created by the migrations and the tickets it wrote are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import latency_ms, quiet_logs

PG_ENV = "CALLCENTRE_BENCH_PG_URL"


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


async def _measure(url: str, count: int, concurrency: int) -> dict[str, Any]:
    from sqlalchemy import delete

    from callcentre.config import DatabaseConfig
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.models import TicketRow
    from callcentre.storage.repo import SqlTicketStore

    await upgrade(url, progress=None)
    engine = create_engine(DatabaseConfig(url=url))
    store = SqlTicketStore(session_factory(engine))
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    try:
        out: dict[str, Any] = {}
        for label, width in (("sequential", 1), (f"concurrent_{concurrency}", concurrency)):
            latencies: list[float] = []
            queue = list(range(count))
            prefix = f"{run_id}-{label}"

            async def worker(prefix: str = prefix, latencies: list[float] = latencies, queue: list[int] = queue) -> None:
                while queue:
                    n = queue.pop()
                    t = time.perf_counter()
                    await store.create_ticket(_draft(n, prefix), None)
                    latencies.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(width)))
            elapsed = time.perf_counter() - t0
            out[label] = {"tickets": count, "per_s": round(count / elapsed), "latency": latency_ms(latencies)}
        return out
    finally:
        async with session_factory(engine)() as s, s.begin():
            await s.execute(delete(TicketRow).where(TicketRow.call_uniqueid.like(f"bench-{run_id}-%")))
        await engine.dispose()


def run(count: int = 2000, concurrency: int = 20, pg_url: str | None = None,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    quiet_logs()
    out: dict[str, Any] = {"target_per_s": 500}
    with tempfile.TemporaryDirectory(prefix="cc-bench-tickets-") as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'tickets.db'}"
        out["sqlite"] = asyncio.run(_measure(url, count, concurrency))
    progress(f"  sqlite: {out['sqlite']['sequential']['per_s']}/s sequential, "
             f"{out['sqlite'][f'concurrent_{concurrency}']['per_s']}/s with {concurrency} at once")
    pg_url = pg_url or os.environ.get(PG_ENV)
    if pg_url:
        out["postgresql"] = asyncio.run(_measure(pg_url, count, concurrency))
        progress(f"  postgresql: {out['postgresql']['sequential']['per_s']}/s sequential, "
                 f"{out['postgresql'][f'concurrent_{concurrency}']['per_s']}/s with {concurrency} at once")
    else:
        out["postgresql"] = None
        progress(f"  postgresql: skipped ({PG_ENV} not set)")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
