"""The escalation pass over a backlog of open tickets: how long one pass takes, and how long it holds
the event loop at a stretch (the IVR, call distribution and the web part share that loop).

Every ``service.escalation_check_seconds`` (15 s by default) the escalation loop reads every open
ticket with a promise, page by page (:meth:`~callcentre.service.tickets.TicketService.open_states_pages`),
and computes the alerts and the wallboard's overdue list. Here ``open_tickets`` tickets are created
through the product's own store (promised six hours ahead, so no alert is written and every pass does
the same work), then :meth:`~callcentre.service.escalation.EscalationLoop.run_once` runs ``passes``
times while :class:`bench.server.LoopMonitor` (a 1 ms sleep on the same loop) records how late it
wakes: the longest lateness is the longest stretch a pass held the loop.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench import latency_ms, quiet_logs
from bench.bench_tickets import _draft, uptime


async def _measure(open_tickets: int, passes: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench.server import LoopMonitor
    from callcentre.config import DatabaseConfig, load_config
    from callcentre.domain.ports import SystemClock
    from callcentre.service.escalation import EscalationLoop
    from callcentre.service.tickets import OPEN_STATES_PAGE, TicketService
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.repo import SqlTicketStore

    with tempfile.TemporaryDirectory(prefix="cc-bench-escalation-") as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'escalation.db'}"
        await upgrade(url, progress=None)
        engine = create_engine(DatabaseConfig(url=url))
        try:
            sessions = session_factory(engine)
            store = SqlTicketStore(sessions)
            promised = datetime.now(timezone.utc) + timedelta(hours=6)
            for first in range(0, open_tickets, 200):
                await asyncio.gather(*(store.create_ticket(_draft(n, "escalation"), promised)
                                       for n in range(first, min(open_tickets, first + 200))))
            cfg = load_config(None)
            loop = EscalationLoop(TicketService(sessions, cfg, SystemClock()), cfg, SystemClock(), lambda *_: None)
            await loop.run_once()  # statements compiled, connections open
            runs: list[dict[str, Any]] = []
            for _ in range(passes):
                monitor = LoopMonitor(interval=0.001)  # the same sleeper the other benchmarks use, every 1 ms
                monitor.start()
                await asyncio.sleep(0.02)
                load = uptime()
                wall, cpu = time.perf_counter(), time.process_time()
                alerts = await loop.run_once()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                await monitor.stop()
                runs.append({"pass_ms": round(wall * 1000, 1), "cpu_ms": round(cpu * 1000, 1), "alerts": len(alerts),
                             "loop_late": latency_ms(list(monitor.lag)), "uptime": load,
                             "gc_max_ms": round(max((g[2] for g in monitor.gc_events), default=0.0) * 1000, 3)})
                progress(f"  {open_tickets} open tickets: pass {runs[-1]['pass_ms']} ms (CPU {runs[-1]['cpu_ms']} ms), "
                         f"loop held at most {runs[-1]['loop_late']['max_ms']} ms (longest collection {runs[-1]['gc_max_ms']} ms; {load})")
            return {"open_tickets": open_tickets, "page_size": OPEN_STATES_PAGE, "passes": runs,
                    "loop_held_max_ms": max(r["loop_late"]["max_ms"] for r in runs)}
        finally:
            await engine.dispose()


def run(open_tickets: int = 6400, passes: int = 3, progress: Callable[[str], None] = print) -> dict[str, Any]:
    quiet_logs()
    return asyncio.run(_measure(open_tickets, passes, progress))


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
