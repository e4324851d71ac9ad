"""The ticket service: lifecycle events applied to stored tickets, with their history.

Every change is one transaction: read the ticket, ask :func:`callcentre.domain.lifecycle.transition`,
write the new status and the history line together, plus what the change causes (the dispatch
webhook in the outbox, the first call-back attempt). A refused transition raises before anything is
written. Two people changing one ticket at once: the second write finds ``updated_at`` moved and
raises :class:`ConcurrentChange` instead of silently overwriting the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import AsyncIterator
from typing import Any, Mapping, Sequence

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config
from callcentre.domain.errors import ConcurrentChange, TicketNotFound  # raised here; named in __all__
from callcentre.domain.lifecycle import (
    ConfirmClosed,
    Dispatch,
    Reopen,
    Resolve,
    TicketEvent,
    TicketState,
    TransitionRecord,
    note_warning,
    transition,
)
from callcentre.domain.model import Priority, TicketKind, TicketStatus
from callcentre.domain.patterns import DIALLABLE  # what may be dialled (one definition)
from callcentre.domain.ports import Clock
from callcentre.domain.service import (
    REPEAT_KINDS,
    RepeatVerdict,
    SurveyDecision,
    SurveyOutcome,
    TicketFacts,
    apply_survey,
    check_dispatch,
    find_repeats,
    next_attempt,
)
from callcentre.storage.models import Owner, Phone, TicketRow
from callcentre.storage.service_models import AttemptState, CallbackAttempt, TicketHistory, TicketLink, TicketServiceState

log = structlog.get_logger(__name__)

# Open tickets read per query by the escalation loop. Each page is turned into TicketStates on the
# event loop, between two awaits: with 6,400 open tickets, pages of 200 held the loop for at most
# ~4 ms each (pages of 500 ORM rows: 20 ms, at times 88 ms, every 15 s, in the middle of calls).
OPEN_STATES_PAGE = 200


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    event: str
    from_status: str
    to_status: str
    by: str
    note: str
    details: Mapping[str, Any]
    at: datetime


def state_of(row: TicketRow, svc: TicketServiceState | None) -> TicketState:
    """The domain's view of a stored ticket."""
    return TicketState(
        number=row.number,
        kind=TicketKind(row.kind),
        category=row.category,
        priority=Priority(row.priority),
        status=TicketStatus(row.status),
        created_at=row.created_at,
        promised_by=row.promised_by,
        promise_from=svc.promise_from if svc else None,
        agent=svc.agent if svc else None,
        department=svc.department if svc else None,
        worker=svc.worker if svc else None,
        acknowledged_at=svc.acknowledged_at if svc else None,
        dispatched_at=svc.dispatched_at if svc else None,
        resolved_at=svc.resolved_at if svc else None,
        closed_at=svc.closed_at if svc else None,
        first_contact=svc.first_contact if svc else None,
        warned_at=svc.warned_at if svc else None,
        escalated_at=svc.escalated_at if svc else None,
        reopen_count=(svc.reopen_count or 0) if svc else 0,
    )


# What a TicketState is made of, as plain columns (no ORM objects: the escalation loop reads every open
# ticket every pass). A row of these is both ``row`` and ``svc`` to state_of; a ticket without a
# service state yet has NULLs for the second half (outer join), which state_of reads as none.
_STATE_COLUMNS = (
    TicketRow.id, TicketRow.number, TicketRow.kind, TicketRow.category, TicketRow.priority, TicketRow.status,
    TicketRow.created_at, TicketRow.promised_by,
    TicketServiceState.promise_from, TicketServiceState.agent, TicketServiceState.department,
    TicketServiceState.worker, TicketServiceState.acknowledged_at, TicketServiceState.dispatched_at,
    TicketServiceState.resolved_at, TicketServiceState.closed_at, TicketServiceState.first_contact,
    TicketServiceState.warned_at, TicketServiceState.escalated_at, TicketServiceState.reopen_count,
)


async def load_ticket(s: AsyncSession, ticket_id: int) -> tuple[TicketRow, TicketServiceState]:
    """The ticket row and its service state (created, unsaved until flush, when missing)."""
    row = await s.get(TicketRow, ticket_id)
    if row is None:
        raise TicketNotFound(f"no ticket with id {ticket_id}")
    svc = await s.get(TicketServiceState, ticket_id)
    if svc is None:
        svc = TicketServiceState(
            ticket_id=ticket_id, reopen_count=0, repeat=False, over_head=False, route_to_senior=False,
            needs_person=False, updated_at=row.updated_at,
        )
        s.add(svc)
    return row, svc


