"""Tickets at the desk: listing, reading, creating (with the promise) and changing them.

A status change always goes through the ticket lifecycle (:class:`callcentre.service.tickets.TicketService`):
it is checked, recorded with who and when, and has its consequences (the dispatch webhook; on
resolve, the closure call-back to the owner). A ticket solved while the caller is still on the line
is created, acknowledged, then resolved at first contact: the same path as any other ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from callcentre.config import Config
from callcentre.domain.errors import Invalid, TicketNotFound, Unavailable
from callcentre.domain.hotlines import Hotlines
from callcentre.domain.lifecycle import Acknowledge, ConfirmClosed, Dispatch, Reopen, Resolve, StartWork, TicketEvent
from callcentre.domain.model import Priority, TicketDraft, TicketKind, TicketStatus
from callcentre.domain.ports import Clock
from callcentre.domain.promises import promise_deadline
from callcentre.domain.service import DispatchInvalid
from callcentre.domain.users import UserRole, UserView
from callcentre.service.tickets import TicketService
from callcentre.storage.desk_repo import DeskRepo

log = structlog.get_logger(__name__)

# What an agent may set from the desk; closing and reopening belong to the service desk (issue 5).
DESK_STATUSES = (
    TicketStatus.ACKNOWLEDGED, TicketStatus.DISPATCHED, TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED,
    TicketStatus.CLOSED, TicketStatus.REOPENED,
)
# Kinds that come with a promise (and must use a configured category).
PROMISED_KINDS = (TicketKind.REPAIR, TicketKind.COMPLAINT, TicketKind.EMERGENCY)
FIRST_CONTACT_NOTE = "resolved at first contact"


@dataclass(frozen=True, slots=True)
class NewDeskTicket:
    """A ticket an agent makes at the desk, its fields already checked for form by the API."""

    kind: TicketKind
    category: str
    priority: Priority
    caller_id_raw: str
    caller_id: str | None
    call_uniqueid: str | None
    owner_id: int | None
    unit_id: int | None
    notes: str | None
    resolved_first_contact: bool = False
    # The hotline (estate) it is for; None: the call's (call_uniqueid), else the default hotline.
    hotline: str | None = None


@dataclass(frozen=True, slots=True)
class TicketChange:
    """A change asked for at the desk: a new status (through the lifecycle), priority, category, a note.

    ``department`` and ``worker`` are for a dispatch; ``first_contact`` marks a resolution during the
    caller's first call."""

    status: TicketStatus | None = None
    priority: Priority | None = None
    category: str | None = None
    note: str | None = None
    first_contact: bool = False
    department: str | None = None
    worker: str | None = None


