"""The reports service: the daily reconciliation (当日盘点) and the monthly statistics, one
computation for the CLI (``callcentre report``), the supervisors' page and the daily scheduler.

The figures are :mod:`callcentre.domain.reports`'; this module loads their rows from the database
and renders them: a text table for the day, and per grouping (category, department, building,
agent) an SVG chart for the month. Charts use pygal when it is installed and a small built-in SVG
writer otherwise, so a missing optional package never stops a report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config
from callcentre.domain import reports
from callcentre.domain.errors import Invalid
from callcentre.domain.hotlines import Hotlines
from callcentre.domain.model import TicketKind, TicketStatus
from callcentre.domain.ports import Clock, today_local
from callcentre.storage.models import CallRow, TicketRow, Unit
from callcentre.storage.service_models import TicketServiceState

GROUPINGS: tuple[reports.GroupBy, ...] = ("category", "department", "building", "agent")


def day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """One local day as [start, end) in UTC."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def month_bounds(year: int, month: int, tz: str) -> tuple[datetime, datetime]:
    """One local calendar month as [start, end) in UTC."""
    start, _ = day_bounds(date(year, month, 1), tz)
    end, _ = day_bounds(date(year + (month == 12), month % 12 + 1, 1), tz)
    return start, end


async def load_rows(
    sessions: async_sessionmaker[AsyncSession], start: datetime, end: datetime, *, include_open: bool,
    hotline: str | None = None,
) -> tuple[list[reports.TicketRow], list[reports.CallRow]]:
    """The tickets created in [start, end) (and, with ``include_open``, every ticket still open) and
    the calls started in it, as the domain's report rows; ``hotline``: only that hotline's."""
    in_range = (TicketRow.created_at >= start) & (TicketRow.created_at < end)
    where = in_range
    if include_open:
        where = or_(in_range, TicketRow.status.in_([s.value for s in TicketStatus if s.is_open]))
    if hotline is not None:
        where = and_(where, TicketRow.hotline == hotline)
    q = (
        select(TicketRow, TicketServiceState, Unit.building)
        .outerjoin(TicketServiceState, TicketServiceState.ticket_id == TicketRow.id)
        .outerjoin(Unit, Unit.id == TicketRow.unit_id)
        .where(where)
        .order_by(TicketRow.created_at, TicketRow.id)
    )
    cq = select(CallRow).where(CallRow.started_at >= start, CallRow.started_at < end).order_by(CallRow.started_at)
    if hotline is not None:
        cq = cq.where(CallRow.hotline == hotline)
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
            call_uniqueid=t.call_uniqueid, call_linkedid=t.call_linkedid, hotline=t.hotline,
        )
        for t, svc, building in rows
    ]
    # Who answered and whether within the ring target: recorded by call distribution on the answer.
    call_rows = [
        reports.CallRow(uniqueid=c.uniqueid, started_at=c.started_at, caller_id=c.caller_id, ivr_path=c.ivr_path or "",
                        linkedid=c.linkedid, agent=c.answered_by, within_target=c.within_target, hotline=c.hotline)
        for c in calls
        if c.started_at is not None
    ]
    return tickets, call_rows


def render_daily(recon: reports.DailyReconciliation, hotline: str | None = None) -> str:
    """A plain-text table a supervisor can read in a terminal (``hotline``: the one it was made for)."""
    scope = f" hotline {hotline}" if hotline else ""
    lines = [f"Daily reconciliation {recon.day.isoformat()}{scope}  ({'clean' if recon.clean else 'needs attention'})",
             ""]
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


