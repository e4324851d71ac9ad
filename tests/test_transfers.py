"""Transfers through call distribution (callcentre/distribution/transfers.py), driven with scripted fake
channels and a fake AMI link that behave as the real Asterisk 20 did (docs/transfers.md): a Redirect makes
the first session's Dial return; the caller comes back in a new session with the same uniqueid; an
attended transfer's consultation rings from the first agent's leg and ``Bridge`` joins the caller to a leg.
No sockets, no timed assertions."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from callcentre.config import Config
from callcentre.distribution import ACDService
from callcentre.domain.acd import Agent, AgentState
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.ports import FakeClock
from callcentre.domain.transfers import (
    InvalidTarget,
    TransferForbidden,
    TransferRefused,
    TransfersUnavailable,
    TransferState,
    UnknownCall,
)
from fakes import FakeChannel, FakeTicketStore
from tests.waiting import until

UID = "1796543556.43"
AGENTS = [Agent(str(n), f"Agent {n}", f"a{n}", f"PJSIP/agent{n}", skills=frozenset({"fees"} if n > 7 else set()))
          for n in (7, 8, 9)]


class FakeAMI:
    """Records actions; a Redirect or Hangup runs what the test says Asterisk would do."""

    connected = True

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.on_redirect: Callable[[dict[str, Any]], None] | None = None
        self.on_hangup: Callable[[str], None] | None = None
        self.refuse: str | None = None

    async def send(self, action: dict[str, Any]) -> dict[str, str]:
        self.actions.append(dict(action))
        if self.refuse:
            from callcentre.ami.link import AMIActionError

            raise AMIActionError({"Response": "Error", "Message": self.refuse})
        if action["Action"] == "Redirect" and self.on_redirect is not None:
            self.on_redirect(action)
        return {"Response": "Success"}

    async def hangup(self, channel: str, cause: int | None = None) -> None:
        self.actions.append({"Action": "Hangup", "Channel": channel})
        if self.on_hangup is not None:
            self.on_hangup(channel)


class Phone(FakeChannel):
    """A FastAGI session whose Dial rings the agent phones as ``plan`` says (answer, noanswer, hold: answer
    and stay until ``release``), measured on AMI as Asterisk reports it; ``Bridge`` lasts until
    ``bridge_release``."""

    def setup(self, acd: ACDService, clock: FakeClock, plan: dict[str, str] | None = None) -> "Phone":
        self.acd, self.clock, self.plan = acd, clock, plan or {}
        self.release = asyncio.Event()
        self.bridge_release = asyncio.Event()
        self.on_bridge: Callable[[str], None] | None = None
        self.legs: list[tuple[str, str]] = []
        return self

    async def exec(self, application, *args):
        await super().exec(application, *args)
        if application == "Bridge":
            if self.on_bridge is not None:
                self.on_bridge(args[0])
            self.variables["BRIDGERESULT"] = "SUCCESS"
            await self.bridge_release.wait()
            return 0
        if application != "Dial":
            return 0
        iface = args[0]
        n = len(self.legs) + 1
        leg = (f"{self.uniqueid}{n}", f"{iface}-{n:08x}")
        self.legs.append(leg)
        self.acd.dial_begin(self.uniqueid, leg[0], leg[1], self.clock.monotonic())
        mode = self.plan.get(iface, "answer")
        if mode == "noanswer":
            self.clock.advance(10)
            self.acd.dial_end(self.uniqueid, leg[0], "NOANSWER", self.clock.monotonic())
            self.acd.hangup(leg[0], 0, self.clock.monotonic())
            self.variables["DIALSTATUS"] = "NOANSWER"
            return 0
        self.clock.advance(1)
        self.acd.dial_end(self.uniqueid, leg[0], "ANSWER", self.clock.monotonic())
        if mode == "hold":
            await self.release.wait()
        self.variables["DIALSTATUS"] = "ANSWER"
        return 0


class History:
    def __init__(self) -> None:
        self.entries: list[tuple[str, list[str], dict]] = []

    async def record(self, uniqueid, tickets, entry) -> None:
        self.entries.append((uniqueid, list(tickets), dict(entry)))


def world(**transfers: Any) -> tuple[ACDService, FakeClock, FakeAMI, list, History]:
    clock = FakeClock()
    ami = FakeAMI()
    published: list[tuple[str, dict]] = []
    history = History()
    cfg = Config.model_validate({
        "acd": {"satisfaction_survey": False, "wrapup_seconds": 30},
        "transfers": transfers,
        "service": {"departments": [{"code": "eng", "name": "Engineering office", "transfer_interfaces":
                                     ["PJSIP/eng-desk", "PJSIP/eng-duty"]},
                                    {"code": "billing", "name": "Billing", "transfer_skill": "fees"}]},
    })
    acd = ACDService(cfg, clock, FakeTicketStore(), publish=lambda t, p: published.append((t, dict(p))),
                     ami=lambda: ami, transfer_history=history)
    acd.load_agents(AGENTS, {}, {"7"})
    return acd, clock, ami, published, history


def caller(acd: ACDService, clock: FakeClock, plan: dict[str, str] | None = None, **kw: Any) -> Phone:
    return Phone(uniqueid=UID, channel_name="PJSIP/trunk-00000001", **kw).setup(acd, clock, plan)


async def connected(acd: ACDService, clock: FakeClock, ami: FakeAMI) -> tuple[Phone, asyncio.Task]:
    """A caller answered by agent 7, who stays on the line; the Redirect ends that Dial (200 result=0)."""
    ch = caller(acd, clock, {"PJSIP/agent7": "hold"})
    call = CallInfo(uniqueid=UID, channel=ch.channel_name, caller_id_raw="13800138000", caller_id="+8613800138000",
                    caller_name="Zhang San", language="zh", path=["3", "1"], tickets=["C20261206-0001"])
    task = asyncio.create_task(acd.connect(ch, call, reason="caller-asked", skill=None, emergency=False))
    await until(lambda: asyncio.sleep(0, acd.dist.agent_state("7") is AgentState.ON_CALL), 5, "agent 7 answered")
    ami.on_redirect = lambda action: ch.release.set()
    return ch, task


async def login(acd: ACDService, *agents: str) -> None:
    for a in agents:
        await acd.agent_action(a, "login")


def waiting_for(acd: ACDService) -> list[str | None]:
    """The targets of the calls waiting in the distributor (None: anyone)."""
    return [q.target for q in acd.dist.snapshot().queue]


def redirect(ami: FakeAMI) -> dict[str, Any]:
    [r] = [a for a in ami.actions if a["Action"] == "Redirect"]
    return r


# ------------------------------------------------------------------------------------------------ blind
async def test_blind_to_an_agent_the_caller_keeps_uniqueid_tickets_and_card_and_the_first_agent_wraps_up() -> None:
    acd, clock, ami, published, history = world()
    first, task = await connected(acd, clock, ami)
    await login(acd, "8")
    out = await acd.transfer(UID, "blind", {"agent": "8"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    assert (out["state"], out["target"]["code"], out["from_agent_name"]) == ("moving", "8", "Agent 7")
    assert await asyncio.wait_for(task, 5) is Outcome.DONE  # the first session ends at once ...
    assert not [op for op in first.ops if op[0] == "get_digits"]  # ... without a survey
    assert acd.dist.agent_state("7") is AgentState.WRAP_UP
    r = redirect(ami)
    # every value is the server's own: the caller's channel, our context, a token of digits
    assert (r["Channel"], r["Context"], r["Priority"]) == ("PJSIP/trunk-00000001", "callcentre-transfer", "1")
    assert r["Exten"].isdigit() and len(r["Exten"]) == 10 and "ExtraChannel" not in r

    second = caller(acd, clock, {"PJSIP/agent8": "answer"}, args=[r["Exten"]])
    await asyncio.wait_for(acd.transfers.caller_script(second), 5)
    assert ("exec", "Dial", "PJSIP/agent8", "10") in second.ops  # two rings, like any offer
    assert second.variables["CC_RESULT"] == "done"
    pops = [p for topic, p in published if topic == "agent:8" and p["type"] == "screen_pop"]
    assert pops and pops[0]["offer_id"] == f"{UID}#x1-1"
    card = pops[0]["call"]
    assert (card["uniqueid"], card["ivr_tickets"], card["ivr_path"][-1]) == (UID, ["C20261206-0001"], "xfer-b:8")
    assert card["transfer"]["from"] == "Agent 7" and card["transfer"]["kind"] == "blind"
    assert acd.dist.agent_state("8") is AgentState.WRAP_UP
    m = acd.metrics()
    assert (m["calls_entered"], m["calls_answered"], m["offers_answered"]) == (1, 1, 2)
    await asyncio.gather(*list(acd._tasks))
    [(uid, tickets, entry)] = history.entries
    assert (uid, tickets) == (UID, ["C20261206-0001"])
    assert (entry["kind"], entry["from"], entry["to"], entry["state"]) == ("blind", "Agent 7", "Agent 8", "completed")
    frames = [p["transfer"]["state"] for topic, p in published if topic == "wallboard" and p["type"] == "transfer"]
    assert frames == ["moving", "ringing", "completed"]


async def test_blind_to_a_skill_group_moves_on_after_two_rings_and_falls_back_to_the_queue() -> None:
    acd, clock, ami, published, _ = world(no_answer="queue")
    _, task = await connected(acd, clock, ami)
    await login(acd, "8", "9")
    r = await acd.transfer(UID, "blind", {"skill": "fees"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    assert r["target"] == {"kind": "skill", "code": "fees", "name": "fees"}
    await asyncio.wait_for(task, 5)
    second = caller(acd, clock, {"PJSIP/agent8": "noanswer", "PJSIP/agent9": "answer"}, args=[redirect(ami)["Exten"]])
    await asyncio.wait_for(acd.transfers.caller_script(second), 5)
    dials = [op[2] for op in second.ops if op[:2] == ("exec", "Dial")]
    assert dials == ["PJSIP/agent8", "PJSIP/agent9"]  # the group's longest idle first, then the next
    assert acd.transfers.snapshot()[0]["to_agent_id"] == "9"

    # nobody of the group answers: the caller joins the queue and agent 7 (outside the group) takes it
    acd, clock, ami, published, _ = world(no_answer="queue")
    _, task = await connected(acd, clock, ami)
    await login(acd, "8")
    await acd.transfer(UID, "blind", {"skill": "fees"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    await asyncio.wait_for(task, 5)
    await acd.agent_action("7", "end_wrapup")
    second = caller(acd, clock, {"PJSIP/agent8": "noanswer"}, args=[redirect(ami)["Exten"]])
    await asyncio.wait_for(acd.transfers.caller_script(second), 5)
    assert [op[2] for op in second.ops if op[:2] == ("exec", "Dial")] == ["PJSIP/agent8", "PJSIP/agent7"]
    [ended] = acd.transfers.snapshot()
    assert (ended["state"], ended["outcome"]) == ("fell_back", "missed")


async def test_blind_nobody_answers_with_a_message_as_the_fallback() -> None:
    acd, clock, ami, _, _ = world(no_answer="message")
    _, task = await connected(acd, clock, ami)
    await login(acd, "8")
    await acd.transfer(UID, "blind", {"agent": "8"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    await asyncio.wait_for(task, 5)
    taken: list[str] = []

    async def take_message(ch, call, reason):
        taken.append(reason)
        return Outcome.DONE

    second = caller(acd, clock, {"PJSIP/agent8": "noanswer"}, args=[redirect(ami)["Exten"]])
    await asyncio.wait_for(acd.transfers.caller_script(second, take_message=take_message), 5)
    assert taken == ["transfer-not-answered"] and "zh/no-agents" in second.played
    assert second.variables["CC_RESULT"] == "done"


async def test_blind_nobody_answers_back_to_the_first_agent_then_the_queue() -> None:
    acd, clock, ami, _, _ = world(no_answer="back")
    _, task = await connected(acd, clock, ami)
    await login(acd, "8", "9")
    await acd.agent_action("9", "pause", "lunch")
    await acd.transfer(UID, "blind", {"agent": "8"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    await asyncio.wait_for(task, 5)
    second = caller(acd, clock, {"PJSIP/agent8": "noanswer", "PJSIP/agent7": "noanswer", "PJSIP/agent9": "answer"},
                    args=[redirect(ami)["Exten"]])
    script = asyncio.create_task(acd.transfers.caller_script(second))
    # agent 8 let it ring out: back to agent 7, who is wrapping up: it waits for them
    await until(lambda: asyncio.sleep(0, waiting_for(acd) == ["agent:7"]), 5, "back to agent 7")
    await acd.agent_action("9", "ready")  # back from lunch, but not the one the call waits for now
    assert waiting_for(acd) == ["agent:7"]
    await acd.agent_action("7", "end_wrapup")
    # agent 7 lets it ring out too: now anyone, and agent 9 (who has not missed it) comes first
    await asyncio.wait_for(script, 5)
    assert [op[2] for op in second.ops if op[:2] == ("exec", "Dial")] == ["PJSIP/agent8", "PJSIP/agent7", "PJSIP/agent9"]


async def test_a_department_rings_its_phones_in_order_and_counts_them_as_offers() -> None:
    acd, clock, ami, _, history = world()
    _, task = await connected(acd, clock, ami)
    await acd.transfer(UID, "blind", {"department": "eng"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    await asyncio.wait_for(task, 5)
    second = caller(acd, clock, {"PJSIP/eng-desk": "noanswer", "PJSIP/eng-duty": "answer"},
                    args=[redirect(ami)["Exten"]])
    await asyncio.wait_for(acd.transfers.caller_script(second), 5)
    assert [op[2:] for op in second.ops if op[:2] == ("exec", "Dial")] == [("PJSIP/eng-desk", "10"),
                                                                          ("PJSIP/eng-duty", "10")]
    m = acd.metrics()
    assert (m["offers"], m["offers_answered"], m["offers_missed"]) == (3, 2, 1)  # agent 7's, then the two phones
    await asyncio.gather(*list(acd._tasks))
    assert history.entries[0][2]["to"] == "Engineering office" and history.entries[0][2]["state"] == "completed"


# ------------------------------------------------------------------------------------------------ attended
async def consulting(acd: ACDService, clock: FakeClock, ami: FakeAMI, plan: dict[str, str]) -> tuple[Phone, Phone, asyncio.Task, asyncio.Task]:
    """Agent 7 consults agent 8: the caller holds in the transfer script, agent 7's leg rings 8."""
    first, task = await connected(acd, clock, ami)
    await login(acd, "8")
    out = await acd.transfer(UID, "attended", {"agent": "8"}, actor_agent_id="7", actor_login="a7", supervisor=False)
    assert out["kind"] == "attended"
    assert await asyncio.wait_for(task, 5) is Outcome.DONE
    assert acd.dist.agent_state("7") is AgentState.ON_CALL  # still on the phone: now consulting
    r = redirect(ami)
    leg_uid, leg_chan = first.legs[0]
    assert (r["ExtraChannel"], r["ExtraContext"]) == (leg_chan, "callcentre-consult")
    assert r["ExtraExten"].isdigit() and r["ExtraExten"] != r["Exten"]
    consult = Phone(uniqueid=leg_uid, channel_name=leg_chan, args=[r["ExtraExten"]]).setup(acd, clock, plan)
    hold = caller(acd, clock, args=[r["Exten"]])
    t_consult = asyncio.create_task(acd.transfers.consult_script(consult))
    t_hold = asyncio.create_task(acd.transfers.caller_script(hold))
    return consult, hold, t_consult, t_hold


