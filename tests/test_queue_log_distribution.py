"""Our call distribution writes app_queue's queue_log (callcentre/distribution/queue_log.py).

A fake distribution run: the real ACDService and wait script, a FakeClock, callers whose Dial rings
scripted phones and reports DialBegin / DialEnd / BridgeLeave as Asterisk does (no sockets). The lines
it writes are compared with what app_queue itself wrote on the real Asterisk for the same situations
(tests/fixtures/queue_log-*.txt): the same events in the same order per call, the same field layout
(every line of both checked against one table of field kinds), ring times in milliseconds where
app_queue writes milliseconds, and durations within a second of app_queue's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from callcentre.config import Config
from callcentre.distribution import ACDService
from callcentre.distribution.queue_log import AUTO_PAUSE, QueueLogEmitter
from callcentre.domain import queue_log as ql
from callcentre.domain.acd import Agent, AgentState, PauseReason, WithdrawReason
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.ports import CallerHungUp, FakeClock
from callcentre.domain.queue_log import QueueLogEvent as E
from fakes import FakeChannel, FakeTicketStore, captured_logs
from tests.queue_log_report import (
    LAYOUT,
    UNIQUEID,
    check_calls_are_closed,
    check_layout,
    kind,
    read_entries,
    report,
)
from tests.test_queue_log import fixture_lines

A1 = Agent("1", "Agent One", "a1", "PJSIP/agent1")
A2 = Agent("2", "Agent Two", "a2", "PJSIP/agent2")
Q = "hotline"


class Lines:
    """The sink: every entry the emitter wrote, and the file it would be."""

    def __init__(self) -> None:
        self.entries: list[ql.QueueLogEntry] = []

    def write(self, entry: ql.QueueLogEntry) -> None:
        self.entries.append(entry)

    @property
    def text(self) -> str:
        return "".join(ql.format_line(e) for e in self.entries)

    def events(self, callid: str | None = None) -> list[str]:
        return [e.event.value for e in self.entries if callid is None or e.callid == callid]

    def of(self, event: E) -> list[ql.QueueLogEntry]:
        return [e for e in self.entries if e.event is event]


@dataclass
class Phone:
    """An agent's phone: answers after ``answer_after`` s (None: never), talks ``talk`` s, and then
    ``ends`` ("agent" or "caller") hangs up first; or refuses with ``status`` (BUSY, CHANUNAVAIL)."""

    answer_after: float | None = None
    talk: float = 0.0
    ends: str = "agent"
    status: str | None = None


@dataclass
class World:
    acd: ACDService
    clock: FakeClock
    lines: Lines
    phones: dict[str, Phone] = field(default_factory=dict)
    ami: bool = True  # AMI events reach the service (DialBegin/DialEnd, BridgeLeave, HangupRequest)
    legs: int = 0

    def leg(self) -> str:
        self.legs += 1
        return f"1795352000.{self.legs}"

    def event(self, name: str, uniqueid: str) -> None:
        if self.ami:
            self.acd.on_ami_event({"Event": name, "Uniqueid": uniqueid})

    def tick(self) -> None:
        self.acd._apply(self.acd.dist.tick(self.clock.monotonic()))
        self.acd.queue_log.tick()


@dataclass
class Caller(FakeChannel):
    """A caller in our queue. Each Dial rings the scripted phone of its interface; ``gives_up_after``:
    the caller hangs up that many seconds into a ring."""

    world: Any = None
    gives_up_after: float | None = None
    hangup_seen_late: bool = False  # the caller hung up first but HANGUP reaches the session after DIALSTATUS

    async def exec(self, application, *args):
        await super().exec(application, *args)
        w, acd, clock = self.world, self.world.acd, self.world.clock
        interface, timeout = args[0], float(args[1])
        phone = w.phones[interface]
        leg = w.leg()
        if phone.status == "CHANUNAVAIL":  # no channel at all: no DialBegin (captures)
            self.variables["DIALSTATUS"] = phone.status
            return 0
        if w.ami:
            acd.dial_begin(self.uniqueid, leg, f"{interface}-0000000{w.legs}", clock.monotonic())
        if phone.status is not None:
            if w.ami:
                acd.dial_end(self.uniqueid, leg, phone.status, clock.monotonic())
            self.variables["DIALSTATUS"] = phone.status
            return 0
        if self.gives_up_after is not None and (phone.answer_after is None or self.gives_up_after < phone.answer_after):
            clock.advance(self.gives_up_after)
            if w.ami:
                acd.dial_end(self.uniqueid, leg, "CANCEL", clock.monotonic())
            self._hung_up = True
            self.variables["DIALSTATUS"] = "CANCEL"
            return -1
        if phone.answer_after is None or phone.answer_after >= timeout:
            clock.advance(timeout)
            if w.ami:
                acd.dial_end(self.uniqueid, leg, "NOANSWER", clock.monotonic())
            self.variables["DIALSTATUS"] = "NOANSWER"
            return 0
        clock.advance(phone.answer_after)
        if w.ami:
            acd.dial_end(self.uniqueid, leg, "ANSWER", clock.monotonic())
        clock.advance(phone.talk)
        if phone.ends == "caller":  # what Asterisk reports, in its order (queue_log-linear-ami.txt)
            w.event("HangupRequest", self.uniqueid)
            w.event("BridgeLeave", self.uniqueid)
            w.event("BridgeLeave", leg)
            self._hung_up = not self.hangup_seen_late
        else:  # queue_log-completeagent-ami.txt: the agent's leg leaves first, the caller is hung up later
            w.event("BridgeLeave", leg)
            w.event("BridgeLeave", self.uniqueid)
        self.variables["DIALSTATUS"] = "ANSWER"
        return -1


def world(*agents: Agent, ami: bool = True, ready: bool = True, **acd_cfg: Any) -> World:
    clock = FakeClock()
    lines = Lines()
    cfg = Config.model_validate({"acd": {"satisfaction_survey": False, "wrapup_seconds": 0, **acd_cfg},
                                 "queue_log": {"enabled": True, "queue_name": Q}})
    acd = ACDService(cfg, clock, FakeTicketStore(), queue_log=lines)
    acd.load_agents(list(agents), {}, {a.agent_id for a in agents} if ready else set())
    return World(acd, clock, lines, ami=ami)


def caller(w: World, n: int, number: str = "13800138000", **kw: Any) -> tuple[Caller, CallInfo]:
    ch = Caller(uniqueid=f"1795351990.{n}", caller_id=number, world=w, **kw)
    return ch, CallInfo(uniqueid=ch.uniqueid, channel=ch.channel_name, caller_id_raw=number,
                        caller_id="+86" + number, caller_name="Zhang San", language="zh")


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def run_call(w: World, ch: Caller, call: CallInfo) -> Outcome | None:
    try:
        return await asyncio.wait_for(w.acd.connect(ch, call, reason="caller-asked", skill=None, emergency=False), 5)
    except CallerHungUp:
        return None


def busy_elsewhere(w: World, agent: Agent) -> None:
    """The agent's phone is up on a call we did not route: staffed, but not free."""
    w.acd.on_ami_event({"Event": "Newstate", "ChannelStateDesc": "Up", "Uniqueid": "1795351999.99",
                        "Channel": f"{agent.interface}-000000ff"})
    assert w.acd.dist.agent_state(agent.agent_id) is AgentState.ON_CALL


