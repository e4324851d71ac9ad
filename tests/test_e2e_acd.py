"""Call distribution end to end: the IVR hands the caller to our ACD, which rings agents through the
simulated Asterisk (EXEC Dial over FastAGI, DialBegin/DialEnd over AMI). Simulated time runs 50×."""

from __future__ import annotations

import asyncio

import pytest

from callcentre.domain.acd import AgentState, PauseReason
from callcentre.sim.scripts import AgentScript, CallEnd, CallerScript
from tests.waiting import eventually

AGENTS = (
    "[{id: a1, name: Agent One, interface: PJSIP/agent1, start: ready},"
    " {id: a2, name: Agent Two, interface: PJSIP/agent2, start: ready}]"
)
ONE_AGENT = "[{id: a1, name: Agent One, interface: PJSIP/agent1, start: ready}]"


async def agent_id(stack, login: str) -> str:
    return str((await stack.services.users.by_login(login)).id)


def dials(result) -> list[str]:
    return [c for c in result.commands if c.startswith("EXEC Dial")]


def figures(stack) -> dict:
    return stack.services.acd.metrics()


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=AGENTS, CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_first_agent_misses_two_rings_and_the_second_answers(stack):
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=None))
    stack.pbx.add_agent(AgentScript("PJSIP/agent2", answer_after=3, talk_seconds=5))
    assert await eventually(lambda: stack.services.ami.connected)
    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["0", "5"]))
    assert result.error is None
    assert dials(result) == ["EXEC Dial PJSIP/agent1,10", "EXEC Dial PJSIP/agent2,10"]
    assert result.variables.get("DIALSTATUS") == "ANSWER"
    a1, a2 = await agent_id(stack, "a1"), await agent_id(stack, "a2")
    snap = {a["agent_id"]: a for a in stack.services.acd.snapshot()["agents"]}
    assert snap[a1]["missed_today"] == 1 and snap[a2]["answered_today"] == 1
    f = figures(stack)
    assert f["calls_answered"] == 1 and f["offers"] == 2 and f["offers_missed"] == 1
    # the ring was measured from DialBegin to DialEnd: 3 simulated seconds = 0.06 s, well within two rings
    assert f["calls_answered_within_target"] == 1
    # the agent hung up first, the caller rated the call
    assert any(c.startswith("GET DATA callcentre/zh/rate-service") for c in result.commands)
    assert "callcentre/zh/thanks-rating" in " ".join(result.commands)
    # the caller's name and unit were on the agent's phone
    assert any(c.startswith("SET VARIABLE CALLERID(name)") and "1-1201" in c for c in result.commands)
    # who answered and how fast is kept on the call (the monthly per-agent two-ring share)
    row = await stack.services.tickets.get_call(result.uniqueid)
    assert row.answered_by == "a2" and row.within_target is True and 0 <= row.answer_seconds < 10


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=AGENTS, CALLCENTRE_ACD__WRAPUP_SECONDS="0",
                       CALLCENTRE_ACD__MISSED_OFFERS_BEFORE_PAUSE="2")