async def test_attended_the_target_answers_and_complete_bridges_the_caller_to_them() -> None:
    acd, clock, ami, published, history = world()
    consult, hold, t_consult, t_hold = await consulting(acd, clock, ami, {"PJSIP/agent8": "hold"})
    await until(lambda: asyncio.sleep(0, acd.transfers.get(UID).state is TransferState.CONSULTING), 5, "consulting")
    assert ("music_on", "default") in hold.ops  # the caller holds with music meanwhile
    pops = [p for topic, p in published if topic == "agent:8" and p["type"] == "screen_pop"]
    assert pops[0]["call"]["uniqueid"] == UID and pops[0]["call"]["transfer"]["consult"] is True

    # complete: the caller's session bridges the target's leg, which leaves the consultation
    hold.on_bridge = lambda channel: consult.release.set()
    done = await acd.transfer_complete(UID, actor_agent_id="7", supervisor=False)
    assert done["state"] == "completed"
    await asyncio.wait_for(t_consult, 5)
    target_leg = consult.legs[0][1]
    assert ("exec", "Bridge", target_leg, "x") in hold.ops
    assert acd.dist.agent_state("7") is AgentState.WRAP_UP  # the first agent is done ...
    assert acd.dist.agent_state("8") is AgentState.ON_CALL  # ... the target has the caller
    assert consult.variables["CC_RESULT"] == "done"
    hold.bridge_release.set()  # the call ends
    await asyncio.wait_for(t_hold, 5)
    assert acd.dist.agent_state("8") is AgentState.WRAP_UP and hold.variables["CC_RESULT"] == "done"
    await asyncio.gather(*list(acd._tasks))
    assert [e[2]["state"] for e in history.entries] == ["completed"]
    m = acd.metrics()
    assert (m["calls_entered"], m["offers_answered"]) == (1, 2)