class DeskTicketService:
    def __init__(self, desk: DeskRepo, lifecycle: TicketService | None, cfg: Config, clock: Clock) -> None:
        self._desk = desk
        self._lifecycle = lifecycle
        self._cfg = cfg
        self._clock = clock

    def categories(self) -> dict[str, list[dict[str, str]]]:
        """The categories an agent may pick, by kind, with the priority each implies."""
        ivr = self._cfg.ivr
        out: dict[str, list[dict[str, str]]] = {}
        for kind, cats in (("repair", ivr.repair_categories), ("complaint", ivr.complaint_categories),
                           ("emergency", ivr.emergency_categories)):
            out[kind] = [{"code": c.code, "priority": c.priority} for c in cats.values()]
        out["enquiry"] = [{"code": "general", "priority": "general"}]
        out["message"] = [{"code": "message", "priority": "general"}]
        return out

    def category_priority(self, kind: TicketKind, category: str) -> Priority | None:
        """The priority a known category implies (None for a free one); a repair, complaint or emergency
        must use a configured category."""
        known = {c["code"]: c["priority"] for c in self.categories().get(kind.value, [])}
        if kind in PROMISED_KINDS and category not in known:
            raise Invalid(f"unknown {kind.value} category {category!r}", code="invalid_category")
        return Priority(known[category]) if category in known else None

    def hotlines(self) -> list[dict[str, Any]]:
        """Every hotline ({id, name}), for the pages' filters and to check a hotline asked for."""
        return Hotlines.from_config(self._cfg).cards()

    def check_hotline(self, hotline: str | None) -> str | None:
        if hotline is not None and hotline not in Hotlines.from_config(self._cfg):
            raise Invalid(f"no hotline {hotline!r}", code="unknown_hotline")
        return hotline

    async def find(self, *, owner_id: int | None, phone: str | None, hotline: str | None = None) -> list[dict[str, Any]]:
        return await self._desk.tickets_for(owner_id=owner_id, phone=phone, hotline=self.check_hotline(hotline))

    async def get(self, number: str) -> dict[str, Any]:
        return await self._desk.get_ticket(number)

    async def create(self, actor: UserView, new: NewDeskTicket) -> dict[str, Any]:
        hotline = self.check_hotline(new.hotline)
        if hotline is None and new.call_uniqueid:
            hotline = await self._desk.call_hotline(new.call_uniqueid)  # the hotline the caller dialled
        draft = TicketDraft(
            kind=new.kind, category=new.category, priority=new.priority, caller_id_raw=new.caller_id_raw,
            caller_id=new.caller_id, call_uniqueid=new.call_uniqueid or "", owner_id=new.owner_id,
            unit_id=new.unit_id, description=new.notes, source="agent", hotline=hotline,
        )
        promised = None
        if new.kind in PROMISED_KINDS:
            promised = promise_deadline(self._cfg.tickets.promises, new.priority, new.category, self._clock.now())
        ticket = await self._desk.create_ticket(draft, promised)
        log.info("ticket created at the desk", ticket=ticket["number"], by=actor.login, uniqueid=new.call_uniqueid)
        if new.resolved_first_contact:
            # Solved while the caller is still on the line: the lifecycle's own path (acknowledged, then
            # resolved at first contact), so the history, the first-contact flag and the closure call-back
            # are the same as for any other ticket.
            number = ticket["number"]
            await self._transition(actor, number, TicketChange(status=TicketStatus.ACKNOWLEDGED))
            await self._transition(actor, number, TicketChange(status=TicketStatus.RESOLVED, note=FIRST_CONTACT_NOTE,
                                                               first_contact=True))
            ticket = await self._desk.get_ticket(number)
        return ticket

    async def update(self, actor: UserView, number: str, change: TicketChange) -> dict[str, Any]:
        """The status first (through the lifecycle, with the note), then priority, category or the note."""
        note = change.note
        if change.status is not None:
            await self._transition(actor, number, change)
            note = None  # recorded with the transition
        return await self._desk.update_ticket(number, priority=change.priority and change.priority.value,
                                              category=change.category, note=note, by=actor.login)

    async def _transition(self, actor: UserView, number: str, change: TicketChange) -> None:
        assert change.status is not None
        if self._lifecycle is None:
            raise Unavailable("the ticket service is not running", code="starting")
        ticket_id = await self._lifecycle.id_for_number(number)
        if ticket_id is None:
            raise TicketNotFound(f"ticket {number} does not exist")
        event = self._event(actor, change)
        if actor.role is UserRole.AGENT:
            await self._lifecycle.set_agent(ticket_id, actor.login)
        await self._lifecycle.apply(ticket_id, event, actor.login, change.note or "")
        log.info("ticket status changed at the desk", ticket=number, status=change.status.value, by=actor.login)

    @staticmethod
    def _event(actor: UserView, change: TicketChange) -> TicketEvent:
        status = change.status
        if status is TicketStatus.DISPATCHED:
            if not isinstance(change.department, str) or not isinstance(change.worker, str):
                raise DispatchInvalid("dispatch needs a department and a worker")
            return Dispatch(change.department, change.worker)
        events: dict[TicketStatus, TicketEvent] = {
            TicketStatus.ACKNOWLEDGED: Acknowledge(),
            TicketStatus.IN_PROGRESS: StartWork(),
            TicketStatus.RESOLVED: Resolve(first_contact=change.first_contact),
            TicketStatus.CLOSED: ConfirmClosed(),
            TicketStatus.REOPENED: Reopen(reason=change.note or f"reopened by {actor.login}"),
        }
        if status not in events:
            raise Invalid(f"status must be one of {', '.join(s.value for s in DESK_STATUSES)}", code="invalid_status")
        return events[status]


__all__ = ["DESK_STATUSES", "FIRST_CONTACT_NOTE", "PROMISED_KINDS", "DeskTicketService", "NewDeskTicket", "TicketChange"]