async def test_an_agent_who_never_answers_ends_up_paused_with_an_alert(stack):
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=None))
    stack.pbx.add_agent(AgentScript("PJSIP/agent2", answer_after=2, talk_seconds=3))
    sub = stack.services.hub.subscribe("wallboard")
    seen: list[str] = []

    async def drain() -> None:
        while True:
            seen.append(await sub.get())

    reader = asyncio.ensure_future(drain())
    for caller in ("13800138000", "13912345602"):
        result = await stack.pbx.place_call(CallerScript(caller, inputs=["0", ""]))
        assert result.variables.get("DIALSTATUS") == "ANSWER"
    a1 = await agent_id(stack, "a1")
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.PAUSED)
    view = {a["agent_id"]: a for a in stack.services.acd.snapshot()["agents"]}[a1]
    assert view["reason"] == PauseReason.MISSED_CALLS.value
    assert await eventually(lambda: any('"alert"' in m and "missed" in m for m in seen))
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    sub.close()


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__RING_CYCLE_SECONDS="30")
async def test_caller_hangs_up_while_the_agent_rings(stack):
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=None))
    a1 = await agent_id(stack, "a1")
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0"])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.RINGING)
    [caller] = [c for c in stack.pbx.channels.values() if c.name.startswith("SIP/owner-phone")]
    stack.pbx.request_hangup(caller)  # the caller gives up while the agent's phone rings
    result = await call
    assert result.ended is CallEnd.CALLER_HUNG_UP
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.READY)
    f = figures(stack)
    assert f["calls_abandoned"] == 1 and f["offers_missed"] == 0  # not the agent's fault
    view = stack.services.acd.snapshot()["agents"][0]
    assert view["missed_today"] == 0


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=AGENTS, CALLCENTRE_ACD__RING_CYCLE_SECONDS="30",
                       CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_agent_paused_while_ringing_stops_ringing_and_the_next_agent_gets_the_call(stack):
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=None))
    stack.pbx.add_agent(AgentScript("PJSIP/agent2", answer_after=2, talk_seconds=3))
    assert await eventually(lambda: stack.services.ami.connected)
    a1 = await agent_id(stack, "a1")
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.RINGING)
    await stack.services.acd.agent_action(a1, "pause", "break")
    result = await asyncio.wait_for(call, 20)
    assert dials(result)[-1] == "EXEC Dial PJSIP/agent2,60"
    assert result.variables.get("DIALSTATUS") == "ANSWER"
    if "EXEC Dial PJSIP/agent1,60" in dials(result):
        # agent1's phone was already ringing: we stopped it at once (AMI Hangup of its leg) rather than
        # letting it ring out its two rings. (If the pause came before the Dial was written, agent1 was
        # never rung at all, which is right too.)
        hangups = stack.ami_server.actions_named("Hangup")
        assert hangups and hangups[0].get("Channel").startswith("PJSIP/agent1-")
    assert stack.services.acd.dist.agent_state(a1) is AgentState.PAUSED
    assert figures(stack)["offers_missed"] == 0


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0",
                       CALLCENTRE_ACD__ANNOUNCE_EVERY_SECONDS="5")
async def test_two_callers_one_agent_both_answered_in_order(stack):
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=40))
    first = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    a1 = await agent_id(stack, "a1")
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    second = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", ""], silences_before_giving_up=100)))
    r1, r2 = await asyncio.wait_for(asyncio.gather(first, second), 30)
    assert r1.variables.get("DIALSTATUS") == "ANSWER" and r2.variables.get("DIALSTATUS") == "ANSWER"
    # the second caller waited with music and heard their place in the queue
    assert any(c.startswith("SET MUSIC ON") for c in r2.commands)
    assert any("queue-position" in c for c in r2.commands)
    f = figures(stack)
    assert f["calls_answered"] == 2 and f["calls_abandoned"] == 0


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_ami_link_drops_during_a_call_and_nothing_is_counted_twice(stack):
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=60))
    assert await eventually(lambda: stack.services.ami.connected)
    a1 = await agent_id(stack, "a1")
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    before = stack.services.ami.status()["reconnects"]
    await stack.ami_server.drop_clients()
    assert await eventually(lambda: stack.services.ami.status()["reconnects"] > before and stack.services.ami.connected)
    result = await asyncio.wait_for(call, 20)
    assert result.variables.get("DIALSTATUS") == "ANSWER"
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.READY)
    f = figures(stack)
    assert f["calls_answered"] == 1 and f["offers"] == 1 and f["calls_entered"] == 1


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0.5")
async def test_emergency_goes_ahead_of_everyone(stack):
    import json

    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=30))
    a1 = await agent_id(stack, "a1")
    sub = stack.services.hub.subscribe(f"agent:{a1}")
    seen: list[str] = []

    async def drain() -> None:
        while True:
            seen.append(await sub.get())

    reader = asyncio.ensure_future(drain())
    blocker = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    normal = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", ""], silences_before_giving_up=100)))
    assert await eventually(lambda: stack.services.acd.dist.waiting_count() >= 1)
    emergency = asyncio.ensure_future(stack.pbx.place_call(
        CallerScript("13720000801", inputs=["8", "2", ""], silences_before_giving_up=100)))
    assert await eventually(lambda: stack.services.acd.dist.waiting_count() >= 2)
    queue = stack.services.acd.snapshot()["queue"]
    assert queue[0]["priority"].lower().startswith("emergency") and queue[0]["position"] == 1
    r_blocker, r_normal, r_emergency = await asyncio.wait_for(asyncio.gather(blocker, normal, emergency), 40)
    statuses = [(r.variables.get("DIALSTATUS"), r.ended.value) for r in (r_blocker, r_normal, r_emergency)]
    assert all(st == "ANSWER" for st, _ in statuses), statuses
    # the emergency caller, who came last, was offered to the agent before the caller already waiting
    offered = []
    for raw in seen:
        msg = json.loads(raw)
        if msg.get("type") == "screen_pop" and msg["call"]["uniqueid"] not in offered:
            offered.append(msg["call"]["uniqueid"])
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert offered == [r_blocker.uniqueid, r_emergency.uniqueid, r_normal.uniqueid]
    tickets = await stack.tickets()
    assert any(t.kind == "emergency" and t.priority == "major" for t in tickets)


