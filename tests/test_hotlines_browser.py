"""Several hotlines in a real headless Chromium: the wallboard's hotline filter (its callers, its agents, its
figures) and the hotline on the agent's screen-pop. Same world as tests/test_web_browser.py."""

from __future__ import annotations

import asyncio

from typing import Any

from callcentre.config import Config
from callcentre.domain.calls import CallInfo
from callcentre.domain.hotlines import Hotlines
from callcentre.web.hub import agent_topic, build_screen_pop
import test_hotlines_data
import test_web_api
import test_web_browser
from test_hotlines import TWO
from test_web_api import Env
from test_web_browser import ARTIFACTS, _login, expect

env = test_web_api.env
push_interval = test_web_api.push_interval
browser = test_web_browser.browser
pytestmark = test_web_browser.pytestmark

HOTLINES = Hotlines.from_config(Config.model_validate(TWO))


def two_hotline_snapshots(env: Env) -> None:
    """The fake ACD's snapshot as the server's is with two hotlines: the hotline per caller and per agent,
    the list for the filter, and each hotline's figures."""
    plain = env.acd.snapshot

    def snapshot() -> dict[str, Any]:
        s = plain()
        s["hotlines"] = HOTLINES.cards()
        s["queue"][0]["hotline"] = "lakeside"
        s["queue"].append({**s["queue"][0], "call_id": "c2", "caller": "+8613800138000", "owner_name": "Zhang Wei",
                           "unit": "3-802", "hotline": "riverside"})
        s["figures"]["waiting"] = 2
        by_agent = {env.ids["agent1"]: ["riverside"], env.ids["agent2"]: ["lakeside"]}
        for a in s["agents"]:
            a["hotlines"] = by_agent[a["agent_id"]]
        s["figures"]["by_hotline"] = {
            "riverside": {"waiting": 1, "agents_ready": 0, "two_ring_share_today": 0.5, "avg_wait": 3.0,
                          "longest_wait": 7.0, "abandon_rate": 0.0},
            "lakeside": {"waiting": 1, "agents_ready": 0, "two_ring_share_today": 0.75, "avg_wait": 2.0,
                         "longest_wait": 7.0, "abandon_rate": 0.25},
        }
        return s

    env.acd.snapshot = snapshot  # type: ignore[method-assign]


async def test_the_wallboard_filters_callers_agents_and_figures_by_hotline(env: Env, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    two_hotline_snapshots(env)
    wall = await _login(browser, env, "sup", "/wallboard")
    select = wall.locator("#hotline-filter")
    await expect(select).to_be_visible()
    await expect(select.locator("option")).to_have_text(["All hotlines", "Riverside Gardens", "Lakeside Court"])
    rows = wall.locator("tr.caller-row")
    await expect(rows).to_have_count(2)
    await expect(wall.locator('tr.caller-row[data-hotline="lakeside"] td.hotline')).to_have_text("Lakeside Court")
    await expect(wall.locator("#fig-two-ring .value")).to_have_text("92%")  # the centre's
    await expect(wall.locator("tr.agent-row")).to_have_count(2)

    await select.select_option("lakeside")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td.caller")).to_have_text("+8613900139000")
    await expect(wall.locator("tr.agent-row")).to_have_count(1)
    await expect(wall.locator(f'tr.agent-row[data-agent-id="{env.ids["agent2"]}"]')).to_have_count(1)
    await expect(wall.locator("#fig-two-ring .value")).to_have_text("75%")  # lakeside's own
    await expect(wall.locator("#fig-abandon .value")).to_have_text("25%")
    await expect(wall.locator("#fig-waiting .value")).to_have_text("1")
    await wall.screenshot(path=str(ARTIFACTS / "wallboard_hotline_filter.png"), full_page=True)

    await select.select_option("")
    await expect(rows).to_have_count(2)
    await expect(wall.locator("#fig-waiting .value")).to_have_text("2")


async def test_without_hotlines_the_wallboard_shows_no_filter_or_column(env: Env, browser: Any) -> None:
    wall = await _login(browser, env, "sup", "/wallboard")
    await expect(wall.locator("tr.caller-row")).to_have_count(1)
    await expect(wall.locator("#hotline-filter")).to_be_hidden()
    await expect(wall.locator("tr.caller-row td.hotline")).to_be_hidden()


async def test_the_screen_pop_names_the_hotline_the_caller_dialled(env: Env, browser: Any) -> None:
    page = await _login(browser, env, "agent1", "/agent")
    desk = env.server.app[test_web_browser.WEB].features.owners
    info = CallInfo(uniqueid="1795351990.7", channel="PJSIP/trunk-00000007", caller_id_raw="13800138000",
                    caller_id="+8613800138000", caller_name="Zhang Wei", language="zh", hotline=HOTLINES.get("lakeside"))
    call = await build_screen_pop(desk, info)
    assert call["hotline"]["id"] == "lakeside"
    env.hub.publish(agent_topic(env.ids["agent1"]), {"type": "screen_pop", "call": call})
    await expect(page.locator("#pop-hotline")).to_have_text("Lakeside Court")


# The two-hotline world of the data tests (tickets and calls of Riverside and Lakeside on 2026-11-24).
report_env = test_hotlines_data.report_env
api = test_hotlines_data.api


async def test_the_reports_page_shows_one_hotline_or_all(api: Any, browser: Any) -> None:
    _, origin = api
    context = await browser.new_context(base_url=origin, viewport={"width": 1600, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(3000)
    await page.goto("/reports")
    await page.fill("#login", "sup")
    await page.fill("#password", test_hotlines_data.PASSWORD)
    await page.click("#login-submit")
    await expect(page).to_have_url(origin + "/reports")
    select = page.locator("#hotline")
    await expect(select).to_be_visible()
    await expect(select.locator("option")).to_have_text(["All hotlines", "Riverside Gardens", "Lakeside Court"])
    await expect(page.locator("#d-intake .value")).to_have_text("3")
    await expect(page.locator("#d-missing .value")).to_have_text("2")
    await select.select_option("lakeside")
    await expect(page.locator("#d-intake .value")).to_have_text("2")
    await expect(page.locator("#d-missing-body")).to_contain_text("l9")
    await expect(page.locator("#daily-csv")).to_have_attribute("href", "/api/reports/daily.csv?date=2026-11-24&hotline=lakeside")
    await expect(page.locator('section.grouping[data-grouping="category"] a')).to_have_attribute(
        "href", "/api/reports/monthly/category.csv?month=2026-11&hotline=lakeside")
    charts = page.locator("section.grouping img")
    await expect(charts).to_have_count(4)
    for _ in range(200):  # the role-checked SVG of Lakeside's month really loaded (the page's CSP forbids eval)
        if await charts.evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)"):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(await charts.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.src])"))
    assert "hotline=lakeside" in (await charts.first.get_attribute("src") or "")
    await page.screenshot(path=str(ARTIFACTS / "reports_hotline.png"), full_page=True)
    await select.select_option("")
    await expect(page.locator("#d-intake .value")).to_have_text("3")
    await context.close()
