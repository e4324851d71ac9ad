"""End to end in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright for Python).

The ACD is the fake from test_web_api; a screen-pop is published through the hub exactly as the ACD
adapter does when it offers a call. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from callcentre.domain.calls import CallInfo
from callcentre.domain.model import OwnerMatch
from callcentre.web import WEB
from callcentre.web.hub import WALLBOARD, agent_topic, build_screen_pop
import test_web_api
from test_web_api import HOSTILE, PASSWORD, Env

# The same database, users, fake ACD and server as the API tests.
env = test_web_api.env
push_interval = test_web_api.push_interval

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

# On a developer's machine without a browser these skip; in CI (.ci/run installs chromium and
# playwright) a missing browser is a failure, never a silent skip.
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(async_playwright is None and not _IN_CI, reason="playwright for Python is not installed (pip install playwright)"),
    pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists() and not _IN_CI,
                       reason=f"{CHROMIUM} is not installed"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def _login(browser: Any, env: Env, login: str, landing: str, *, fake_clock: bool = False) -> Any:
    context = await browser.new_context(base_url=env.origin, viewport={"width": 1600, "height": 900})
    page = await context.new_page()
    if fake_clock:  # the page's timers run when the test says so, not in real seconds
        await page.clock.install()
    page.set_default_timeout(3000)
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    await page.goto(landing)  # not logged in: sent to the log-in page, which sends us back
    await expect(page).to_have_url(env.origin + "/login?next=" + landing)
    await page.fill("#login", login)
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await expect(page).to_have_url(env.origin + landing)
    await expect(page.locator("#live")).to_have_text("live")
    return page


def _zhang(env: Env) -> OwnerMatch:
    from datetime import date

    return OwnerMatch(owner_id=env.ids["zhang"], owner_name="Zhang Wei", unit_id=env.ids["u1"], building="3", unit="802",
                      fee_balance_cents=123450, fee_due_date=date(2026, 12, 1))


async def test_agent_sees_screen_pop_and_makes_a_ticket(env: Env, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = await _login(browser, env, "agent1", "/agent")
    await expect(page.locator("#state")).to_have_text("paused")
    desk = env.server.app[WEB].features.owners  # the owner look-ups the screen-pop reads
    zhang = _zhang(env)
    info = CallInfo(uniqueid="1795351990.1", channel="PJSIP/trunk-00000001", caller_id_raw="13800138000",
                    caller_id="+8613800138000", caller_name="Zhang Wei", language="zh", matches=[zhang], owner=zhang,
                    path=["2", "1", "rec"], tickets=["R20261124-0001"])
    # What the ACD adapter does when it offers the call to agent1's phone:
    call = await build_screen_pop(desk, info)
    assert env.hub.publish(agent_topic(env.ids["agent1"]), {"type": "screen_pop", "call": call}) == 1
    pop = page.locator("#pop")
    await expect(pop.locator(".owner-name").first).to_contain_text("Zhang Wei")
    await expect(pop.locator("td.unit").first).to_have_text("3-802")
    await expect(pop.locator("td.balance").first).to_have_text("¥1,234.50")
    await expect(pop.locator("#pop-repeat")).to_be_visible()
    await expect(pop.locator(".ivr")).to_contain_text("2 › 1 › rec")
    await expect(pop.locator("li.ticket").first).to_contain_text("R20261123-0005")
    await expect(page.locator("#t-for")).to_have_text("For: Zhang Wei · 3-802")
    await page.screenshot(path=str(ARTIFACTS / "agent_screen_pop.png"), full_page=True)

    # A repair ticket from the desk, for the owner on the card.
    await page.select_option("#t-kind", "repair")
    await page.select_option("#t-category", "water")
    await page.fill("#t-notes", "kitchen tap leaking")
    await page.click("#t-create")
    await expect(page.locator("#message")).to_contain_text("saved (new)")
    tickets = await env.server.app[WEB].features.tickets.find(owner_id=env.ids["zhang"], phone=None)
    made = [t for t in tickets if t["source"] == "agent"]
    assert len(made) == 1 and made[0]["category"] == "water" and made[0]["unit_id"] == env.ids["u1"]

    # The agent becomes ready: the badge follows.
    await page.click("#btn-ready")
    await expect(page.locator("#state")).to_have_text("ready")

    # A hostile caller name is shown as text, never run.
    hostile = CallInfo(uniqueid="1795351990.2", channel="PJSIP/trunk-00000002", caller_id_raw="13900139000",
                       caller_id="+8613900139000", caller_name=HOSTILE, language="zh")
    call2 = await build_screen_pop(desk, hostile)
    env.hub.publish(agent_topic(env.ids["agent1"]), {"type": "screen_pop", "call": call2})
    await expect(pop.locator("#pop-caller-name")).to_have_text("<script>alert(1)</script>evil[31m")
    await expect(pop.locator(".owner-name").first).to_contain_text("<script>alert(1)</script>evil")
    assert await page.locator("#pop script").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]
    await page.screenshot(path=str(ARTIFACTS / "agent_hostile_caller.png"), full_page=True)


class _Node:
    """This server as a follower of node a (callcentre.cluster.node.NodeInfo's public view)."""

    def public(self) -> dict[str, Any]:
        return {"name": "b", "role": "follower", "term": None, "leader_node": "a"}


async def test_wallboard_shows_waiting_caller_and_agent_state_changes(env: Env, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    env.services.node = _Node()
    wall = await _login(browser, env, "sup", "/wallboard", fake_clock=True)
    row = wall.locator("tr.caller-row").first
    await expect(row.locator("td.caller")).to_have_text("+8613900139000")
    await expect(row).to_contain_text("5-101")
    await expect(row).to_contain_text(HOSTILE[:25])  # shown literally
    first_wait = await row.locator("td.wait").text_content()
    await expect(wall.locator("#fig-waiting .value")).to_have_text("1")
    await expect(wall.locator("#fig-two-ring .value")).to_have_text("92%")
    a1 = wall.locator(f'tr.agent-row[data-agent-id="{env.ids["agent1"]}"]')
    await expect(a1.locator(".state")).to_have_text("paused")
    a2 = wall.locator(f'tr.agent-row[data-agent-id="{env.ids["agent2"]}"]')
    await expect(a2.locator("button.spy")).to_have_count(3)
    # Time in state is measured on the server's clock (the fake ACD's agent2 went on call at T0 = server now).
    await expect(a2.locator("td.in-state")).to_have_text("0:00")
    assert await wall.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    # The wait ticks in the browser, and turns red once beyond two rings (10 s here).
    assert first_wait == "0:07" and "red" not in (await row.get_attribute("class") or "")
    await wall.clock.fast_forward(5000)
    await expect(row.locator("td.wait")).to_have_text("0:12")
    await expect(row).to_have_class("caller-row prio-normal red")

    agent = await _login(browser, env, "agent1", "/agent")
    await agent.click("#btn-ready")
    await expect(agent.locator("#state")).to_have_text("ready")
    await expect(a1.locator(".state")).to_have_text("ready")
    await expect(wall.locator("#fig-ready .value")).to_have_text("1")
    env.hub.publish(WALLBOARD, {"type": "alert", "alert": {"kind": "offer_rang_too_long", "at": "2026-11-24T02:00:05+00:00",
                                                          "message": "Agent2 let a call ring 3 times"}})
    await expect(wall.locator("#alerts li").first).to_contain_text("Agent2 let a call ring 3 times")
    await wall.screenshot(path=str(ARTIFACTS / "wallboard.png"), full_page=True)

    # The supervisor listens in on agent2's call from the board: the fixed mode reaches the ACD.
    async with wall.expect_response("**/api/supervise") as response:
        await wall.locator(f'tr.agent-row[data-agent-id="{env.ids["agent2"]}"] button.spy', has_text="Listen").click()
    assert (await response.value).status == 202
    assert env.acd.supervised == [(env.ids["sup"], env.ids["agent2"], "listen")]
    assert wall.dialogs == []  # type: ignore[attr-defined]

    # Small print: the node serving the page, and the one whose distribution made the snapshot.
    await expect(wall.locator("#node")).to_have_text("node b")
    env.hub.publish(WALLBOARD, {"type": "snapshot", "queue": [], "agents": [], "figures": {}, "alerts": [],
                                "acd": "running", "acd_node": "a"})
    await expect(wall.locator("#node")).to_have_text("node b · distribution on a")
