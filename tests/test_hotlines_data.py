"""Several hotlines in the data (issue 12, point 3): tickets and calls carry their hotline (migration 0006),
the reports, the CLI and the API filter by it, the prompts tool renders each hotline's own prompts, and the
dialplan hands the server the number dialled."""

from __future__ import annotations

import copy
import importlib.util
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from click.testing import CliRunner
from sqlalchemy import text

from callcentre.cli import main
from callcentre.config import Config, DatabaseConfig, WebConfig
from callcentre.domain import reports
from callcentre.domain.errors import Invalid
from callcentre.domain.model import Priority, TicketDraft, TicketKind
from callcentre.domain.ports import FakeClock
from callcentre.service.reports import ReportService
from callcentre.storage import db
from callcentre.storage.models import CallRow, TicketRow
from callcentre.storage.repo import SqlTicketStore
from callcentre.storage.users_repo import create_user
from callcentre.web import setup_web
from tests.conftest import on_postgres, test_database_url
from test_dialplan_failover import FIRST, Interpreter, Server
from test_dialplans import EXTENSIONS, read_dialplan
from test_hotlines import TWO

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
PASSWORD = "hotline-test-password"


def cfg_for(tmp_path: Path, hotlines: bool = True, **extra: Any) -> Config:
    data = copy.deepcopy(TWO) if hotlines else {}
    data.update(extra)
    data["database"] = {"url": test_database_url(tmp_path)}
    data["web"] = {"session_key": "hotline-test-key-0123456789"}
    return Config.model_validate(data)


# ------------------------------------------------------------------------------------------- storage


