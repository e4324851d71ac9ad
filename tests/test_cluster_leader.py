"""Leader election over a PostgreSQL advisory lock (callcentre/cluster/leader.py), on a real PostgreSQL.

What must hold: one leader at a time; on_elected / on_demoted in order and never overlapping; a lost
lock session (closed, terminated, cut off by a partition) demotes the leader before another node can be
elected; a stale leader's writes are refused by the fencing term; a SIGKILLed leader process is
replaced by the other process (the issue's bound: within 10 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from callcentre.cluster.config import ClusterConfig
from callcentre.cluster.leader import FencedOut, LocalLeader, PgLeaderElector, check_fence, make_elector
from callcentre.cluster.pg import LOCK_CLASS, asyncpg_dsn, role_key
from callcentre.config import DatabaseConfig
from callcentre.storage.db import create_engine
from tests.cluster_support import PartitionProxy, pg_url, postgres_only

REPO = Path(__file__).resolve().parent.parent
FAST = {"retry_seconds": 0.2, "heartbeat_seconds": 0.2, "heartbeat_timeout_seconds": 0.5, "lease_seconds": 3.0}


class Journal:
    """What every elector's callbacks saw, in the order they ran (one list for all nodes)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, int | None, float]] = []
        self.running: dict[str, bool] = {}

    def callbacks(self, node: str, *, fail_start: bool = False, slow: float = 0.0):
        async def elected(term: int) -> None:
            assert not self.running.get(node), f"{node}: on_elected while its parts already run"
            self.running[node] = True
            self.entries.append((node, "elected", term, time.monotonic()))
            if slow:
                await asyncio.sleep(slow)
            if fail_start:
                raise RuntimeError("the parts did not start")

        async def demoted() -> None:
            assert self.running.get(node), f"{node}: on_demoted without on_elected"
            self.running[node] = False
            self.entries.append((node, "demoted", None, time.monotonic()))

        return {"on_elected": elected, "on_demoted": demoted}

    def seq(self) -> list[tuple[str, str, int | None]]:
        return [(n, what, term) for n, what, term, _ in self.entries]

    def at(self, node: str, what: str, nth: int = 0) -> float:
        return [t for n, w, _, t in self.entries if n == node and w == what][nth]


def elector(url: str, node: str, journal: Journal, role: str = "acd", **kw: Any) -> PgLeaderElector:
    opts = {**FAST, **kw}
    callbacks = journal.callbacks(node, fail_start=opts.pop("fail_start", False), slow=opts.pop("slow", 0.0))
    return PgLeaderElector(asyncpg_dsn(url), role, node=node, **callbacks, **opts)


async def lock_pid(url: str, node: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                   f"callcentre-leader:{node}")
    finally:
        await conn.close()


