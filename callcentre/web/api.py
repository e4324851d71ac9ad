"""The JSON API (documented in ``openapi.yaml``). Handlers validate input and call repositories or
the ACD; no SQL here. Every handler declares who may call it (default deny in the middleware)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from callcentre.domain.ticket_number import is_ticket_number
from callcentre.domain import callerid
from callcentre.domain.model import Priority, TicketKind, TicketStatus
from callcentre.domain.promises import promise_deadline
from callcentre.storage.users import UserRole
from callcentre.storage.users_repo import UserView
from callcentre.storage.desk_repo import desk_draft
from callcentre.web import WEB, WebState
from callcentre.web.auth import (
    COOKIE_NAME,
    EVERYONE,
    SESSION_KEY,
    SESSION_SECONDS,
    SUPERVISORS,
    USER_KEY,
    public,
    roles,
)
from callcentre.web.hub import WALLBOARD, agent_topic
from callcentre.web.middleware import ApiError, json_response
from callcentre.web.ports import AgentAction, SuperviseMode

log = structlog.get_logger(__name__)

BODY_MAX = 64 * 1024
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"
_REASON = re.compile(r"^[a-z_]{1,32}$")
_CATEGORY = re.compile(r"^[a-z0-9_\-]{1,64}$")
_UNIQUEID = re.compile(r"^[0-9A-Za-z.\-_]{1,64}$")
NOTES_MAX = 2000
# What an agent may set from the desk; closing and reopening belong to the service desk (issue 5).
DESK_STATUSES = (
    TicketStatus.ACKNOWLEDGED, TicketStatus.DISPATCHED, TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED,
    TicketStatus.CLOSED, TicketStatus.REOPENED,
)


def _state(request: web.Request) -> WebState:
    return request.app[WEB]


def _user(request: web.Request) -> UserView:
    return request[USER_KEY]


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if request.content_length is not None and request.content_length > BODY_MAX:
        raise ApiError(413, "request_too_large", f"body larger than {BODY_MAX} bytes")
    raw = await request.content.read(BODY_MAX + 1)
    if len(raw) > BODY_MAX:
        raise ApiError(413, "request_too_large", f"body larger than {BODY_MAX} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"{name} must be an integer")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_request", f"{name} must be an integer") from None
    if not 0 < out < 2**31:
        raise ApiError(400, "invalid_request", f"{name} is out of range")
    return out


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None or value == "" else _int(value, name)


def _text(value: Any, name: str, max_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{name} must be a string")
    # Keep line breaks in notes; drop other control and bidi characters.
    cleaned = "\n".join(callerid.safe_display_name(line, max_len) for line in value.replace("\r", "").split("\n"))
    return cleaned.strip()[:max_len] or None


def _phone(request: web.Request, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, "invalid_phone", "phone is required")
    c = _state(request).cfg.centre
    number = callerid.normalise(raw, country_code=c.country_code, trunk_prefix=c.trunk_prefix, intl_prefix=c.international_prefix)
    if number is None:
        raise ApiError(400, "invalid_phone", "not a usable phone number")
    return number


def _acd(request: web.Request):  # type: ignore[no-untyped-def]
    acd = _state(request).acd
    if acd is None:
        raise ApiError(503, "acd_unavailable", "call distribution is not running")
    return acd


def _agent_entry(state: WebState, agent_id: int) -> dict[str, Any] | None:
    if state.acd is None:
        return None
    for a in state.acd_snapshot().get("agents", []):
        if str(a.get("agent_id")) == str(agent_id):
            return a
    return None


# ------------------------------------------------------------------------------------ session


@public
async def login(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request)
    name, password = body.get("login"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise ApiError(400, "invalid_request", "login and password are required")
    keys = ["login:" + name.strip().lower()[:64], "addr:" + (request.remote or "?")]
    now = state.monotonic()
    wait = state.limiter.retry_after(keys, now)
    if wait is not None:
        log.warning("log-in rate limited", login=name[:64], remote=request.remote)
        raise ApiError(429, "too_many_attempts", "too many log-in attempts; wait a minute", {"Retry-After": str(max(1, int(wait + 0.999)))})
    state.limiter.hit(keys, now)
    user = await state.users.authenticate(name, password)
    if user is None:
        log.info("log-in refused", login=name[:64], remote=request.remote)
        raise ApiError(401, "bad_credentials", "wrong login or password")
    token, session = state.sessions.issue(user.id, state.now())
    resp = json_response({"user": user.public(), "csrf": state.sessions.csrf_token(session), "home": _home(user)})
    resp.set_cookie(
        COOKIE_NAME,
        token,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=state.cfg.web.cookie_secure,
    )
    log.info("logged in", login=user.login, role=user.role.value)
    return resp


def _home(user: UserView) -> str:
    return "/agent" if user.role is UserRole.AGENT else "/wallboard"


@roles(*EVERYONE)
async def logout(request: web.Request) -> web.Response:
    state = _state(request)
    state.sessions.revoke(request[SESSION_KEY], state.now())
    resp = json_response({"ok": True})
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp


@roles(*EVERYONE)
async def me(request: web.Request) -> web.Response:
    state = _state(request)
    user = _user(request)
    return json_response(
        {
            "user": user.public(),
            "csrf": state.sessions.csrf_token(request[SESSION_KEY]),
            "agent": _agent_entry(state, user.id) if user.role is UserRole.AGENT else None,
            "server_time": state.server_time(),
            "centre": state.cfg.centre.name,
            "categories": _categories(state),
        }
    )


def _categories(state: WebState) -> dict[str, list[dict[str, str]]]:
    ivr = state.cfg.ivr
    out: dict[str, list[dict[str, str]]] = {}
    for kind, cats in (("repair", ivr.repair_categories), ("complaint", ivr.complaint_categories), ("emergency", ivr.emergency_categories)):
        out[kind] = [{"code": c.code, "priority": c.priority} for c in cats.values()]
    out["enquiry"] = [{"code": "general", "priority": "general"}]
    out["message"] = [{"code": "message", "priority": "general"}]
    return out


# ------------------------------------------------------------------------------------ ACD


@roles(*SUPERVISORS)
async def queue(request: web.Request) -> web.Response:
    _acd(request)
    snap = _state(request).acd_snapshot()
    return json_response({"queue": snap.get("queue", []), "figures": snap.get("figures", {})})


@roles(*SUPERVISORS)
async def agents(request: web.Request) -> web.Response:
    _acd(request)
    snap = _state(request).acd_snapshot()
    return json_response({"agents": snap.get("agents", []), "alerts": snap.get("alerts", [])})


@roles(*EVERYONE)
async def agent_state(request: web.Request) -> web.Response:
    state = _state(request)
    user = _user(request)
    agent_id = _int(request.match_info["agent_id"], "agent_id")
    body = await read_json(request)
    try:
        action = AgentAction(body.get("action"))
    except ValueError:
        raise ApiError(400, "invalid_action", f"action must be one of {', '.join(a.value for a in AgentAction)}") from None
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or not _REASON.match(reason)):
        raise ApiError(400, "invalid_reason", "reason must be a short lower-case word such as break or lunch")
    if user.role is UserRole.AGENT and agent_id != user.id:
        raise ApiError(403, "forbidden", "an agent may change only their own state")
    if user.role is UserRole.SUPERVISOR and agent_id != user.id and action not in (AgentAction.PAUSE, AgentAction.READY):
        raise ApiError(403, "forbidden", "a supervisor may pause or unpause another agent, nothing else")
    target = await state.users.get(agent_id)
    if target is None or target.role is not UserRole.AGENT or not target.active:
        raise ApiError(404, "unknown_agent", f"no active agent {agent_id}")
    acd = _acd(request)
    before = _agent_entry(state, agent_id)
    try:
        await acd.agent_action(agent_id, action.value, reason)
    except ValueError as e:
        raise ApiError(409, "illegal_state_change", str(e) or f"{action.value} is not possible now") from None
    after = _agent_entry(state, agent_id)
    await state.users.record_state(
        agent_id,
        (before or {}).get("state"),
        str((after or {}).get("state") or action.value),
        reason if user.id == agent_id else f"{reason or action.value} by {user.login}"[:64],
    )
    log.info("agent state changed", agent_id=agent_id, action=action.value, by=user.login)
    state.hub.publish(agent_topic(agent_id), {"type": "state", "agent": after, "server_time": state.server_time()})
    state.hub.publish(WALLBOARD, {"type": "snapshot", **state.acd_snapshot()})
    return json_response({"agent": after, "server_time": state.server_time()})


@roles(*SUPERVISORS)
async def supervise(request: web.Request) -> web.Response:
    state = _state(request)
    user = _user(request)
    body = await read_json(request)
    agent_id = _int(body.get("agent_id"), "agent_id")
    try:
        mode = SuperviseMode(body.get("mode"))
    except ValueError:
        raise ApiError(400, "invalid_mode", "mode must be listen, whisper or barge") from None
    if not user.supervisor_interface:
        raise ApiError(409, "no_supervisor_phone", "your account has no supervisor phone (supervisor_interface)")
    target = await state.users.get(agent_id)
    if target is None or target.role is not UserRole.AGENT:
        raise ApiError(404, "unknown_agent", f"no agent {agent_id}")
    acd = _acd(request)
    try:
        await acd.supervise(user.id, agent_id, mode.value)
    except ValueError as e:
        raise ApiError(409, "supervise_refused", str(e) or "the agent is not on a call") from None
    log.info("supervision started", agent_id=agent_id, mode=mode.value, by=user.login)
    return json_response({"status": "originating", "agent_id": agent_id, "mode": mode.value}, status=202)


# ------------------------------------------------------------------------------------ owners


@roles(*EVERYONE)
async def owner_lookup(request: web.Request) -> web.Response:
    phone = _phone(request, request.query.get("phone"))
    return json_response(await _state(request).desk.lookup_by_phone(phone))


@roles(*EVERYONE)
async def owner_search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not q.strip():
        raise ApiError(400, "invalid_request", "q (name, unit or phone) is required")
    c = _state(request).cfg.centre
    phone = callerid.normalise(q, country_code=c.country_code, trunk_prefix=c.trunk_prefix, intl_prefix=c.international_prefix)
    return json_response({"owners": await _state(request).desk.search_owners(q, phone=phone)})


@roles(*EVERYONE)
async def owner_get(request: web.Request) -> web.Response:
    owner_id = _int(request.match_info["owner_id"], "owner_id")
    return json_response(await _state(request).desk.owner_card(owner_id))


@roles(*EVERYONE)
async def owner_attach_phone(request: web.Request) -> web.Response:
    owner_id = _int(request.match_info["owner_id"], "owner_id")
    body = await read_json(request)
    raw = body.get("phone")
    number = _phone(request, raw)
    unit_id = _opt_int(body.get("unit_id"), "unit_id")
    result = await _state(request).desk.attach_phone(owner_id, number, str(raw).strip(), unit_id=unit_id)
    log.info("phone attached at the desk", owner_id=owner_id, by=_user(request).login)
    return json_response(result, status=201 if result["created"] else 200)


# ------------------------------------------------------------------------------------ tickets


@roles(*EVERYONE)
async def tickets_list(request: web.Request) -> web.Response:
    phone_q = request.query.get("phone")
    owner_q = request.query.get("owner_id")
    if not phone_q and not owner_q:
        raise ApiError(400, "invalid_request", "give phone or owner_id")
    phone = _phone(request, phone_q) if phone_q else None
    owner_id = _opt_int(owner_q, "owner_id")
    return json_response({"tickets": await _state(request).desk.tickets_for(owner_id=owner_id, phone=phone)})


@roles(*EVERYONE)
async def ticket_get(request: web.Request) -> web.Response:
    return json_response(await _state(request).desk.get_ticket(_ticket_number(request)))


def _ticket_number(request: web.Request) -> str:
    number = request.match_info["number"]
    if not is_ticket_number(number):
        raise ApiError(404, "not_found", "no such ticket")
    return number


def _category(state: WebState, kind: TicketKind, value: Any) -> tuple[str, Priority | None]:
    if not isinstance(value, str) or not _CATEGORY.match(value):
        raise ApiError(400, "invalid_category", "category must be a lower-case code")
    known = {c["code"]: c["priority"] for c in _categories(state).get(kind.value, [])}
    if kind in (TicketKind.REPAIR, TicketKind.COMPLAINT, TicketKind.EMERGENCY) and value not in known:
        raise ApiError(400, "invalid_category", f"unknown {kind.value} category {value!r}")
    return value, Priority(known[value]) if value in known else None


@roles(*EVERYONE)
async def ticket_create(request: web.Request) -> web.Response:
    state = _state(request)
    user = _user(request)
    body = await read_json(request)
    try:
        kind = TicketKind(body.get("kind", "enquiry"))
    except ValueError:
        raise ApiError(400, "invalid_kind", f"kind must be one of {', '.join(k.value for k in TicketKind)}") from None
    category, default_priority = _category(state, kind, body.get("category"))
    try:
        priority = Priority(body["priority"]) if body.get("priority") else (default_priority or Priority.GENERAL)
    except ValueError:
        raise ApiError(400, "invalid_priority", "priority must be general or major") from None
    phone_raw = body.get("phone")
    phone = _phone(request, phone_raw) if phone_raw else None
    uniqueid = body.get("call_uniqueid")
    if uniqueid is not None and (not isinstance(uniqueid, str) or not _UNIQUEID.match(uniqueid)):
        raise ApiError(400, "invalid_request", "call_uniqueid is not an Asterisk uniqueid")
    resolved = body.get("resolved_first_contact", False)
    if not isinstance(resolved, bool):
        raise ApiError(400, "invalid_request", "resolved_first_contact must be true or false")
    draft = desk_draft(
        kind=kind,
        category=category,
        priority=priority,
        caller_id_raw=callerid.safe_display_name(str(phone_raw or "desk"), 64),
        caller_id=phone,
        call_uniqueid=uniqueid,
        owner_id=_opt_int(body.get("owner_id"), "owner_id"),
        unit_id=_opt_int(body.get("unit_id"), "unit_id"),
        notes=_text(body.get("notes"), "notes", NOTES_MAX),
    )
    promised = None
    if kind in (TicketKind.REPAIR, TicketKind.COMPLAINT, TicketKind.EMERGENCY):
        promised = promise_deadline(state.cfg.tickets.promises, priority, category, state.services.clock.now())
    ticket = await state.desk.create_ticket(draft, promised)
    log.info("ticket created at the desk", ticket=ticket["number"], by=user.login, uniqueid=uniqueid)
    if resolved:
        # Solved while the caller is still on the line: the lifecycle's own path (acknowledged, then
        # resolved at first contact), so the history, the first-contact flag and the closure call-back
        # are the same as for any other ticket.
        number = ticket["number"]
        await _transition(state, user, number, TicketStatus.ACKNOWLEDGED.value, body, None, first_contact=False)
        await _transition(state, user, number, TicketStatus.RESOLVED.value, body, "resolved at first contact",
                          first_contact=True)
        ticket = await state.desk.get_ticket(number)
    return json_response({"ticket": ticket}, status=201)


@roles(*EVERYONE)
async def ticket_update(request: web.Request) -> web.Response:
    state = _state(request)
    user = _user(request)
    number = _ticket_number(request)
    body = await read_json(request)
    status = body.get("status")
    if body.get("resolved_first_contact") is True:
        status = TicketStatus.RESOLVED.value
    if status is not None and status not in [s.value for s in DESK_STATUSES]:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(s.value for s in DESK_STATUSES)}")
    priority = body.get("priority")
    if priority is not None and priority not in [p.value for p in Priority]:
        raise ApiError(400, "invalid_priority", "priority must be general or major")
    category = body.get("category")
    if category is not None and (not isinstance(category, str) or not _CATEGORY.match(category)):
        raise ApiError(400, "invalid_category", "category must be a lower-case code")
    note = _text(body.get("notes"), "notes", NOTES_MAX)
    if body.get("resolved_first_contact") is True:
        note = (note + "\n" if note else "") + "resolved at first contact"
    if status is None and priority is None and category is None and not note:
        raise ApiError(400, "invalid_request", "nothing to change")
    if status is not None:
        await _transition(state, user, number, status, body, note, first_contact=body.get("resolved_first_contact") is True)
        note = None  # recorded with the transition
    ticket = await state.desk.update_ticket(number, priority=priority, category=category, note=note, by=user.login)
    return json_response({"ticket": ticket})


async def _transition(state: WebState, user: UserView, number: str, status: str, body: dict, note: str | None,
                      *, first_contact: bool) -> None:
    """A status change goes through the ticket lifecycle: it is checked, recorded with who and when,
    and has its consequences (dispatch webhook; on resolve, the closure call-back to the owner)."""
    from callcentre.domain.lifecycle import (
        Acknowledge, ConfirmClosed, Dispatch, Reopen, Resolve, StartWork, TransitionRefused,
    )
    from callcentre.domain.service import DispatchInvalid
    from callcentre.service.tickets import ConcurrentChange

    svc = getattr(state.services, "ticket_service", None)
    if svc is None:
        raise ApiError(503, "starting", "the ticket service is not running")
    ticket_id = await svc.id_for_number(number)
    if ticket_id is None:
        raise ApiError(404, "not_found", f"ticket {number} does not exist")
    if status == TicketStatus.DISPATCHED.value:
        department, worker = body.get("department"), body.get("worker")
        if not isinstance(department, str) or not isinstance(worker, str):
            raise ApiError(400, "invalid_dispatch", "dispatch needs a department and a worker")
        event: Any = Dispatch(department, worker)
    else:
        event = {
            TicketStatus.ACKNOWLEDGED.value: Acknowledge(),
            TicketStatus.IN_PROGRESS.value: StartWork(),
            TicketStatus.RESOLVED.value: Resolve(first_contact=first_contact),
            TicketStatus.CLOSED.value: ConfirmClosed(),
            TicketStatus.REOPENED.value: Reopen(reason=note or f"reopened by {user.login}"),
        }[status]
    try:
        if user.role is UserRole.AGENT:
            await svc.set_agent(ticket_id, user.login)
        await svc.apply(ticket_id, event, user.login, note or "")
    except TransitionRefused as exc:
        raise ApiError(409, "transition_refused", str(exc)) from None
    except DispatchInvalid as exc:
        raise ApiError(400, "invalid_dispatch", str(exc)) from None
    except ConcurrentChange:
        raise ApiError(409, "concurrent_change", "the ticket changed meanwhile; reload and try again") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    log.info("ticket status changed at the desk", ticket=number, status=status, by=user.login)


@public
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(OPENAPI_PATH, headers={"Content-Type": "application/yaml; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/me", me)
    r.add_get("/api/queue", queue)
    r.add_get("/api/agents", agents)
    r.add_post("/api/agents/{agent_id}/state", agent_state)
    r.add_post("/api/supervise", supervise)
    r.add_get("/api/owners/lookup", owner_lookup)
    r.add_get("/api/owners/search", owner_search)
    r.add_get("/api/owners/{owner_id}", owner_get)
    r.add_post("/api/owners/{owner_id}/phones", owner_attach_phone)
    r.add_get("/api/tickets", tickets_list)
    r.add_post("/api/tickets", ticket_create)
    r.add_get("/api/tickets/{number}", ticket_get)
    r.add_patch("/api/tickets/{number}", ticket_update)
    r.add_get("/api/openapi.yaml", openapi)
