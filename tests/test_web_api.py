"""The desk API, sessions, roles and websockets, on a real migrated SQLite file (aiohttp test client)."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from conftest import test_database_url
import pytest
import yaml
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from sqlalchemy import update

from callcentre.config import Config, DatabaseConfig, WebConfig
from callcentre.domain.calls import CallInfo
from callcentre.domain.model import OwnerMatch
from callcentre.domain.ports import FakeClock
from callcentre.storage import db
from callcentre.storage.desk_repo import DeskRepo
from callcentre.storage.models import CallRow, Owner, OwnerUnit, Phone, TicketRow, Unit
from callcentre.storage.users_repo import UserExists, UserInvalid, UsersRepo, create_user
from callcentre.web import WEB, setup_web
from callcentre.web.hub import WALLBOARD, Hub, agent_topic, build_screen_pop

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script>\u202eevil\u200f\x07\x1b[31m"
PASSWORD = "correct horse battery"


class FakeACD:
    """Call distribution as the web layer sees it: a snapshot and state changes with real rules."""

    LEGAL = {
        "login": {"logged_out"},
        "ready": {"paused", "logged_out"},
        "pause": {"ready", "wrap_up", "on_call", "ringing"},
        "end_wrapup": {"wrap_up"},
        "logout": {"ready", "paused", "wrap_up"},
    }
    RESULT = {"login": "paused", "ready": "ready", "pause": "paused", "end_wrapup": "ready", "logout": "logged_out"}

    def __init__(self) -> None:
        self.agents: dict[int, dict[str, Any]] = {}
        self.queue: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.supervised: list[tuple[int, int, str]] = []
        self.actions: list[tuple[int, str, str | None]] = []

    def add_agent(self, agent_id: int, name: str, state: str = "logged_out") -> None:
        self.agents[agent_id] = {
            "agent_id": agent_id, "name": name, "state": state, "since": T0.isoformat(), "reason": None,
            "current_caller": None, "answered_today": 0, "missed_today": 0, "two_ring_share": None,
        }

    def snapshot(self) -> dict[str, Any]:
        agents = list(self.agents.values())
        return copy.deepcopy({
            "queue": self.queue,
            "agents": agents,
            "figures": {
                "two_ring_share_today": 0.92, "avg_wait": 4.0, "longest_wait": 12.0, "abandon_rate": 0.02,
                "waiting": len(self.queue), "agents_ready": sum(a["state"] == "ready" for a in agents),
            },
            "alerts": self.alerts,
        })

    def agent_entry(self, agent_id: int) -> dict[str, Any] | None:
        entry = self.agents.get(int(agent_id))
        return copy.deepcopy(entry) if entry is not None else None

    async def agent_action(self, agent_id: int, action: str, reason: str | None) -> None:
        agent = self.agents[agent_id]
        if agent["state"] not in self.LEGAL[action]:
            raise ValueError(f"cannot {action} while {agent['state']}")
        self.actions.append((agent_id, action, reason))
        agent["state"] = self.RESULT[action]
        agent["reason"] = reason if action == "pause" else None
        agent["since"] = datetime.now(timezone.utc).isoformat()

    async def supervise(self, supervisor_id: int, agent_id: int, mode: str) -> None:
        if self.agents[agent_id]["state"] != "on_call":
            raise ValueError("the agent is not on a call")
        self.supervised.append((supervisor_id, agent_id, mode))


@dataclass
class StubServices:
    """The part of app.Services the web layer reads."""

    cfg: Config
    clock: FakeClock
    session_factory: Any = None
    engine: Any = None
    agi: Any = None
    ami: Any = None
    acd: Any = None
    hub: Any = None
    ticket_service: Any = None
    node: Any = None  # this node in a cluster (callcentre.cluster.node.NodeInfo): /api/me names it


@dataclass
class Env:
    server: TestServer
    services: StubServices
    acd: FakeACD
    ids: dict[str, int]
    clients: list[TestClient] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def dept(self) -> str:
        return self.services.cfg.service.departments[0].code

    @property
    def worker(self) -> str:
        return self.services.cfg.service.departments[0].workers[0].id

    @property
    def hub(self) -> Hub:
        return self.server.app[WEB].hub

    async def client(self) -> TestClient:
        c = TestClient(self.server)
        await c.start_server()
        self.clients.append(c)
        return c

    async def login(self, login: str, password: str = PASSWORD) -> tuple[TestClient, str]:
        c = await self.client()
        resp = await c.post("/api/login", json={"login": login, "password": password})
        assert resp.status == 200, await resp.text()
        return c, (await resp.json())["csrf"]


def make_cfg(tmp_path: Path, **web: Any) -> Config:
    return Config(
        database=DatabaseConfig(url=test_database_url(tmp_path)),
        web=WebConfig(session_key="test-key-0123456789", login_attempts_per_minute=3, websocket_queue_max=8, **web),
    )


async def seed(sessions: Any, clock: FakeClock) -> dict[str, int]:
    now = clock.now()
    async with sessions() as s, s.begin():
        zhang = Owner(name="Zhang Wei", vip=True, created_at=now, updated_at=now)
        evil = Owner(name=HOSTILE, vip=False, created_at=now, updated_at=now)
        u1 = Unit(building="3", unit="802", fee_balance_cents=123450, fee_due_date=date(2026, 12, 1), created_at=now, updated_at=now)
        u2 = Unit(building="5", unit="101", fee_balance_cents=0, created_at=now, updated_at=now)
        s.add_all([zhang, evil, u1, u2])
        await s.flush()
        s.add_all([
            OwnerUnit(owner_id=zhang.id, unit_id=u1.id, role="owner"),
            OwnerUnit(owner_id=evil.id, unit_id=u2.id, role="owner"),
            Phone(number="+8613800138000", raw="13800138000", owner_id=zhang.id, unit_id=None),
            Phone(number="+8613900139000", raw="13900139000", owner_id=evil.id, unit_id=None),
            TicketRow(number="R20261123-0005", kind="repair", category="water", priority="general", status="new",
                      caller_id_raw="13800138000", caller_id="+8613800138000", owner_id=zhang.id, unit_id=u1.id,
                      ivr_path="2>1>rec", source="ivr", created_at=now - timedelta(minutes=10),
                      promised_by=now + timedelta(minutes=20), acknowledged_to_caller=True, updated_at=now),
            TicketRow(number="C20261120-0003", kind="complaint", category="services", priority="general", status="closed",
                      caller_id_raw="13800138000", caller_id="+8613800138000", owner_id=zhang.id, unit_id=u1.id,
                      ivr_path="3>7", source="ivr", created_at=now - timedelta(days=4), promised_by=None,
                      acknowledged_to_caller=True, updated_at=now),
        ])
        for i in range(7):  # seven earlier calls: only the last five are shown; one within 24 h
            s.add(CallRow(uniqueid=f"17000000{i}.1", caller_id="+8613800138000", owner_id=zhang.id,
                          started_at=now - timedelta(hours=3 + 30 * i), outcome="answered" if i % 2 == 0 else "abandoned",
                          ivr_path="0"))
        await s.flush()
        return {"zhang": zhang.id, "evil": evil.id, "u1": u1.id, "u2": u2.id}


@pytest.fixture
def push_interval() -> float:
    """The wallboard push loop's period; long by default so only the changes a test makes are pushed."""
    return 3600.0