# ----------------------------------------------------------------------------------------- the layout
def test_every_line_app_queue_wrote_fits_the_layout_table() -> None:
    """The table the comparisons below use is app_queue's own: every captured line fits it."""
    names = ["abandon", "abandon-paused", "completeagent", "exitwithkey", "exitwithtimeout", "linear", "members",
             "positions", "ringnoanswer-connect-completecaller", "membername-as-agent"]
    for name in names:
        for line in fixture_lines(f"queue_log-{name}.txt"):
            e = ql.parse_line(line)
            if e.event in LAYOUT and e.queue != "NONE" and not (e.event is E.ENTERQUEUE and len(e.data) == 4):
                check_layout(e)


def per_call(entries: list[ql.QueueLogEntry]) -> list[list[ql.QueueLogEntry]]:
    """The lines of each call (callid = the caller's uniqueid), calls in order of entering."""
    calls: dict[str, list[ql.QueueLogEntry]] = {}
    for e in entries:
        if UNIQUEID.match(e.callid):
            calls.setdefault(e.callid, []).append(e)
    return list(calls.values())


def theirs(name: str) -> list[ql.QueueLogEntry]:
    return [ql.parse_line(line) for line in fixture_lines(f"queue_log-{name}.txt")]


def same_calls(ours: list[ql.QueueLogEntry], fixture: list[ql.QueueLogEntry], seconds: int = 1) -> None:
    """Per call: the same events in the same order, the same layout, numbers within ``seconds`` (ring
    milliseconds within ``seconds`` * 1000), positions equal."""
    a, b = per_call(ours), per_call(fixture)
    assert [[e.event for e in c] for c in a] == [[e.event for e in c] for c in b]
    for call_a, call_b in zip(a, b, strict=True):
        for ea, eb in zip(call_a, call_b, strict=True):
            check_layout(ea)
            check_layout(eb)
            assert ea.agent == "NONE" or ea.agent in ("a1", "a2")  # our agents by login, in every event
            if ea.event in (E.RINGNOANSWER, E.RINGCANCELED):
                assert abs(int(ea.data[0]) - int(eb.data[0])) <= 1000 * seconds, (ea, eb)
            elif ea.event is E.CONNECT:
                assert abs(int(ea.data[0]) - int(eb.data[0])) <= seconds and abs(int(ea.data[2]) - int(eb.data[2])) <= seconds
            elif ea.event in (E.COMPLETECALLER, E.COMPLETEAGENT):
                assert [abs(int(x) - int(y)) <= seconds for x, y in zip(ea.data[:2], eb.data[:2], strict=True)] == [True, True]
                assert ea.data[2] == eb.data[2]
            elif ea.event in (E.ABANDON, E.EXITWITHTIMEOUT, E.EXITEMPTY):
                assert ea.data[:2] == eb.data[:2] and abs(int(ea.data[2]) - int(eb.data[2])) <= seconds, (ea, eb)
            elif ea.event is E.ENTERQUEUE:
                assert ea.data[1:] == eb.data[1:] and ea.data[0] == ""


