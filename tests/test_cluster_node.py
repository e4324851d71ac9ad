"""This node in a cluster (callcentre/cluster/node.py and relay.py), without a database or sockets.

What must hold: the leader-only parts start on election in order (distribution with its agents, the
AMI resync, then the loops) and stop on demotion in reverse, with a fresh distribution per term and
waiting callers handed to the dialplan; a follower's caller who asks for a person gets this node's
distribution if it takes the lead within the wait, else the dialplan's queue; a follower passes a
first-try call to the second server only when that is safe; the gate refuses leader-only writes when
not leading; agent actions made on a follower reach the leader's AgentService and its refusals come
back with their kind and code; so do transfers, and a follower passes a transferred caller or a
consultation leg on its first try to the leader.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog

from callcentre.app import Running, _agi_router
from callcentre.cluster.node import FollowerPass, LeaderConnector, LeaderGate, LeaderParts, NodeInfo
from callcentre.cluster.relay import REQUEST_TOPIC, AgentRelay, AgentRelayServer
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.errors import Conflict, NotFound, Unavailable
from callcentre.domain.ports import FakeClock
from callcentre.domain.transfers import TransferForbidden, TransferRefused, TransfersUnavailable, UnknownCall
from callcentre.domain.users import AgentAction, AgentStateRefused, Forbidden, SuperviseMode, UserRole, UserView
from callcentre.service.desk.agents import AgentService
from callcentre.service.desk.calls import CallService
from callcentre.web.hub import WALLBOARD, Hub
from fakes import FakeChannel


class Journal(list):
    def add(self, *entry: Any) -> None:
        self.append(entry)


class FakeACD:
    def __init__(self, journal: Journal, n: int) -> None:
        self.journal, self.n = journal, n
        self.waiting = 0
        self.connected: list[str] = []

    async def start(self) -> None:
        self.journal.add("acd.start", self.n)

    async def stop(self) -> None:
        self.journal.add("acd.stop", self.n)

    def hand_over_waiting(self) -> int:
        self.journal.add("acd.hand_over", self.n)
        return self.waiting

    async def connect(self, ch: Any, call: CallInfo, *, reason: str, skill: str | None, emergency: bool) -> Outcome:
        self.connected.append(call.uniqueid)
        return Outcome.DONE


class FakeRoster:
    def __init__(self, journal: Journal, n: int, fail: bool = False) -> None:
        self.journal, self.n, self.fail = journal, n, fail

    async def load(self, acd: FakeACD) -> None:
        self.journal.add("roster.load", self.n)
        if self.fail:
            raise RuntimeError("the database is down")

    def start(self, acd: FakeACD) -> None:
        self.journal.add("roster.start", self.n)

    async def stop(self) -> None:
        self.journal.add("roster.stop", self.n)


class FakeTracker:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.listeners: list[Any] = []

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)
        self.journal.add("tracker.add", listener.n)

    def remove_listener(self, listener: Any) -> None:
        self.listeners.remove(listener)
        self.journal.add("tracker.remove", listener.n)


class Loop:
    def __init__(self, journal: Journal, name: str) -> None:
        self.journal, self.name = journal, name

    async def start(self) -> None:
        self.journal.add("start", self.name)

    async def stop(self) -> None:
        self.journal.add("stop", self.name)


def parts(journal: Journal, *, ami_up: bool = True, fail_load: bool = False, distribution: bool = True,
          resync_fails: bool = False) -> tuple[LeaderParts, Running, LeaderGate, list[FakeACD]]:
    running, gate, made = Running(), LeaderGate(postgres=False), []

    def make() -> tuple[FakeACD, FakeRoster] | None:
        if not distribution:
            return None
        acd = FakeACD(journal, len(made) + 1)
        made.append(acd)
        return acd, FakeRoster(journal, acd.n, fail=fail_load)

    async def resync() -> None:
        journal.add("resync", running.acd.n if running.acd else None)
        if resync_fails:
            raise ConnectionError("AMI went away")

    async def after_stop(acd: FakeACD) -> None:  # the app stores the term's last recordings here
        journal.add("after_stop", acd.n)

    p = LeaderParts(running=running, gate=gate, tracker=FakeTracker(journal), make_distribution=make, resync=resync,
                    ami_connected=lambda: ami_up, loops=[Loop(journal, "callbacks"), Loop(journal, "escalation")],
                    node="n1", after_stop=after_stop)
    return p, running, gate, made


# ------------------------------------------------------------------ leader parts


async def test_election_starts_distribution_then_resync_then_the_loops_and_demotion_stops_them_in_reverse() -> None:
    journal = Journal()
    p, running, gate, made = parts(journal)
    await p.elected(7)
    assert journal == [("roster.load", 1), ("acd.start", 1), ("tracker.add", 1), ("roster.start", 1), ("resync", 1),
                       ("start", "callbacks"), ("start", "escalation")]
    assert running.acd is made[0] and gate.term == 7 and gate.leading and p.running
    journal.clear()
    made[0].waiting = 2
    await p.demoted()
    assert journal == [("stop", "escalation"), ("stop", "callbacks"), ("acd.hand_over", 1), ("roster.stop", 1),
                       ("tracker.remove", 1), ("acd.stop", 1), ("after_stop", 1)]
    assert running.acd is None and gate.term is None and not gate.leading and not p.running
    # the next term gets a distribution of its own, loaded from the database again
    journal.clear()
    await p.elected(8)
    assert ("roster.load", 2) in journal and running.acd is made[1] and made[1] is not made[0]


async def test_without_an_ami_link_up_election_does_not_resync_and_a_failed_resync_does_not_stop_the_lead() -> None:
    journal = Journal()
    p, running, _, _ = parts(journal, ami_up=False)
    await p.elected(1)
    assert not [e for e in journal if e[0] == "resync"] and running.acd is not None
    journal2 = Journal()
    p2, running2, gate2, _ = parts(journal2, resync_fails=True)
    await p2.elected(1)
    assert ("resync", 1) in journal2 and running2.acd is not None and gate2.leading and p2.running


async def test_an_election_that_fails_half_way_is_cleaned_up_by_the_demotion_that_follows() -> None:
    journal = Journal()
    p, running, gate, _ = parts(journal, fail_load=True)
    with pytest.raises(RuntimeError):
        await p.elected(3)
    assert running.acd is None and not gate.leading and not p.running
    await p.demoted()  # what the elector does next: must not fail on parts that never started
    assert ("acd.stop", 1) in journal and not [e for e in journal if e[0] in ("stop", "tracker.remove")]


async def test_with_distribution_off_the_leader_runs_only_the_loops() -> None:
    journal = Journal()
    p, running, gate, _ = parts(journal, distribution=False)
    await p.elected(1)
    assert journal == [("start", "callbacks"), ("start", "escalation")] and running.acd is None and gate.leading
    await p.demoted()
    assert journal[-2:] == [("stop", "escalation"), ("stop", "callbacks")]


async def test_the_gate_allows_leader_only_writes_on_a_single_node_only_while_leading() -> None:
    gate = LeaderGate(postgres=False)
    assert await gate.allows(object()) is False
    gate.term = 1
    assert await gate.allows(object()) is True  # SQLite: no SQL, one node is its own leader


# ------------------------------------------------------------------ a follower's callers


def call_info(uid: str = "1.1") -> CallInfo:
    call = CallInfo(uniqueid=uid, channel="Local/x;2", caller_id_raw="138", caller_id="+86138", caller_name="",
                    language="zh")
    call.log = structlog.get_logger("test").bind(uniqueid=uid)
    return call


async def test_a_caller_for_a_person_on_the_leader_goes_to_its_distribution() -> None:
    journal = Journal()
    p, running, _, made = parts(journal)
    await p.elected(1)
    tried: list[int] = []
    connector = LeaderConnector(running, p, try_now=lambda: tried.append(1), promote_wait_seconds=4)
    assert await connector.connect(FakeChannel(), call_info(), reason="caller-asked", skill=None,
                                   emergency=False) is Outcome.DONE
    assert made[0].connected == ["1.1"] and not tried


async def test_on_a_follower_that_takes_the_lead_within_the_wait_the_caller_gets_its_distribution() -> None:
    journal = Journal()
    p, running, _, made = parts(journal)

    def try_now() -> None:  # the lock was free: this node is elected while the caller waits
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(p.elected(2)))

    connector = LeaderConnector(running, p, try_now=try_now, promote_wait_seconds=4)
    outcome = await asyncio.wait_for(connector.connect(FakeChannel(), call_info(), reason="caller-asked", skill=None,
                                                       emergency=False), 5)
    assert outcome is Outcome.DONE and made[0].connected == ["1.1"]


async def test_on_a_follower_whose_leader_is_alive_the_caller_goes_to_the_dialplan_queue() -> None:
    journal = Journal()
    p, running, _, _ = parts(journal)
    tried: list[int] = []
    connector = LeaderConnector(running, p, try_now=lambda: tried.append(1), promote_wait_seconds=0.05)
    ch = FakeChannel()
    outcome = await connector.connect(ch, call_info(), reason="caller-asked", skill=None, emergency=False)
    assert outcome is Outcome.AGENT and tried == [1]
    assert ("set_variable", "CC_AGENT_REASON", "not-leader") in ch.ops  # CC_RESULT is not set: the fallback queue


class Elector:
    def __init__(self, **status: Any) -> None:
        self._status = {"leader": False, "state": "follower", "leader_node": "b", "term": None, **status}
        self.tries = 0

    @property
    def is_leader(self) -> bool:
        return bool(self._status["leader"])

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def try_now(self) -> None:
        self.tries += 1


@pytest.mark.parametrize("status, variables, passes", [
    ({}, {"CALLCENTRE_AGI2": "10.0.0.12:4573", "CC_AGI": "10.0.0.11:4573"}, True),
    # the second try already: served here
    ({}, {"CALLCENTRE_AGI2": "10.0.0.12:4573", "CC_AGI": "10.0.0.12:4573", "CC_AGI2": "10.0.0.12:4573"}, False),
    ({}, {"CC_AGI": "10.0.0.11:4573"}, False),  # no second server: the fallback queue would be all there is
    ({}, {"CALLCENTRE_AGI2": "10.0.0.11:4573", "CC_AGI": "10.0.0.11:4573"}, False),  # the second server is this one
    ({"leader": True, "state": "leader"}, {"CALLCENTRE_AGI2": "10.0.0.12:4573", "CC_AGI": "10.0.0.11:4573"}, False),
    ({"state": "connecting", "leader_node": None}, {"CALLCENTRE_AGI2": "10.0.0.12:4573"}, False),  # no leader known
])
async def test_a_follower_passes_only_a_first_try_to_another_second_server(status, variables, passes) -> None:
    ch = FakeChannel(variables=variables)
    assert await FollowerPass(Elector(**status))(ch) is passes
    assert not [op for op in ch.ops if op[0] != "get_variable"]  # never answered, nothing set


async def test_the_router_pokes_the_elector_and_a_passed_call_never_reaches_the_ivr() -> None:
    class IVR:
        def __init__(self) -> None:
            self.ran: list[str] = []

        async def run(self, ch: Any) -> None:
            self.ran.append(ch.uniqueid)

    class Env:
        script = "hotline"

    class Survey:
        async def run(self, ch: Any) -> None: ...

    running, ivr, elector = Running(), IVR(), Elector()
    follower_pass = FollowerPass(elector)
    router = _agi_router(running, ivr, Survey(), on_follower_call=elector.try_now,  # type: ignore[arg-type]
                         follower_pass=follower_pass)
    handler = router(Env())
    assert elector.tries == 1
    first_try = FakeChannel(variables={"CALLCENTRE_AGI2": "b:4573", "CC_AGI": "a:4573"})
    await handler(first_try)
    assert ivr.ran == [] and follower_pass.passed == 1
    assert [op for op in first_try.ops if op[0] != "get_variable"] == [("set_variable", "CC_RESULT", "pass")]
    await handler(FakeChannel(uniqueid="2.2", variables={"CC_AGI2": "b:4573"}))
    assert ivr.ran == ["2.2"]


def test_node_info_names_the_role() -> None:
    assert NodeInfo("a", Elector(leader=True, state="leader", term=4, leader_node="a"), clustered=True).public() == {
        "name": "a", "role": "leader", "term": 4, "leader_node": "a"}
    assert NodeInfo("b", Elector(), clustered=True).role == "follower"
    assert NodeInfo("solo", Elector(state="stopped", leader_node=None), clustered=False).role == "stopped"


# ------------------------------------------------------------------ agent actions relayed to the leader


class SharedHub(Hub):
    """Two nodes' hubs in one: what a ClusterHub does across nodes, in-process."""

    cluster_wide = True

    def __init__(self) -> None:
        super().__init__(64)
        self.snapshot: dict[str, Any] | None = None

    def remote_snapshot(self, max_age_seconds: float) -> dict[str, Any] | None:
        return self.snapshot


