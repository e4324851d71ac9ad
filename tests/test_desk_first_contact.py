"""A ticket the agent solves while the caller is still on the line ("resolved at first contact").

It goes through the ticket lifecycle like any other (acknowledged, then resolved at first contact):
the history has both steps, the first-contact flag is set for the reports, and the closure
call-back to the owner is scheduled. (It used to be written straight to ``resolved`` by the desk.)
"""

from __future__ import annotations

import pytest

from tests.e2e_desk import agent_session

CALLBACK_ENV = dict(
    CALLCENTRE_SERVICE__CALLBACK__FIRST_DELAY_MINUTES="0",
    CALLCENTRE_SERVICE__CALLBACK__CALLING_HOURS_START="00:00",
    CALLCENTRE_SERVICE__CALLBACK__CALLING_HOURS_END="23:59",
    CALLCENTRE_WEB__SESSION_KEY="desk-first-contact-key-0123456789",
)


@pytest.mark.stack_env(**CALLBACK_ENV)
async def test_resolved_at_first_contact_goes_through_the_lifecycle(stack):
    from callcentre.storage.service_models import TicketServiceState
    from sqlalchemy import select

    async with agent_session(stack, "desk1") as (c, h):
        r = await c.post("/api/tickets", headers=h, json={
            "kind": "repair", "category": "water", "phone": "13800138000", "notes": "tap fixed by phone",
            "resolved_first_contact": True})
        assert r.status == 201, await r.text()
        ticket = (await r.json())["ticket"]
    assert ticket["status"] == "resolved"
    [t] = await stack.tickets()
    assert t.number == ticket["number"] and t.status == "resolved"
    history = await stack.services.ticket_service.history(t.id)
    events = [e.event for e in history]
    assert events[:2] == ["acknowledge", "resolve"], events
    assert "callback_scheduled" in events, events
    assert all(e.by == "desk1" for e in history[:2])
    async with stack.services.session_factory() as s:
        state = (await s.execute(select(TicketServiceState).where(TicketServiceState.ticket_id == t.id))).scalar_one()
    assert state.first_contact is True and state.resolved_at is not None


@pytest.mark.stack_env(**CALLBACK_ENV)
async def test_a_ticket_created_open_is_not_resolved_and_has_no_call_back(stack):
    async with agent_session(stack, "desk1") as (c, h):
        r = await c.post("/api/tickets", headers=h, json={"kind": "repair", "category": "water", "phone": "13800138000"})
        assert r.status == 201, await r.text()
    [t] = await stack.tickets()
    assert t.status == "new"
    history = await stack.services.ticket_service.history(t.id)
    assert "resolve" not in [e.event for e in history] and "callback_scheduled" not in [e.event for e in history]