async def terminate_backend(url: str, pid: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


# ------------------------------------------------------------------ without a server


async def test_local_leader_is_leader_from_start_to_stop_and_fences_old_terms() -> None:
    journal = Journal()
    leader = LocalLeader("acd", node="solo", **journal.callbacks("solo"))
    assert not leader.is_leader and leader.term is None
    await leader.start()
    assert leader.is_leader and leader.term == 1
    await leader.fence(None, 1)
    with pytest.raises(FencedOut):
        await leader.fence(None, 0)
    await leader.stop()
    await leader.start()  # a restart in the same process is a new term
    assert leader.term == 2
    await leader.stop()
    assert journal.seq() == [("solo", "elected", 1), ("solo", "demoted", None),
                             ("solo", "elected", 2), ("solo", "demoted", None)]
    with pytest.raises(FencedOut):
        await leader.fence(None, 2)


def test_make_elector_picks_by_database(tmp_path: Path) -> None:
    cfg = ClusterConfig(node_name="n1")
    j = Journal()
    assert isinstance(make_elector(f"sqlite+aiosqlite:///{tmp_path}/x.db", "acd", cfg, **j.callbacks("n1")), LocalLeader)
    pg = make_elector("postgresql+asyncpg://u:p%40ss@db.example:5433/cc", "acd", cfg, **j.callbacks("n1"))
    assert isinstance(pg, PgLeaderElector) and pg.node == "n1"
    assert pg._dsn == "postgresql://u:p%40ss@db.example:5433/cc"


def test_config_refuses_a_lease_the_leader_could_outlive_and_bad_names() -> None:
    with pytest.raises(ValidationError, match="lease_seconds"):
        ClusterConfig(heartbeat_seconds=2, heartbeat_timeout_seconds=2, lease_seconds=6)
    ClusterConfig(heartbeat_seconds=1, heartbeat_timeout_seconds=1, lease_seconds=4.5)
    with pytest.raises(ValidationError, match="node_name"):
        ClusterConfig(node_name="a b; DROP")
    with pytest.raises(ValidationError, match="notify_channel"):
        ClusterConfig(notify_channel='x"; NOTIFY y')
    assert ClusterConfig().node()  # the host name when none is configured


def test_role_keys_are_stable_signed_32_bit_and_distinct() -> None:
    keys = {role: role_key(role) for role in ("acd", "escalation", "webhooks", "callbacks", "reconciliation")}
    assert len(set(keys.values())) == len(keys)
    assert all(-(2**31) <= k < 2**31 for k in keys.values())
    assert role_key("acd") == keys["acd"]  # same name, same key, in every process
    with pytest.raises(ValueError):
        role_key("")


# ------------------------------------------------------------------ on PostgreSQL


@pytest.mark.postgres
@postgres_only
async def test_two_electors_one_leader_and_a_clean_stop_hands_over(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    journal = Journal()
    a, b = elector(url, "a", journal), elector(url, "b", journal)
    try:
        await a.start()
        await a.wait_for(lambda e: e.is_leader, 10)
        await b.start()
        await b.wait_for(lambda e: e.status()["state"] == "follower", 10)
        for _ in range(5):  # several of b's tries: it never wins while a holds the lock
            await asyncio.sleep(FAST["retry_seconds"])
            assert a.is_leader and not b.is_leader
        term_a = a.term
        await a.stop()
        await b.wait_for(lambda e: e.is_leader, 10)
        assert b.term == term_a + 1
        assert journal.seq() == [("a", "elected", term_a), ("a", "demoted", None), ("b", "elected", term_a + 1)]
        assert a.status()["state"] == "stopped" and not a.is_leader
        # The leader row names the holder of the current term.
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            row = await conn.fetchrow("SELECT term, node FROM callcentre_leader WHERE role = 'acd'")
        finally:
            await conn.close()
        assert (row["term"], row["node"]) == (term_a + 1, "b")
    finally:
        await a.stop()
        await b.stop()
    assert journal.seq()[-1] == ("b", "demoted", None)


@pytest.mark.postgres
@postgres_only
async def test_a_terminated_lock_session_demotes_at_once_and_the_other_takes_over(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    journal = Journal()
    a, b = elector(url, "a", journal, retry_seconds=2.0), elector(url, "b", journal)
    try:
        await a.start()
        await a.wait_for(lambda e: e.is_leader, 10)
        await b.start()
        await b.wait_for(lambda e: e.status()["state"] == "follower", 10)
        await terminate_backend(url, await lock_pid(url, "a"))
        await b.wait_for(lambda e: e.is_leader, 10)
        await a.wait_for(lambda e: e.status()["state"] == "follower", 10)  # a reconnects and waits its turn
        assert [e[:2] for e in journal.seq()] == [("a", "elected"), ("a", "demoted"), ("b", "elected")]
        assert journal.at("a", "demoted") < journal.at("b", "elected")
        assert a.losses == 1 and a.status()["last_loss"] == "the connection closed"
        assert not a.is_leader and b.term == 2
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.postgres
@postgres_only
async def test_a_partitioned_leader_steps_down_before_the_database_frees_its_lock(tmp_path: Path) -> None:
    """Nothing is closed: only the lease (idle_session_timeout) frees the lock, after the leader has
    already stepped down on its own because its heartbeat went unanswered."""
    url = pg_url(tmp_path)
    proxy = PartitionProxy.for_url(url)
    await proxy.start()
    journal = Journal()
    a = elector(proxy.url_through(url), "a", journal)
    b = elector(url, "b", journal)
    try:
        await a.start()
        await a.wait_for(lambda e: e.is_leader, 10)
        await b.start()
        await b.wait_for(lambda e: e.status()["state"] == "follower", 10)
        cut = time.monotonic()
        proxy.partition()
        await b.wait_for(lambda e: e.is_leader, 20)
        stepped_down = journal.at("a", "demoted") - cut
        taken_over = journal.at("b", "elected") - cut
        print(f"\npartition: leader stepped down after {stepped_down:.2f} s, other node elected after "
              f"{taken_over:.2f} s (heartbeat {FAST['heartbeat_seconds']} s, timeout "
              f"{FAST['heartbeat_timeout_seconds']} s, lease {FAST['lease_seconds']} s)")
        assert journal.at("a", "demoted") < journal.at("b", "elected")
        assert a.status()["last_loss"].startswith("heartbeat:")
        assert [e[:2] for e in journal.seq()] == [("a", "elected"), ("a", "demoted"), ("b", "elected")]
    finally:
        await b.stop()
        await a.stop()
        await proxy.close()


@pytest.mark.postgres
@postgres_only
async def test_parts_that_fail_to_start_give_the_lead_away(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    journal = Journal()
    a = elector(url, "a", journal, fail_start=True, retry_seconds=1.0)
    b = elector(url, "b", journal)
    try:
        await a.start()
        await a.wait_for(lambda e: e.elections == 1, 10)
        await b.start()
        await b.wait_for(lambda e: e.is_leader, 10)
        assert journal.seq()[:3] == [("a", "elected", 1), ("a", "demoted", None), ("b", "elected", 2)]
        assert a.losses == 0  # it stepped down itself (and unlocked), it did not lose the session
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.postgres
@postgres_only
async def test_a_long_on_elected_keeps_the_lease_and_a_loss_during_it_waits_for_it(tmp_path: Path) -> None:
    """on_elected longer than the lease: the heartbeat runs meanwhile, so the server does not cut the
    session; and when the session is lost during on_elected, on_demoted comes after it, not inside it."""
    url = pg_url(tmp_path)
    journal = Journal()
    a = elector(url, "a", journal, slow=FAST["lease_seconds"] + 2.5)
    try:
        await a.start()
        await a.wait_for(lambda e: e.is_leader, 10)
        await asyncio.sleep(FAST["lease_seconds"] + 0.5)  # longer than the lease, still inside on_elected
        assert a.is_leader and a.losses == 0 and journal.seq() == [("a", "elected", 1)]
        await terminate_backend(url, await lock_pid(url, "a"))
        await a.wait_for(lambda e: not e.is_leader, 1.5)  # at once, on_elected still running ...
        assert journal.seq() == [("a", "elected", 1)]
        await a.wait_for(lambda e: e.losses == 1, 5)  # ... on_demoted only after it
        assert journal.seq() == [("a", "elected", 1), ("a", "demoted", None)]
    finally:
        await a.stop()


@pytest.mark.postgres
@postgres_only
async def test_a_stale_leaders_write_is_fenced_and_an_election_waits_for_a_write_in_flight(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    journal = Journal()
    engine = create_engine(DatabaseConfig(url=url))
    a, b = elector(url, "a", journal, retry_seconds=2.0), elector(url, "b", journal)
    try:
        await a.start()
        await a.wait_for(lambda e: e.is_leader, 10)
        term_a = a.term
        await b.start()
        await b.wait_for(lambda e: e.status()["state"] == "follower", 10)
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE work (id serial PRIMARY KEY, term bigint)"))

        # a's write is in flight (fenced, not yet committed) when a loses its lock session:
        # b wins the lock but its new term waits for that write's transaction.
        committed_at = 0.0
        async with engine.begin() as conn:
            await check_fence(conn, "acd", term_a)
            await conn.execute(text("INSERT INTO work (term) VALUES (:t)"), {"t": term_a})
            await terminate_backend(url, await lock_pid(url, "a"))
            await a.wait_for(lambda e: not e.is_leader, 5)
            await asyncio.sleep(0.5)
            assert not b.is_leader, "b was elected while a fenced write of the old term was in flight"
            committed_at = time.monotonic()
        await b.wait_for(lambda e: e.is_leader, 10)
        assert journal.at("b", "elected") > committed_at and b.term == term_a + 1

        # From now on a write of a's term is refused; b's goes through.
        async with engine.begin() as conn:
            with pytest.raises(FencedOut, match=f"term {term_a} is no longer the leader"):
                await a.fence(conn, term_a)
        async with engine.begin() as conn:
            await b.fence(conn, b.term)
            await conn.execute(text("INSERT INTO work (term) VALUES (:t)"), {"t": b.term})
        async with engine.connect() as conn:
            terms = [r[0] for r in await conn.execute(text("SELECT term FROM work ORDER BY id"))]
        assert terms == [term_a, term_a + 1]
    finally:
        await b.stop()
        await a.stop()
        await engine.dispose()


@pytest.mark.postgres
@postgres_only
async def test_stop_while_following_leaves_no_lock_and_no_session(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    journal = Journal()
    a, b = elector(url, "a", journal), elector(url, "b", journal)
    await a.start()
    await a.wait_for(lambda e: e.is_leader, 10)
    await b.start()
    await b.wait_for(lambda e: e.status()["state"] == "follower", 10)
    await b.stop()
    await a.stop()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        locks = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                    "AND classid = ($1::int4)::oid", LOCK_CLASS)
        sessions = await conn.fetchval("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE application_name LIKE 'callcentre-leader:%'")
    finally:
        await conn.close()
    assert (locks, sessions) == (0, 0)
    assert journal.seq() == [("a", "elected", 1), ("a", "demoted", None)]


# ------------------------------------------------------------------ two processes, one SIGKILLed


class ElectorProcess:
    """``python -m callcentre.cluster.leader`` with its JSON lines read as they come."""

    def __init__(self, url: str, node: str, *extra: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.node = node
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callcentre.cluster.leader", "--url", url, "--role", "acd", "--node", node, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
        self.lines: list[dict[str, Any]] = []

    async def wait(self, event: str, limit: float) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                msg = json.loads(line)
                self.lines.append(msg)
                if msg["event"] == event:
                    return msg
            raise AssertionError(f"{self.node} exited ({self.proc.wait()}) before {event!r}: {self.stderr()}")

        return await asyncio.wait_for(asyncio.to_thread(read), limit)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.mark.postgres
@postgres_only
async def test_a_sigkilled_leader_process_is_replaced_by_the_other_within_10_seconds(tmp_path: Path) -> None:
    """Production timings (retry 2 s, heartbeat 1 s, lease 6 s). The issue asks for a take-over within
    10 s; the figure is printed (the kernel closes the killed process's socket, so PostgreSQL frees
    the lock at once and only the follower's retry interval remains)."""
    url = pg_url(tmp_path)
    a = ElectorProcess(url, "a")
    b = None
    try:
        first = await a.wait("elected", 30)
        b = ElectorProcess(url, "b")
        await b.wait("started", 30)
        await asyncio.sleep(3.0)  # b has tried and lost at least once
        assert not [m for m in b.lines if m["event"] == "elected"]
        killed_at = time.time()
        a.proc.send_signal(signal.SIGKILL)
        took = await b.wait("elected", 30)
        takeover = took["time"] - killed_at
        print(f"\nSIGKILL take-over: {takeover:.2f} s (term {first['term']} -> {took['term']})")
        assert took["term"] == first["term"] + 1
        assert takeover < 10.0
        assert a.proc.wait(5) == -signal.SIGKILL and not [m for m in a.lines if m["event"] == "demoted"]

        # And the clean way back: a restarted a waits; SIGTERM to b hands over after b's on_demoted.
        a.close()
        a = ElectorProcess(url, "a")
        await a.wait("started", 30)
        stopped_at = time.time()
        b.proc.send_signal(signal.SIGTERM)
        demoted = await b.wait("demoted", 15)
        assert (await b.wait("stopped", 15))["time"] >= demoted["time"]
        again = await a.wait("elected", 15)
        print(f"SIGTERM hand-over: {again['time'] - stopped_at:.2f} s")
        assert again["term"] == took["term"] + 1 and again["time"] >= demoted["time"]
        assert b.proc.wait(10) == 0
    finally:
        a.close()
        if b is not None:
            b.close()
