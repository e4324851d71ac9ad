"""Live updates for every node: the web :class:`~callcentre.web.hub.Hub` extended over PostgreSQL
``LISTEN``/``NOTIFY``.

:class:`ClusterHub` is a ``Hub`` whose :meth:`~ClusterHub.publish` delivers to this node's websockets at
once (exactly as before) and also queues the message for the other nodes; it never waits for the
database, so a call is never slowed by it. A :class:`HubBridge` task sends the queue with ``NOTIFY``
and hands what other nodes sent to the local hub.

* **Echo suppression.** Every envelope carries this process's instance id (the node name plus a
  random suffix, so two processes with the same configured name still tell themselves apart); the
  bridge drops notifications carrying its own id, since the local subscribers already have them. A
  message received from another node is delivered locally only, never sent on: no loops.
* **Size.** PostgreSQL refuses a ``NOTIFY`` payload of 8000 bytes or more, and a wallboard snapshot
  with a few hundred agents is larger. Envelopes up to ``notify_inline_max_bytes`` go inline; a larger
  message is written to ``callcentre_hub_blob`` and the notification carries only its id, in the same
  transaction (a notification is delivered only when its transaction commits, so the row is always
  there when a node reads it). Rows older than ``notify_blob_retention_seconds`` are deleted by the
  nodes as they go. Chunking was rejected: a lost or reordered chunk would need reassembly state and
  timeouts on every node, where one row and one id need none.
* **Order.** One sending connection per node, one consumer task per node: the messages of one node
  reach another node in the order they were published.
* **Reconnection.** Both connections are watched (termination callbacks, and a ``SELECT 1`` on the
  listening one when it has been quiet for ``ping_seconds``); on a loss both are replaced after a
  back-off. Messages published meanwhile wait in a bounded queue and are still sent if they are
  younger than ``notify_stale_seconds``; older ones, and those pushed out of a full queue, are dropped
  and counted (a wallboard gets a fresh snapshot every second anyway). Notifications sent by other
  nodes while this node was not listening are lost: ``NOTIFY`` is not durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import structlog

from callcentre.cluster.config import ClusterConfig
from callcentre.cluster.pg import asyncpg_dsn, ensure_schema, is_postgres
from callcentre.tasks import cancel_and_wait
from callcentre.web.hub import WALLBOARD, Hub

log = structlog.get_logger(__name__)

ENVELOPE_VERSION = 1
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(slots=True)
class BridgeStats:
    """Counters for /health and /metrics."""

    sent_inline: int = 0
    sent_blob: int = 0
    received: int = 0
    echoes_dropped: int = 0
    dropped_queue_full: int = 0
    dropped_stale: int = 0
    bad_envelopes: int = 0
    missing_blobs: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def encode_envelope(instance: str, topic: str, payload: dict[str, Any]) -> str:
    """The inline envelope (JSON text); its UTF-8 size decides inline or blob."""
    return json.dumps({"v": ENVELOPE_VERSION, "n": instance, "t": topic, "p": payload},
                      ensure_ascii=False, default=str, separators=(",", ":"))


def decode_envelope(text: str) -> dict[str, Any]:
    """Parse and check an envelope (inline ``p`` or blob reference ``r``); ValueError when malformed."""
    env = json.loads(text)
    if not isinstance(env, dict) or env.get("v") != ENVELOPE_VERSION:
        raise ValueError("not a version-1 envelope")
    if not isinstance(env.get("n"), str) or not isinstance(env.get("t"), str):
        raise ValueError("envelope without node or topic")
    if not isinstance(env.get("p"), dict) and not (isinstance(env.get("r"), int) and env["r"] > 0):
        raise ValueError("envelope without payload or blob id")
    return env


class HubBridge:
    """Carries one node's hub messages to and from the other nodes (see the module docstring)."""

    def __init__(self, hub: "ClusterHub", dsn: str, cfg: ClusterConfig, *, ping_seconds: float = 5.0,
                 backoff_seconds: float = 1.0, connect_timeout_seconds: float = 5.0, create_schema: bool = True) -> None:
        self.hub = hub
        self.cfg = cfg
        self.channel = cfg.notify_channel
        self.instance = f"{cfg.node()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = BridgeStats()
        self.ping_seconds = ping_seconds
        self.backoff_seconds = backoff_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self._dsn = dsn
        self._create_schema = create_schema  # False when the migration made the table (callcentre serve)
        self._outbox: asyncio.Queue[tuple[float, str, str]] = asyncio.Queue(cfg.notify_queue_max)
        self._inbox: asyncio.Queue[str] = asyncio.Queue(cfg.notify_queue_max)
        self._unsent: tuple[float, str, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._last_prune = 0.0
        self.log = log.bind(node=cfg.node(), instance=self.instance)

    # ------------------------------------------------------------------ called by the hub

    def forward(self, topic: str, payload: dict[str, Any]) -> None:
        """Queue a message for the other nodes; never blocks (a full queue loses its oldest message).

        Encoded now, not when sent: what the other nodes get is the payload as it was published, even
        if the publisher reuses the dict afterwards."""
        item = (time.monotonic(), topic, encode_envelope(self.instance, topic, payload))
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._outbox.get_nowait()
            self.stats.dropped_queue_full += 1
            self._outbox.put_nowait(item)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("bridge already started")
        self._task = asyncio.create_task(self._run(), name="hub-bridge")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self.connected.clear()

    def status(self) -> dict[str, Any]:
        return {"instance": self.instance, "channel": self.channel, "connected": self.connected.is_set(),
                "queued": self._outbox.qsize(), **self.stats.as_dict()}

    # ------------------------------------------------------------------ the connections

    async def _connect(self, purpose: str) -> Any:
        return await asyncpg.connect(self._dsn, timeout=self.connect_timeout_seconds,
                                     server_settings={"application_name": f"callcentre-hub-{purpose}:{self.cfg.node()}"[:63]})

    async def _run(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.backoff_seconds)
                self.stats.reconnects += 1
            first = False
            conns: list[Any] = []
            tasks: list[asyncio.Task[None]] = []
            broken = asyncio.Event()
            try:
                listen = await self._connect("listen")
                conns.append(listen)
                send = await self._connect("send")
                conns.append(send)
                if self._create_schema:
                    await ensure_schema(send)
                for c in conns:
                    c.add_termination_listener(lambda _c, ev=broken: ev.set())
                await listen.add_listener(self.channel, self._on_notify)
                self.connected.set()
                self.log.info("hub bridge connected", channel=self.channel)
                tasks = [asyncio.create_task(self._sender(send), name="hub-bridge-send"),
                         asyncio.create_task(self._consumer(listen), name="hub-bridge-receive"),
                         asyncio.create_task(broken.wait(), name="hub-bridge-watch")]
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
                raise ConnectionError("a hub bridge connection closed")
            except _CONNECTION_ERRORS as exc:
                self.log.warning("hub bridge disconnected", error=f"{type(exc).__name__}: {exc}")
            except Exception:  # a bug must not end live updates for good: log it, start again
                self.log.exception("hub bridge failed")
            finally:
                self.connected.clear()
                await cancel_and_wait(*tasks)
                for c in conns:
                    if not c.is_closed():
                        c.terminate()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._inbox.put_nowait(payload)
        except asyncio.QueueFull:
            self.stats.dropped_queue_full += 1

    # ------------------------------------------------------------------ sending

    async def _sender(self, conn: Any) -> None:
        while True:
            # A message whose send failed with the connection is the first one sent on the next.
            item = self._unsent or await self._outbox.get()
            self._unsent = item
            queued_at, topic, envelope = item
            if time.monotonic() - queued_at > self.cfg.notify_stale_seconds:
                self.stats.dropped_stale += 1
                self._unsent = None
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation of stop().
            async with asyncio.timeout(self.connect_timeout_seconds):
                if len(envelope.encode("utf-8")) <= self.cfg.notify_inline_max_bytes:
                    await conn.execute("SELECT pg_notify($1, $2)", self.channel, envelope)
                    self.stats.sent_inline += 1
                else:
                    await self._send_blob(conn, topic, envelope)
                    self.stats.sent_blob += 1
            self._unsent = None
            await self._prune(conn)

    async def _send_blob(self, conn: Any, topic: str, envelope: str) -> None:
        async with conn.transaction():
            blob_id = await conn.fetchval(
                "INSERT INTO callcentre_hub_blob (node, body) VALUES ($1, $2) RETURNING id", self.instance, envelope)
            ref = json.dumps({"v": ENVELOPE_VERSION, "n": self.instance, "t": topic, "r": blob_id},
                             ensure_ascii=False, separators=(",", ":"))
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, ref)

    async def _prune(self, conn: Any) -> None:
        now = time.monotonic()
        if now - self._last_prune < self.cfg.notify_blob_retention_seconds / 4:
            return
        self._last_prune = now
        async with asyncio.timeout(self.connect_timeout_seconds):
            await conn.execute("DELETE FROM callcentre_hub_blob WHERE created_at < now() - make_interval(secs => $1)",
                               float(self.cfg.notify_blob_retention_seconds))

    # ------------------------------------------------------------------ receiving

    async def _consumer(self, conn: Any) -> None:
        while True:
            try:
                async with asyncio.timeout(self.ping_seconds):
                    text = await self._inbox.get()
            except TimeoutError:
                # Quiet for a while: make sure the listening connection is really there.
                async with asyncio.timeout(self.connect_timeout_seconds):
                    await conn.fetchval("SELECT 1")
                continue
            await self._receive(conn, text)

    async def _receive(self, conn: Any, text: str) -> None:
        try:
            env = decode_envelope(text)
        except ValueError as exc:
            self.stats.bad_envelopes += 1
            self.log.warning("bad hub notification dropped", error=str(exc), size=len(text))
            return
        if env["n"] == self.instance:
            self.stats.echoes_dropped += 1  # delivered locally when it was published
            return
        if "r" in env:
            async with asyncio.timeout(self.connect_timeout_seconds):
                body = await conn.fetchval("SELECT body FROM callcentre_hub_blob WHERE id = $1", env["r"])
            if body is None:
                self.stats.missing_blobs += 1
                self.log.warning("hub message gone before it was read", blob=env["r"], sender=env["n"])
                return
            try:
                env = decode_envelope(body)
            except ValueError as exc:
                self.stats.bad_envelopes += 1
                self.log.warning("bad hub blob dropped", error=str(exc), blob=env["r"])
                return
        self.stats.received += 1
        self.hub.deliver_local(env["t"], env["p"])


