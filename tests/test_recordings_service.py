"""Call recordings on a real migrated database: the rows and alerts, retention, who may play what and how the
file is found (never from a path the browser sends), the web API (roles, Range, hostile ids), /health and
/metrics from the composition root, and migration 0005 (the quality role without losing agent history)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator

from conftest import test_database_url
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert, select, text

from callcentre.config import Config, DatabaseConfig
from callcentre.domain.errors import Forbidden, NotFound
from callcentre.domain.ports import FakeClock
from callcentre.domain.recordings import RecordingResult, RecordingStatus, wav_header
from callcentre.domain.users import UserRole, UserView
from callcentre.service.recordings import RecordingGone, RecordingNotFound, RecordingService
from callcentre.storage import db
from callcentre.storage.models import CallRow, TicketRow
from callcentre.storage.recordings import RecordingRow, RecordingsRepo
from callcentre.storage.users_repo import create_user

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)  # 10:00 in Asia/Shanghai
PASSWORD = "correct horse battery"
UID = "1795351990.1"


def user(role: UserRole) -> UserView:
    return UserView(9, role.value, role.value, role, True, None, (), (), False, None)


SUP, QA, AGENT = user(UserRole.SUPERVISOR), user(UserRole.QUALITY), user(UserRole.AGENT)


class World:
    def __init__(self, tmp_path: Path, **recording: Any) -> None:
        self.root = tmp_path / "rec"
        self.root.mkdir()
        self.cfg = Config.model_validate({
            "database": {"url": test_database_url(tmp_path)},
            "web": {"session_key": "test-key-0123456789"},
            "recording": {"enabled": True, "directory": str(self.root), "asterisk_directory": str(self.root),
                          "min_free_mb": 0, "retention_days": 30, **recording},
        })
        self.clock = FakeClock(T0)
        self.published: list[tuple[str, dict]] = []

    async def open(self) -> None:
        await db.upgrade(self.cfg.database.url, progress=None)
        self.engine = db.create_engine(self.cfg.database)
        self.sessions = db.session_factory(self.engine)
        self.repo = RecordingsRepo(self.sessions)
        self.service = RecordingService(self.cfg, self.repo, self.clock,
                                        lambda topic, payload: self.published.append((topic, dict(payload))))

    def wav(self, name: str, seconds: float, *, legs: bool = False) -> int:
        n = int(seconds * 16000)
        data = wav_header(n) + b"\x11\x00" * (n // 2)
        names = [name, *([name.replace(".wav", "-caller.wav"), name.replace(".wav", "-agent.wav")] if legs else [])]
        for each in names:
            p = self.root / each
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return len(data)

    def result(self, name: str, status: RecordingStatus = RecordingStatus.COMPLETE, *, uid: str = UID, n: int = 1,
               started: datetime = T0, size: int | None = None, legs: bool = False, reason: str | None = None) -> RecordingResult:
        return RecordingResult(call_uniqueid=uid, offer_id=f"{uid}#{n}", agent_id="7", agent_login="a1", path=name,
                               separate_legs=legs, started_at=started, ended_at=started + timedelta(seconds=10),
                               talk_seconds=10.0, seconds=10.0 if size else None, bytes=size, status=status,
                               reason=reason)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.open()
    yield w
    await w.service.stop()
    await w.engine.dispose()


async def rows(w: World) -> list[Any]:
    async with w.sessions() as s:
        return list((await s.execute(select(RecordingRow).order_by(RecordingRow.id))).scalars())


# ------------------------------------------------------------------------------ rows and alerts

async def test_a_checked_recording_becomes_a_row_and_a_bad_one_an_alert(world: World) -> None:
    name = f"2026/11/24/{UID}-1.wav"
    size = world.wav(name, 10)
    await world.service.recorded(world.result(name, size=size))
    await world.service.recorded(world.result(f"2026/11/24/{UID}-2.wav", RecordingStatus.SHORT, n=2, size=44,
                                              reason="0.0 s recorded of 10.0 s of talk"))
    await world.service.recorded(world.result(f"2026/11/24/{UID}-3.wav", RecordingStatus.MISSING, n=3, reason="no file"))
    got = await rows(world)
    assert [(r.path, r.status, r.bytes) for r in got] == [
        (name, "complete", size), (f"2026/11/24/{UID}-2.wav", "short", 44), (f"2026/11/24/{UID}-3.wav", "missing", None)]
    # the same file reported twice (a retry) is one row
    await world.service.recorded(world.result(name, size=size))
    assert len(await rows(world)) == 3
    alerts = [p for topic, p in world.published if topic == "wallboard"]
    assert [a["type"] for a in alerts] == ["recording_short", "recording_missing"]
    assert alerts[1]["uniqueid"] == UID and "no file" in alerts[1]["message"] and "agent a1" in alerts[1]["message"]
    assert world.service.counts == {"complete": 2, "short": 1, "missing": 1}


async def test_skips_are_counted_every_time_and_alerted_once_a_minute_per_kind(world: World) -> None:
    svc = world.service
    svc.skipped("1.1", "low_space", "0.01 MB free")
    svc.skipped("1.2", "low_space", "0.01 MB free")
    svc.skipped("1.3", "not_writable", "not writable")
    world.clock.advance(61)
    svc.skipped("1.4", "low_space", "0.00 MB free")
    alerts = [p for _, p in world.published]
    assert [(a["kind"], a["uniqueid"]) for a in alerts] == [("low_space", "1.1"), ("not_writable", "1.3"),
                                                          ("low_space", "1.4")]
    assert "(1 more skipped since the last alert)" in alerts[2]["message"]
    assert svc.skips == {"low_space": 3, "not_writable": 1}


# ------------------------------------------------------------------------------ retention and the disk

async def test_retention_deletes_old_files_marks_their_rows_and_keeps_the_rest(world: World) -> None:
    old_day = T0 - timedelta(days=31)
    old = f"{old_day:%Y/%m/%d}/1793000000.1-1.wav"
    new = f"2026/11/24/{UID}-1.wav"
    old_size = world.wav(old, 5, legs=True)
    new_size = world.wav(new, 5)
    await world.service.recorded(world.result(old, uid="1793000000.1", started=old_day, size=old_size, legs=True))
    await world.service.recorded(world.result(f"{old_day:%Y/%m/%d}/1793000000.2-1.wav", RecordingStatus.MISSING,
                                              uid="1793000000.2", started=old_day, reason="no file"))
    await world.service.recorded(world.result(new, size=new_size))
    # files no row points to: an old one (a crash before the check) goes, a new one stays, a foreign one stays
    orphan_old = world.root / "2026/01/02/1767300000.9-1.wav"
    orphan_new = world.root / f"2026/11/24/{UID}-9.wav"
    foreign = world.root / "README.txt"
    for p in (orphan_old, orphan_new, foreign):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"RIFF")
    long_ago = (T0 - timedelta(days=40)).timestamp()
    for p in (orphan_old, foreign, *(world.root / old).parent.iterdir()):
        os.utime(p, (long_ago, long_ago))

    result = await world.service.retention_once()
    assert (result.deleted, result.orphans, result.failed) == (2, 1, 0)
    assert result.freed_bytes == 3 * old_size
    got = {r.path: r for r in await rows(world)}
    assert got[old].status == "deleted" and got[old].deleted_at == T0 and "deleted after 30 days" in got[old].reason
    assert got[f"{old_day:%Y/%m/%d}/1793000000.2-1.wav"].reason == "no file; deleted after 30 days"
    assert got[new].status == "complete" and got[new].deleted_at is None
    assert not (world.root / old).exists() and not orphan_old.exists()
    assert (world.root / new).exists() and orphan_new.exists() and foreign.exists()
    assert not (world.root / f"{old_day:%Y}/{old_day:%m}").exists() and not (world.root / "2026/01").exists()
    usage = world.service.usage()
    assert usage is not None and usage.files == 3 and usage.bytes == new_size + 4 + 4 and usage.free_bytes > 0
    # a second pass has nothing to do
    again = await world.service.retention_once()
    assert (again.deleted, again.orphans) == (0, 0)


async def test_retention_without_the_directory_does_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.open()
    try:
        w.root.rmdir()
        result = await w.service.retention_once()
        assert (result.deleted, result.orphans) == (0, 0)
        health = await w.service.health()
        assert health["exists"] is False and health["ok"] is False and health["enabled"] is True
    finally:
        await w.engine.dispose()


async def test_health_reports_the_directory(world: World) -> None:
    world.wav(f"2026/11/24/{UID}-1.wav", 2)
    health = await world.service.health()
    assert health["ok"] and health["files"] == 1 and health["bytes"] == 32044 and health["free_bytes"] > 0
    assert health["writable"] and health["retention_days"] == 30


# ------------------------------------------------------------------------------ what may be played

async def test_the_file_is_found_by_id_for_supervisors_and_quality_only(world: World) -> None:
    name = f"2026/11/24/{UID}-1.wav"
    size = world.wav(name, 3, legs=True)
    await world.service.recorded(world.result(name, size=size, legs=True))
    [row] = await rows(world)
    for who in (SUP, QA):
        found = await world.service.file(who, row.id)
        assert found.path == (world.root / name).resolve() and found.size == size
    leg = await world.service.file(SUP, row.id, "caller")
    assert leg.path.name == f"{UID}-1-caller.wav"
    with pytest.raises(Forbidden):
        await world.service.file(AGENT, row.id)
    with pytest.raises(Forbidden):
        await world.service.for_call(AGENT, UID)
    with pytest.raises(RecordingNotFound):
        await world.service.file(SUP, row.id + 100)
    with pytest.raises(NotFound):
        await world.service.file(SUP, row.id, "../../etc/passwd")


async def test_rows_that_point_outside_the_root_are_never_opened(world: World, tmp_path: Path) -> None:
    secret = tmp_path / "secret.wav"
    secret.write_bytes(wav_header(0))
    # a row written by something else than the server (or a tampered database): never trusted as a path
    async with world.sessions() as s, s.begin():
        for i, path in enumerate(["../secret.wav", str(secret), "2026/11/24/../../../secret.wav"]):
            await s.execute(insert(RecordingRow).values(
                call_uniqueid=UID, offer_id=f"{UID}#{i + 10}", path=path, separate_legs=False, started_at=T0,
                status="complete", checked_at=T0))
    # and a symlink inside the root that leads out of it
    link = world.root / f"2026/11/24/{UID}-5.wav"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    await world.service.recorded(world.result(f"2026/11/24/{UID}-5.wav", n=5, size=44))
    for r in await rows(world):
        with pytest.raises(RecordingGone):
            await world.service.file(SUP, r.id)


async def test_deleted_and_missing_recordings_have_no_file(world: World) -> None:
    await world.service.recorded(world.result(f"2026/11/24/{UID}-1.wav", RecordingStatus.MISSING, reason="no file"))
    name = f"2026/11/24/{UID}-2.wav"
    await world.service.recorded(world.result(name, n=2, size=world.wav(name, 1)))
    missing, complete = await rows(world)
    with pytest.raises(RecordingGone, match="no file"):
        await world.service.file(SUP, missing.id)
    (world.root / name).unlink()  # gone from the disk behind the server's back
    with pytest.raises(RecordingGone):
        await world.service.file(SUP, complete.id)
    await world.repo.mark_deleted([complete.id], T0, "deleted by hand")
    with pytest.raises(RecordingGone, match="was deleted"):
        await world.service.file(SUP, complete.id)
    view = (await world.service.for_call(QA, UID))["recordings"]
    assert [(v["status"], v["playable"], v["url"]) for v in view] == [("missing", False, None), ("deleted", False, None)]


async def test_lists_per_ticket_per_call_and_per_day(world: World) -> None:
    async with world.sessions() as s, s.begin():
        s.add_all([
            CallRow(uniqueid=UID, caller_id="+8613800138000", started_at=T0 - timedelta(minutes=5), outcome="done",
                    ivr_path="0", answered_by="a1"),
            CallRow(uniqueid="1795351990.7", caller_id="+8613900139000", started_at=T0 - timedelta(minutes=2),
                    outcome="hung_up", ivr_path="2"),
            CallRow(uniqueid="1795000000.1", caller_id="+8613800138000", started_at=T0 - timedelta(days=2), ivr_path=""),
            TicketRow(number="E20261124-0001", kind="emergency", category="water_leak", priority="major", status="new",
                      caller_id_raw="13800138000", caller_id="+8613800138000", call_uniqueid=UID, ivr_path="8>1",
                      source="ivr", created_at=T0, updated_at=T0),
            TicketRow(number="Q20261124-0002", kind="enquiry", category="fees", priority="general", status="new",
                      caller_id_raw="desk", caller_id=None, call_uniqueid=None, ivr_path="", source="desk",
                      created_at=T0, updated_at=T0),
        ])
    name = f"2026/11/24/{UID}-1.wav"
    await world.service.recorded(world.result(name, size=world.wav(name, 2)))
    by_ticket = await world.service.for_ticket(QA, "E20261124-0001")
    assert by_ticket["call_uniqueid"] == UID and [r["url"] for r in by_ticket["recordings"]] == ["/api/recordings/1"]
    assert (await world.service.for_ticket(QA, "Q20261124-0002"))["recordings"] == []  # a ticket without a call
    with pytest.raises(NotFound):
        await world.service.for_ticket(QA, "R20261124-0099")
    day = await world.service.history(SUP, T0.date(), None)
    assert [c["uniqueid"] for c in day["calls"]] == ["1795351990.7", UID]  # newest first; not the day before
    mine = day["calls"][1]
    assert mine["tickets"] == ["E20261124-0001"] and mine["recordings"][0]["status"] == "complete"
    assert mine["answered_by"] == "a1"
    only = await world.service.history(SUP, T0.date(), "+8613900139000")
    assert [c["uniqueid"] for c in only["calls"]] == ["1795351990.7"]
    with pytest.raises(Forbidden):
        await world.service.history(AGENT, T0.date(), None)


# ------------------------------------------------------------------------------ the web API

async def test_the_web_api_plays_recordings_to_supervisors_and_quality_and_refuses_agents(world: World) -> None:
    from callcentre.service.desk import build_desk
    from callcentre.web import setup_web

    for login, role, extra in (("sup", "supervisor", {}), ("qa", "quality", {}),
                               ("agent1", "agent", {"interface": "PJSIP/agent1"})):
        await create_user(world.sessions, login, login.title(), role, PASSWORD, clock=world.clock, **extra)
    name = f"2026/11/24/{UID}-1.wav"
    size = world.wav(name, 3, legs=True)
    await world.service.recorded(world.result(name, size=size, legs=True))
    async with world.sessions() as s, s.begin():
        s.add(TicketRow(number="E20261124-0001", kind="emergency", category="water_leak", priority="major", status="new",
                        caller_id_raw="13800138000", caller_id="+8613800138000", call_uniqueid=UID, ivr_path="8>1",
                        source="ivr", created_at=T0, updated_at=T0))
        s.add(CallRow(uniqueid=UID, caller_id="+8613800138000", started_at=T0, ivr_path="8>1"))
    services = SimpleNamespace(cfg=world.cfg, clock=world.clock, session_factory=world.sessions, engine=world.engine,
                               agi=None, ami=None, acd=None, hub=None, ticket_service=None)
    app = web.Application()
    setup_web(app, services, build_desk(world.sessions, world.cfg, world.clock, acd=lambda: None, lifecycle=None,
                                        recordings=world.service))
    server = TestServer(app)
    clients: list[TestClient] = []

    async def as_user(login: str) -> TestClient:
        c = TestClient(server)
        await c.start_server()
        clients.append(c)
        r = await c.post("/api/login", json={"login": login, "password": PASSWORD})
        assert r.status == 200, await r.text()
        return c

    try:
        sup, qa, agent = await as_user("sup"), await as_user("qa"), await as_user("agent1")
        file_bytes = (world.root / name).read_bytes()
        for c in (sup, qa):
            r = await c.get("/api/recordings/1")
            assert r.status == 200 and await r.read() == file_bytes
            assert r.headers["Content-Type"] == "audio/wav" and "no-store" in r.headers["Cache-Control"]
            assert r.headers["Accept-Ranges"] == "bytes"
            assert r.headers["Content-Disposition"] == f'inline; filename="call-{UID}-1.wav"'
        r = await sup.get("/api/recordings/1", headers={"Range": "bytes=100-199"})
        assert r.status == 206 and await r.read() == file_bytes[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{size}"
        r = await sup.get("/api/recordings/1?leg=agent")
        assert r.status == 200 and await r.read() == (world.root / name.replace(".wav", "-agent.wav")).read_bytes()
        # the lists
        r = await qa.get("/api/tickets/E20261124-0001/recordings")
        assert r.status == 200 and (await r.json())["recordings"][0]["legs"][0]["url"] == "/api/recordings/1?leg=caller"
        r = await qa.get(f"/api/calls/{UID}/recordings")
        assert r.status == 200 and len((await r.json())["recordings"]) == 1
        r = await qa.get("/api/call-history?day=2026-11-24")
        assert r.status == 200 and (await r.json())["calls"][0]["uniqueid"] == UID
        r = await qa.get("/api/tickets/E20261124-0001")  # the quality department reads tickets
        assert r.status == 200
        r = await qa.get("/calls", allow_redirects=False)
        assert r.status == 200 and "calls.js" in await r.text()
        # what the quality department may not do: control agents, use the desk's writes, the wallboard feed
        r = await qa.post("/api/agents/3/state", json={"action": "ready"})
        assert r.status == 403
        r = await qa.get("/api/agents")
        assert r.status == 403
        # agents: nothing of it
        for url in ("/api/recordings/1", "/api/recordings/1?leg=caller", "/api/tickets/E20261124-0001/recordings",
                    f"/api/calls/{UID}/recordings", "/api/call-history"):
            r = await agent.get(url)
            assert r.status == 403, url
        r = await agent.get("/calls", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/agent"
        # ids that are not ids, and things that are not there
        for url, status in (("/api/recordings/..%2F..%2Fetc%2Fpasswd", 400), ("/api/recordings/-1", 400),
                            ("/api/recordings/1.wav", 400), ("/api/recordings/99", 404),
                            ("/api/recordings/1?leg=../x", 400), ("/api/recordings/1?leg=both", 400),
                            ("/api/tickets/..%2Fx/recordings", 404), ("/api/calls/a%20b/recordings", 404),
                            ("/api/call-history?day=2026-13-45", 400), ("/api/call-history?day=yesterday", 400),
                            ("/api/call-history?phone=abc", 400)):
            r = await sup.get(url)
            assert r.status == status, (url, r.status, await r.text())
            assert r.headers["Content-Type"].startswith("application/json")
    finally:
        for c in clients:
            await c.close()


async def test_health_and_metrics_from_the_composition_root(tmp_path: Path) -> None:
    from callcentre.app import SERVICES, build_app

    root = tmp_path / "rec"
    root.mkdir()
    (root / "2026/11/24").mkdir(parents=True)
    (root / f"2026/11/24/{UID}-1.wav").write_bytes(wav_header(16000) + b"\x00" * 16000)
    cfg = Config.model_validate({
        "database": {"url": test_database_url(tmp_path)}, "ami": {"enabled": False}, "agi": {"port": 0},
        "recording": {"enabled": True, "directory": str(root), "asterisk_directory": str(root), "min_free_mb": 1},
    })
    app = build_app(cfg, web_ui=False)
    async with TestClient(TestServer(app)) as c:
        services = app[SERVICES]
        assert services.recorder is not None and services.acd is not None and services.acd.recorder is services.recorder
        r = await c.get("/health")
        body = await r.json()
        rec = body["recording"]
        assert rec["enabled"] and rec["ok"] and rec["files"] == 1 and rec["bytes"] == 16044 and rec["free_bytes"] > 0
        r = await c.get("/metrics")
        text_ = await r.text()
        assert "callcentre_recording_directory_bytes 16044.0" in text_
        assert "callcentre_recording_files 1.0" in text_
        assert "callcentre_recording_free_bytes " in text_
        assert "callcentre_recordings_deleted_total 0.0" in text_


async def test_recording_off_builds_no_recorder(tmp_path: Path) -> None:
    from callcentre.app import build_services

    cfg = Config.model_validate({"database": {"url": test_database_url(tmp_path)}, "ami": {"enabled": False}})
    services = build_services(cfg, FakeClock(T0))
    try:
        assert services.recorder is None and services.distribution is not None and services.distribution.recorder is None
        assert services.recordings is not None  # old recordings are still served and deleted in time
    finally:
        await services.engine.dispose()


# ------------------------------------------------------------------------------ migration 0005

async def test_migration_0005_adds_the_quality_role_and_keeps_agent_history(tmp_path: Path) -> None:
    from alembic import command

    url = test_database_url(tmp_path)
    engine = db.create_engine(DatabaseConfig(url=url))
    alembic_cfg = db._alembic_config(url)

    async def to(revision: str, down: bool = False) -> None:
        def run(conn: Any) -> None:
            alembic_cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(alembic_cfg, revision)
        async with engine.begin() as conn:
            await conn.run_sync(run)

    try:
        await to("0004")
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO users (id, login, name, role, password_hash, active, skills, languages, senior, created_at)"
                " VALUES (1, 'a1', 'A', 'agent', 'x', true, '', '', false, '2026-11-24 02:00:00')"))
            await conn.execute(text("INSERT INTO agent_state_history (agent_id, from_state, to_state, at)"
                                    " VALUES (1, 'ready', 'paused', '2026-11-24 02:00:00')"))
        await to("head")
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM agent_state_history"))).scalar() == 1
            await conn.execute(text(
                "INSERT INTO users (id, login, name, role, password_hash, active, skills, languages, senior, created_at)"
                " VALUES (2, 'qa', 'Q', 'quality', 'x', true, '', '', false, '2026-11-24 02:00:00')"))
        with pytest.raises(Exception, match="(?i)check|constraint"):
            async with engine.begin() as conn:
                await conn.execute(text(
                    "INSERT INTO users (id, login, name, role, password_hash, active, skills, languages, senior, created_at)"
                    " VALUES (3, 'root', 'R', 'root', 'x', true, '', '', false, '2026-11-24 02:00:00')"))
        await to("0004", down=True)
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM agent_state_history"))).scalar() == 1
            assert [r[0] for r in await conn.execute(text("SELECT login FROM users ORDER BY id"))] == ["a1"]
        await to("head")
    finally:
        await engine.dispose()


async def test_quality_users_can_be_created(world: World) -> None:
    qa = await create_user(world.sessions, "qa1", "Quality One", "quality", PASSWORD, clock=world.clock)
    assert qa.role is UserRole.QUALITY and qa.interface is None