async def test_attended_cancel_hangs_up_the_target_and_bridges_the_first_agent_back() -> None:
    acd, clock, ami, published, history = world()
    consult, hold, t_consult, t_hold = await consulting(acd, clock, ami, {"PJSIP/agent8": "hold"})
    await until(lambda: asyncio.sleep(0, acd.transfers.get(UID).state is TransferState.CONSULTING), 5, "consulting")
    target_leg = consult.legs[0][1]
    ami.on_hangup = lambda channel: consult.release.set() if channel == target_leg else None
    hold.on_bridge = lambda channel: t_consult.cancel() if channel == consult.channel_name else None  # HANGUP
    out = await acd.transfer_cancel(UID, actor_agent_id="7", supervisor=False)
    assert out["state"] == "returned"
    await until(lambda: asyncio.sleep(0, ("exec", "Bridge", consult.channel_name, "x") in hold.ops), 5, "bridged back")
    assert {"Action": "Hangup", "Channel": target_leg} in ami.actions
    assert acd.dist.agent_state("8") is AgentState.WRAP_UP
    assert acd.dist.agent_state("7") is AgentState.ON_CALL  # back with the caller
    await asyncio.gather(t_consult, return_exceptions=True)
    hold.bridge_release.set()
    await asyncio.wait_for(t_hold, 5)
    assert acd.dist.agent_state("7") is AgentState.WRAP_UP
    await asyncio.gather(*list(acd._tasks))
    assert [(e[2]["state"], e[2]["outcome"]) for e in history.entries] == [("returned", "cancelled")]