def view(uid: int, role: UserRole, active: bool = True, phone: str | None = None) -> UserView:
    return UserView(id=uid, login=f"u{uid}", name=f"U{uid}", role=role, active=active, interface="PJSIP/x",
                    skills=(), languages=(), senior=False, supervisor_interface=phone)


class Users:
    def __init__(self, *users: UserView) -> None:
        self.users = {u.id: u for u in users}
        self.recorded: list[tuple] = []

    async def get(self, uid: int) -> UserView | None:
        return self.users.get(uid)

    async def record_state(self, *args: Any) -> None:
        self.recorded.append(args)


class LeaderACD:
    def __init__(self) -> None:
        self.states = {"2": "ready"}
        self.spied: list[tuple] = []

    def snapshot(self) -> dict[str, Any]:
        return {"queue": [], "agents": [{"agent_id": k, "state": v} for k, v in self.states.items()], "figures": {}}

    def agent_entry(self, agent_id: Any) -> dict[str, Any] | None:
        state = self.states.get(str(agent_id))
        return {"agent_id": str(agent_id), "state": state} if state is not None else None

    async def agent_action(self, agent_id: Any, action: str, reason: str | None = None) -> None:
        agent_id = str(agent_id)
        if action == "pause" and self.states[agent_id] == "paused":
            raise ValueError("agent 2 is already paused")
        self.states[agent_id] = "paused" if action == "pause" else "ready"

    async def supervise(self, supervisor_id: int, agent_id: int, mode: str) -> None:
        self.spied.append((supervisor_id, agent_id, mode))


