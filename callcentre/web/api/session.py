"""Session: log in, log out, and who am I (with the desk's categories and the agent's own state)."""

from __future__ import annotations

import structlog
from aiohttp import web

from callcentre.domain.users import ALL_USERS, UserRole, home_page
from callcentre.web.api.common import features, read_json, state, user
from callcentre.web.auth import COOKIE_NAME, SESSION_KEY, SESSION_SECONDS, public, roles
from callcentre.web.middleware import ApiError, json_response

log = structlog.get_logger(__name__)


@public
async def login(request: web.Request) -> web.Response:
    st = state(request)
    body = await read_json(request)
    name, password = body.get("login"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise ApiError(400, "invalid_request", "login and password are required")
    keys = ["login:" + name.strip().lower()[:64], "addr:" + (request.remote or "?")]
    now = st.monotonic()
    wait = st.limiter.retry_after(keys, now)
    if wait is not None:
        log.warning("log-in rate limited", login=name[:64], remote=request.remote)
        raise ApiError(429, "too_many_attempts", "too many log-in attempts; wait a minute", {"Retry-After": str(max(1, int(wait + 0.999)))})
    st.limiter.hit(keys, now)
    who = await st.features.accounts.authenticate(name, password)
    if who is None:
        log.info("log-in refused", login=name[:64], remote=request.remote)
        raise ApiError(401, "bad_credentials", "wrong login or password")
    token, session = st.sessions.issue(who.id, st.now())
    resp = json_response({"user": who.public(), "csrf": st.sessions.csrf_token(session), "home": home_page(who)})
    resp.set_cookie(
        COOKIE_NAME,
        token,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=st.cfg.web.cookie_secure,
    )
    log.info("logged in", login=who.login, role=who.role.value)
    return resp


@roles(*ALL_USERS)
async def logout(request: web.Request) -> web.Response:
    st = state(request)
    st.sessions.revoke(request[SESSION_KEY], st.now())
    resp = json_response({"ok": True})
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp


@roles(*ALL_USERS)
async def me(request: web.Request) -> web.Response:
    st = state(request)
    desk = features(request)
    who = user(request)
    return json_response(
        {
            "user": who.public(),
            "csrf": st.sessions.csrf_token(request[SESSION_KEY]),
            "agent": desk.agents.agent_entry(who.id) if who.role is UserRole.AGENT else None,
            "server_time": desk.agents.server_time(),
            "centre": st.cfg.centre.name,
            "categories": desk.tickets.categories(),
            # which server answers this page, and its part in a cluster (callcentre/cluster/node.py)
            "node": node.public() if (node := getattr(st.services, "node", None)) is not None else None,
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/login", login)
    router.add_post("/api/logout", logout)
    router.add_get("/api/me", me)