async def test_attended_the_target_does_not_answer_and_the_caller_goes_back_to_the_first_agent() -> None:
    acd, clock, ami, published, _ = world()
    consult, hold, t_consult, t_hold = await consulting(acd, clock, ami, {"PJSIP/agent8": "noanswer"})
    hold.on_bridge = lambda channel: t_consult.cancel() if channel == consult.channel_name else None
    await until(lambda: asyncio.sleep(0, ("exec", "Bridge", consult.channel_name, "x") in hold.ops), 5, "bridged back")
    [t] = [x for x in acd.transfers.snapshot() if x["uniqueid"] == UID]
    assert (t["state"], t["outcome"]) == ("returned", "missed")
    assert not [op for op in consult.ops if op[0] == "play"]  # the first agent hears nothing said
    frames = [p["transfer"]["state"] for topic, p in published if topic == "agent:7" and p["type"] == "transfer"]
    assert frames[-1] == "returned"
    await asyncio.gather(t_consult, return_exceptions=True)
    hold.bridge_release.set()
    await asyncio.wait_for(t_hold, 5)


async def test_the_first_agent_hanging_up_while_consulting_leaves_a_blind_transfer() -> None:
    acd, clock, ami, _, _ = world()
    consult, hold, t_consult, t_hold = await consulting(acd, clock, ami, {"PJSIP/agent8": "hold"})
    await until(lambda: asyncio.sleep(0, acd.transfers.get(UID).state is TransferState.CONSULTING), 5, "consulting")
    # agent 7 hangs up: the consult session gets HANGUP (its task is cancelled), agent 8's leg goes with it
    consult._hung_up = True
    t_consult.cancel()
    await asyncio.gather(t_consult, return_exceptions=True)
    t = acd.transfers.get(UID)
    assert (t.kind.value, t.state) == ("blind", TransferState.RINGING)
    assert acd.dist.agent_state("7") is AgentState.WRAP_UP
    assert acd.dist.agent_state("8") is AgentState.WRAP_UP  # the consultation is over for them too
    # the caller now waits for agent 8 (in wrap-up) as a blind transfer, music on
    await until(lambda: asyncio.sleep(0, UID in acd.waiters), 5, "the caller waits for the target")
    assert acd.waiters[UID].queued_as.only.agent_id == "8"
    t_hold.cancel()
    await asyncio.gather(t_hold, return_exceptions=True)


