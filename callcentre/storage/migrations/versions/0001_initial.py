"""Initial schema: owners, units, phones, tickets, ticket counters, calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("vip", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("pin_hash", sa.String(200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_owners"),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("building", sa.String(32), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("fee_balance_cents", sa.Integer(), nullable=False),
        sa.Column("fee_due_date", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.UniqueConstraint("building", "unit", name="uq_units_building_unit"),
    )
    op.create_table(
        "owner_units",
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.CheckConstraint("role IN ('owner', 'tenant')", name="ck_owner_units_role"),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name="fk_owner_units_owner_id_owners", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_owner_units_unit_id_units", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id", "unit_id", name="pk_owner_units"),
    )
    op.create_index("ix_owner_units_unit_id", "owner_units", ["unit_id"])
    op.create_table(
        "phones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("raw", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name="fk_phones_owner_id_owners", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_phones_unit_id_units", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_phones"),
        sa.UniqueConstraint("number", "owner_id", "unit_id", name="uq_phones_number_owner_id_unit_id"),
    )
    op.create_index("ix_phones_number", "phones", ["number"])
    op.create_index("ix_phones_owner_id", "phones", ["owner_id"])
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("caller_id_raw", sa.String(128), nullable=False),
        sa.Column("caller_id", sa.String(32), nullable=True),
        sa.Column("caller_name", sa.String(100), nullable=True),
        sa.Column("call_uniqueid", sa.String(64), nullable=True),
        sa.Column("call_linkedid", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(128), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("voice_file", sa.String(512), nullable=True),
        sa.Column("ivr_path", sa.String(256), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promised_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_to_caller", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name="fk_tickets_owner_id_owners", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_tickets_unit_id_units", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
        sa.UniqueConstraint("number", name="uq_tickets_number"),
        sa.UniqueConstraint("call_uniqueid", "kind", name="uq_tickets_call_uniqueid_kind"),
    )
    op.create_index("ix_tickets_owner_created", "tickets", ["owner_id", "created_at"])
    op.create_index("ix_tickets_caller_created", "tickets", ["caller_id", "created_at"])
    op.create_index("ix_tickets_status", "tickets", ["status"])
    op.create_table(
        "ticket_counters",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_ticket_counters"),
    )
    op.create_table(
        "calls",
        sa.Column("uniqueid", sa.String(64), nullable=False),
        sa.Column("linkedid", sa.String(64), nullable=True),
        sa.Column("caller_id_raw", sa.String(128), nullable=True),
        sa.Column("caller_id", sa.String(32), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ivr_path", sa.String(256), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name="fk_calls_owner_id_owners", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("uniqueid", name="pk_calls"),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_table("calls")
    op.drop_table("ticket_counters")
    op.drop_index("ix_tickets_status", table_name="tickets")
    op.drop_index("ix_tickets_caller_created", table_name="tickets")
    op.drop_index("ix_tickets_owner_created", table_name="tickets")
    op.drop_table("tickets")
    op.drop_index("ix_phones_owner_id", table_name="phones")
    op.drop_index("ix_phones_number", table_name="phones")
    op.drop_table("phones")
    op.drop_index("ix_owner_units_unit_id", table_name="owner_units")
    op.drop_table("owner_units")
    op.drop_table("units")
    op.drop_table("owners")
