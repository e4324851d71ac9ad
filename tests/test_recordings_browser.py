"""The calls & recordings page in a real headless Chromium: the quality department finds a day's calls and a
ticket, and the <audio> player loads the recording from /api/recordings/<id> (the browser's own Range
requests). Same machinery as tests/test_web_browser.py; skipped without a browser except under CI."""

from __future__ import annotations

import math
import struct
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from callcentre.domain.recordings import RecordingStatus, wav_header
from callcentre.storage.models import CallRow, TicketRow
from callcentre.storage.users_repo import create_user
import test_web_browser
from test_recordings_service import T0, UID, World
from test_web_browser import ARTIFACTS, CHROMIUM  # noqa: F401 - the same browser and artifacts

pytestmark = test_web_browser.pytestmark
browser = test_web_browser.browser
PASSWORD = "correct horse battery"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[World, str]]:
    from callcentre.service.desk import build_desk
    from callcentre.web import setup_web

    w = World(tmp_path)
    await w.open()
    for login, role in (("qa", "quality"), ("sup", "supervisor")):
        await create_user(w.sessions, login, login.title(), role, PASSWORD, clock=w.clock)
    async with w.sessions() as s, s.begin():
        s.add_all([
            CallRow(uniqueid=UID, caller_id="+8613800138000", started_at=T0 - timedelta(minutes=3), outcome="done",
                    ivr_path="8>1", answered_by="a1"),
            CallRow(uniqueid="1795351990.9", caller_id=XSS, started_at=T0 - timedelta(minutes=1), outcome="hung_up",
                    ivr_path="0"),
            TicketRow(number="E20261124-0001", kind="emergency", category="water_leak", priority="major", status="new",
                      caller_id_raw="13800138000", caller_id="+8613800138000", call_uniqueid=UID, ivr_path="8>1",
                      source="ivr", description=XSS, created_at=T0, updated_at=T0),
        ])
    # two seconds of a 440 Hz tone, as MixMonitor would have written it
    n = 16000
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(n))
    name = f"2026/11/24/{UID}-1.wav"
    (w.root / name).parent.mkdir(parents=True)
    (w.root / name).write_bytes(wav_header(2 * n) + pcm)
    await w.service.recorded(w.result(name, size=44 + 2 * n))
    await w.service.recorded(w.result(f"2026/11/24/{UID}-2.wav", RecordingStatus.MISSING, n=2, reason=XSS))
    services = SimpleNamespace(cfg=w.cfg, clock=w.clock, session_factory=w.sessions, engine=w.engine, agi=None,
                               ami=None, acd=None, hub=None, ticket_service=None)
    app = web.Application()
    setup_web(app, services, build_desk(w.sessions, w.cfg, w.clock, acd=lambda: None, lifecycle=None,
                                        recordings=w.service))
    server = TestServer(app)
    await server.start_server()
    try:
        yield w, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await w.engine.dispose()


async def test_quality_finds_calls_and_tickets_and_plays_the_recording(site: tuple[World, str], browser: Any) -> None:
    from playwright.async_api import expect

    _world, origin = site
    context = await browser.new_context(base_url=origin, viewport={"width": 1400, "height": 900},
                                        timezone_id="Asia/Shanghai")
    page = await context.new_page()
    page.set_default_timeout(5000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await page.goto("/calls")
    await expect(page).to_have_url(origin + "/login?next=/calls")
    await page.fill("#login", "qa")
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await expect(page).to_have_url(origin + "/calls")
    await expect(page.locator("#to-wallboard")).to_be_hidden()  # the quality department has no wallboard

    rows = page.locator("#calls-body tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator("td.caller")).to_have_text(XSS)  # text, never markup
    mine = page.locator(f'#calls-body tr[data-uniqueid="{UID}"]')
    await expect(mine.locator("li.recording")).to_have_count(2)
    audio = mine.locator("audio")
    await expect(audio).to_have_count(1)  # the missing one has no player, only its reason
    assert await audio.get_attribute("src") == "/api/recordings/1"
    await expect(mine.locator(".rec-missing").locator("xpath=..")).to_contain_text(XSS)
    duration = await audio.evaluate(
        "a => new Promise((ok, bad) => { a.addEventListener('loadedmetadata', () => ok(a.duration));"
        " a.addEventListener('error', () => bad(String(a.error && a.error.code))); a.load(); })")
    assert abs(duration - 2.0) < 0.05, duration

    # the ticket, from its button in the history: its facts and its call's recordings
    await mine.locator("button.link", has_text="E20261124-0001").click()
    panel = page.locator("#ticket-panel")
    await expect(panel).to_be_visible()
    await expect(page.locator("#ticket-title")).to_have_text("E20261124-0001")
    await expect(panel.locator("dl.facts")).to_contain_text(UID)
    await expect(panel.locator("dd.notes")).to_have_text(XSS)
    await expect(panel.locator("#ticket-recordings audio")).to_have_count(1)
    await page.fill("#ticket-no", "R20261124-0099")
    await page.click("#ticket-form button")
    await expect(page.locator("#message")).to_contain_text("No ticket R20261124-0099")
    assert await page.locator("img").count() == 0 and dialogs == []
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "calls_and_recordings.png"), full_page=True)
    await context.close()
