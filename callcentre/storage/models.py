"""Database tables (SQLAlchemy 2 declarative, typed).

Types are kept portable (SQLite and PostgreSQL): strings with CHECK constraints instead of native
enums, integers for money (cents, so no rounding), and :class:`UtcDateTime` so every timestamp
comes back timezone-aware UTC whatever the database keeps. The Alembic migration in
``migrations/versions`` must match these tables; ``tests/test_storage.py`` compares them.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, timezone

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from callcentre.domain.hotlines import DEFAULT_HOTLINE_ID

# Named constraints so migrations can alter them on both dialects (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; naive values are refused (they would be ambiguous).

    SQLite has no time-zone type: it gets naive UTC text (which also sorts correctly); PostgreSQL
    gets ``timestamp with time zone``. Either way the value read back is aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store aware datetimes only")
        utc = value.astimezone(timezone.utc)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# Modules that declare tables on :class:`Base`; Alembic's autogenerate and the schema test need them
# all imported. Add a module here when it declares tables.
MODEL_MODULES = ("callcentre.storage.models", "callcentre.storage.users", "callcentre.storage.service_models",
                 "callcentre.storage.recordings", "callcentre.storage.cluster_models")


def load_all_models() -> MetaData:
    """Import every module that declares tables and return the complete metadata."""
    import importlib

    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the module, not an absent module
                raise
    return Base.metadata


class Role(str, enum.Enum):
    OWNER = "owner"
    TENANT = "tenant"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    vip: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str | None] = mapped_column(String(8))
    pin_hash: Mapped[str | None] = mapped_column(String(200))  # argon2id, never the PIN itself
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Unit(Base):
    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("building", "unit"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    building: Mapped[str] = mapped_column(String(32))
    unit: Mapped[str] = mapped_column(String(32))
    # Property fees owed, in cents (fen); zero or negative means nothing owed (negative = credit).
    fee_balance_cents: Mapped[int] = mapped_column(Integer, default=0)
    fee_due_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OwnerUnit(Base):
    """Who lives in or owns which unit: an owner may have several units, a unit several people."""

    __tablename__ = "owner_units"
    __table_args__ = (CheckConstraint("role IN ('owner', 'tenant')", name="role"),)

    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.OWNER.value)


class Phone(Base):
    """A phone number of an owner (optionally for one unit); one number may belong to several owners."""

    __tablename__ = "phones"
    __table_args__ = (UniqueConstraint("number", "owner_id", "unit_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), index=True)  # normalised: +E.164
    raw: Mapped[str] = mapped_column(String(64))  # as written in the source
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id", ondelete="CASCADE"), index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="CASCADE"))
    label: Mapped[str | None] = mapped_column(String(32))


class TicketRow(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # Idempotency: one ticket of a kind per call, whatever retries or races happen.
        UniqueConstraint("call_uniqueid", "kind"),
        Index("ix_tickets_owner_created", "owner_id", "created_at"),
        Index("ix_tickets_caller_created", "caller_id", "created_at"),
        Index("ix_tickets_status", "status"),
        Index("ix_tickets_hotline_created", "hotline", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    caller_id_raw: Mapped[str] = mapped_column(String(128))
    caller_id: Mapped[str | None] = mapped_column(String(32))
    caller_name: Mapped[str | None] = mapped_column(String(100))
    call_uniqueid: Mapped[str | None] = mapped_column(String(64))
    call_linkedid: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(128))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("owners.id", ondelete="SET NULL"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id", ondelete="SET NULL"))
    voice_file: Mapped[str | None] = mapped_column(String(512))
    ivr_path: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="ivr")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    promised_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_to_caller: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The hotline (estate) the call came in on (domain/hotlines.py); rows from before hotlines: the default.
    hotline: Mapped[str] = mapped_column(String(32), default=DEFAULT_HOTLINE_ID)


class TicketCounter(Base):
    """The last ticket number handed out on a local day; shared by all kinds so the spoken
    month-day plus counter is unique on its own."""

    __tablename__ = "ticket_counters"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class CallRow(Base):
    """One call as seen by us, for the daily cross-check against Asterisk's CDRs."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_started_at", "started_at"), Index("ix_calls_hotline_started", "hotline", "started_at"))

    uniqueid: Mapped[str] = mapped_column(String(64), primary_key=True)
    linkedid: Mapped[str | None] = mapped_column(String(64))
    caller_id_raw: Mapped[str | None] = mapped_column(String(128))
    caller_id: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("owners.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ivr_path: Mapped[str] = mapped_column(String(256), default="")
    outcome: Mapped[str | None] = mapped_column(String(32))
    # Set by call distribution when an agent answers (entry into the queue -> answer, monotonic).
    answered_by: Mapped[str | None] = mapped_column(String(64))
    answer_seconds: Mapped[float | None] = mapped_column(Float)
    within_target: Mapped[bool | None] = mapped_column(Boolean)
    # The hotline (estate) the call came in on; rows from before hotlines: the default.
    hotline: Mapped[str] = mapped_column(String(32), default=DEFAULT_HOTLINE_ID)
