"""Promises told to the caller, and when they warn or escalate (issue 5, link 2 of 004).

A general request is closed within 30 minutes and a major one within 6 hours (004), configurable per
category and priority. The deadline is stored on the ticket when it is made; everything below is a
pure function of that stored deadline and ``now``:

* :func:`promise_status` gives the desk and the wallboard the remaining time and a state.
* :func:`due_escalations` says which tickets must warn (80 %) or escalate (breach) *now*. It is
  idempotent because it reads the ticket's ``warned_at`` / ``escalated_at`` flags, which the adapter
  sets (``note_warning`` / the ``Escalate`` transition) when it acts on the answer. Running it twice,
  after a restart, or after the wall clock stepped backwards, never alerts twice.

Wall-clock steps. A forward step (a bad NTP server, a hand-set clock) would make every open ticket
look overdue in the same instant. The evaluator therefore does not feed the raw wall clock to
:func:`due_escalations` but :func:`evaluation_time`: the wall clock while it agrees with the monotonic
clock, and after a forward step a time that catches up with the wall clock at a bounded rate. Breaches
then arrive in deadline order, spread over the catch-up, and if the step was a mistake that is
corrected, the tickets not yet reached never escalate. Backward steps need nothing: the flags stop
repeats and a ticket simply escalates a little later. At start-up there is no previous sample, and
tickets that went overdue while the server was down escalate at once: they really are overdue.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

import structlog

from callcentre.config.schema import PromisesConfig
from callcentre.domain.lifecycle import TicketState
from callcentre.domain.model import Priority


log = structlog.get_logger(__name__)


class PromiseState(str, enum.Enum):
    ON_TRACK = "on_track"
    WARNING = "warning"  # at or past warn_fraction of the promised time
    BREACHED = "breached"  # past the deadline


@dataclass(frozen=True, slots=True)
class PromiseStatus:
    state: PromiseState
    remaining_seconds: float  # negative once breached
    elapsed_fraction: float  # 0.0 at creation, 1.0 at the deadline


class AlertKind(str, enum.Enum):
    WARNING = "warning"
    BREACH = "breach"


@dataclass(frozen=True, slots=True)
class PromiseAlert:
    """One thing the evaluator must do now: warn the desk, or escalate to the quality department."""

    number: str
    kind: AlertKind
    deadline: datetime
    remaining_seconds: float
    agent: str | None
    worker: str | None


def _aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime (got {value!r})")


def promise_minutes(cfg: PromisesConfig, priority: Priority, category: str) -> int:
    """Minutes promised for this priority and category: the per-category override, else the default."""
    override = cfg.per_category.get(category, {}).get(priority.value)
    if override is not None:
        return override
    return cfg.major_minutes if priority is Priority.MAJOR else cfg.general_minutes


def promise_deadline(cfg: PromisesConfig, priority: Priority, category: str, created_at: datetime) -> datetime:
    """When the ticket must be closed: the time told to the caller and stored on the ticket."""
    _aware(created_at, "created_at")
    return created_at + timedelta(minutes=promise_minutes(cfg, Priority(priority), category))


def warn_time(created_at: datetime, deadline: datetime, warn_fraction: float) -> datetime:
    """The instant the warning starts; exact to the microsecond (no float drift at the boundary)."""
    return created_at + (deadline - created_at) * warn_fraction


def promise_status(created_at: datetime, deadline: datetime, now: datetime, warn_fraction: float) -> PromiseStatus:
    """Where a promise stands at ``now``.

    Boundaries: WARNING from exactly ``warn_fraction`` of the promised time; the deadline itself is
    still kept ("within 30 minutes"); BREACHED from any instant after it.
    """
    for value, what in ((created_at, "created_at"), (deadline, "deadline"), (now, "now")):
        _aware(value, what)
    if deadline <= created_at:
        raise ValueError(f"deadline {deadline.isoformat()} is not after creation {created_at.isoformat()}")
    if not 0 < warn_fraction < 1:
        raise ValueError(f"warn_fraction must be between 0 and 1 (got {warn_fraction})")
    total = deadline - created_at
    remaining = (deadline - now).total_seconds()
    fraction = (now - created_at) / total
    if now > deadline:
        state = PromiseState.BREACHED
    elif now >= warn_time(created_at, deadline, warn_fraction):
        state = PromiseState.WARNING
    else:
        state = PromiseState.ON_TRACK
    return PromiseStatus(state, remaining, fraction)


def promise_kept(deadline: datetime | None, resolved_at: datetime | None) -> bool | None:
    """Whether the work was done by the deadline; None when there is nothing to measure yet.

    Measured at resolution, not at closure: the closing call-back waits for calling hours and the
    caller, and that delay is not the department's.
    """
    if deadline is None or resolved_at is None:
        return None
    return resolved_at <= deadline


def due_escalations(
    tickets: Iterable[TicketState], now: datetime, warn_fraction: float = 0.8
) -> list[PromiseAlert]:
    """Alerts due at ``now``: breaches not yet escalated, and warnings not yet raised.

    Only open tickets with a promise count. The warning is measured from when the current promise was
    made (``promise_from``, else creation). A ticket already past its deadline and never warned gets
    the breach only (a warning after the fact is noise). A ticket whose stored promise is not after
    its start (bad data) can still breach but never warns, and does not stop the others.
    Ordered by deadline, oldest first.
    """
    _aware(now, "now")
    alerts: list[PromiseAlert] = []
    for t in tickets:
        if t.promised_by is None or not t.status.is_open:
            continue
        start = t.promise_from or t.created_at
        if t.promised_by <= start:
            log.warning("promise not after its start", ticket=t.number, promised_by=t.promised_by.isoformat())
            if now > t.promised_by and t.escalated_at is None:
                remaining = (t.promised_by - now).total_seconds()
                alerts.append(PromiseAlert(t.number, AlertKind.BREACH, t.promised_by, remaining, t.agent, t.worker))
            continue
        status = promise_status(start, t.promised_by, now, warn_fraction)
        if status.state is PromiseState.BREACHED:
            if t.escalated_at is None:
                alerts.append(
                    PromiseAlert(t.number, AlertKind.BREACH, t.promised_by, status.remaining_seconds, t.agent, t.worker)
                )
        elif status.state is PromiseState.WARNING and t.warned_at is None and t.escalated_at is None:
            alerts.append(
                PromiseAlert(t.number, AlertKind.WARNING, t.promised_by, status.remaining_seconds, t.agent, t.worker)
            )
    alerts.sort(key=lambda a: (a.deadline, a.number))
    return alerts


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One reading of both clocks (``Clock.now()`` and ``Clock.monotonic()``) taken together."""

    wall: datetime
    monotonic: float


def evaluation_time(previous: ClockSample | None, current: ClockSample, max_catch_up: float = 1.0) -> datetime:
    """The ``now`` to evaluate promises at, robust to wall-clock steps (see the module docstring).

    ``previous`` is the sample returned last time (store ``ClockSample(result, current.monotonic)``).
    While the wall clock runs with the monotonic clock the result is the wall clock. After a forward
    step it runs ``1 + max_catch_up`` times as fast as real time until it meets the wall clock again.
    It never runs ahead of the wall clock, so a backward step is followed at once.
    """
    _aware(current.wall, "current.wall")
    if previous is None:
        return current.wall
    if max_catch_up < 0:
        raise ValueError("max_catch_up must not be negative")
    elapsed = max(0.0, current.monotonic - previous.monotonic)
    ceiling = previous.wall + timedelta(seconds=elapsed * (1.0 + max_catch_up))
    return min(current.wall, ceiling)
