"""The service loop on the real PBX: the closure call-back after a ticket is resolved.

Three owners report a repair through the real IVR at the same time; a supervisor resolves the three
tickets through the API; the server then places an AMI Originate to each owner
(the default ``Local/<E.164>@callcentre-outbound``: our own outbound context, its LOCAL trunk choice
handing the national number to the test's owner phones ``[cc-test-owner]``) into ``callcentre-callback,survey``, where
the FastAGI ``survey`` script asks "1 solved, 2 not":

* 张伟 presses 1: the ticket is closed;
* 陈建国 presses 2: the ticket is reopened, as major;
* 刘秀英's phone is busy: the attempt ends ``busy`` (Asterisk's OriginateResponse Reason 5), a second
  one is scheduled a minute later (``retry_delays_minutes: [1]``), placed, answered, and she presses 1;
  both attempts are kept.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.pbx.conftest import PBX
from tests.waiting import until

OWNERS = {  # caller number as dialled in -> the E.164 number the call-back rings
    "13800138000": "+8613800138000",  # 张伟 1-1201
    "13800138001": "+8613800138001",  # 陈建国 1-0301
    "13912345602": "+8613912345602",  # 刘秀英 1-0302
}
REPAIR = ["wait:2", "dtmf:2", "wait:2", "dtmf:1", "wait:7", "play:hello-world", "dtmf:#", "wait:25", "hangup"]
# The owner answers after 1 s; 3 s later (SendDTMF 'w' = 0.5 s) the digit, while the survey intro plays.
ANSWER_1 = "answer:1:wwwwww1:25"
ANSWER_2 = "answer:1:wwwwww2:25"

CONFIG = {
    "service": {"callback": {
        "first_delay_minutes": 0, "retry_delays_minutes": [1], "max_attempts": 3, "ring_seconds": 10,
        "calling_hours_start": "00:00", "calling_hours_end": "23:59",
    }},
}


def _owner_var(e164: str) -> str:
    """The owner phone's global: [callcentre-outbound] dials +86 mobiles in national form (11 digits)."""
    return "CC_OWNER_" + e164.removeprefix("+86")


async def _resolve(session, base: str, number: str) -> None:
    """Acknowledge, dispatch, start and resolve a ticket as the desk does (with the CSRF token)."""
    r = await session.get("/api/me")
    csrf = (await r.json())["csrf"] if r.status == 200 else None
    headers = {"Origin": base}
    if csrf:
        headers["X-CSRF-Token"] = csrf
    for body in ({"status": "acknowledged"},
                 {"status": "dispatched", "department": "engineering", "worker": "eng-duty"},
                 {"status": "in_progress"},
                 {"status": "resolved", "notes": "fixed the tap"}):
        r = await session.patch(f"/api/tickets/{number}", headers=headers, json=body)
        assert r.status == 200, (number, body, r.status, await r.text())


async def _attempts(pbx: PBX, ticket_id: int):
    from callcentre.storage.service_models import CallbackAttempt
    return await pbx.rows(CallbackAttempt, CallbackAttempt.ticket_id == ticket_id)


@pytest.mark.pbx_world(config=CONFIG, users=[("boss", "supervisor", {"name": "Boss"})],
                       globals={"CALLCENTRE_TRUNK_TECH": "LOCAL", "CALLCENTRE_TRUNK_CONTEXT": "cc-test-owner"})