class ClusterHub(Hub):
    """A :class:`Hub` whose publishes also reach the subscribers connected to the other nodes.

    It also keeps the latest wallboard snapshot another node published (the leader's: call
    distribution runs there), so a supervisor's page that connects to this node gets the live
    picture at once rather than at the leader's next change (:meth:`remote_snapshot`)."""

    cluster_wide = True

    def __init__(self, queue_max: int, *, url: str, cfg: ClusterConfig, **bridge_kw: Any) -> None:
        super().__init__(queue_max)
        self.bridge = HubBridge(self, asyncpg_dsn(url), cfg, **bridge_kw)
        self._remote_snapshot: tuple[float, dict[str, Any]] | None = None

    def publish(self, topic: str, payload: dict[str, Any]) -> int:
        delivered = super().publish(topic, payload)
        self.bridge.forward(topic, payload)
        return delivered

    def deliver_local(self, topic: str, payload: dict[str, Any]) -> int:
        """A message from another node: to this node's subscribers only (never sent on again)."""
        if topic == WALLBOARD and payload.get("type") == "snapshot":
            self._remote_snapshot = (time.monotonic(), payload)
        return super().publish(topic, payload)

    def remote_snapshot(self, max_age_seconds: float) -> dict[str, Any] | None:
        """The latest wallboard snapshot received from another node, if younger than ``max_age_seconds``."""
        kept = self._remote_snapshot
        if kept is None or time.monotonic() - kept[0] > max_age_seconds:
            return None
        return kept[1]

    async def start(self) -> None:
        await self.bridge.start()

    async def stop(self) -> None:
        await self.bridge.stop()


def make_hub(queue_max: int, url: str, cfg: ClusterConfig, *, create_schema: bool = True) -> Hub:
    """PostgreSQL: a :class:`ClusterHub` (start/stop it); SQLite: the plain in-process :class:`Hub`."""
    if is_postgres(url):
        return ClusterHub(queue_max, url=url, cfg=cfg, create_schema=create_schema)
    return Hub(queue_max)
