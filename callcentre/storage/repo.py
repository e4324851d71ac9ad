"""Repositories: the domain's Directory and TicketStore ports over SQLAlchemy.

Every public method is its own short transaction, so nothing here holds a lock while the IVR
talks to a caller. Reads use the engine's pool; writes are jobs for
:func:`callcentre.storage.writer.writes_for` (on SQLite the file's one writer, which groups
concurrent writes into one commit). Database failures (locked, read-only, full, down) become
:class:`~callcentre.domain.ports.StorageUnavailable` with a message a person can act on.
"""

from __future__ import annotations

import asyncio
import functools
import unicodedata
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Mapping

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Select, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.domain.hotlines import DEFAULT_HOTLINE_ID
from callcentre.domain.ticket_number import TicketNumber
from callcentre.domain.model import OwnerMatch, Priority, Ticket, TicketDraft, TicketKind, TicketStatus
from callcentre.domain.ports import Clock, StorageUnavailable, SystemClock, today_local
from callcentre.storage.errors import reason, storage_errors
from callcentre.storage.models import CallRow, Owner, OwnerUnit, Phone, Role, TicketRow, Unit
from callcentre.storage.writer import WriteTx, run_statement, writes_for

log = structlog.get_logger(__name__)

# Fields of the calls row that record_call_event may set from its data.
_CALL_FIELDS = ("linkedid", "caller_id_raw", "caller_id", "owner_id", "started_at", "ended_at", "ivr_path", "outcome",
                "answered_by", "answer_seconds", "within_target", "hotline")
_IVR_PATH_MAX = 256


def canonical_label(value: str) -> str:
    """Building and unit labels as stored and looked up: trimmed, upper-case, and for all-digit
    labels without leading zeros, so CSV "03"/"0802" matches keypad entry "3"/"802"."""
    text = unicodedata.normalize("NFKC", value).strip().upper()
    if text.isascii() and text.isdigit():
        return text.lstrip("0") or "0"
    return text


def pin_hasher() -> PasswordHasher:
    """argon2id with the library's defaults (RFC 9106 low-memory profile)."""
    return PasswordHasher()


async def _in_thread(func: Any, *args: Any) -> Any:
    # argon2 is deliberately slow (tens of ms): keep it off the event loop.
    return await asyncio.to_thread(func, *args)


