"""What every feature's handlers share: the state, the user, and checking a request's form.

Handlers check the form of what the browser sent (types, sizes, known words) and answer
:class:`~callcentre.web.middleware.ApiError` when it is wrong; whether it is allowed or possible is
the services' to say, with the domain's errors, which the error middleware turns into JSON.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from callcentre.domain import callerid
from callcentre.domain.users import UserView
from callcentre.web import WEB, WebState
from callcentre.web.auth import USER_KEY
from callcentre.web.middleware import ApiError
from callcentre.web.ports import DeskFeatures

BODY_MAX = 64 * 1024


def state(request: web.Request) -> WebState:
    return request.app[WEB]


def features(request: web.Request) -> DeskFeatures:
    return request.app[WEB].features


def user(request: web.Request) -> UserView:
    """The logged-in user (the auth middleware has refused the request without one)."""
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


def parse_int(value: Any, name: str) -> int:
    """A positive database id (what the browser sent may be a number or a string of digits)."""
    if isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"{name} must be an integer")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_request", f"{name} must be an integer") from None
    if not 0 < out < 2**31:
        raise ApiError(400, "invalid_request", f"{name} is out of range")
    return out


def parse_opt_int(value: Any, name: str) -> int | None:
    return None if value is None or value == "" else parse_int(value, name)


def parse_text(value: Any, name: str, max_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{name} must be a string")
    # Keep line breaks in notes; drop other control and bidi characters.
    cleaned = "\n".join(callerid.safe_display_name(line, max_len) for line in value.replace("\r", "").split("\n"))
    return cleaned.strip()[:max_len] or None


def normalise_phone(request: web.Request, raw: str) -> str | None:
    """A number as the centre's caller IDs are kept (E.164), None when it cannot be one."""
    c = state(request).cfg.centre
    return callerid.normalise(raw, country_code=c.country_code, trunk_prefix=c.trunk_prefix, intl_prefix=c.international_prefix)


def parse_phone(request: web.Request, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, "invalid_phone", "phone is required")
    number = normalise_phone(request, raw)
    if number is None:
        raise ApiError(400, "invalid_phone", "not a usable phone number")
    return number
