"""Call recordings and the call history: the lists per ticket, per call and per day, and the audio itself.

The browser names a recording by its id, never by a path: the server looks the row up, builds the path
from the recording root and the name it made itself, and streams that file (Range requests for seeking,
``audio/wav``, not cached). Supervisors, administrators and the quality department only; agents get 403.
"""

from __future__ import annotations

import re
from datetime import date

from aiohttp import web

from callcentre.domain.errors import Unavailable
from callcentre.domain.ticket_number import is_ticket_number
from callcentre.domain.users import RECORDING_LISTENERS
from callcentre.web.api.common import features, parse_int, parse_phone, user
from callcentre.web.auth import roles
from callcentre.web.middleware import ApiError, json_response

_UNIQUEID = re.compile(r"^[0-9A-Za-z.\-_]{1,64}\Z")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_LEGS = ("caller", "agent")
_FILENAME_UNSAFE = re.compile(r"[^0-9A-Za-z.\-]")


def _service(request: web.Request):  # noqa: ANN202 - the Recordings protocol of web/ports.py
    service = getattr(features(request), "recordings", None)
    if service is None:
        raise Unavailable("call recordings are not available on this server")
    return service


@roles(*RECORDING_LISTENERS)
async def recording_audio(request: web.Request) -> web.StreamResponse:
    rec_id = parse_int(request.match_info["id"], "recording id")
    leg = request.query.get("leg")
    if leg is not None and leg not in _LEGS:
        raise ApiError(400, "invalid_request", "leg must be caller or agent")
    found = await _service(request).file(user(request), rec_id, leg)
    rec = found.recording
    name = f"call-{rec.call_uniqueid}-{rec.offer_id.rpartition('#')[2]}{'-' + leg if leg else ''}.wav"
    filename = _FILENAME_UNSAFE.sub("_", name)
    return web.FileResponse(found.path, headers={
        "Content-Type": "audio/wav",
        "Cache-Control": "no-store",
        "Content-Disposition": f'inline; filename="{filename}"',
    })


@roles(*RECORDING_LISTENERS)
async def ticket_recordings(request: web.Request) -> web.Response:
    number = request.match_info["number"]
    if not is_ticket_number(number):
        raise ApiError(404, "not_found", "no such ticket")
    return json_response(await _service(request).for_ticket(user(request), number))


@roles(*RECORDING_LISTENERS)
async def call_recordings(request: web.Request) -> web.Response:
    uniqueid = request.match_info["uniqueid"]
    if not _UNIQUEID.match(uniqueid):
        raise ApiError(404, "not_found", "no such call")
    return json_response(await _service(request).for_call(user(request), uniqueid))


@roles(*RECORDING_LISTENERS)
async def call_history(request: web.Request) -> web.Response:
    service = _service(request)
    raw_day = request.query.get("day")
    if raw_day:
        if not _DAY.match(raw_day):
            raise ApiError(400, "invalid_request", "day must be YYYY-MM-DD")
        try:
            day = date.fromisoformat(raw_day)
        except ValueError:
            raise ApiError(400, "invalid_request", "day is not a date") from None
    else:
        day = service.today()
    phone_q = request.query.get("phone")
    phone = parse_phone(request, phone_q) if phone_q else None
    return json_response(await service.history(user(request), day, phone))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/recordings/{id}", recording_audio)
    router.add_get("/api/tickets/{number}/recordings", ticket_recordings)
    router.add_get("/api/calls/{uniqueid}/recordings", call_recordings)
    router.add_get("/api/call-history", call_history)
