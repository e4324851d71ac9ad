"""Who answered each call and how fast: the per-agent two-ring share of the monthly statistics.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("answered_by", sa.String(64), nullable=True))
    op.add_column("calls", sa.Column("answer_seconds", sa.Float(), nullable=True))
    op.add_column("calls", sa.Column("within_target", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("within_target")
        batch.drop_column("answer_seconds")
        batch.drop_column("answered_by")