def add_history(
    s: AsyncSession,
    ticket_id: int,
    event: str,
    from_status: str,
    to_status: str,
    by: str,
    note: str,
    at: datetime,
    details: Mapping[str, Any] | None = None,
) -> None:
    s.add(
        TicketHistory(
            ticket_id=ticket_id, event=event[:32], from_status=from_status, to_status=to_status, actor=by[:120],
            note=note, details=json.dumps(dict(details or {}), ensure_ascii=False, default=str), at=at,
        )
    )


def add_record(s: AsyncSession, ticket_id: int, record: TransitionRecord) -> None:
    add_history(
        s, ticket_id, record.event.value, record.from_status.value, record.to_status.value, record.by, record.note,
        record.at, record.details,
    )


async def save_state(s: AsyncSession, row: TicketRow, svc: TicketServiceState, new: TicketState, now: datetime) -> None:
    """Write ``new`` back; refuse (ConcurrentChange) when the row changed since it was read."""
    result = await s.execute(
        update(TicketRow)
        .where(TicketRow.id == row.id, TicketRow.updated_at == row.updated_at)
        .values(status=new.status.value, priority=new.priority.value, promised_by=new.promised_by, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise ConcurrentChange(f"ticket {row.number} was changed by someone else; reload it")
    for name in (
        "promise_from", "agent", "department", "worker", "acknowledged_at", "dispatched_at", "resolved_at",
        "closed_at", "first_contact", "warned_at", "escalated_at", "reopen_count",
    ):
        setattr(svc, name, getattr(new, name))
    svc.updated_at = now


async def callback_number(s: AsyncSession, row: TicketRow) -> str | None:
    """The number to call the owner back on: the caller ID the ticket came from, else the owner's
    first phone. None when neither is a plain diallable number."""
    candidates: list[str] = []
    if row.caller_id:
        candidates.append(row.caller_id)
    if row.owner_id is not None:
        q = select(Phone.number).where(Phone.owner_id == row.owner_id).order_by(Phone.id)
        candidates += list((await s.execute(q)).scalars())
    for c in candidates:
        if DIALLABLE.match(c or ""):
            return c
    return None


class TicketService:
    """Tickets as the desk, the escalation loop and the call-backs change them."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cfg: Config,
        clock: Clock,
        webhook_urls: Sequence[str] = (),
    ) -> None:
        self._sessions = sessions
        self._cfg = cfg
        self._clock = clock
        self._webhook_urls = tuple(webhook_urls)

    # --- reading ------------------------------------------------------------------------------

    async def state(self, ticket_id: int) -> TicketState:
        async with self._sessions() as s:
            row, svc = await load_ticket(s, ticket_id)
            return state_of(row, svc)

    async def id_for_number(self, number: str) -> int | None:
        async with self._sessions() as s:
            return (await s.execute(select(TicketRow.id).where(TicketRow.number == number))).scalar_one_or_none()

    async def owner_language(self, ticket_id: int) -> str | None:
        """The language of the ticket's owner (from the owners directory), None without one."""
        q = select(Owner.language).join(TicketRow, TicketRow.owner_id == Owner.id).where(TicketRow.id == ticket_id)
        async with self._sessions() as s:
            return (await s.execute(q)).scalar_one_or_none()

    async def history(self, ticket_id: int) -> list[HistoryEntry]:
        q = select(TicketHistory).where(TicketHistory.ticket_id == ticket_id).order_by(TicketHistory.at, TicketHistory.id)
        async with self._sessions() as s:
            rows = (await s.execute(q)).scalars().all()
        return [HistoryEntry(r.event, r.from_status, r.to_status, r.actor, r.note, json.loads(r.details), r.at) for r in rows]

    async def links(self, ticket_id: int) -> list[tuple[str, str]]:
        """(linked ticket number, reason), oldest first."""
        q = (
            select(TicketRow.number, TicketLink.reason)
            .join(TicketLink, TicketLink.linked_ticket_id == TicketRow.id)
            .where(TicketLink.ticket_id == ticket_id)
            .order_by(TicketRow.created_at)
        )
        async with self._sessions() as s:
            return [(n, r) for n, r in (await s.execute(q)).all()]

    async def open_states_pages(self, page_size: int = OPEN_STATES_PAGE) -> AsyncIterator[list[tuple[int, TicketState]]]:
        """Every open ticket with a promise, for the escalation loop: ``page_size`` at a time, in id
        order, each page read in its own short transaction, as plain columns. Memory per pass stays
        flat however many tickets are open (a single list of every open ticket grew the heap's
        high-water mark with the backlog, pass after pass: bench/soak.py), and so does the longest
        time a page holds the event loop (see :data:`OPEN_STATES_PAGE`)."""
        open_ = [st.value for st in TicketStatus if st.is_open]
        last_id = 0
        while True:
            q = (
                select(*_STATE_COLUMNS)
                .select_from(TicketRow)
                .outerjoin(TicketServiceState, TicketServiceState.ticket_id == TicketRow.id)
                .where(TicketRow.status.in_(open_), TicketRow.promised_by.is_not(None), TicketRow.id > last_id)
                .order_by(TicketRow.id)
                .limit(page_size)
            )
            async with self._sessions() as s:
                page = [(r.id, state_of(r, r)) for r in (await s.execute(q)).all()]  # type: ignore[arg-type]
            if page:
                yield page
            if len(page) < page_size:
                return
            last_id = page[-1][0]

    async def open_states(self) -> list[tuple[int, TicketState]]:
        """Every open ticket with a promise, in one list (for tests and small tools)."""
        return [item async for page in self.open_states_pages() for item in page]

    async def routes_to_senior(self, owner_id: int | None, caller_id: str | None) -> bool:
        """Does this owner's next call go to a senior agent (an open flagged repeat/over-the-head ticket)?"""
        conds = []
        if owner_id is not None:
            conds.append(TicketRow.owner_id == owner_id)
        if caller_id:
            conds.append(TicketRow.caller_id == caller_id)
        if not conds:
            return False
        open_ = [st.value for st in TicketStatus if st.is_open]
        q = (
            select(TicketRow.id)
            .join(TicketServiceState, TicketServiceState.ticket_id == TicketRow.id)
            .where(or_(*conds), TicketRow.status.in_(open_), TicketServiceState.route_to_senior.is_(True))
            .limit(1)
        )
        async with self._sessions() as s:
            return (await s.execute(q)).first() is not None

    # --- changing -----------------------------------------------------------------------------

    async def apply(self, ticket_id: int, event: TicketEvent, by: str, note: str = "") -> TicketState:
        """Apply one lifecycle event; raises TransitionRefused / DispatchInvalid / ValueError with
        nothing written, ConcurrentChange when the ticket moved under us."""
        if isinstance(event, Dispatch):
            check_dispatch(self._cfg.service, event.department.strip(), event.worker.strip())
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            row, svc = await load_ticket(s, ticket_id)
            new, record = transition(state_of(row, svc), event, by, note, now)
            await save_state(s, row, svc, new, now)
            add_record(s, ticket_id, record)
            await self._consequences(s, row, new, event, record, now)
        log.info("ticket changed", ticket=new.number, ticket_event=record.event.value, status=new.status.value, by=by)
        return new

    async def dispatch(self, ticket_id: int, department: str, worker: str, by: str, note: str = "") -> TicketState:
        return await self.apply(ticket_id, Dispatch(department, worker), by, note)

    async def _consequences(
        self, s: AsyncSession, row: TicketRow, new: TicketState, event: TicketEvent, record: TransitionRecord,
        now: datetime,
    ) -> None:
        """What a transition causes, in its own transaction (so it happens if and only if it did)."""
        if isinstance(event, Dispatch) and self._webhook_urls:
            from callcentre.service.webhooks import enqueue, ticket_payload

            payload = ticket_payload("ticket.dispatched", row, new, self._cfg, now)
            enqueue(s, row.id, "ticket.dispatched", payload, self._webhook_urls, now)
        if isinstance(event, Resolve):
            await self._schedule_callback(s, row, now)
        if isinstance(event, (ConfirmClosed, Reopen)):
            await s.execute(
                update(CallbackAttempt)
                .where(CallbackAttempt.ticket_id == row.id, CallbackAttempt.state == AttemptState.SCHEDULED.value)
                .values(state=AttemptState.CANCELLED.value, finished_at=now, error=f"ticket {record.event.value}")
            )

    async def _schedule_callback(self, s: AsyncSession, row: TicketRow, now: datetime) -> None:
        if TicketKind(row.kind) not in REPEAT_KINDS:
            return
        policy = self._cfg.service.callback
        done = (
            await s.execute(select(CallbackAttempt.attempt_no).where(CallbackAttempt.ticket_id == row.id))
        ).scalars().all()
        number = await callback_number(s, row)
        at = next_attempt(policy, 0, None, now, self._cfg.centre.timezone)
        assert at is not None  # the first attempt is always due
        s.add(
            CallbackAttempt(
                ticket_id=row.id, attempt_no=max(done, default=0) + 1, state=AttemptState.SCHEDULED.value,
                number=number, scheduled_at=at,
            )
        )
        add_history(
            s, row.id, "callback_scheduled", row.status, row.status, "system",
            "" if number else "no diallable number: the call-back will need a person", now,
            {"at": at.isoformat()},
        )

    async def note_warning(self, ticket_id: int, note: str, details: Mapping[str, Any]) -> bool:
        """Record the 80 % warning once per promise; False when it was already recorded."""
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            row, svc = await load_ticket(s, ticket_id)
            old = state_of(row, svc)
            if old.warned_at is not None:
                return False
            new = note_warning(old, now)
            await save_state(s, row, svc, new, now)
            add_history(s, ticket_id, "warning", row.status, row.status, "escalation", note, now, details)
        return True

    async def add_note(
        self, ticket_id: int, by: str, note: str, event: str = "note", details: Mapping[str, Any] | None = None
    ) -> None:
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            row, _svc = await load_ticket(s, ticket_id)
            add_history(s, ticket_id, event, row.status, row.status, by, note, now, details)

    async def set_agent(self, ticket_id: int, agent: str) -> None:
        """Remember the agent who handled the call (a reopened ticket goes back to them)."""
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            _row, svc = await load_ticket(s, ticket_id)
            svc.agent = agent[:64]
            svc.updated_at = now

    async def apply_survey(self, ticket_id: int, outcome: SurveyOutcome, by: str = "callback") -> SurveyDecision:
        """The owner's answer on the call-back: closed, or reopened as major back to their agent."""
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            row, svc = await load_ticket(s, ticket_id)
            decision = apply_survey(state_of(row, svc), outcome, self._cfg.tickets.promises, now, by)
            if decision.record is None:
                return decision
            await save_state(s, row, svc, decision.state, now)
            details = dict(decision.record.details)
            if decision.route_to_agent:
                details["route_to_agent"] = decision.route_to_agent
            record = TransitionRecord(
                decision.record.number, decision.record.event, decision.record.from_status, decision.record.to_status,
                decision.record.by, decision.record.note, decision.record.at, details,
            )
            add_record(s, ticket_id, record)
            if outcome.rating is not None:
                svc.satisfaction = outcome.rating
            event: TicketEvent = ConfirmClosed() if decision.state.status is TicketStatus.CLOSED else Reopen("survey")
            await self._consequences(s, row, decision.state, event, record, now)
        log.info("survey applied", ticket=decision.state.number, status=decision.state.status.value)
        return decision

    async def check_repeats(self, ticket_id: int, over_head: bool = False) -> RepeatVerdict:
        """At creation: flag a repeat (same owner or unit, same category, within service.repeat_days)
        or an over-the-head complaint, link the earlier tickets and raise the priority."""
        now = self._clock.now()
        days = self._cfg.service.repeat_days
        async with self._sessions() as s, s.begin():
            row, svc = await load_ticket(s, ticket_id)
            who = []
            if row.owner_id is not None:
                who.append(TicketRow.owner_id == row.owner_id)
            if row.unit_id is not None:
                who.append(TicketRow.unit_id == row.unit_id)
            earlier: list[TicketRow] = []
            if who:
                q = select(TicketRow).where(
                    and_(
                        or_(*who),
                        TicketRow.category == row.category,
                        TicketRow.id != row.id,
                        TicketRow.created_at >= row.created_at - timedelta(days=days),
                        TicketRow.created_at <= row.created_at,
                    )
                )
                earlier = list((await s.execute(q)).scalars())
            verdict = find_repeats(_facts(row, over_head), [_facts(t) for t in earlier], days)
            if not verdict.flagged:
                return verdict
            by_number = {t.number: t.id for t in earlier}
            existing = set(
                (await s.execute(select(TicketLink.linked_ticket_id).where(TicketLink.ticket_id == row.id))).scalars()
            )
            for number in verdict.linked:
                if by_number[number] not in existing:
                    s.add(TicketLink(ticket_id=row.id, linked_ticket_id=by_number[number], reason="repeat", created_at=now))
            old_priority = row.priority
            result = await s.execute(
                update(TicketRow)
                .where(TicketRow.id == row.id, TicketRow.updated_at == row.updated_at)
                .values(priority=verdict.priority.value, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise ConcurrentChange(f"ticket {row.number} was changed by someone else; reload it")
            svc.repeat = svc.repeat or verdict.is_repeat
            svc.over_head = svc.over_head or verdict.over_head
            svc.route_to_senior = svc.route_to_senior or verdict.route_to_senior
            svc.updated_at = now
            add_history(
                s, row.id, "repeat_flagged", row.status, row.status, "system",
                "repeat complaint" if verdict.is_repeat else "complaint over the centre's head", now,
                {"linked": list(verdict.linked), "priority": verdict.priority.value, "previous_priority": old_priority,
                 "over_head": verdict.over_head},
            )
        log.info("repeat flagged", ticket=row.number, linked=list(verdict.linked), over_head=verdict.over_head)
        return verdict


def _facts(row: TicketRow, over_head: bool = False) -> TicketFacts:
    return TicketFacts(
        number=row.number, kind=TicketKind(row.kind), category=row.category, priority=Priority(row.priority),
        owner_id=row.owner_id, unit_id=row.unit_id, created_at=row.created_at, over_head=over_head,
    )


__all__ = [
    "DIALLABLE", "ConcurrentChange", "HistoryEntry", "TicketNotFound", "TicketService", "add_history", "add_record",
    "callback_number", "load_ticket", "save_state", "state_of",
]
