"""Tables of the service loop (issue 5): history, links, service state, call-backs, webhook outbox.

They sit on the same :class:`~callcentre.storage.models.Base` as the core tables but live in their
own module and migration (``0003_service``) so ``models.py`` and the ``tickets`` table stay as they
are: what the lifecycle needs beyond ``tickets.status/priority/promised_by`` is kept in
``ticket_service_state``, one row per ticket, keyed by the ticket id.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.storage.models import Base, UtcDateTime


class AttemptState(str, enum.Enum):
    """Where one call-back attempt is; explicit so a restart knows what was in flight."""

    SCHEDULED = "scheduled"  # waiting for its time
    DIALLING = "dialling"  # Originate sent, waiting for OriginateResponse
    ANSWERED = "answered"  # the owner picked up; the survey is running
    DONE = "done"  # finished with a result
    CANCELLED = "cancelled"  # the ticket was reopened or closed by someone else first


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"


def _in(column: str, values: type[enum.Enum]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v.value}'" for v in values) + ")"


class TicketServiceState(Base):
    """The lifecycle fields of one ticket that the core ``tickets`` table does not have."""

    __tablename__ = "ticket_service_state"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    department: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(64))
    # The agent who handled the call: a ticket reopened by the owner goes back to them.
    agent: Mapped[str | None] = mapped_column(String(64))
    promise_from: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_contact: Mapped[bool | None] = mapped_column(Boolean)
    warned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    over_head: Mapped[bool] = mapped_column(Boolean, default=False)
    route_to_senior: Mapped[bool] = mapped_column(Boolean, default=False)
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    # The call-backs gave up: a person must call the owner.
    needs_person: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TicketHistory(Base):
    """One line of a ticket's history: a lifecycle transition, a warning, a call-back, a note."""

    __tablename__ = "ticket_history"
    __table_args__ = (Index("ix_ticket_history_ticket_at", "ticket_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(120))
    note: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class TicketLink(Base):
    """An earlier ticket this one repeats (or is otherwise tied to)."""

    __tablename__ = "ticket_links"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    linked_ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CallbackAttempt(Base):
    """One closing call-back (回访) attempt, kept for good so every try is visible on the ticket."""

    __tablename__ = "callback_attempts"
    __table_args__ = (
        UniqueConstraint("ticket_id", "attempt_no"),
        CheckConstraint(_in("state", AttemptState), name="state"),
        Index("ix_callback_attempts_state_scheduled", "state", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    number: Mapped[str | None] = mapped_column(String(32))  # digits and '+' only (checked before use)
    action_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[str | None] = mapped_column(String(16))  # domain.service.CallbackResult
    reason_code: Mapped[int | None] = mapped_column(Integer)  # OriginateResponse Reason
    error: Mapped[str | None] = mapped_column(String(300))
    survey_answer: Mapped[str | None] = mapped_column(String(16))  # domain.service.SurveyAnswer
    rating: Mapped[int | None] = mapped_column(Integer)


class WebhookOutbox(Base):
    """One outbound webhook to one URL: written in the transaction that caused it, sent later."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (
        CheckConstraint(_in("state", OutboxState), name="state"),
        Index("ix_webhook_outbox_state_next", "state", "next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(512))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body that is signed and sent
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebhookAttempt(Base):
    """Every delivery attempt of an outbox row, with its HTTP status or error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("webhook_outbox.id", ondelete="CASCADE"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    duration_ms: Mapped[int] = mapped_column(Integer)


__all__ = [
    "AttemptState",
    "CallbackAttempt",
    "OutboxState",
    "TicketHistory",
    "TicketLink",
    "TicketServiceState",
    "WebhookAttempt",
    "WebhookOutbox",
]
