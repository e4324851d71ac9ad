"""The report commands and the daily scheduler: ``callcentre report daily|monthly`` (a text table and
CSV for the day; per grouping a CSV and an SVG chart for the month, written atomically) and the
reconciliation run every evening.

What they compute and render is :class:`callcentre.service.reports.ReportService`'s, the same the
supervisors' reports page shows, so the page and the CLI never disagree.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config, parse_hhmm
from callcentre.domain import reports
from callcentre.domain.ports import Clock, SystemClock
from callcentre.service.reports import GROUPINGS, ReportService, monthly_chart, render_daily
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger(__name__)


async def daily_report(
    session_factory: async_sessionmaker[AsyncSession], cfg: Config, day: date, clock: Clock | None = None,
    *, hotline: str | None = None,
) -> tuple[str, str]:
    """(text table, CSV) of one local day's reconciliation (``hotline``: of that hotline only)."""
    recon = await ReportService(session_factory, cfg, clock or SystemClock()).daily(day, hotline)
    return render_daily(recon, hotline), reports.to_csv(recon.rows())


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def monthly_report(
    session_factory: async_sessionmaker[AsyncSession],
    cfg: Config,
    year: int,
    month: int,
    out_dir: Path | str,
    use_pygal: bool = True,
    *,
    hotline: str | None = None,
) -> list[Path]:
    """Write, per grouping, ``monthly-YYYY-MM-<group>.csv`` and ``.svg`` (``monthly-YYYY-MM-<hotline>-<group>``
    for one hotline); return their paths."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1 to 12 (got {month})")
    out = Path(out_dir)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    rows = await ReportService(session_factory, cfg, SystemClock()).month(year, month, hotline)
    paths: list[Path] = []
    for group in GROUPINGS:
        stats = rows.statistics(group)
        stem = f"monthly-{rows.file_tag}-{group}"
        csv_path = out / f"{stem}.csv"
        await asyncio.to_thread(_write_atomic, csv_path, reports.to_csv(stats).encode("utf-8"))
        svg_path = out / f"{stem}.svg"
        await asyncio.to_thread(_write_atomic, svg_path, monthly_chart(rows, group, stats, use_pygal=use_pygal))
        paths += [csv_path, svg_path]
    log.info("monthly report written", year=year, month=month, hotline=hotline, files=len(paths))
    return paths


def next_run_at(now: datetime, hhmm: str, tz: str) -> datetime:
    """The next local ``hhmm`` strictly after ``now``, as an aware UTC datetime."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    at = parse_hhmm(hhmm)
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(timezone.utc)


Deliver = Callable[[date, str, str], Awaitable[None] | None]


class ReconciliationScheduler:
    """Runs the daily report at ``service.reconciliation_time`` and hands it to ``deliver(day, text,
    csv)`` (the web layer stores/publishes it). Wakes at least every minute, so a wall-clock step
    delays it by a minute at most."""

    _target: datetime  # the next run, set by start()

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], cfg: Config, clock: Clock, deliver: Deliver
    ) -> None:
        self._sessions = session_factory
        self._cfg = cfg
        self._clock = clock
        self._deliver = deliver
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._target = next_run_at(self._clock.now(), self._cfg.service.reconciliation_time, self._cfg.centre.timezone)
        self._task = asyncio.create_task(self._run(), name="daily-reconciliation")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run_for(self, day: date) -> tuple[str, str]:
        text, csv_text = await daily_report(self._sessions, self._cfg, day, self._clock)
        result: Any = self._deliver(day, text, csv_text)
        if asyncio.iscoroutine(result):
            await result
        log.info("daily reconciliation done", day=day.isoformat())
        return text, csv_text

    async def _run(self) -> None:
        def until_due() -> float:  # at most a minute, so a wall-clock step delays the report a minute at most
            return min(60.0, max(0.5, (self._target - self._clock.now()).total_seconds()))

        await run_periodically("daily-reconciliation", self._run_if_due, until_due)

    async def _run_if_due(self) -> None:
        now = self._clock.now()
        if now < self._target:
            return
        day = self._target.astimezone(ZoneInfo(self._cfg.centre.timezone)).date()
        # The next target first: a failed report (logged with its traceback) waits for the next day.
        self._target = next_run_at(now, self._cfg.service.reconciliation_time, self._cfg.centre.timezone)
        await self.run_for(day)


__all__ = ["ReconciliationScheduler", "daily_report", "monthly_report", "next_run_at"]
