"""The ticket lifecycle as a pure state machine (issue 5, link 4 of 004: follow the process).

new → acknowledged → dispatched → in_progress → resolved → closed (confirmed by the caller), or
reopened from resolved/closed and then acknowledged / dispatched again. Every step is a named event
(what happened), checked against one transition table, and produces a :class:`TransitionRecord`
(when, by whom, a note) so the ticket's history can be shown and audited. Nothing here touches a
socket, a database or the clock: the caller passes ``at``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Mapping

from callcentre.domain.errors import Conflict, Invalid
from callcentre.domain.model import Priority, TicketKind, TicketStatus

# A note is free text typed by an agent; cap it so one paste cannot bloat every history view.
NOTE_MAX_CHARS = 2000
_NAME_MAX_CHARS = 120


class EventName(str, enum.Enum):
    """What happened to a ticket; the value is what the history and the API show."""

    ACKNOWLEDGE = "acknowledge"
    DISPATCH = "dispatch"
    START_WORK = "start_work"
    RESOLVE = "resolve"
    CONFIRM_CLOSED = "confirm_closed"
    REOPEN = "reopen"
    ESCALATE = "escalate"


class TransitionRefused(Conflict):
    """The event is not allowed in the ticket's current status; the message is meant for a person."""

    code = "transition_refused"

    def __init__(self, number: str, status: TicketStatus, event: EventName, reason: str) -> None:
        self.number = number
        self.status = status
        self.event = event
        self.reason = reason
        super().__init__(f"ticket {number}: cannot {event.value} a ticket that is {status.value}: {reason}")


