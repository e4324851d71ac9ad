"""The service loop end to end: a ticket resolved at the agent desk calls the owner back over AMI
Originate into the FastAGI ``survey`` script; the owner's answer closes or reopens it."""

from __future__ import annotations

import asyncio

import pytest

from callcentre.sim.pbx import Callee, DialplanEntry
from callcentre.sim.scripts import CallerScript, Record
from tests.waiting import eventually

CALLBACK_ENV = dict(
    CALLCENTRE_SERVICE__CALLBACK__FIRST_DELAY_MINUTES="0",
    CALLCENTRE_SERVICE__CALLBACK__CALLING_HOURS_START="00:00",
    CALLCENTRE_SERVICE__CALLBACK__CALLING_HOURS_END="23:59",
    CALLCENTRE_WEB__SESSION_KEY="e2e-session-key-0123456789",
)
OWNER_LEG = "Local/+8613800138000@callcentre-outbound"


async def _resolve_at_the_desk(stack) -> str:
    """A repair reported through the IVR, then acknowledged and resolved by an agent at the desk."""
    from callcentre.storage.users_repo import create_user

    await create_user(stack.services.session_factory, "desk1", "Desk One", "agent", "desk-password-1", interface="PJSIP/desk1")
    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["2", "1", Record(1)]))
    assert result.cc_result == "done"
    [t] = await stack.tickets()
    async with stack.http() as c:
        r = await c.post("/api/login", json={"login": "desk1", "password": "desk-password-1"})
        h = {"X-CSRF-Token": (await r.json())["csrf"], "Origin": stack.url}
        dept = stack.cfg.service.departments[0]
        for body in ({"status": "acknowledged"},
                     {"status": "dispatched", "department": dept.code, "worker": dept.workers[0].id},
                     {"status": "in_progress"},
                     {"status": "resolved", "notes": "fixed the tap"}):
            r = await c.patch(f"/api/tickets/{t.number}", headers=h, json=body)
            assert r.status == 200, await r.text()
    return t.number


@pytest.mark.stack_env(**CALLBACK_ENV)
async def test_owner_presses_2_and_the_ticket_is_reopened_as_major(stack):
    stack.pbx.add_dialplan("callcentre-callback", "survey", DialplanEntry("survey", ("${TICKET}",)))
    stack.pbx.add_callee(OWNER_LEG, Callee(answer_after=2, script=CallerScript("+8613800138000", script="survey", inputs=["2", "4"])))
    number = await _resolve_at_the_desk(stack)
    await stack.services.callbacks.run_due()

    async def reopened() -> bool:
        [t] = await stack.tickets()
        return t.status == "reopened"

    assert await eventually(reopened)
    [t] = await stack.tickets()
    assert t.number == number and t.priority == "major"
    [orig] = stack.ami_server.actions_named("Originate")
    assert orig.get("Channel") == OWNER_LEG and orig.get("Context") == "callcentre-callback" and orig.get("Exten") == "survey"
    history = await stack.services.ticket_service.history(t.id)
    assert [h.event for h in history] == ["acknowledge", "dispatch", "start_work", "resolve", "callback_scheduled", "reopen"]
    attempts = await stack.services.callbacks.attempts(t.id)
    assert attempts and attempts[0]["result"] == "answered", attempts
    assert orig.get("ActionID") == attempts[0]["action_id"] and orig.get("ActionID").startswith("callcentre-callback-")


@pytest.mark.stack_env(**CALLBACK_ENV)
async def test_owner_presses_1_and_the_ticket_is_closed_with_the_rating(stack):
    stack.pbx.add_dialplan("callcentre-callback", "survey", DialplanEntry("survey", ("${TICKET}",)))
    stack.pbx.add_callee(OWNER_LEG, Callee(answer_after=1, script=CallerScript("+8613800138000", script="survey", inputs=["1", "5"])))
    await _resolve_at_the_desk(stack)
    await stack.services.callbacks.run_due()

    async def closed() -> bool:
        [t] = await stack.tickets()
        return t.status == "closed"

    assert await eventually(closed)


@pytest.mark.stack_env(**CALLBACK_ENV)
async def test_owner_busy_is_retried_later_and_every_attempt_is_kept(stack):
    stack.pbx.add_callee(OWNER_LEG, Callee(busy=True))
    await _resolve_at_the_desk(stack)
    await stack.services.callbacks.run_due()
    [t] = await stack.tickets()

    async def recorded() -> bool:
        attempts = await stack.services.callbacks.attempts(t.id)
        return bool(attempts) and attempts[0]["result"] == "busy"

    assert await eventually(recorded)
    attempts = await stack.services.callbacks.attempts(t.id)
    assert len(attempts) == 2 and attempts[1]["result"] is None, attempts  # the next try is scheduled
    assert attempts[1]["scheduled_at"] > attempts[0]["started_at"]
    [t] = await stack.tickets()
    assert t.status == "resolved"


@pytest.mark.stack_env(CALLCENTRE_WEB__SESSION_KEY="e2e-session-key-0123456789")
async def test_a_ticket_past_its_promise_is_escalated_and_listed_as_overdue_on_the_wallboard(stack):
    from datetime import timedelta

    from callcentre.domain.model import Priority, TicketDraft, TicketKind

    # The passes below are this test's own: the server's loop would otherwise make its first pass at
    # start-up, possibly after the ticket is committed, and escalate it first.
    await stack.services.escalation.stop()
    now = stack.services.clock.now()
    draft = TicketDraft(kind=TicketKind.REPAIR, category="lift", priority=Priority.GENERAL, caller_id_raw="13800138000",
                        caller_id="+8613800138000", call_uniqueid="1795999999.1")
    late = await stack.services.tickets.create_ticket(draft, now - timedelta(minutes=5))
    sub = stack.services.hub.subscribe("wallboard")
    alerts = await stack.services.escalation.run_once()
    assert [a.number for a in alerts] == [late.number]
    snap = stack.services.acd.snapshot()
    [row] = snap["overdue"]
    assert row["number"] == late.number and row["late_seconds"] >= 300 and row["escalated"] is False  # state as read
    assert any(a.get("kind") == "promise_breach" and late.number in a["message"] for a in snap["alerts"])
    msg = await asyncio.wait_for(sub.get(), 2)
    assert "promise_breach" in msg and late.number in msg
    sub.close()
    history = await stack.services.ticket_service.history(late.id)
    assert [h.event for h in history] == ["escalate"]
