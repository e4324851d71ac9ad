"""Middlewares: JSON errors with stable codes, security headers, and authentication/authorisation.

Order (outermost first): :func:`error_middleware`, :func:`security_headers`, :func:`auth_middleware`.
Every ``/api/`` and ``/ws/`` route is denied unless its handler declares roles
(:func:`~callcentre.web.auth.roles`) or is marked :func:`~callcentre.web.auth.public`; static files are
public; other routes of the composition root (``/health``) are left as they are.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import structlog
from aiohttp import web

from callcentre.domain.acd import IllegalTransition, UnknownAgent
from callcentre.domain.errors import ConcurrentChange, Conflict, Forbidden, Invalid, NotFound, Unavailable
from callcentre.domain.ports import StorageUnavailable
from callcentre.web.auth import COOKIE_NAME, CSRF_HEADER, SESSION_KEY, USER_KEY
from callcentre.web.jsonsafe import safe_dumps

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "too_many_attempts",
}


# Domain errors by kind: their own ``code`` (the error's) under the kind's HTTP status. The most
# specific class of an error found here decides (a TicketNotFound is a NotFound is a LookupError).
DOMAIN_STATUS: dict[type[BaseException], int] = {
    NotFound: 404,
    Invalid: 400,
    Conflict: 409,
    Forbidden: 403,
    Unavailable: 503,
}
# Errors from parts that do not carry a code of their own: (status, code).
FOREIGN_ERRORS: dict[type[BaseException], tuple[int, str]] = {
    IllegalTransition: (409, "illegal_state_change"),
    UnknownAgent: (404, "unknown_agent"),
    LookupError: (404, "not_found"),
}
# Where the message shown is not the error's own (it names internals, or the API has always said this).
PUBLIC_MESSAGES: dict[type[BaseException], str] = {
    ConcurrentChange: "the ticket changed meanwhile; reload and try again",
}


def domain_error_response(exc: BaseException) -> web.Response | None:
    """The JSON error for a domain (or foreign) error, None when it is not one we know."""
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return json_error(DOMAIN_STATUS[cls], str(exc.code), PUBLIC_MESSAGES.get(type(exc), str(exc)))
        if cls in FOREIGN_ERRORS:
            status, code = FOREIGN_ERRORS[cls]
            message = str(exc)
            # A KeyError's str() is its quoted key: show the words, not the quotes.
            return json_error(status, code, message.strip("'\"") if cls is LookupError else message)
    return None


class ApiError(Exception):
    """An error the API reports as ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=safe_dumps)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = json_response(error_body(code, message), status=status, headers=headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/ws/")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain and HTTP errors to JSON with stable codes; never leak a traceback to a browser."""
    try:
        return await handler(request)
    except ApiError as e:
        return json_error(e.status, e.code, e.message, e.headers)
    except web.HTTPException as e:
        if not _is_api(request) or e.status < 400:
            raise
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return json_error(e.status, _HTTP_CODES.get(e.status, "http_error"), e.reason, allow)
    except StorageUnavailable as e:
        log.error("request failed: storage unavailable", path=request.path, error=str(e))
        return json_error(503, "storage_unavailable", "the database is unavailable; try again shortly")
    except Exception as e:
        known = domain_error_response(e)
        if known is not None:
            return known
        log.exception("request failed", path=request.path, method=request.method)
        return json_error(500, "internal_error", "internal error; it has been logged")


_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if not resp.prepared:
        resp.headers.setdefault("Content-Security-Policy", _CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if _is_api(request):
            resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def origin_allowed(request: web.Request, origin: str | None, allowed: list[str]) -> bool:
    """Same origin as the request, or listed in web.allowed_origins."""
    if not origin:
        return False
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in allowed


def make_auth_middleware(get_state: Callable[[web.Request], Any]) -> Any:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = get_state(request)
        match = request.match_info
        if match.http_exception is not None:
            return await handler(request)
        route = match.route
        if isinstance(getattr(route, "resource", None), web.StaticResource):
            return await handler(request)
        target = match.handler
        is_public = getattr(target, "__cc_public__", False)
        allowed = getattr(target, "__cc_roles__", None)
        session = state.sessions.read(request.cookies.get(COOKIE_NAME), state.now())
        user = None
        if session is not None:
            user = await state.features.accounts.active_user(session.user_id)
            if user is None:
                session = None
        request[SESSION_KEY] = session
        request[USER_KEY] = user
        if request.method in UNSAFE:
            origin = request.headers.get("Origin")
            # Browsers send Origin on every cross-site POST; a present but foreign one is refused.
            if origin is not None and not origin_allowed(request, origin, state.cfg.web.allowed_origins):
                raise ApiError(403, "bad_origin", "request from a foreign origin refused")
        if is_public:
            return await handler(request)
        if allowed is None and not _is_api(request):
            # A route of the composition root (/health, /metrics): not the web layer's to guard.
            return await handler(request)
        if allowed is None:
            log.error("route without a role declaration refused", path=request.path)
            raise ApiError(403, "forbidden", "this route is not open to anyone")
        if user is None:
            raise ApiError(401, "unauthenticated", "log in first")
        if user.role not in allowed:
            raise ApiError(403, "forbidden", "your role may not do this")
        if request.method in UNSAFE and not state.sessions.check_csrf(session, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header; reload the page")
        return await handler(request)

    return auth_middleware