# ----------------------------------------------------------------------------------------- call by call
async def test_two_rings_unanswered_then_the_next_agent_answers_and_the_caller_hangs_up_like_linear() -> None:
    """queue_log-linear.txt (app_queue, one member at a time for two rings): RINGNOANSWER 10000 ms, CONNECT
    (held 13 s, the member leg, rung 2 s), COMPLETECALLER. app_queue waits retry = 1 s before the next
    member; we ring the next agent at once, so our hold is 12 s."""
    w = world(A1, A2)
    w.phones = {"PJSIP/agent1": Phone(None), "PJSIP/agent2": Phone(2, talk=3, ends="caller")}
    await w.acd.start()
    ch, call = caller(w, 1)
    assert await run_call(w, ch, call) is None  # the caller hung up (during the Dial)
    await w.acd.stop()
    fixture = theirs("linear")
    same_calls(w.lines.entries, fixture)
    [connect] = w.lines.of(E.CONNECT)
    assert connect.data == ("12", "1795352000.2", "2") and connect.agent == "a2"  # the agent leg's uniqueid
    assert [e.data for e in w.lines.of(E.RINGNOANSWER)] == [("10000",)]
    assert [e.data for e in w.lines.of(E.COMPLETECALLER)] == [("12", "3", "1")]
    # the file: QUEUESTART, both agents as members (logged in at start), the call
    assert w.lines.events()[:3] == ["QUEUESTART", "ADDMEMBER", "ADDMEMBER"]
    assert [e.agent for e in w.lines.of(E.ADDMEMBER)] == ["a1", "a2"]


async def test_the_agent_hangs_up_first_completeagent() -> None:
    w = world(A1)
    w.phones = {"PJSIP/agent1": Phone(1, talk=4, ends="agent")}
    await w.acd.start()
    ch, call = caller(w, 1)
    assert await run_call(w, ch, call) is Outcome.DONE
    await w.acd.stop()
    same_calls(w.lines.entries, theirs("completeagent"))
    assert [e.data for e in w.lines.of(E.COMPLETEAGENT)] == [("1", "4", "1")]


async def test_the_caller_hangs_up_while_the_agent_rings_ringcanceled_then_abandon() -> None:
    w = world(A1)
    w.phones = {"PJSIP/agent1": Phone(None)}
    await w.acd.start()
    ch, call = caller(w, 1, gives_up_after=6.01)
    assert await run_call(w, ch, call) is None
    await w.acd.stop()
    same_calls(w.lines.entries, theirs("abandon"))
    assert [e.data for e in w.lines.of(E.RINGCANCELED)] == [("6010",)]
    assert [e.data for e in w.lines.of(E.ABANDON)] == [("1", "1", "6")]
    assert w.lines.of(E.RINGNOANSWER) == []  # not the agent's miss


