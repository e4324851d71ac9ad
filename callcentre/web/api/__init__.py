"""The JSON API (documented in ``openapi.yaml``), one module per feature with the same shape:
handlers that check the form of a request and call that feature's service (:mod:`callcentre.web.ports`),
then ``add_routes(router)``. No SQL and no repository here. Every handler declares who may call it
(default deny in the middleware).

* :mod:`.session`  log in, log out, who am I
* :mod:`.agents`   the queue, agents' states, changing a state, listening in
* :mod:`.owners`   the owner card, search, attaching a number
* :mod:`.tickets`  tickets by number, owner or caller; made and changed at the desk
* :mod:`.recordings`  call recordings (audio by id) per ticket and call, and the call history
* :mod:`.calls`    transferring the call one is on (blind, attended), and the targets

A new route: a handler in its feature's module (``@roles(...)``), one line in that module's
``add_routes``, its entry in ``openapi.yaml``, and, when it needs something new, a method on the
feature's service and its protocol.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from callcentre.web.api import agents, calls, owners, recordings, session, tickets
from callcentre.web.auth import public

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
FEATURES = (session, agents, owners, tickets, recordings, calls)


@public
async def openapi(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(OPENAPI_PATH, headers={"Content-Type": "application/yaml; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    for feature in FEATURES:
        feature.add_routes(app.router)
    app.router.add_get("/api/openapi.yaml", openapi)


__all__ = ["FEATURES", "OPENAPI_PATH", "add_routes"]
