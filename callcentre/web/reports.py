"""The supervisor's reports in the browser: the daily reconciliation (当日盘点) and the monthly
statistics with their charts (issue 5, points 6 and 7).

The figures come from :mod:`callcentre.domain.reports` over rows loaded by
:mod:`callcentre.service.reports_cmd`, exactly as ``callcentre report daily|monthly`` computes them,
so the page and the CLI never disagree. Supervisors and admins only.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from callcentre.domain import reports
from callcentre.service import reports_cmd
from callcentre.storage.users import UserRole
from callcentre.web import WEB, WebState
from callcentre.web.auth import SUPERVISORS, USER_KEY, public, roles
from callcentre.web.middleware import ApiError, json_response
from callcentre.web.pages import STATIC_DIR

log = structlog.get_logger(__name__)

# ASCII digits only (\d would take full-width and other scripts' digits); fullmatch, so no trailing newline.
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
# Years a report may ask for: keeps the day bounds (and their +1 day) inside what datetime can hold.
_YEARS = range(1970, 9999)
BOM = "\ufeff"  # so Excel reads the CSV as UTF-8 and shows Chinese names correctly
# An SVG opened on its own is a document that could run script: forbid it (and everything but styles).
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; script-src 'none'; sandbox"


def _state(request: web.Request) -> WebState:
    return request.app[WEB]


def _factory(state: WebState) -> Any:
    factory = state.services.session_factory
    if factory is None:
        raise ApiError(503, "starting", "the server is still starting; try again in a moment")
    return factory


def _today(state: WebState) -> date:
    return state.services.clock.now().astimezone(ZoneInfo(state.cfg.centre.timezone)).date()


def parse_day(value: str | None, default: date) -> date:
    """``YYYY-MM-DD`` (nothing else: no week dates, no compact forms), or ``default`` when absent."""
    if value is None or value == "":
        return default
    m = _DATE.fullmatch(value)
    if m is None:
        raise ApiError(400, "invalid_date", "date must be YYYY-MM-DD")
    try:
        day = date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        raise ApiError(400, "invalid_date", "date must be a real calendar day (YYYY-MM-DD)") from None
    if day.year not in _YEARS:
        raise ApiError(400, "invalid_date", f"date must be in the years {_YEARS.start} to {_YEARS.stop - 1}")
    return day


def parse_month(value: str | None, default: date) -> tuple[int, int]:
    """``YYYY-MM`` as (year, month), or the month of ``default`` when absent."""
    if value is None or value == "":
        return default.year, default.month
    m = _MONTH.fullmatch(value)
    if m is None:
        raise ApiError(400, "invalid_month", "month must be YYYY-MM")
    year, month = int(m[1]), int(m[2])
    if not 1 <= month <= 12:
        raise ApiError(400, "invalid_month", "month must be 01 to 12")
    if year not in _YEARS:
        raise ApiError(400, "invalid_month", f"month must be in the years {_YEARS.start} to {_YEARS.stop - 1}")
    return year, month


def _grouping(request: web.Request) -> reports.GroupBy:
    name = request.match_info["grouping"]
    if name not in reports_cmd.GROUPINGS:
        raise ApiError(404, "unknown_grouping", f"grouping must be one of {', '.join(reports_cmd.GROUPINGS)}")
    return name  # type: ignore[return-value]


def _attachment(body: str | bytes, content_type: str, filename: str) -> web.Response:
    # The filename is built only from validated digits and a fixed grouping name: safe in the header.
    return web.Response(
        body=body.encode("utf-8") if isinstance(body, str) else body,
        headers={"Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


# ----------------------------------------------------------------------------------- daily


async def _daily(state: WebState, day: date) -> reports.DailyReconciliation:
    """The same computation as ``reports_cmd.daily_report``, kept as records for the page's sections."""
    cfg = state.cfg
    start, end = reports_cmd._day_bounds(day, cfg.centre.timezone)
    tickets, calls = await reports_cmd._load(_factory(state), start, end, include_open=True)
    return reports.daily_reconciliation(day, cfg.centre.timezone, tickets, calls, dict(cfg.ivr.menu), state.services.clock.now())


@roles(*SUPERVISORS)
async def daily(request: web.Request) -> web.Response:
    state = _state(request)
    day = parse_day(request.query.get("date"), _today(state))
    recon = await _daily(state, day)
    return json_response({
        "date": day.isoformat(),
        "clean": recon.clean,
        "intake": recon.intake,
        "by_kind": recon.by_kind,
        "by_category": recon.by_category,
        "by_status": recon.by_status,
        "not_acknowledged": recon.not_acknowledged,
        "not_dispatched": recon.not_dispatched,
        "past_promise": recon.past_promise,
        "calls_without_ticket": [
            {"uniqueid": m.uniqueid, "started_at": m.started_at.isoformat(), "caller_id": m.caller_id, "action": m.action}
            for m in recon.calls_without_ticket
        ],
        "text": reports_cmd.render_daily(recon),
        "csv": reports.to_csv(recon.rows()),
    })


