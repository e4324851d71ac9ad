"""Two servers as ``callcentre serve`` builds them (build_app), in one process, on one real PostgreSQL.

What must hold: the first leads and runs call distribution, the second follows and does not; the
follower's wallboard shows the leader's picture and an agent state change made on the follower is
made by the leader's distribution; /health and /metrics name the role; when the leader stops, the
follower leads with a fresh distribution that has the agent's state from the database, a new term,
and the old term's leader-only writes are refused. (The real PBX and a SIGKILL:
tests/pbx/test_pbx_two_nodes.py.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callcentre.app import SERVICES, build_app
from callcentre.cluster.node import ROLE, LeaderGate
from callcentre.cluster.notify import ClusterHub
from callcentre.config import load_config
from callcentre.domain.errors import NotFound
from callcentre.domain.transfers import UnknownCall
from callcentre.domain.users import AgentAction
from callcentre.storage.db import upgrade
from callcentre.storage.users_repo import create_user
from tests.cluster_support import pg_url, postgres_only

pytestmark = postgres_only

FAST = {"CALLCENTRE_CLUSTER__RETRY_SECONDS": "0.2", "CALLCENTRE_CLUSTER__HEARTBEAT_SECONDS": "0.2",
        "CALLCENTRE_CLUSTER__HEARTBEAT_TIMEOUT_SECONDS": "0.5", "CALLCENTRE_CLUSTER__LEASE_SECONDS": "3"}


class Node:
    def __init__(self, url: str, name: str, tmp: Path, config: Path) -> None:
        env = {"CALLCENTRE_DATABASE__URL": url, "CALLCENTRE_AMI__ENABLED": "false", "CALLCENTRE_AGI__PORT": "0",
               "CALLCENTRE_CLUSTER__NODE_NAME": name, "CALLCENTRE_IVR__RECORD_DIR": str(tmp / "rec"), **FAST}
        self.cfg = load_config(config, environ=env)
        self.app = build_app(self.cfg)
        self.services = self.app[SERVICES]
        self.runner = web.AppRunner(self.app)
        self.url = ""
        self.stopped = False

    async def start(self) -> "Node":
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(self.url + path) as r:
            return r.status, (await r.json() if path == "/health" else await r.text())

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


async def until(what: str, check: Any, limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not check():
        assert loop.time() < end, f"not within {limit} s: {what}"
        await asyncio.sleep(0.05)


async def test_one_leads_the_other_follows_relays_and_takes_over_with_the_state_from_the_database(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("acd:\n  wrapup_seconds: 1\n  agents:\n"
                      "    - {id: agent1, name: Agent One, interface: PJSIP/agent1, start: ready}\n")
    await upgrade(url, progress=None)
    a = await Node(url, "a", tmp_path, config).start()
    b: Node | None = None
    try:
        assert a.services.node.role == "leader" and a.services.acd is not None
        assert isinstance(a.services.hub, ClusterHub)
        b = await Node(url, "b", tmp_path, config).start()
        assert b.services.node.role == "follower" and b.services.acd is None
        assert b.services.node.status()["leader_node"] == "a"
        boss = await create_user(a.services.session_factory, "boss", "Boss", "supervisor", "boss-password-123")
        agent = await a.services.users.by_login("agent1")
        assert agent is not None

        status, health = await b.get("/health")
        assert status == 200 and (health["node"]["name"], health["node"]["role"]) == ("b", "follower"), health
        status, health = await a.get("/health")
        a_term = health["node"]["term"]
        assert (health["node"]["role"], a_term) == ("leader", a.services.elector.term) and a_term >= 1
        _, metrics = await a.get("/metrics")
        assert 'callcentre_cluster_leader{node="a"} 1.0' in metrics and f"callcentre_cluster_term {float(a_term)}" in metrics
        _, metrics = await b.get("/metrics")
        assert 'callcentre_cluster_leader{node="b"} 0.0' in metrics

        # The follower shows the leader's picture (published every change, over NOTIFY) ...
        b_agents = b.services.desk_services.agents
        await until("the leader's snapshot on the follower", lambda: b_agents.snapshot().get("acd_node") == "a")
        assert b_agents.agent_entry(agent.id)["state"] == "ready"
        # ... and a state change made there is made by the leader's distribution.
        after = await b_agents.change_state(boss, agent.id, AgentAction.PAUSE, "lunch")
        assert after is not None and after["state"] == "paused"
        assert a.services.acd.dist.agent_state(str(agent.id)).value == "paused"
        await until("the follower's picture updated", lambda: b_agents.agent_entry(agent.id)["state"] == "paused")
        # A transfer made there is the leader's too: its targets, and its refusal of a call it does not hold.
        b_calls = b.services.desk_services.calls
        targets = await b_calls.targets(boss)
        assert [t["agent_id"] for t in targets["agents"]] == [str(agent.id)], targets
        with pytest.raises(NotFound) as unknown:  # UnknownCall on the leader, the same code here
            await b_calls.transfer(boss, "1700000000.1", "blind", {"agent": str(agent.id)})
        assert unknown.value.code == UnknownCall.code

        # Leader-only writes pass the fence with the current term only.
        async with a.services.session_factory() as s, s.begin():
            assert await a.services.leader_parts.gate.allows(s) is True

        await a.stop()  # a clean stop: the parts stop, then the lock is let go
        await until("the follower leads", lambda: b.services.acd is not None, 10)
        assert b.services.node.role == "leader" and b.services.elector.term > a_term
        # a fresh distribution, the agent's state rebuilt from the history the leader wrote
        assert b.services.acd is not a.services.distribution
        assert b.services.acd.dist.agent_state(str(agent.id)).value == "paused"
        await until("the new leader's own picture", lambda: b_agents.snapshot().get("acd_node") == "b")
        stale = LeaderGate(ROLE, postgres=True)
        stale.term = a_term
        async with b.services.session_factory() as s, s.begin():
            assert await stale.allows(s) is False  # the old leader's term is refused
            assert await b.services.leader_parts.gate.allows(s) is True
    finally:
        if b is not None:
            await b.stop()
        await a.stop()
