"""The service-centre loop (issue 5): departments, repeat complaints and the closing call-back.

Pure: no asyncio, no database, no AMI. The lifecycle is in :mod:`callcentre.domain.lifecycle`,
promises and escalation in :mod:`callcentre.domain.promises`, reports in
:mod:`callcentre.domain.reports`; this module adds what ties them to configuration and to the
caller: who a ticket may be dispatched to, when a complaint is a repeat (002: repeat complaints come
from first contacts that were not satisfied), and when to call the owner back and what their answer
does (关闭反馈 / 回访).

:class:`ServiceConfig` is the ``service`` section of :class:`callcentre.config.schema.Config`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Iterable
from zoneinfo import ZoneInfo


from callcentre.config.schema import (  # noqa: F401  (re-exported: the service section lives in config)
    CallbackPolicy,
    Department,
    PromisesConfig,
    ServiceConfig,
    Worker,
    parse_hhmm,
)
from callcentre.domain.errors import Invalid
from callcentre.domain.lifecycle import ConfirmClosed, Reopen, TicketState, TransitionRecord, transition
from callcentre.domain.model import Priority, TicketKind
from callcentre.domain.promises import promise_deadline
class DispatchInvalid(Invalid):
    """The department or worker is unknown, or the worker is not in that department."""

    code = "invalid_dispatch"


def check_dispatch(cfg: ServiceConfig, department: str, worker: str) -> None:
    """Refuse a dispatch to a department or worker the configuration does not know."""
    for d in cfg.departments:
        if d.code == department:
            if any(w.id == worker for w in d.workers):
                return
            raise DispatchInvalid(f"worker {worker!r} is not in department {department!r}")
    raise DispatchInvalid(f"unknown department {department!r}")


def department_for(cfg: ServiceConfig, category: str) -> str | None:
    """The department that takes a category by default, for the desk to pre-select."""
    for d in cfg.departments:
        if category in d.categories:
            return d.code
    return None


# --- repeat complaints ------------------------------------------------------------------------------

# Voice messages and enquiries are not service failures; repeats of them are not flagged.
REPEAT_KINDS = frozenset({TicketKind.REPAIR, TicketKind.COMPLAINT, TicketKind.EMERGENCY})


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What repeat detection needs about a ticket."""

    number: str
    kind: TicketKind
    category: str
    priority: Priority
    owner_id: int | None
    unit_id: int | None
    created_at: datetime
    # Entered by a supervisor: the owner went over the centre's head (to the developer, the
    # government, the press). 002: such complaints come from unsatisfied first contacts.
    over_head: bool = False


@dataclass(frozen=True, slots=True)
class RepeatVerdict:
    is_repeat: bool
    over_head: bool
    linked: tuple[str, ...]  # earlier ticket numbers, oldest first
    priority: Priority  # raised to major for a repeat or an over-the-head complaint
    route_to_senior: bool  # the owner's next call goes to a senior agent

    @property
    def flagged(self) -> bool:
        return self.is_repeat or self.over_head


def find_repeats(new_ticket: TicketFacts, history: Iterable[TicketFacts], days: int) -> RepeatVerdict:
    """Is ``new_ticket`` a repeat: same owner or same unit, same category, within ``days`` before it?

    The window is inclusive: a ticket exactly ``days`` days earlier counts. Tickets created after the
    new one (or the new one itself) do not.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    since = new_ticket.created_at - timedelta(days=days)
    linked: list[TicketFacts] = []
    if new_ticket.kind in REPEAT_KINDS:
        for old in history:
            if old.number == new_ticket.number or old.kind not in REPEAT_KINDS:
                continue
            if old.category != new_ticket.category:
                continue
            if not (since <= old.created_at < new_ticket.created_at):
                continue
            same_owner = new_ticket.owner_id is not None and old.owner_id == new_ticket.owner_id
            same_unit = new_ticket.unit_id is not None and old.unit_id == new_ticket.unit_id
            if same_owner or same_unit:
                linked.append(old)
    linked.sort(key=lambda t: (t.created_at, t.number))
    is_repeat = bool(linked)
    flagged = is_repeat or new_ticket.over_head
    return RepeatVerdict(
        is_repeat=is_repeat,
        over_head=new_ticket.over_head,
        linked=tuple(t.number for t in linked),
        priority=Priority.MAJOR if flagged else new_ticket.priority,
        route_to_senior=flagged,
    )


# --- the closing call-back --------------------------------------------------------------------------


class CallbackResult(str, enum.Enum):
    """How one call-back attempt ended."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    HUNG_UP = "hung_up"
    CONGESTION = "congestion"
    NO_INPUT = "no_input"  # answered, but nobody pressed a key (voicemail, or the owner hung up)