async def test_a_state_change_on_a_follower_is_made_by_the_leader_and_its_refusal_comes_back_as_it_was() -> None:
    hub = SharedHub()
    users = Users(view(1, UserRole.SUPERVISOR, phone="PJSIP/boss"), view(2, UserRole.AGENT), view(3, UserRole.AGENT))
    acd = LeaderACD()
    leader = AgentService(lambda: acd, users, FakeClock(), node="a")  # type: ignore[arg-type]
    server = AgentRelayServer(hub, leader, users)
    relay = AgentRelay(hub, node="b", timeout_seconds=2, snapshot_max_age_seconds=10)
    follower = AgentService(lambda: None, users, FakeClock(), elsewhere=relay, node="b")  # type: ignore[arg-type]
    wall = hub.subscribe(WALLBOARD)
    await server.start()
    await relay.start()
    try:
        boss, agent3 = users.users[1], users.users[3]
        after = await follower.change_state(boss, 2, AgentAction.PAUSE, "break")
        assert after == {"agent_id": "2", "state": "paused"} and acd.states["2"] == "paused"
        assert users.recorded and users.recorded[0][0] == 2  # recorded once, by the leader
        snap = json.loads(await asyncio.wait_for(wall.get(), 2))
        assert snap["type"] == "snapshot" and snap["acd_node"] == "a"  # the leader published the new picture
        with pytest.raises(Conflict) as refused:  # the leader's refusal (AgentStateRefused): same kind and code
            await follower.change_state(boss, 2, AgentAction.PAUSE, "break")
        assert refused.value.code == AgentStateRefused.code == "illegal_state_change"
        with pytest.raises(Forbidden):  # checked on the follower first (and again on the leader)
            await follower.change_state(agent3, 2, AgentAction.PAUSE, None)
        await follower.supervise(boss, 2, SuperviseMode.LISTEN)
        assert acd.spied == [(1, 2, "listen")] and server.handled == 3
    finally:
        await relay.stop()
        await server.stop()


