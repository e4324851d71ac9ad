"""Desk users: their roles, what the browser sees of them, and who may see or do what.

Agents take calls and see their own screen-pops; supervisors watch the wallboard and the reports,
listen in, and may pause or unpause an agent; administrators may do what supervisors do; the quality
department (品质部) reads tickets, the call history and call recordings, and controls no agent. Pure: the
rules take users and return or raise, so the web layer, the CLI and the tests ask the same place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from callcentre.domain.errors import Conflict, Forbidden, Invalid, NotFound


class UserRole(str, enum.Enum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    QUALITY = "quality"  # reads tickets, calls and recordings; no agent control, no desk


EVERYONE = (UserRole.AGENT, UserRole.SUPERVISOR, UserRole.ADMIN)  # the desk's staff (not the quality department)
SUPERVISORS = (UserRole.SUPERVISOR, UserRole.ADMIN)
ALL_USERS = (*EVERYONE, UserRole.QUALITY)  # anyone who may log in
READERS = ALL_USERS  # who may read tickets (and the call history: see RECORDING_LISTENERS)
RECORDING_LISTENERS = (UserRole.SUPERVISOR, UserRole.ADMIN, UserRole.QUALITY)
"""Who may hear call recordings and read the call history. Not agents, not even their own calls: a
recording holds the owner's voice and what they said, and reviewing calls is the quality department's
and the supervisors' work; an agent who needs a call back asks them."""


class UserInvalid(Invalid):
    """A user record cannot be created as given; the message names the field."""

    code = "invalid_user"


class UserExists(UserInvalid):
    pass


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as the desk sees it: never the password hash."""

    id: int
    login: str
    name: str
    role: UserRole
    active: bool
    interface: str | None
    skills: tuple[str, ...]
    languages: tuple[str, ...]
    senior: bool
    supervisor_interface: str | None

    def public(self) -> dict[str, Any]:
        """What the browser is told about a user."""
        return {
            "id": self.id,
            "login": self.login,
            "name": self.name,
            "role": self.role.value,
            "skills": list(self.skills),
            "languages": list(self.languages),
            "senior": self.senior,
        }


# --- what a desk user may ask of call distribution ----------------------------------------------
# The browser only ever picks an agent and one of these fixed actions or modes; the ACD adapter turns
# them into AMI actions, so nothing a browser sends becomes an application name or its data.


class AgentAction(str, enum.Enum):
    LOGIN = "login"
    READY = "ready"
    PAUSE = "pause"
    END_WRAPUP = "end_wrapup"
    LOGOUT = "logout"


class SuperviseMode(str, enum.Enum):
    LISTEN = "listen"  # ChanSpy option q
    WHISPER = "whisper"  # ChanSpy option w
    BARGE = "barge"  # ChanSpy option B


# What a supervisor may do to another agent's state.
SUPERVISOR_ACTIONS = frozenset({AgentAction.PAUSE, AgentAction.READY})


class NotAnAgent(NotFound):
    """The user named is not an (active) agent."""

    code = "unknown_agent"


class AgentStateRefused(Conflict):
    """Call distribution refused the state change in the agent's current state."""

    code = "illegal_state_change"


class SuperviseRefused(Conflict):
    """Listening, whispering or barging is not possible now (the agent is not on a call, …)."""

    code = "supervise_refused"


class NoSupervisorPhone(Conflict):
    code = "no_supervisor_phone"


# --- who may see or do what ------------------------------------------------------------------------


def home_page(user: UserView) -> str:
    """Where a user lands after logging in."""
    if user.role is UserRole.QUALITY:
        return "/calls"
    return "/agent" if user.role is UserRole.AGENT else "/wallboard"


def sees_supervisor_pages(user: UserView) -> bool:
    """The wallboard and the reports are for supervisors and administrators."""
    return user.role in SUPERVISORS


def may_hear_recordings(user: UserView) -> bool:
    return user.role in RECORDING_LISTENERS


def check_recordings(actor: UserView) -> None:
    """Call recordings and the call history are for supervisors, administrators and the quality department."""
    if not may_hear_recordings(actor):
        raise Forbidden("call recordings are for supervisors and the quality department")


def is_active_agent(user: UserView | None) -> bool:
    return user is not None and user.role is UserRole.AGENT and user.active


def check_state_change(actor: UserView, agent_id: int, action: AgentAction) -> None:
    """An agent changes only their own state; a supervisor may pause or unpause another agent; the
    quality department changes nobody's."""
    if actor.role is UserRole.QUALITY:
        raise Forbidden("the quality department does not control agents")
    if actor.role is UserRole.AGENT and agent_id != actor.id:
        raise Forbidden("an agent may change only their own state")
    if actor.role is UserRole.SUPERVISOR and agent_id != actor.id and action not in SUPERVISOR_ACTIONS:
        raise Forbidden("a supervisor may pause or unpause another agent, nothing else")


def state_change_reason(actor: UserView, agent_id: int, action: AgentAction, reason: str | None) -> str | None:
    """The reason kept in the agent's state history: who did it, when it was not the agent."""
    if actor.id == agent_id:
        return reason
    return f"{reason or action.value} by {actor.login}"[:64]


def check_screen_pops(actor: UserView, agent_id: int) -> None:
    """An agent receives only their own screen-pops; supervisors may watch any agent's."""
    if agent_id != actor.id and actor.role is UserRole.AGENT:
        raise Forbidden("an agent receives only their own screen-pops")


__all__ = [
    "ALL_USERS", "READERS", "RECORDING_LISTENERS", "check_recordings", "may_hear_recordings",
    "EVERYONE", "SUPERVISORS", "SUPERVISOR_ACTIONS", "AgentAction", "AgentStateRefused", "NoSupervisorPhone",
    "NotAnAgent", "SuperviseMode", "SuperviseRefused", "UserExists", "UserInvalid", "UserRole", "UserView",
    "check_screen_pops", "check_state_change", "home_page", "is_active_agent", "sees_supervisor_pages",
    "state_change_reason",
]
