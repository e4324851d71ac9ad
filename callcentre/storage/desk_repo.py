"""The agent desk's queries: the owner card (screen-pop), owner search, attaching a number, tickets.

Everything an agent needs while the phone rings comes from :meth:`DeskRepo.lookup_by_phone` or
:meth:`DeskRepo.owner_card` in one read job of the engine's reader (:mod:`callcentre.storage.reader`:
the queries run in its thread in one hop) with a fixed number of queries (no query per owner or per
unit), so the screen-pop stays well inside its 200 ms. Results are plain JSON-able
dicts; names pass through :func:`~callcentre.domain.callerid.safe_display_name` (the page still
renders them as text only).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

import structlog
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from callcentre.domain.hotlines import DEFAULT_HOTLINE_ID
from callcentre.domain.callerid import safe_display_name
from callcentre.domain.errors import Conflict, NotFound, TicketNotFound
from callcentre.domain.model import Priority, TicketDraft, TicketStatus
from callcentre.domain.ports import Clock, SystemClock
from callcentre.storage.models import CallRow, Owner, OwnerUnit, Phone, TicketRow, Unit
from callcentre.storage.errors import storage_errors
from callcentre.storage.repo import SqlTicketStore, canonical_label
from callcentre.storage.reader import reads_for
from callcentre.storage.writer import WriteTx, writes_for

log = structlog.get_logger(__name__)

LAST_CALLS = 5
SEARCH_LIMIT = 20
NOTES_MAX = 4000
_OPEN = [s.value for s in TicketStatus if s.is_open]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class DeskRepo:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        clock: Clock | None = None,
        *,
        tz: str = "Asia/Shanghai",
        prefixes: Mapping[str, str] | None = None,
        repeat_caller_hours: float = 24.0,
        default_hotline: str = DEFAULT_HOTLINE_ID,
    ) -> None:
        self._sessions = session_factory
        self._writes = writes_for(session_factory)
        self._reads = reads_for(session_factory)
        self._clock = clock or SystemClock()
        self._repeat = timedelta(hours=repeat_caller_hours)
        self.tickets = SqlTicketStore(session_factory, self._clock, tz, prefixes, default_hotline=default_hotline)
        self.default_hotline = default_hotline

    # ------------------------------------------------------------------ rendering

    def _ticket(self, t: TicketRow, now: datetime) -> dict[str, Any]:
        remaining = (t.promised_by - now).total_seconds() if t.promised_by is not None else None
        return {
            "number": t.number,
            "kind": t.kind,
            "category": t.category,
            "priority": t.priority,
            "status": t.status,
            "open": t.status in _OPEN,
            "created_at": _iso(t.created_at),
            "promised_by": _iso(t.promised_by),
            "remaining_seconds": round(remaining) if remaining is not None and t.status in _OPEN else None,
            "overdue": remaining is not None and remaining < 0 and t.status in _OPEN,
            "description": t.description,
            "caller_id": t.caller_id,
            "owner_id": t.owner_id,
            "unit_id": t.unit_id,
            "ivr_path": t.ivr_path,
            "source": t.source,
            "hotline": t.hotline,
        }

    @staticmethod
    def _call(c: CallRow) -> dict[str, Any]:
        return {
            "uniqueid": c.uniqueid,
            "caller_id": c.caller_id,
            "started_at": _iso(c.started_at),
            "ended_at": _iso(c.ended_at),
            "outcome": c.outcome,
            "ivr_path": c.ivr_path,
            "hotline": c.hotline,
        }

    # ------------------------------------------------------------------ owner cards

    def _cards(
        self, s: Session, owner_ids: list[int], only_units: Mapping[int, set[int]] | None = None
    ) -> list[dict[str, Any]]:
        """Owner cards for these owners (in this order), four queries whatever their number."""
        if not owner_ids:
            return []
        now = self._clock.now()
        owners = {o.id: o for o in (s.execute(select(Owner).where(Owner.id.in_(owner_ids)))).scalars()}
        unit_rows = (
            s.execute(
                select(OwnerUnit.owner_id, OwnerUnit.role, Unit)
                .join(Unit, Unit.id == OwnerUnit.unit_id)
                .where(OwnerUnit.owner_id.in_(owner_ids))
                .order_by(Unit.building, Unit.unit)
            )
        ).all()
        phones = (
            s.execute(select(Phone).where(Phone.owner_id.in_(owner_ids)).order_by(Phone.id))
        ).scalars().all()
        tickets = (
            s.execute(
                select(TicketRow)
                .where(TicketRow.owner_id.in_(owner_ids), TicketRow.status.in_(_OPEN))
                .order_by(TicketRow.promised_by.is_(None), TicketRow.promised_by, TicketRow.id)
                .limit(200)
            )
        ).scalars().all()
        cards: list[dict[str, Any]] = []
        for oid in owner_ids:
            o = owners.get(oid)
            if o is None:
                continue
            wanted = (only_units or {}).get(oid)
            units = [
                {
                    "unit_id": u.id,
                    "building": u.building,
                    "unit": u.unit,
                    "role": role,
                    "fee_balance_cents": u.fee_balance_cents,
                    "fee_due_date": _iso(u.fee_due_date),
                    "fee_overdue": bool(u.fee_balance_cents > 0 and u.fee_due_date and u.fee_due_date < now.date()),
                    "matched": wanted is None or u.id in wanted,
                }
                for owner_id, role, u in unit_rows
                if owner_id == oid
            ]
            cards.append(
                {
                    "owner_id": o.id,
                    "name": safe_display_name(o.name, 100),
                    "vip": o.vip,
                    "language": o.language,
                    "notes": o.notes,
                    "units": units,
                    "phones": [
                        {"number": p.number, "raw": p.raw, "unit_id": p.unit_id, "label": p.label}
                        for p in phones
                        if p.owner_id == oid
                    ],
                    "open_tickets": [self._ticket(t, now) for t in tickets if t.owner_id == oid],
                }
            )
        return cards

    def _history(
        self, s: Session, owner_ids: Iterable[int], phone: str | None, exclude_uniqueid: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """The last calls of these owners or this number, and whether one came within the repeat window."""
        conds = []
        ids = list(owner_ids)
        if ids:
            conds.append(CallRow.owner_id.in_(ids))
        if phone:
            conds.append(CallRow.caller_id == phone)
        if not conds:
            return [], False
        where = or_(*conds)
        if exclude_uniqueid:
            where = and_(where, CallRow.uniqueid != exclude_uniqueid)
        rows = (
            s.execute(
                select(CallRow).where(where).order_by(CallRow.started_at.desc(), CallRow.uniqueid.desc()).limit(LAST_CALLS)
            )
        ).scalars().all()
        now = self._clock.now()
        repeat = any(r.started_at is not None and timedelta(0) <= now - r.started_at <= self._repeat for r in rows)
        return [self._call(r) for r in rows], repeat

    async def lookup_by_phone(self, phone: str | None, *, exclude_uniqueid: str | None = None) -> dict[str, Any]:
        """Everything known about a normalised number: owners with units, tickets, calls, repeat flag.

        One read job (:mod:`callcentre.storage.reader`): the screen-pop's queries run together in the
        reader's thread, in one hop, not one hop per statement through the pool."""

        def read(conn: Connection) -> dict[str, Any]:
            with Session(bind=conn) as s:
                return self._lookup(s, phone, exclude_uniqueid)

        return await self._reads.run(read, "look up a caller")

    def _lookup(self, s: Session, phone: str | None, exclude_uniqueid: str | None) -> dict[str, Any]:
        owner_ids: list[int] = []
        only: dict[int, set[int] | None] = {}
        if phone:
            for p in s.execute(select(Phone).where(Phone.number == phone).order_by(Phone.owner_id)).scalars():
                if p.owner_id not in owner_ids:
                    owner_ids.append(p.owner_id)
                if p.unit_id is None:
                    only[p.owner_id] = None  # a number without a unit matches all the owner's units
                elif only.get(p.owner_id, set()) is not None:
                    only.setdefault(p.owner_id, set()).add(p.unit_id)  # type: ignore[union-attr]
        cards = self._cards(s, owner_ids, {k: v for k, v in only.items() if v is not None})
        calls, repeat = self._history(s, owner_ids, phone, exclude_uniqueid)
        unowned: list[dict[str, Any]] = []
        if phone:
            now = self._clock.now()
            rows = s.execute(
                select(TicketRow)
                .where(TicketRow.caller_id == phone, TicketRow.owner_id.is_(None), TicketRow.status.in_(_OPEN))
                .order_by(TicketRow.id.desc())
                .limit(20)
            ).scalars().all()
            unowned = [self._ticket(t, now) for t in rows]
        return {"phone": phone, "owners": cards, "last_calls": calls, "repeat_caller": repeat, "unowned_tickets": unowned}

    async def owner_card(self, owner_id: int, *, phone: str | None = None) -> dict[str, Any]:
        def read(conn: Connection) -> dict[str, Any] | None:
            with Session(bind=conn) as s:
                cards = self._cards(s, [owner_id])
                if not cards:
                    return None
                calls, repeat = self._history(s, [owner_id], phone, None)
            card = cards[0]
            card["last_calls"] = calls
            card["repeat_caller"] = repeat
            return card

        card = await self._reads.run(read, "read an owner")
        if card is None:
            raise NotFound(f"owner {owner_id} does not exist")
        return card

    # ------------------------------------------------------------------ search and attach

    async def search_owners(self, text: str, *, phone: str | None = None, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
        """Owners by (part of) name, by unit ("3-802", "802") or by phone (normalised or trailing digits)."""
        text = (text or "").strip()[:64]
        if not text and not phone:
            return []
        conds = []
        if text:
            conds.append(Owner.name.contains(text, autoescape=True))
            label = text.replace("/", "-").replace(" ", "-")
            if "-" in label:
                building, _, unit = label.partition("-")
                conds.append(and_(Unit.building == canonical_label(building), Unit.unit == canonical_label(unit)))
            else:
                conds.append(Unit.unit == canonical_label(text))
            digits = "".join(ch for ch in text if ch.isdigit())
            if len(digits) >= 4:
                conds.append(Phone.number.endswith(digits, autoescape=True))
        if phone:
            conds.append(Phone.number == phone)
        q = (
            select(Owner.id)
            .outerjoin(OwnerUnit, OwnerUnit.owner_id == Owner.id)
            .outerjoin(Unit, Unit.id == OwnerUnit.unit_id)
            .outerjoin(Phone, Phone.owner_id == Owner.id)
            .where(or_(*conds))
            .group_by(Owner.id)
            .order_by(Owner.id)
            .limit(max(1, min(limit, 50)))
        )
        def read(conn: Connection) -> list[dict[str, Any]]:
            with Session(bind=conn) as s:
                return self._cards(s, list(s.execute(q).scalars()))

        cards = await self._reads.run(read, "search owners")
        for c in cards:
            c.pop("notes", None)
        return cards

    async def attach_phone(
        self, owner_id: int, number: str, raw: str, *, unit_id: int | None = None, label: str | None = "desk"
    ) -> dict[str, Any]:
        """Tie a normalised number to an owner so the next call is recognised; idempotent."""
        unit_cond = Phone.unit_id.is_(None) if unit_id is None else Phone.unit_id == unit_id

        def attach(tx: WriteTx) -> bool:
            c = tx.conn
            if c.execute(select(Owner.id).where(Owner.id == owner_id)).first() is None:
                raise NotFound(f"owner {owner_id} does not exist")
            if unit_id is not None and c.execute(
                select(OwnerUnit.unit_id).where(OwnerUnit.owner_id == owner_id, OwnerUnit.unit_id == unit_id)
            ).first() is None:
                raise Conflict(f"unit {unit_id} does not belong to owner {owner_id}", code="unit_not_owners")
            if c.execute(select(Phone.id).where(Phone.number == number, Phone.owner_id == owner_id, unit_cond)).first():
                return False
            c.execute(insert(Phone).values(number=number, raw=raw[:64], owner_id=owner_id, unit_id=unit_id,
                                           label=(label or None) and label[:32]))
            return True

        created = await self._writes.run(attach, "attach a phone number")
        log.info("phone attached", owner_id=owner_id, created=created)
        return {"owner_id": owner_id, "number": number, "unit_id": unit_id, "created": created}

    # ------------------------------------------------------------------ tickets

    async def tickets_for(self, *, owner_id: int | None = None, phone: str | None = None, limit: int = 50,
                          hotline: str | None = None) -> list[dict[str, Any]]:
        """An owner's or a number's tickets, newest first; ``hotline``: only that hotline's (without an owner
        or a number: that hotline's newest tickets)."""
        conds = []
        if owner_id is not None:
            conds.append(TicketRow.owner_id == owner_id)
        if phone:
            conds.append(TicketRow.caller_id == phone)
        if not conds and hotline is None:
            return []
        where = [or_(*conds)] if conds else []
        if hotline is not None:
            where.append(TicketRow.hotline == hotline)
        q = select(TicketRow).where(*where).order_by(TicketRow.created_at.desc(), TicketRow.id.desc()).limit(limit)
        async with storage_errors("read tickets"), self._sessions() as s:
            rows = (await s.execute(q)).scalars().all()
        now = self._clock.now()
        return [self._ticket(t, now) for t in rows]

    async def call_hotline(self, uniqueid: str) -> str | None:
        """The hotline a call came in on (None: no such call recorded)."""
        async with storage_errors("read a call"), self._sessions() as s:
            return (await s.execute(select(CallRow.hotline).where(CallRow.uniqueid == uniqueid))).scalar_one_or_none()

    async def get_ticket(self, number: str) -> dict[str, Any]:
        async with storage_errors("read a ticket"), self._sessions() as s:
            row = (await s.execute(select(TicketRow).where(TicketRow.number == number))).scalar_one_or_none()
        if row is None:
            raise TicketNotFound(f"ticket {number} does not exist")
        return self._ticket(row, self._clock.now())

    async def create_ticket(self, draft: TicketDraft, promised_by: datetime | None) -> dict[str, Any]:
        """Create through the ticket store (numbering, idempotency per call). Status changes, "resolved at
        first contact" included, go through the ticket lifecycle (service.tickets), never through here."""
        if draft.owner_id is not None or draft.unit_id is not None:
            async with storage_errors("check an owner"), self._sessions() as s:
                if draft.owner_id is not None and await s.get(Owner, draft.owner_id) is None:
                    raise NotFound(f"owner {draft.owner_id} does not exist")
                if draft.unit_id is not None and await s.get(Unit, draft.unit_id) is None:
                    raise NotFound(f"unit {draft.unit_id} does not exist")
        ticket = await self.tickets.create_ticket(draft, promised_by)
        return await self.get_ticket(ticket.number)

    async def update_ticket(
        self,
        number: str,
        *,
        priority: str | None = None,
        category: str | None = None,
        note: str | None = None,
        by: str = "",
    ) -> dict[str, Any]:
        """Change priority or category and append a note (stamped with time and agent). The status is
        not changed here: that is the ticket lifecycle's (service.tickets.TicketService.apply)."""
        now = self._clock.now()
        tickets = TicketRow.__table__

        def change(tx: WriteTx) -> Any:
            c = tx.conn
            row = c.execute(select(tickets).where(tickets.c.number == number).with_for_update()).first()
            if row is None:
                raise TicketNotFound(f"ticket {number} does not exist")
            if row.status == TicketStatus.CLOSED.value:
                raise Conflict(f"ticket {number} is closed; reopen it through the service desk", code="ticket_closed")
            changes: dict[str, Any] = {"updated_at": now}
            if priority is not None:
                changes["priority"] = Priority(priority).value
            if category is not None:
                changes["category"] = category
            if note:
                stamp = f"[{now:%Y-%m-%d %H:%M}Z {by}]".replace("  ", " ")
                text = f"{row.description}\n{stamp} {note}" if row.description else f"{stamp} {note}"
                changes["description"] = text[-NOTES_MAX:]
            c.execute(update(tickets).where(tickets.c.id == row.id).values(**changes))
            return c.execute(select(tickets).where(tickets.c.id == row.id)).one()

        row = await self._writes.run(change, "update a ticket")
        log.info("ticket updated", ticket=number, by=by)
        return self._ticket(row, now)