async def test_a_forged_request_is_checked_on_the_leader_against_the_actors_own_row() -> None:
    hub = SharedHub()
    users = Users(view(2, UserRole.AGENT), view(3, UserRole.AGENT), view(4, UserRole.SUPERVISOR, active=False))
    acd = LeaderACD()
    server = AgentRelayServer(hub, AgentService(lambda: acd, users, FakeClock()), users)  # type: ignore[arg-type]
    replies = hub.subscribe("cluster:agent-reply:x")
    await server.start()
    try:
        for actor in (3, 4, "3"):  # another agent; an inactive supervisor; not even an id
            hub.publish(REQUEST_TOPIC, {"id": str(actor), "reply_to": "cluster:agent-reply:x", "kind": "state",
                                        "actor": actor, "agent_id": 2, "action": "pause", "reason": None})
            reply = json.loads(await asyncio.wait_for(replies.get(), 2))
            assert reply["ok"] is False and reply["error"]["kind"] in ("forbidden", "invalid"), reply
        assert acd.states["2"] == "ready"
    finally:
        await server.stop()


async def test_without_an_answer_from_a_leader_the_request_fails_as_unavailable() -> None:
    hub = SharedHub()
    relay = AgentRelay(hub, node="b", timeout_seconds=0.2, snapshot_max_age_seconds=10)
    await relay.start()
    try:
        with pytest.raises(Unavailable) as err:
            await relay.change_state(view(1, UserRole.SUPERVISOR), 2, AgentAction.READY, None)
        assert err.value.code == "leader_unreachable"
    finally:
        await relay.stop()
    # a node alone (a plain hub, SQLite): nothing to relay to
    plain = AgentRelay(Hub(8), node="solo", timeout_seconds=1, snapshot_max_age_seconds=10)
    await plain.start()
    assert not plain.available
    with pytest.raises(Unavailable) as err:
        await plain.change_state(view(1, UserRole.SUPERVISOR), 2, AgentAction.READY, None)
    assert err.value.code == "acd_unavailable"


