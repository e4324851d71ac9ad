"""Owners: the owner card by number or id, search, and attaching a number the caller gave."""

from __future__ import annotations

from aiohttp import web

from callcentre.web.api.common import features, normalise_phone, parse_int, parse_opt_int, parse_phone, read_json, user
from callcentre.web.auth import EVERYONE, roles
from callcentre.web.middleware import ApiError, json_response


@roles(*EVERYONE)
async def owner_lookup(request: web.Request) -> web.Response:
    phone = parse_phone(request, request.query.get("phone"))
    return json_response(await features(request).owners.lookup_by_phone(phone))


@roles(*EVERYONE)
async def owner_search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not q.strip():
        raise ApiError(400, "invalid_request", "q (name, unit or phone) is required")
    return json_response({"owners": await features(request).owners.search(q, phone=normalise_phone(request, q))})


@roles(*EVERYONE)
async def owner_get(request: web.Request) -> web.Response:
    owner_id = parse_int(request.match_info["owner_id"], "owner_id")
    return json_response(await features(request).owners.owner_card(owner_id))


@roles(*EVERYONE)
async def owner_attach_phone(request: web.Request) -> web.Response:
    owner_id = parse_int(request.match_info["owner_id"], "owner_id")
    body = await read_json(request)
    raw = body.get("phone")
    number = parse_phone(request, raw)
    unit_id = parse_opt_int(body.get("unit_id"), "unit_id")
    result = await features(request).owners.attach_phone(user(request), owner_id, number, str(raw).strip(), unit_id=unit_id)
    return json_response(result, status=201 if result["created"] else 200)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/owners/lookup", owner_lookup)
    router.add_get("/api/owners/search", owner_search)
    router.add_get("/api/owners/{owner_id}", owner_get)
    router.add_post("/api/owners/{owner_id}/phones", owner_attach_phone)
