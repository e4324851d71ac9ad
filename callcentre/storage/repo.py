"""Repositories: the domain's Directory and TicketStore ports over SQLAlchemy.

Every public method is its own short transaction, so nothing here holds a lock while the IVR
talks to a caller. The directory's look-ups (once per call, at its start) are read jobs for
:func:`callcentre.storage.reader.reads_for` (the reads of calls arriving together in one hop); other
reads use the engine's pool; writes are jobs for
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
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.domain.hotlines import DEFAULT_HOTLINE_ID
from callcentre.domain.ticket_number import TicketNumber
from callcentre.domain.model import OwnerMatch, Priority, Ticket, TicketDraft, TicketKind, TicketStatus
from callcentre.domain.ports import Clock, StorageUnavailable, SystemClock, today_local
from callcentre.storage.errors import reason, storage_errors
from callcentre.storage.models import CallRow, Owner, OwnerUnit, Phone, Role, TicketRow, Unit
from callcentre.storage.reader import reads_for
from callcentre.storage.writer import WriteTx, insert_for, run_statement, writes_for

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


# One (owner, unit) match: plain columns, no ORM entities (the look-up runs once per call, at its start).
_MATCH_COLUMNS = (
    Owner.id.label("owner_id"), Owner.name.label("owner_name"), Unit.id.label("unit_id"), Unit.building, Unit.unit,
    Unit.fee_balance_cents, Unit.fee_due_date, Owner.vip, Owner.language, Owner.pin_hash.is_not(None).label("has_pin"),
)


def _match_query() -> Select[Any]:
    return (
        select(*_MATCH_COLUMNS)
        .join(OwnerUnit, OwnerUnit.owner_id == Owner.id)
        .join(Unit, Unit.id == OwnerUnit.unit_id)
    )


# Built once: bound parameters, so each call only binds its values.
_BY_PHONE = (
    _match_query()
    .join(Phone, Phone.owner_id == Owner.id)
    .where(Phone.number == bindparam("number"))
    .where(or_(Phone.unit_id.is_(None), Phone.unit_id == Unit.id))
    .order_by(Owner.id, Unit.building, Unit.unit)
)
_BY_UNIT = (
    _match_query()
    .where(Unit.building == bindparam("building"), Unit.unit == bindparam("unit"))
    .order_by(case((OwnerUnit.role == Role.OWNER.value, 0), else_=1), Owner.id)
)
_PIN_HASH = select(Owner.pin_hash).where(Owner.id == bindparam("owner_id"))


def _to_match(row: Any) -> OwnerMatch:
    return OwnerMatch(
        owner_id=row.owner_id,
        owner_name=row.owner_name,
        unit_id=row.unit_id,
        building=row.building,
        unit=row.unit,
        fee_balance_cents=row.fee_balance_cents,
        fee_due_date=row.fee_due_date,
        vip=bool(row.vip),
        language=row.language,
        has_pin=bool(row.has_pin),
    )


class SqlDirectory:
    """Owners, units and phones: implements domain.ports.Directory.

    The look-ups are read jobs (:func:`callcentre.storage.reader.reads_for`): the reads of calls
    arriving together go to the database in one hop."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._reads = reads_for(sessions)
        self._hasher = pin_hasher()

    async def find_by_phone(self, normalised: str) -> list[OwnerMatch]:
        """Every (owner, unit) this number belongs to; a phone tied to one unit matches only that
        unit, a phone without a unit matches all the owner's units."""
        if not normalised:
            return []

        def read(conn: Connection) -> list[OwnerMatch]:
            seen: set[tuple[int, int]] = set()
            out: list[OwnerMatch] = []
            for row in conn.execute(_BY_PHONE, {"number": normalised}):
                if (row.owner_id, row.unit_id) not in seen:
                    seen.add((row.owner_id, row.unit_id))
                    out.append(_to_match(row))
            return out

        return await self._reads.run(read, "look up a phone number")

    async def find_unit(self, building: str, unit: str) -> list[OwnerMatch]:
        """The people of one unit, owners before tenants."""
        params = {"building": canonical_label(building), "unit": canonical_label(unit)}

        def read(conn: Connection) -> list[OwnerMatch]:
            return [_to_match(row) for row in conn.execute(_BY_UNIT, params)]

        return await self._reads.run(read, "look up a unit")

    async def check_pin(self, owner_id: int, pin: str) -> bool:
        def read(conn: Connection) -> str | None:
            return conn.execute(_PIN_HASH, {"owner_id": owner_id}).scalar_one_or_none()

        pin_hash = await self._reads.run(read, "check a PIN")
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
    stmt = insert_for(dialect)(_TICKETS)
    if idempotent:
        stmt = stmt.on_conflict_do_nothing(index_elements=["call_uniqueid", "kind"])
    return stmt.returning(_TICKETS.c.id)


@functools.lru_cache(maxsize=64)
def _call_upsert(dialect: str, set_keys: tuple[str, ...], append_step: bool) -> Any:
    """The calls row's ``INSERT … ON CONFLICT (uniqueid) DO UPDATE``, built once per shape: the new values
    come as parameters, an existing row takes them from ``excluded`` (and ``append_step``: the IVR
    step, passed as the inserted ``ivr_path``, is appended to its path)."""
    stmt = insert_for(dialect)(CallRow)
    set_: dict[str, Any] = {k: stmt.excluded[k] for k in set_keys}
    if append_step:
        step = stmt.excluded.ivr_path
        appended = case((CallRow.ivr_path == "", step), else_=CallRow.ivr_path + ">" + step)
        set_["ivr_path"] = func.substr(appended, 1, _IVR_PATH_MAX)
    return stmt.on_conflict_do_update(index_elements=["uniqueid"], set_=set_)


_MARK_ACKNOWLEDGED = (update(TicketRow).where(TicketRow.id == bindparam("ticket_id"))
                      .values(acknowledged_to_caller=True, updated_at=bindparam("now")))


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
        await self._writes.run(run_statement(_MARK_ACKNOWLEDGED, {"ticket_id": ticket_id, "now": self._clock.now()}),
                               "update the ticket")

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
        set_keys = tuple(sorted(k for k, v in values.items() if v is not None))  # never empty: started_at is set
        row = {"uniqueid": uniqueid, "ivr_path": "", "hotline": self._default_hotline, **values}

        def write(tx: WriteTx) -> None:
            tx.conn.execute(_call_upsert(tx.conn.dialect.name, set_keys, False), row)

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
        # An existing row gets the event's own fields (and the IVR step appended to its path).
        set_keys = tuple(sorted(values))
        insert_values: dict[str, Any] = {"uniqueid": uniqueid, "ivr_path": "", **values}
        append_step = step is not None and "ivr_path" not in values
        if append_step:
            insert_values["ivr_path"] = str(step)[:32]
        if "started_at" not in insert_values:
            insert_values["started_at"] = self._clock.now()
        insert_values.setdefault("hotline", self._default_hotline)  # a later "started" event sets the real one
        if not set_keys and not append_step:
            return

        def write(tx: WriteTx) -> None:
            tx.conn.execute(_call_upsert(tx.conn.dialect.name, set_keys, append_step), insert_values)

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
