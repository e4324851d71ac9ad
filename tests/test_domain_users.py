"""Who may see or do what at the desk (callcentre.domain.users): pure rules, asked by the web and services."""

from __future__ import annotations

import pytest

from callcentre.domain.errors import Forbidden
from callcentre.domain.users import (
    AgentAction,
    UserRole,
    UserView,
    check_screen_pops,
    check_state_change,
    home_page,
    is_active_agent,
    sees_supervisor_pages,
    state_change_reason,
)


def _user(uid: int, role: UserRole, *, active: bool = True, login: str | None = None) -> UserView:
    return UserView(id=uid, login=login or f"u{uid}", name=f"User {uid}", role=role, active=active, interface=None,
                    skills=(), languages=(), senior=False, supervisor_interface=None)


AGENT, OTHER_AGENT = _user(1, UserRole.AGENT), _user(2, UserRole.AGENT)
SUP, ADMIN = _user(3, UserRole.SUPERVISOR, login="sup"), _user(4, UserRole.ADMIN, login="boss")


@pytest.mark.parametrize("user, home, supervisor_pages", [
    (AGENT, "/agent", False), (SUP, "/wallboard", True), (ADMIN, "/wallboard", True),
])
def test_where_each_role_lands_and_what_it_sees(user: UserView, home: str, supervisor_pages: bool) -> None:
    assert home_page(user) == home
    assert sees_supervisor_pages(user) is supervisor_pages


@pytest.mark.parametrize("actor, agent_id, action, allowed", [
    (AGENT, 1, AgentAction.LOGOUT, True),        # their own state: anything
    (AGENT, 2, AgentAction.READY, False),        # another agent's: nothing
    (SUP, 1, AgentAction.PAUSE, True),           # a supervisor pauses or unpauses another agent
    (SUP, 1, AgentAction.READY, True),
    (SUP, 1, AgentAction.LOGOUT, False),         # ... nothing else
    (SUP, 1, AgentAction.END_WRAPUP, False),
    (SUP, 3, AgentAction.LOGOUT, True),          # their own
    (ADMIN, 1, AgentAction.LOGOUT, True),        # an administrator may
])
def test_who_may_change_an_agents_state(actor: UserView, agent_id: int, action: AgentAction, allowed: bool) -> None:
    if allowed:
        check_state_change(actor, agent_id, action)
    else:
        with pytest.raises(Forbidden) as refused:
            check_state_change(actor, agent_id, action)
        assert refused.value.code == "forbidden" and str(refused.value)


def test_screen_pops_are_the_agents_own_and_supervisors_may_watch_any() -> None:
    check_screen_pops(AGENT, 1)
    check_screen_pops(SUP, 1)
    check_screen_pops(ADMIN, 2)
    with pytest.raises(Forbidden, match="only their own screen-pops"):
        check_screen_pops(AGENT, 2)


def test_the_state_history_says_who_changed_another_agents_state() -> None:
    assert state_change_reason(AGENT, 1, AgentAction.PAUSE, "lunch") == "lunch"
    assert state_change_reason(AGENT, 1, AgentAction.READY, None) is None
    assert state_change_reason(SUP, 1, AgentAction.PAUSE, "break") == "break by sup"
    assert state_change_reason(SUP, 1, AgentAction.READY, None) == "ready by sup"
    long_login = _user(5, UserRole.SUPERVISOR, login="s" * 64)
    assert len(state_change_reason(long_login, 1, AgentAction.PAUSE, "lunch") or "") == 64  # the column's width


def test_an_active_agent() -> None:
    assert is_active_agent(AGENT)
    assert not is_active_agent(_user(6, UserRole.AGENT, active=False))
    assert not is_active_agent(SUP) and not is_active_agent(None)
