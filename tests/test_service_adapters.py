"""The service loop's adapters over a real (temporary, migrated) database and a fake clock.

SQLite by default; PostgreSQL when CALLCENTRE_TEST_PG_URL is set (tests/conftest.py).
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcentre.config import CallbackPolicy, Config, DatabaseConfig, ServiceConfig
from callcentre.domain.lifecycle import Acknowledge, ConfirmClosed, Dispatch, Resolve, StartWork, TransitionRefused
from callcentre.domain.model import Priority, TicketDraft, TicketKind, TicketStatus
from callcentre.domain.ports import FakeClock
from callcentre.domain.promises import promise_deadline
from callcentre.domain.service import DispatchInvalid
from callcentre.service.callbacks import CallbackScheduler
from callcentre.service.escalation import EscalationLoop
from callcentre.service.reports_cmd import daily_report, monthly_report, next_run_at
from callcentre.service.survey import SurveyResult, SurveyScript
from callcentre.service.tickets import TicketService
from callcentre.service.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    WebhookSettings,
    load_secret,
    outbox_status,
    verify,
)
from callcentre.storage import db
from callcentre.storage.models import Base, TicketRow
from callcentre.storage.repo import SqlTicketStore
from callcentre.storage.service_models import CallbackAttempt, TicketHistory, TicketServiceState, WebhookOutbox
from tests.conftest import test_database_url
from tests.fakes import HANGUP, FakeChannel

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai, a Tuesday
SECRET = b"s3cret-for-tests"
MY_TABLES = {"ticket_service_state", "ticket_history", "ticket_links", "callback_attempts", "webhook_outbox",
             "webhook_attempts"}


@dataclass
class Env:
    cfg: Config
    clock: FakeClock
    sessions: async_sessionmaker[AsyncSession]
    engine: AsyncEngine
    store: SqlTicketStore
    tickets: TicketService


def make_env(engine: AsyncEngine, cfg: Config, clock: FakeClock, urls: tuple[str, ...] = ()) -> Env:
    sessions = db.session_factory(engine)
    store = SqlTicketStore(sessions, clock, cfg.centre.timezone, cfg.tickets.number_prefix)
    return Env(cfg, clock, sessions, engine, store, TicketService(sessions, cfg, clock, webhook_urls=urls))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    eng = db.create_engine(DatabaseConfig(url=url))
    yield eng
    await eng.dispose()


@pytest.fixture
def env(engine: AsyncEngine) -> Env:
    return make_env(engine, Config(), FakeClock(T0))


async def new_ticket(e: Env, uid: str, *, kind: TicketKind = TicketKind.REPAIR, category: str = "water",
                     caller_id: str | None = "+8613800138000", owner_id: int | None = None,
                     unit_id: int | None = None) -> int:
    draft = TicketDraft(kind=kind, category=category, priority=Priority.GENERAL, caller_id_raw=caller_id or "",
                        caller_id=caller_id, call_uniqueid=uid, owner_id=owner_id, unit_id=unit_id)
    deadline = promise_deadline(e.cfg.tickets.promises, Priority.GENERAL, category, e.clock.now())
    return (await e.store.create_ticket(draft, deadline)).id


async def resolve(e: Env, tid: int) -> None:
    await e.tickets.apply(tid, Acknowledge(), "agent7")
    await e.tickets.apply(tid, Dispatch("engineering", "eng-duty"), "agent7")
    await e.tickets.apply(tid, StartWork(), "eng-duty")
    await e.tickets.apply(tid, Resolve(), "eng-duty", "washer replaced")


async def count(e: Env, model: Any, **where: Any) -> int:
    async with e.sessions() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return (await s.execute(q)).scalar_one()


# --- storage ------------------------------------------------------------------------------------


async def test_migration_matches_service_models(engine: AsyncEngine) -> None:
    def diff(conn):  # type: ignore[no-untyped-def]
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)

    async with engine.connect() as conn:
        diffs = await conn.run_sync(diff)
    mine = [d for d in diffs if any(t in repr(d) for t in MY_TABLES)]
    assert mine == []


# --- lifecycle ------------------------------------------------------------------------------------


async def test_lifecycle_persisted_with_history(env: Env) -> None:
    tid = await new_ticket(env, "u1")
    await env.tickets.set_agent(tid, "agent7")
    env.clock.advance(60)
    await resolve(env, tid)
    st = await env.tickets.state(tid)
    assert st.status is TicketStatus.RESOLVED and st.worker == "eng-duty" and st.department == "engineering"
    assert st.agent == "agent7" and st.resolved_at == T0 + timedelta(seconds=60)
    hist = await env.tickets.history(tid)
    assert [h.event for h in hist] == ["acknowledge", "dispatch", "start_work", "resolve", "callback_scheduled"]
    assert hist[1].details == {"department": "engineering", "worker": "eng-duty"} and hist[3].note == "washer replaced"
    assert hist[3].by == "eng-duty" and hist[3].from_status == "in_progress" and hist[3].to_status == "resolved"
    # Resolving scheduled the first call-back, first_delay_minutes later.
    async with env.sessions() as s:
        a = (await s.execute(select(CallbackAttempt).where(CallbackAttempt.ticket_id == tid))).scalar_one()
    assert a.state == "scheduled" and a.number == "+8613800138000"
    assert a.scheduled_at == T0 + timedelta(seconds=60, minutes=5)


async def test_refused_transition_leaves_db_unchanged(env: Env) -> None:
    tid = await new_ticket(env, "u1")
    await env.tickets.apply(tid, Acknowledge(), "agent7")
    before = await env.tickets.state(tid)
    n = await count(env, TicketHistory)
    with pytest.raises(TransitionRefused, match="cannot confirm_closed"):
        await env.tickets.apply(tid, ConfirmClosed(), "agent7")
    with pytest.raises(DispatchInvalid):
        await env.tickets.apply(tid, Dispatch("engineering", "nobody"), "agent7")
    with pytest.raises(ValueError):
        await env.tickets.apply(tid, StartWork(), "   ")
    assert await env.tickets.state(tid) == before
    assert await count(env, TicketHistory) == n
    async with env.sessions() as s:
        assert (await s.get(TicketRow, tid)).status == "acknowledged"  # type: ignore[union-attr]


async def test_repeat_complaint_linked_and_priority_raised(env: Env) -> None:
    first = await new_ticket(env, "u1", kind=TicketKind.COMPLAINT, category="security", owner_id=None, unit_id=None,
                             caller_id="+8613800138000")
    env.clock.advance(3 * 86400)
    other = await new_ticket(env, "u2", kind=TicketKind.COMPLAINT, category="disputes")
    second = await new_ticket(env, "u3", kind=TicketKind.COMPLAINT, category="security")
    # No owner or unit known: not a repeat (caller ID alone is not enough).
    assert not (await env.tickets.check_repeats(second)).flagged
    async with env.sessions() as s, s.begin():
        from callcentre.storage.models import Owner, Unit

        s.add(Owner(id=1, name="Zhang", vip=False, created_at=T0, updated_at=T0))
        s.add(Unit(id=10, building="3", unit="1201", fee_balance_cents=0, created_at=T0, updated_at=T0))
        await s.flush()
        for t in (first, other, second):
            (await s.get(TicketRow, t)).unit_id = 10  # type: ignore[union-attr]
    verdict = await env.tickets.check_repeats(second)
    assert verdict.is_repeat and verdict.priority is Priority.MAJOR and verdict.route_to_senior
    assert [n for n, _ in await env.tickets.links(second)] == [verdict.linked[0]]
    assert (await env.tickets.state(second)).priority is Priority.MAJOR
    assert await env.tickets.routes_to_senior(None, "+8613800138000")
    assert (await env.tickets.history(second))[-1].event == "repeat_flagged"
    # Run again: no duplicate link.
    await env.tickets.check_repeats(second)
    assert len(await env.tickets.links(second)) == 1


# --- escalation -------------------------------------------------------------------------------------


async def test_escalation_warns_then_escalates_once(env: Env) -> None:
    published: list[tuple[str, dict]] = []

    async def publish(topic: str, payload: dict) -> None:
        published.append((topic, dict(payload)))

    tid = await new_ticket(env, "u1")  # promised within 30 minutes
    loop = EscalationLoop(env.tickets, env.cfg, env.clock, publish)
    env.clock.advance(23 * 60)
    assert await loop.run_once() == [] and published == []
    env.clock.advance(60)  # 24 of 30 minutes: exactly 80 %
    assert len(await loop.run_once()) == 1
    assert published[-1][0] == "wallboard" and published[-1][1]["type"] == "promise_warning"
    env.clock.advance(6 * 60)  # at the deadline: still kept
    assert await loop.run_once() == []
    env.clock.advance(1)
    await loop.run_once()
    await loop.run_once()  # the loop body twice: one alert, one note
    assert [p[1]["type"] for p in published] == ["promise_warning", "promise_breach"]
    events = [h.event for h in await env.tickets.history(tid)]
    assert events.count("escalate") == 1 and events.count("warning") == 1
    assert (await env.tickets.state(tid)).escalated_at is not None


async def test_escalation_reads_open_tickets_page_by_page_with_the_same_result(env: Env, monkeypatch) -> None:
    """Paging (a few tickets per query, so memory does not grow with the backlog) must not change
    which tickets are alerted or which are listed as overdue, and resolved tickets drop out."""
    import callcentre.service.tickets as tickets_mod

    async def publish(topic: str, payload: dict) -> None:
        pass

    ids = []
    for n in range(7):
        ids.append(await new_ticket(env, f"p{n}"))
        env.clock.advance(60)
    await resolve(env, ids[3])
    pages = [len(page) async for page in env.tickets.open_states_pages(page_size=2)]
    assert pages == [2, 2, 2]  # 1,2 | 3,5 | 6,7 (4 resolved); the empty read after the last is not a page
    assert [tid for tid, _ in await env.tickets.open_states()] == [i for i in ids if i != ids[3]]

    monkeypatch.setattr(tickets_mod.TicketService.open_states_pages, "__defaults__", (2,))
    env.clock.advance(40 * 60)  # every open one is past its 30-minute promise
    loop = EscalationLoop(env.tickets, env.cfg, env.clock, publish)
    alerts = await loop.run_once()
    expected = [await env.tickets.state(i) for i in ids if i != ids[3]]
    assert sorted(a.number for a in alerts) == sorted(st.number for st in expected)
    assert all(a.kind.value == "breach" for a in alerts)
    assert [row["number"] for row in loop.overdue] == [st.number for st in expected]  # oldest promise first
    assert all(row["escalated"] is False for row in loop.overdue)  # as read before this pass escalated them
    await loop.run_once()
    assert [row["number"] for row in loop.overdue] == [st.number for st in expected]
    assert all(row["escalated"] for row in loop.overdue)


# --- webhooks ------------------------------------------------------------------------------------


async def test_webhook_signed_retried_after_500_then_delivered(engine: AsyncEngine) -> None:
    received: list[tuple[bool, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(SECRET, request.headers[TIMESTAMP_HEADER], body, request.headers[SIGNATURE_HEADER])
        received.append((ok, json.loads(body)))
        return web.Response(status=500 if len(received) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/hook"
    try:
        e = make_env(engine, Config(), FakeClock(T0), urls=(url,))
        settings = WebhookSettings(urls=[url], secret=load_secret({"CALLCENTRE_WEBHOOK_SECRET": SECRET.decode()}),
                                   timeout_seconds=2, retry_base_seconds=10)
        sender = WebhookSender(e.sessions, settings, e.clock)
        await sender.start()
        try:
            tid = await new_ticket(e, "u1")
            await e.tickets.apply(tid, Acknowledge(), "agent7")
            await e.tickets.dispatch(tid, "engineering", "eng-duty", "agent7")
            assert await sender.deliver_due() == 0  # 500
            status = await outbox_status(e.sessions, tid)
            assert status[0]["state"] == "pending" and status[0]["last_error"] == "HTTP 500 Internal Server Error"
            assert status[0]["next_at"] == T0 + timedelta(seconds=10)
            assert await sender.deliver_due() == 0  # not due yet: nothing sent
            e.clock.advance(10)
            assert await sender.deliver_due() == 1
        finally:
            await sender.stop()
        status = await outbox_status(e.sessions, tid)
        assert status[0]["state"] == "delivered" and [t["status"] for t in status[0]["tries"]] == [500, 204]
        assert len(received) == 2 and all(ok for ok, _ in received)
        body = received[1][1]
        assert body["event"] == "ticket.dispatched" and body["worker"]["id"] == "eng-duty"
        assert body["ticket"]["number"].startswith("R20261124-")
        assert not verify(b"wrong", "1", b"{}", "sha256=00")
    finally:
        await runner.cleanup()


async def test_webhook_failure_recorded_and_given_up(env: Env) -> None:
    settings = WebhookSettings(urls=["http://127.0.0.1:9/hook"], secret=SECRET, timeout_seconds=1, max_attempts=2)
    sender = WebhookSender(env.sessions, settings, env.clock)
    await sender.start()
    try:
        async with env.sessions() as s, s.begin():
            from callcentre.service.webhooks import enqueue

            enqueue(s, None, "ticket.dispatched", {"x": 1}, settings.urls, env.clock.now())
        await sender.deliver_due()
        env.clock.advance(3600)
        await sender.deliver_due()
    finally:
        await sender.stop()
    async with env.sessions() as s:
        row = (await s.execute(select(WebhookOutbox))).scalar_one()
    assert row.state == "gave_up" and row.attempts == 2 and row.last_error
    with pytest.raises(Exception, match="secret"):
        WebhookSettings(urls=["http://127.0.0.1/x"])
    with pytest.raises(Exception, match="not an http"):
        WebhookSettings(urls=["file:///etc/passwd"], secret=SECRET)


# --- call-backs and the survey ----------------------------------------------------------------------


class FakeOriginate:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.early: dict | None = None
        self.scheduler: CallbackScheduler | None = None

    async def __call__(self, channel, context, exten, variables, caller_id, timeout_ms, action_id):  # type: ignore[no-untyped-def]
        aid = action_id
        self.calls.append(dict(channel=channel, context=context, exten=exten, variables=dict(variables),
                               caller_id=caller_id, timeout_ms=timeout_ms, action_id=aid))
        if self.early is not None and self.scheduler is not None:  # the response beats our return
            await self.scheduler.handle_event({"Event": "OriginateResponse", "ActionID": aid, **self.early})
        return aid


def response(aid: str, reason: int) -> dict:
    return {"Event": "OriginateResponse", "ActionID": aid, "Response": "Success" if reason == 4 else "Failure",
            "Reason": str(reason), "Context": "callcentre-callback", "Exten": "survey"}


async def callback_setup(e: Env) -> tuple[int, CallbackScheduler, FakeOriginate, list]:
    published: list = []
    orig = FakeOriginate()
    sched = CallbackScheduler(e.sessions, e.tickets, e.cfg, e.clock, orig, publish=lambda t, p: published.append((t, p)))
    orig.scheduler = sched
    tid = await new_ticket(e, "u1")
    await e.tickets.set_agent(tid, "agent7")
    await resolve(e, tid)
    assert await sched.run_due() == 0  # not yet: first_delay_minutes
    e.clock.advance(5 * 60)
    return tid, sched, orig, published


async def answered_survey(e: Env, inputs: list, *, channel_language: str = "en", default_language: str = "en",
                          owner_language: str | None = None) -> tuple[int, CallbackScheduler, FakeChannel, SurveyResult]:
    tid, sched, orig, _ = await callback_setup(e)
    if owner_language is not None:
        from callcentre.storage.models import Owner

        async with e.sessions() as s, s.begin():
            s.add(Owner(id=1, name="Zhang", vip=False, language=owner_language, created_at=T0, updated_at=T0))
            await s.flush()
            (await s.get(TicketRow, tid)).owner_id = 1  # type: ignore[union-attr]
    assert await sched.run_due() == 1
    call = orig.calls[0]
    assert call["channel"] == "Local/+8613800138000@callcentre-outbound"
    assert (call["context"], call["exten"], call["timeout_ms"]) == ("callcentre-callback", "survey", 30000)
    number = (await e.tickets.state(tid)).number
    assert call["variables"]["TICKET"] == number
    await sched.handle_event(response(call["action_id"], 4))
    ch = FakeChannel(inputs=inputs, language=channel_language, args=(number,),
                     variables={"TICKET": number, "CC_CALLBACK": call["variables"]["CC_CALLBACK"]})
    result = await SurveyScript(e.tickets, sched, default_language=default_language).run(ch)
    return tid, sched, ch, result


async def test_survey_answered_and_confirmed_closes(env: Env) -> None:
    tid, sched, ch, result = await answered_survey(env, ["1", "5"])
    assert result is SurveyResult.CLOSED
    st = await env.tickets.state(tid)
    assert st.status is TicketStatus.CLOSED
    assert ch.played[:2] == ["en/survey-intro", "en/digit-1"] and "en/survey-solved-or-not" in ch.played
    assert "en/survey-closed" in ch.played and "en/thanks-rating" in ch.played
    assert ch.variables["CC_RESULT"] == "done" and ch.ops[-1] == ("hangup",)
    [a] = await sched.attempts(tid)
    assert (a["state"], a["result"], a["reason_code"], a["survey_answer"], a["rating"]) == (
        "done", "answered", 4, "solved", 5)
    async with env.sessions() as s:
        assert (await s.get(TicketServiceState, tid)).satisfaction == 5  # type: ignore[union-attr]


async def test_survey_speaks_the_owners_language_not_the_originated_channels(env: Env) -> None:
    # On a real Asterisk the Originate'd channel has the PBX's default language ("en"): a Mandarin owner
    # must still hear Mandarin, as on the hotline.
    _tid, _sched, ch, result = await answered_survey(env, ["1", ""], channel_language="en", default_language="en",
                                                     owner_language="zh")
    assert result is SurveyResult.CLOSED
    assert ch.played[0] == "zh/survey-intro" and not any(p.startswith("en/") for p in ch.played), ch.played


async def test_survey_without_an_owner_speaks_the_ivr_default_language(env: Env) -> None:
    _tid, _sched, ch, _result = await answered_survey(env, ["1", ""], channel_language="en", default_language="zh")
    assert ch.played[0] == "zh/survey-intro", ch.played


async def test_survey_not_solved_reopens_major_back_to_agent(env: Env) -> None:
    tid, sched, ch, result = await answered_survey(env, ["2", ""])
    assert result is SurveyResult.REOPENED
    st = await env.tickets.state(tid)
    assert st.status is TicketStatus.REOPENED and st.priority is Priority.MAJOR and st.reopen_count == 1
    assert st.promised_by == env.clock.now() + timedelta(hours=6)
    reopen = [h for h in await env.tickets.history(tid) if h.event == "reopen"][0]
    assert reopen.details["route_to_agent"] == "agent7" and reopen.by == "callback"
    assert "en/survey-reopened" in ch.played and "en/thanks-rating" not in ch.played
    [a] = await sched.attempts(tid)
    assert a["survey_answer"] == "not_solved" and a["rating"] is None


async def test_survey_hang_up_during_wait_retries(env: Env) -> None:
    tid, sched, ch, result = await answered_survey(env, ["", HANGUP])
    assert result is SurveyResult.HUNG_UP
    assert (await env.tickets.state(tid)).status is TicketStatus.RESOLVED
    a1, a2 = await sched.attempts(tid)
    assert (a1["state"], a1["result"]) == ("done", "hung_up")
    assert a2["state"] == "scheduled" and a2["scheduled_at"] == env.clock.now() + timedelta(minutes=30)
    assert "CC_RESULT" not in ch.variables


async def test_survey_unknown_ticket_left_to_dialplan(env: Env) -> None:
    ch = FakeChannel(variables={"TICKET": "R20991231-0001"})
    sched = CallbackScheduler(env.sessions, env.tickets, env.cfg, env.clock, FakeOriginate())
    assert await SurveyScript(env.tickets, sched).run(ch) is SurveyResult.UNKNOWN_TICKET
    assert "CC_RESULT" not in ch.variables


async def test_callback_no_answer_then_busy_retried_then_flagged(engine: AsyncEngine) -> None:
    cfg = Config(service=ServiceConfig(callback=CallbackPolicy(max_attempts=3, retry_delays_minutes=[30, 60])))
    e = make_env(engine, cfg, FakeClock(T0))
    tid, sched, orig, published = await callback_setup(e)
    assert await sched.run_due() == 1
    await sched.handle_event(response(orig.calls[0]["action_id"], 3))  # no answer
    await sched.handle_event(response(orig.calls[0]["action_id"], 3))  # duplicate: ignored
    attempts = await sched.attempts(tid)
    assert [(a["result"], a["reason_code"]) for a in attempts] == [("no_answer", 3), (None, None)]
    assert attempts[1]["scheduled_at"] == e.clock.now() + timedelta(minutes=30)
    e.clock.advance(29 * 60)
    assert await sched.run_due() == 0
    e.clock.advance(60)
    assert await sched.run_due() == 1
    await sched.handle_event(response(orig.calls[1]["action_id"], 5))  # busy
    attempts = await sched.attempts(tid)
    assert attempts[1]["result"] == "busy" and attempts[2]["scheduled_at"] == e.clock.now() + timedelta(minutes=60)
    e.clock.advance(3600)
    orig.early = {"Response": "Failure", "Reason": "3"}  # the response arrives before originate returns
    assert await sched.run_due() == 1
    attempts = await sched.attempts(tid)
    assert len(attempts) == 3 and attempts[2]["result"] == "no_answer"
    async with e.sessions() as s:
        assert (await s.get(TicketServiceState, tid)).needs_person is True  # type: ignore[union-attr]
    assert published == [("wallboard", {"type": "callback_needs_person", "ticket": (await e.tickets.state(tid)).number})]
    events = [h.event for h in await e.tickets.history(tid)]
    assert events.count("callback_attempt") == 3 and events[-1] == "callback_needs_person"


async def test_the_action_id_is_stored_before_the_originate_is_sent_and_never_reused(env: Env) -> None:
    """Asterisk may send OriginateResponse right behind the Originate's reply, before the Originate call
    returns here; and a restarted server starts its AMI link's ActionID counter again. So the ActionID is
    the scheduler's own (one per attempt) and is committed with 'dialling' before the Originate goes out.
    (The link's counter was used once: a restart collided with stored ActionIDs, and a response could be
    parked while its ActionID was being stored and then forgotten.)"""
    tid, sched, orig, _ = await callback_setup(env)
    seen_in_db: list = []

    async def originate(*args, action_id):  # type: ignore[no-untyped-def]
        async with env.sessions() as s:
            seen_in_db.append((await s.execute(
                select(CallbackAttempt.state).where(CallbackAttempt.action_id == action_id))).scalar_one_or_none())
        await sched.handle_event(response(action_id, 5))  # the response beats the Originate's return
        return await orig(*args, action_id=action_id)

    sched._originate = originate  # type: ignore[assignment]
    assert await sched.run_due() == 1
    assert seen_in_db == ["dialling"]
    a1, a2 = await sched.attempts(tid)
    assert (a1["state"], a1["result"], a1["reason_code"]) == ("done", "busy", 5)
    assert a1["action_id"] == orig.calls[0]["action_id"]
    env.clock.advance(3600)
    restarted = CallbackScheduler(env.sessions, env.tickets, env.cfg, env.clock, orig)
    assert await restarted.run_due() == 1
    await restarted.handle_event(response(orig.calls[1]["action_id"], 3))
    a1, a2, a3 = await restarted.attempts(tid)
    assert a2["result"] == "no_answer" and a3["state"] == "scheduled"
    assert len({a1["action_id"], a2["action_id"]}) == 2
    assert all(a["action_id"].startswith("callcentre-callback-") for a in (a1, a2))
    await sched.handle_event({"Event": "OriginateResponse", "ActionID": "cc-7", "Response": "Failure", "Reason": "5"})
    assert [a["result"] for a in await sched.attempts(tid)] == ["busy", "no_answer", None]  # the ACD's: not ours


async def test_callback_outside_hours_and_bad_number(env: Env) -> None:
    orig = FakeOriginate()
    sched = CallbackScheduler(env.sessions, env.tickets, env.cfg, env.clock, orig)
    bad = await new_ticket(env, "u1", caller_id="+86 138;Dial(x)")
    await resolve(env, bad)
    env.clock.advance(11 * 3600)  # 21:00 local: outside calling hours
    assert await sched.run_due() == 0 and orig.calls == []
    [a] = await sched.attempts(bad)
    assert a["state"] == "done" and a["result"] == "failed" and "no diallable number" in a["error"]
    good = await new_ticket(env, "u2")
    await resolve(env, good)
    env.clock.advance(10 * 60)
    assert await sched.run_due() == 0 and orig.calls == []
    [a] = await sched.attempts(good)
    local_next = a["scheduled_at"].astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    assert a["state"] == "scheduled" and (local_next.hour, local_next.minute) == (9, 0)


async def test_originate_error_is_recorded_and_retried(env: Env) -> None:
    async def broken(*args: Any, action_id: str) -> str:
        raise ConnectionError("AMI link is not connected")

    sched = CallbackScheduler(env.sessions, env.tickets, env.cfg, env.clock, broken)
    tid = await new_ticket(env, "u1")
    await resolve(env, tid)
    env.clock.advance(5 * 60)
    assert await sched.run_due() == 0
    a1, a2 = await sched.attempts(tid)
    assert a1["result"] == "failed" and "AMI link" in a1["error"] and a2["state"] == "scheduled"


# --- reports ---------------------------------------------------------------------------------------


async def test_daily_and_monthly_reports(env: Env, tmp_path: Path) -> None:
    late = await new_ticket(env, "u1")
    done = await new_ticket(env, "u2", kind=TicketKind.COMPLAINT, category="security")
    await env.tickets.apply(done, Acknowledge(), "agent7")
    await env.tickets.apply(done, Resolve(first_contact=True), "agent7")
    env.clock.advance(3600)
    text, csv_text = await daily_report(env.sessions, env.cfg, date(2026, 11, 24), env.clock)
    late_no = (await env.tickets.state(late)).number
    assert "past promise" in text and late_no in text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert {"section": "intake", "key": "total", "value": "2"} in rows
    assert {"section": "past_promise", "key": late_no, "value": ""} in rows
    paths = await monthly_report(env.sessions, env.cfg, 2026, 11, tmp_path / "out")
    assert sorted(p.suffix for p in paths) == [".csv"] * 4 + [".svg"] * 4
    by_cat = list(csv.DictReader(io.StringIO((tmp_path / "out" / "monthly-2026-11-category.csv").read_text())))
    total = by_cat[-1]
    assert total["group"] == "(total)" and total["tickets"] == "2" and total["first_contact_resolutions"] == "1"
    for p in paths:
        if p.suffix == ".svg":
            assert ET.parse(p).getroot().tag.endswith("svg")
    plain = await monthly_report(env.sessions, env.cfg, 2026, 11, tmp_path / "plain", use_pygal=False)
    root = ET.parse([p for p in plain if p.name.endswith("category.svg")][0]).getroot()
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) == 2 * 3


def test_next_reconciliation_run() -> None:
    assert next_run_at(T0, "22:00", "Asia/Shanghai") == datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc)
    assert next_run_at(datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc), "22:00", "Asia/Shanghai") == datetime(
        2026, 11, 25, 14, 0, tzinfo=timezone.utc)
