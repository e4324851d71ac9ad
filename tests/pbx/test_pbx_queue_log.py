"""queue_log on the real PBX: the same calls through our distribution and through app_queue, one file.

The server writes its queue_log into Asterisk's own ``astlogdir/queue_log`` (``queue_log.path``, as a
site on the Asterisk host may), so app_queue's lines and ours land in one file, each under its queue
name. Each scenario runs twice at the same time with the same caller number: once through our hotline
(the IVR, key 0, our distribution; agents ``agentn`` and ``agenta``), once through a test-only app_queue
queue set up like our distribution (one member at a time for two rings, autopause after one missed
ring, key 1 leaves the queue; members ``agentqn`` / ``agentqa`` added with AMI QueueAdd, as
tools/record_captures.py did). Agents' phones answer after N s, never, or hang up first; callers hang up
while an agent rings, while they wait, or after talking; a caller presses the call-back key; agents are
paused, unpaused and logged out over the HTTP API (ours) and AMI QueuePause / QueueRemove (app_queue's).

Judged line by line: the same events in the same order for each call, app_queue's field layout for every
line of both (tests/queue_log_report.py), callid = the caller channel's uniqueid, agents named the same
way in every event, ring times in milliseconds, durations within a second of what the test's own AMI
client measured. Then a queue_log report over the file gives the figures our API gives (point 4).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from callcentre.domain.queue_log import QueueLogEntry
from callcentre.domain.queue_log import QueueLogEvent as E
from tests.pbx.test_pbx_acd import api, login, user_id
from tests.queue_log_report import check_calls_are_closed, check_layout, read_entries, report
from tests.waiting import until

OURS, THEIRS = "hotline", "cc-test-qlog"
QUEUES = f"""
[{THEIRS}]
; test-only (tests/pbx/test_pbx_queue_log.py): app_queue set up like our distribution in this test: one
; member at a time for two rings of 2 s, a member who misses one ring is paused, key 1 leaves the queue
strategy = linear
timeout = 4
retry = 1
timeoutpriority = app
wrapuptime = 0
ringinuse = no
autopause = yes
joinempty = unavailable,invalid
leavewhenempty = unavailable,invalid
musicclass = default
announce-frequency = 0
announce-position = no
periodic-announce-frequency = 0
setinterfacevar = yes
context = cc-test-qlog-exit
"""
DIALPLAN = f"""
[cc-test-qlog-queue]
; a caller straight into app_queue's {THEIRS}
exten => _[a-z].,1,Answer()
 same => n,Queue({THEIRS},,,,120)
 same => n,Hangup()

[cc-test-qlog-exit]
; {THEIRS}'s context=: key 1 leaves the queue (our call-back key)
exten => 1,1,NoOp(cc-test: left {THEIRS} with key 1)
 same => n,Wait(1)
 same => n,Hangup()
"""
SECOND = 1.0  # durations in whole seconds are differences of truncated epochs: within a second
MS = 500  # ring times in milliseconds: ours and the test's AMI client see the same DialBegin / DialEnd

# one caller number per scenario, used by both sides (known owners of examples/owners.csv, none VIP)
RING_THROUGH, AGENT_ENDS, GIVES_UP_RINGING = "13800138001", "13912345602", "13720000801"
ON_CALL, GIVES_UP_WAITING, CALL_BACK = "13555551502", "15818001801", "13102020202"


@dataclass
class Caller:
    """One caller as the test's AMI client sees it."""

    uniqueid: str  # the caller channel: our FastAGI session's, or app_queue's queue caller
    handset: str  # the ;1 half, the caller's own phone: hanging it up is the caller hanging up
    entered: float  # monotonic, when the caller joined the queue (as near as the test can see it)


async def our_caller(pbx: Any, number: str) -> Caller:
    """A hotline call that asks for a person (key 0); returns once it waits in our queue."""
    await pbx.call(number, ["wait:2", "dtmf:0"], hold=120)
    leg = await pbx.hotline_leg(number)
    await pbx.server.wait_log("caller waiting for an agent", 30, uniqueid=leg["Uniqueid"])
    return Caller(leg["Uniqueid"], leg["Channel"][:-1] + "1", time.monotonic())