async def test_callers_who_give_up_while_waiting_leave_from_the_position_they_reached() -> None:
    """queue_log-positions.txt: the second caller entered at 2, left at 1 after the first had gone."""
    w = world(A1)
    busy_elsewhere(w, A1)
    await w.acd.start()
    (ch1, call1), (ch2, call2) = caller(w, 1), caller(w, 2, "13700137000")
    t1 = asyncio.ensure_future(run_call(w, ch1, call1))
    await settle()
    w.clock.advance(1)
    t2 = asyncio.ensure_future(run_call(w, ch2, call2))
    await settle()
    w.clock.advance(3)
    ch1._hung_up = True
    t1.cancel()  # the session ends: HANGUP while the caller listens to music
    await asyncio.gather(t1, return_exceptions=True)
    w.clock.advance(3)
    ch2._hung_up = True
    t2.cancel()
    await asyncio.gather(t2, return_exceptions=True)
    await w.acd.stop()
    same_calls(w.lines.entries, theirs("positions"))
    assert [e.data for e in w.lines.of(E.ENTERQUEUE)] == [("", "13800138000", "1"), ("", "13700137000", "2")]
    assert [e.data for e in w.lines.of(E.ABANDON)] == [("1", "1", "4"), ("1", "2", "6")]


async def test_the_call_back_key_is_exitwithkey() -> None:
    """queue_log-exitwithkey.txt: app_queue writes RINGCANCELED first when a member rang while the key
    was pressed; our call-back key is taken only while the caller waits (not during a ring), so ours is
    ENTERQUEUE then EXITWITHKEY with our key."""
    w = world(A1)
    busy_elsewhere(w, A1)
    await w.acd.start()
    ch, call = caller(w, 1)
    task = asyncio.ensure_future(run_call(w, ch, call))
    await settle()
    w.clock.advance(4)
    w.acd.dtmf(ch.uniqueid, "1", w.clock.monotonic())  # AMI DTMFEnd on the caller's channel
    assert await task is Outcome.DONE
    await w.acd.stop()
    fixture = [e for e in theirs("exitwithkey") if e.event is not E.RINGCANCELED]
    same_calls(w.lines.entries, fixture)
    assert [e.data for e in w.lines.of(E.EXITWITHKEY)] == [("1", "1", "1", "4")]


async def test_the_maximum_wait_is_exitwithtimeout_after_the_ring_in_progress() -> None:
    """queue_log-exitwithtimeout.txt: RINGNOANSWER, then EXITWITHTIMEOUT. app_queue cut its ring at the
    maximum wait (6 s there); ours lets the ring in progress finish its two rings first."""
    w = world(A1, max_wait_seconds=10, missed_offers_before_pause=1)  # one ring only, as in the capture
    w.phones = {"PJSIP/agent1": Phone(None)}
    await w.acd.start()
    ch, call = caller(w, 1)
    task = asyncio.ensure_future(run_call(w, ch, call))
    await settle()  # rang 10 s (NOANSWER); the maximum wait waited for that ring
    w.clock.advance(10)
    w.tick()
    assert await task is Outcome.MESSAGE
    await w.acd.stop()
    assert [[e.event for e in c] for c in per_call(w.lines.entries)] == [
        [e.event for e in c] for c in per_call(theirs("exitwithtimeout"))]
    for e in w.lines.entries:
        check_layout(e)
    assert [e.data for e in w.lines.of(E.EXITWITHTIMEOUT)] == [("1", "1", "20")]


async def test_nobody_staffed_is_exitempty_where_app_queue_keeps_the_caller_waiting() -> None:
    """queue_log-abandon-paused.txt: app_queue lets a caller wait for a queue whose only member is paused
    (ABANDON when they give up). Ours tells the caller at once that nobody can answer and takes a
    message: ENTERQUEUE then EXITEMPTY (app_queue's line for leaving a queue with no one to answer)."""
    w = world(A1)
    await w.acd.agent_action("1", "pause", "training")
    await w.acd.start()
    ch, call = caller(w, 1)
    assert await run_call(w, ch, call) is Outcome.MESSAGE
    await w.acd.stop()
    assert w.lines.events(ch.uniqueid) == ["ENTERQUEUE", "EXITEMPTY"]
    for e in w.lines.entries:
        check_layout(e)
    assert w.lines.events()[:3] == ["QUEUESTART", "ADDMEMBER", "PAUSE"]  # the paused agent at start
    assert w.lines.of(E.ADDMEMBER)[0].data == ("PAUSED",) and w.lines.of(E.PAUSE)[0].data == ("training",)