@roles(*SUPERVISORS)
async def daily_csv(request: web.Request) -> web.Response:
    state = _state(request)
    day = parse_day(request.query.get("date"), _today(state))
    recon = await _daily(state, day)
    return _attachment(BOM + reports.to_csv(recon.rows()), "text/csv; charset=utf-8", f"daily-{day.isoformat()}.csv")


# --------------------------------------------------------------------------------- monthly


async def _month_tickets(state: WebState, year: int, month: int) -> tuple[list[reports.TicketRow], list[reports.CallRow]]:
    """The month's rows, with the same bounds as ``reports_cmd.monthly_report``."""
    tz = state.cfg.centre.timezone
    start, _ = reports_cmd._day_bounds(date(year, month, 1), tz)
    end, _ = reports_cmd._day_bounds(date(year + (month == 12), month % 12 + 1, 1), tz)
    return await reports_cmd._load(_factory(state), start, end, include_open=False)


def _chart(year: int, month: int, group: str, rows: list[reports.MonthlyRow]) -> bytes:
    groups = [r for r in rows if r.group != "(total)"]
    return reports_cmd.chart_svg(
        f"{year:04d}-{month:02d} by {group}",
        [r.group for r in groups],
        {
            "tickets": [r.tickets for r in groups],
            "resolved": [r.resolved for r in groups],
            "promises kept": [r.promises_kept for r in groups],
        },
    )


async def _rows(request: web.Request) -> tuple[int, int, reports.GroupBy, list[reports.MonthlyRow]]:
    state = _state(request)
    group = _grouping(request)
    year, month = parse_month(request.query.get("month"), _today(state))
    tickets, calls = await _month_tickets(state, year, month)
    rows = reports.monthly_statistics(year, month, state.cfg.centre.timezone, tickets, calls, group)
    return year, month, group, rows


@roles(*SUPERVISORS)
async def monthly(request: web.Request) -> web.Response:
    state = _state(request)
    year, month = parse_month(request.query.get("month"), _today(state))
    tickets, calls = await _month_tickets(state, year, month)
    tag = f"{year:04d}-{month:02d}"
    groupings = []
    for group in reports_cmd.GROUPINGS:
        rows = reports.monthly_statistics(year, month, state.cfg.centre.timezone, tickets, calls, group)
        groupings.append({
            "grouping": group,
            "rows": [asdict(r) for r in rows],
            "svg": f"/api/reports/monthly/{group}.svg?month={tag}",
            "csv": f"/api/reports/monthly/{group}.csv?month={tag}",
        })
    return json_response({"month": tag, "groupings": groupings})


@roles(*SUPERVISORS)
async def monthly_svg(request: web.Request) -> web.Response:
    year, month, group, rows = await _rows(request)
    # pygal takes tens of milliseconds for a large month: off the event loop, which carries live calls.
    svg = await asyncio.to_thread(_chart, year, month, group, rows)
    resp = web.Response(body=svg, headers={"Content-Type": "image/svg+xml; charset=utf-8"})
    resp.headers["Content-Security-Policy"] = SVG_CSP  # before security_headers, which only sets defaults
    return resp


@roles(*SUPERVISORS)
async def monthly_csv(request: web.Request) -> web.Response:
    year, month, group, rows = await _rows(request)
    return _attachment(
        BOM + reports.to_csv(rows), "text/csv; charset=utf-8", f"monthly-{year:04d}-{month:02d}-{group}.csv"
    )


# ------------------------------------------------------------------------------------ page


@public
async def reports_page(request: web.Request) -> web.StreamResponse:
    """Public like the other pages (a browser gets a redirect, not a JSON error); the data is role-checked."""
    user: Any = request[USER_KEY]
    if user is None:
        raise web.HTTPFound("/login?next=/reports")
    if user.role is UserRole.AGENT:
        raise web.HTTPFound("/agent")
    return web.FileResponse(
        STATIC_DIR / "reports.html", headers={"Cache-Control": "no-store", "Content-Type": "text/html; charset=utf-8"}
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/reports", reports_page)
    r.add_get("/api/reports/daily", daily)
    r.add_get("/api/reports/daily.csv", daily_csv)
    r.add_get("/api/reports/monthly", monthly)
    r.add_get("/api/reports/monthly/{grouping}.svg", monthly_svg)
    r.add_get("/api/reports/monthly/{grouping}.csv", monthly_csv)


__all__ = ["BOM", "SVG_CSP", "add_routes", "parse_day", "parse_month"]