@pytest.mark.stack_env(CALLCENTRE_ACD__RING_CYCLE_SECONDS="30", CALLCENTRE_WEB__SESSION_KEY="e2e-session-key-0123456789")
async def test_screen_pop_reaches_the_agent_desk_while_the_phone_rings(stack):
    """A logged-in agent's websocket gets the owner's card (name, unit, balance) before answering."""
    import json

    from callcentre.domain.acd import Agent
    from callcentre.storage.users_repo import create_user

    agent = await create_user(stack.services.session_factory, "desk1", "Desk One", "agent", "desk-password-1",
                              interface="PJSIP/desk1")
    other = await create_user(stack.services.session_factory, "desk2", "Desk Two", "agent", "desk-password-2",
                              interface="PJSIP/desk2")
    stack.services.acd.load_agents(
        [Agent(agent_id=str(u.id), name=u.name, login=u.login, interface=u.interface) for u in (agent, other)], {}
    )
    stack.pbx.add_agent(AgentScript("PJSIP/desk1", answer_after=20, talk_seconds=2))
    stack.pbx.add_agent(AgentScript("PJSIP/desk2", answer_after=None))
    async with stack.http() as c, stack.http() as c2:
        r = await c.post("/api/login", json={"login": "desk1", "password": "desk-password-1"})
        assert r.status == 200, await r.text()
        csrf = (await r.json())["csrf"]
        r = await c.post(f"/api/agents/{agent.id}/state", json={"action": "ready"},
                         headers={"X-CSRF-Token": csrf, "Origin": stack.url})
        assert r.status == 200, await r.text()
        r2 = await c2.post("/api/login", json={"login": "desk2", "password": "desk-password-2"})
        assert r2.status == 200
        async with c.ws_connect("/ws/agent", headers={"Origin": stack.url}) as ws, \
                c2.ws_connect("/ws/agent", headers={"Origin": stack.url}) as ws2:
            call = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
            card = None
            ringing_seen = False
            while card is None:
                msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if msg.get("type") == "screen_pop" and msg["call"]["owners"]:
                    card = msg["call"]
                    ringing_seen = stack.services.acd.dist.agent_state(str(agent.id)).value == "ringing"
            assert ringing_seen  # shown while the phone rings, before it is answered
            [owner] = [o for o in card["owners"] if o["name"] == "张伟"]
            text = json.dumps(owner, ensure_ascii=False)
            assert "1201" in text and "2560" in text
            await asyncio.wait_for(call, 20)
            # the other agent (not offered this call) received no screen-pop of it
            others = []
            while True:
                try:
                    m = await asyncio.wait_for(ws2.receive(), 0.3)
                except asyncio.TimeoutError:
                    break
                others.append(json.loads(m.data))
            assert not any(m.get("type") == "screen_pop" for m in others)


