"""The HTML pages and static files (no build step: plain files served as they are).

Pages are public routes that redirect to the log-in page when there is no session, so a browser
never gets a JSON error for a page; the data itself comes from the role-checked API.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from callcentre.domain.users import home_page, may_hear_recordings, sees_supervisor_pages
from callcentre.web.auth import USER_KEY, public

STATIC_DIR = Path(__file__).resolve().parent / "static"
_NO_CACHE = {"Cache-Control": "no-store"}


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers={**_NO_CACHE, "Content-Type": "text/html; charset=utf-8"})


@public
async def index(request: web.Request) -> web.StreamResponse:
    user = request[USER_KEY]
    if user is None:
        raise web.HTTPFound("/login")
    raise web.HTTPFound(home_page(user))


@public
async def login_page(request: web.Request) -> web.StreamResponse:
    return _page("login.html")


@public
async def agent_page(request: web.Request) -> web.StreamResponse:
    if request[USER_KEY] is None:
        raise web.HTTPFound("/login?next=/agent")
    return _page("agent.html")


@public
async def wallboard_page(request: web.Request) -> web.StreamResponse:
    user = request[USER_KEY]
    if user is None:
        raise web.HTTPFound("/login?next=/wallboard")
    if not sees_supervisor_pages(user):
        raise web.HTTPFound("/agent")
    return _page("wallboard.html")


@public
async def calls_page(request: web.Request) -> web.StreamResponse:
    """The call history and the recordings (supervisors, administrators, the quality department)."""
    user = request[USER_KEY]
    if user is None:
        raise web.HTTPFound("/login?next=/calls")
    if not may_hear_recordings(user):
        raise web.HTTPFound(home_page(user))
    return _page("calls.html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page)
    app.router.add_get("/agent", agent_page)
    app.router.add_get("/wallboard", wallboard_page)
    app.router.add_get("/calls", calls_page)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
