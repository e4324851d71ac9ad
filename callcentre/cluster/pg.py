"""What the cluster parts share on PostgreSQL: the asyncpg DSN, the advisory-lock keys, their two tables.

The tables belong to the schema: the Alembic migration ``0007_cluster`` creates them (models in
:mod:`callcentre.storage.cluster_models`), and ``callcentre serve`` migrates before it starts its
elector and hub, which therefore do not create anything (``create_schema=False``). :data:`SCHEMA` is
the same DDL, ``CREATE TABLE IF NOT EXISTS`` serialised by a transaction-level advisory lock, for a
database that was never migrated: the cluster tests' databases and the stand-alone
``python -m callcentre.cluster.leader``.
"""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy.engine import make_url

# The first half of every two-key advisory lock taken by callcentre ("cc" + 1): other applications on
# the same database use other classes, so their locks cannot collide with ours.
LOCK_CLASS = 0x63630001
_SCHEMA_KEY = 0  # the lock that serialises SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS callcentre_leader (
    role        varchar(100) NOT NULL,
    term        bigint NOT NULL,
    node        varchar(100) NOT NULL,
    elected_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_callcentre_leader PRIMARY KEY (role)
);
CREATE TABLE IF NOT EXISTS callcentre_hub_blob (
    id          bigserial NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    node        varchar(100) NOT NULL,
    body        text NOT NULL,
    CONSTRAINT pk_callcentre_hub_blob PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS ix_callcentre_hub_blob_created_at ON callcentre_hub_blob (created_at);
"""


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` (the application's SQLAlchemy URL) → ``postgresql://…`` for asyncpg."""
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {u.render_as_string(hide_password=True)}")
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def role_key(role: str) -> int:
    """A stable signed 32-bit key for a role name (the second half of the advisory lock)."""
    if not role or len(role) > 100:
        raise ValueError("a role name is 1 to 100 characters")
    key = zlib.crc32(role.encode("utf-8"))
    key = key - (1 << 32) if key >= (1 << 31) else key
    return key if key != _SCHEMA_KEY else 1


async def ensure_schema(conn: Any) -> None:
    """Create the cluster tables if missing (an asyncpg connection; safe with several nodes at once)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, _SCHEMA_KEY)
        await conn.execute(SCHEMA)
