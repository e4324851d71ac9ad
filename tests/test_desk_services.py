"""The desk's services (callcentre.service.desk) over fakes: what they check, what they ask call
distribution, what they record, and the domain errors they answer with."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from callcentre.config import Config
from callcentre.domain.errors import Forbidden, Invalid, Unavailable
from callcentre.domain.model import Priority, TicketKind, TicketStatus
from callcentre.domain.ports import FakeClock
from callcentre.domain.users import (
    AgentAction,
    AgentStateRefused,
    NoSupervisorPhone,
    NotAnAgent,
    SuperviseMode,
    SuperviseRefused,
    UserRole,
    UserView,
)
from callcentre.service.desk.agents import AgentService
from callcentre.service.desk.tickets import DeskTicketService, TicketChange
from callcentre.service.reports import day_bounds, month_bounds


def _user(uid: int, role: UserRole, *, phone: str | None = None, active: bool = True) -> UserView:
    return UserView(id=uid, login=f"u{uid}", name=f"User {uid}", role=role, active=active, interface=None, skills=(),
                    languages=(), senior=False, supervisor_interface=phone)


AGENT = _user(1, UserRole.AGENT)
SUP = _user(3, UserRole.SUPERVISOR, phone="PJSIP/sup1")


class FakeUsers:
    def __init__(self, *users: UserView) -> None:
        self.users = {u.id: u for u in users}
        self.recorded: list[tuple[int, str | None, str, str | None]] = []

    async def get(self, user_id: int) -> UserView | None:
        return self.users.get(user_id)

    async def record_state(self, agent_id: int, from_state: str | None, to_state: str, reason: str | None) -> None:
        self.recorded.append((agent_id, from_state, to_state, reason))


class FakeACD:
    def __init__(self, refuse: str | None = None) -> None:
        self.state = "paused"
        self.refuse = refuse
        self.asked: list[tuple[Any, ...]] = []

    def snapshot(self) -> dict[str, Any]:
        return {"queue": [{"call_id": "c1"}], "agents": [{"agent_id": "1", "state": self.state}], "figures": {"waiting": 1},
                "alerts": []}

    def agent_entry(self, agent_id: int) -> dict[str, Any] | None:
        return next((a for a in self.snapshot()["agents"] if a["agent_id"] == str(agent_id)), None)

    async def agent_action(self, agent_id: int, action: str, reason: str | None) -> None:
        self.asked.append(("action", agent_id, action, reason))
        if self.refuse is not None:
            raise ValueError(self.refuse)
        self.state = {"ready": "ready", "pause": "paused"}.get(action, self.state)

    async def supervise(self, supervisor_id: int, agent_id: int, mode: str) -> None:
        self.asked.append(("supervise", supervisor_id, agent_id, mode))
        if self.refuse is not None:
            raise ValueError(self.refuse)


def _agents(acd: FakeACD | None, users: FakeUsers) -> AgentService:
    return AgentService(lambda: acd, users, FakeClock(datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)))  # type: ignore[arg-type]


async def test_a_state_change_is_checked_asked_and_recorded_with_who_did_it() -> None:
    acd, users = FakeACD(), FakeUsers(AGENT, SUP)
    after = await _agents(acd, users).change_state(SUP, 1, AgentAction.READY, None)
    assert after == {"agent_id": "1", "state": "ready"}
    assert acd.asked == [("action", 1, "ready", None)]
    assert users.recorded == [(1, "paused", "ready", "ready by u3")]


async def test_a_refused_state_change_says_why_or_what() -> None:
    users = FakeUsers(AGENT)
    with pytest.raises(AgentStateRefused, match="^agent is on a call$"):
        await _agents(FakeACD(refuse="agent is on a call"), users).change_state(AGENT, 1, AgentAction.LOGOUT, None)
    with pytest.raises(AgentStateRefused, match="^end_wrapup is not possible now$"):  # the ACD gave no reason
        await _agents(FakeACD(refuse=""), users).change_state(AGENT, 1, AgentAction.END_WRAPUP, None)
    assert users.recorded == []  # nothing happened, nothing recorded


async def test_role_and_target_are_checked_before_call_distribution_is_asked() -> None:
    acd = FakeACD()
    users = FakeUsers(AGENT, SUP, _user(2, UserRole.AGENT, active=False))
    service = _agents(acd, users)
    with pytest.raises(Forbidden):
        await service.change_state(SUP, 1, AgentAction.LOGOUT, None)
    with pytest.raises(NotAnAgent, match="no active agent 2"):
        await service.change_state(SUP, 2, AgentAction.PAUSE, "break")
    with pytest.raises(NotAnAgent, match="no active agent 3"):
        await service.change_state(SUP, 3, AgentAction.READY, None)  # a supervisor is not an agent
    assert acd.asked == []


async def test_without_call_distribution() -> None:
    service = _agents(None, FakeUsers(AGENT))
    assert not service.running and service.agent_entry(1) is None
    assert service.snapshot() == {"queue": [], "agents": [], "figures": {}, "alerts": [], "acd": "unavailable",
                                  "server_time": "2026-11-24T02:00:00+00:00"}
    for ask in (service.queue, service.agents):
        with pytest.raises(Unavailable) as off:
            ask()
        assert off.value.code == "acd_unavailable"
    with pytest.raises(Unavailable):
        await service.change_state(AGENT, 1, AgentAction.READY, None)


async def test_supervision_needs_a_phone_an_agent_and_a_call() -> None:
    acd = FakeACD()
    service = _agents(acd, FakeUsers(AGENT, SUP))
    with pytest.raises(NoSupervisorPhone):
        await service.supervise(_user(4, UserRole.SUPERVISOR), 1, SuperviseMode.LISTEN)
    with pytest.raises(NotAnAgent, match="no agent 3"):
        await service.supervise(SUP, 3, SuperviseMode.LISTEN)
    await service.supervise(SUP, 1, SuperviseMode.WHISPER)
    assert acd.asked == [("supervise", 3, 1, "whisper")]
    acd.refuse = ""
    with pytest.raises(SuperviseRefused, match="^the agent is not on a call$"):
        await service.supervise(SUP, 1, SuperviseMode.BARGE)


def test_categories_and_the_priority_they_imply() -> None:
    tickets = DeskTicketService(None, None, Config(), FakeClock())  # type: ignore[arg-type]
    cats = tickets.categories()
    assert {"code": "water", "priority": "general"} in cats["repair"] and cats["enquiry"] == [{"code": "general", "priority": "general"}]
    assert tickets.category_priority(TicketKind.EMERGENCY, "gas") is Priority.MAJOR
    assert tickets.category_priority(TicketKind.REPAIR, "water") is Priority.GENERAL
    assert tickets.category_priority(TicketKind.ENQUIRY, "parking") is None  # free categories for enquiries
    with pytest.raises(Invalid) as unknown:
        tickets.category_priority(TicketKind.REPAIR, "gas")
    assert unknown.value.code == "invalid_category" and "unknown repair category 'gas'" in str(unknown.value)


async def test_a_status_change_without_the_ticket_lifecycle_is_refused_as_starting() -> None:
    tickets = DeskTicketService(None, None, Config(), FakeClock())  # type: ignore[arg-type]
    with pytest.raises(Unavailable) as starting:
        await tickets.update(AGENT, "R20261124-0001", TicketChange(status=TicketStatus.ACKNOWLEDGED))
    assert starting.value.code == "starting"


def test_report_bounds_are_local_days_and_months_in_utc() -> None:
    utc = timezone.utc
    assert day_bounds(date(2026, 11, 24), "Asia/Shanghai") == (
        datetime(2026, 11, 23, 16, 0, tzinfo=utc), datetime(2026, 11, 24, 16, 0, tzinfo=utc))
    assert month_bounds(2026, 12, "Asia/Shanghai") == (
        datetime(2026, 11, 30, 16, 0, tzinfo=utc), datetime(2026, 12, 31, 16, 0, tzinfo=utc))
