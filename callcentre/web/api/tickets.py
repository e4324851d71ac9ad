"""Tickets: by number, owner or caller; made at the desk; changed (status through the lifecycle)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from callcentre.domain import callerid
from callcentre.domain.model import Priority, TicketKind, TicketStatus
from callcentre.domain.ticket_number import is_ticket_number
from callcentre.domain.users import sees_supervisor_pages
from callcentre.service.desk.tickets import DESK_STATUSES, FIRST_CONTACT_NOTE, NewDeskTicket, TicketChange
from callcentre.web.api.common import (
    features,
    parse_opt_int,
    parse_phone,
    parse_text,
    read_json,
    user,
)
from callcentre.domain.users import READERS
from callcentre.web.auth import EVERYONE, roles
from callcentre.web.middleware import ApiError, json_response

_CATEGORY = re.compile(r"^[a-z0-9_\-]{1,64}$")
_UNIQUEID = re.compile(r"^[0-9A-Za-z.\-_]{1,64}$")
_HOTLINE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}\Z")
NOTES_MAX = 2000


def _ticket_number(request: web.Request) -> str:
    number = request.match_info["number"]
    if not is_ticket_number(number):
        raise ApiError(404, "not_found", "no such ticket")
    return number


def _hotline(value: Any) -> str | None:
    """A hotline id as a query or body gives it (the service checks it is configured)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _HOTLINE.match(value):
        raise ApiError(400, "unknown_hotline", "hotline must be the id of a configured hotline")
    return value


def _category_code(value: Any) -> str:
    if not isinstance(value, str) or not _CATEGORY.match(value):
        raise ApiError(400, "invalid_category", "category must be a lower-case code")
    return value


@roles(*READERS)
async def tickets_list(request: web.Request) -> web.Response:
    phone_q = request.query.get("phone")
    owner_q = request.query.get("owner_id")
    hotline = _hotline(request.query.get("hotline"))
    if not phone_q and not owner_q and hotline is None:
        raise ApiError(400, "invalid_request", "give phone, owner_id or hotline")
    if not phone_q and not owner_q and not sees_supervisor_pages(user(request)):
        raise ApiError(403, "forbidden", "a hotline's tickets are for supervisors; agents look up a caller")
    phone = parse_phone(request, phone_q) if phone_q else None
    owner_id = parse_opt_int(owner_q, "owner_id")
    found = await features(request).tickets.find(owner_id=owner_id, phone=phone, hotline=hotline)
    return json_response({"tickets": found})


@roles(*READERS)
async def ticket_get(request: web.Request) -> web.Response:
    return json_response(await features(request).tickets.get(_ticket_number(request)))


@roles(*EVERYONE)
async def ticket_create(request: web.Request) -> web.Response:
    tickets = features(request).tickets
    body = await read_json(request)
    try:
        kind = TicketKind(body.get("kind", "enquiry"))
    except ValueError:
        raise ApiError(400, "invalid_kind", f"kind must be one of {', '.join(k.value for k in TicketKind)}") from None
    category = _category_code(body.get("category"))
    default_priority = tickets.category_priority(kind, category)
    try:
        priority = Priority(body["priority"]) if body.get("priority") else (default_priority or Priority.GENERAL)
    except ValueError:
        raise ApiError(400, "invalid_priority", "priority must be general or major") from None
    phone_raw = body.get("phone")
    phone = parse_phone(request, phone_raw) if phone_raw else None
    uniqueid = body.get("call_uniqueid")
    if uniqueid is not None and (not isinstance(uniqueid, str) or not _UNIQUEID.match(uniqueid)):
        raise ApiError(400, "invalid_request", "call_uniqueid is not an Asterisk uniqueid")
    resolved = body.get("resolved_first_contact", False)
    if not isinstance(resolved, bool):
        raise ApiError(400, "invalid_request", "resolved_first_contact must be true or false")
    new = NewDeskTicket(
        kind=kind,
        category=category,
        priority=priority,
        caller_id_raw=callerid.safe_display_name(str(phone_raw or "desk"), 64),
        caller_id=phone,
        call_uniqueid=uniqueid,
        owner_id=parse_opt_int(body.get("owner_id"), "owner_id"),
        unit_id=parse_opt_int(body.get("unit_id"), "unit_id"),
        notes=parse_text(body.get("notes"), "notes", NOTES_MAX),
        resolved_first_contact=resolved,
        hotline=_hotline(body.get("hotline")),
    )
    return json_response({"ticket": await tickets.create(user(request), new)}, status=201)


@roles(*EVERYONE)
async def ticket_update(request: web.Request) -> web.Response:
    number = _ticket_number(request)
    body = await read_json(request)
    first_contact = body.get("resolved_first_contact") is True
    status = TicketStatus.RESOLVED.value if first_contact else body.get("status")
    if status is not None and status not in [s.value for s in DESK_STATUSES]:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(s.value for s in DESK_STATUSES)}")
    priority = body.get("priority")
    if priority is not None and priority not in [p.value for p in Priority]:
        raise ApiError(400, "invalid_priority", "priority must be general or major")
    category = body.get("category")
    if category is not None:
        category = _category_code(category)
    note = parse_text(body.get("notes"), "notes", NOTES_MAX)
    if first_contact:
        note = (note + "\n" if note else "") + FIRST_CONTACT_NOTE
    if status is None and priority is None and category is None and not note:
        raise ApiError(400, "invalid_request", "nothing to change")
    department, worker = body.get("department"), body.get("worker")
    change = TicketChange(
        status=TicketStatus(status) if status is not None else None,
        priority=Priority(priority) if priority is not None else None,
        category=category,
        note=note,
        first_contact=first_contact,
        department=department if isinstance(department, str) else None,
        worker=worker if isinstance(worker, str) else None,
    )
    return json_response({"ticket": await features(request).tickets.update(user(request), number, change)})


@roles(*EVERYONE)
async def hotlines_list(request: web.Request) -> web.Response:
    """Every hotline (id and names): what tickets, calls, reports and the wallboard are filtered by."""
    return json_response({"hotlines": features(request).tickets.hotlines()})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/hotlines", hotlines_list)
    router.add_get("/api/tickets", tickets_list)
    router.add_post("/api/tickets", ticket_create)
    router.add_get("/api/tickets/{number}", ticket_get)
    router.add_patch("/api/tickets/{number}", ticket_update)