def test_sync_agents_adds_new_and_updates_changed_agents():
    from callcentre.config import Config
    from callcentre.distribution import ACDService
    from callcentre.domain.acd import Agent
    from callcentre.domain.ports import FakeClock
    from fakes import FakeTicketStore

    acd = ACDService(Config(), FakeClock(), FakeTicketStore())
    acd.load_agents([Agent(agent_id="1", name="A", login="a", interface="PJSIP/a")], {})
    acd.sync_agents([Agent(agent_id="1", name="A", login="a", interface="PJSIP/a2"),
                     Agent(agent_id="2", name="B", login="b", interface="PJSIP/b")])
    assert acd.dist.agent("1").interface == "PJSIP/a2"
    assert acd.dist.agent("2").login == "b"
    assert acd.dist.agent_state("2") is AgentState.LOGGED_OUT


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_WEB__SESSION_KEY="e2e-session-key-0123456789")
async def test_wallboard_shows_the_waiting_caller_and_agents_from_the_real_distributor(stack):
    import json

    from callcentre.storage.users_repo import create_user

    await create_user(stack.services.session_factory, "boss", "Boss", "supervisor", "boss-password-1")
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=60))
    a1 = await agent_id(stack, "a1")
    busy = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", ""], silences_before_giving_up=100)))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    waiting = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""], silences_before_giving_up=100)))
    async with stack.http() as c:
        assert (await c.post("/api/login", json={"login": "boss", "password": "boss-password-1"})).status == 200
        async with c.ws_connect("/ws/wallboard", headers={"Origin": stack.url}) as ws:
            seen = None
            for _ in range(50):
                msg = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if msg.get("type") == "snapshot" and msg["queue"]:
                    seen = msg
                    break
            assert seen is not None
            [q] = seen["queue"]
            assert q["owner_name"] == "张伟" and q["unit"] == "1-1201" and q["wait_seconds"] >= 0
            [agent] = seen["agents"]
            assert agent["state"] == "on_call" and agent["current_caller"] == "+8613912345602"
            f = seen["figures"]
            assert {"two_ring_share_today", "avg_wait", "longest_wait", "abandon_rate", "waiting", "agents_ready"} <= set(f)
            assert f["waiting"] == 1 and f["agents_ready"] == 0 and f["target_wait_seconds"] == 10
        r = await c.get("/api/queue")
        assert r.status == 200 and (await r.json())["queue"][0]["owner_name"] == "张伟"
    for t in (busy, waiting):
        t.cancel()
    await asyncio.gather(busy, waiting, return_exceptions=True)


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_a_caller_who_asks_for_a_call_back_is_called_by_the_next_free_agent(stack):
    """In the queue the caller presses 1 (call-back) and hangs up; when the agent is free we Originate to
    the agent's phone into callcentre-callback,callback, whose AGI script dials the owner."""
    from callcentre.sim.pbx import DialplanEntry

    stack.pbx.add_dialplan("callcentre-callback", "callback", DialplanEntry("callback"))
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=100))
    owner = "Local/+8613912345602@callcentre-outbound"
    stack.pbx.add_agent(AgentScript(owner, answer_after=1, talk_seconds=2))
    a1 = await agent_id(stack, "a1")
    blocker = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    asker = await asyncio.wait_for(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", "1"])), 20)
    assert "callback-registered" in " ".join(asker.commands), asker.commands
    assert stack.ami_server.actions_named("Originate") == []  # not while the agent is on the other call
    # the promise is a ticket before the caller hears it: it outlives a restart and is escalated if unkept
    [t] = [t for t in await stack.tickets() if t.call_uniqueid == asker.uniqueid]
    assert (t.kind, t.category, t.source, t.status, t.caller_id) == (
        "message", "callback_request", "callback", "new", "+8613912345602")
    assert t.acknowledged_to_caller is True
    assert abs((t.promised_by - t.created_at).total_seconds() - 30 * 60) < 5  # the general promise
    await asyncio.wait_for(blocker, 20)
    def callback_legs() -> list:
        return [r for r in stack.pbx.results if r.channel.startswith("PJSIP/agent1") and r.commands[:1] != ["ANSWER"]]

    assert await eventually(lambda: bool(callback_legs()))
    [orig] = stack.ami_server.actions_named("Originate")
    assert (orig.get("Channel"), orig.get("Context"), orig.get("Exten")) == ("PJSIP/agent1", "callcentre-callback", "callback")
    [leg] = callback_legs()
    assert any(c.startswith(f"EXEC Dial {owner},40") for c in leg.commands), leg.commands
    assert leg.variables.get("DIALSTATUS") == "ANSWER"
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.READY)
    assert stack.services.acd.dist.waiting_count() == 0


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=AGENTS, CALLCENTRE_ACD__WRAPUP_SECONDS="0",
                       CALLCENTRE_ACD__RING_CYCLE_SECONDS="30")
