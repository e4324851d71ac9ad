"""Daily reconciliation (当日盘点) and monthly statistics from the database, for the CLI
(``callcentre report daily|monthly``), the supervisor page and the daily scheduler.

The figures are computed by :mod:`callcentre.domain.reports`; this module only loads rows and
renders them: a text table and CSV for the day, and per grouping (category, department, building,
agent) a CSV and an SVG chart for the month. Charts use pygal when it is installed and a small
built-in SVG writer otherwise, so a missing optional package never stops a report.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config, parse_hhmm
from callcentre.domain import reports
from callcentre.domain.model import TicketKind, TicketStatus
from callcentre.domain.ports import Clock, SystemClock
from callcentre.storage.models import CallRow, TicketRow, Unit
from callcentre.storage.service_models import TicketServiceState
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger(__name__)

GROUPINGS: tuple[reports.GroupBy, ...] = ("category", "department", "building", "agent")


def _day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


async def _load(
    sessions: async_sessionmaker[AsyncSession], start: datetime, end: datetime, include_open: bool
) -> tuple[list[reports.TicketRow], list[reports.CallRow]]:
    in_range = (TicketRow.created_at >= start) & (TicketRow.created_at < end)
    where = in_range
    if include_open:
        where = or_(in_range, TicketRow.status.in_([s.value for s in TicketStatus if s.is_open]))
    q = (
        select(TicketRow, TicketServiceState, Unit.building)
        .outerjoin(TicketServiceState, TicketServiceState.ticket_id == TicketRow.id)
        .outerjoin(Unit, Unit.id == TicketRow.unit_id)
        .where(where)
        .order_by(TicketRow.created_at, TicketRow.id)
    )
    cq = select(CallRow).where(CallRow.started_at >= start, CallRow.started_at < end).order_by(CallRow.started_at)
    async with sessions() as s:
        rows = (await s.execute(q)).all()
        calls = (await s.execute(cq)).scalars().all()
    tickets = [
        reports.TicketRow(
            number=t.number, kind=TicketKind(t.kind), category=t.category, status=TicketStatus(t.status),
            created_at=t.created_at, promised_by=t.promised_by,
            resolved_at=svc.resolved_at if svc else None,
            department=svc.department if svc else None,
            building=building,
            agent=svc.agent if svc else None,
            first_contact=svc.first_contact if svc else None,
            repeat=bool(svc.repeat) if svc else False,
            satisfaction=svc.satisfaction if svc else None,
            call_uniqueid=t.call_uniqueid, call_linkedid=t.call_linkedid,
        )
        for t, svc, building in rows
    ]
    # Who answered and whether within the ring target: recorded by call distribution on the answer.
    call_rows = [
        reports.CallRow(uniqueid=c.uniqueid, started_at=c.started_at, caller_id=c.caller_id, ivr_path=c.ivr_path or "",
                        linkedid=c.linkedid, agent=c.answered_by, within_target=c.within_target)
        for c in calls
        if c.started_at is not None
    ]
    return tickets, call_rows


def render_daily(recon: reports.DailyReconciliation) -> str:
    """A plain-text table a supervisor can read in a terminal."""
    lines = [f"Daily reconciliation {recon.day.isoformat()}  ({'clean' if recon.clean else 'needs attention'})", ""]
    lines.append(f"  {'intake':<28}{recon.intake:>6}")
    for title, counts in (("by kind", recon.by_kind), ("by category", recon.by_category), ("by status", recon.by_status)):
        lines.append(f"  {title}")
        for k, v in sorted(counts.items()):
            lines.append(f"    {k:<26}{v:>6}")
    for title, numbers in (
        ("not acknowledged", recon.not_acknowledged),
        ("not dispatched", recon.not_dispatched),
        ("past promise", recon.past_promise),
    ):
        lines.append(f"  {title:<28}{len(numbers):>6}  {' '.join(numbers)}".rstrip())
    lines.append(f"  {'calls without a ticket':<28}{len(recon.calls_without_ticket):>6}")
    for m in recon.calls_without_ticket:
        lines.append(f"    {m.uniqueid}  {m.action}  {m.caller_id or ''}".rstrip())
    return "\n".join(lines) + "\n"


async def daily_report(
    session_factory: async_sessionmaker[AsyncSession], cfg: Config, day: date, clock: Clock | None = None
) -> tuple[str, str]:
    """(text table, CSV) of one local day's reconciliation."""
    now = (clock or SystemClock()).now()
    start, end = _day_bounds(day, cfg.centre.timezone)
    tickets, calls = await _load(session_factory, start, end, include_open=True)
    recon = reports.daily_reconciliation(day, cfg.centre.timezone, tickets, calls, dict(cfg.ivr.menu), now)
    return render_daily(recon), reports.to_csv(recon.rows())


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def chart_svg(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], use_pygal: bool = True) -> bytes:
    """A grouped bar chart as SVG (pygal when available)."""
    if use_pygal:
        try:
            import pygal
        except ImportError:
            pass
        else:
            chart = pygal.Bar(title=title, x_label_rotation=30, show_legend=True, disable_xml_declaration=False,
                              js=[])  # no script from a CDN inside the SVG
            chart.x_labels = list(labels)
            for name, values in series.items():
                chart.add(name, list(values))
            return chart.render()
    return _minimal_svg(title, labels, series)


