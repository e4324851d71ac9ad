"""The agents of call distribution, as the users table holds them.

:class:`AgentRoster` loads them at start-up (creating the agents listed in ``config.yaml`` that are not
in the table yet, and rebuilding each agent's state from the last recorded change), refreshes them
while the server runs (``callcentre user add`` joins without a restart), writes state changes back
for the reports, and finds a supervisor's own phone for listening in.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any, Protocol

import structlog

from callcentre.config import Config
from callcentre.domain.acd import Agent, StateChange
from callcentre.domain.ports import Clock, StorageUnavailable
from callcentre.tasks import cancel_and_wait, run_periodically

log = structlog.get_logger("callcentre.app")


class AgentsTarget(Protocol):
    """What the roster feeds (``callcentre.distribution.ACDService``)."""

    def load_agents(self, agents: list[Agent], last_states: dict[str, tuple[str, datetime, str | None]],
                    start_ready: set[str]) -> None: ...

    def sync_agents(self, agents: list[Agent]) -> None: ...


def agent_from_user(u: Any) -> Agent:
    """An agent from a users row (``UserView``); ValueError when its phone or skills cannot be dialled."""
    return Agent(
        agent_id=str(u.id), name=u.name, login=u.login, interface=u.interface, skills=frozenset(u.skills),
        languages=frozenset(u.languages), vip_capable=u.senior, senior=u.senior,
    )


class AgentRoster:
    def __init__(self, users: Any, cfg: Config, session_factory: Any, clock: Clock, *, sync_every: float = 30.0) -> None:
        """``users``: the users repository (``callcentre.storage.users_repo.UsersRepo``)."""
        self.users = users
        self.cfg = cfg
        self._sessions = session_factory
        self.clock = clock
        self.sync_every = sync_every
        self._sync_task: asyncio.Task | None = None

    async def _agents(self, level: str) -> list[Agent]:
        agents: list[Agent] = []
        for u in await self.users.agents():
            if not u.interface:
                continue
            try:
                agents.append(agent_from_user(u))
            except ValueError as exc:
                getattr(log, level)("agent not loaded", login=u.login, error=str(exc))
        return agents

    async def load(self, acd: AgentsTarget) -> None:
        """Agents come from the users table; agents in config.yaml are created there if missing."""
        from callcentre.storage.users_repo import UserExists, UserInvalid, create_user

        users = self.users
        start_ready: set[str] = set()
        for a in self.cfg.acd.agents:
            existing = await users.by_login(a.id)
            if existing is None:
                try:
                    existing = await create_user(
                        self._sessions, a.id, a.name, "agent", secrets.token_urlsafe(24), interface=a.interface,
                        skills=a.skills, languages=a.languages, senior=a.senior, clock=self.clock,
                    )
                    log.info("agent from config.yaml added; set a password to log in", login=a.id,
                             command=f"callcentre user passwd {a.id}")
                except UserExists:
                    existing = await users.by_login(a.id)
                except UserInvalid as exc:
                    log.error("agent in config.yaml refused", login=a.id, error=str(exc))
                    continue
            if existing is not None and a.start == "ready":
                start_ready.add(str(existing.id))
        agents = await self._agents("error")
        last: dict[str, tuple[str, datetime, str | None]] = {}
        for agent in agents:
            try:
                history = await users.state_history(int(agent.agent_id), limit=1)
            except StorageUnavailable:
                history = []
            if history:
                h = history[0]
                at = h["at"] if isinstance(h["at"], datetime) else datetime.fromisoformat(str(h["at"]))
                last[agent.agent_id] = (h["to_state"], at, h.get("reason"))
        acd.load_agents(agents, last, start_ready)
        log.info("agents loaded", agents=len(agents), restored=len(last))

    async def sync_once(self, acd: AgentsTarget) -> None:
        try:
            acd.sync_agents(await self._agents("warning"))
        except StorageUnavailable as exc:
            log.warning("agent list not refreshed", error=str(exc))

    def start(self, acd: AgentsTarget) -> None:
        """Agents created or changed (``callcentre user add``) while the server runs join without a restart."""
        self._sync_task = asyncio.create_task(
            run_periodically("agent-sync", lambda: self.sync_once(acd), self.sync_every, wait_first=True), name="agent-sync",
        )

    async def stop(self) -> None:
        await cancel_and_wait(self._sync_task)
        self._sync_task = None

    async def record_states(self, changes: list[StateChange]) -> None:
        """Agent state changes, for the reports and for rebuilding states after a restart."""
        for c in changes:
            await self.users.record_state(int(c.agent_id), c.from_state.value, c.to_state.value, c.reason or c.event, c.at)

    async def supervisor_phone(self, user_id: int) -> str | None:
        u = await self.users.get(user_id)
        return u.supervisor_interface if u is not None else None


__all__ = ["AgentRoster", "AgentsTarget", "agent_from_user"]
