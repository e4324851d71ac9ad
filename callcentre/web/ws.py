"""Websockets: ``/ws/agent`` (one agent's screen-pops and state) and ``/ws/wallboard`` (supervisors).

Each connection checks the session (middleware) and the Origin header (here: same origin or
``web.allowed_origins``; browsers always send it, so a missing one is refused too), subscribes to
its topic *before* taking the snapshot (no change is lost in between), sends the full snapshot, then
forwards the topic's messages. A connection whose queue overflows is closed with code 4008; the page
reconnects with backoff and gets a fresh snapshot.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import structlog
from aiohttp import WSMsgType, web

from callcentre.domain.users import check_screen_pops
from callcentre.web import WEB, WebState
from callcentre.web.auth import EVERYONE, SUPERVISORS, USER_KEY, roles
from callcentre.web.hub import WALLBOARD, Subscription, SubscriberDropped, agent_topic
from callcentre.web.jsonsafe import safe_dumps
from callcentre.web.middleware import ApiError, origin_allowed

log = structlog.get_logger(__name__)

CLOSE_TOO_SLOW = 4008
CLOSE_TIMEOUT_SECONDS = 2.0
HEARTBEAT_SECONDS = 20.0
CLIENT_MSG_MAX = 4096


def _check_origin(request: web.Request, state: WebState) -> None:
    if not origin_allowed(request, request.headers.get("Origin"), state.cfg.web.allowed_origins):
        log.warning("websocket from a foreign origin refused", origin=request.headers.get("Origin", "")[:200])
        raise ApiError(403, "bad_origin", "websocket from a foreign or missing origin refused")


async def _serve(
    request: web.Request, topic: str, make_snapshot: Callable[[], dict[str, Any]]
) -> web.WebSocketResponse:
    state = request.app[WEB]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=CLIENT_MSG_MAX)
    await ws.prepare(request)
    state.sockets.add(ws)
    # Subscribe first, then take the snapshot: a change in between is queued, never lost.
    sub: Subscription = state.hub.subscribe(topic)
    blog = log.bind(topic=topic, user=request[USER_KEY].login)
    blog.info("websocket opened")
    tasks: list[asyncio.Task[None]] = []
    try:
        await ws.send_str(safe_dumps(make_snapshot()))
        pump = asyncio.create_task(_pump(ws, sub), name=f"ws-pump-{topic}")
        tasks.append(pump)
        sub.on_drop = pump.cancel
        if sub.dropped:  # overflowed while the snapshot was being sent
            pump.cancel()
        tasks.append(asyncio.create_task(_drain(ws), name=f"ws-read-{topic}"))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sub.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if sub.dropped:
            blog.warning("websocket closed: too slow")
            await _close(ws, CLOSE_TOO_SLOW, b"too slow; reconnect")
        else:
            await _close(ws, 1000, b"")
        state.sockets.discard(ws)
        blog.info("websocket closed")
    return ws


async def _close(ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    """Close politely; a peer that does not take the close frame in time is cut off."""
    if ws.closed:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await ws.close(code=code, message=message)
    except (TimeoutError, ConnectionError):
        # aiohttp has no public abort for a websocket: drop the transport under it.
        req = getattr(ws, "_req", None)
        transport = req.transport if req is not None else None
        if transport is not None:
            transport.abort()


async def _pump(ws: web.WebSocketResponse, sub: Subscription) -> None:
    try:
        while not ws.closed:
            await ws.send_str(await sub.get())
    except (SubscriberDropped, ConnectionError):
        return


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the browser sends, so pings, pongs and the close handshake are handled."""
    async for msg in ws:
        if msg.type == WSMsgType.ERROR:
            return


@roles(*EVERYONE)
async def agent_ws(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    _check_origin(request, state)
    user = request[USER_KEY]
    wanted = request.query.get("agent_id")
    agent_id = user.id
    if wanted is not None:
        try:
            agent_id = int(wanted)
        except ValueError:
            raise ApiError(400, "invalid_request", "agent_id must be an integer") from None
    check_screen_pops(user, agent_id)
    topic = agent_topic(agent_id)

    agents = state.features.agents

    def snapshot() -> dict[str, Any]:
        return {"type": "snapshot", "agent": agents.agent_entry(agent_id), "screen_pop": state.hub.retained(topic),
                "server_time": agents.server_time()}

    return await _serve(request, topic, snapshot)


@roles(*SUPERVISORS)
async def wallboard_ws(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    _check_origin(request, state)
    agents = state.features.agents
    return await _serve(request, WALLBOARD, lambda: {"type": "snapshot", **agents.snapshot()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/agent", agent_ws)
    app.router.add_get("/ws/wallboard", wallboard_ws)