async def test_a_call_back_refused_busy_by_one_phone_goes_to_the_next_agent_at_once(stack):
    """The Originate to a busy phone gets OriginateResponse Reason 5 right behind its 'queued' reply. That
    is a refusal now (the phone is not left 'ringing' until the 60-second ring timeout): after two the
    agent is paused, and the other agent makes the call-back."""
    from callcentre.sim.pbx import DialplanEntry

    stack.pbx.add_dialplan("callcentre-callback", "callback", DialplanEntry("callback"))
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=100))
    stack.pbx.add_agent(AgentScript("PJSIP/agent2", answer_after=1, talk_seconds=200))
    owner = "Local/+8613912345602@callcentre-outbound"
    stack.pbx.add_agent(AgentScript(owner, answer_after=1, talk_seconds=2))
    a1, a2 = await agent_id(stack, "a1"), await agent_id(stack, "a2")
    first = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    second = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13720000801", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a2) is AgentState.ON_CALL)
    await asyncio.wait_for(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", "1"])), 20)
    stack.pbx.set_agent_behaviour("PJSIP/agent1", busy=True)  # agent 1's phone refuses what comes next
    await asyncio.wait_for(first, 20)
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.PAUSED)
    view = {a["agent_id"]: a for a in stack.services.acd.snapshot()["agents"]}[a1]
    assert view["reason"] == PauseReason.MISSED_CALLS.value
    to_agent1 = [o for o in stack.ami_server.actions_named("Originate") if o.get("Channel") == "PJSIP/agent1"]
    assert len(to_agent1) == 2  # offered twice, refused twice (missed_offers_before_pause)
    await asyncio.wait_for(second, 30)
    assert await eventually(
        lambda: any(r.channel.startswith("PJSIP/agent2") and f"EXEC Dial {owner},40" in r.commands
                    for r in stack.pbx.results))
    assert [o.get("Channel") for o in stack.ami_server.actions_named("Originate")] == ["PJSIP/agent1"] * 2 + ["PJSIP/agent2"]


async def test_stopping_the_acd_waits_for_a_call_back_ticket_being_saved():
    """The queue call-back's ticket is committed in a shielded task; stop() (server shutdown) must let it
    finish before the database is closed, as the IVR's drain does for its tickets."""
    from callcentre.config import Config
    from callcentre.distribution import ACDService
    from callcentre.domain.calls import CallInfo, commit_shielded
    from callcentre.domain.model import Priority, TicketKind
    from callcentre.domain.ports import FakeClock
    from fakes import FakeTicketStore

    store = FakeTicketStore(delay=0.2)
    acd = ACDService(Config(), FakeClock(), store)
    call = CallInfo("1795999999.7", "SIP/owner-1", "13912345602", "+8613912345602", "", "zh")
    saving = asyncio.ensure_future(
        commit_shielded(store, call.ticket_draft(TicketKind.MESSAGE, "callback_request", Priority.GENERAL), None,
                        acd._committing))
    await asyncio.sleep(0)
    saving.cancel()  # the caller's session is cancelled (shutdown) while the ticket is being saved
    await acd.stop()
    assert len(store.tickets) == 1 and not acd._committing


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_supervision_spies_on_the_exact_channel_of_the_agents_call_and_only_during_one(stack):
    """ChanSpy gets the agent's leg as Asterisk named it in DialBegin (PJSIP/agent1 as a prefix would also
    match agent10, and a Local interface's ;2 half faces the caller); no call, no Originate."""
    from callcentre.storage.users_repo import create_user

    boss = await create_user(stack.services.session_factory, "boss", "Boss", "supervisor", "boss-password-1",
                             supervisor_interface="PJSIP/boss")
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=100))
    a1 = await agent_id(stack, "a1")
    with pytest.raises(ValueError, match="not on a call"):
        await stack.services.acd.supervise(boss.id, a1, "listen")
    assert stack.ami_server.actions_named("Originate") == []
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13800138000", inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    [leg] = [c.name for c in stack.pbx.channels.values() if c.name.startswith("PJSIP/agent1-")]
    await stack.services.acd.supervise(boss.id, a1, "whisper")
    [orig] = stack.ami_server.actions_named("Originate")
    assert (orig.get("Channel"), orig.get("Application"), orig.get("Data")) == ("PJSIP/boss", "ChanSpy", f"{leg},qwE")
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