# OriginateResponse Reason is Asterisk's last control frame on the outgoing channel
# (AST_CONTROL_*): 4 answer, 3 still ringing at the timeout, 5 busy, 1 hang-up, 8 congestion;
# 0 when no channel could be made (no such extension, unreachable). See ami-originate-outcomes.txt.
_ORIGINATE_REASONS = {
    0: CallbackResult.FAILED,
    1: CallbackResult.HUNG_UP,
    3: CallbackResult.NO_ANSWER,
    4: CallbackResult.ANSWERED,
    5: CallbackResult.BUSY,
    8: CallbackResult.CONGESTION,
}


def originate_result(reason: str | int) -> CallbackResult:
    """Map an OriginateResponse ``Reason`` to a result; other known-numeric reasons are failures."""
    text = str(reason).strip()
    if not text.isdigit():
        raise ValueError(f"OriginateResponse Reason must be a number (got {reason!r})")
    return _ORIGINATE_REASONS.get(int(text), CallbackResult.FAILED)


def _into_calling_hours(candidate: datetime, policy: CallbackPolicy, zone: ZoneInfo) -> datetime:
    """The first instant at or after ``candidate`` inside calling hours on a calling day."""
    start = parse_hhmm(policy.calling_hours_start)
    end = parse_hhmm(policy.calling_hours_end)
    local = candidate.astimezone(zone)
    for _ in range(8):
        if local.weekday() in policy.calling_days:
            opens = datetime.combine(local.date(), start, tzinfo=zone)
            closes = datetime.combine(local.date(), end, tzinfo=zone)
            if local < opens:
                return opens.astimezone(candidate.tzinfo)
            if local < closes:
                return candidate
        next_day = local.date() + timedelta(days=1)
        local = datetime.combine(next_day, time(0, 0), tzinfo=zone)
    raise ValueError("no calling day found in a week; check callback.calling_days")  # validator prevents it


def next_attempt(
    policy: CallbackPolicy,
    attempts_so_far: int,
    last_result: CallbackResult | None,
    now: datetime,
    tz: str,
) -> datetime | None:
    """When to place the next call-back, or None when no further attempt is due.

    ``attempts_so_far == 0`` schedules the first call (``last_result`` is ignored). None means: answered
    (the survey decides), the result is not worth retrying, or attempts are used up; in the last two
    cases the adapter flags the ticket for a person (see :func:`needs_person`). An attempt due outside
    calling hours moves to the next opening, in the centre's local time ``tz``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if attempts_so_far < 0:
        raise ValueError("attempts_so_far must not be negative")
    zone = ZoneInfo(tz)
    if attempts_so_far == 0:
        delay = policy.first_delay_minutes
    else:
        if last_result is None:
            raise ValueError("last_result is needed after an attempt")
        if last_result is CallbackResult.ANSWERED or last_result.value not in policy.retry_on:
            return None
        if attempts_so_far >= policy.max_attempts:
            return None
        delays = policy.retry_delays_minutes
        delay = delays[min(attempts_so_far - 1, len(delays) - 1)]
    return _into_calling_hours(now + timedelta(minutes=delay), policy, zone)


def needs_person(policy: CallbackPolicy, attempts_so_far: int, last_result: CallbackResult | None) -> bool:
    """True when the call-backs have given up without an answer: a person must call the owner."""
    if attempts_so_far == 0 or last_result is CallbackResult.ANSWERED:
        return False
    return last_result is None or last_result.value not in policy.retry_on or attempts_so_far >= policy.max_attempts


class SurveyAnswer(str, enum.Enum):
    SOLVED = "solved"  # pressed 1
    NOT_SOLVED = "not_solved"  # pressed 2
    NO_ANSWER = "no_answer"  # nothing, or another key


@dataclass(frozen=True, slots=True)
class SurveyOutcome:
    answer: SurveyAnswer
    rating: int | None  # 1–5, None when not given


def survey_outcome(solved_digit: str | None, rating_digit: str | None) -> SurveyOutcome:
    """Read the owner's keys: 1 solved, 2 not solved; a rating 1–5 (anything else is no rating)."""
    answer = {"1": SurveyAnswer.SOLVED, "2": SurveyAnswer.NOT_SOLVED}.get(solved_digit or "", SurveyAnswer.NO_ANSWER)
    rating = int(rating_digit) if rating_digit in ("1", "2", "3", "4", "5") else None
    return SurveyOutcome(answer, rating)


