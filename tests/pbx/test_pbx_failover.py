"""A second callcentre server behind the first (CALLCENTRE_AGI2), on a real Asterisk with our dialplans.

Two ``callcentre serve`` processes share one database (the pbx fixture's: a SQLite file, or PostgreSQL
when CALLCENTRE_TEST_PG_URL is set). What must hold (dialplans/extensions_callcentre.conf's header):

* the first server killed (nothing listening) or closing the connection at once: the caller goes
  through the second server's IVR and gets a ticket, once;
* the first server answered the call and then died: the caller is NOT started again on the second
  server (a ticket could be made twice); the fallback queue takes them, as without a second server;
* neither server up: the caller reaches a person through the fallback queue.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from callcentre.storage.models import TicketRow
from tests.pbx.conftest import PBX
from tests.pbx.test_pbx_dialplan import LOCAL_AGENTS, TinyAGI
from tests.pbx.test_pbx_ivr import Caller, ticket_of

FALLBACK_AGENT = "agent4"


async def agistatus(pbx: PBX, number: str, n: int, limit: float = 20.0) -> list[str]:
    """The first ``n`` AGISTATUS values set on the hotline leg of the caller ``number``."""
    end = time.monotonic() + limit
    while True:
        got = [e["Value"] for e in pbx.ami.find("VarSet", Variable="AGISTATUS") if e.get("CallerIDNum") == number]
        if len(got) >= n or time.monotonic() > end:
            return got
        await asyncio.sleep(0.1)


async def repair_call(pbx: PBX, number: str) -> Caller:
    """A known owner reports a repair (electrical) and hears the ticket number and goodbye."""
    c = await Caller(pbx, number).dial()
    await c.on("zh/greeting", "dtmf:2")
    await c.on("zh/repair-menu-intro", "dtmf:2")
    await c.hears("zh/record-repair")
    await c.describe()
    await c.hears("zh/goodbye")
    return c


def lines_of(server: Any, uniqueid: str) -> list[dict[str, Any]]:
    return [ln for ln in server.lines if ln.get("uniqueid") == uniqueid]


async def fallback_member(pbx: PBX) -> None:
    r = await pbx.ami.action("QueueAdd", Queue="hotline-fallback",
                             Interface=f"Local/{FALLBACK_AGENT}@callcentre-agents/n",
                             StateInterface=f"Local/{FALLBACK_AGENT}@cc-test-phones", MemberName="Fallback agent")
    assert r.get("Response") == "Success", r


async def reaches_a_person(pbx: PBX, number: str) -> dict[str, str]:
    join = await pbx.ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin" and e.get("CallerIDNum") == number, 20)
    assert join["Queue"] == "hotline-fallback", join
    connect = await pbx.ami.wait_for(lambda e: e.get("Event") == "AgentConnect" and e.get("CallerIDNum") == number, 30)
    assert connect["Interface"] == f"Local/{FALLBACK_AGENT}@callcentre-agents/n", connect
    return join


@pytest.mark.pbx_world(
    agents={"agent1": "answer:1:30", FALLBACK_AGENT: "answer:2:3"},
    globals=LOCAL_AGENTS,
)
async def test_a_killed_or_refusing_first_server_hands_callers_to_the_second_and_an_answered_call_stays_put(
        pbx: PBX, second_node: Any) -> None:
    await fallback_member(pbx)
    node2 = await second_node()
    await pbx.set_global("CALLCENTRE_AGI2", node2.agi_address)
    first = pbx.server

    # 1. Both up: the first server takes the call; the second never sees it.
    c1 = await repair_call(pbx, "13800138000")
    t1 = await ticket_of(pbx, c1)
    assert await agistatus(pbx, c1.number, 1) == ["SUCCESS"]
    assert lines_of(first, c1.uniqueid) and not lines_of(node2.server, c1.uniqueid)

    # 2. The first server is SIGKILLed (nothing listens on its port any more): AGISTATUS=FAILURE, then
    #    the second server's IVR, a ticket made there.
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(first.proc.wait(), 10) == -signal.SIGKILL
    c2 = await repair_call(pbx, "13800138000")
    t2 = await ticket_of(pbx, c2)
    assert await agistatus(pbx, c2.number, 3) == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert any(ln.get("event") == "call answered" for ln in lines_of(node2.server, c2.uniqueid))
    await pbx.expect_logged(f"did not take {c2.leg} (AGISTATUS=FAILURE): trying {node2.agi_address}")

    # 3. A "server" that accepts and closes at once (AGISTATUS=SUCCESS, no CC_RESULT, never answered).
    closer = TinyAGI("close")
    crasher = TinyAGI("crash")
    try:
        await pbx.set_global("CALLCENTRE_AGI", f"127.0.0.1:{await closer.start()}")
        c3 = await repair_call(pbx, "13800138000")
        t3 = await ticket_of(pbx, c3)
        assert lines_of(node2.server, c3.uniqueid)
        await pbx.expect_logged(f"did not take {c3.leg} (AGISTATUS=SUCCESS): trying {node2.agi_address}")

        # 4. A server that answered, played a prompt and died: not restarted on the second server.
        await pbx.set_global("CALLCENTRE_AGI", f"127.0.0.1:{await crasher.start()}")
        reply = await pbx.call("13900000003", ["wait:1"], hold=40)
        assert reply["Response"] == "Success", reply
        join = await reaches_a_person(pbx, "13900000003")
        assert crasher.replies[:1] == ["200 result=0"], crasher.replies  # its ANSWER went through
        assert not lines_of(node2.server, join["Uniqueid"]), "the second server restarted an answered call"
        assert f"trying {node2.agi_address}" not in "\n".join(
            ln for ln in pbx.asterisk_log().splitlines() if join["Channel"] in ln)
    finally:
        closer.close()
        crasher.close()

    # One ticket per call, with distinct numbers, all in the shared database.
    tickets = await pbx.tickets()
    assert sorted(t.call_uniqueid for t in tickets) == sorted([c1.uniqueid, c2.uniqueid, c3.uniqueid])
    assert len({t.number for t in tickets}) == 3 and {t.kind for t in tickets} == {"repair"}
    assert (t1.number, t2.number, t3.number) == tuple(t.number for t in sorted(tickets, key=lambda t: t.id))


@pytest.mark.pbx_world(
    start_server=False,
    agents={"agent1": "answer:1:30", FALLBACK_AGENT: "answer:2:3"},
    globals=LOCAL_AGENTS,
)
async def test_nothing_on_the_first_port_the_second_answers_and_with_neither_up_a_person_does(
        pbx: PBX, second_node: Any) -> None:
    """The pbx fixture's own server is never started: its FastAGI port has nothing listening."""
    await fallback_member(pbx)
    node2 = await second_node()
    await pbx.set_global("CALLCENTRE_AGI2", node2.agi_address)

    c = await repair_call(pbx, "13800138000")
    ticket = await ticket_of(pbx, c)
    assert ticket.kind == "repair" and ticket.owner_id is not None
    assert await agistatus(pbx, c.number, 2) == ["FAILURE", "SUCCESS"]
    assert any(e.get("Value") == "done" and e.get("Uniqueid") == c.uniqueid
               for e in pbx.ami.find("VarSet", Variable="CC_RESULT"))
    assert not [e for e in pbx.ami.find("QueueCallerJoin") if e.get("CallerIDNum") == c.number]
    assert [ln["event"] for ln in lines_of(node2.server, c.uniqueid) if ln.get("event") == "ticket created"]

    # The second server stops too: both tries fail, the caller reaches a person in the fallback queue.
    proc = node2.server.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    reply = await pbx.call("13900000009", ["wait:1"], hold=40)
    assert reply["Response"] == "Success", reply
    join = await reaches_a_person(pbx, "13900000009")
    assert await agistatus(pbx, "13900000009", 2) == ["FAILURE", "FAILURE"]
    log = pbx.asterisk_log()
    assert f"did not take {join['Channel']} (AGISTATUS=FAILURE): trying {node2.agi_address}" in log
    assert f"fallback for {join['Channel']}: AGISTATUS=FAILURE CC_RESULT=" in log
    assert len(await pbx.rows(TicketRow)) == 1
