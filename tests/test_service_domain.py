"""The pure service loop: lifecycle table, promise boundaries, escalation, repeats, call-backs, reports."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from callcentre.config import PromisesConfig
from callcentre.domain.lifecycle import (
    Acknowledge,
    ConfirmClosed,
    Dispatch,
    Escalate,
    EventName,
    Reopen,
    Resolve,
    StartWork,
    TicketState,
    TransitionRefused,
    allowed_events,
    note_warning,
    transition,
)
from callcentre.domain.model import Priority, TicketKind, TicketStatus
from callcentre.domain.ports import FakeClock
from callcentre.domain.promises import (
    AlertKind,
    ClockSample,
    PromiseState,
    due_escalations,
    evaluation_time,
    promise_deadline,
    promise_kept,
    promise_status,
)
from callcentre.domain.reports import (
    CallRow,
    TicketRow,
    chosen_action,
    daily_reconciliation,
    monthly_statistics,
    to_csv,
)
from callcentre.domain.service import (
    CallbackPolicy,
    CallbackResult,
    DispatchInvalid,
    ServiceConfig,
    SurveyAnswer,
    TicketFacts,
    apply_survey,
    check_dispatch,
    department_for,
    find_repeats,
    needs_person,
    next_attempt,
    originate_result,
    survey_outcome,
)
from tests.captures import ami_messages

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
SH = "Asia/Shanghai"
MENU = {"1": "self_service", "2": "repair", "3": "complaint", "0": "agent", "8": "emergency", "9": "english", "*": "repeat"}


def state(status: TicketStatus = TicketStatus.NEW, **kw: object) -> TicketState:
    base = dict(
        number="R20261124-0001",
        kind=TicketKind.REPAIR,
        category="water",
        priority=Priority.GENERAL,
        status=status,
        created_at=T0,
        promised_by=T0 + timedelta(minutes=30),
        agent="agent1",
    )
    base.update(kw)
    return TicketState(**base)  # type: ignore[arg-type]


# --- lifecycle --------------------------------------------------------------------------------------

S = TicketStatus
EVENTS = {
    "acknowledge": Acknowledge(),
    "dispatch": Dispatch("engineering", "eng-duty"),
    "start_work": StartWork(),
    "resolve": Resolve(first_contact=False),
    "resolve_fc": Resolve(first_contact=True),
    "confirm_closed": ConfirmClosed(),
    "reopen": Reopen("owner says the tap still drips"),
    "escalate": Escalate(),
}
# status -> {event: resulting status}; every event not listed must be refused.
TABLE: dict[TicketStatus, dict[str, TicketStatus]] = {
    S.NEW: {"acknowledge": S.ACKNOWLEDGED, "escalate": S.NEW},
    S.ACKNOWLEDGED: {"dispatch": S.DISPATCHED, "resolve_fc": S.RESOLVED, "escalate": S.ACKNOWLEDGED},
    S.DISPATCHED: {"dispatch": S.DISPATCHED, "start_work": S.IN_PROGRESS, "escalate": S.DISPATCHED},
    S.IN_PROGRESS: {"dispatch": S.DISPATCHED, "resolve": S.RESOLVED, "escalate": S.IN_PROGRESS},
    S.RESOLVED: {"confirm_closed": S.CLOSED, "reopen": S.REOPENED},
    S.CLOSED: {"reopen": S.REOPENED},
    S.REOPENED: {"acknowledge": S.ACKNOWLEDGED, "dispatch": S.DISPATCHED, "escalate": S.REOPENED},
}


def _state_in(status: TicketStatus) -> TicketState:
    if status in (S.DISPATCHED, S.IN_PROGRESS):
        # Already with another worker, so a dispatch to eng-duty is a reassignment.
        return state(status, department="engineering", worker="eng-2")
    if status is S.REOPENED:
        return state(status, reopen_count=1)
    return state(status)


CASES = [(st, ev, TABLE[st].get(ev)) for st in TicketStatus for ev in EVENTS]


def test_table_covers_every_status() -> None:
    assert set(TABLE) == set(TicketStatus)


@pytest.mark.parametrize(("status", "event", "expected"), CASES, ids=[f"{s.value}-{e}" for s, e, _ in CASES])
def test_transition_table(status: TicketStatus, event: str, expected: TicketStatus | None) -> None:
    at = T0 + timedelta(minutes=5)
    before = _state_in(status)
    if expected is None:
        with pytest.raises(TransitionRefused) as exc:
            transition(before, EVENTS[event], "agent1", "", at)
        msg = str(exc.value)
        assert status.value in msg and EVENTS[event].name.value in msg and before.number in msg
        assert exc.value.status is status
    else:
        after, record = transition(before, EVENTS[event], "agent1", "a note", at)
        assert after.status is expected
        assert (record.from_status, record.to_status, record.by, record.note, record.at) == (
            status, expected, "agent1", "a note", at
        )
        assert record.event is EVENTS[event].name


def test_allowed_events_matches_table() -> None:
    assert allowed_events(S.NEW) == [EventName.ACKNOWLEDGE, EventName.ESCALATE]
    assert allowed_events(S.CLOSED) == [EventName.REOPEN]
    assert EventName.ESCALATE not in allowed_events(S.RESOLVED)


def test_full_path_records_who_when_and_what() -> None:
    clock = FakeClock(T0)
    s = state()
    history = []
    steps = [
        (Acknowledge(), "agent1"),
        (Dispatch("engineering", "eng-duty"), "agent1"),
        (StartWork(), "eng-duty"),
        (Resolve(), "eng-duty"),
        (ConfirmClosed(), "callback"),
    ]
    for event, by in steps:
        clock.advance(60)
        s, rec = transition(s, event, by, "", clock.now())
        history.append(rec)
    assert s.status is S.CLOSED
    assert [r.to_status for r in history] == [S.ACKNOWLEDGED, S.DISPATCHED, S.IN_PROGRESS, S.RESOLVED, S.CLOSED]
    assert history[1].details == {"department": "engineering", "worker": "eng-duty"}
    assert history[3].details == {"first_contact": False}
    assert (s.acknowledged_at, s.dispatched_at, s.resolved_at, s.closed_at) == (
        T0 + timedelta(seconds=60), T0 + timedelta(seconds=120), T0 + timedelta(seconds=240),
        T0 + timedelta(seconds=300),
    )
    assert s.worker == "eng-duty" and s.first_contact is False


def test_first_contact_resolution_rules() -> None:
    s, rec = transition(state(S.ACKNOWLEDGED), Resolve(first_contact=True), "agent1", "told him how", T0)
    assert s.first_contact is True and rec.details == {"first_contact": True}
    with pytest.raises(TransitionRefused, match="dispatch it first"):
        transition(state(S.ACKNOWLEDGED), Resolve(), "agent1", "", T0)
    with pytest.raises(TransitionRefused, match="first-contact"):
        transition(state(S.IN_PROGRESS), Resolve(first_contact=True), "agent1", "", T0)


def test_reassignment_to_same_worker_is_refused() -> None:
    s = state(S.DISPATCHED, department="engineering", worker="eng-duty")
    with pytest.raises(TransitionRefused, match="already with eng-duty"):
        transition(s, Dispatch("engineering", "eng-duty"), "agent1", "", T0)
    s2, rec = transition(s, Dispatch("engineering", "eng-2"), "agent1", "eng-duty is off sick", T0)
    assert s2.worker == "eng-2" and rec.details["previous_worker"] == "eng-duty"


def test_reopen_raises_priority_and_rearms_promise() -> None:
    s = state(S.RESOLVED, warned_at=T0, escalated_at=T0, resolved_at=T0, first_contact=False)
    at = T0 + timedelta(hours=1)
    new_deadline = at + timedelta(hours=6)
    s2, rec = transition(s, Reopen("still leaking", raise_priority=True, promised_by=new_deadline), "agent1", "", at)
    assert s2.status is S.REOPENED and s2.priority is Priority.MAJOR and s2.promised_by == new_deadline
    assert s2.warned_at is None and s2.escalated_at is None and s2.resolved_at is None and s2.reopen_count == 1
    assert rec.details["reason"] == "still leaking" and rec.details["priority"] == "major"
    # A reopened ticket cannot claim a first-contact resolution later.
    s3, _ = transition(s2, Acknowledge(), "agent1", "", at)
    with pytest.raises(TransitionRefused):
        transition(s3, Resolve(first_contact=True), "agent1", "", at)


def test_escalate_once_per_promise() -> None:
    s, rec = transition(state(S.DISPATCHED), Escalate(), "system", "", T0 + timedelta(minutes=31))
    assert s.status is S.DISPATCHED and s.escalated_at == T0 + timedelta(minutes=31)
    assert rec.details == {"reason": "promise breached"}
    with pytest.raises(TransitionRefused, match="already escalated"):
        transition(s, Escalate(), "system", "", T0 + timedelta(minutes=32))


@pytest.mark.parametrize(
    ("event", "by", "note", "at", "match"),
    [
        (Acknowledge(), "", "", T0, "by"),
        (Acknowledge(), "agent1", "", datetime(2026, 11, 24, 2, 0), "timezone-aware"),
        (Acknowledge(), "agent1", "x" * 2001, T0, "at most 2000"),
        (Acknowledge(), "agent1", "", T0 - timedelta(seconds=1), "before it was created"),
        (Acknowledge(), "agent\r\nAction: Originate", "", T0, "printable"),
    ],
)
def test_bad_input_is_a_clear_error(event, by, note, at, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        transition(state(), event, by, note, at)


def test_reopen_needs_a_reason_and_dispatch_needs_names() -> None:
    with pytest.raises(ValueError, match="reason"):
        transition(state(S.CLOSED), Reopen("  "), "agent1", "", T0)
    with pytest.raises(ValueError, match="worker"):
        transition(state(S.ACKNOWLEDGED), Dispatch("engineering", ""), "agent1", "", T0)


# --- promises ---------------------------------------------------------------------------------------

CFG = PromisesConfig(per_category={"lift": {"general": 10}})


def test_deadlines_general_major_and_per_category() -> None:
    assert promise_deadline(CFG, Priority.GENERAL, "water", T0) == T0 + timedelta(minutes=30)
    assert promise_deadline(CFG, Priority.MAJOR, "water", T0) == T0 + timedelta(hours=6)
    assert promise_deadline(CFG, Priority.GENERAL, "lift", T0) == T0 + timedelta(minutes=10)
    # Only the general promise is overridden for lifts; major falls back to 6 hours.
    assert promise_deadline(CFG, Priority.MAJOR, "lift", T0) == T0 + timedelta(hours=6)
    with pytest.raises(ValueError, match="timezone-aware"):
        promise_deadline(CFG, Priority.GENERAL, "water", datetime(2026, 11, 24, 10, 0))


@pytest.mark.parametrize(
    ("priority", "category", "total_s"),
    [(Priority.GENERAL, "water", 1800), (Priority.MAJOR, "water", 6 * 3600), (Priority.GENERAL, "lift", 600)],
)
def test_promise_boundaries_with_fake_clock(priority: Priority, category: str, total_s: int) -> None:
    clock = FakeClock(T0)
    created = clock.now()
    deadline = promise_deadline(CFG, priority, category, created)
    warn_at = int(total_s * 0.8)

    def at(offset: int):  # type: ignore[no-untyped-def]
        clock.advance(offset - (clock.now() - created).total_seconds())
        return promise_status(created, deadline, clock.now(), CFG.warn_fraction)

    assert at(0).state is PromiseState.ON_TRACK and at(0).remaining_seconds == total_s
    assert at(warn_at - 1).state is PromiseState.ON_TRACK
    exactly = at(warn_at)
    assert exactly.state is PromiseState.WARNING and exactly.elapsed_fraction == pytest.approx(0.8)
    assert at(total_s - 1).state is PromiseState.WARNING and at(total_s - 1).remaining_seconds == 1
    assert at(total_s).state is PromiseState.WARNING  # the deadline itself is still kept
    after = at(total_s + 1)
    assert after.state is PromiseState.BREACHED and after.remaining_seconds == -1


def test_promise_status_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="not after"):
        promise_status(T0, T0, T0, 0.8)
    with pytest.raises(ValueError, match="warn_fraction"):
        promise_status(T0, T0 + timedelta(minutes=1), T0, 1.0)


def test_promise_kept_is_measured_at_resolution() -> None:
    d = T0 + timedelta(minutes=30)
    assert promise_kept(d, d) is True
    assert promise_kept(d, d + timedelta(seconds=1)) is False
    assert promise_kept(d, None) is None and promise_kept(None, d) is None


def test_due_escalations_warns_once_and_escalates_once() -> None:
    clock = FakeClock(T0)
    t = state(S.DISPATCHED)
    assert due_escalations([t], clock.now()) == []
    clock.advance(24 * 60 - 1)
    assert due_escalations([t], clock.now()) == []
    clock.advance(1)  # exactly 80 %
    alerts = due_escalations([t], clock.now())
    assert [(a.number, a.kind, a.remaining_seconds) for a in alerts] == [(t.number, AlertKind.WARNING, 360)]
    assert due_escalations([t], clock.now()) == alerts  # pure: same input, same answer
    t = note_warning(t, clock.now())
    assert due_escalations([t], clock.now()) == []
    clock.advance(360)  # the deadline: kept
    assert due_escalations([t], clock.now()) == []
    clock.advance(1)
    alerts = due_escalations([t], clock.now())
    assert [(a.kind, a.agent) for a in alerts] == [(AlertKind.BREACH, "agent1")]
    t, rec = transition(t, Escalate(), "system", "promise 10:30 missed", clock.now())
    assert due_escalations([t], clock.now()) == []
    clock.advance(3600)
    assert due_escalations([t], clock.now()) == []


def test_due_escalations_skips_closed_and_warning_after_breach() -> None:
    now = T0 + timedelta(hours=1)
    tickets = [
        state(S.RESOLVED, number="A"),
        state(S.CLOSED, number="B"),
        state(S.NEW, number="C", promised_by=None),
        state(S.NEW, number="D"),  # breached and never warned: breach only
        state(S.ACKNOWLEDGED, number="E", promised_by=T0 + timedelta(minutes=20)),  # earlier deadline
    ]
    alerts = due_escalations(tickets, now)
    assert [(a.number, a.kind) for a in alerts] == [("E", AlertKind.BREACH), ("D", AlertKind.BREACH)]


def test_wall_clock_jump_does_not_escalate_everything_at_once() -> None:
    clock = FakeClock(T0)
    # Ten tickets with deadlines one every 10 minutes from 10:30 local.
    tickets = [
        state(S.DISPATCHED, number=f"T{i}", warned_at=T0, promised_by=T0 + timedelta(minutes=30 + 10 * i))
        for i in range(10)
    ]
    prev = ClockSample(clock.now(), clock.monotonic())
    clock.advance(15)
    now = evaluation_time(prev, ClockSample(clock.now(), clock.monotonic()))
    assert now == clock.now()  # clocks agree: the wall clock is used
    prev = ClockSample(now, clock.monotonic())
    clock.jump_wall(3 * 3600)  # a bad NTP step of three hours
    clock.advance(15)
    now = evaluation_time(prev, ClockSample(clock.now(), clock.monotonic()))
    assert now == prev.wall + timedelta(seconds=30)  # catches up at twice real time, no more
    assert due_escalations(tickets, now) == []
    # Without the guard, the raw wall clock would have escalated all ten in one go.
    assert len(due_escalations(tickets, clock.now())) == 10
    # The step is corrected (wall clock back): evaluation follows the wall clock at once, nothing fired.
    prev = ClockSample(now, clock.monotonic())
    clock.jump_wall(-3 * 3600)
    clock.advance(15)
    now = evaluation_time(prev, ClockSample(clock.now(), clock.monotonic()))
    assert now == clock.now() and due_escalations(tickets, now) == []
    # First run after start-up: no previous sample, the wall clock is trusted.
    assert evaluation_time(None, ClockSample(clock.now(), clock.monotonic())) == clock.now()


def test_wall_clock_jump_breaches_arrive_in_deadline_order() -> None:
    clock = FakeClock(T0 + timedelta(minutes=29))
    tickets = [state(S.DISPATCHED, number=f"T{i}", warned_at=T0, promised_by=T0 + timedelta(minutes=30 + 10 * i))
               for i in range(3)]
    prev = ClockSample(clock.now(), clock.monotonic())
    clock.jump_wall(3600)
    fired: list[str] = []
    for _ in range(200):  # ticks of 15 s
        clock.advance(15)
        now = evaluation_time(prev, ClockSample(clock.now(), clock.monotonic()))
        prev = ClockSample(now, clock.monotonic())
        for alert in due_escalations(tickets, now):
            fired.append(alert.number)
            tickets = [transition(t, Escalate(), "system", "", now)[0] if t.number == alert.number else t
                       for t in tickets]
        if len(fired) == 3:
            break
    assert fired == ["T0", "T1", "T2"]  # one at a time, never all in one tick, never twice


# --- repeat complaints ------------------------------------------------------------------------------


def facts(number: str, created_at: datetime, **kw: object) -> TicketFacts:
    base = dict(number=number, kind=TicketKind.COMPLAINT, category="environment", priority=Priority.GENERAL,
                owner_id=7, unit_id=70, created_at=created_at)
    base.update(kw)
    return TicketFacts(**base)  # type: ignore[arg-type]


def test_repeat_window_is_inclusive_of_n_days() -> None:
    new = facts("C-new", T0)
    exactly = facts("C-1", T0 - timedelta(days=30))
    too_old = facts("C-0", T0 - timedelta(days=30, seconds=1))
    v = find_repeats(new, [too_old, exactly], days=30)
    assert v.is_repeat and v.linked == ("C-1",) and v.priority is Priority.MAJOR and v.route_to_senior
    v = find_repeats(new, [too_old], days=30)
    assert not v.is_repeat and not v.flagged and v.priority is Priority.GENERAL and not v.route_to_senior


def test_repeat_by_unit_or_owner_same_category_only() -> None:
    new = facts("C-new", T0)
    history = [
        facts("C-3", T0 - timedelta(days=3), owner_id=8),  # another owner of the same unit
        facts("C-2", T0 - timedelta(days=5), unit_id=71),  # same owner, another unit
        facts("C-x", T0 - timedelta(days=1), category="security"),  # other category
        facts("C-y", T0 - timedelta(days=1), owner_id=9, unit_id=99),  # someone else
        facts("M-1", T0 - timedelta(days=1), kind=TicketKind.MESSAGE),  # a voice message, not a complaint
        facts("C-later", T0 + timedelta(minutes=1)),  # after the new one
        facts("C-new", T0),  # itself
    ]
    v = find_repeats(new, history, days=30)
    assert v.linked == ("C-2", "C-3")  # oldest first


def test_unknown_owner_and_unit_never_match() -> None:
    new = facts("C-new", T0, owner_id=None, unit_id=None)
    v = find_repeats(new, [facts("C-1", T0 - timedelta(days=1), owner_id=None, unit_id=None)], days=30)
    assert not v.is_repeat


def test_over_the_head_complaint_is_flagged() -> None:
    v = find_repeats(facts("C-new", T0, over_head=True), [], days=30)
    assert v.over_head and v.flagged and not v.is_repeat and v.priority is Priority.MAJOR and v.route_to_senior
    with pytest.raises(ValueError):
        find_repeats(facts("C-new", T0), [], days=0)


# --- call-backs -------------------------------------------------------------------------------------


def test_originate_reasons_from_real_capture() -> None:
    outcomes = {
        m["ActionID"]: originate_result(m["Reason"])
        for m in ami_messages("ami-originate-outcomes.txt")
        if m.get("Event") == "OriginateResponse"
    }
    assert outcomes == {
        "cb-busy": CallbackResult.BUSY,
        "cb-nosuch": CallbackResult.FAILED,
        "cb-answered": CallbackResult.ANSWERED,
        "cb-noanswer": CallbackResult.NO_ANSWER,
    }
    assert originate_result("1") is CallbackResult.HUNG_UP and originate_result(8) is CallbackResult.CONGESTION
    assert originate_result("2") is CallbackResult.FAILED
    with pytest.raises(ValueError, match="Reason"):
        originate_result("busy")


def local(y: int, mo: int, d: int, h: int, mi: int = 0, tz: str = SH) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz))


POLICY = CallbackPolicy()


def test_first_attempt_inside_and_outside_calling_hours() -> None:
    assert next_attempt(POLICY, 0, None, local(2026, 11, 24, 10), SH) == local(2026, 11, 24, 10, 5)
    # Resolved at 19:58: due 20:03, after hours → tomorrow 09:00.
    assert next_attempt(POLICY, 0, None, local(2026, 11, 24, 19, 58), SH) == local(2026, 11, 25, 9)
    # Resolved at 03:00 → 09:00 the same morning.
    assert next_attempt(POLICY, 0, None, local(2026, 11, 24, 3), SH) == local(2026, 11, 24, 9)
    # The window's edges: 09:00 is inside, 20:00 is not.
    assert next_attempt(POLICY, 0, None, local(2026, 11, 24, 8, 55), SH) == local(2026, 11, 24, 9)
    assert next_attempt(POLICY, 0, None, local(2026, 11, 24, 19, 55), SH) == local(2026, 11, 25, 9)


def test_retries_follow_delays_and_then_a_person() -> None:
    t = local(2026, 11, 24, 11)
    assert next_attempt(POLICY, 1, CallbackResult.NO_ANSWER, t, SH) == t + timedelta(minutes=30)
    assert next_attempt(POLICY, 2, CallbackResult.BUSY, t, SH) == t + timedelta(minutes=120)
    # 19:00 + 2 h is at night: the next morning.
    assert next_attempt(POLICY, 2, CallbackResult.BUSY, local(2026, 11, 24, 19), SH) == local(2026, 11, 25, 9)
    assert next_attempt(POLICY, 3, CallbackResult.NO_INPUT, t, SH) == t + timedelta(days=1)
    assert next_attempt(POLICY, 4, CallbackResult.NO_ANSWER, t, SH) is None
    assert needs_person(POLICY, 4, CallbackResult.NO_ANSWER)
    assert not needs_person(POLICY, 3, CallbackResult.NO_ANSWER)
    # A failed call (wrong number) goes to a person at once; an answered one is done.
    assert next_attempt(POLICY, 1, CallbackResult.FAILED, t, SH) is None and needs_person(POLICY, 1, CallbackResult.FAILED)
    assert next_attempt(POLICY, 1, CallbackResult.ANSWERED, t, SH) is None
    assert not needs_person(POLICY, 1, CallbackResult.ANSWERED)
    with pytest.raises(ValueError, match="last_result"):
        next_attempt(POLICY, 1, None, t, SH)


def test_calling_days_and_daylight_saving() -> None:
    weekdays = CallbackPolicy(calling_days=[0, 1, 2, 3, 4])
    friday_night = local(2026, 11, 27, 21)
    assert friday_night.weekday() == 4
    assert next_attempt(weekdays, 0, None, friday_night, SH) == local(2026, 11, 30, 9)  # Monday
    # New York springs forward on 2026-03-08: 09:00 that morning is 13:00 UTC, not 14:00.
    ny = "America/New_York"
    got = next_attempt(POLICY, 0, None, local(2026, 3, 7, 23, tz=ny), ny)
    assert got == datetime(2026, 3, 8, 13, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "kw",
    [
        {"calling_hours_start": "20:00", "calling_hours_end": "09:00"},
        {"calling_hours_start": "9:00"},
        {"retry_delays_minutes": []},
        {"calling_days": [7]},
        {"retry_on": ["answered"]},
    ],
)
def test_callback_policy_validation(kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CallbackPolicy(**kw)


def test_survey_outcomes() -> None:
    assert survey_outcome("1", "5") == survey_outcome("1", "5")
    assert survey_outcome("1", "5").answer is SurveyAnswer.SOLVED and survey_outcome("1", "5").rating == 5
    assert survey_outcome("2", "9").answer is SurveyAnswer.NOT_SOLVED and survey_outcome("2", "9").rating is None
    assert survey_outcome(None, None).answer is SurveyAnswer.NO_ANSWER
    assert survey_outcome("7", "0").answer is SurveyAnswer.NO_ANSWER


def test_apply_survey_closes_reopens_or_leaves() -> None:
    resolved = state(S.RESOLVED, resolved_at=T0 + timedelta(minutes=20), worker="eng-duty", department="engineering")
    at = T0 + timedelta(hours=2)
    d = apply_survey(resolved, survey_outcome("1", "4"), CFG, at)
    assert d.state.status is S.CLOSED and d.record is not None and d.record.details["rating"] == 4
    assert d.route_to_agent is None
    d = apply_survey(resolved, survey_outcome("2", "1"), CFG, at)
    assert d.state.status is S.REOPENED and d.state.priority is Priority.MAJOR
    assert d.state.promised_by == at + timedelta(hours=6) and d.route_to_agent == "agent1"
    assert d.record is not None and d.record.details["rating"] == 1 and d.record.by == "callback"
    d = apply_survey(resolved, survey_outcome(None, None), CFG, at)
    assert d.state == resolved and d.record is None


# --- service configuration --------------------------------------------------------------------------


def test_service_config_defaults_and_dispatch_checks() -> None:
    cfg = ServiceConfig()
    assert [d.code for d in cfg.departments] == ["engineering", "cleaning", "security", "greening", "customer_service"]
    check_dispatch(cfg, "engineering", "eng-duty")
    with pytest.raises(DispatchInvalid, match="unknown department"):
        check_dispatch(cfg, "plumbing", "eng-duty")
    with pytest.raises(DispatchInvalid, match="not in department"):
        check_dispatch(cfg, "cleaning", "eng-duty")
    assert department_for(cfg, "lift") == "engineering" and department_for(cfg, "nothing") is None
    with pytest.raises(ValidationError, match="used twice"):
        ServiceConfig(departments=[{"code": "a", "name": "A"}, {"code": "a", "name": "B"}])
    with pytest.raises(ValidationError, match="unknown key|extra"):
        ServiceConfig(repeat_dayz=3)
    with pytest.raises(ValidationError):
        ServiceConfig(reconciliation_time="25:00")


# --- reports ----------------------------------------------------------------------------------------


def trow(number: str, created_at: datetime, **kw: object) -> TicketRow:
    base = dict(number=number, kind=TicketKind.REPAIR, category="water", status=S.NEW, created_at=created_at,
                promised_by=created_at + timedelta(minutes=30))
    base.update(kw)
    return TicketRow(**base)  # type: ignore[arg-type]


def test_chosen_action_skips_language_and_wrong_digits() -> None:
    assert chosen_action("2>1>rec", MENU) == "repair"
    assert chosen_action("9>3>2>rec", MENU) == "complaint"
    assert chosen_action("5>*>1", MENU) == "self_service"
    assert chosen_action("", MENU) is None


def test_daily_reconciliation() -> None:
    day = date(2026, 11, 24)
    now = local(2026, 11, 24, 22)
    tickets = [
        # 00:30 Shanghai on the 24th although the 23rd in UTC: counts for the 24th.
        trow("R-1", datetime(2026, 11, 23, 16, 30, tzinfo=timezone.utc), call_uniqueid="c1"),
        trow("R-2", local(2026, 11, 24, 9), status=S.ACKNOWLEDGED, call_uniqueid="c2"),
        trow("C-1", local(2026, 11, 24, 10), kind=TicketKind.COMPLAINT, category="environment",
             status=S.CLOSED, call_linkedid="c3-link"),
        trow("R-3", local(2026, 11, 24, 21, 45), status=S.DISPATCHED),  # promise 22:15: not yet past
        trow("R-old", local(2026, 11, 20, 9), status=S.REOPENED),  # older, still waiting
    ]
    calls = [
        CallRow("c1", local(2026, 11, 24, 0, 29), "13800138000", "2>1>rec"),
        CallRow("c2", local(2026, 11, 24, 9), "13800138001", "2>2>rec"),
        CallRow("c3", local(2026, 11, 24, 10), "13800138002", "3>6>rec", linkedid="c3-link"),
        CallRow("c4", local(2026, 11, 24, 11), "13800138003", "9>3>1>rec"),  # complaint, no ticket
        CallRow("c5", local(2026, 11, 24, 12), None, "2"),  # repair, hung up, no ticket
        CallRow("c6", local(2026, 11, 24, 13), "13800138004", "1>1"),  # self-service: no ticket needed
        CallRow("c7", local(2026, 11, 23, 13), "13800138005", "2>1"),  # another day
    ]
    rec = daily_reconciliation(day, SH, tickets, calls, MENU, now)
    assert rec.intake == 4
    assert rec.by_kind == {"repair": 3, "complaint": 1}
    assert rec.by_category == {"water": 3, "environment": 1}
    assert rec.by_status == {"new": 1, "acknowledged": 1, "closed": 1, "dispatched": 1}
    assert rec.not_acknowledged == ["R-1"]
    assert rec.not_dispatched == ["R-old", "R-2"]
    assert rec.past_promise == ["R-old", "R-1", "R-2"]
    assert [(m.uniqueid, m.action) for m in rec.calls_without_ticket] == [("c4", "complaint"), ("c5", "repair")]
    assert not rec.clean
    text = to_csv(rec.rows())
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0] == {"section": "intake", "key": "total", "value": "4"}
    assert {"section": "call_without_ticket", "key": "c4", "value": "complaint 13800138003"} in parsed


def test_monthly_statistics_by_category_and_agent() -> None:
    nov = local(2026, 11, 10, 10)
    tickets = [
        trow("R-1", nov, status=S.CLOSED, resolved_at=nov + timedelta(minutes=20), department="engineering",
             building="A", agent="agent1", satisfaction=5, call_uniqueid="c1"),
        trow("R-2", nov, status=S.RESOLVED, resolved_at=nov + timedelta(minutes=31), department="engineering",
             building="A", agent="agent2", satisfaction=2, call_uniqueid="c2"),
        trow("C-1", nov, kind=TicketKind.COMPLAINT, category="environment", status=S.CLOSED,
             resolved_at=nov + timedelta(minutes=5), first_contact=True, repeat=True, agent="agent1",
             call_uniqueid="c3"),
        trow("R-3", nov, status=S.NEW, agent="agent2"),
        trow("R-oct", local(2026, 10, 31, 23), status=S.CLOSED, resolved_at=local(2026, 11, 1, 0)),  # October
    ]
    calls = [
        CallRow("c1", nov, "1", "2>1", agent="agent1", within_target=True),
        CallRow("c2", nov, "2", "2>1", agent="agent2", within_target=False),
        CallRow("c3", nov, "3", "3>6", agent="agent1", within_target=True),
        CallRow("c9", nov, "9", "0", agent="agent2", within_target=True),  # no ticket
        CallRow("c8", nov, "8", "0"),  # nobody answered: not in the two-ring share
    ]
    rows = {r.group: r for r in monthly_statistics(2026, 11, SH, tickets, calls, "category")}
    assert list(rows) == ["(none)", "environment", "water", "(total)"]
    water = rows["water"]
    assert (water.tickets, water.resolved, water.promises_kept, water.promise_kept_share) == (3, 2, 1, 0.5)
    assert (water.calls_answered, water.two_ring_share) == (2, 0.5)
    assert (water.satisfaction_responses, water.satisfaction_average) == (2, 3.5)
    env = rows["environment"]
    assert (env.first_contact_resolutions, env.first_contact_share, env.repeat_complaints) == (1, 1.0, 1)
    total = rows["(total)"]
    assert (total.tickets, total.calls_answered, total.two_ring_share) == (4, 4, 0.75)
    assert rows["(none)"].tickets == 0 and rows["(none)"].promise_kept_share is None
    agents = {r.group: r for r in monthly_statistics(2026, 11, SH, tickets, calls, "agent")}
    assert agents["agent1"].two_ring_share == 1.0 and agents["agent2"].two_ring_share == 0.5
    assert agents["agent1"].tickets == 2
    with pytest.raises(ValueError, match="group_by"):
        monthly_statistics(2026, 11, SH, tickets, calls, "floor")  # type: ignore[arg-type]


def test_to_csv_quotes_formulas_and_formats_values() -> None:
    rows = monthly_statistics(
        2026, 11, SH,
        [trow("R-1", local(2026, 11, 2, 10), building="=HYPERLINK(\"http://x\")", status=S.NEW)],
        [], "building",
    )
    text = to_csv(rows)
    assert text.endswith("\r\n") and text.splitlines()[0].startswith("group_by,group,tickets,")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["group"] == "'=HYPERLINK(\"http://x\")"
    assert parsed[0]["promise_kept_share"] == "" and parsed[1]["group"] == "(total)"
    assert to_csv([]) == ""
    assert to_csv([{"a": True, "b": None, "c": S.NEW, "d": -5}]) == "a,b,c,d\r\nyes,,new,-5\r\n"
    with pytest.raises(ValueError, match="different columns"):
        to_csv([{"a": 1}, {"b": 2}])
    with pytest.raises(TypeError):
        to_csv([42])


def test_replace_keeps_state_frozen() -> None:
    s = state()
    with pytest.raises(AttributeError):
        s.status = S.CLOSED  # type: ignore[misc]
    assert replace(s, status=S.CLOSED).status is S.CLOSED and s.status is S.NEW


def test_reopened_promise_warns_from_the_reopening() -> None:
    # Created two days ago, reopened now with a new six-hour promise.
    created = T0 - timedelta(days=2)
    s = state(S.CLOSED, created_at=created, promised_by=created + timedelta(minutes=30), escalated_at=created)
    deadline = T0 + timedelta(hours=6)
    s, _ = transition(s, Reopen("not solved", raise_priority=True, promised_by=deadline), "callback", "", T0)
    assert s.promise_from == T0
    assert due_escalations([s], T0 + timedelta(hours=1)) == []  # measured from the reopening: on track
    warn = T0 + timedelta(hours=6) * 0.8
    assert due_escalations([s], warn - timedelta(seconds=1)) == []
    assert [a.kind for a in due_escalations([s], warn)] == [AlertKind.WARNING]


def test_bad_stored_promise_breaches_without_stopping_others() -> None:
    bad = state(S.NEW, number="BAD", promised_by=T0)  # promise equal to creation: bad data
    good = state(S.NEW, number="GOOD", promised_by=T0 + timedelta(minutes=10))
    assert [a.number for a in due_escalations([bad, good], T0 + timedelta(minutes=9))] == ["BAD", "GOOD"]
    assert [a.kind for a in due_escalations([bad, good], T0 + timedelta(minutes=9))] == [
        AlertKind.BREACH, AlertKind.WARNING,
    ]
    assert due_escalations([bad], T0) == []