async def test_closure_call_back_closes_reopens_and_retries_a_busy_owner(pbx: PBX):
    from callcentre.storage.models import TicketRow

    # the owners' phones: 1, 2, and busy for the first try
    await pbx.set_global(_owner_var(OWNERS["13800138000"]), ANSWER_1)
    await pbx.set_global(_owner_var(OWNERS["13800138001"]), ANSWER_2)
    await pbx.set_global(_owner_var(OWNERS["13912345602"]), "busy")

    # three repairs through the real IVR, concurrently
    calls = await asyncio.gather(*(pbx.call(n, REPAIR) for n in OWNERS))
    assert all(c.get("Response") == "Success" for c in calls), calls
    tickets = await pbx.eventually_tickets(3, 60)
    assert len(tickets) == 3, tickets
    by_caller = {t.caller_id: t for t in tickets}
    assert set(by_caller) == set(OWNERS.values()), by_caller

    session = await pbx.login("boss")
    try:
        for t in tickets:
            await _resolve(session, pbx.web_url, t.number)
    finally:
        await session.close()
    t0 = time.monotonic()

    zhang, chen, liu = (by_caller[OWNERS[n]] for n in OWNERS)

    async def status(ticket_id: int) -> TicketRow:
        [row] = await pbx.rows(TicketRow, TicketRow.id == ticket_id)
        return row

    # 1 closes (the poller places due call-backs every 15 s; the survey takes ~10 s)
    closed = await until(lambda: _is(status(zhang.id), "closed"), 60, "张伟's ticket closed")
    assert closed.status == "closed"
    reopened = await until(lambda: _is(status(chen.id), "reopened"), 60, "陈建国's ticket reopened")
    assert reopened.priority == "major", reopened.priority
    print(f"\nsurvey answers stored {time.monotonic() - t0:.1f} s after the tickets were resolved")

    # each Originate was placed exactly as configured, and Asterisk reported the outcome
    for t in (zhang, chen):
        [a] = await _attempts(pbx, t.id)
        assert a.state == "done" and a.result == "answered" and a.reason_code == 4, vars(a)
        assert a.survey_answer == ("solved" if t is zhang else "not_solved"), a.survey_answer
        ev = await pbx.ami.wait_for("OriginateResponse", 5, ActionID=a.action_id)
        assert ev["Response"] == "Success" and ev["Reason"] == "4", ev
        assert ev["Channel"].startswith(f"Local/{a.number}@callcentre-outbound"), ev
        await pbx.expect_logged(f"cc-test: owner phone {a.number.removeprefix('+86')} rings")
    agi_survey = [e for e in pbx.ami.events if e.get("Event") == "AGIExecStart"
                  and e.get("Context") == "callcentre-callback" and e.get("Exten") == "survey"]
    assert agi_survey, "no survey AGI ran in callcentre-callback"
    # The owners are Mandarin speakers (owners.csv): the survey speaks zh, although Asterisk gives the
    # Originate'd channel its default language (agi_language: en).
    debug = pbx.agi_debug()
    owner_legs = {e["Channel"] for e in agi_survey}
    assert any("agi_language: en" in ln and any(f"<{c}>" in ln for c in owner_legs) for ln in debug)
    intros = [ln for ln in debug if "STREAM FILE callcentre/" in ln and "/survey-intro" in ln]
    assert intros and all("callcentre/zh/survey-intro" in ln for ln in intros), intros

    # 刘秀英 was busy: Reason 5, attempt 1 kept as busy, attempt 2 scheduled a minute later
    async def first_busy():
        rows = await _attempts(pbx, liu.id)
        return rows if rows and rows[0].state == "done" else None

    rows = await until(first_busy, 45, "刘秀英's first attempt ended")
    assert rows[0].result == "busy" and rows[0].reason_code == 5, vars(rows[0])
    ev = await pbx.ami.wait_for("OriginateResponse", 5, ActionID=rows[0].action_id)
    assert ev["Reason"] == "5", ev
    assert len(rows) == 2 and rows[1].state == "scheduled", [vars(r) for r in rows]
    gap = (rows[1].scheduled_at - rows[0].finished_at).total_seconds()
    assert 55 <= gap <= 65, gap
    assert (await status(liu.id)).status == "resolved"

    # she is free now; the second attempt rings, she presses 1, the ticket is closed
    await pbx.set_global(_owner_var(OWNERS["13912345602"]), ANSWER_1)
    await until(lambda: _is(status(liu.id), "closed"), 110, "刘秀英's ticket closed on the retry", every=1)
    rows = await _attempts(pbx, liu.id)
    assert [(r.attempt_no, r.result) for r in rows] == [(1, "busy"), (2, "answered")], [vars(r) for r in rows]
    assert rows[1].action_id != rows[0].action_id
    print(f"busy owner reached on attempt 2, {time.monotonic() - t0:.1f} s after resolve")

    # the ticket histories say the same
    from callcentre.storage.service_models import TicketHistory
    hist = [h.event for h in await pbx.rows(TicketHistory, TicketHistory.ticket_id == liu.id)]
    print("history of the busy owner's ticket:", hist)
    # attempt 1 ended busy (a history line); attempt 2 was answered and the survey closed the ticket
    assert hist.count("callback_attempt") == 1 and hist.count("callback_scheduled") == 1, hist
    assert hist.index("callback_attempt") < hist.index("confirm_closed"), hist
    hist = [h.event for h in await pbx.rows(TicketHistory, TicketHistory.ticket_id == chen.id)]
    assert "reopen" in hist, hist


async def _is(row_coro, wanted: str):
    row = await row_coro
    return row if row.status == wanted else None