async def test_a_followers_wallboard_shows_the_leaders_latest_picture() -> None:
    hub = SharedHub()
    relay = AgentRelay(hub, node="b", timeout_seconds=1, snapshot_max_age_seconds=10)
    users = Users(view(2, UserRole.AGENT))
    follower = AgentService(lambda: None, users, FakeClock(), elsewhere=relay, node="b")  # type: ignore[arg-type]
    assert follower.snapshot()["acd"] == "unavailable" and follower.agent_entry(2) is None
    with pytest.raises(Unavailable):
        follower.queue()
    hub.snapshot = {"type": "snapshot", "queue": [{"caller": "+86138"}], "agents": [{"agent_id": "2", "state": "ready"}],
                    "figures": {"waiting": 1}, "acd": "running", "acd_node": "a"}
    snap = follower.snapshot()
    assert snap["acd_node"] == "a" and snap["queue"] == [{"caller": "+86138"}] and "type" not in snap
    assert follower.agent_entry(2) == {"agent_id": "2", "state": "ready"}
    assert follower.queue()["queue"] == [{"caller": "+86138"}] and not follower.running


# ------------------------------------------------------------------ transfers relayed to the leader


class LeaderTransfers:
    """The leader's call distribution as its CallService sees it (the TransferControl port)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def transfer_targets(self) -> dict[str, Any]:
        return {"agents": [{"agent_id": "3", "name": "U3"}], "skills": [], "departments": []}

    async def transfer(self, uniqueid: str, kind: str, target: dict[str, str], *, actor_agent_id: str,
                       actor_login: str, supervisor: bool) -> dict[str, Any]:
        if uniqueid != "1700000000.1":
            raise UnknownCall(f"no call {uniqueid} is connected to an agent here")
        if actor_agent_id != "2" and not supervisor:
            raise TransferForbidden("only the agent on the call or a supervisor may transfer it")
        self.calls.append(("transfer", uniqueid, kind, target, actor_agent_id))
        return {"uniqueid": uniqueid, "kind": kind, "target": target, "state": "ringing"}

    async def transfer_complete(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> dict[str, Any]:
        self.calls.append(("complete", uniqueid, actor_agent_id))
        return {"uniqueid": uniqueid, "state": "completed", "target": {"agent": "3"}}

    async def transfer_cancel(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> dict[str, Any]:
        raise TransferRefused("no consultation in progress on this call")


async def test_a_transfer_on_a_follower_is_made_by_the_leader_and_its_refusal_comes_back_as_it_was() -> None:
    hub = SharedHub()
    users = Users(view(2, UserRole.AGENT), view(3, UserRole.AGENT))
    acd = LeaderTransfers()
    server = AgentRelayServer(hub, AgentService(lambda: None, users, FakeClock()), users,  # type: ignore[arg-type]
                              calls=CallService(lambda: acd))
    relay = AgentRelay(hub, node="b", timeout_seconds=2, snapshot_max_age_seconds=10)
    follower = CallService(lambda: None, elsewhere=relay)
    await server.start()
    await relay.start()
    try:
        agent2, agent3 = users.users[2], users.users[3]
        assert (await follower.targets(agent2))["agents"] == [{"agent_id": "3", "name": "U3"}]
        out = await follower.transfer(agent2, "1700000000.1", "attended", {"agent": "3"})
        assert out["state"] == "ringing"
        assert acd.calls == [("transfer", "1700000000.1", "attended", {"agent": "3"}, "2")]
        assert (await follower.complete(agent2, "1700000000.1"))["state"] == "completed"
        with pytest.raises(Conflict) as refused:
            await follower.cancel(agent2, "1700000000.1")
        assert refused.value.code == TransferRefused.code
        with pytest.raises(Forbidden) as forbidden:  # the leader checks the actor: another agent's call
            await follower.transfer(agent3, "1700000000.1", "blind", {"agent": "2"})
        assert forbidden.value.code == TransferForbidden.code
        with pytest.raises(NotFound) as unknown:
            await follower.transfer(agent2, "1700000000.9", "blind", {"skill": "plumbing"})
        assert unknown.value.code == UnknownCall.code
        assert len(acd.calls) == 2 and server.handled == 6
    finally:
        await relay.stop()
        await server.stop()


async def test_a_forged_transfer_request_is_checked_on_the_leader() -> None:
    hub = SharedHub()
    users = Users(view(2, UserRole.AGENT), view(4, UserRole.SUPERVISOR, active=False))
    acd = LeaderTransfers()
    server = AgentRelayServer(hub, AgentService(lambda: None, users, FakeClock()), users,  # type: ignore[arg-type]
                              calls=CallService(lambda: acd))
    replies = hub.subscribe("cluster:agent-reply:x")
    base = {"kind": "transfer", "actor": 2, "uniqueid": "1700000000.1", "transfer_kind": "blind",
            "target": {"agent": "3"}}
    forged = [
        {"actor": 4},  # an inactive supervisor
        {"actor": "2"},  # not an id
        {"uniqueid": "1700000000.1;Action: Originate"},
        {"transfer_kind": "park"},
        {"target": {"agent": 3}},
        {"target": {"agent": "3", "skill": "x"}},
        {"kind": "transfer_park"},
    ]
    await server.start()
    try:
        for i, change in enumerate(forged):
            hub.publish(REQUEST_TOPIC, {**base, **change, "id": str(i), "reply_to": "cluster:agent-reply:x"})
            reply = json.loads(await asyncio.wait_for(replies.get(), 2))
            assert reply["ok"] is False and reply["error"]["kind"] in ("forbidden", "invalid"), (change, reply)
        assert acd.calls == []
    finally:
        await server.stop()


async def test_a_transfer_on_a_node_alone_without_distribution_is_refused_as_unavailable() -> None:
    plain = AgentRelay(Hub(8), node="solo", timeout_seconds=1, snapshot_max_age_seconds=10)
    await plain.start()
    calls = CallService(lambda: None, elsewhere=plain)
    with pytest.raises(Unavailable) as err:
        await calls.transfer(view(2, UserRole.AGENT), "1700000000.1", "blind", {"agent": "3"})
    assert err.value.code == TransfersUnavailable.code


@pytest.mark.parametrize("script", ["transfer", "consult"])
async def test_a_follower_passes_a_transferred_caller_and_a_consultation_leg_to_the_leader(script: str) -> None:
    class Env:
        def __init__(self, name: str) -> None:
            self.script = name

    class Nothing:
        async def run(self, ch: Any) -> None:
            raise AssertionError("not for this script")

    running, elector = Running(), Elector()
    router = _agi_router(running, Nothing(), Nothing(), on_follower_call=elector.try_now,  # type: ignore[arg-type]
                         follower_pass=FollowerPass(elector))
    handler = router(Env(script))
    first_try = FakeChannel(variables={"CALLCENTRE_AGI2": "b:4573", "CC_AGI": "a:4573"})
    await handler(first_try)
    assert [op for op in first_try.ops if op[0] != "get_variable"] == [("set_variable", "CC_RESULT", "pass")]
    # the second try (this node is the dialplan's second server): nothing to pass to, nothing set,
    # so the dialplan's own fallback follows (a person for the caller, "told" for the agent)
    second_try = FakeChannel(uniqueid="2.2", variables={"CC_AGI2": "a:4573"})
    await handler(second_try)
    assert [op for op in second_try.ops if op[0] != "get_variable"] == []
