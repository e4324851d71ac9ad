"""Several hotlines (issue 12): every ticket and call carries the hotline it came in on.

Rows made before hotlines belong to the default hotline: the id the server passes when it migrates
(``callcentre.storage.db.upgrade(..., default_hotline=...)``, the configuration's default hotline), or
``default`` (the implicit hotline of a configuration without ``hotlines:``).

Revision ID: 0006
Revises: 0005 (written on 0004; re-chained after the recording migration 0005 landed on main)
Create Date: 2026-12-06
"""

from __future__ import annotations

import re
from typing import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (("tickets", "ix_tickets_hotline_created", "created_at"), ("calls", "ix_calls_hotline_started", "started_at"))


def _default_hotline() -> str:
    value = str(context.config.attributes.get("default_hotline") or "default")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,31}", value):
        raise ValueError(f"default hotline id {value!r} is not a hotline id")
    return value


def upgrade() -> None:
    default = _default_hotline()
    for table, index, column in _TABLES:
        # Filled for the rows already there, then NOT NULL with no server default: the code always says.
        op.add_column(table, sa.Column("hotline", sa.String(32), nullable=True))
        op.execute(sa.text(f"UPDATE {table} SET hotline = :h WHERE hotline IS NULL").bindparams(h=default))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("hotline", existing_type=sa.String(32), nullable=False)
        op.create_index(index, table, ["hotline", column])


def downgrade() -> None:
    for table, index, _column in _TABLES:
        op.drop_index(index, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("hotline")
