"""Agents at the desk: their live states, changing one, and a supervisor listening in.

Entry, precondition checks, effect (as Wazo's agent handlers): who may do it is the domain's
(:mod:`callcentre.domain.users`), whether call distribution accepts it is the ACD's, and the change
is then kept in the agent's state history. Call distribution is asked for each time (it may be off,
or not started yet), never held.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

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


class Elsewhere(Protocol):
    """Call distribution on another node (the cluster's leader; callcentre.cluster.relay.AgentRelay)."""

    @property
    def available(self) -> bool: ...

    def snapshot(self) -> dict[str, Any] | None: ...

    async def change_state(self, actor: UserView, agent_id: int, action: AgentAction,
                           reason: str | None) -> dict[str, Any] | None: ...

    async def supervise(self, actor: UserView, agent_id: int, mode: SuperviseMode) -> None: ...


class AgentService:
    def __init__(self, acd: Callable[[], ACDControl | None], users: UsersRepo, clock: Clock, *,
                 elsewhere: Elsewhere | None = None, node: str | None = None) -> None:
        """``elsewhere``: where requests go when call distribution does not run on this node (another
        node leads); ``node``: this node's name, put on the snapshots its own distribution makes."""
        self._acd = acd
        self._users = users
        self._clock = clock
        self._elsewhere = elsewhere
        self._node = node

    @property
    def running(self) -> bool:
        """Is call distribution running (it is off with ``acd.enabled: false``)?"""
        return self._acd() is not None

    def server_time(self) -> str:
        """Sent with every snapshot: pages measure time in state against the server's clock, not their own."""
        return self._clock.now().isoformat()

    def _remote(self) -> dict[str, Any] | None:
        """The leader's latest snapshot when call distribution runs on another node (None: none recent)."""
        return self._elsewhere.snapshot() if self._elsewhere is not None else None

    def snapshot(self) -> dict[str, Any]:
        """The wallboard's picture: queue, agents, figures, alerts (empty, marked unavailable, without an ACD).

        On a node that does not run call distribution, the leader's latest picture (``acd_node`` names
        the node it came from)."""
        acd = self._acd()
        if acd is None:
            remote = self._remote()
            if remote is not None:
                snap = {k: v for k, v in remote.items() if k != "type"}
                snap["server_time"] = self.server_time()
                return snap
            return {"queue": [], "agents": [], "figures": {}, "alerts": [], "acd": "unavailable",
                    "server_time": self.server_time()}
        snap = dict(acd.snapshot())
        snap.setdefault("acd", "running")
        if self._node is not None:
            snap["acd_node"] = self._node
        snap["server_time"] = self.server_time()
        return snap

    def agent_entry(self, agent_id: int) -> dict[str, Any] | None:
        """One agent's line of the snapshot, None without an ACD or when it does not know the agent."""
        acd = self._acd()
        if acd is not None:
            return acd.agent_entry(agent_id)
        remote = self._remote()  # the leader's picture, when another node runs call distribution
        if remote is None:
            return None
        return next((a for a in remote.get("agents", []) if str(a.get("agent_id")) == str(agent_id)), None)

    def _running(self) -> ACDControl:
        acd = self._acd()
        if acd is None:
            raise Unavailable("call distribution is not running", code="acd_unavailable")
        return acd

    def _readable(self) -> None:
        """The queue and the agents can be shown: distribution runs here, or the leader's picture is recent."""
        if self._acd() is None and self._remote() is None:
            self._running()

    def queue(self) -> dict[str, Any]:
        self._readable()
        snap = self.snapshot()
        return {"queue": snap.get("queue", []), "figures": snap.get("figures", {})}

    def agents(self) -> dict[str, Any]:
        self._readable()
        snap = self.snapshot()
        return {"agents": snap.get("agents", []), "alerts": snap.get("alerts", [])}

    def _relayed(self) -> Elsewhere | None:
        """Where a change goes when call distribution runs on another node (None: it runs here, or nowhere)."""
        if self._acd() is None and self._elsewhere is not None and self._elsewhere.available:
            return self._elsewhere
        return None

    async def change_state(self, actor: UserView, agent_id: int, action: AgentAction,
                           reason: str | None) -> dict[str, Any] | None:
        """Change an agent's state (log in, ready, pause, end wrap-up, log out); returns their new line."""
        check_state_change(actor, agent_id, action)
        # An agent's own click: the actor was read from the database for this very request.
        target = actor if actor.id == agent_id else await self._users.get(agent_id)
        if not is_active_agent(target):
            raise NotAnAgent(f"no active agent {agent_id}")
        relay = self._relayed()
        if relay is not None:  # recorded by the leader, where the change is made
            return await relay.change_state(actor, agent_id, action, reason)
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
        relay = self._relayed()
        if relay is not None:
            await relay.supervise(actor, agent_id, mode)
            return
        acd = self._running()
        try:
            await acd.supervise(actor.id, agent_id, mode.value)
        except ValueError as e:  # the ACD port's way of saying "not possible now"
            raise SuperviseRefused(str(e) or "the agent is not on a call") from None
        log.info("supervision started", agent_id=agent_id, mode=mode.value, by=actor.login)


__all__ = ["AgentService"]
