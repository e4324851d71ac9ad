"""Two ``callcentre serve`` on one PostgreSQL behind one real Asterisk; the active node is SIGKILLed mid-traffic.

Node A is the dialplan's ``CALLCENTRE_AGI`` and starts first, so it leads: call distribution and the
run-once loops run there. Node B is ``CALLCENTRE_AGI2`` and follows. What must hold (issue 12, point 5):

* before the kill: a supervisor's wallboard connected to B shows A's live queue (LISTEN/NOTIFY), and
  an agent state change made through B's API is carried out by A's distribution;
* A is SIGKILLed while a caller talks to an agent, one waits in A's queue, one is recording a repair
  (and finishes it after the kill):
  B leads within 10 s (measured and printed); the caller talking stays with the agent, the caller
  waiting and the caller recording reach a person through the dialplan's fallback queue;
* after: new callers get B's IVR (A's port refused: the dialplan tries B) and B's distribution; the
  wallboard on B shows B's queue;
* A restarted follows, and passes (CC_RESULT=pass) what the dialplan gives it first to B: a new call,
  unanswered, and the agent's leg of a call-back B placed;
* every ticket number a caller heard read back (AGI debug: the digits played) is in the database
  exactly once, nothing else is, and no number is used twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from callcentre.domain import speech
from callcentre.storage.models import TicketRow
from tests.pbx.conftest import PASSWORD, PBX
from tests.pbx.test_pbx_acd import user_id
from tests.pbx.test_pbx_dialplan import LOCAL_AGENTS
from tests.pbx.test_pbx_failover import agistatus, lines_of
from tests.pbx.test_pbx_ivr import Caller, read_back_number, spoken

TAKEOVER_BOUND = 10.0  # the bound for the other node to lead after the first is killed
FALLBACK_PHONE = "agent9"  # a person in the dialplan's hotline-fallback queue, not one of our agents
REPAIRS = ["13800138000", "13555551502", "13102020202"]  # 张伟, 黄丽, 周杰 (examples/owners.csv)
TALKER, WAITER, LATER, RETURNING = "13720000801", "13912345602", "15818001801", "13800138001"  # 杨明, 刘秀英, 赵磊, 陈建国


class Wallboard:
    """A supervisor's wallboard websocket on one node: every frame kept with its arrival time."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.session = aiohttp.ClientSession(base_url=base_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self._task: asyncio.Task[None] | None = None

    async def open(self, login: str) -> None:
        async with self.session.post("/api/login", json={"login": login, "password": PASSWORD},
                                     headers={"Origin": self.base_url}) as r:
            body = await r.json()
            assert r.status == 200, body
            self.csrf = body["csrf"]
        ws = await self.session.ws_connect("/ws/wallboard", headers={"Origin": self.base_url})

        async def read() -> None:
            async for m in ws:
                if m.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append((time.monotonic(), json.loads(m.data)))

        self._task = asyncio.create_task(read(), name="wallboard-reader")

    async def api(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Origin": self.base_url, "X-CSRF-Token": self.csrf}
        async with self.session.request(method, path, headers=headers, **kw) as r:
            return r.status, await r.json()

    async def shows(self, what: str, pred: Any, limit: float = 30.0) -> dict[str, Any]:
        """The first snapshot (from now on, or already received) for which ``pred`` holds."""
        end = time.monotonic() + limit
        i = 0
        while True:
            while i < len(self.frames):
                frame = self.frames[i][1]
                i += 1
                if frame.get("type") == "snapshot" and pred(frame):
                    return frame
            if time.monotonic() > end:
                last = [f for _, f in self.frames if f.get("type") == "snapshot"][-1:]
                raise AssertionError(f"the wallboard never showed {what}; last snapshot: {last}")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.session.close()


def queued(frame: dict[str, Any], number: str) -> bool:
    return any(q.get("caller") == f"+86{number}" for q in frame.get("queue", []))


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
        return await r.json()


async def repair(pbx: PBX, number: str) -> Caller:
    """A known owner reports an electrical repair and hears the ticket number and goodbye."""
    c = await Caller(pbx, number).dial()
    await c.on("zh/greeting", "dtmf:2")
    await c.on("zh/repair-menu-intro", "dtmf:2")
    await c.hears("zh/record-repair")
    await c.describe()
    await c.hears("zh/goodbye")
    return c


def heard_number(c: Caller) -> list[str]:
    return read_back_number(c.heard(), "zh")


async def dial_answered(pbx: PBX, number: str, agent: str, limit: float = 40.0) -> dict[str, str]:
    """The hotline leg of ``number`` dialled ``agent`` (our distribution) and the agent answered."""
    return await pbx.ami.wait_for(lambda e: e.get("Event") == "DialEnd" and e.get("CallerIDNum") == number
                                  and f"{agent}@" in e.get("DestChannel", "") and e.get("DialStatus") == "ANSWER", limit)


async def fallback_person(pbx: PBX, number: str, limit: float = 60.0) -> dict[str, str]:
    """``number`` joined the dialplan's fallback queue and the person there answered."""
    join = await pbx.ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin" and e.get("CallerIDNum") == number, limit)
    assert join["Queue"] == "hotline-fallback", join
    connect = await pbx.ami.wait_for(lambda e: e.get("Event") == "AgentConnect" and e.get("CallerIDNum") == number, limit)
    assert FALLBACK_PHONE in connect["Interface"], connect
    return connect


async def new_log(server: Any, after: int, event: str, limit: float = 30.0) -> dict[str, Any]:
    """The first log line with ``event`` among those the server wrote after the first ``after``."""
    end = time.monotonic() + limit
    while True:
        for line in server.lines[after:]:
            if line.get("event") == event:
                return line
        if time.monotonic() > end:
            raise AssertionError(f"no {event!r} in the server log within {limit} s:\n" + "\n".join(server.raw[-30:]))
        await asyncio.sleep(0.1)


def passed(server: Any, uniqueid: str) -> bool:
    return any(ln.get("event") == "a follower passes a new call to the dialplan's second server"
               for ln in lines_of(server, uniqueid))


def log_time(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(240)
@pytest.mark.pbx_world(
    postgres=True,
    agents={"agent1": "answer:1:120", "agent2": "answer:1:120"},
    globals={**LOCAL_AGENTS, f"CC_PHONE_{FALLBACK_PHONE}": "answer:1:4", "CALLCENTRE_TRUNK_TECH": "LOCAL",
             "CALLCENTRE_TRUNK_CONTEXT": "cc-test-owner", "CC_OWNER": "answer:1::5"},
    users=[("boss", "supervisor", {"name": "Boss"})],
    config={"acd": {"wrapup_seconds": 1, "satisfaction_survey": False, "announce_every_seconds": 300}},
    env={"CALLCENTRE_CLUSTER__NODE_NAME": "a"},
)
async def test_the_active_node_killed_mid_traffic_the_other_leads_and_no_caller_or_ticket_is_lost(
        pbx: PBX, second_node: Any) -> None:
    node_a = pbx.server
    await node_a.wait_log("leader parts started", 15)
    node_b = await second_node(CALLCENTRE_CLUSTER__NODE_NAME="b")
    b_url = f"http://127.0.0.1:{node_b.web_port}"
    role = await node_b.server.wait_log("cluster role", 15)
    assert (role["role"], role["leader"]) == ("follower", "a"), role
    a_health = await health(pbx.web_url)
    assert a_health["node"]["role"] == "leader" and a_health["node"]["name"] == "a", a_health["node"]
    a_term = a_health["node"]["term"]
    await pbx.set_global("CALLCENTRE_AGI2", node_b.agi_address)
    r = await pbx.ami.action("QueueAdd", Queue="hotline-fallback", Interface=f"Local/{FALLBACK_PHONE}@callcentre-agents/n",
                             StateInterface=f"Local/{FALLBACK_PHONE}@cc-test-phones", MemberName="Fallback person")
    assert r.get("Response") == "Success", r
    agent1, agent2 = await user_id(pbx, "agent1"), await user_id(pbx, "agent2")
    wall = Wallboard(b_url)
    try:
        await wall.open("boss")
        status, me = await wall.api("GET", "/api/me")  # what the wallboard's small print shows
        assert status == 200 and me["node"] == {"name": "b", "role": "follower", "term": None, "leader_node": "a"}, me

        # ---- A leads. agent2 paused through B's API: carried out by A's distribution.
        status, body = await wall.api("POST", f"/api/agents/{agent2}/state", json={"action": "pause", "reason": "break"})
        assert status == 200 and body["agent"]["state"] == "paused", body
        await node_a.wait_log("relayed agent state change", 5, action="pause")  # A made the change B relayed
        # Traffic on A: a repair filed to the end, one caller talking to agent1, one waiting (agent2 paused).
        r1 = asyncio.create_task(repair(pbx, REPAIRS[0]))
        await pbx.call(TALKER, ["wait:2", "dtmf:0"], hold=300)
        await dial_answered(pbx, TALKER, "agent1")
        await pbx.call(WAITER, ["wait:2", "dtmf:0"], hold=300)
        before = await wall.shows("the caller waiting in A's queue",
                                  lambda f: queued(f, WAITER) and f.get("acd_node") == "a")
        assert {a["agent_id"]: a["state"] for a in before["agents"]}[str(agent2)] == "paused", before["agents"]
        c1 = await r1
        # The next repair is recording its description when A dies.
        r2 = await Caller(pbx, REPAIRS[1]).dial()
        await r2.on("zh/greeting", "dtmf:2")
        await r2.on("zh/repair-menu-intro", "dtmf:2")
        await r2.recording_starts()
        waiter_leg = await pbx.hotline_leg(WAITER)
        talker_leg = await pbx.hotline_leg(TALKER)
        assert lines_of(node_a, waiter_leg["Uniqueid"]) and not lines_of(node_b.server, waiter_leg["Uniqueid"])

        # ---- SIGKILL A mid-traffic.
        assert node_a.proc is not None
        killed_at, killed_wall = time.monotonic(), time.time()
        node_a.proc.send_signal(signal.SIGKILL)
        while (await health(b_url))["node"]["role"] != "leader":
            assert time.monotonic() - killed_at < TAKEOVER_BOUND + 5, "B never became leader"
            await asyncio.sleep(0.1)
        seen = time.monotonic() - killed_at
        acquired = await node_b.server.wait_log("leadership acquired", 5)
        started = await node_b.server.wait_log("leader parts started", 5)
        took = log_time(acquired) - killed_wall
        print(f"\ntakeover after SIGKILL of A: B elected {took:.2f} s after the kill (its log), parts running "
              f"{log_time(started) - killed_wall:.2f} s, /health said leader {seen:.2f} s after (polled every 0.1 s)")
        assert took <= TAKEOVER_BOUND and seen <= TAKEOVER_BOUND, (took, seen)
        assert acquired["term"] > a_term, (acquired, a_term)
        assert await asyncio.wait_for(node_a.proc.wait(), 5) == -signal.SIGKILL

        # A's callers: the one waiting and the one recording reach the person in the fallback queue (the
        # recording caller ends the description with '#' now that A is gone: no ticket, never heard one);
        # the one talking to agent1 is still with agent1 (their bridge lives in Asterisk).
        await r2.act("dtmf:#")
        await fallback_person(pbx, WAITER)
        await fallback_person(pbx, REPAIRS[1])
        talking = [c for c in await pbx.channels() if c.get("Uniqueid") == talker_leg["Uniqueid"]]
        assert talking and talking[0].get("BridgeId"), talking

        # ---- B leads: its distribution knows agent1 is busy (AMI resync) and agent2 paused (history).
        after = await wall.shows("B's distribution", lambda f: f.get("acd_node") == "b")
        states = {a["agent_id"]: a for a in after["agents"]}
        assert states[str(agent2)]["state"] == "paused", states
        assert states[str(agent1)]["busy_elsewhere"] or states[str(agent1)]["state"] == "on_call", states
        # New callers: a repair through B's IVR (A's port refused), a caller for a person through B's queue.
        r3 = asyncio.create_task(repair(pbx, REPAIRS[2]))
        await pbx.call(LATER, ["wait:2", "dtmf:0"], hold=300)
        await wall.shows("the new caller waiting in B's queue", lambda f: queued(f, LATER) and f.get("acd_node") == "b")
        status, body = await wall.api("POST", f"/api/agents/{agent2}/state", json={"action": "ready"})
        assert status == 200 and body["agent"]["state"] in ("ready", "ringing"), body
        await dial_answered(pbx, LATER, "agent2")
        later_leg = await pbx.hotline_leg(LATER)
        assert [ln for ln in lines_of(node_b.server, later_leg["Uniqueid"]) if ln.get("event") == "offering call"]
        assert await agistatus(pbx, LATER, 1) == ["FAILURE"]  # A's port refused, then B took the call
        c3 = await r3
        assert lines_of(node_b.server, c3.uniqueid) and await agistatus(pbx, REPAIRS[2], 2) == ["FAILURE", "SUCCESS"]
        b_health = await health(b_url)
        assert (b_health["node"]["role"], b_health["node"]["term"]) == ("leader", acquired["term"]), b_health["node"]

        # ---- A comes back: it follows, and passes the calls the dialplan gives it first to B, unanswered.
        seen_lines = len(node_a.lines)
        await node_a.start()
        role = await new_log(node_a, seen_lines, "cluster role")
        assert (role["role"], role["leader"]) == ("follower", "b"), role
        returning = await Caller(pbx, RETURNING).dial()
        await returning.on("zh/greeting", "dtmf:0")
        await wall.shows("a caller A passed on, waiting in B's queue",
                         lambda f: queued(f, RETURNING) and f.get("acd_node") == "b")
        assert passed(node_a, returning.uniqueid), lines_of(node_a, returning.uniqueid)
        assert await agistatus(pbx, RETURNING, 1) == ["SUCCESS"]  # A closed at once, never answered
        await pbx.expect_logged(f"did not take {returning.leg} (AGISTATUS=SUCCESS): trying {node_b.agi_address}")
        # Both agents busy: the caller asks to be called back (a ticket records the promise), and hangs up.
        await returning.act("dtmf:1")
        await returning.hears("zh/callback-registered")
        await returning.hears("zh/goodbye")
        # agent2 comes free: B rings agent2 for the call-back; the agent's leg runs the dialplan's
        # CALLCENTRE_AGI first, A, which passes it (CC_RESULT=pass) to B, whose script dials the owner.
        later_call = [c for c in await pbx.channels() if c.get("Uniqueid") == later_leg["Uniqueid"]]
        assert later_call, "the later caller's call ended early"
        await pbx.ami.action("Hangup", Channel=later_call[0]["Channel"], Cause="16")
        made = await node_b.server.wait_log("call-back made", 40)
        # the only AGI an agent's channel runs is a call-back leg's
        leg = await pbx.ami.wait_for(lambda e: e.get("Event") == "AGIExecStart" and "agent2@" in e.get("Channel", ""), 5)
        assert passed(node_a, leg["Uniqueid"]), lines_of(node_a, leg["Uniqueid"])
        assert pbx.ami.find("VarSet", Variable="CC_RESULT", Value="pass", Uniqueid=leg["Uniqueid"])
        await pbx.expect_logged(f"did not take {leg['Channel']} (AGISTATUS=SUCCESS): trying {node_b.agi_address}")
    finally:
        await wall.close()

    # ---- Tickets: what the callers heard is in the database exactly once, and nothing else is (the
    # call-back promise is a ticket too, acknowledged to its caller without a number read out).
    tickets = await pbx.rows(TicketRow)
    numbers = [t.number for t in tickets]
    heard = {c.number: heard_number(c) for c in (c1, c3)}
    print(f"tickets in the database: {numbers}; heard: { {n: ''.join(p[-1] for p in h) for n, h in heard.items()} }")
    assert len(numbers) == len(set(numbers)), numbers
    assert sorted(t.call_uniqueid for t in tickets) == sorted([c1.uniqueid, c3.uniqueid, returning.uniqueid]), tickets
    [promise] = [t for t in tickets if t.call_uniqueid == returning.uniqueid]
    assert promise.acknowledged_to_caller and promise.number == made["ticket"], (promise.number, made)
    for c in (c1, c3):
        matching = [t for t in tickets if spoken("zh", speech.ticket_number(t.number, "zh")) == heard[c.number]]
        assert len(matching) == 1 and matching[0].call_uniqueid == c.uniqueid, (c.number, heard[c.number], numbers)
