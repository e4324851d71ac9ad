"""Agents: the queue and the agents' states (supervisors), changing a state, listening in."""

from __future__ import annotations

import re

from aiohttp import web

from callcentre.domain.users import AgentAction, SuperviseMode
from callcentre.web.api.common import features, parse_int, read_json, state, user
from callcentre.web.auth import EVERYONE, SUPERVISORS, roles
from callcentre.web.hub import agent_topic
from callcentre.web.middleware import ApiError, json_response

_REASON = re.compile(r"^[a-z_]{1,32}$")


@roles(*SUPERVISORS)
async def queue(request: web.Request) -> web.Response:
    return json_response(features(request).agents.queue())


@roles(*SUPERVISORS)
async def agents(request: web.Request) -> web.Response:
    return json_response(features(request).agents.agents())


@roles(*EVERYONE)
async def agent_state(request: web.Request) -> web.Response:
    agent_id = parse_int(request.match_info["agent_id"], "agent_id")
    body = await read_json(request)
    try:
        action = AgentAction(body.get("action"))
    except ValueError:
        raise ApiError(400, "invalid_action", f"action must be one of {', '.join(a.value for a in AgentAction)}") from None
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or not _REASON.match(reason)):
        raise ApiError(400, "invalid_reason", "reason must be a short lower-case word such as break or lunch")
    service = features(request).agents
    after = await service.change_state(user(request), agent_id, action, reason)
    web_state = state(request)
    if service.running:  # else the leader made the change and published it (callcentre/cluster/relay.py)
        web_state.hub.publish(agent_topic(agent_id), {"type": "state", "agent": after, "server_time": service.server_time()})
        web_state.nudge_wallboard()  # the live push builds the whole picture, at most every push_min_gap
    return json_response({"agent": after, "server_time": service.server_time()})


@roles(*SUPERVISORS)
async def supervise(request: web.Request) -> web.Response:
    body = await read_json(request)
    agent_id = parse_int(body.get("agent_id"), "agent_id")
    try:
        mode = SuperviseMode(body.get("mode"))
    except ValueError:
        raise ApiError(400, "invalid_mode", "mode must be listen, whisper or barge") from None
    await features(request).agents.supervise(user(request), agent_id, mode)
    return json_response({"status": "originating", "agent_id": agent_id, "mode": mode.value}, status=202)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/queue", queue)
    router.add_get("/api/agents", agents)
    router.add_post("/api/agents/{agent_id}/state", agent_state)
    router.add_post("/api/supervise", supervise)