# ----------------------------------------------------------------------------------------- who hung up first
@pytest.mark.parametrize(("ends", "late", "event"), [
    ("caller", False, E.COMPLETECALLER),
    ("caller", True, E.COMPLETECALLER),  # the AGI saw HANGUP only after DIALSTATUS: AMI's order decides
    ("agent", False, E.COMPLETEAGENT),
])
async def test_who_hung_up_first_comes_from_asteriskss_own_order_of_events(ends, late, event) -> None:
    w = world(A1)
    w.phones = {"PJSIP/agent1": Phone(1, talk=5, ends=ends)}
    await w.acd.start()
    ch, call = caller(w, 1, hangup_seen_late=late)
    with captured_logs() as logs:
        await run_call(w, ch, call)
    assert w.lines.events(ch.uniqueid) == ["ENTERQUEUE", "CONNECT", event.value]  # at once, no waiting
    [told] = [x for x in logs if x["event"] == "queue_log call ended"]
    assert (told["told_by"], told["uniqueid"]) == ("ami", ch.uniqueid)
    await w.acd.stop()


@pytest.mark.parametrize(("ends", "event"), [("caller", E.COMPLETECALLER), ("agent", E.COMPLETEAGENT)])
async def test_without_ami_the_agi_hangup_decides_after_a_grace(ends, event) -> None:
    w = world(A1, ami=False)
    w.phones = {"PJSIP/agent1": Phone(1, talk=5, ends=ends)}
    await w.acd.start()
    ch, call = caller(w, 1)
    await run_call(w, ch, call)
    assert w.lines.events(ch.uniqueid) == ["ENTERQUEUE", "CONNECT"]  # waiting for AMI events that never come
    w.clock.advance(2.0)
    with captured_logs() as logs:
        w.acd.queue_log.tick()
    assert w.lines.events(ch.uniqueid) == ["ENTERQUEUE", "CONNECT", event.value]
    assert [x["told_by"] for x in logs if x["event"] == "queue_log call ended"] == ["agi"]
    [connect] = w.lines.of(E.CONNECT)
    assert connect.data[1] == ""  # the agent leg's uniqueid is known only from AMI
    assert w.acd.queue_log.calls_open() == 0
    await w.acd.stop()


async def test_at_shutdown_an_undecided_end_is_written_not_lost() -> None:
    w = world(A1, ami=False)
    w.phones = {"PJSIP/agent1": Phone(1, talk=5, ends="agent")}
    await w.acd.start()
    ch, call = caller(w, 1)
    await run_call(w, ch, call)
    await w.acd.stop()
    assert w.lines.events(ch.uniqueid)[-1] == "COMPLETEAGENT"


# ----------------------------------------------------------------------------------------- agents
async def test_a_missed_offer_that_pauses_the_agent_is_ringnoanswer_then_pause_auto_pause() -> None:
    """app_queue's autopause writes PAUSE with reason Auto-Pause right after the RINGNOANSWER; so do we."""
    w = world(A1, A2, missed_offers_before_pause=1)
    w.phones = {"PJSIP/agent1": Phone(None), "PJSIP/agent2": Phone(1, talk=2)}
    await w.acd.start()
    ch, call = caller(w, 1)
    await run_call(w, ch, call)
    await w.acd.stop()
    body = [(e.event.value, e.agent, e.data) for e in w.lines.entries[3:]]
    assert body == [
        ("ENTERQUEUE", "NONE", ("", "13800138000", "1")),
        ("RINGNOANSWER", "a1", ("10000",)),
        ("PAUSE", "a1", (AUTO_PAUSE,)),
        ("CONNECT", "a2", ("11", "1795352000.2", "1")),
        ("COMPLETEAGENT", "a2", ("11", "2", "1")),
    ]


async def test_busy_and_unreachable_phones_are_ringnoanswer_and_an_unreachable_one_pauses() -> None:
    w = world(A1, A2)
    w.phones = {"PJSIP/agent1": Phone(status="BUSY"), "PJSIP/agent2": Phone(status="CHANUNAVAIL")}
    await w.acd.start()
    ch, call = caller(w, 1)
    task = asyncio.ensure_future(run_call(w, ch, call))
    await settle()
    ch._hung_up = True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await w.acd.stop()
    # busy: a miss (a second one pauses); unreachable: paused at once; the caller is tried on a1 again
    assert [(e.event.value, e.agent) for e in w.lines.entries[3:]] == [
        ("ENTERQUEUE", "NONE"), ("RINGNOANSWER", "a1"), ("RINGNOANSWER", "a2"), ("PAUSE", "a2"),
        ("RINGNOANSWER", "a1"), ("PAUSE", "a1"), ("ABANDON", "NONE")]
    assert {e.data for e in w.lines.of(E.PAUSE)} == {(AUTO_PAUSE,)}
    assert [e.data for e in w.lines.of(E.RINGNOANSWER)] == [("0",), ("0",), ("0",)]  # refused at once


