"""Service loop: ticket service state, history, links, call-back attempts, webhook outbox.

New tables only, keyed by ticket id: the core ``tickets`` table is not altered.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _ticket_fk(table: str, column: str = "ticket_id", ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["tickets.id"], name=f"fk_{table}_{column}_tickets", ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "ticket_service_state",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(64), nullable=True),
        sa.Column("worker", sa.String(64), nullable=True),
        sa.Column("agent", sa.String(64), nullable=True),
        sa.Column("promise_from", _TS, nullable=True),
        sa.Column("acknowledged_at", _TS, nullable=True),
        sa.Column("dispatched_at", _TS, nullable=True),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("closed_at", _TS, nullable=True),
        sa.Column("first_contact", sa.Boolean(), nullable=True),
        sa.Column("warned_at", _TS, nullable=True),
        sa.Column("escalated_at", _TS, nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("repeat", sa.Boolean(), nullable=False),
        sa.Column("over_head", sa.Boolean(), nullable=False),
        sa.Column("route_to_senior", sa.Boolean(), nullable=False),
        sa.Column("satisfaction", sa.Integer(), nullable=True),
        sa.Column("needs_person", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        _ticket_fk("ticket_service_state"),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_ticket_service_state"),
    )
    op.create_table(
        "ticket_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        _ticket_fk("ticket_history"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_history"),
    )
    op.create_index("ix_ticket_history_ticket_at", "ticket_history", ["ticket_id", "at"])
    op.create_table(
        "ticket_links",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("linked_ticket_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        _ticket_fk("ticket_links"),
        _ticket_fk("ticket_links", "linked_ticket_id"),
        sa.PrimaryKeyConstraint("ticket_id", "linked_ticket_id", name="pk_ticket_links"),
    )
    op.create_index("ix_ticket_links_linked_ticket_id", "ticket_links", ["linked_ticket_id"])
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("number", sa.String(32), nullable=True),
        sa.Column("action_id", sa.String(64), nullable=True),
        sa.Column("scheduled_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("reason_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("survey_answer", sa.String(16), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "state IN ('scheduled', 'dialling', 'answered', 'done', 'cancelled')", name="ck_callback_attempts_state"
        ),
        _ticket_fk("callback_attempts"),
        sa.PrimaryKeyConstraint("id", name="pk_callback_attempts"),
        sa.UniqueConstraint("ticket_id", "attempt_no", name="uq_callback_attempts_ticket_id_attempt_no"),
        sa.UniqueConstraint("action_id", name="uq_callback_attempts_action_id"),
    )
    op.create_index("ix_callback_attempts_state_scheduled", "callback_attempts", ["state", "scheduled_at"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("url", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", _TS, nullable=False),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'gave_up')", name="ck_webhook_outbox_state"),
        _ticket_fk("webhook_outbox", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
    )
    op.create_index("ix_webhook_outbox_state_next", "webhook_outbox", ["state", "next_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["webhook_outbox.id"], name="fk_webhook_attempts_outbox_id_webhook_outbox", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_outbox_id", "webhook_attempts", ["outbox_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_outbox_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_outbox_state_next", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_index("ix_callback_attempts_state_scheduled", table_name="callback_attempts")
    op.drop_table("callback_attempts")
    op.drop_index("ix_ticket_links_linked_ticket_id", table_name="ticket_links")
    op.drop_table("ticket_links")
    op.drop_index("ix_ticket_history_ticket_at", table_name="ticket_history")
    op.drop_table("ticket_history")
    op.drop_table("ticket_service_state")