async def their_caller(pbx: Any, exten: str, number: str) -> Caller:
    """A caller straight into app_queue's queue (as tools/record_captures.py placed them)."""
    mark = len(pbx.ami.events)
    r = await pbx.ami.action("Originate", Channel=f"Local/{exten}@cc-test-qlog-queue", Application="Wait",
                             Data="300", CallerID=f"<{number}>", Timeout="30000", Async="true")
    assert r.get("Response") == "Success", r
    join = await pbx.ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin"
                                  and e.get("Channel", "").startswith(f"Local/{exten}@cc-test-qlog-queue-"), 15,
                                  start=mark)
    return Caller(join["Uniqueid"], join["Channel"][:-1] + "1", float(join["_t"]))


async def ring(pbx: Any, caller: Caller, phone: str, start: int = 0) -> tuple[dict[str, str], int]:
    """The DialBegin from the caller's channel to ``phone`` (and where it is in the event list)."""
    begin = await pbx.ami.wait_for(lambda e: e.get("Event") == "DialBegin" and e.get("Uniqueid") == caller.uniqueid
                                   and f"/{phone}@" in e.get("DestChannel", ""), 30, start=start)
    return begin, pbx.ami.events.index(begin)


async def ring_end(pbx: Any, begin: dict[str, str]) -> dict[str, str]:
    return await pbx.ami.wait_for("DialEnd", 30, DestUniqueid=begin["DestUniqueid"])


async def hang_up(pbx: Any, caller: Caller) -> float:
    """The caller hangs up (AMI Hangup of the handset); when it was asked."""
    at = time.monotonic()
    r = await pbx.ami.action("Hangup", Channel=caller.handset)
    assert r.get("Response") == "Success", r
    return at


def t(event: dict[str, str]) -> float:
    return float(event["_t"])


@dataclass
class Truth:
    """What the test's AMI client measured for one call, to hold the queue_log's numbers against."""

    ring_ms: dict[str, float]  # RINGNOANSWER / RINGCANCELED: ms the ring lasted
    hold: float | None = None  # CONNECT / COMPLETE*: s from entering to the answer
    ring_s: float | None = None  # CONNECT: s the answering phone rang
    member: str | None = None  # CONNECT: the answering agent leg's uniqueid
    talk: float | None = None  # COMPLETE*: s talked
    waited: float | None = None  # ABANDON / EXITWITHKEY: s waited


def check_numbers(lines: list[QueueLogEntry], truth: Truth, caller: Caller) -> None:
    for e in lines:
        check_layout(e)
        assert e.callid == caller.uniqueid
        if e.event in (E.RINGNOANSWER, E.RINGCANCELED):
            assert abs(int(e.data[0]) - truth.ring_ms[e.event.value]) <= MS, (e, truth)
        elif e.event is E.CONNECT:
            assert truth.hold is not None and truth.ring_s is not None
            assert abs(int(e.data[0]) - truth.hold) <= SECOND + 0.3 and abs(int(e.data[2]) - truth.ring_s) <= SECOND
            assert e.data[1] == truth.member, (e, truth)
        elif e.event in (E.COMPLETECALLER, E.COMPLETEAGENT):
            assert truth.talk is not None and abs(int(e.data[1]) - truth.talk) <= SECOND, (e, truth)
            assert e.data[2] == "1"
        elif e.event in (E.ABANDON, E.EXITWITHKEY):
            assert truth.waited is not None and abs(int(e.data[-1]) - truth.waited) <= SECOND + 0.3, (e, truth)
            assert e.data[-3:-1] == ("1", "1")  # position on leaving, on entering


def same_call(ours: list[QueueLogEntry], theirs: list[QueueLogEntry]) -> None:
    """The same events in the same order; ours numbers within a second of app_queue's (the hold within
    two: app_queue waits retry = 1 s before the next member, we ring the next agent at once)."""
    assert [e.event for e in ours] == [e.event for e in theirs], (ours, theirs)
    for a, b in zip(ours, theirs, strict=True):
        if a.event is E.ENTERQUEUE:
            assert a.data == b.data  # url (none), the caller's number as Asterisk has it, position 1
        elif a.event in (E.RINGNOANSWER, E.RINGCANCELED):
            assert abs(int(a.data[0]) - int(b.data[0])) <= 1000, (a, b)
        elif a.event is E.CONNECT:
            assert abs(int(a.data[0]) - int(b.data[0])) <= 2 and abs(int(a.data[2]) - int(b.data[2])) <= 1, (a, b)
        elif a.event in (E.COMPLETECALLER, E.COMPLETEAGENT):
            assert abs(int(a.data[1]) - int(b.data[1])) <= 1 and a.data[2] == b.data[2], (a, b)
        elif a.event in (E.ABANDON, E.EXITWITHKEY):
            assert a.data[:-1] == b.data[:-1] and abs(int(a.data[-1]) - int(b.data[-1])) <= 1, (a, b)