_COLOURS = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099")


def _minimal_svg(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> bytes:
    width, height, left, bottom, top = max(320, 60 + 70 * len(labels)), 320, 40, 60, 40
    peak = max([v for vals in series.values() for v in vals] + [1])
    plot_h = height - bottom - top
    group_w = (width - left - 10) / max(1, len(labels))
    bar_w = group_w * 0.8 / max(1, len(series))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<title>{escape(title)}</title>',
        f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#333"/>',
    ]
    for gi, label in enumerate(labels):
        x0 = left + gi * group_w + group_w * 0.1
        for si, (name, values) in enumerate(series.items()):
            v = values[gi]
            h = plot_h * v / peak
            out.append(
                f'<rect x="{x0 + si * bar_w:.1f}" y="{height - bottom - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{_COLOURS[si % len(_COLOURS)]}"><title>{escape(name)}: {v:g}</title></rect>'
            )
        out.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - bottom + 15}" text-anchor="middle" font-size="10">'
            f"{escape(label)}</text>"
        )
    for si, name in enumerate(series):
        out.append(
            f'<text x="{left + si * 110}" y="{height - 15}" font-size="11" fill="{_COLOURS[si % len(_COLOURS)]}">'
            f"{escape(name)}</text>"
        )
    out.append("</svg>")
    return ("\n".join(out) + "\n").encode()


async def monthly_report(
    session_factory: async_sessionmaker[AsyncSession],
    cfg: Config,
    year: int,
    month: int,
    out_dir: Path | str,
    use_pygal: bool = True,
) -> list[Path]:
    """Write, per grouping, ``monthly-YYYY-MM-<group>.csv`` and ``.svg``; return their paths."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1 to 12 (got {month})")
    out = Path(out_dir)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    first = date(year, month, 1)
    after = date(year + (month == 12), month % 12 + 1, 1)
    start, _ = _day_bounds(first, cfg.centre.timezone)
    end, _ = _day_bounds(after, cfg.centre.timezone)
    tickets, calls = await _load(session_factory, start, end, include_open=False)
    paths: list[Path] = []
    for group in GROUPINGS:
        rows = reports.monthly_statistics(year, month, cfg.centre.timezone, tickets, calls, group)
        stem = f"monthly-{year:04d}-{month:02d}-{group}"
        csv_path = out / f"{stem}.csv"
        await asyncio.to_thread(_write_atomic, csv_path, reports.to_csv(rows).encode("utf-8"))
        groups = [r for r in rows if r.group != "(total)"]
        svg = chart_svg(
            f"{first:%Y-%m} by {group}",
            [r.group for r in groups],
            {
                "tickets": [r.tickets for r in groups],
                "resolved": [r.resolved for r in groups],
                "promises kept": [r.promises_kept for r in groups],
            },
            use_pygal=use_pygal,
        )
        svg_path = out / f"{stem}.svg"
        await asyncio.to_thread(_write_atomic, svg_path, svg)
        paths += [csv_path, svg_path]
    log.info("monthly report written", year=year, month=month, files=len(paths))
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


__all__ = [
    "GROUPINGS", "ReconciliationScheduler", "chart_svg", "daily_report", "monthly_report", "next_run_at",
    "render_daily",
]