@pytest.fixture
async def env(tmp_path: Path, push_interval: float) -> AsyncIterator[Env]:
    clock = FakeClock(T0)
    cfg = make_cfg(tmp_path)
    await db.upgrade(cfg.database.url, progress=None)
    engine = db.create_engine(cfg.database)
    sessions = db.session_factory(engine)
    ids = await seed(sessions, clock)
    for login, role, extra in (
        ("agent1", "agent", {"interface": "PJSIP/agent1", "skills": "repair", "languages": "zh,en"}),
        ("agent2", "agent", {"interface": "Local/agent2@callcentre-agents"}),
        ("sup", "supervisor", {"supervisor_interface": "PJSIP/sup1"}),
        ("sup2", "supervisor", {}),
        ("admin", "admin", {}),
    ):
        user = await create_user(sessions, login, login.title(), role, PASSWORD, clock=clock, **extra)
        ids[login] = user.id
    acd = FakeACD()
    acd.add_agent(ids["agent1"], "Agent1", "paused")
    acd.add_agent(ids["agent2"], "Agent2", "on_call")
    acd.queue.append({"call_id": "c1", "caller": "+8613900139000", "owner_name": HOSTILE, "unit": "5-101",
                      "ivr_choice": "repair", "priority": "normal", "entered_at": T0.isoformat(), "wait_seconds": 7.0})
    from callcentre.service.tickets import TicketService

    services = StubServices(cfg=cfg, clock=clock, session_factory=sessions, engine=engine, acd=acd,
                            ticket_service=TicketService(sessions, cfg, clock))
    app = web.Application()
    setup_web(app, services)
    app[WEB].push_interval = push_interval

    async def undeclared(request: web.Request) -> web.Response:  # no role declaration: must be refused
        return web.json_response({"leak": True})

    async def health(request: web.Request) -> web.Response:  # like app.py's /health: not the web layer's
        return web.json_response({"ok": True})

    app.router.add_get("/api/undeclared", undeclared)
    app.router.add_get("/health", health)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    e = Env(server=server, services=services, acd=acd, ids=ids)
    try:
        yield e
    finally:
        for c in e.clients:
            await c.close()
        await server.close()
        await engine.dispose()