@dataclass(frozen=True, slots=True)
class MonthRows:
    """A month's report rows, loaded once and grouped as many ways as asked."""

    year: int
    month: int
    tz: str
    tickets: list[reports.TicketRow]
    calls: list[reports.CallRow]
    hotline: str | None = None  # only this hotline's tickets and calls (None: every hotline)

    @property
    def tag(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def file_tag(self) -> str:
        """What names the month's files: ``2026-11``, or ``2026-11-riverside`` for one hotline."""
        return self.tag if self.hotline is None else f"{self.tag}-{self.hotline}"

    def statistics(self, group: reports.GroupBy) -> list[reports.MonthlyRow]:
        return reports.monthly_statistics(self.year, self.month, self.tz, self.tickets, self.calls, group)


def monthly_chart(month: MonthRows, group: reports.GroupBy, rows: Sequence[reports.MonthlyRow],
                  use_pygal: bool = True) -> bytes:
    """The month's chart for one grouping: tickets, resolved and promises kept per group."""
    groups = [r for r in rows if r.group != "(total)"]
    return chart_svg(
        f"{month.tag}{f' ({month.hotline})' if month.hotline else ''} by {group}",
        [r.group for r in groups],
        {
            "tickets": [r.tickets for r in groups],
            "resolved": [r.resolved for r in groups],
            "promises kept": [r.promises_kept for r in groups],
        },
        use_pygal=use_pygal,
    )


class ReportService:
    """What the CLI, the reports page and the scheduler ask for; every read is one short transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cfg: Config, clock: Clock) -> None:
        self._sessions = sessions
        self._cfg = cfg
        self._clock = clock
        self._hotlines = Hotlines.from_config(cfg)

    @property
    def timezone(self) -> str:
        return self._cfg.centre.timezone

    def hotlines(self) -> list[dict[str, Any]]:
        """Every hotline ({id, name}): what a report may be filtered by."""
        return self._hotlines.cards()

    def check_hotline(self, hotline: str | None) -> str | None:
        """``hotline`` if it is configured (None stays None: every hotline); Invalid otherwise."""
        if hotline is not None and hotline not in self._hotlines:
            raise Invalid(f"no hotline {hotline!r} (configured: {', '.join(self._hotlines.ids)})", code="unknown_hotline")
        return hotline

    def today(self) -> date:
        """The centre's local date now."""
        return today_local(self._clock, self.timezone)

    async def daily(self, day: date, hotline: str | None = None) -> reports.DailyReconciliation:
        """One local day's reconciliation (of one hotline's tickets and calls, or all); open tickets from
        earlier days are included. Each call's IVR path is read with its own hotline's menu."""
        start, end = day_bounds(day, self.timezone)
        tickets, calls = await load_rows(self._sessions, start, end, include_open=True,
                                         hotline=self.check_hotline(hotline))
        menus = {h.id: dict(h.ivr.menu) for h in self._hotlines}
        return reports.daily_reconciliation(day, self.timezone, tickets, calls, dict(self._hotlines.default.ivr.menu),
                                            self._clock.now(), menus)

    async def month(self, year: int, month: int, hotline: str | None = None) -> MonthRows:
        start, end = month_bounds(year, month, self.timezone)
        tickets, calls = await load_rows(self._sessions, start, end, include_open=False,
                                         hotline=self.check_hotline(hotline))
        return MonthRows(year, month, self.timezone, tickets, calls, hotline)

    async def monthly(self, year: int, month: int, hotline: str | None = None
                      ) -> Mapping[reports.GroupBy, list[reports.MonthlyRow]]:
        """The month's statistics under every grouping (one load)."""
        rows = await self.month(year, month, hotline)
        return {group: rows.statistics(group) for group in GROUPINGS}

    @staticmethod
    def render_daily(recon: reports.DailyReconciliation, hotline: str | None = None) -> str:
        return render_daily(recon, hotline)

    @staticmethod
    def chart(month: MonthRows, group: reports.GroupBy, rows: Sequence[reports.MonthlyRow]) -> bytes:
        return monthly_chart(month, group, rows)


__all__ = [
    "GROUPINGS", "MonthRows", "ReportService", "chart_svg", "day_bounds", "load_rows", "month_bounds", "monthly_chart",
    "render_daily",
]