async def test_login_pause_unpause_logout_over_the_api_like_queueadd_queuepause_queueremove() -> None:
    """queue_log-members.txt: ADDMEMBER (MANAGER), PAUSE with the reason, UNPAUSE, REMOVEMEMBER. Our agent
    column is the login in every line (app_queue's log_membername_as_agent = yes)."""
    w = world(A1, ready=False)
    await w.acd.start()
    for action, reason in (("login", None), ("pause", "lunch"), ("ready", None), ("pause", "break"),
                           ("unpause", None), ("pause", "other"), ("pause", "training"), ("logout", None)):
        await w.acd.agent_action("1", action, reason)
    await w.acd.stop()
    got = [(e.callid, e.agent, e.event.value, e.data) for e in w.lines.entries]
    assert got == [
        ("NONE", "NONE", "QUEUESTART", ("",)),
        ("MANAGER", "a1", "ADDMEMBER", ("",)),
        ("NONE", "a1", "PAUSE", ("lunch",)),
        ("NONE", "a1", "UNPAUSE", ("",)),
        ("NONE", "a1", "PAUSE", ("break",)),
        ("NONE", "a1", "UNPAUSE", ("",)),
        ("NONE", "a1", "PAUSE", ("other",)),
        ("NONE", "a1", "PAUSE", ("training",)),  # a new reason: a new PAUSE line, as app_queue writes it
        ("MANAGER", "a1", "REMOVEMEMBER", ("",)),
    ]
    members = theirs("members")
    for ours, line in zip(w.lines.entries[1:6], [members[i] for i in (0, 2, 3, 2, 3)], strict=True):
        assert (ours.event, ours.callid, kind(ours.data[0])) == (line.event, line.callid, kind(line.data[0]))
    for e in w.lines.entries:
        check_layout(e)


async def test_a_restart_writes_queuestart_and_the_members_that_were_restored() -> None:
    """After a restart, reports close every open call and member session at QUEUESTART; the agents our
    distribution restored are then written as members again (a paused one as ADDMEMBER PAUSED + PAUSE)."""
    clock = FakeClock()
    lines = Lines()
    cfg = Config.model_validate({"queue_log": {"enabled": True}})
    acd = ACDService(cfg, clock, FakeTicketStore(), queue_log=lines)
    since = clock.now() - timedelta(minutes=5)
    acd.load_agents([A1, A2], {"1": ("ready", since, None), "2": ("paused", since, "missed_calls")})
    await acd.start()
    await acd.stop()
    assert [(e.event.value, e.agent, e.data) for e in lines.entries] == [
        ("QUEUESTART", "NONE", ("",)), ("ADDMEMBER", "a1", ("",)), ("ADDMEMBER", "a2", ("PAUSED",)),
        ("PAUSE", "a2", (AUTO_PAUSE,))]
    assert ql.format_line(lines.entries[0]) == f"{ql.epoch_of(clock.now())}|NONE|NONE|NONE|QUEUESTART|\n"


# ----------------------------------------------------------------------------------------- transfers, safety
async def test_transfers_close_the_call_instead_of_complete() -> None:
    """What feature-transfers calls: BLINDTRANSFER / ATTENDEDTRANSFER as app_queue writes them, and no
    COMPLETE* line for that call afterwards."""
    for kind_, call_it in (
        ("BLINDTRANSFER", lambda q, uid: q.blind_transferred(uid, exten="8002", context="callcentre-transfer")),
        ("ATTENDEDTRANSFER", lambda q, uid: q.attended_transferred(uid, data=("aecc7964-ca1b-410b",))),
    ):
        w = world(A1)
        w.phones = {"PJSIP/agent1": Phone(1, talk=3)}
        await w.acd.start()
        ch, call = caller(w, 1)
        # the transfer is done during the call: when the agent's leg leaves the caller's bridge
        orig = w.acd.queue_log.channel_event

        def during(uniqueid, event, *, at, _orig=orig, _call_it=call_it, _uid=ch.uniqueid, _q=w.acd.queue_log):
            if event == "BridgeLeave" and uniqueid != _uid:
                _call_it(_q, _uid)
            _orig(uniqueid, event, at=at)

        w.acd.queue_log.channel_event = during  # type: ignore[method-assign]
        await run_call(w, ch, call)
        await w.acd.stop()
        assert w.lines.events(ch.uniqueid) == ["ENTERQUEUE", "CONNECT", kind_]
        [e] = w.lines.of(E(kind_))
        if kind_ == "BLINDTRANSFER":
            assert e.data == ("8002", "callcentre-transfer", "1", "3", "1") and e.agent == "a1"
        else:
            assert e.data == ("BRIDGE", "aecc7964-ca1b-410b", "1", "3", "1")
        assert w.acd.queue_log.calls_open() == 0