# ------------------------------------------------------------------------------------------------ refusals
async def test_refusals_are_clear_and_send_nothing_to_asterisk() -> None:
    acd, clock, ami, _, _ = world()
    _, task = await connected(acd, clock, ami)
    await login(acd, "8")

    async def start(uid=UID, kind="blind", target=None, actor="7", supervisor=False):
        return await acd.transfer(uid, kind, target or {"agent": "8"}, actor_agent_id=actor, actor_login="x",
                                  supervisor=supervisor)

    with pytest.raises(UnknownCall):
        await start(uid="1.2")
    with pytest.raises(TransferForbidden):
        await start(actor="9")
    for bad in ({"agent": "7"}, {"agent": "nobody"}, {"skill": "gardening"}, {"department": "cleaning"},
                {"agent": "8", "skill": "fees"}, {"room": "1"}):
        with pytest.raises(InvalidTarget):
            await start(target=bad)
    await acd.agent_action("9", "login")
    await acd.agent_action("9", "pause", "lunch")
    with pytest.raises(TransferRefused) as e:
        await start(target={"agent": "9"})
    assert e.value.code == "target_unavailable"
    with pytest.raises(InvalidTarget):
        await start(kind="sideways")
    assert [a for a in ami.actions if a["Action"] == "Redirect"] == []
    ami.refuse = "Channel not found"
    with pytest.raises(TransferRefused):
        await start()
    assert acd.transfers.get(UID) is None and not task.done()  # nothing changed: the call goes on
    ami.refuse = None
    ami.connected = False
    with pytest.raises(TransfersUnavailable):
        await start()
    ami.connected = True
    # a supervisor may transfer anyone's call; a second transfer of the same call is refused
    await start(actor="42", supervisor=True)
    with pytest.raises(TransferRefused) as e:
        await start(actor="42", supervisor=True)
    assert e.value.code == "transfer_in_progress"
    with pytest.raises(TransferRefused):
        await acd.transfer_cancel(UID, actor_agent_id="7", supervisor=False)  # blind: nothing to take back
    await asyncio.wait_for(task, 5)


async def test_a_token_the_server_does_not_know_leaves_the_caller_to_the_dialplans_fallback() -> None:
    acd, clock, ami, _, _ = world()
    ch = caller(acd, clock, args=["1234567890"])
    await acd.transfers.caller_script(ch)
    assert "CC_RESULT" not in ch.variables and not ch.ops
    consult = Phone(uniqueid="1.1", channel_name="PJSIP/agent7-0001", args=["99"]).setup(acd, clock)
    await acd.transfers.consult_script(consult)
    assert "CC_RESULT" not in consult.variables and not consult.ops
