"""The browser side: agent desk, supervisor wallboard, JSON API, websockets (issue 4).

``setup_web(app, services, features)`` is called once by the composition root. ``services`` gives
the configuration, the clock, the hub (created here when it has none) and call distribution (read
when used: it may be off); ``features`` are the desk's services, one per feature of the API
(:class:`~callcentre.web.ports.DeskFeatures`). Without them (a test's or a tool's services object)
they are made from ``services.session_factory`` by :func:`callcentre.service.desk.build_desk`.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import structlog
from aiohttp import WSCloseCode, web

from callcentre.tasks import cancel_and_wait, run_periodically
from callcentre.web.auth import LoginLimiter, SessionCodec
from callcentre.web.hub import WALLBOARD, Hub
from callcentre.web.ports import DeskFeatures, WebServices

log = structlog.get_logger(__name__)

SNAPSHOT_INTERVAL_SECONDS = 1.0
# The least time between two wallboard snapshots however many agents change state: a click nudges the
# push (the wallboard sees it within this) instead of building and encoding the whole picture itself.
SNAPSHOT_MIN_GAP_SECONDS = 0.2


@dataclass
class WebState:
    """Everything the handlers share; one per application, never module-level."""

    services: WebServices
    features: DeskFeatures
    hub: Hub
    sessions: SessionCodec
    limiter: LoginLimiter
    # How often the wallboard snapshot is compared and pushed when it changed (seconds).
    push_interval: float = SNAPSHOT_INTERVAL_SECONDS
    push_min_gap: float = SNAPSHOT_MIN_GAP_SECONDS
    wallboard_changed: asyncio.Event = field(default_factory=asyncio.Event)
    sockets: "weakref.WeakSet[web.WebSocketResponse]" = field(default_factory=weakref.WeakSet)

    @property
    def cfg(self) -> Any:
        return self.services.cfg

    def now(self) -> float:
        return self.services.clock.now().timestamp()

    def nudge_wallboard(self) -> None:
        """Something the wallboard shows changed: push a snapshot soon (within ``push_min_gap``)."""
        self.wallboard_changed.set()

    def monotonic(self) -> float:
        return self.services.clock.monotonic()


WEB = web.AppKey("callcentre_web", WebState)


def setup_web(app: web.Application, services: Any, features: DeskFeatures | None = None) -> None:
    """Add the pages, API, websockets and their middlewares to ``app``."""
    from callcentre.web import api, pages, reports, ws
    from callcentre.web.middleware import error_middleware, make_auth_middleware, security_headers

    cfg = services.cfg
    hub = getattr(services, "hub", None)
    if hub is None:
        hub = Hub(cfg.web.websocket_queue_max)
        try:
            services.hub = hub  # the ACD adapter publishes through services.hub
        except AttributeError:  # a slotted or frozen services object: the hub stays app[WEB].hub
            log.warning("services has no 'hub' attribute; use app[WEB].hub")
    if features is None:
        from callcentre.service.desk import build_desk

        features = build_desk(services.session_factory, cfg, services.clock, acd=lambda: services.acd,
                              lifecycle=getattr(services, "ticket_service", None))
    state = WebState(
        services=services,
        features=features,
        hub=hub,
        sessions=SessionCodec(cfg.web_session_key()),
        limiter=LoginLimiter(cfg.web.login_attempts_per_minute),
    )
    app[WEB] = state
    app.middlewares.extend([error_middleware, security_headers, make_auth_middleware(lambda r: r.app[WEB])])
    api.add_routes(app)
    ws.add_routes(app)
    pages.add_routes(app)
    reports.add_routes(app)
    app.cleanup_ctx.append(_live_push)
    app.on_shutdown.append(_close_sockets)


async def _live_push(app: web.Application) -> AsyncIterator[None]:
    """Push the ACD snapshot to the wallboard when it changed, every ``push_interval`` and soon after a
    nudge (never more often than ``push_min_gap``), for as long as the application runs.

    With a hub shared by several nodes (PostgreSQL), the node that runs call distribution publishes
    whenever the snapshot changes, subscribers here or not: the supervisors' pages may be connected
    to another node, which keeps the latest snapshot for pages that connect later."""
    state = app[WEB]

    last = ""

    async def push_if_changed() -> None:
        nonlocal last
        agents = state.features.agents
        local_only = not getattr(state.hub, "cluster_wide", False)
        if not agents.running or (local_only and state.hub.subscribers(WALLBOARD) == 0):
            last = ""
            return
        snap = agents.snapshot()  # a faulty snapshot is logged by the loop and does not end live push
        encoded = json.dumps(snap, sort_keys=True, default=str)
        if encoded != last:
            last = encoded
            state.hub.publish(WALLBOARD, {"type": "snapshot", **snap})

    loop = run_periodically("wallboard-push", push_if_changed, lambda: state.push_interval, wait_first=True,
                            wake=state.wallboard_changed, min_gap=state.push_min_gap)
    task = asyncio.create_task(loop, name="wallboard-push")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def _close_sockets(app: web.Application) -> None:
    for sock in list(app[WEB].sockets):
        await sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


__all__ = ["WEB", "WebState", "setup_web"]