@pytest.mark.skipif(on_postgres(), reason="walks the SQLite file from revision 0004 (the migration is dialect-neutral)")
async def test_the_migration_gives_existing_rows_the_default_hotline(tmp_path: Path) -> None:
    url = test_database_url(tmp_path)
    alembic_cfg = db._alembic_config(url)

    def to(revision: str, **attrs: str):
        def run(conn):
            alembic_cfg.attributes.update(connection=conn, **attrs)
            command.upgrade(alembic_cfg, revision)
        return run

    engine = db.create_engine(DatabaseConfig(url=url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(to("0004"))
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO tickets (number, kind, category, priority, status, caller_id_raw, ivr_path, source, "
                "created_at, acknowledged_to_caller, updated_at) VALUES ('R20261101-0001', 'repair', 'water', "
                "'general', 'new', '138', '2>1', 'ivr', '2026-11-01 02:00:00', 0, '2026-11-01 02:00:00')"))
            await conn.execute(text("INSERT INTO calls (uniqueid, ivr_path, started_at) VALUES ('1.1', '2', '2026-11-01 02:00:00')"))
        async with engine.begin() as conn:
            await conn.run_sync(to("head", default_hotline="riverside"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT hotline FROM tickets"))).scalars().all() == ["riverside"]
            assert (await conn.execute(text("SELECT hotline FROM calls"))).scalars().all() == ["riverside"]
            with pytest.raises(Exception, match="NOT NULL"):
                await conn.execute(text("INSERT INTO calls (uniqueid, ivr_path, hotline) VALUES ('2.1', '', NULL)"))
        async with engine.begin() as conn:  # and back down
            await conn.run_sync(lambda c: (alembic_cfg.attributes.update(connection=c), command.downgrade(alembic_cfg, "0004")))
        async with engine.connect() as conn:
            cols = [r[1] for r in (await conn.execute(text("PRAGMA table_info(tickets)"))).all()]
            assert "hotline" not in cols
    finally:
        await engine.dispose()


async def test_tickets_and_calls_carry_their_hotline_or_the_default(tmp_path: Path) -> None:
    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    engine = db.create_engine(DatabaseConfig(url=url))
    sessions = db.session_factory(engine)
    store = SqlTicketStore(sessions, FakeClock(T0), default_hotline="riverside")
    try:
        draft = TicketDraft(TicketKind.REPAIR, "water", Priority.GENERAL, "138", "+86138", "1.1", hotline="lakeside")
        lake = await store.create_ticket(draft, None)
        river = await store.create_ticket(TicketDraft(TicketKind.REPAIR, "water", Priority.GENERAL, "138", None, "2.1"), None)
        assert (lake.hotline, river.hotline) == ("lakeside", "riverside")
        assert (await store.get_ticket(lake.id)).hotline == "lakeside"
        await store.record_call_event("1.1", "answered", {"answered_by": "li"})  # before "started": the default
        assert (await store.get_call("1.1")).hotline == "riverside"
        await store.record_call_event("1.1", "started", {"hotline": "lakeside", "caller_id": "+86138"})
        await store.record_call_event("1.1", "ivr-finished", {"outcome": "done"})
        row = await store.get_call("1.1")
        assert (row.hotline, row.answered_by, row.outcome) == ("lakeside", "li", "done")
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------- reports


async def seed(sessions, rows: list[Any]) -> None:
    async with sessions() as s, s.begin():
        s.add_all(rows)


def ticket(number: str, hotline: str, uniqueid: str, **kw: Any) -> TicketRow:
    return TicketRow(number=number, kind=kw.pop("kind", "repair"), category="water", priority="general",
                     status=kw.pop("status", "new"), caller_id_raw="13800138000", caller_id="+8613800138000", call_uniqueid=uniqueid,
                     ivr_path="2>1", source="ivr", created_at=T0, promised_by=T0 + timedelta(minutes=30),
                     acknowledged_to_caller=True, updated_at=T0, hotline=hotline, **kw)


def callrow(uniqueid: str, hotline: str, path: str, **kw: Any) -> CallRow:
    return CallRow(uniqueid=uniqueid, caller_id="+86138", started_at=T0, ivr_path=path, hotline=hotline, **kw)


@pytest.fixture
async def report_env(tmp_path: Path):
    data = copy.deepcopy(TWO)
    data["hotlines"][1]["ivr"]["menu"]["5"] = "repair"  # lakeside: 5 is repair; riverside: 5 is nothing
    data["database"] = {"url": test_database_url(tmp_path)}
    cfg = Config.model_validate(data)
    await db.upgrade(cfg.database.url, progress=None)
    engine = db.create_engine(cfg.database)
    sessions = db.session_factory(engine)
    await seed(sessions, [
        ticket("R20261124-0001", "riverside", "r1"), ticket("R20261124-0002", "lakeside", "l1"),
        ticket("C20261124-0003", "lakeside", "l2", kind="complaint"),
        callrow("r1", "riverside", "2>1>rec", answered_by=None), callrow("l1", "lakeside", "5>1>rec"),
        callrow("l2", "lakeside", "3>1>rec", answered_by="li", within_target=True),
        # chose a ticket-making branch, no ticket: riverside "2" (repair), lakeside "5" (its repair)
        callrow("r9", "riverside", "2"), callrow("l9", "lakeside", "5"),
        # "5" on riverside and "1" on lakeside are no choice on those menus: not missing anything
        callrow("r8", "riverside", "5"), callrow("l8", "lakeside", "4"),
    ])
    try:
        yield cfg, sessions
    finally:
        await engine.dispose()


async def test_daily_and_monthly_reports_filter_by_hotline_and_read_each_path_with_its_menu(report_env) -> None:
    cfg, sessions = report_env
    service = ReportService(sessions, cfg, FakeClock(T0))
    day = date(2026, 11, 24)
    every = await service.daily(day)
    assert every.intake == 3 and sorted(m.uniqueid for m in every.calls_without_ticket) == ["l9", "r9"]
    lake = await service.daily(day, "lakeside")
    assert lake.intake == 2 and lake.by_kind == {"repair": 1, "complaint": 1}
    assert [(m.uniqueid, m.action) for m in lake.calls_without_ticket] == [("l9", "repair")]
    river = await service.daily(day, "riverside")
    assert river.intake == 1 and [m.uniqueid for m in river.calls_without_ticket] == ["r9"]
    assert "hotline lakeside" in service.render_daily(lake, "lakeside").splitlines()[0]
    month = await service.month(2026, 11, "lakeside")
    total = month.statistics("category")[-1]
    assert (total.group, total.tickets, total.calls_answered) == ("(total)", 2, 1) and month.file_tag == "2026-11-lakeside"
    assert (await service.month(2026, 11)).statistics("category")[-1].tickets == 3
    with pytest.raises(Invalid) as err:
        await service.daily(day, "hillside")
    assert err.value.code == "unknown_hotline" and "riverside, lakeside" in str(err.value)


def test_the_reconciliation_without_menus_keeps_its_old_reading() -> None:
    call = reports.CallRow("1.1", T0, "+86138", "2", hotline="lakeside")
    recon = reports.daily_reconciliation(date(2026, 11, 24), "Asia/Shanghai", [], [call], {"2": "repair"}, T0)
    assert [m.action for m in recon.calls_without_ticket] == ["repair"]
    recon = reports.daily_reconciliation(date(2026, 11, 24), "Asia/Shanghai", [], [call], {"2": "repair"}, T0,
                                         {"lakeside": {"2": "agent"}})
    assert recon.calls_without_ticket == []


def test_the_report_commands_take_a_hotline(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    data = copy.deepcopy(TWO)
    data["database"] = {"url": test_database_url(tmp_path)}
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(main, ["-c", str(p), "db", "upgrade"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["-c", str(p), "report", "daily", "--date", "2026-11-24", "--hotline", "hillside"])
    assert r.exit_code == 2 and "no hotline 'hillside'" in r.output and "riverside, lakeside" in r.output
    r = runner.invoke(main, ["-c", str(p), "report", "daily", "--date", "2026-11-24", "--hotline", "lakeside"])
    assert r.exit_code == 0 and "Daily reconciliation 2026-11-24 hotline lakeside" in r.output, r.output
    r = runner.invoke(main, ["-c", str(p), "report", "monthly", "--month", "2026-11", "--hotline", "lakeside",
                             "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert sorted(f.name for f in (tmp_path / "out").iterdir())[0] == "monthly-2026-11-lakeside-agent.csv"


# ------------------------------------------------------------------------------------------- the API


class Services:
    def __init__(self, cfg: Config, sessions: Any, engine: Any, clock: FakeClock) -> None:
        from callcentre.service.tickets import TicketService

        self.cfg, self.session_factory, self.engine, self.clock = cfg, sessions, engine, clock
        self.agi = self.ami = self.acd = self.hub = None
        self.ticket_service = TicketService(sessions, cfg, clock)


@pytest.fixture
async def api(tmp_path: Path, report_env):
    cfg, sessions = report_env
    cfg = cfg.model_copy(update={"web": WebConfig(session_key="hotline-test-key-0123456789")})
    clock = FakeClock(T0)
    for login, role in (("agent1", "agent"), ("sup", "supervisor")):
        extra = {"interface": "PJSIP/agent1"} if role == "agent" else {}
        await create_user(sessions, login, login, role, PASSWORD, clock=clock, **extra)
    app = web.Application()
    setup_web(app, Services(cfg, sessions, None, clock))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    clients: list[TestClient] = []

    async def login(who: str) -> tuple[TestClient, str]:
        c = TestClient(server)
        await c.start_server()
        clients.append(c)
        r = await c.post("/api/login", json={"login": who, "password": PASSWORD})
        assert r.status == 200, await r.text()
        return c, (await r.json())["csrf"]

    try:
        yield login, str(server.make_url("")).rstrip("/")
    finally:
        for c in clients:
            await c.close()
        await server.close()


async def test_the_api_lists_and_filters_by_hotline(api) -> None:
    login, origin = api
    sup, csrf = await login("sup")
    r = await sup.get("/api/hotlines")
    assert [h["id"] for h in (await r.json())["hotlines"]] == ["riverside", "lakeside"]
    r = await sup.get("/api/tickets", params={"hotline": "lakeside"})
    assert r.status == 200 and sorted(t["number"] for t in (await r.json())["tickets"]) == ["C20261124-0003", "R20261124-0002"]
    r = await sup.get("/api/tickets", params={"phone": "+8613800138000", "hotline": "riverside"})
    assert [(t["number"], t["hotline"]) for t in (await r.json())["tickets"]] == [("R20261124-0001", "riverside")]
    for bad in ("hillside", "Lake;side"):
        r = await sup.get("/api/tickets", params={"hotline": bad})
        assert r.status == 400 and (await r.json())["error"]["code"] == "unknown_hotline"
    r = await sup.get("/api/reports/daily", params={"date": "2026-11-24", "hotline": "lakeside"})
    body = await r.json()
    assert body["hotline"] == "lakeside" and body["intake"] == 2 and [c["uniqueid"] for c in body["calls_without_ticket"]] == ["l9"]
    r = await sup.get("/api/reports/monthly", params={"month": "2026-11", "hotline": "lakeside"})
    body = await r.json()
    assert body["groupings"][0]["csv"].endswith("&hotline=lakeside")
    r = await sup.get(body["groupings"][0]["csv"])
    assert r.status == 200 and "monthly-2026-11-lakeside-category.csv" in r.headers["Content-Disposition"]
    # a ticket made at the desk for a call takes the call's hotline
    r = await sup.post("/api/tickets", json={"kind": "enquiry", "category": "general", "call_uniqueid": "l8"},
                       headers={"X-CSRF-Token": csrf, "Origin": origin})
    assert r.status == 201 and (await r.json())["ticket"]["hotline"] == "lakeside"
    # an agent looks callers up as before, but does not list a hotline's tickets
    agent, _ = await login("agent1")
    r = await agent.get("/api/tickets", params={"hotline": "lakeside"})
    assert r.status == 403
    r = await agent.get("/api/tickets", params={"phone": "+8613800138000"})
    assert r.status == 200 and len((await r.json())["tickets"]) == 3  # every hotline's (the desk one has no number)


# ------------------------------------------------------------------------------------------- prompts tool


def _tool():
    spec = importlib.util.spec_from_file_location("make_prompts_hotlines", REPO / "tools" / "make_prompts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_each_hotline_greeting_says_its_name_and_bad_ones_are_refused(tmp_path: Path) -> None:
    mp = _tool()
    jobs = {j.key: j for j in mp.hotline_jobs([REPO / "examples" / "two-estates.yaml"])}
    assert jobs["hotlines/riverside/zh/greeting"].text == "您好，江畔花园物业客户服务中心为您服务。"
    assert "Lakeside Court" in jobs["hotlines/lakeside/en/greeting"].text
    assert jobs["hotlines/lakeside/zh/closed-hours"].path == REPO / "prompts" / "hotlines" / "lakeside" / "zh" / "closed-hours.wav"
    for job in jobs.values():  # committed, and what the manifest says was rendered from this text
        assert job.path.is_file() and mp.problem(job, mp.load_manifest()) is None, job.key
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"hotlines": [{"id": "hill", "name": {"en": "Hill"}},
                                                {"id": "vale", "name": {"zh": "谷", "en": "Vale"},
                                                 "prompts": {"own": ["greeting", "goodbye"], "texts": {"goodbye": {"zh": "Bye 1"}}}}]},
                                  allow_unicode=True), encoding="utf-8")
    with pytest.raises(mp.CatalogueError) as err:
        mp.hotline_jobs([bad])
    msg = str(err.value)
    assert "the zh greeting needs name.zh in Chinese" in msg and "no en text for goodbye" in msg
    assert "goodbye.zh: the pinyin voice misreads" in msg


# ------------------------------------------------------------------------------------------- the dialplan


@pytest.mark.parametrize("given, passed", [
    ("4008002002", "4008002002"), ("+86 400-800 2002", "864008002002"), ("4008;002002${X}", "4008002002"), ("", ""),
])
def test_the_dialplan_passes_the_filtered_did_to_the_hotline_script(given: str, passed: str) -> None:
    dp = read_dialplan(EXTENSIONS)
    interp = Interpreter(dp, {"CALLCENTRE_AGI": FIRST}, {FIRST: Server(answers=True, done=True)}, "Ring", {"CC_DID": given})
    out = interp.run("callcentre-hotline", "s")
    assert out.agis == [(FIRST, "hotline")] and out.end == "hangup" and interp.vars["CC_DID"] == passed
    [agi] = [s for s in dp.contexts["callcentre-hotline"]["s"] if s.app == "AGI"]
    assert agi.data == "agi://${CC_AGI}/hotline,${CC_DID}"
    for exten in ("_X.", "_+X."):  # the trunk's number becomes CC_DID, digits only, before s runs
        sets = [s.data for s in dp.contexts["callcentre-hotline"][exten] if s.app == "Set"]
        assert sets == ["CC_DID=${FILTER(0-9,${EXTEN})}"], exten


def test_the_fallback_uses_the_hotlines_own_mailbox_then_the_shared_one() -> None:
    steps = read_dialplan(EXTENSIONS).contexts["callcentre-fallback"]["s"]
    boxes = [s.data for s in steps if s.app == "Set" and s.data.startswith("CC_MAILBOX=")]
    assert boxes == ["CC_MAILBOX=${FILTER(-_@a-zA-Z0-9,${CALLCENTRE_MAILBOX_${CC_DID}})}",
                     "CC_MAILBOX=${FILTER(-_@a-zA-Z0-9,${CALLCENTRE_MAILBOX})}", "CC_MAILBOX=9000@callcentre"]
