"""Live updates across nodes (callcentre/cluster/notify.py): two hubs on one real PostgreSQL.

What must hold: a publish on either node reaches the subscribers of both, each exactly once (the echo of
a node's own NOTIFY is dropped); messages larger than a NOTIFY payload arrive intact through the blob
table; a node whose connections are killed reconnects and catches up with what it published meanwhile;
old messages are dropped instead of being sent late.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callcentre.cluster.config import NOTIFY_PAYLOAD_LIMIT, ClusterConfig
from callcentre.cluster.notify import ClusterHub, HubBridge, decode_envelope, encode_envelope, make_hub
from callcentre.cluster.pg import asyncpg_dsn
from callcentre.web.hub import WALLBOARD, Hub, agent_topic
from tests.cluster_support import pg_url, postgres_only


def snapshot(agents: int) -> dict[str, Any]:
    """A wallboard snapshot about the size a centre with ``agents`` agents publishes."""
    return {"type": "snapshot", "waiting": 12, "longest_wait_seconds": 97.5, "answered_within_target": 0.83,
            "agents": [{"id": i, "name": f"坐席 {i} Agent <{i}>", "state": "ready" if i % 3 else "talking",
                        "since": "2026-12-06T08:00:00+08:00", "calls_today": i % 17, "skills": ["repair", "complaint"]}
                       for i in range(agents)]}


async def next_message(sub: Any, limit: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(sub.get(), limit))


def queued(sub: Any) -> int:
    return sub._queue.qsize()


# ------------------------------------------------------------------ without a server


def test_envelopes_round_trip_and_malformed_ones_are_refused() -> None:
    payload = {"type": "alert", "text": "B栋漏水 <script>", "at": 1.5}
    env = decode_envelope(encode_envelope("a:1:ff", "wallboard", payload))
    assert (env["n"], env["t"], env["p"]) == ("a:1:ff", "wallboard", payload)
    assert decode_envelope('{"v":1,"n":"a","t":"wallboard","r":42}')["r"] == 42
    for bad in ('{"v":2,"n":"a","t":"w","p":{}}', '{"v":1,"t":"w","p":{}}', '{"v":1,"n":"a","t":"w"}',
                '{"v":1,"n":"a","t":"w","r":0}', '[1]', 'not json'):
        with pytest.raises(ValueError):
            decode_envelope(bad)
    # The snapshot of a larger centre does not fit a NOTIFY: that is why the blob table exists.
    assert len(encode_envelope("a", WALLBOARD, snapshot(200)).encode()) > NOTIFY_PAYLOAD_LIMIT
    assert len(encode_envelope("a", WALLBOARD, snapshot(5)).encode()) < ClusterConfig().notify_inline_max_bytes


def test_what_is_forwarded_is_the_payload_as_published() -> None:
    hub = ClusterHub(16, url="postgresql+asyncpg://u:p@h/db", cfg=ClusterConfig(node_name="a"))
    payload = {"type": "state", "agent": {"id": 7, "state": "ready"}}
    hub.publish(agent_topic(7), payload)
    payload["agent"]["state"] = "paused"  # the publisher reuses its dict
    _, topic, envelope = hub.bridge._outbox.get_nowait()
    env = decode_envelope(envelope)
    assert topic == env["t"] == "agent:7" and env["p"]["agent"]["state"] == "ready"


def test_make_hub_is_the_plain_hub_on_sqlite(tmp_path: Path) -> None:
    hub = make_hub(16, f"sqlite+aiosqlite:///{tmp_path}/cc.db", ClusterConfig(node_name="solo"))
    assert type(hub) is Hub
    assert isinstance(make_hub(16, "postgresql+asyncpg://u:p@h/db", ClusterConfig(node_name="a")), ClusterHub)


class FakeConn:
    """Records what the sender executes."""

    def __init__(self) -> None:
        self.executed: list[tuple[Any, ...]] = []
        self.sent = asyncio.Event()

    async def execute(self, query: str, *args: Any) -> str:
        self.executed.append((query, *args))
        if "pg_notify" in query:
            self.sent.set()
        return "OK"


async def test_the_outbox_drops_its_oldest_when_full_and_stale_messages_are_not_sent_late() -> None:
    cfg = ClusterConfig(node_name="a", notify_queue_max=10, notify_stale_seconds=5.0)
    hub = ClusterHub(16, url="postgresql+asyncpg://u:p@h/db", cfg=cfg)
    bridge = hub.bridge
    for i in range(12):
        hub.publish(WALLBOARD, {"type": "alert", "n": i})
    assert bridge.stats.dropped_queue_full == 2 and bridge._outbox.qsize() == 10
    # Age every queued message but the last past notify_stale_seconds.
    items = [bridge._outbox.get_nowait() for _ in range(10)]
    for t, topic, envelope in items[:-1]:
        bridge._outbox.put_nowait((t - 60.0, topic, envelope))
    bridge._outbox.put_nowait(items[-1])
    conn = FakeConn()
    sender = asyncio.create_task(bridge._sender(conn))
    try:
        await asyncio.wait_for(conn.sent.wait(), 5)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    notified = [decode_envelope(args[2]) for args in conn.executed if "pg_notify" in args[0]]
    assert [e["p"]["n"] for e in notified] == [11]
    assert bridge.stats.dropped_stale == 9 and bridge.stats.sent_inline == 1


# ------------------------------------------------------------------ on PostgreSQL


async def two_hubs(url: str, **cfg_kw: Any) -> tuple[ClusterHub, ClusterHub]:
    hubs = []
    for node in ("a", "b"):
        hub = ClusterHub(64, url=url, cfg=ClusterConfig(node_name=node, **cfg_kw), ping_seconds=0.5,
                         backoff_seconds=0.2)
        await hub.start()
        hubs.append(hub)
    for hub in hubs:
        await asyncio.wait_for(hub.bridge.connected.wait(), 10)
    return hubs[0], hubs[1]


async def barrier(sender: ClusterHub, receiver: ClusterHub, topic: str = "barrier") -> None:
    """Publish a marker on ``sender`` and wait until ``receiver`` has it: everything the sender's NOTIFYs
    committed before is then handled by the receiver too (one listener sees commits in order)."""
    sub = receiver.subscribe(topic)
    try:
        sender.publish(topic, {"type": "marker"})
        assert (await next_message(sub))["type"] == "marker"
    finally:
        sub.close()


async def echoes_back(*hubs: ClusterHub, limit: float = 10.0) -> None:
    """Wait until every NOTIFY a hub sent has come back to it and been dropped as its own echo."""
    deadline = time.monotonic() + limit
    for hub in hubs:
        st = hub.bridge.stats
        # (The echo may even be handled before the sender has counted its send: wait for equality.)
        while st.echoes_dropped != st.sent_inline + st.sent_blob:
            assert time.monotonic() < deadline, hub.bridge.status()
            await asyncio.sleep(0.02)


@pytest.mark.postgres
@postgres_only
async def test_a_publish_on_either_node_reaches_subscribers_on_both_exactly_once(tmp_path: Path) -> None:
    a, b = await two_hubs(pg_url(tmp_path))
    try:
        wall_a, wall_b = a.subscribe(WALLBOARD), b.subscribe(WALLBOARD)
        pops_b = b.subscribe(agent_topic(7))
        alert = {"type": "alert", "alert": {"text": "3栋电梯困人 <b>&", "ticket": "E20261206-0001"}}
        assert a.publish(WALLBOARD, alert) == 1  # delivered locally at once, as a plain Hub does
        assert await next_message(wall_a) == alert
        assert await next_message(wall_b) == alert
        # An agent's browser on b, the call offered by a: the screen-pop reaches it, and b retains it.
        pop = {"type": "screen_pop", "offer_id": "o-1", "call": {"uniqueid": "a-1795351990.12", "caller_id": "+8613800138000"}}
        a.publish(agent_topic(7), pop)
        assert await next_message(pops_b) == pop
        assert b.retained(agent_topic(7)) == pop and a.retained(agent_topic(7)) == pop
        # The other way round.
        state = {"type": "state", "agent": {"id": 7, "state": "ready"}}
        b.publish(WALLBOARD, state)
        assert await next_message(wall_a) == state and await next_message(wall_b) == state
        # Nothing twice: each node's own NOTIFYs came back to it and were dropped.
        await echoes_back(a, b)
        await barrier(b, a)
        await barrier(a, b)
        await echoes_back(a, b)
        assert queued(wall_a) == queued(wall_b) == queued(pops_b) == 0
        assert (a.bridge.stats.sent_inline, b.bridge.stats.sent_inline) == (3, 2)  # with one marker each
        assert (a.bridge.stats.received, b.bridge.stats.received) == (2, 3)
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.postgres
@postgres_only
async def test_a_snapshot_larger_than_a_notify_goes_through_the_blob_table_intact_and_in_order(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    a, b = await two_hubs(url)
    try:
        wall_b = b.subscribe(WALLBOARD)
        big = snapshot(300)
        small = {"type": "alert", "alert": {"text": "after the snapshot"}}
        a.publish(WALLBOARD, big)
        a.publish(WALLBOARD, small)
        assert await next_message(wall_b) == big
        assert await next_message(wall_b) == small  # the blob's fetch does not let the next message pass it
        assert (a.bridge.stats.sent_blob, a.bridge.stats.sent_inline) == (1, 1)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch("SELECT node, length(body) AS size FROM callcentre_hub_blob")
        finally:
            await conn.close()
        assert len(rows) == 1 and rows[0]["node"] == a.bridge.instance
        assert rows[0]["size"] > NOTIFY_PAYLOAD_LIMIT
        await echoes_back(a)
        assert a.bridge.stats.echoes_dropped == 2 and b.bridge.stats.received == 2
        assert queued(wall_b) == 0
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.postgres
@postgres_only
async def test_old_blobs_are_pruned_and_a_pruned_one_is_skipped(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    a, b = await two_hubs(url, notify_blob_retention_seconds=10)
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute("INSERT INTO callcentre_hub_blob (node, body, created_at) "
                               "VALUES ('old', '{}', now() - interval '1 hour')")
            a.bridge._last_prune = 0.0
            a.publish(WALLBOARD, snapshot(300))  # a blob send prunes what is past the retention
            await barrier(a, b)
            nodes = [r["node"] for r in await conn.fetch("SELECT node FROM callcentre_hub_blob")]
            assert nodes == [a.bridge.instance]
            # A notification whose row is already gone is counted and skipped, not fatal.
            await conn.execute("SELECT pg_notify('callcentre_hub', $1)",
                               json.dumps({"v": 1, "n": "elsewhere", "t": WALLBOARD, "r": 999999}))
            await conn.execute("SELECT pg_notify('callcentre_hub', 'garbage')")
            await barrier(a, b)
            assert b.bridge.stats.missing_blobs == 1 and b.bridge.stats.bad_envelopes == 1
        finally:
            await conn.close()
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.postgres
@postgres_only
async def test_killed_connections_are_replaced_and_what_was_published_meanwhile_arrives(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    a, b = await two_hubs(url)
    admin = await asyncpg.connect(asyncpg_dsn(url))

    async def kill(pattern: str) -> int:
        return await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE application_name LIKE $1", pattern)

    async def until(check: Any, what: str) -> None:
        deadline = time.monotonic() + 15
        while not check():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    try:
        wall_b = b.subscribe(WALLBOARD)
        # a loses both its connections; what it publishes before it is back is queued, then sent.
        assert await kill("callcentre-hub-%:a") == 2
        await until(lambda: not a.bridge.connected.is_set(), "a never noticed")
        during = {"type": "alert", "alert": {"text": "published while a was reconnecting"}}
        a.publish(WALLBOARD, during)
        assert await next_message(wall_b, 15) == during
        assert a.bridge.stats.reconnects == 1 and a.bridge.stats.dropped_stale == 0

        # b loses its listening connection: it reconnects and listens again.
        assert await kill("callcentre-hub-listen:b") == 1
        await until(lambda: not b.bridge.connected.is_set(), "b never noticed")
        await until(lambda: b.bridge.connected.is_set(), "b never reconnected")
        after = {"type": "alert", "alert": {"text": "after both reconnected"}}
        a.publish(WALLBOARD, after)
        assert await next_message(wall_b, 15) == after
        assert b.bridge.stats.reconnects == 1
        await echoes_back(a)
        assert queued(wall_b) == 0
    finally:
        await admin.close()
        await a.stop()
        await b.stop()


@pytest.mark.postgres
@postgres_only
async def test_stop_closes_the_bridge_connections(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    a, b = await two_hubs(url)
    await a.stop()
    await b.stop()
    assert not a.bridge.connected.is_set()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        left = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'callcentre-hub-%'")
    finally:
        await conn.close()
    assert left == 0


def test_bridge_instance_ids_differ_for_the_same_node_name() -> None:
    cfg = ClusterConfig(node_name="same")
    one = HubBridge(ClusterHub(4, url="postgresql+asyncpg://u:p@h/d", cfg=cfg), "postgresql://u:p@h/d", cfg)
    two = HubBridge(ClusterHub(4, url="postgresql+asyncpg://u:p@h/d", cfg=cfg), "postgresql://u:p@h/d", cfg)
    assert one.instance != two.instance and one.instance.startswith("same:")
