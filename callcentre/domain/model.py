"""Plain value types shared by the domain and its adapters."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime


class TicketKind(str, enum.Enum):
    REPAIR = "repair"
    COMPLAINT = "complaint"
    EMERGENCY = "emergency"
    MESSAGE = "message"  # voice message left when nobody could answer
    ENQUIRY = "enquiry"


class Priority(str, enum.Enum):
    GENERAL = "general"
    MAJOR = "major"


class TicketStatus(str, enum.Enum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"

    @property
    def is_open(self) -> bool:
        return self not in (TicketStatus.RESOLVED, TicketStatus.CLOSED)


@dataclass(frozen=True, slots=True)
class OwnerMatch:
    """One owner at one unit, as found by a phone number or a unit look-up."""

    owner_id: int
    owner_name: str
    unit_id: int
    building: str
    unit: str
    fee_balance_cents: int  # amount owed; 0 or negative means nothing owed
    fee_due_date: date | None
    vip: bool = False
    language: str | None = None  # preferred IVR language, if known
    has_pin: bool = False


@dataclass(frozen=True, slots=True)
class TicketDraft:
    """What the IVR (or an agent) knows when it asks for a ticket."""

    kind: TicketKind
    category: str
    priority: Priority
    caller_id_raw: str
    caller_id: str | None  # normalised, None when withheld/unknown
    call_uniqueid: str
    call_linkedid: str | None = None
    owner_id: int | None = None
    unit_id: int | None = None
    caller_name: str | None = None
    voice_file: str | None = None
    ivr_path: str = ""  # digits pressed, e.g. "2>1>rec"
    channel: str | None = None
    description: str | None = None
    # Why a ticket is made: "ivr", "agent", "fallback", "voicemail"…
    source: str = "ivr"
    # The hotline the call came in on (domain/hotlines.py); None: the configuration's default hotline.
    hotline: str | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    number: str
    kind: TicketKind
    category: str
    priority: Priority
    status: TicketStatus
    caller_id_raw: str
    caller_id: str | None
    call_uniqueid: str | None
    call_linkedid: str | None
    owner_id: int | None
    unit_id: int | None
    voice_file: str | None
    ivr_path: str
    created_at: datetime
    promised_by: datetime | None
    description: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    hotline: str | None = None