# --------------------------------------------------------------------------------- log-in


async def test_login_sets_a_hardened_cookie_and_me_works(env: Env) -> None:
    c = await env.client()
    resp = await c.post("/api/login", json={"login": "agent1", "password": PASSWORD})
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["login"] == "agent1" and body["user"]["role"] == "agent" and body["home"] == "/agent"
    assert "password_hash" not in json.dumps(body)
    cookie = resp.headers["Set-Cookie"]
    assert "cc_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    me = await (await c.get("/api/me")).json()
    assert me["user"]["id"] == env.ids["agent1"] and me["csrf"] == body["csrf"]
    assert me["agent"]["state"] == "paused"
    assert "water" in [cat["code"] for cat in me["categories"]["repair"]]


async def test_cookie_secure_when_configured(tmp_path: Path) -> None:
    from callcentre.web.auth import SessionCodec

    cfg = make_cfg(tmp_path, cookie_secure=True)
    assert cfg.web.cookie_secure
    codec = SessionCodec("k")
    token, session = codec.issue(7, 1000.0)
    assert codec.read(token, 1001.0) == session
    assert codec.read(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], 1001.0) is None  # tampered
    assert codec.read(token, session.expires + 1) is None  # expired
    codec.revoke(session, 1002.0)
    assert codec.read(token, 1003.0) is None
    assert SessionCodec("other").read(token, 1001.0) is None  # another key


async def test_bad_password_and_unknown_login_are_refused_alike(env: Env) -> None:
    c = await env.client()
    for login in ("agent1", "nobody"):
        resp = await c.post("/api/login", json={"login": login, "password": "wrong password"})
        assert resp.status == 401
        assert (await resp.json()) == {"error": {"code": "bad_credentials", "message": "wrong login or password"}}
        assert "Set-Cookie" not in resp.headers
    assert (await c.get("/api/me")).status == 401


