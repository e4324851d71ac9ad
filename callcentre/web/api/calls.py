"""Calls: transfer the call you are on (blind or attended), complete or cancel a consultation, and the
targets you may transfer to."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from callcentre.web.api.common import features, read_json, user
from callcentre.web.auth import EVERYONE, roles
from callcentre.web.middleware import ApiError, json_response

_UNIQUEID = re.compile(r"^[0-9]{1,20}\.[0-9]{1,10}\Z")
_TARGET_VALUE = {
    "agent": re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z"),
    "skill": re.compile(r"^[a-z0-9_\-]{1,32}\Z"),
    "department": re.compile(r"^[a-z0-9_\-]{1,64}\Z"),
}
_KINDS = ("blind", "attended")


def _uniqueid(request: web.Request) -> str:
    uid = request.match_info["uniqueid"]
    if not _UNIQUEID.match(uid):
        raise ApiError(400, "invalid_request", "uniqueid must look like 1796543556.43")
    return uid


def _target(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ApiError(400, "invalid_target", 'target must be one of {"agent": id}, {"skill": code}, {"department": code}')
    (kind, value), = raw.items()
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    pattern = _TARGET_VALUE.get(kind)
    if pattern is None or not isinstance(value, str) or not pattern.match(value):
        raise ApiError(400, "invalid_target", f"target {kind!r}: an agent id, a skill or a department code")
    return {kind: value}


@roles(*EVERYONE)
async def targets(request: web.Request) -> web.Response:
    return json_response(await features(request).calls.targets(user(request)))


@roles(*EVERYONE)
async def transfer(request: web.Request) -> web.Response:
    uid = _uniqueid(request)
    body = await read_json(request)
    kind = body.get("kind")
    if kind not in _KINDS:
        raise ApiError(400, "invalid_kind", "kind must be blind or attended")
    out = await features(request).calls.transfer(user(request), uid, kind, _target(body.get("target")))
    return json_response({"transfer": out}, status=202)


@roles(*EVERYONE)
async def complete(request: web.Request) -> web.Response:
    out = await features(request).calls.complete(user(request), _uniqueid(request))
    return json_response({"transfer": out})


@roles(*EVERYONE)
async def cancel(request: web.Request) -> web.Response:
    out = await features(request).calls.cancel(user(request), _uniqueid(request))
    return json_response({"transfer": out})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/transfer-targets", targets)
    router.add_post("/api/calls/{uniqueid}/transfer", transfer)
    router.add_post("/api/calls/{uniqueid}/transfer/complete", complete)
    router.add_post("/api/calls/{uniqueid}/transfer/cancel", cancel)