# --- events -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """The centre has taken the request on (受理)."""

    name = EventName.ACKNOWLEDGE


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Sent to a department and one worker (资源调配); again while dispatched means a reassignment."""

    department: str
    worker: str
    name = EventName.DISPATCH


@dataclass(frozen=True, slots=True)
class StartWork:
    """The worker is on it (arrived on site, or started the job)."""

    name = EventName.START_WORK


@dataclass(frozen=True, slots=True)
class Resolve:
    """The work is done. ``first_contact`` means solved during the caller's first call, without
    dispatch: the "first effect" of 002, counted in the monthly figures."""

    first_contact: bool = False
    name = EventName.RESOLVE


@dataclass(frozen=True, slots=True)
class ConfirmClosed:
    """The caller confirmed the result (关闭反馈); only then is a ticket closed."""

    name = EventName.CONFIRM_CLOSED


@dataclass(frozen=True, slots=True)
class Reopen:
    """The caller (or a supervisor) says it is not solved.

    ``raise_priority`` makes a general ticket major (the call-back survey's "2"); ``promised_by`` is the
    new promise (the old one is spent), which also re-arms the 80 % warning and the escalation.
    """

    reason: str
    raise_priority: bool = False
    promised_by: datetime | None = None
    name = EventName.REOPEN


@dataclass(frozen=True, slots=True)
class Escalate:
    """Handed to the quality department (supervisors), who follow it and do not push it back down.

    The status does not change: the ticket is still worked on, now under supervision.
    """

    reason: str = "promise breached"
    name = EventName.ESCALATE


TicketEvent = Acknowledge | Dispatch | StartWork | Resolve | ConfirmClosed | Reopen | Escalate


# --- state ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketState:
    """What the lifecycle and the promise clock need to know about one ticket."""

    number: str
    kind: TicketKind
    category: str
    priority: Priority
    status: TicketStatus
    created_at: datetime
    promised_by: datetime | None
    # When the current promise was made: creation, or the reopening that made a new promise. The
    # 80 % warning is measured from here, not from the original creation.
    promise_from: datetime | None = None
    agent: str | None = None  # the agent who handled the call; a reopened ticket goes back to them
    department: str | None = None
    worker: str | None = None
    acknowledged_at: datetime | None = None
    dispatched_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    first_contact: bool | None = None  # set when resolved
    warned_at: datetime | None = None  # the 80 % warning was raised (once per promise)
    escalated_at: datetime | None = None  # escalated to the quality department (once per promise)
    reopen_count: int = 0


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One line of a ticket's history: stored by the adapter, shown to agents and supervisors."""

    number: str
    event: EventName
    from_status: TicketStatus
    to_status: TicketStatus
    by: str
    note: str
    at: datetime
    details: Mapping[str, object]


# status → events allowed from it. Escalate is allowed from every open status (checked separately).
_ALLOWED: Mapping[EventName, frozenset[TicketStatus]] = {
    EventName.ACKNOWLEDGE: frozenset({TicketStatus.NEW, TicketStatus.REOPENED}),
    # From dispatched / in_progress: a reassignment to another worker (the first one cannot come).
    EventName.DISPATCH: frozenset(
        {TicketStatus.ACKNOWLEDGED, TicketStatus.REOPENED, TicketStatus.DISPATCHED, TicketStatus.IN_PROGRESS}
    ),
    EventName.START_WORK: frozenset({TicketStatus.DISPATCHED}),
    # From acknowledged only when solved during the first call (checked below).
    EventName.RESOLVE: frozenset({TicketStatus.IN_PROGRESS, TicketStatus.ACKNOWLEDGED}),
    EventName.CONFIRM_CLOSED: frozenset({TicketStatus.RESOLVED}),
    EventName.REOPEN: frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    EventName.ESCALATE: frozenset(s for s in TicketStatus if s.is_open),
}

_TARGET: Mapping[EventName, TicketStatus | None] = {
    EventName.ACKNOWLEDGE: TicketStatus.ACKNOWLEDGED,
    EventName.DISPATCH: TicketStatus.DISPATCHED,
    EventName.START_WORK: TicketStatus.IN_PROGRESS,
    EventName.RESOLVE: TicketStatus.RESOLVED,
    EventName.CONFIRM_CLOSED: TicketStatus.CLOSED,
    EventName.REOPEN: TicketStatus.REOPENED,
    EventName.ESCALATE: None,  # unchanged
}


def allowed_events(status: TicketStatus) -> list[EventName]:
    """The events a ticket in ``status`` accepts (for buttons on the agent desk)."""
    return [e for e in EventName if status in _ALLOWED[e]]


def _check_aware(at: datetime, what: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise Invalid(f"{what} must be a timezone-aware datetime (got {at!r})")


def _clean_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{what} must not be empty")
    value = value.strip()
    if len(value) > _NAME_MAX_CHARS or any(ord(c) < 32 for c in value):
        raise Invalid(f"{what} must be at most {_NAME_MAX_CHARS} printable characters")
    return value


def transition(
    state: TicketState, event: TicketEvent, by: str, note: str, at: datetime
) -> tuple[TicketState, TransitionRecord]:
    """Apply ``event`` to ``state``; return the new state and the history record.

    Raises :class:`TransitionRefused` when the event is not allowed in the current status (the message
    names both), and :class:`~callcentre.domain.errors.Invalid` (a ValueError) for bad input (empty actor,
    naive time, over-long note).
    """
    _check_aware(at, "at")
    by = _clean_name(by, "by (who made the change)")
    note = (note or "").strip()
    if len(note) > NOTE_MAX_CHARS:
        raise Invalid(f"note is {len(note)} characters; at most {NOTE_MAX_CHARS} are kept")
    name = event.name
    status = state.status
    if status not in _ALLOWED[name]:
        allowed = ", ".join(s.value for s in TicketStatus if s in _ALLOWED[name])
        raise TransitionRefused(state.number, status, name, f"allowed only when {allowed}")
    if at < state.created_at:
        raise Invalid(f"ticket {state.number}: {name.value} at {at.isoformat()} is before it was created")

    details: dict[str, object] = {}
    new = state
    if isinstance(event, Acknowledge):
        new = replace(state, acknowledged_at=at)
    elif isinstance(event, Dispatch):
        department = _clean_name(event.department, "department")
        worker = _clean_name(event.worker, "worker")
        if status in (TicketStatus.DISPATCHED, TicketStatus.IN_PROGRESS) and (department, worker) == (
            state.department,
            state.worker,
        ):
            raise TransitionRefused(state.number, status, name, f"already with {worker} ({department})")
        details = {"department": department, "worker": worker}
        if state.worker is not None and status != TicketStatus.REOPENED:
            details["previous_worker"] = state.worker
        new = replace(state, department=department, worker=worker, dispatched_at=at)
    elif isinstance(event, StartWork):
        new = state
    elif isinstance(event, Resolve):
        if status == TicketStatus.ACKNOWLEDGED and not event.first_contact:
            raise TransitionRefused(
                state.number, status, name, "dispatch it first, or resolve it as solved at first contact"
            )
        if event.first_contact and (status != TicketStatus.ACKNOWLEDGED or state.reopen_count):
            raise TransitionRefused(
                state.number, status, name, "only a ticket solved during the first call, without dispatch, "
                "counts as a first-contact resolution",
            )
        details = {"first_contact": event.first_contact}
        new = replace(state, resolved_at=at, first_contact=event.first_contact)
    elif isinstance(event, ConfirmClosed):
        new = replace(state, closed_at=at)
    elif isinstance(event, Reopen):
        reason = (event.reason or "").strip()
        if not reason:
            raise Invalid(f"ticket {state.number}: reopening needs a reason")
        priority = Priority.MAJOR if event.raise_priority else state.priority
        details = {"reason": reason, "priority": priority.value}
        if event.promised_by is not None:
            _check_aware(event.promised_by, "promised_by")
            if event.promised_by <= at:
                raise Invalid(f"ticket {state.number}: the new promise must be after the reopening")
            details["promised_by"] = event.promised_by.isoformat()
        new = replace(
            state,
            priority=priority,
            promised_by=event.promised_by if event.promised_by is not None else state.promised_by,
            promise_from=at if event.promised_by is not None else state.promise_from,
            # The old promise is spent: a new one gets its own warning and escalation.
            warned_at=None if event.promised_by is not None else state.warned_at,
            escalated_at=None if event.promised_by is not None else state.escalated_at,
            resolved_at=None,
            closed_at=None,
            first_contact=None,
            reopen_count=state.reopen_count + 1,
        )
    elif isinstance(event, Escalate):
        if state.escalated_at is not None:
            raise TransitionRefused(
                state.number, status, name, f"already escalated at {state.escalated_at.isoformat()}"
            )
        details = {"reason": (event.reason or "").strip() or "escalated"}
        new = replace(state, escalated_at=at)
    else:  # pragma: no cover - the union is closed; a new event type must be handled above
        raise TypeError(f"unknown event {event!r}")

    target = _TARGET[name] or status
    new = replace(new, status=target)
    record = TransitionRecord(
        number=state.number, event=name, from_status=status, to_status=target, by=by, note=note, at=at,
        details=details,
    )
    return new, record


def note_warning(state: TicketState, at: datetime) -> TicketState:
    """Remember that the 80 % warning was raised, so it is raised once per promise."""
    _check_aware(at, "at")
    return state if state.warned_at is not None else replace(state, warned_at=at)
