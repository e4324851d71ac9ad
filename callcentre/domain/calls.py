"""What the IVR and call distribution share about a call: what was learnt, how it ended, and the
shielded ticket commit both use when they promise something to a caller.

Kept apart from the IVR so that call distribution (``callcentre.distribution``) and the wait script
(:mod:`callcentre.domain.waiting`) do not import the IVR.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Coroutine, TypeVar

from callcentre.domain.hotlines import SHARED_PROMPTS, Hotline
from callcentre.domain.model import OwnerMatch, Priority, Ticket, TicketDraft, TicketKind
from callcentre.domain.ports import StorageUnavailable, TicketStore

T = TypeVar("T")

CALLBACK_CATEGORY = "callback_request"
"""A voice message left for a call-back, and a call-back booked from the queue, are tickets of this category."""


class Outcome(str, enum.Enum):
    DONE = "done"  # the call was fully handled here
    AGENT = "agent"  # handed to an agent (call distribution or the dialplan's queue)
    HUNG_UP = "hung_up"
    MESSAGE = "message"  # nobody can answer now: the caller leaves a voice message (a ticket)


@dataclass
class CallInfo:
    """What the IVR has learnt about the call so far; handed to the agent connector (screen-pop)."""

    uniqueid: str
    channel: str
    caller_id_raw: str
    caller_id: str | None
    caller_name: str
    language: str
    matches: list[OwnerMatch] = field(default_factory=list)
    owner: OwnerMatch | None = None  # the owner/unit the caller was identified as
    path: list[str] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)  # ticket numbers made in this call
    linkedid: str | None = None
    recording: str | None = None  # the file of the recording in progress or last made
    # This call's logger (bound with uniqueid, channel, caller): never shared between calls.
    log: Any = field(default=None, repr=False)
    # The hotline the caller dialled (domain/hotlines.py); None only for calls made up in tests.
    hotline: Hotline | None = field(default=None, repr=False)

    @property
    def hotline_id(self) -> str | None:
        return self.hotline.id if self.hotline is not None else None

    def prompt(self, name: str) -> str:
        """A prompt for the Channel port: ``name`` in the caller's language (``lang/name`` keeps its
        language), from the hotline's own recordings where it has one, else the shared set."""
        prompts = self.hotline.prompts if self.hotline is not None else SHARED_PROMPTS
        return prompts.resolve(name, self.language)

    @property
    def ivr_path(self) -> str:
        return ">".join(self.path)

    @property
    def who(self) -> str | None:
        """Who is calling, for "the agent who answered them last time": the owner, else the number."""
        if self.owner is not None:
            return f"owner:{self.owner.owner_id}"
        return f"phone:{self.caller_id}" if self.caller_id else None

    def ticket_draft(self, kind: TicketKind, category: str, priority: Priority, *, voice_file: str | None = None,
                     source: str = "ivr") -> TicketDraft:
        """A ticket for this call, tied to the caller ID and (when identified) the owner and unit."""
        owner = self.owner
        return TicketDraft(
            kind=kind,
            category=category,
            priority=priority,
            caller_id_raw=self.caller_id_raw,
            caller_id=self.caller_id,
            call_uniqueid=self.uniqueid,
            call_linkedid=self.linkedid,
            owner_id=owner.owner_id if owner else None,
            unit_id=owner.unit_id if owner else None,
            caller_name=self.caller_name or None,
            voice_file=voice_file,
            ivr_path=self.ivr_path,
            channel=self.channel,
            source=source,
            hotline=self.hotline_id,
        )


async def commit_shielded(tickets: TicketStore, draft: TicketDraft, deadline: datetime | None,
                          held: set[asyncio.Task]) -> Ticket:
    """Create the ticket in a task of its own, shielded: a hang-up or a shutdown that cancels the
    caller's session cannot cut the commit in half. ``held`` keeps the task until it is done (so a
    drain can wait for it). Raises StorageUnavailable. The task starts before this first awaits."""
    return await asyncio.shield(hold(tickets.create_ticket(draft, deadline), held))


def hold(work: Coroutine[Any, Any, T], held: set[asyncio.Task]) -> asyncio.Task[T]:
    """Start ``work`` in a task of its own, kept in ``held`` until it is done (so a drain can wait for it)."""
    task = asyncio.ensure_future(work)
    held.add(task)
    task.add_done_callback(held.discard)
    return task


async def acknowledged(tickets: TicketStore, ticket: Ticket, clog: Any) -> None:
    """Record that the caller heard the ticket through to its end (an audit mark; best effort)."""
    try:
        await tickets.mark_acknowledged(ticket.id)
    except StorageUnavailable as exc:
        clog.warning("ticket not marked as told to the caller", ticket=ticket.number, error=str(exc))


__all__ = ["CALLBACK_CATEGORY", "CallInfo", "Outcome", "acknowledged", "commit_shielded", "hold"]