async def test_the_transfers_of_our_distribution_write_their_lines_through_transfer_lines() -> None:
    """ACDService gives its transfers the emitter's TransferLines: a blind transfer is BLINDTRANSFER to the
    transfer context's token, an attended one ATTENDEDTRANSFER by Bridge (APP), then nothing for the call."""
    from types import SimpleNamespace

    from callcentre.distribution.queue_log import TransferLines
    from callcentre.domain.transfers import TransferKind

    for kind_, transfer_kind, data in (
        ("BLINDTRANSFER", TransferKind.BLIND, ("8002", "callcentre-transfer", "1", "3", "1")),
        ("ATTENDEDTRANSFER", TransferKind.ATTENDED, ("APP", "Bridge", "PJSIP/agent2-00000009", "1", "3", "1")),
    ):
        w = world(A1)
        w.phones = {"PJSIP/agent1": Phone(1, talk=3)}
        sink = w.acd.transfers._queue_log  # noqa: SLF001 - what ACDService wired
        assert isinstance(sink, TransferLines)
        await w.acd.start()
        ch, call = caller(w, 1)
        orig = w.acd.queue_log.channel_event
        t = SimpleNamespace(kind=transfer_kind, uniqueid=ch.uniqueid, token="8002", to_channel="PJSIP/agent2-00000009")

        def during(uniqueid, event, *, at, _orig=orig, _t=t, _uid=ch.uniqueid, _sink=sink, _clock=w.clock):
            if event == "BridgeLeave" and uniqueid != _uid:
                _sink.transferred(_t, _clock.now())
            _orig(uniqueid, event, at=at)

        w.acd.queue_log.channel_event = during  # type: ignore[method-assign]
        await run_call(w, ch, call)
        await w.acd.stop()
        assert w.lines.events(ch.uniqueid) == ["ENTERQUEUE", "CONNECT", kind_]
        [e] = w.lines.of(E(kind_))
        assert e.data == data and e.agent == "a1"


def test_the_emitter_never_raises_into_call_handling_and_counts_what_it_could_not_write() -> None:
    lines = Lines()
    em = QueueLogEmitter(lines, FakeClock(), agents=lambda agent_id: (_ for _ in ()).throw(LookupError(agent_id)))
    em.entered("not|a uniqueid", caller_number="1")  # refused by the model: logged and counted
    em.entered("1795351990.1", caller_number="13800138000")
    em.dialling("1795351990.1", "o#1", "ghost")  # unknown agent: logged and counted
    em.leaving("1795351990.1", WithdrawReason.ABANDONED)
    assert em.errors == 2
    assert [e.event for e in lines.entries] == [E.ENTERQUEUE, E.ABANDON]
    off = QueueLogEmitter(None, FakeClock())
    off.entered("1795351990.1", caller_number="1")
    off.started([])
    assert not off.enabled and off.errors == 0 and off.calls_open() == 0


def test_pause_reasons_are_ours_and_the_automatic_one_is_app_queues() -> None:
    from callcentre.distribution.queue_log import pause_reason_text

    assert pause_reason_text(PauseReason.LUNCH) == "lunch"
    assert pause_reason_text(PauseReason.MISSED_CALLS) == AUTO_PAUSE
    assert pause_reason_text(None) == ""


async def test_a_report_reads_the_file_and_counts_what_the_distribution_counted() -> None:
    """A standard consumer (tests/queue_log_report.py) over the file of a small busy day: per-agent
    answered and not-answered, abandoned calls, every call closed; equal to the distribution's figures."""
    w = world(A1, A2)
    w.phones = {"PJSIP/agent1": Phone(None), "PJSIP/agent2": Phone(2, talk=3, ends="caller")}
    await w.acd.start()
    await run_call(w, *caller(w, 1))  # a1 misses (10 s), a2 answers
    w.phones["PJSIP/agent1"] = Phone(1, talk=2)
    await run_call(w, *caller(w, 2))
    w.phones = {"PJSIP/agent1": Phone(None), "PJSIP/agent2": Phone(None)}
    await run_call(w, *caller(w, 3, gives_up_after=3))  # abandoned while a phone rang
    figures = w.acd.metrics()
    agents = {a.agent_id: a for a in w.acd.dist.snapshot().agents}
    await w.acd.stop()
    rep = report(read_entries(w.lines.text), Q)
    check_calls_are_closed(rep)
    assert rep.totals["ENTERQUEUE"] == figures["calls_entered"] == 3
    assert rep.abandoned == figures["calls_abandoned"] == 1
    assert sum(rep.answered.values()) == figures["calls_answered"] == 2
    for agent in (A1, A2):
        assert rep.answered[agent.login] == agents[agent.agent_id].answered_today
        assert rep.not_answered[agent.login] == agents[agent.agent_id].missed_today


