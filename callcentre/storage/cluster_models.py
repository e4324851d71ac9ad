"""Tables of the cluster parts (callcentre/cluster/): the leader row with its fencing term, and the
live-update messages too large for one PostgreSQL ``NOTIFY``.

Declared here so that the schema lives in the migration (``0007_cluster``) and is compared with
these models by tests/test_storage.py like every other table. The cluster code itself reads and
writes them with raw SQL over its own asyncpg connections (:mod:`callcentre.cluster.leader`,
:mod:`callcentre.cluster.notify`); :data:`callcentre.cluster.pg.SCHEMA` is the same DDL for a database
that was never migrated (the tests' and the stand-alone elector's).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.storage.models import Base, UtcDateTime


class LeaderRow(Base):
    """One row per elected role: who leads it and its term (the fencing token), bumped at each election."""

    __tablename__ = "callcentre_leader"

    role: Mapped[str] = mapped_column(String(100), primary_key=True)
    term: Mapped[int] = mapped_column(BigInteger, nullable=False)
    node: Mapped[str] = mapped_column(String(100), nullable=False)
    elected_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, server_default=func.now())


class HubBlob(Base):
    """A live-update message larger than a NOTIFY payload; the notification carries its id."""

    __tablename__ = "callcentre_hub_blob"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, server_default=func.now(), index=True)
    node: Mapped[str] = mapped_column(String(100), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
