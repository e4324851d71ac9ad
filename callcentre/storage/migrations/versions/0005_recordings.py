"""Agent call recordings (one row per recorded offer), and the quality department's role.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_uniqueid", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(80), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("agent_login", sa.String(64), nullable=True),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("separate_legs", sa.Boolean(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("checked_at", _TS, nullable=False),
        sa.Column("deleted_at", _TS, nullable=True),
        sa.CheckConstraint("status IN ('complete', 'short', 'missing', 'deleted')", name="ck_recordings_status"),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
        sa.UniqueConstraint("path", name="uq_recordings_path"),
    )
    op.create_index("ix_recordings_call_uniqueid", "recordings", ["call_uniqueid"])
    op.create_index("ix_recordings_started_at", "recordings", ["started_at"])
    _users_roles("role IN ('agent', 'supervisor', 'admin', 'quality')")


def _users_roles(check: str) -> None:
    """Replace the users table's CHECK on role.

    SQLite cannot alter a constraint: batch mode rebuilds the table, and its DROP TABLE of the old one is
    an implicit DELETE that, with foreign keys on (every connection of ours; the PRAGMA cannot be changed
    inside the migration's transaction), cascades to agent_state_history. Those rows are kept aside and
    put back."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMP TABLE cc_keep_agent_state_history AS SELECT * FROM agent_state_history")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("ck_users_role", type_="check")
        batch.create_check_constraint("ck_users_role", check)  # the name 0002 gave it (the naming convention adds its prefix)
    if sqlite:
        op.execute("DELETE FROM agent_state_history")
        op.execute("INSERT INTO agent_state_history SELECT * FROM cc_keep_agent_state_history")
        op.execute("DROP TABLE cc_keep_agent_state_history")


def downgrade() -> None:
    op.execute("DELETE FROM users WHERE role = 'quality'")
    _users_roles("role IN ('agent', 'supervisor', 'admin')")
    op.drop_index("ix_recordings_started_at", table_name="recordings")
    op.drop_index("ix_recordings_call_uniqueid", table_name="recordings")
    op.drop_table("recordings")
