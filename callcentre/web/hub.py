"""In-process publish/subscribe for live push to browsers (and the full screen-pop card's entry point).

Topics: ``"wallboard"`` (supervisors) and ``f"agent:{agent_id}"`` (one agent's screen-pops and state).
:meth:`Hub.publish` is synchronous and costs one JSON encoding plus one ``put_nowait`` per subscriber
of that topic: it never waits for a browser. A subscriber whose bounded queue is full (a slow or
stuck browser) is dropped at once and told through its ``on_drop`` callback, so the websocket
handler closes it; calls are never slowed by a browser.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import structlog

from callcentre.domain.calls import CallInfo
from callcentre.domain.screen_pop import OwnerLookup, full_card
from callcentre.web.jsonsafe import safe_dumps

log = structlog.get_logger(__name__)

WALLBOARD = "wallboard"


def agent_topic(agent_id: int) -> str:
    return f"agent:{int(agent_id)}"


class SubscriberDropped(Exception):
    """This subscriber fell too far behind and no longer receives anything."""


class Subscription:
    """One browser's bounded queue of encoded messages."""

    def __init__(self, hub: "Hub", topic: str, maxsize: int) -> None:
        self.topic = topic
        self._hub = hub
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=maxsize)
        self.dropped = False
        self.on_drop: Callable[[], None] | None = None

    def offer(self, encoded: str) -> bool:
        """Queue one message; False (and the subscriber is dropped) when the queue is full."""
        if self.dropped:
            return False
        try:
            self._queue.put_nowait(encoded)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            self._hub._remove(self)
            log.warning("slow websocket subscriber dropped", topic=self.topic, queued=self._queue.qsize())
            if self.on_drop is not None:
                self.on_drop()
            return False

    async def get(self) -> str:
        if self.dropped:
            raise SubscriberDropped(self.topic)
        return await self._queue.get()

    def close(self) -> None:
        self._hub._remove(self)


class Hub:
    """Topics to subscribers; owned by the web application, one per process."""

    # True for a hub whose publishes also reach the other nodes' subscribers (callcentre.cluster.notify).
    cluster_wide = False

    def __init__(self, queue_max: int = 256) -> None:
        self.queue_max = queue_max
        self._topics: dict[str, set[Subscription]] = {}
        self._retained: dict[str, str] = {}

    def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self, topic, self.queue_max)
        self._topics.setdefault(topic, set()).add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._topics[sub.topic]

    def subscribers(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def publish(self, topic: str, payload: dict[str, Any]) -> int:
        """Send to every subscriber of ``topic``; returns how many got it. Never blocks.

        The latest ``screen_pop`` of an agent topic is retained (until a ``call_ended``/``screen_clear``)
        so a page that reconnects while the phone rings still shows the caller.
        """
        encoded = safe_dumps(payload)
        kind = payload.get("type")
        if topic.startswith("agent:"):
            if kind == "screen_pop":
                self._retained[topic] = encoded
            elif kind in ("call_ended", "screen_clear"):
                self._retained.pop(topic, None)
        delivered = 0
        for sub in list(self._topics.get(topic, ())):
            if sub.offer(encoded):
                delivered += 1
        return delivered

    def retained(self, topic: str) -> dict[str, Any] | None:
        encoded = self._retained.get(topic)
        return json.loads(encoded) if encoded is not None else None


async def build_screen_pop(desk: OwnerLookup, call_info: CallInfo) -> dict[str, Any]:
    """The ``call`` of a full screen-pop (one definition: :func:`callcentre.domain.screen_pop.full_card`)."""
    return await full_card(desk, call_info)