def dialect_insert(conn: Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT for the connection's dialect (SQLite or PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise StorageUnavailable(f"database dialect {conn.dialect.name!r} is not supported (use SQLite or PostgreSQL)")


def upsert(conn: Connection, table: Any, values: Mapping[str, Any], keys: list[str], set_: Mapping[str, Any]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE SET … for SQLite and PostgreSQL."""
    return dialect_insert(conn, table).values(**values).on_conflict_do_update(index_elements=keys, set_=dict(set_))


class SqlDirectory:
    """Owners, units and phones: implements domain.ports.Directory."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._hasher = pin_hasher()

    @staticmethod
    def _match_query() -> Select[Any]:
        return (
            select(Owner, Unit, OwnerUnit.role)
            .join(OwnerUnit, OwnerUnit.owner_id == Owner.id)
            .join(Unit, Unit.id == OwnerUnit.unit_id)
        )

    @staticmethod
    def _to_match(owner: Owner, unit: Unit) -> OwnerMatch:
        return OwnerMatch(
            owner_id=owner.id,
            owner_name=owner.name,
            unit_id=unit.id,
            building=unit.building,
            unit=unit.unit,
            fee_balance_cents=unit.fee_balance_cents,
            fee_due_date=unit.fee_due_date,
            vip=owner.vip,
            language=owner.language,
            has_pin=owner.pin_hash is not None,
        )

    async def find_by_phone(self, normalised: str) -> list[OwnerMatch]:
        """Every (owner, unit) this number belongs to; a phone tied to one unit matches only that
        unit, a phone without a unit matches all the owner's units."""
        if not normalised:
            return []
        q = (
            self._match_query()
            .join(Phone, Phone.owner_id == Owner.id)
            .where(Phone.number == normalised)
            .where(or_(Phone.unit_id.is_(None), Phone.unit_id == Unit.id))
            .order_by(Owner.id, Unit.building, Unit.unit)
        )
        async with storage_errors("look up a phone number"), self._sessions() as s:
            rows = (await s.execute(q)).all()
        seen: set[tuple[int, int]] = set()
        out: list[OwnerMatch] = []
        for owner, unit, _role in rows:
            if (owner.id, unit.id) not in seen:
                seen.add((owner.id, unit.id))
                out.append(self._to_match(owner, unit))
        return out

    async def find_unit(self, building: str, unit: str) -> list[OwnerMatch]:
        """The people of one unit, owners before tenants."""
        q = (
            self._match_query()
            .where(Unit.building == canonical_label(building), Unit.unit == canonical_label(unit))
            .order_by(case((OwnerUnit.role == Role.OWNER.value, 0), else_=1), Owner.id)
        )
        async with storage_errors("look up a unit"), self._sessions() as s:
            rows = (await s.execute(q)).all()
        return [self._to_match(owner, u) for owner, u, _role in rows]

    async def check_pin(self, owner_id: int, pin: str) -> bool:
        async with storage_errors("check a PIN"), self._sessions() as s:
            pin_hash = (await s.execute(select(Owner.pin_hash).where(Owner.id == owner_id))).scalar_one_or_none()
        if not pin_hash or not pin:
            return False

        def _verify() -> bool:
            try:
                return self._hasher.verify(pin_hash, pin)
            except (VerificationError, InvalidHashError):
                return False

        return bool(await _in_thread(_verify))


def _to_ticket(row: Any) -> Ticket:
    """A ticket from anything with the row's attributes (an ORM row, a Core row, the values just inserted)."""
    return Ticket(
        id=row.id,
        number=row.number,
        kind=TicketKind(row.kind),
        category=row.category,
        priority=Priority(row.priority),
        status=TicketStatus(row.status),
        caller_id_raw=row.caller_id_raw,
        caller_id=row.caller_id,
        call_uniqueid=row.call_uniqueid,
        call_linkedid=row.call_linkedid,
        owner_id=row.owner_id,
        unit_id=row.unit_id,
        voice_file=row.voice_file,
        ivr_path=row.ivr_path,
        created_at=row.created_at,
        promised_by=row.promised_by,
        description=row.description,
        hotline=row.hotline,
        extra={
            "source": row.source,
            "acknowledged_to_caller": row.acknowledged_to_caller,
            "caller_name": row.caller_name,
            "channel": row.channel,
            "updated_at": row.updated_at,
        },
    )


_OPEN_STATUSES = [s.value for s in TicketStatus if s.is_open]
_TICKETS = TicketRow.__table__
# Built once: a statement made per ticket with its values inlined costs more to build than to run.
_TICKET_OF_CALL = select(_TICKETS).where(_TICKETS.c.call_uniqueid == bindparam("uniqueid"), _TICKETS.c.kind == bindparam("kind"))


@functools.cache
def _ticket_insert(dialect: str, idempotent: bool) -> Any:
    """INSERT … RETURNING id, with ``ON CONFLICT (call_uniqueid, kind) DO NOTHING`` for a call's ticket."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_TICKETS)
    if idempotent:
        stmt = stmt.on_conflict_do_nothing(index_elements=["call_uniqueid", "kind"])
    return stmt.returning(_TICKETS.c.id)


class SqlTicketStore:
    """Tickets and call records: implements domain.ports.TicketStore."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock | None = None,
        tz: str = "Asia/Shanghai",
        prefixes: Mapping[str, str] | None = None,
        default_hotline: str = DEFAULT_HOTLINE_ID,
    ) -> None:
        """``default_hotline``: the hotline of a ticket or call that names none (domain/hotlines.py)."""
        self._sessions = sessions
        self._writes = writes_for(sessions)
        self._clock = clock or SystemClock()
        self._tz = tz
        self._prefixes = dict(prefixes or {})
        self._default_hotline = default_hotline

    def _prefix(self, kind: TicketKind) -> str:
        return self._prefixes.get(kind.value, kind.value[:1].upper())

    async def _existing(self, uniqueid: str, kind: TicketKind) -> TicketRow | None:
        async with self._sessions() as s:
            return (
                await s.execute(select(TicketRow).where(TicketRow.call_uniqueid == uniqueid, TicketRow.kind == kind.value))
            ).scalar_one_or_none()

    async def create_ticket(self, draft: TicketDraft, promised_by: datetime | None) -> Ticket:
        """Create and commit; the same (call_uniqueid, kind) returns the ticket already made.

        Returns only after the row is committed (a caller may be told its number at once). One job for
        the writer (:mod:`callcentre.storage.writer`): the day's next counter and the insert with
        ``ON CONFLICT (call_uniqueid, kind) DO NOTHING``; if the call already has this ticket the counter
        is given back and the existing ticket returned. Raises StorageUnavailable."""
        blog = log.bind(uniqueid=draft.call_uniqueid, kind=draft.kind.value)
        now = self._clock.now()
        day = today_local(self._clock, self._tz)
        prefix = self._prefix(draft.kind)
        uniqueid = draft.call_uniqueid or None
        values: dict[str, Any] = dict(
            kind=draft.kind.value,
            category=draft.category,
            priority=draft.priority.value,
            status=TicketStatus.NEW.value,
            caller_id_raw=draft.caller_id_raw.replace("\x00", "")[:128],
            caller_id=draft.caller_id,
            caller_name=draft.caller_name[:100] if draft.caller_name else None,
            call_uniqueid=uniqueid,
            call_linkedid=draft.call_linkedid,
            channel=draft.channel[:128] if draft.channel else None,
            owner_id=draft.owner_id,
            unit_id=draft.unit_id,
            voice_file=draft.voice_file,
            ivr_path=draft.ivr_path[:_IVR_PATH_MAX],
            description=draft.description,
            source=draft.source[:16],
            created_at=now,
            promised_by=promised_by,
            acknowledged_to_caller=False,
            updated_at=now,
            hotline=draft.hotline or self._default_hotline,
        )

        def insert(tx: WriteTx) -> tuple[int, str] | Any:
            number = str(TicketNumber(prefix, day, tx.next_ticket_counter(day)))
            new_id = tx.conn.execute(_ticket_insert(tx.conn.dialect.name, bool(uniqueid)), {**values, "number": number}
                                     ).scalar_one_or_none()
            if new_id is not None:
                return new_id, number
            # This call already has this ticket (a retried or reconnected call, or a lost race).
            tx.give_back_ticket_counter(day)
            found = tx.conn.execute(_TICKET_OF_CALL, {"uniqueid": uniqueid, "kind": values["kind"]}).first()
            if found is None:
                raise StorageUnavailable("cannot save the ticket: it collided with a ticket that is no longer there")
            return found

        try:
            made = await self._writes.run(insert, "save the ticket")
        except IntegrityError as exc:
            found = await self._existing(draft.call_uniqueid, draft.kind) if draft.call_uniqueid else None
            if found is not None:
                blog.info("ticket already exists", ticket=found.number)
                return _to_ticket(found)
            raise StorageUnavailable(f"cannot save the ticket: {reason(exc)}") from exc
        if not isinstance(made, tuple):
            blog.info("ticket already exists", ticket=made.number)
            return _to_ticket(made)
        new_id, number = made
        ticket = _to_ticket(SimpleNamespace(id=new_id, number=number, **values))
        blog.info("ticket created", ticket=number)
        return ticket

    async def get_ticket(self, ticket_id: int) -> Ticket | None:
        async with storage_errors("read a ticket"), self._sessions() as s:
            row = await s.get(TicketRow, ticket_id)
        return _to_ticket(row) if row is not None else None

    async def mark_acknowledged(self, ticket_id: int) -> None:
        """The caller has heard the ticket number and the promised time."""
        stmt = update(TicketRow).where(TicketRow.id == ticket_id).values(acknowledged_to_caller=True, updated_at=self._clock.now())
        await self._writes.run(run_statement(stmt), "update the ticket")

    @staticmethod
    def _who(owner_id: int | None, caller_id: str | None) -> Any:
        conds = []
        if owner_id is not None:
            conds.append(TicketRow.owner_id == owner_id)
        if caller_id:
            conds.append(TicketRow.caller_id == caller_id)
        return or_(*conds) if conds else None

    async def latest_open_ticket(self, owner_id: int | None, caller_id: str | None) -> Ticket | None:
        """The newest unfinished ticket of this owner or this number (either matches)."""
        who = self._who(owner_id, caller_id)
        if who is None:
            return None
        q = (
            select(TicketRow)
            .where(and_(who, TicketRow.status.in_(_OPEN_STATUSES)))
            .order_by(TicketRow.created_at.desc(), TicketRow.id.desc())
            .limit(1)
        )
        async with storage_errors("read tickets"), self._sessions() as s:
            row = (await s.execute(q)).scalar_one_or_none()
        return _to_ticket(row) if row is not None else None

    async def tickets_for(
        self, owner_id: int | None = None, caller_id: str | None = None, limit: int = 20
    ) -> list[Ticket]:
        """Newest first: the history an agent sees on screen-pop."""
        who = self._who(owner_id, caller_id)
        if who is None:
            return []
        q = select(TicketRow).where(who).order_by(TicketRow.created_at.desc(), TicketRow.id.desc()).limit(limit)
        async with storage_errors("read tickets"), self._sessions() as s:
            rows = (await s.execute(q)).scalars().all()
        return [_to_ticket(r) for r in rows]

    async def record_call(
        self,
        uniqueid: str,
        *,
        linkedid: str | None = None,
        caller_id_raw: str | None = None,
        caller_id: str | None = None,
        owner_id: int | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Create (or fill in) the calls row when a call reaches us. Raises StorageUnavailable."""
        values: dict[str, Any] = {
            "linkedid": linkedid,
            "caller_id_raw": caller_id_raw[:128] if caller_id_raw is not None else None,
            "caller_id": caller_id,
            "owner_id": owner_id,
            "started_at": started_at or self._clock.now(),
        }
        set_ = {k: v for k, v in values.items() if v is not None}  # never empty: started_at is set
        row = {"uniqueid": uniqueid, "ivr_path": "", "hotline": self._default_hotline, **values}

        def write(tx: WriteTx) -> None:
            tx.conn.execute(upsert(tx.conn, CallRow, row, ["uniqueid"], set_))

        await self._writes.run(write, "record the call")

    async def record_call_event(self, uniqueid: str, kind: str, data: Mapping[str, object]) -> None:
        """Update the call's row; best effort (a failure is logged, never raised).

        ``data`` keys named like the row's columns overwrite them (``ivr_path``, ``outcome``,
        ``ended_at``, ``owner_id``…); ``ivr_step`` appends one step to the IVR path (``2>1>rec``).
        ``kind`` ``"ended"`` or ``"hangup"`` sets ``ended_at`` to now unless given.
        """
        blog = log.bind(uniqueid=uniqueid, event=kind)
        values: dict[str, Any] = {k: data[k] for k in _CALL_FIELDS if data.get(k) is not None}
        if kind in ("ended", "hangup") and "ended_at" not in values:
            values["ended_at"] = self._clock.now()
        for key in ("ended_at", "started_at"):
            if key in values and not isinstance(values[key], datetime):
                values.pop(key)
        for key in ("ivr_path", "outcome", "linkedid", "caller_id_raw", "caller_id", "hotline"):
            if key in values:
                values[key] = str(values[key])[: 32 if key in ("outcome", "hotline") else 128]
        step = data.get("ivr_step")
        set_: dict[str, Any] = dict(values)
        insert_values: dict[str, Any] = {"uniqueid": uniqueid, "ivr_path": "", **values}
        if step is not None and "ivr_path" not in values:
            step_s = str(step)[:32]
            insert_values["ivr_path"] = step_s
            appended = case((CallRow.ivr_path == "", step_s), else_=CallRow.ivr_path + ">" + step_s)
            set_["ivr_path"] = func.substr(appended, 1, _IVR_PATH_MAX)
        if "started_at" not in insert_values:
            insert_values["started_at"] = self._clock.now()
        insert_values.setdefault("hotline", self._default_hotline)  # a later "started" event sets the real one
        if not set_:
            return

        def write(tx: WriteTx) -> None:
            tx.conn.execute(upsert(tx.conn, CallRow, insert_values, ["uniqueid"], set_))

        try:
            await self._writes.run(write, "record a call event")
        except (StorageUnavailable, SQLAlchemyError) as exc:
            blog.warning("call event not recorded", error=str(exc))

    async def last_call_at(
        self, caller_id: str | None, owner_id: int | None, exclude_uniqueid: str | None = None
    ) -> datetime | None:
        """When this number or owner last called (for the repeat-caller priority)."""
        conds = []
        if owner_id is not None:
            conds.append(CallRow.owner_id == owner_id)
        if caller_id:
            conds.append(CallRow.caller_id == caller_id)
        if not conds:
            return None
        q = select(func.max(CallRow.started_at)).where(or_(*conds))
        if exclude_uniqueid:
            q = q.where(CallRow.uniqueid != exclude_uniqueid)
        async with storage_errors("read calls"), self._sessions() as s:
            return (await s.execute(q)).scalar_one_or_none()

    async def numbers_for_call(self, uniqueid: str) -> list[str]:
        """The numbers of the tickets made during one call."""
        q = select(TicketRow.number).where(TicketRow.call_uniqueid == uniqueid).order_by(TicketRow.id)
        async with storage_errors("read tickets"), self._sessions() as s:
            return list((await s.execute(q)).scalars())

    async def get_call(self, uniqueid: str) -> CallRow | None:
        async with storage_errors("read a call"), self._sessions() as s:
            return await s.get(CallRow, uniqueid)
