"""Several hotlines on the real PBX (issue 12, point 3): two estates' numbers into one Asterisk and one server.

Riverside Gardens (DID 4008001001, open around the clock) and Lakeside Court (DID 4008002002, closed: its
business hours have no day), each with its own greeting (prompts/hotlines/<id>/zh/greeting.wav, rendered
from its name), Lakeside without the fee look-up in its menu and with its own closed-hours recording;
agent1 answers Riverside (skill "riverside"), agent2 Lakeside ("lakeside"). The trunk delivers each DID to
``Goto(callcentre-hotline,${EXTEN},1)`` and our unmodified dialplan hands the number to the server.

One world, four callers, in this order:

1. a Riverside and a Lakeside caller at once, each through the whole menu to an emergency: each hears its
   own greeting and menu (Asterisk's ``agi set debug`` STREAM FILE / GET DATA names), gets a ticket
   carrying its hotline, and is rung only on its hotline's agent (DialBegin);
2. a second Riverside caller asks for a person while agent1 is on the first call: the caller waits, agent2
   (Lakeside's, READY and idle) is never rung; when agent1 is free the caller gets agent1;
3. agent2 goes on a break; a Lakeside caller asking for a person hears Lakeside's own closed-hours recording and
   leaves a message (a ticket of Lakeside) while the Riverside call is still with agent1 (Riverside open);
4. the API and the daily report, filtered by hotline, list each hotline's tickets and calls.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from callcentre.storage.models import CallRow, TicketRow
from tests.pbx.conftest import _run_cli
from tests.pbx.test_pbx_acd import agent_rings, api, login, user_id
from tests.pbx.test_pbx_ivr import Caller, assert_no_missing_prompt, call_row, select_rows, ticket_of
from tests.waiting import until

RIVER_DID, LAKE_DID = "4008001001", "4008002002"
ZHANG, LIU, YANG, GUEST = "13800138000", "13912345602", "13720000801", "13655550000"

AGENT = {"start": "ready", "languages": ["zh"]}
HOTLINES = [
    {"id": "riverside", "name": {"zh": "江畔花园", "en": "Riverside Gardens"}, "dids": [RIVER_DID], "default": True,
     "agent_groups": ["riverside"]},
    {"id": "lakeside", "name": {"zh": "湖畔雅苑", "en": "Lakeside Court"}, "dids": [LAKE_DID],
     "agent_groups": ["lakeside"], "ivr": {"menu": {"1": None}},
     "business_hours": {"days": [], "open": "08:00", "close": "20:00"},  # never open: night service
     "prompts": {"own": ["greeting", "closed-hours"]}},
]


class HotlineCaller(Caller):
    """A caller of test_pbx_ivr who dials one estate's number."""

    def __init__(self, pbx: Any, number: str, did: str) -> None:
        super().__init__(pbx, number)
        self.did = did

    async def dial(self) -> HotlineCaller:
        self._cursor = len(self.pbx.ami.events)
        r = await self.pbx.call(self.number, [], hold=300, did=self.did)
        assert r.get("Response") == "Success", r
        self.handset = r["Channel"]
        self.leg = self.handset[:-2] + ";2"
        first = await self._next(lambda e: True, "the first AGI command", 15)
        self.uniqueid = first["Uniqueid"]
        return self


async def emergency_through_the_whole_menu(c: HotlineCaller, greeting: str) -> None:
    await c.dial()
    await c.hears(greeting, 20)
    await c.on("zh/press-star", "dtmf:8")  # the menu's last item: every option was heard
    await c.on("zh/emergency-menu-intro", "dtmf:1")  # water leak


async def agent_state(boss: Any, pbx: Any, agent_id: int) -> str:
    status, body = await api(boss, "GET", "/api/agents", pbx)
    assert status == 200, body
    return next(a["state"] for a in body["agents"] if str(a["agent_id"]) == str(agent_id))


