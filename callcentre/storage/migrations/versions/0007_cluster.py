"""The cluster's tables: the leader row (role, fencing term, node) and large live-update messages.

Until this migration the cluster code created them itself at run time (``CREATE TABLE IF NOT
EXISTS``); a database where it did so keeps its tables (they are the same), everything else gets them
here. Harmless on SQLite, where one node is always its own leader and nothing uses them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "callcentre_leader" not in existing:
        op.create_table(
            "callcentre_leader",
            sa.Column("role", sa.String(100), nullable=False),
            sa.Column("term", sa.BigInteger(), nullable=False),
            sa.Column("node", sa.String(100), nullable=False),
            sa.Column("elected_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
            sa.PrimaryKeyConstraint("role", name=op.f("pk_callcentre_leader")),
        )
    if "callcentre_hub_blob" not in existing:
        op.create_table(
            "callcentre_hub_blob",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
            sa.Column("node", sa.String(100), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_callcentre_hub_blob")),
        )
        op.create_index(op.f("ix_callcentre_hub_blob_created_at"), "callcentre_hub_blob", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_callcentre_hub_blob_created_at"), table_name="callcentre_hub_blob")
    op.drop_table("callcentre_hub_blob")
    op.drop_table("callcentre_leader")
