"""The web layer's boundaries: handlers reach services and ports only, and the domain's errors reach
the error middleware with their own codes (nothing converts them on the way)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from callcentre.domain.acd import UnknownAgent
from callcentre.domain.errors import ConcurrentChange, Conflict, Forbidden, Invalid, NotFound, TicketNotFound, Unavailable
from callcentre.domain.lifecycle import EventName, TransitionRefused
from callcentre.domain.model import TicketStatus
from callcentre.domain.ports import StorageUnavailable
from callcentre.domain.service import DispatchInvalid
from callcentre.domain.users import AgentStateRefused, NotAnAgent, UserInvalid
from callcentre.web.middleware import error_middleware

WEB = Path(__file__).resolve().parent.parent / "callcentre" / "web"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_the_web_layer_never_imports_storage() -> None:
    files = sorted(WEB.rglob("*.py"))
    assert {"api/tickets.py", "reports.py", "ws.py", "__init__.py", "middleware.py"} <= {
        str(p.relative_to(WEB)) for p in files
    }
    for path in files:
        for name in _imports(path):
            assert not name.startswith("callcentre.storage"), f"{path.relative_to(WEB)} imports {name}"
            assert not name.startswith("sqlalchemy"), f"{path.relative_to(WEB)} imports {name}"


def test_every_api_feature_module_has_the_same_shape() -> None:
    from callcentre.web import api

    assert [m.__name__.rsplit(".", 1)[1] for m in api.FEATURES] == [
        "session", "agents", "owners", "tickets", "recordings", "calls"]
    for module in api.FEATURES:
        assert callable(module.add_routes), module.__name__
        assert "callcentre.service.reports_cmd" not in _imports(Path(module.__file__))


def _ticket_refused() -> TransitionRefused:
    return TransitionRefused("R20261124-0001", TicketStatus.NEW, EventName.RESOLVE, "allowed only when in_progress")


# (error raised by a handler, status, code, message)
CASES: list[tuple[BaseException, int, str, str]] = [
    (TicketNotFound("ticket R20261124-0009 does not exist"), 404, "not_found", "ticket R20261124-0009 does not exist"),
    (NotFound("owner 7 does not exist"), 404, "not_found", "owner 7 does not exist"),
    (NotAnAgent("no active agent 3"), 404, "unknown_agent", "no active agent 3"),
    (UnknownAgent("unknown agent '9'"), 404, "unknown_agent", "unknown agent '9'"),  # from call distribution
    (KeyError("missing"), 404, "not_found", "missing"),  # a bare lookup: the words, not the quotes
    (Invalid("note is too long"), 400, "invalid_request", "note is too long"),
    (DispatchInvalid("unknown department 'x'"), 400, "invalid_dispatch", "unknown department 'x'"),
    (UserInvalid("login: bad"), 400, "invalid_user", "login: bad"),
    (Invalid("unknown repair category 'gas'", code="invalid_category"), 400, "invalid_category",
     "unknown repair category 'gas'"),
    (_ticket_refused(), 409, "transition_refused", str(_ticket_refused())),
    (Conflict("ticket R1 is closed", code="ticket_closed"), 409, "ticket_closed", "ticket R1 is closed"),
    (ConcurrentChange("ticket R1 was changed by someone else; reload it"), 409, "concurrent_change",
     "the ticket changed meanwhile; reload and try again"),
    (AgentStateRefused("end_wrapup is not possible now"), 409, "illegal_state_change", "end_wrapup is not possible now"),
    (Forbidden("an agent may change only their own state"), 403, "forbidden", "an agent may change only their own state"),
    (Unavailable("call distribution is not running", code="acd_unavailable"), 503, "acd_unavailable",
     "call distribution is not running"),
    (StorageUnavailable("cannot read: disk is full"), 503, "storage_unavailable",
     "the database is unavailable; try again shortly"),
]


@pytest.fixture
async def raising_client() -> Any:
    box: dict[str, BaseException] = {}

    async def handler(request: web.Request) -> web.Response:
        raise box["error"]

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api/boom", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, box
    finally:
        await client.close()


@pytest.mark.parametrize("error, status, code, message", CASES, ids=[type(c[0]).__name__ + ":" + c[2] for c in CASES])
async def test_domain_errors_reach_the_middleware_with_their_own_codes(
    raising_client: Any, error: BaseException, status: int, code: str, message: str
) -> None:
    client, box = raising_client
    box["error"] = error
    resp = await client.get("/api/boom")
    assert resp.status == status
    assert await resp.json() == {"error": {"code": code, "message": message}}


async def test_an_unknown_error_is_a_logged_500_without_its_message(raising_client: Any) -> None:
    client, box = raising_client
    box["error"] = ValueError("secret internals")  # a bare ValueError is a bug, not a refusal
    with capture_logs() as logs:
        resp = await client.get("/api/boom")
    assert resp.status == 500
    body = await resp.json()
    assert body["error"]["code"] == "internal_error" and "secret" not in body["error"]["message"]
    assert any(e["event"] == "request failed" and e.get("exc_info") for e in logs)