@pytest.mark.pbx_world(
    agents={"agent1": "answer:1:90", "agent2": "answer:1:3"},
    config={"acd": {"wrapup_seconds": 1, "satisfaction_survey": False, "agents": [
        {"id": "agent1", "name": "River One", "interface": "Local/agent1@cc-test-phones",
         "skills": ["repair", "complaint", "fees", "riverside"], **AGENT},
        {"id": "agent2", "name": "Lake Two", "interface": "Local/agent2@cc-test-phones",
         "skills": ["repair", "complaint", "fees", "lakeside"], **AGENT}]},
        "hotlines": HOTLINES},
    users=[("boss", "supervisor", {"name": "Boss"})],
)
async def test_two_estates_on_one_server(pbx):
    started = time.monotonic()
    agent1, agent2 = await user_id(pbx, "agent1"), await user_id(pbx, "agent2")
    boss, csrf = await login(pbx, "boss")
    try:
        # ---- 1. one caller per estate at once, each through its own menu to an emergency ----------
        river = HotlineCaller(pbx, ZHANG, RIVER_DID)
        lake = HotlineCaller(pbx, LIU, LAKE_DID)
        await asyncio.gather(emergency_through_the_whole_menu(river, "hotlines/riverside/zh/greeting"),
                             emergency_through_the_whole_menu(lake, "hotlines/lakeside/zh/greeting"))
        r_row = await call_row(pbx, river.uniqueid, until=lambda c: c.answered_by == "agent1")
        l_row = await call_row(pbx, lake.uniqueid, until=lambda c: c.answered_by == "agent2")
        assert (r_row.hotline, l_row.hotline) == ("riverside", "lakeside")
        r_heard, l_heard = river.heard(), lake.heard()
        print(f"\nriverside caller heard {r_heard[:4]} …\nlakeside caller heard {l_heard[:4]} …")
        assert r_heard[0] == "hotlines/riverside/zh/greeting" and "hotlines/lakeside/zh/greeting" not in r_heard
        assert l_heard[0] == "hotlines/lakeside/zh/greeting" and "hotlines/riverside/zh/greeting" not in l_heard
        assert "zh/menu-self-service" in r_heard and "zh/menu-self-service" not in l_heard  # Lakeside's own menu
        assert "zh/main-menu-intro" in l_heard and "zh/menu-agent" in l_heard  # the rest of the menu is shared
        r_ticket, l_ticket = await ticket_of(pbx, river), await ticket_of(pbx, lake)
        assert (r_ticket.kind, r_ticket.hotline) == ("emergency", "riverside")
        assert (l_ticket.kind, l_ticket.hotline) == ("emergency", "lakeside")
        rings = {(r.caller, r.agent) for r in agent_rings(pbx)}
        assert rings == {(river.uniqueid, "agent1"), (lake.uniqueid, "agent2")}, rings
        # the screen-pop would name the estate: the server logged each caller queued on its hotline
        queued = {ln["uniqueid"]: ln.get("hotline") for ln in pbx.server.lines if ln.get("event") == "caller waiting for an agent"}
        assert queued == {river.uniqueid: "riverside", lake.uniqueid: "lakeside"}, queued

        # ---- 2. a Riverside caller waits for agent1 while Lakeside's agent2 idles -------------------
        await until(lambda: _is(agent_state(boss, pbx, agent2), "ready"), 20, "agent2 ready after the lakeside call")
        river2 = HotlineCaller(pbx, YANG, RIVER_DID)
        await river2.dial()
        await river2.on("hotlines/riverside/zh/greeting", "dtmf:0")
        await river2.hears("zh/transfer-agent")

        async def river2_waiting() -> Any:
            status, body = await api(boss, "GET", "/api/queue", pbx)
            return [q for q in body.get("queue", []) if q["call_id"] == river2.uniqueid]
        [entry] = await until(river2_waiting, 20, "the second riverside caller in the queue")
        assert entry["hotline"] == "riverside"
        await asyncio.sleep(3)  # plenty of time for a wrong offer to be made
        assert await agent_state(boss, pbx, agent2) == "ready"
        assert not [r for r in agent_rings(pbx) if r.caller == river2.uniqueid], "riverside caller offered elsewhere"
        status, body = await api(boss, "GET", "/api/queue", pbx)
        by_hotline = body["figures"]["by_hotline"]
        print(f"figures by hotline while waiting: {by_hotline}")
        assert by_hotline["riverside"]["waiting"] == 1 and by_hotline["lakeside"]["agents_ready"] == 1
        # the first riverside caller hangs up: agent1 is free and takes the one waiting
        r = await pbx.ami.action("Hangup", Channel=river.handset, Cause="16")
        assert r.get("Response") == "Success", r
        r2_row = await call_row(pbx, river2.uniqueid, until=lambda c: c.answered_by == "agent1")
        assert r2_row.hotline == "riverside"
        assert {r.agent for r in agent_rings(pbx) if r.caller == river2.uniqueid} == {"agent1"}

        # ---- 3. night service at Lakeside while Riverside is open and on a call ----------------------
        # agent2 goes on a break: nobody is staffed for Lakeside (a supervisor may pause an agent)
        status, body = await api(boss, "POST", f"/api/agents/{agent2}/state", pbx, csrf,
                                 json={"action": "pause", "reason": "break"})
        assert status == 200, body
        guest = HotlineCaller(pbx, GUEST, LAKE_DID)
        await guest.dial()
        await guest.on("hotlines/lakeside/zh/greeting", "dtmf:0")
        await guest.hears("hotlines/lakeside/zh/closed-hours", 30)  # Lakeside's own recording
        await guest.hears("zh/leave-message")  # the shared prompt: Lakeside has no recording of its own
        await guest.describe()
        await guest.hears("zh/message-saved", 30)
        g_ticket = await ticket_of(pbx, guest)
        assert (g_ticket.kind, g_ticket.hotline) == ("message", "lakeside")
        assert (await call_row(pbx, guest.uniqueid)).hotline == "lakeside"
        assert not [r for r in agent_rings(pbx) if r.caller == guest.uniqueid]  # nobody of Lakeside to ring
        assert await agent_state(boss, pbx, agent1) == "on_call"  # Riverside, open, still serving
        assert "hotlines/lakeside/zh/closed-hours" not in river2.heard()

        # ---- 4. the API and the reports by hotline -------------------------------------------------
        status, body = await api(boss, "GET", "/api/tickets?hotline=lakeside", pbx)
        assert status == 200 and sorted(t["number"] for t in body["tickets"]) == sorted([l_ticket.number, g_ticket.number])
        status, body = await api(boss, "GET", "/api/tickets?hotline=riverside", pbx)
        assert [t["number"] for t in body["tickets"]] == [r_ticket.number]
        status, body = await api(boss, "GET", "/api/reports/daily?hotline=lakeside", pbx)
        assert status == 200 and body["intake"] == 2 and body["by_kind"] == {"emergency": 1, "message": 1}
        status, body = await api(boss, "GET", "/api/reports/daily", pbx)
        assert body["intake"] == 3
        text = await asyncio.to_thread(_run_cli, pbx.env, pbx.tmp, "report", "daily", "--hotline", "riverside")
        print(text)
        assert "hotline riverside" in text and re.search(r"^  intake +1$", text, re.M), text
        calls = {c.uniqueid: c.hotline for c in await select_rows(pbx, CallRow, CallRow.hotline.is_not(None))}
        assert {calls[c.uniqueid] for c in (river, river2)} == {"riverside"}
        assert {calls[c.uniqueid] for c in (lake, guest)} == {"lakeside"}
        assert len(await pbx.rows(TicketRow)) == 3
        assert_no_missing_prompt(pbx)
        print(f"[hotlines] wall {time.monotonic() - started:.1f} s")
    finally:
        await boss.close()


async def _is(value: Any, expected: str) -> bool:
    return (await value) == expected
