"""Agents at the desk: their live states, changing one, and a supervisor listening in.

Entry, precondition checks, effect (as Wazo's agent handlers): who may do it is the domain's
(:mod:`callcentre.domain.users`), whether call distribution accepts it is the ACD's, and the change
is then kept in the agent's state history. Call distribution is asked for each time (it may be off,
or not started yet), never held.
"""

from __future__ import annotations

from typing import Any, Callable

import structlog

from callcentre.domain.errors import Unavailable
from callcentre.domain.ports import ACDControl, Clock
from callcentre.domain.users import (
    AgentAction,
    AgentStateRefused,
    NoSupervisorPhone,
    NotAnAgent,
    SuperviseMode,
    SuperviseRefused,
    UserRole,
    UserView,
    check_state_change,
    is_active_agent,
    state_change_reason,
)
from callcentre.storage.users_repo import UsersRepo

log = structlog.get_logger(__name__)


class AgentService:
    def __init__(self, acd: Callable[[], ACDControl | None], users: UsersRepo, clock: Clock) -> None:
        self._acd = acd
        self._users = users
        self._clock = clock

    @property
    def running(self) -> bool:
        """Is call distribution running (it is off with ``acd.enabled: false``)?"""
        return self._acd() is not None

    def server_time(self) -> str:
        """Sent with every snapshot: pages measure time in state against the server's clock, not their own."""
        return self._clock.now().isoformat()

    def snapshot(self) -> dict[str, Any]:
        """The wallboard's picture: queue, agents, figures, alerts (empty, marked unavailable, without an ACD)."""
        acd = self._acd()
        if acd is None:
            return {"queue": [], "agents": [], "figures": {}, "alerts": [], "acd": "unavailable",
                    "server_time": self.server_time()}
        snap = dict(acd.snapshot())
        snap.setdefault("acd", "running")
        snap["server_time"] = self.server_time()
        return snap

    def agent_entry(self, agent_id: int) -> dict[str, Any] | None:
        """One agent's line of the snapshot, None without an ACD or when it does not know the agent."""
        acd = self._acd()
        if acd is None:
            return None
        return acd.agent_entry(agent_id)

    def _running(self) -> ACDControl:
        acd = self._acd()
        if acd is None:
            raise Unavailable("call distribution is not running", code="acd_unavailable")
        return acd

    def queue(self) -> dict[str, Any]:
        self._running()
        snap = self.snapshot()
        return {"queue": snap.get("queue", []), "figures": snap.get("figures", {})}

    def agents(self) -> dict[str, Any]:
        self._running()
        snap = self.snapshot()
        return {"agents": snap.get("agents", []), "alerts": snap.get("alerts", [])}

    async def change_state(self, actor: UserView, agent_id: int, action: AgentAction,
                           reason: str | None) -> dict[str, Any] | None:
        """Change an agent's state (log in, ready, pause, end wrap-up, log out); returns their new line."""
        check_state_change(actor, agent_id, action)
        # An agent's own click: the actor was read from the database for this very request.
        target = actor if actor.id == agent_id else await self._users.get(agent_id)
        if not is_active_agent(target):
            raise NotAnAgent(f"no active agent {agent_id}")
        acd = self._running()
        before = self.agent_entry(agent_id)
        try:
            await acd.agent_action(agent_id, action.value, reason)
        except ValueError as e:  # the ACD port's way of saying "not in this state"
            raise AgentStateRefused(str(e) or f"{action.value} is not possible now") from None
        after = self.agent_entry(agent_id)
        await self._users.record_state(
            agent_id,
            (before or {}).get("state"),
            str((after or {}).get("state") or action.value),
            state_change_reason(actor, agent_id, action, reason),
        )
        log.info("agent state changed", agent_id=agent_id, action=action.value, by=actor.login)
        return after

    async def supervise(self, actor: UserView, agent_id: int, mode: SuperviseMode) -> None:
        """Listen to, whisper to or barge into an agent's call from the supervisor's own phone."""
        if not actor.supervisor_interface:
            raise NoSupervisorPhone("your account has no supervisor phone (supervisor_interface)")
        target = await self._users.get(agent_id)
        if target is None or target.role is not UserRole.AGENT:
            raise NotAnAgent(f"no agent {agent_id}")
        acd = self._running()
        try:
            await acd.supervise(actor.id, agent_id, mode.value)
        except ValueError as e:  # the ACD port's way of saying "not possible now"
            raise SuperviseRefused(str(e) or "the agent is not on a call") from None
        log.info("supervision started", agent_id=agent_id, mode=mode.value, by=actor.login)


__all__ = ["AgentService"]