@dataclass(frozen=True, slots=True)
class SurveyDecision:
    state: TicketState
    record: TransitionRecord | None  # None when the owner gave no answer (nothing changes)
    route_to_agent: str | None  # not solved: back to the agent who handled it


def apply_survey(
    state: TicketState, outcome: SurveyOutcome, promises: PromisesConfig, at: datetime, by: str = "callback"
) -> SurveyDecision:
    """Act on the owner's answer: solved → closed; not solved → reopened as major with a new promise,
    back to the agent who handled it. The rating goes into the record's details."""
    note = f"rating {outcome.rating}" if outcome.rating is not None else ""
    if outcome.answer is SurveyAnswer.SOLVED:
        new, record = transition(state, ConfirmClosed(), by, note, at)
    elif outcome.answer is SurveyAnswer.NOT_SOLVED:
        deadline = promise_deadline(promises, Priority.MAJOR, state.category, at)
        reopen = Reopen("owner says not solved (call-back)", raise_priority=True, promised_by=deadline)
        new, record = transition(state, reopen, by, note, at)
    else:
        return SurveyDecision(state, None, None)
    details = dict(record.details)
    if outcome.rating is not None:
        details["rating"] = outcome.rating
    record = TransitionRecord(
        record.number, record.event, record.from_status, record.to_status, record.by, record.note, record.at, details
    )
    route = state.agent if outcome.answer is SurveyAnswer.NOT_SOLVED else None
    return SurveyDecision(new, record, route)


# The architecture names service.py as the home of the service loop; re-export its parts so either
# import path works.
from callcentre.domain.lifecycle import (  # noqa: E402
    Acknowledge,
    Dispatch,
    Escalate,
    EventName,
    Resolve,
    StartWork,
    TransitionRefused,
    allowed_events,
    note_warning,
)
from callcentre.domain.promises import (  # noqa: E402
    PromiseAlert,
    PromiseState,
    PromiseStatus,
    due_escalations,
    evaluation_time,
    promise_status,
)

__all__ = [
    "Acknowledge", "ConfirmClosed", "Dispatch", "Escalate", "EventName", "Reopen", "Resolve", "StartWork",
    "TicketState", "TransitionRecord", "TransitionRefused", "allowed_events", "note_warning", "transition",
    "PromiseAlert", "PromiseState", "PromiseStatus", "due_escalations", "evaluation_time", "promise_deadline",
    "promise_status",
    "CallbackPolicy", "CallbackResult", "Department", "DispatchInvalid", "RepeatVerdict", "ServiceConfig",
    "SurveyAnswer", "SurveyDecision", "SurveyOutcome", "TicketFacts", "Worker", "apply_survey", "check_dispatch",
    "department_for", "find_repeats", "needs_person", "next_attempt", "originate_result", "survey_outcome",
]