async def test_login_needs_json(env: Env) -> None:
    c = await env.client()
    resp = await c.post("/api/login", data="login=agent1&password=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_login_rate_limited_per_login_and_per_address(env: Env) -> None:
    c = await env.client()
    for _ in range(3):
        assert (await c.post("/api/login", json={"login": "agent1", "password": "nope nope"})).status == 401
    resp = await c.post("/api/login", json={"login": "agent1", "password": PASSWORD})  # even the right one
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "too_many_attempts"
    assert int(resp.headers["Retry-After"]) >= 1
    # The address is limited too: another login from the same address is refused now.
    resp = await c.post("/api/login", json={"login": "agent2", "password": PASSWORD})
    assert resp.status == 429
    # A minute later it works again.
    env.services.clock.advance(61)
    assert (await c.post("/api/login", json={"login": "agent1", "password": PASSWORD})).status == 200


async def test_logout_ends_the_session(env: Env) -> None:
    c, csrf = await env.login("agent1")
    assert (await c.post("/api/logout", headers={"X-CSRF-Token": csrf})).status == 200
    assert (await c.get("/api/me")).status == 401


async def test_deactivated_user_loses_access_at_once(env: Env) -> None:
    from callcentre.storage.users import User

    c, _ = await env.login("agent1")
    async with env.services.session_factory() as s, s.begin():
        await s.execute(update(User).where(User.id == env.ids["agent1"]).values(active=False))
    assert (await c.get("/api/me")).status == 401


# --------------------------------------------------------------------------------- CSRF and roles


async def test_csrf_token_required_on_state_changes(env: Env) -> None:
    c, csrf = await env.login("agent1")
    body = {"kind": "enquiry", "category": "general"}
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        resp = await c.post("/api/tickets", json=body, headers=headers)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "csrf_failed"
    # Another user's token is no good either.
    _, other = await env.login("agent2")
    assert (await c.post("/api/tickets", json=body, headers={"X-CSRF-Token": other})).status == 403
    assert (await c.post("/api/tickets", json=body, headers={"X-CSRF-Token": csrf})).status == 201


async def test_foreign_origin_post_refused(env: Env) -> None:
    c, csrf = await env.login("agent1")
    resp = await c.post("/api/tickets", json={"kind": "enquiry", "category": "general"},
                        headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "bad_origin"


async def test_roles_on_routes(env: Env) -> None:
    anon = await env.client()
    assert (await anon.get("/api/queue")).status == 401
    assert (await anon.get("/health")).status == 200
    agent, csrf = await env.login("agent1")
    for path in ("/api/queue", "/api/agents"):
        resp = await agent.get(path)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    resp = await agent.post("/api/supervise", json={"agent_id": env.ids["agent2"], "mode": "listen"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 403
    resp = await agent.post(f"/api/agents/{env.ids['agent2']}/state", json={"action": "pause"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 403
    assert env.acd.actions == []
    sup, _ = await env.login("sup")
    queue = await (await sup.get("/api/queue")).json()
    assert queue["queue"][0]["call_id"] == "c1" and queue["figures"]["waiting"] == 1
    assert len((await (await sup.get("/api/agents")).json())["agents"]) == 2
    admin, _ = await env.login("admin")
    assert (await admin.get("/api/queue")).status == 200
    # A route that declares no roles is refused to everyone, admin included.
    resp = await admin.get("/api/undeclared")
    assert resp.status == 403 and "leak" not in await resp.text()


async def test_unknown_api_path_is_a_json_error(env: Env) -> None:
    c, _ = await env.login("agent1")
    resp = await c.get("/api/nothing-here")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await c.put("/api/tickets", json={})
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


async def test_pages_redirect_to_login_and_by_role(env: Env) -> None:
    anon = await env.client()
    resp = await anon.get("/agent", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")
    assert (await anon.get("/login")).status == 200
    agent, _ = await env.login("agent1")
    resp = await agent.get("/wallboard", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/agent"
    page = await agent.get("/agent")
    assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await agent.get("/static/agent.js")).status == 200


# --------------------------------------------------------------------------------- agent state and supervision


async def test_agent_changes_own_state_and_history_is_kept(env: Env) -> None:
    c, csrf = await env.login("agent1")
    aid = env.ids["agent1"]
    resp = await c.post(f"/api/agents/{aid}/state", json={"action": "ready"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200 and (await resp.json())["agent"]["state"] == "ready"
    resp = await c.post(f"/api/agents/{aid}/state", json={"action": "end_wrapup"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "illegal_state_change"
    resp = await c.post(f"/api/agents/{aid}/state", json={"action": "pause", "reason": "Lunch; DROP"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_reason"
    resp = await c.post(f"/api/agents/{aid}/state", json={"action": "hangup_everyone"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_action"
    resp = await c.post(f"/api/agents/{aid}/state", json={"action": "pause", "reason": "lunch"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    assert env.acd.actions == [(aid, "ready", None), (aid, "pause", "lunch")]
    history = await UsersRepo(env.services.session_factory).state_history(aid)
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in history] == [("ready", "paused", "lunch"), ("paused", "ready", None)]


async def test_supervisor_pauses_another_agent_but_nothing_else(env: Env) -> None:
    c, csrf = await env.login("sup")
    a1 = env.ids["agent1"]
    resp = await c.post(f"/api/agents/{a1}/state", json={"action": "ready"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    resp = await c.post(f"/api/agents/{a1}/state", json={"action": "logout"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 403
    resp = await c.post(f"/api/agents/{env.ids['sup']}/state", json={"action": "ready"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "unknown_agent"


async def test_supervise_modes_are_a_fixed_set(env: Env) -> None:
    c, csrf = await env.login("sup")
    a2 = env.ids["agent2"]
    for mode in ("ChanSpy", "listen,B", "q", ""):
        resp = await c.post("/api/supervise", json={"agent_id": a2, "mode": mode}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_mode"
    resp = await c.post("/api/supervise", json={"agent_id": "2 & x", "mode": "listen"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 400
    resp = await c.post("/api/supervise", json={"agent_id": a2, "mode": "whisper"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 202
    resp = await c.post("/api/supervise", json={"agent_id": env.ids["agent1"], "mode": "barge"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "supervise_refused"
    assert env.acd.supervised == [(env.ids["sup"], a2, "whisper")]
    # A supervisor without a phone of their own cannot listen.
    c2, csrf2 = await env.login("sup2")
    resp = await c2.post("/api/supervise", json={"agent_id": a2, "mode": "listen"}, headers={"X-CSRF-Token": csrf2})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "no_supervisor_phone"


async def test_acd_missing_is_reported(env: Env) -> None:
    env.services.acd = None
    c, _ = await env.login("sup")
    resp = await c.get("/api/queue")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "acd_unavailable"


# --------------------------------------------------------------------------------- owners and tickets


async def test_owner_lookup_card(env: Env) -> None:
    c, _ = await env.login("agent1")
    resp = await c.get("/api/owners/lookup", params={"phone": "138-0013-8000"})
    assert resp.status == 200
    body = await resp.json()
    assert body["phone"] == "+8613800138000" and body["repeat_caller"] is True
    (card,) = body["owners"]
    assert card["name"] == "Zhang Wei" and card["vip"] is True
    assert card["units"][0] | {} == card["units"][0]
    assert (card["units"][0]["building"], card["units"][0]["unit"], card["units"][0]["fee_balance_cents"]) == ("3", "802", 123450)
    assert card["units"][0]["fee_due_date"] == "2026-12-01"
    assert [t["number"] for t in card["open_tickets"]] == ["R20261123-0005"]  # the closed one is not open
    assert card["open_tickets"][0]["remaining_seconds"] == 20 * 60
    assert len(body["last_calls"]) == 5 and body["last_calls"][0]["uniqueid"] == "170000000.1"
    assert (await c.get("/api/owners/lookup", params={"phone": "not a number"})).status == 400


async def test_repeat_flag_only_within_24_hours(env: Env) -> None:
    env.services.clock.advance(24 * 3600)  # the latest call is now 27 h old
    c, _ = await env.login("agent1")
    body = await (await c.get("/api/owners/lookup", params={"phone": "13800138000"})).json()
    assert body["repeat_caller"] is False


async def test_hostile_names_are_cleaned_and_escaped(env: Env) -> None:
    c, _ = await env.login("agent1")
    resp = await c.get("/api/owners/lookup", params={"phone": "13900139000"})
    raw = await resp.text()
    assert "<script>" not in raw and "\\u003cscript\\u003e" in raw
    name = (await resp.json())["owners"][0]["name"]
    assert name.startswith("<script>alert(1)</script>")
    assert not any(ch in name for ch in "\u202e\u200f\x07\x1b")
    sup, _ = await env.login("sup")
    raw = await (await sup.get("/api/queue")).text()
    assert "<script>" not in raw


async def test_owner_search_and_attach_number(env: Env) -> None:
    c, csrf = await env.login("agent1")
    for q in ("Zhang", "3-802", "802", "38000"):
        owners = (await (await c.get("/api/owners/search", params={"q": q})).json())["owners"]
        assert [o["name"] for o in owners] == ["Zhang Wei"], q
    assert (await (await c.get("/api/owners/search", params={"q": "%"})).json())["owners"] == []
    # An unknown caller is attached to Zhang, so the next call is recognised.
    before = await (await c.get("/api/owners/lookup", params={"phone": "+447700900123"})).json()
    assert before["owners"] == []
    url = f"/api/owners/{env.ids['zhang']}/phones"
    resp = await c.post(url, json={"phone": "+44 7700 900123"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 201
    resp = await c.post(url, json={"phone": "+447700900123"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200 and (await resp.json())["created"] is False
    after = await (await c.get("/api/owners/lookup", params={"phone": "+447700900123"})).json()
    assert [o["name"] for o in after["owners"]] == ["Zhang Wei"]
    resp = await c.post(url, json={"phone": "+447700900123", "unit_id": env.ids["u2"]}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "unit_not_owners"
    resp = await c.post("/api/owners/99999/phones", json={"phone": "13700000000"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 404


async def test_tickets_create_update_and_list(env: Env) -> None:
    c, csrf = await env.login("agent1")
    h = {"X-CSRF-Token": csrf}
    resp = await c.post("/api/tickets", headers=h, json={
        "kind": "repair", "category": "water", "notes": "leak under the sink\nsince Monday \u202e",
        "owner_id": env.ids["zhang"], "unit_id": env.ids["u1"], "phone": "13800138000", "call_uniqueid": "1795351990.9"})
    assert resp.status == 201
    t = (await resp.json())["ticket"]
    assert t["number"].startswith("R20261124-") and t["status"] == "new" and t["source"] == "agent"
    assert t["promised_by"] is not None and t["remaining_seconds"] == 30 * 60
    assert t["description"] == "leak under the sink\nsince Monday"
    resp = await c.post("/api/tickets", headers=h, json={"kind": "repair", "category": "gas"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_category"
    resp = await c.post("/api/tickets", headers=h, json={"kind": "enquiry", "category": "general", "resolved_first_contact": True})
    assert (await resp.json())["ticket"]["status"] == "resolved"
    # status changes go through the ticket lifecycle (checked, recorded, with their consequences)
    resp = await c.patch(f"/api/tickets/{t['number']}", headers=h, json={"status": "in_progress"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "transition_refused"
    resp = await c.patch(f"/api/tickets/{t['number']}", headers=h, json={"status": "acknowledged"})
    assert resp.status == 200
    resp = await c.patch(f"/api/tickets/{t['number']}", headers=h, json={"status": "dispatched", "department": "nowhere", "worker": "x"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_dispatch"
    resp = await c.patch(f"/api/tickets/{t['number']}", headers=h, json={
        "status": "dispatched", "department": env.dept, "worker": env.worker, "priority": "major", "notes": "plumber sent"})
    assert resp.status == 200, await resp.text()
    upd = (await resp.json())["ticket"]
    assert (upd["status"], upd["priority"]) == ("dispatched", "major")
    resp = await c.patch(f"/api/tickets/{t['number']}", headers=h, json={"status": "wrong"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_status"
    resp = await c.patch("/api/tickets/C20261120-0003", headers=h, json={"notes": "again"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "ticket_closed"
    resp = await c.patch("/api/tickets/R20991231-0001", headers=h, json={"notes": "x"})
    assert resp.status == 404
    by_phone = (await (await c.get("/api/tickets", params={"phone": "13800138000"})).json())["tickets"]
    assert t["number"] in [x["number"] for x in by_phone] and "C20261120-0003" in [x["number"] for x in by_phone]
    by_owner = (await (await c.get("/api/tickets", params={"owner_id": env.ids["zhang"]})).json())["tickets"]
    assert {x["number"] for x in by_owner} >= {t["number"], "R20261123-0005"}
    assert (await c.get("/api/tickets")).status == 400


async def test_bad_json_bodies(env: Env) -> None:
    c, csrf = await env.login("agent1")
    h = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    for body in ("{", "[]", '"x"', "\xff"):
        resp = await c.post("/api/tickets", data=body.encode("latin-1"), headers=h)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json", body
    resp = await c.post("/api/tickets", data=b"{" + b" " * 70000 + b"}", headers=h)
    assert resp.status == 413


# --------------------------------------------------------------------------------- websockets


async def _recv(ws: Any) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 2)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_wallboard_snapshot_on_connect_then_changes(env: Env) -> None:
    sup, _ = await env.login("sup")
    agent, csrf = await env.login("agent1")
    async with sup.ws_connect("/ws/wallboard", headers={"Origin": env.origin}) as ws:
        first = await _recv(ws)
        assert first["type"] == "snapshot" and first["queue"][0]["call_id"] == "c1"
        assert "\\u003cscript" not in json.dumps(first) and first["queue"][0]["owner_name"] == HOSTILE
        resp = await agent.post(f"/api/agents/{env.ids['agent1']}/state", json={"action": "ready"}, headers={"X-CSRF-Token": csrf})
        assert resp.status == 200
        change = await _recv(ws)
        assert change["type"] == "snapshot"
        assert {a["agent_id"]: a["state"] for a in change["agents"]}[env.ids["agent1"]] == "ready"
        env.hub.publish(WALLBOARD, {"type": "alert", "alert": {"kind": "offer_rang_too_long", "message": "rang 3 times"}})
        assert (await _recv(ws))["alert"]["message"] == "rang 3 times"


@pytest.mark.parametrize("push_interval", [0.02])
async def test_wallboard_pushes_changes_made_inside_the_acd(env: Env) -> None:
    sup, _ = await env.login("sup")
    async with sup.ws_connect("/ws/wallboard", headers={"Origin": env.origin}) as ws:
        assert (await _recv(ws))["type"] == "snapshot"
        env.acd.queue.append({"call_id": "c2", "caller": "+8613700000000", "priority": "emergency", "wait_seconds": 0.0})
        for _ in range(5):  # the first push may repeat what the connection already got
            msg = await _recv(ws)
            if len(msg["queue"]) == 2:
                break
        assert [q["call_id"] for q in msg["queue"]] == ["c1", "c2"] and msg["figures"]["waiting"] == 2


async def test_websocket_origin_checked(env: Env) -> None:
    sup, _ = await env.login("sup")
    for headers in ({"Origin": "https://evil.example"}, {}):
        resp = await sup.get("/ws/wallboard", headers={**headers, "Connection": "Upgrade", "Upgrade": "websocket",
                                                        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "bad_origin"


async def test_websocket_needs_session_and_role(env: Env) -> None:
    anon = await env.client()
    resp = await anon.get("/ws/agent", headers={"Origin": env.origin})
    assert resp.status == 401
    agent, _ = await env.login("agent1")
    resp = await agent.get("/ws/wallboard", headers={"Origin": env.origin})
    assert resp.status == 403


async def test_agent_receives_only_own_screen_pops(env: Env) -> None:
    a1, a2 = env.ids["agent1"], env.ids["agent2"]
    agent, _ = await env.login("agent1")
    resp = await agent.get("/ws/agent", params={"agent_id": str(a2)}, headers={"Origin": env.origin})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    async with agent.ws_connect("/ws/agent", headers={"Origin": env.origin}) as ws:
        snap = await _recv(ws)
        assert snap["type"] == "snapshot" and snap["agent"]["agent_id"] == a1 and snap["screen_pop"] is None
        assert env.hub.publish(agent_topic(a2), {"type": "screen_pop", "call": {"caller_name": "for agent 2"}}) == 0
        assert env.hub.publish(agent_topic(a1), {"type": "screen_pop", "call": {"caller_name": "for agent 1"}}) == 1
        msg = await _recv(ws)
        assert msg["call"]["caller_name"] == "for agent 1"
    # A supervisor may watch an agent's desk.
    sup, _ = await env.login("sup")
    async with sup.ws_connect("/ws/agent", params={"agent_id": str(a2)}, headers={"Origin": env.origin}) as ws:
        snap = await _recv(ws)
        assert snap["screen_pop"]["call"]["caller_name"] == "for agent 2"  # retained while it rings


async def test_slow_websocket_dropped_without_slowing_publish(env: Env) -> None:
    agent, _ = await env.login("agent1")
    topic = agent_topic(env.ids["agent1"])
    async with agent.ws_connect("/ws/agent", headers={"Origin": env.origin}) as ws:
        assert (await _recv(ws))["type"] == "snapshot"
        # Publish more than the queue holds without yielding: the browser cannot keep up.
        delivered = [env.hub.publish(topic, {"type": "state", "n": i}) for i in range(20)]
        assert delivered[:8] == [1] * 8 and delivered[8:] == [0] * 12
        assert env.hub.subscribers(topic) == 0
        codes = []
        while True:
            msg = await asyncio.wait_for(ws.receive(), 2)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                codes.append(ws.close_code)
                break
        assert codes == [4008]


def test_hub_drops_only_the_full_subscriber() -> None:
    hub = Hub(queue_max=8)
    slow, fast = hub.subscribe("wallboard"), hub.subscribe("wallboard")
    dropped: list[str] = []
    slow.on_drop = lambda: dropped.append("slow")
    for i in range(8):
        assert hub.publish("wallboard", {"n": i}) == 2
        fast._queue.get_nowait()
    assert hub.publish("wallboard", {"n": 8}) == 1
    assert dropped == ["slow"] and slow.dropped and not fast.dropped
    assert hub.subscribers("wallboard") == 1
    hub.publish("agent:3", {"type": "screen_pop", "call": {"x": 1}})
    assert hub.retained("agent:3") == {"type": "screen_pop", "call": {"x": 1}}
    hub.publish("agent:3", {"type": "call_ended"})
    assert hub.retained("agent:3") is None


# --------------------------------------------------------------------------------- screen-pop, users, schema


async def test_build_screen_pop_from_call_info(env: Env) -> None:
    desk = DeskRepo(env.services.session_factory, env.services.clock, repeat_caller_hours=24)
    zhang = OwnerMatch(owner_id=env.ids["zhang"], owner_name="Zhang Wei", unit_id=env.ids["u1"], building="3", unit="802",
                       fee_balance_cents=123450, fee_due_date=date(2026, 12, 1))
    info = CallInfo(uniqueid="1795351990.1", channel="PJSIP/trunk-0001", caller_id_raw="13800138000",
                    caller_id="+8613800138000", caller_name="Zhang\u202e", language="zh", matches=[zhang], owner=zhang,
                    path=["2", "1", "rec"], tickets=["R20261123-0005"])
    call = await build_screen_pop(desk, info)
    assert call["caller_name"] == "Zhang" and call["ivr_path"] == ["2", "1", "rec"] and call["ivr_tickets"] == ["R20261123-0005"]
    assert call["owners"][0]["name"] == "Zhang Wei" and call["owners"][0]["units"][0]["fee_balance_cents"] == 123450
    assert call["repeat_caller"] is True and call["identified"]["unit"] == "802"
    # A caller identified by keying in a unit (number not on file) still gets the owner's card.
    info2 = CallInfo(uniqueid="2.2", channel="x", caller_id_raw="", caller_id=None, caller_name="", language="zh", owner=zhang)
    call2 = await build_screen_pop(desk, info2)
    assert [o["name"] for o in call2["owners"]] == ["Zhang Wei"]


async def test_create_user_validates(env: Env) -> None:
    sessions = env.services.session_factory
    with pytest.raises(UserInvalid, match="interface"):
        await create_user(sessions, "agent9", "A", "agent", PASSWORD, interface="PJSIP/a&Local/b")
    with pytest.raises(UserInvalid, match="interface"):
        await create_user(sessions, "agent9", "A", "agent", PASSWORD)
    with pytest.raises(UserInvalid, match="role"):
        await create_user(sessions, "agent9", "A", "root", PASSWORD)
    with pytest.raises(UserInvalid, match="password"):
        await create_user(sessions, "agent9", "A", "admin", "short")
    with pytest.raises(UserExists):
        await create_user(sessions, "Agent1", "A", "admin", PASSWORD)
    user = await UsersRepo(sessions).by_login("agent1")
    assert user is not None and user.skills == ("repair",) and user.languages == ("zh", "en")


async def test_users_migration_matches_models(env: Env) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from callcentre.storage.models import Base

    import callcentre.storage.users  # noqa: F401  (the tables are on the shared Base)

    mine = {"users", "agent_state_history"}

    def include_name(name: Any, type_: str, parent_names: Any) -> bool:
        # Other engineers' later migrations add tables of theirs: compare only the desk's tables.
        return type_ != "table" or name in mine

    def include_object(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in mine

    def diff(conn: Any) -> list[Any]:
        opts = {"compare_type": True, "include_name": include_name, "include_object": include_object}
        ctx = MigrationContext.configure(conn, opts=opts)
        return compare_metadata(ctx, Base.metadata)

    async with env.services.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_openapi_served_and_valid(env: Env) -> None:
    c = await env.client()
    resp = await c.get("/api/openapi.yaml")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/yaml")
    spec = yaml.safe_load(await resp.text())
    validate(spec)
    routes = {r.resource.canonical for r in env.server.app.router.routes() if r.resource is not None}
    for path in spec["paths"]:
        if path != "/health":
            assert path in routes, path
    for route in ("/api/queue", "/api/agents", "/api/tickets", "/api/owners/lookup", "/api/login", "/api/logout",
                  "/api/agents/{agent_id}/state", "/api/supervise", "/api/tickets/{number}", "/api/owners/{owner_id}/phones"):
        assert route in spec["paths"]