# ----------------------------------------------------------------------------------------- configuration
def test_the_queue_log_configuration_is_checked_when_loaded(tmp_path) -> None:
    from callcentre.config import ConfigError, load_config

    cfg = load_config(None, environ={})
    assert (cfg.queue_log.enabled, str(cfg.queue_log.path), cfg.queue_log.queue_name) == (False, "var/queue_log", "hotline")
    cfg = load_config(None, environ={"CALLCENTRE_QUEUE_LOG__ENABLED": "true", "CALLCENTRE_QUEUE_LOG__PATH": "/x/q",
                                     "CALLCENTRE_QUEUE_LOG__AGENT_FIELD": "name"})
    assert (cfg.queue_log.enabled, str(cfg.queue_log.path), cfg.queue_log.agent_field) == (True, "/x/q", "name")
    for env, words in (
        ({"CALLCENTRE_QUEUE_LOG__QUEUE_NAME": "hot|line"}, "queue_log.queue_name"),
        ({"CALLCENTRE_QUEUE_LOG__QUEUE_NAME": "hotline-fallback"}, "fallback queue"),
        ({"CALLCENTRE_QUEUE_LOG__AGENT_FIELD": "phone"}, "agent_field"),
        ({"CALLCENTRE_QUEUE_LOG__MAX_PENDING": "0"}, "max_pending"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_config(None, environ=env)


def test_the_app_owns_a_writer_only_when_the_queue_log_is_on_and_there_is_a_distribution(tmp_path) -> None:
    from callcentre.app import build_services
    from callcentre.config import load_config
    from callcentre.queue_log_writer import QueueLogWriter

    base = {"CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    on = {**base, "CALLCENTRE_QUEUE_LOG__ENABLED": "true", "CALLCENTRE_QUEUE_LOG__PATH": str(tmp_path / "q")}
    services = build_services(load_config(None, environ=on), FakeClock())
    assert isinstance(services.queue_log, QueueLogWriter) and services.queue_log.path == tmp_path / "q"
    assert services.distribution is not None and services.distribution.queue_log.enabled
    assert build_services(load_config(None, environ=base), FakeClock()).queue_log is None
    off_acd = build_services(load_config(None, environ={**on, "CALLCENTRE_ACD__ENABLED": "false"}), FakeClock())
    assert off_acd.queue_log is None and off_acd.distribution is None


@pytest.mark.parametrize(("duty", "outcome"), [("ANSWER", Outcome.DONE), ("NOANSWER", Outcome.MESSAGE)])
async def test_night_service_leaves_the_queue_for_the_on_duty_phone_exitempty(duty, outcome) -> None:
    """An emergency at night with nobody staffed rings the on-duty phone outside the queue (as a dialplan
    after app_queue would): ENTERQUEUE then EXITEMPTY, whether the duty phone answers or not."""
    from datetime import datetime, timezone

    clock = FakeClock(datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc))  # Tuesday 22:00 in Shanghai
    lines = Lines()
    cfg = Config.model_validate({"acd": {"satisfaction_survey": False, "on_duty_interface": "PJSIP/duty",
                                         "business_hours": {"days": [0, 1, 2, 3, 4], "open": "09:00", "close": "18:00"}},
                                 "queue_log": {"enabled": True}})
    acd = ACDService(cfg, clock, FakeTicketStore(), queue_log=lines)
    await acd.start()
    ch = FakeChannel(variables={"DIALSTATUS": duty})
    call = CallInfo(uniqueid=ch.uniqueid, channel=ch.channel_name, caller_id_raw=ch.caller_id,
                    caller_id="+8613800138000", caller_name="", language="zh")
    assert await asyncio.wait_for(acd.connect(ch, call, reason="emergency", skill=None, emergency=True), 5) is outcome
    await acd.stop()
    assert ("exec", "Dial", "PJSIP/duty", "30") in ch.ops
    assert lines.events(ch.uniqueid) == ["ENTERQUEUE", "EXITEMPTY"]
    assert lines.of(E.EXITEMPTY)[0].data == ("1", "1", "0")
