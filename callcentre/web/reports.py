"""The supervisor's reports in the browser: the daily reconciliation (当日盘点) and the monthly
statistics with their charts (issue 5, points 6 and 7).

The figures come from the report service (:class:`callcentre.service.reports.ReportService`, seen
through :class:`~callcentre.web.ports.Reports`), the one ``callcentre report daily|monthly`` uses,
so the page and the CLI never disagree. Supervisors and admins only.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict
from datetime import date
from typing import Any

import structlog
from aiohttp import web

from callcentre.domain import reports
from callcentre.domain.users import sees_supervisor_pages
from callcentre.service.reports import GROUPINGS, MonthRows
from callcentre.web import WEB
from callcentre.web.auth import SUPERVISORS, USER_KEY, public, roles
from callcentre.web.middleware import ApiError, json_response
from callcentre.web.pages import STATIC_DIR
from callcentre.web.ports import Reports

log = structlog.get_logger(__name__)

# ASCII digits only (\d would take full-width and other scripts' digits); fullmatch, so no trailing newline.
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
# Years a report may ask for: keeps the day bounds (and their +1 day) inside what datetime can hold.
_YEARS = range(1970, 9999)
BOM = "\ufeff"  # so Excel reads the CSV as UTF-8 and shows Chinese names correctly
# An SVG opened on its own is a document that could run script: forbid it (and everything but styles).
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; script-src 'none'; sandbox"


def _reports(request: web.Request) -> Reports:
    return request.app[WEB].features.reports


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


_HOTLINE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,31}")


def _hotline(request: web.Request) -> str | None:
    """``?hotline=<id>``: one hotline's figures (the service refuses an id that is not configured)."""
    value = request.query.get("hotline")
    if value is None or value == "":
        return None
    if not _HOTLINE.fullmatch(value):
        raise ApiError(400, "unknown_hotline", "hotline must be the id of a configured hotline")
    return value


def _grouping(request: web.Request) -> reports.GroupBy:
    name = request.match_info["grouping"]
    if name not in GROUPINGS:
        raise ApiError(404, "unknown_grouping", f"grouping must be one of {', '.join(GROUPINGS)}")
    return name  # type: ignore[return-value]


def _attachment(body: str | bytes, content_type: str, filename: str) -> web.Response:
    # The filename is built only from validated digits and a fixed grouping name: safe in the header.
    return web.Response(
        body=body.encode("utf-8") if isinstance(body, str) else body,
        headers={"Content-Type": content_type, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


# ----------------------------------------------------------------------------------- daily


async def _daily(request: web.Request) -> tuple[date, reports.DailyReconciliation]:
    service = _reports(request)
    day = parse_day(request.query.get("date"), service.today())
    return day, await service.daily(day, _hotline(request))


@roles(*SUPERVISORS)
async def daily(request: web.Request) -> web.Response:
    day, recon = await _daily(request)
    hotline = _hotline(request)
    return json_response({
        "date": day.isoformat(),
        "hotline": hotline,
        "hotlines": _reports(request).hotlines(),
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
        "text": _reports(request).render_daily(recon, hotline),
        "csv": reports.to_csv(recon.rows()),
    })


@roles(*SUPERVISORS)
async def daily_csv(request: web.Request) -> web.Response:
    day, recon = await _daily(request)
    hotline = _hotline(request)
    name = f"daily-{day.isoformat()}{f'-{hotline}' if hotline else ''}.csv"  # validated id: safe in the header
    return _attachment(BOM + reports.to_csv(recon.rows()), "text/csv; charset=utf-8", name)


# --------------------------------------------------------------------------------- monthly


async def _month(request: web.Request) -> MonthRows:
    service = _reports(request)
    year, month = parse_month(request.query.get("month"), service.today())
    return await service.month(year, month, _hotline(request))


async def _rows(request: web.Request) -> tuple[MonthRows, reports.GroupBy, list[reports.MonthlyRow]]:
    group = _grouping(request)
    month = await _month(request)
    return month, group, month.statistics(group)


@roles(*SUPERVISORS)
async def monthly(request: web.Request) -> web.Response:
    month = await _month(request)
    also = f"&hotline={month.hotline}" if month.hotline else ""  # a validated, configured id
    groupings = []
    for group in GROUPINGS:
        groupings.append({
            "grouping": group,
            "rows": [asdict(r) for r in month.statistics(group)],
            "svg": f"/api/reports/monthly/{group}.svg?month={month.tag}{also}",
            "csv": f"/api/reports/monthly/{group}.csv?month={month.tag}{also}",
        })
    return json_response({"month": month.tag, "hotline": month.hotline, "hotlines": _reports(request).hotlines(),
                          "groupings": groupings})


@roles(*SUPERVISORS)
async def monthly_svg(request: web.Request) -> web.Response:
    month, group, rows = await _rows(request)
    # pygal takes tens of milliseconds for a large month: off the event loop, which carries live calls.
    svg = await asyncio.to_thread(_reports(request).chart, month, group, rows)
    resp = web.Response(body=svg, headers={"Content-Type": "image/svg+xml; charset=utf-8"})
    resp.headers["Content-Security-Policy"] = SVG_CSP  # before security_headers, which only sets defaults
    return resp


@roles(*SUPERVISORS)
async def monthly_csv(request: web.Request) -> web.Response:
    month, group, rows = await _rows(request)
    return _attachment(BOM + reports.to_csv(rows), "text/csv; charset=utf-8", f"monthly-{month.file_tag}-{group}.csv")


# ------------------------------------------------------------------------------------ page


@public
async def reports_page(request: web.Request) -> web.StreamResponse:
    """Public like the other pages (a browser gets a redirect, not a JSON error); the data is role-checked."""
    user: Any = request[USER_KEY]
    if user is None:
        raise web.HTTPFound("/login?next=/reports")
    if not sees_supervisor_pages(user):
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