@pytest.mark.pbx_world(
    agents={},  # both agents log in over the API during the test (agentn first: the longest idle, rung first)
    users=[("agentn", "agent", {"name": "Agent N", "interface": "Local/agentn@cc-test-phones"}),
           ("agenta", "agent", {"name": "Agent A", "interface": "Local/agenta@cc-test-phones"}),
           ("boss", "supervisor", {"name": "Boss"})],
    globals={"CC_PHONE_agentn": "never", "CC_PHONE_agenta": "answer:2:60", "CC_PHONE_agentqn": "never",
             "CC_PHONE_agentqa": "answer:2:60"},
    config={"acd": {"rings_target": 2, "ring_cycle_seconds": 2, "wrapup_seconds": 3, "satisfaction_survey": False,
                    "missed_offers_before_pause": 1, "announce_every_seconds": 300},
            "queue_log": {"enabled": True, "queue_name": OURS}},
    queues=QUEUES, dialplan=DIALPLAN, queue_log_in_asterisk_logdir=True,
)
async def test_our_queue_log_and_app_queues_for_the_same_calls(pbx):
    path = pbx.ast.log_dir / "queue_log"
    n_id, a_id = await user_id(pbx, "agentn"), await user_id(pbx, "agenta")
    boss, csrf = await login(pbx, "boss")
    desks = {n_id: await login(pbx, "agentn"), a_id: await login(pbx, "agenta")}
    truth: dict[str, tuple[Caller, Truth]] = {}

    async def agent(agent_id: int, action: str, reason: str | None = None) -> None:
        """An agent's state over the API: log in / out at their own desk; pause / ready by the supervisor."""
        session, token = desks[agent_id] if action in ("login", "logout") else (boss, csrf)
        body: dict[str, Any] = {"action": action} | ({"reason": reason} if reason else {})
        status, got = await api(session, "POST", f"/api/agents/{agent_id}/state", pbx, token, json=body)
        assert status == 200, got

    async def state_of(agent_id: int) -> str:
        status, body = await api(boss, "GET", "/api/agents", pbx)
        return next(a["state"] for a in body["agents"] if str(a["agent_id"]) == str(agent_id))

    async def _is(agent_id: int, state: str) -> bool:
        return await state_of(agent_id) == state

    async def ready(agent_id: int) -> None:
        await until(lambda: _is(agent_id, "ready"), 20, f"agent {agent_id} ready")

    async def queue_action(name: str, **fields: str) -> None:
        r = await pbx.ami.action(name, Queue=THEIRS, **fields)
        assert r.get("Response") == "Success", r

    def member(phone: str) -> str:
        return f"Local/{phone}@cc-test-phones/n"

    try:
        # members: ours log in over the API, app_queue's are added by QueueAdd; the first of each is rung first
        await agent(n_id, "login")
        await agent(a_id, "login")
        await queue_action("QueueAdd", Interface=member("agentqn"), MemberName="agentqn", Penalty="0")
        await queue_action("QueueAdd", Interface=member("agentqa"), MemberName="agentqa", Penalty="0")

        # 1. the first agent never answers (two rings, then paused), the second answers after 2 s; the
        #    caller hangs up 2 s into the talk
        async def ring_through(caller: Caller, first: str, second: str) -> Truth:
            b1, i1 = await ring(pbx, caller, first)
            e1 = await ring_end(pbx, b1)
            b2, _ = await ring(pbx, caller, second, i1 + 1)
            e2 = await ring_end(pbx, b2)
            assert (e1["DialStatus"], e2["DialStatus"]) in (("NOANSWER", "ANSWER"), ("CANCEL", "ANSWER")), (e1, e2)
            await asyncio.sleep(2)
            bye = await hang_up(pbx, caller)
            await pbx.wait_hangup(caller.uniqueid, 20)
            return Truth({"RINGNOANSWER": 1000 * (t(e1) - t(b1))}, hold=t(e2) - caller.entered, ring_s=t(e2) - t(b2),
                         member=b2["DestUniqueid"], talk=bye - t(e2))

        async def ours_1() -> None:
            c = await our_caller(pbx, RING_THROUGH)
            truth["ours-1"] = (c, await ring_through(c, "agentn", "agenta"))

        async def theirs_1() -> None:
            c = await their_caller(pbx, "ringthrough", RING_THROUGH)
            truth["theirs-1"] = (c, await ring_through(c, "agentqn", "agentqa"))

        await asyncio.gather(ours_1(), theirs_1())

        # 2. the agent answers after 1 s and hangs up 4 s later (the caller stays on the line)
        await ready(a_id)
        await pbx.set_phone("agenta", "answer:1:4")
        await pbx.set_phone("agentqa", "answer:1:4")

        async def agent_ends(caller: Caller, phone: str) -> Truth:
            b, _ = await ring(pbx, caller, phone)
            e = await ring_end(pbx, b)
            assert e["DialStatus"] == "ANSWER", e
            gone = await pbx.ami.wait_for("Hangup", 20, Uniqueid=b["DestUniqueid"])
            await pbx.wait_hangup(caller.uniqueid, 20)
            return Truth({}, hold=t(e) - caller.entered, ring_s=t(e) - t(b), member=b["DestUniqueid"],
                         talk=t(gone) - t(e))

        async def ours_2() -> None:
            c = await our_caller(pbx, AGENT_ENDS)
            truth["ours-2"] = (c, await agent_ends(c, "agenta"))

        async def theirs_2() -> None:
            c = await their_caller(pbx, "agentend", AGENT_ENDS)
            truth["theirs-2"] = (c, await agent_ends(c, "agentqa"))

        await asyncio.gather(ours_2(), theirs_2())

        # 3. the caller hangs up 2 s into the ring
        await ready(a_id)
        await pbx.set_phone("agenta", "never")
        await pbx.set_phone("agentqa", "never")

        async def gives_up_ringing(caller: Caller, phone: str) -> Truth:
            b, _ = await ring(pbx, caller, phone)
            await asyncio.sleep(2)
            bye = await hang_up(pbx, caller)
            await pbx.wait_hangup(caller.uniqueid, 20)
            return Truth({"RINGCANCELED": 1000 * (bye - t(b))}, waited=bye - caller.entered)

        async def ours_3() -> None:
            c = await our_caller(pbx, GIVES_UP_RINGING)
            truth["ours-3"] = (c, await gives_up_ringing(c, "agenta"))

        async def theirs_3() -> None:
            c = await their_caller(pbx, "abandon", GIVES_UP_RINGING)
            truth["theirs-3"] = (c, await gives_up_ringing(c, "agentqa"))

        await asyncio.gather(ours_3(), theirs_3())

        # agentn, paused after the missed ring: unpaused, paused for lunch (ours over the API, app_queue's by AMI)
        assert await state_of(n_id) == "paused"
        await agent(n_id, "ready")
        await agent(n_id, "pause", "lunch")
        await queue_action("QueuePause", Interface=member("agentqn"), Paused="false")
        await queue_action("QueuePause", Interface=member("agentqn"), Paused="true", Reason="lunch")

        # 4. a caller waits with nobody free (ours: agenta talks to another caller; app_queue's: its
        #    members paused) and hangs up after 3 s
        await ready(a_id)
        await pbx.set_phone("agenta", "answer:1:120")
        busy = await our_caller(pbx, ON_CALL)
        b, _ = await ring(pbx, busy, "agenta")
        busy_answer = await ring_end(pbx, b)
        assert busy_answer["DialStatus"] == "ANSWER"
        await queue_action("QueuePause", Interface=member("agentqa"), Paused="true", Reason="lunch")

        async def gives_up_waiting(caller: Caller) -> Truth:
            await asyncio.sleep(3)
            bye = await hang_up(pbx, caller)
            await pbx.wait_hangup(caller.uniqueid, 20)
            return Truth({}, waited=bye - caller.entered)

        async def ours_4() -> None:
            c = await our_caller(pbx, GIVES_UP_WAITING)
            truth["ours-4"] = (c, await gives_up_waiting(c))

        async def theirs_4() -> None:
            c = await their_caller(pbx, "waiting", GIVES_UP_WAITING)
            truth["theirs-4"] = (c, await gives_up_waiting(c))

        await asyncio.gather(ours_4(), theirs_4())

        # 5. a waiting caller presses the call-back key (1) after 4 s
        async def presses_the_key(caller: Caller) -> Truth:
            await asyncio.sleep(4)
            at = time.monotonic()
            r = await pbx.ami.action("PlayDTMF", Channel=caller.handset, Digit="1", Duration="250")
            assert r.get("Response") == "Success", r
            await pbx.wait_hangup(caller.uniqueid, 40)
            return Truth({}, waited=at - caller.entered)

        async def ours_5() -> None:
            c = await our_caller(pbx, CALL_BACK)
            truth["ours-5"] = (c, await presses_the_key(c))

        async def theirs_5() -> None:
            c = await their_caller(pbx, "withkey", CALL_BACK)
            truth["theirs-5"] = (c, await presses_the_key(c))

        await asyncio.gather(ours_5(), theirs_5())
        assert [t_.category for t_ in await pbx.tickets()].count("callback_request") == 1

        # the busy call ends (its caller hangs up); agenta is paused during the wrap-up (so the call-back is
        # not rung: a call-back call is not a queue call), then both agents log out; app_queue's removed
        bye = await hang_up(pbx, busy)
        await pbx.wait_hangup(busy.uniqueid, 20)
        truth["ours-busy"] = (busy, Truth({}, hold=t(busy_answer) - busy.entered, ring_s=t(busy_answer) - t(b),
                                          member=b["DestUniqueid"], talk=bye - t(busy_answer)))
        await until(lambda: _is(a_id, "wrap_up"), 5, "agenta wrapping up")
        await agent(a_id, "pause", "break")
        await agent(a_id, "logout")
        await agent(n_id, "logout")
        await queue_action("QueueRemove", Interface=member("agentqn"))
        await queue_action("QueueRemove", Interface=member("agentqa"))

        # ---------------------------------------------------------------- the file
        def ours_done() -> bool:
            return path.exists() and path.read_bytes().count(f"|{OURS}|".encode() + b"agenta|REMOVEMEMBER|") == 1

        await until(lambda: asyncio.sleep(0, ours_done()), 10, "our last line in the file")
        entries = read_entries(path)  # every line whole and app_queue's, both writers'
        print("".join(f"{e.epoch}|{e.callid}|{e.queue}|{e.agent}|{e.event.value}|{e.data_text()}\n" for e in entries))
        assert entries[0].event is E.QUEUESTART  # Asterisk's, at boot
        ours = report(entries, OURS)
        theirs = report(entries, THEIRS)
        check_calls_are_closed(ours)
        check_calls_are_closed(theirs)

        def lines_of(side: str) -> list[QueueLogEntry]:
            caller, _ = truth[side]
            return (ours if side.startswith("ours") else theirs).calls[caller.uniqueid]

        expected = {
            "1": [E.ENTERQUEUE, E.RINGNOANSWER, E.CONNECT, E.COMPLETECALLER],
            "2": [E.ENTERQUEUE, E.CONNECT, E.COMPLETEAGENT],
            "3": [E.ENTERQUEUE, E.RINGCANCELED, E.ABANDON],
            "4": [E.ENTERQUEUE, E.ABANDON],
            "5": [E.ENTERQUEUE, E.EXITWITHKEY],
        }
        for n, events in expected.items():
            for side in ("ours", "theirs"):
                caller, tr = truth[f"{side}-{n}"]
                got = lines_of(f"{side}-{n}")
                assert [e.event for e in got] == events, (side, n, got)
                check_numbers(got, tr, caller)
            same_call(lines_of(f"ours-{n}"), lines_of(f"theirs-{n}"))
        assert lines_of("ours-5")[-1].data[0] == "1" == lines_of("theirs-5")[-1].data[0]  # the key
        # who hung up first came from Asterisk's own order of events (HangupRequest / BridgeLeave), not a guess
        for side, ended_by in (("ours-1", "caller"), ("ours-2", "agent")):
            [end] = [ln for ln in pbx.server.events("queue_log call ended") if ln.get("uniqueid") == truth[side][0].uniqueid]
            assert (end["ended_by"], end["told_by"]) == (ended_by, "ami"), end
        busy_lines = lines_of("ours-busy")
        assert [e.event for e in busy_lines] == [E.ENTERQUEUE, E.CONNECT, E.COMPLETECALLER]
        busy_caller, busy_truth = truth["ours-busy"]
        check_numbers(busy_lines, busy_truth, busy_caller)
        # agents: one name in every event (ours the login; app_queue's member name, its interface in ADDMEMBER)
        assert {e.agent for e in ours.calls[truth["ours-1"][0].uniqueid] if e.agent != "NONE"} == {"agentn", "agenta"}

        def member_lines(queue: str) -> list[tuple[str, str, str]]:
            return [(e.event.value, e.agent, e.data_text()) for e in entries if e.queue == queue
                    and e.event in (E.ADDMEMBER, E.REMOVEMEMBER, E.PAUSE, E.UNPAUSE)]

        assert member_lines(OURS) == [
            ("ADDMEMBER", "agentn", ""), ("ADDMEMBER", "agenta", ""), ("PAUSE", "agentn", "Auto-Pause"),
            ("UNPAUSE", "agentn", ""), ("PAUSE", "agentn", "lunch"), ("PAUSE", "agenta", "break"),
            ("REMOVEMEMBER", "agenta", ""), ("REMOVEMEMBER", "agentn", "")]
        assert member_lines(THEIRS) == [
            ("ADDMEMBER", member("agentqn"), ""), ("ADDMEMBER", member("agentqa"), ""),
            ("PAUSE", "agentqn", "Auto-Pause"), ("UNPAUSE", "agentqn", ""), ("PAUSE", "agentqn", "lunch"),
            ("PAUSE", "agentqa", "lunch"), ("REMOVEMEMBER", member("agentqn"), ""),
            ("REMOVEMEMBER", member("agentqa"), "")]
        for e in entries:
            if e.queue in (OURS, THEIRS) or e.event is E.QUEUESTART:
                check_layout(e)
        # the automatic pause follows the missed ring, on both sides
        for rep, first in ((ours, "agentn"), (theirs, "agentqn")):
            ring_at = next(i for i, e in enumerate(entries) if e.queue == rep.queue and e.event is E.RINGNOANSWER)
            assert (entries[ring_at + 1].event, entries[ring_at + 1].agent) == (E.PAUSE, first)
        # our QUEUESTART: the server started after Asterisk (nobody logged in yet)
        ours_start = [i for i, e in enumerate(entries) if e.event is E.QUEUESTART][1]
        assert (entries[ours_start + 1].event, entries[ours_start + 1].agent) == (E.ADDMEMBER, "agentn")

        # ---------------------------------------------------------------- 4. a report reads the file
        status, body = await api(boss, "GET", "/api/agents", pbx)
        assert status == 200, body
        api_agents = {str(a["agent_id"]): a for a in body["agents"]}
        status, queue = await api(boss, "GET", "/api/queue", pbx)
        today = queue["figures"]["today"]
        print(f"report over the file: answered {dict(ours.answered)}, not answered {dict(ours.not_answered)}, "
              f"abandoned {ours.abandoned}; API: answered "
              f"{ {login: api_agents[str(i)]['answered_today'] for login, i in (('agentn', n_id), ('agenta', a_id))} }, "
              f"abandoned {today['calls_abandoned']}")
        for login_, agent_id in (("agentn", n_id), ("agenta", a_id)):
            assert ours.answered[login_] == api_agents[str(agent_id)]["answered_today"]
            assert ours.not_answered[login_] == api_agents[str(agent_id)]["missed_today"]
        assert (ours.answered["agenta"], ours.not_answered["agentn"]) == (3, 1)
        assert ours.abandoned == today["calls_abandoned"] == 2
        assert ours.totals["ENTERQUEUE"] == today["calls_entered"] == 6
        # and app_queue's own lines count what its AMI events said
        assert sum(theirs.answered.values()) == len(pbx.ami.find("AgentConnect", Queue=THEIRS)) == 2
        assert theirs.abandoned == len(pbx.ami.find("QueueCallerAbandon", Queue=THEIRS)) == 2
        # the server counted every line it wrote, none failed
        health = await (await boss.get("/health")).json()
        mine = [e for e in entries if e.queue == OURS or (e.event is E.QUEUESTART and e is entries[ours_start])]
        assert health["queue_log"]["written"] == len(mine) and health["queue_log"]["failed"] == 0
    finally:
        await boss.close()
        for session, _ in desks.values():
            await session.close()
