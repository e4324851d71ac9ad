"""The browser side: agent desk, supervisor wallboard, JSON API, websockets (issue 4).

``setup_web(app, services)`` is called once by the composition root. It needs from ``services``:
``cfg``, ``clock``, ``session_factory`` (may be filled in later by the database start-up), and
optionally ``hub`` (a :class:`~callcentre.web.hub.Hub`) and ``acd`` (an
:class:`~callcentre.web.ports.ACDControl`), both read when used, so the ACD adapter may be built
after this call. When ``services`` has no hub, one is created and set as ``services.hub``.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import structlog
from aiohttp import WSCloseCode, web

from callcentre.storage.desk_repo import DeskRepo
from callcentre.storage.users_repo import UsersRepo
from callcentre.tasks import cancel_and_wait, run_periodically
from callcentre.web.auth import LoginLimiter, SessionCodec
from callcentre.web.hub import WALLBOARD, Hub
from callcentre.web.ports import ACDControl

log = structlog.get_logger(__name__)

SNAPSHOT_INTERVAL_SECONDS = 1.0


@dataclass
class WebState:
    """Everything the handlers share; one per application, never module-level."""

    services: Any
    hub: Hub
    sessions: SessionCodec
    limiter: LoginLimiter
    acd_override: ACDControl | None = None
    # How often the wallboard snapshot is compared and pushed when it changed (seconds).
    push_interval: float = SNAPSHOT_INTERVAL_SECONDS
    sockets: "weakref.WeakSet[web.WebSocketResponse]" = field(default_factory=weakref.WeakSet)
    _repos: tuple[Any, DeskRepo, UsersRepo] | None = None

    @property
    def cfg(self) -> Any:
        return self.services.cfg

    @property
    def acd(self) -> ACDControl | None:
        return getattr(self.services, "acd", None) or self.acd_override

    def _build(self) -> tuple[DeskRepo, UsersRepo]:
        factory = self.services.session_factory
        if factory is None:
            from callcentre.web.middleware import ApiError

            raise ApiError(503, "starting", "the server is still starting; try again in a moment")
        if self._repos is None or self._repos[0] is not factory:
            cfg = self.cfg
            desk = DeskRepo(
                factory,
                self.services.clock,
                tz=cfg.centre.timezone,
                prefixes=dict(cfg.tickets.number_prefix),
                repeat_caller_hours=cfg.acd.repeat_caller_hours,
            )
            self._repos = (factory, desk, UsersRepo(factory, self.services.clock))
        return self._repos[1], self._repos[2]

    @property
    def desk(self) -> DeskRepo:
        return self._build()[0]

    @property
    def users(self) -> UsersRepo:
        return self._build()[1]

    def now(self) -> float:
        return self.services.clock.now().timestamp()

    def monotonic(self) -> float:
        return self.services.clock.monotonic()

    def server_time(self) -> str:
        """Sent with every snapshot: pages measure time in state against the server's clock, not their own."""
        return self.services.clock.now().isoformat()

    def acd_snapshot(self) -> dict[str, Any]:
        acd = self.acd
        if acd is None:
            return {"queue": [], "agents": [], "figures": {}, "alerts": [], "acd": "unavailable", "server_time": self.server_time()}
        snap = dict(acd.snapshot())
        snap.setdefault("acd", "running")
        snap["server_time"] = self.server_time()
        return snap


WEB = web.AppKey("callcentre_web", WebState)


def setup_web(app: web.Application, services: Any) -> None:
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
    state = WebState(
        services=services,
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
    """Push the ACD snapshot to the wallboard when it changed (at most once a second), for as long as
    the application runs; the ACD adapter may also publish changes itself at once."""
    state = app[WEB]

    last = ""

    async def push_if_changed() -> None:
        nonlocal last
        if state.hub.subscribers(WALLBOARD) == 0 or state.acd is None:
            last = ""
            return
        snap = state.acd_snapshot()  # a faulty snapshot is logged by the loop and does not end live push
        encoded = json.dumps(snap, sort_keys=True, default=str)
        if encoded != last:
            last = encoded
            state.hub.publish(WALLBOARD, {"type": "snapshot", **snap})

    loop = run_periodically("wallboard-push", push_if_changed, lambda: state.push_interval, wait_first=True)
    task = asyncio.create_task(loop, name="wallboard-push")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def _close_sockets(app: web.Application) -> None:
    for sock in list(app[WEB].sockets):
        await sock.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


__all__ = ["WEB", "WebState", "setup_web"]
