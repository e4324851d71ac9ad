"""The supervisor's reports over HTTP and in a browser: daily reconciliation, monthly statistics,
charts and CSV downloads, on the same migrated database, users and server as test_web_api."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

import test_web_api
import test_web_browser
from callcentre.storage.models import CallRow, Unit
from callcentre.web.reports import SVG_CSP
from test_web_api import T0, Env

env = test_web_api.env
push_interval = test_web_api.push_interval
browser = test_web_browser.browser

DAY = "2026-11-24"  # T0 (02:00 UTC) is 10:00 in Asia/Shanghai, the default centre time zone
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


async def _desk_ticket(env: Env) -> str:
    """A repair ticket made at the agent desk (promised in 30 minutes: general, water)."""
    c, csrf = await env.login("agent1")
    resp = await c.post("/api/tickets", json={"kind": "repair", "category": "water", "priority": "general",
                                              "owner_id": env.ids["zhang"], "unit_id": env.ids["u1"],
                                              "notes": "kitchen tap"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["ticket"]["number"]


def _csv_rows(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode("utf-8")), body[:10]
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.parametrize("path", [
    "/api/reports/daily", f"/api/reports/daily.csv?date={DAY}", "/api/reports/monthly?month=2026-11",
    "/api/reports/monthly/category.svg?month=2026-11", "/api/reports/monthly/agent.csv?month=2026-11",
])
async def test_only_supervisors_and_admins_see_reports(env: Env, path: str) -> None:
    anonymous = await env.client()
    assert (await anonymous.get(path)).status == 401
    agent, _ = await env.login("agent1")
    resp = await agent.get(path)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    for login in ("sup", "admin"):
        c, _ = await env.login(login)
        assert (await c.get(path)).status == 200, login


async def test_ticket_past_its_promise_is_in_the_daily_json_and_csv(env: Env) -> None:
    number = await _desk_ticket(env)
    sup, _ = await env.login("sup")
    before = await (await sup.get(f"/api/reports/daily?date={DAY}")).json()
    assert number in before["not_acknowledged"] and number not in before["past_promise"]

    env.services.clock.advance(31 * 60)  # one minute past the 30-minute promise
    resp = await sup.get(f"/api/reports/daily?date={DAY}")
    assert resp.status == 200
    d = await resp.json()
    assert d["date"] == DAY and d["clean"] is False
    assert number in d["past_promise"] and "R20261123-0005" in d["past_promise"]  # the seeded one too
    assert d["intake"] == 2 and d["by_kind"] == {"repair": 2} and d["by_category"] == {"water": 2}
    assert d["by_status"] == {"new": 2}
    assert number in d["text"] and "past promise" in d["text"]
    assert ("past_promise", number) in [(r["section"], r["key"]) for r in csv.DictReader(io.StringIO(d["csv"]))]

    resp = await sup.get(f"/api/reports/daily.csv?date={DAY}")
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="daily-{DAY}.csv"'
    rows = _csv_rows(await resp.read())
    assert {"section": "past_promise", "key": number, "value": ""} in rows
    assert {"section": "intake", "key": "total", "value": "2"} in rows

    # Another day: nothing taken in, but the tickets still open and late are listed (they still wait).
    other = await (await sup.get("/api/reports/daily?date=2026-11-21")).json()
    assert other["intake"] == 0 and number in other["past_promise"]


async def test_daily_defaults_to_today_in_the_centre_time_zone(env: Env) -> None:
    env.services.clock.advance(15 * 3600)  # 17:00 UTC = 01:00 next day in Shanghai (log in after: 12 h sessions)
    sup, _ = await env.login("sup")
    d = await (await sup.get("/api/reports/daily")).json()
    assert d["date"] == "2026-11-25"


async def test_call_that_chose_repair_without_ticket_is_listed(env: Env) -> None:
    async with env.services.session_factory() as s, s.begin():
        s.add(CallRow(uniqueid="1795351999.7", caller_id="+8613900139000", started_at=T0 + timedelta(minutes=5),
                      outcome="abandoned", ivr_path="9>2>1"))
    sup, _ = await env.login("sup")
    d = await (await sup.get(f"/api/reports/daily?date={DAY}")).json()
    assert d["calls_without_ticket"] == [{"uniqueid": "1795351999.7", "started_at": d["calls_without_ticket"][0]["started_at"],
                                          "caller_id": "+8613900139000", "action": "repair"}]


@pytest.mark.parametrize("query", ["2026-13-01", "2026-02-30", "20261124", "2026-W48-2", "yesterday", "0001-01-01",
                                   "9999-12-31", "2026-11-24T00:00", "２０２６-11-24",
                                   "2026-11-24\n", " 2026-11-24"])
async def test_bad_date_is_400(env: Env, query: str) -> None:
    sup, _ = await env.login("sup")
    for path in ("/api/reports/daily", "/api/reports/daily.csv"):
        resp = await sup.get(path, params={"date": query})
        assert resp.status == 400, (path, query)
        assert (await resp.json())["error"]["code"] == "invalid_date"


@pytest.mark.parametrize("query", ["2026-13", "2026-00", "2026-1", "202611", "2026-11-01", "nov", "9999-12", "２０２６-11", "2026-11\n"])
async def test_bad_month_is_400(env: Env, query: str) -> None:
    sup, _ = await env.login("sup")
    for path in ("/api/reports/monthly", "/api/reports/monthly/category.svg", "/api/reports/monthly/building.csv"):
        resp = await sup.get(path, params={"month": query})
        assert resp.status == 400, (path, query)
        assert (await resp.json())["error"]["code"] == "invalid_month"


async def test_unknown_grouping_is_404(env: Env) -> None:
    sup, _ = await env.login("sup")
    for path in ("/api/reports/monthly/owner.svg", "/api/reports/monthly/..%2Fetc.csv"):
        resp = await sup.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["error"]["code"] in ("unknown_grouping", "not_found")


async def test_monthly_json_lists_the_four_groupings(env: Env) -> None:
    number = await _desk_ticket(env)
    sup, _ = await env.login("sup")
    resp = await sup.get("/api/reports/monthly", params={"month": "2026-11"})
    assert resp.status == 200
    m = await resp.json()
    assert m["month"] == "2026-11"
    assert [g["grouping"] for g in m["groupings"]] == ["category", "department", "building", "agent"]
    by = {g["grouping"]: g for g in m["groupings"]}
    category = {r["group"]: r for r in by["category"]["rows"]}
    assert category["water"]["tickets"] == 2 and category["services"]["tickets"] == 1  # incl. the closed complaint
    assert category["(total)"]["tickets"] == 3 and number
    assert {r["group"] for r in by["building"]["rows"]} == {"3", "(total)"}
    assert by["agent"]["svg"] == "/api/reports/monthly/agent.svg?month=2026-11"
    assert by["agent"]["csv"] == "/api/reports/monthly/agent.csv?month=2026-11"
    empty = await (await sup.get("/api/reports/monthly", params={"month": "2025-01"})).json()
    assert all(g["rows"][-1]["group"] == "(total)" and g["rows"][-1]["tickets"] == 0 for g in empty["groupings"])


async def test_svg_chart_has_a_csp_forbidding_script_and_escapes_names(env: Env) -> None:
    async with env.services.session_factory() as s, s.begin():
        await s.execute(update(Unit).where(Unit.id == env.ids["u1"]).values(building="<script>alert(1)</script>"))
    sup, _ = await env.login("sup")
    resp = await sup.get("/api/reports/monthly/building.svg", params={"month": "2026-11"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("image/svg+xml")
    assert resp.headers["Content-Security-Policy"] == SVG_CSP and "script-src 'none'" in SVG_CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    body = await resp.text()
    assert "<svg" in body and "</svg>" in body
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)" in body


async def test_monthly_csv_is_excel_ready_and_defuses_formulas(env: Env) -> None:
    async with env.services.session_factory() as s, s.begin():
        await s.execute(update(Unit).where(Unit.id == env.ids["u1"]).values(building="=HYPERLINK(\"x\")"))
    sup, _ = await env.login("sup")
    resp = await sup.get("/api/reports/monthly/building.csv", params={"month": "2026-11"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="monthly-2026-11-building.csv"'
    rows = _csv_rows(await resp.read())
    assert [r["group"] for r in rows] == ["'=HYPERLINK(\"x\")", "(total)"]
    assert rows[0]["tickets"] == "2" and rows[0]["group_by"] == "building"


async def test_reports_page_redirects_like_the_wallboard(env: Env) -> None:
    anonymous = await env.client()
    resp = await anonymous.get("/reports", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/login?next=/reports"
    agent, _ = await env.login("agent1")
    resp = await agent.get("/reports", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/agent"
    sup, _ = await env.login("sup")
    resp = await sup.get("/reports")
    assert resp.status == 200 and "Daily reconciliation" in await resp.text()
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.browser
@pytest.mark.skipif(test_web_browser.async_playwright is None, reason="playwright for Python is not installed")
async def test_supervisor_opens_reports_from_the_wallboard(env: Env, browser: Any) -> None:
    from playwright.async_api import expect

    number = await _desk_ticket(env)
    env.services.clock.advance(45 * 60)
    ARTIFACTS.mkdir(exist_ok=True)
    page = await test_web_browser._login(browser, env, "sup", "/wallboard")
    await page.click("#to-reports")
    await expect(page).to_have_url(env.origin + "/reports")
    await expect(page.locator("#day")).to_have_value(DAY)
    await expect(page.locator("#d-past .value")).to_have_text("2")
    await expect(page.locator("#d-past-body")).to_contain_text(number)
    await expect(page.locator("#d-waiting-body")).to_contain_text("acknowledgement")
    await expect(page.locator("#d-intake-body")).to_contain_text("water")
    await expect(page.locator("#month")).to_have_value("2026-11")
    await expect(page.locator("section.grouping")).to_have_count(4)
    charts = page.locator("section.grouping img")
    await expect(charts).to_have_count(4)
    # Every chart really loaded (an <img> of the role-checked SVG route, under the page's CSP).
    for _ in range(100):  # (wait_for_function evaluates a string: the page's CSP forbids that)
        if await charts.evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)"):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("a chart did not load: " + repr(await charts.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.src])")))
    await expect(page.locator('section.grouping[data-grouping="category"] a')).to_have_attribute(
        "href", "/api/reports/monthly/category.csv?month=2026-11")
    await page.screenshot(path=str(ARTIFACTS / "reports.png"), full_page=True)
    await page.locator("#daily").screenshot(path=str(ARTIFACTS / "reports_daily.png"))
    await page.locator('section.grouping[data-grouping="category"]').screenshot(path=str(ARTIFACTS / "reports_month.png"))

    # Another day: the page asks again and shows that day's intake.
    await page.fill("#day", "2026-11-20")
    await expect(page.locator("#d-intake .value")).to_have_text("1")
    await expect(page.locator("#daily-csv")).to_have_attribute("href", "/api/reports/daily.csv?date=2026-11-20")
    assert page.dialogs == []  # type: ignore[attr-defined]
