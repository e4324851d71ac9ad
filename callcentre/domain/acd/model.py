"""The distributor's vocabulary: agents, waiting calls, offers, decisions, states and their transitions.

Values only (frozen dataclasses and enums) plus the working records the distributor keeps per agent,
call and offer. Nothing here decides anything; :mod:`.selection` chooses, :mod:`.distributor` acts.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Union
from zoneinfo import ZoneInfo

from callcentre.config import BusinessHours
from callcentre.domain.acd_metrics import Alert, MetricsSnapshot
from callcentre.domain.patterns import INTERFACE, TOKEN

_OFFER_PREFIX = re.compile(r"^[A-Za-z0-9\-]{1,16}\Z")


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------
class AcdError(Exception):
    """Base of the distributor's errors; the message is meant for the API's caller."""


class IllegalTransition(AcdError):
    def __init__(
        self, agent_id: str, event: str, state: "AgentState", allowed: Iterable["AgentState"]
    ) -> None:
        names = ", ".join(sorted(s.value for s in allowed)) or "none"
        super().__init__(f"agent {agent_id}: cannot {event} while {state.value} (allowed from: {names})")
        self.agent_id = agent_id
        self.event = event
        self.state = state


class IllegalOfferTransition(AcdError):
    def __init__(self, offer_id: str, event: str, state: "OfferState") -> None:
        super().__init__(f"offer {offer_id}: cannot {event} while {state.value}")
        self.offer_id = offer_id
        self.event = event
        self.state = state


class UnknownAgent(AcdError, LookupError):
    pass


class UnknownCall(AcdError, LookupError):
    pass


class UnknownOffer(AcdError, LookupError):
    pass


class DuplicateCall(AcdError):
    pass


# ---------------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------------
class AgentState(str, enum.Enum):
    LOGGED_OUT = "logged_out"
    READY = "ready"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


class PauseReason(str, enum.Enum):
    BREAK = "break"
    LUNCH = "lunch"
    TRAINING = "training"
    MISSED_CALLS = "missed_calls"
    OTHER = "other"


class PriorityLevel(enum.IntEnum):
    NORMAL = 0
    VIP = 1
    REPEAT = 2
    EMERGENCY = 3


class WithdrawReason(str, enum.Enum):
    ABANDONED = "abandoned"  # the caller hung up
    MAX_WAIT = "max_wait"  # sent to voicemail after the maximum wait
    NO_AGENTS = "no_agents"
    CLOSED = "closed"
    TRANSFERRED = "transferred"
    OTHER = "other"


class OfferState(str, enum.Enum):
    OFFERED = "offered"  # decided, Dial not yet seen ringing
    RINGING = "ringing"  # DialBegin seen
    ANSWERED = "answered"
    ENDED = "ended"  # the answered call is over
    MISSED = "missed"  # rang out (two rings) unanswered
    FAILED = "failed"  # the phone refused (busy, unreachable)
    CANCELLED = "cancelled"  # taken back: the caller left, the agent paused, someone else answered

    @property
    def is_open(self) -> bool:
        return self in OPEN_OFFER


OPEN_OFFER = frozenset({OfferState.OFFERED, OfferState.RINGING})
_O = OfferState
# event -> {from state: to state}: every change of an offer's state is one of these (named after the
# event that causes it); anything else is a bug and raises IllegalOfferTransition.
OFFER_TRANSITIONS: dict[str, dict[OfferState, OfferState]] = {
    "ringing": {_O.OFFERED: _O.RINGING},  # DialBegin: the ring deadline now runs from here
    "answered": {_O.OFFERED: _O.ANSWERED, _O.RINGING: _O.ANSWERED},
    "call_ended": {_O.ANSWERED: _O.ENDED},
    "rang_out": {_O.OFFERED: _O.MISSED, _O.RINGING: _O.MISSED},
    "refused": {_O.OFFERED: _O.FAILED, _O.RINGING: _O.FAILED},
    "cancelled": {_O.OFFERED: _O.CANCELLED, _O.RINGING: _O.CANCELLED},
}


class TimerKind(str, enum.Enum):
    """What a timer of the distributor is for; :meth:`Distributor.tick` fires each kind's handler."""

    WRAPUP = "wrapup"  # ref: agent id; the wrap-up is over -> READY
    RING = "ring"  # ref: offer id; the ring deadline (two rings, one more cycle before DialBegin)
    MAXWAIT = "maxwait"  # ref: call id; the caller has waited max_wait_seconds
    ANNOUNCE = "announce"  # ref: call id; position and expected wait again


@dataclass(frozen=True, slots=True)
class Agent:
    """A person who answers calls; validated so a bad record fails when it is loaded, not when dialled."""

    agent_id: str
    name: str
    login: str
    interface: str
    skills: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    vip_capable: bool = False
    senior: bool = False

    def __post_init__(self) -> None:
        if not self.agent_id or len(self.agent_id) > 64 or any(c in self.agent_id for c in "\r\n"):
            raise ValueError(f"agent_id {self.agent_id!r}: 1-64 characters, no line breaks")
        if not INTERFACE.match(self.interface):
            raise ValueError(
                f"agent {self.agent_id}: interface {self.interface!r} must look like Local/8001@agents,"
                " SIP/8001 or PJSIP/8001 (no spaces, '&', ',' or '|')"
            )
        for kind, values in (("skill", self.skills), ("language", self.languages)):
            for v in values:
                if not TOKEN.match(v):
                    raise ValueError(f"agent {self.agent_id}: {kind} {v!r} must be a lower-case token")


@dataclass(frozen=True, slots=True)
class OnlyFor:
    """Who may be offered a transferred call: one agent, or the agents with a skill (a skill group).

    A call with this restriction is never offered to anyone else, and never twice to the same agent;
    when nobody of the target is left to try, the distributor says so (:class:`TargetUnavailable`)
    and the adapter decides what happens next (``transfers.no_answer``)."""

    agent_id: str | None = None
    skill: str | None = None

    def __post_init__(self) -> None:
        if (self.agent_id is None) == (self.skill is None):
            raise ValueError("a transfer target is exactly one agent or one skill")
        if self.skill is not None and not TOKEN.match(self.skill):
            raise ValueError(f"skill {self.skill!r} must be a lower-case token")

    def describe(self) -> str:
        return f"agent:{self.agent_id}" if self.agent_id is not None else f"skill:{self.skill}"


@dataclass(frozen=True, slots=True)
class WaitingCall:
    """A caller who asked for a person. ``entered_at`` is wall time (aware) of entering the queue.

    A transferred call names its offers ``<call id>#<offer_prefix><n>`` so they never clash with the
    call's earlier ones; with a prefix it may come back under a call id that was answered before (a
    blind transfer keeps the caller's uniqueid) and is not counted again as a call in the day's call
    figures (its offers are). With ``only`` it waits for that target alone, hears no announcements and
    is given up on after ``target_wait_seconds``."""

    call_id: str
    uniqueid: str
    caller_id: str | None
    owner_id: int | None
    language: str | None
    required_skill: str | None
    priority_level: PriorityLevel
    entered_at: datetime
    previous_agent_id: str | None = None
    caller_name: str = ""
    unit: str = ""
    callback: bool = False
    only: OnlyFor | None = None
    offer_prefix: str = ""
    target_wait_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.offer_prefix and not _OFFER_PREFIX.match(self.offer_prefix):
            raise ValueError(f"offer_prefix {self.offer_prefix!r}: letters, digits and '-' only")
        if not self.call_id or any(c in self.call_id for c in "\r\n"):
            raise ValueError("call_id must be non-empty without line breaks")
        if self.entered_at.tzinfo is None:
            raise ValueError("entered_at must be timezone-aware")
        for kind, v in (("language", self.language), ("skill", self.required_skill)):
            if v is not None and not TOKEN.match(v):
                raise ValueError(f"call {self.call_id}: {kind} {v!r} must be a lower-case token")


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring one agent for one call. ``caller_display`` is already stripped of quotes and line breaks."""

    offer_id: str
    call_id: str
    agent_id: str
    interface: str
    ring_timeout_seconds: float
    caller_display: str
    uniqueid: str = ""
    callback: bool = False


@dataclass(frozen=True, slots=True)
class StateChange:
    """One agent transition, for the adapter to persist (reports, restore after restart)."""

    agent_id: str
    from_state: AgentState
    to_state: AgentState
    event: str
    reason: str
    at: datetime


# -- decisions ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MakeOffer:
    offer: Offer


@dataclass(frozen=True, slots=True)
class CancelOffer:
    """Stop ringing the agent (hang up the agent leg); the call, if still there, was re-queued."""

    offer_id: str
    call_id: str
    agent_id: str
    interface: str
    reason: str


@dataclass(frozen=True, slots=True)
class Announce:
    call_id: str
    uniqueid: str
    position: int
    expected_wait_seconds: float | None


@dataclass(frozen=True, slots=True)
class MaxWaitReached:
    """The caller has waited ``max_wait_seconds``: offer voicemail, then :meth:`Distributor.withdraw`."""

    call_id: str
    uniqueid: str
    waited_seconds: float


@dataclass(frozen=True, slots=True)
class AgentPaused:
    agent_id: str
    reason: PauseReason
    at: datetime
    automatic: bool


@dataclass(frozen=True, slots=True)
class NoAgentAvailable:
    """Nobody is staffed (logged in and not paused): tell the caller at once (reason: closed/no_agents)."""

    call_id: str
    uniqueid: str
    reason: str


@dataclass(frozen=True, slots=True)
class TargetUnavailable:
    """A transferred call's target cannot take it: nobody of it is staffed (``not_staffed``), everyone
    of it who is staffed let it ring out or refused it (``missed``), or ``target_wait_seconds`` passed
    (``timeout``). The call keeps waiting (music) until the adapter retargets or withdraws it."""

    call_id: str
    uniqueid: str
    target: OnlyFor
    reason: str


@dataclass(frozen=True, slots=True)
class RingOnDuty:
    """Outside business hours with nobody staffed, an emergency rings the on-duty interface."""

    call_id: str
    uniqueid: str
    interface: str


Decision = Union[
    MakeOffer, CancelOffer, Announce, MaxWaitReached, Alert, AgentPaused, NoAgentAvailable, RingOnDuty,
    TargetUnavailable,
]


def offers_in(decisions: Iterable[Decision]) -> list[Offer]:
    return [d.offer for d in decisions if isinstance(d, MakeOffer)]


@dataclass(frozen=True, slots=True)
class WithdrawResult:
    call_id: str
    reason: WithdrawReason
    waited_seconds: float
    offers: int
    cancelled_offer_id: str | None
    already_withdrawn: bool
    decisions: tuple[Decision, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueEntry:
    call_id: str
    uniqueid: str
    caller_id: str | None
    priority: str
    position: int
    waited_seconds: float
    callback: bool
    required_skill: str | None
    language: str | None
    ringing_agent_id: str | None
    target: str | None = None  # a transferred call's target ("agent:7", "skill:repair"), else None


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    name: str
    state: AgentState
    pause_reason: PauseReason | None
    seconds_in_state: float
    current_call_id: str | None
    busy_elsewhere: bool
    answered_today: int
    missed_today: int
    offers_today: int
    two_ring_share: float | None


@dataclass(frozen=True, slots=True)
class AcdSnapshot:
    at: datetime
    queue: tuple[QueueEntry, ...]
    agents: tuple[AgentView, ...]
    metrics: MetricsSnapshot


# ---------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------
def classify_priority(
    *, emergency: bool, vip: bool, last_call_at: datetime | None, now: datetime, repeat_caller_hours: float
) -> PriorityLevel:
    """The caller's level: emergency, then a repeat caller (called within the window), then VIP."""
    if emergency:
        return PriorityLevel.EMERGENCY
    if last_call_at is not None and repeat_caller_hours > 0:
        if timedelta(0) <= now - last_call_at <= timedelta(hours=repeat_caller_hours):
            return PriorityLevel.REPEAT
    return PriorityLevel.VIP if vip else PriorityLevel.NORMAL


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def business_hours_open(hours: BusinessHours, timezone: str, at: datetime) -> bool:
    """True inside opening hours (local time); a close before the open means the window spans midnight."""
    local = at.astimezone(ZoneInfo(timezone))
    t = local.hour * 60 + local.minute
    start, end = _minutes(hours.open), _minutes(hours.close)
    if start < end:
        return local.weekday() in hours.days and start <= t < end
    prev_day = (local.weekday() - 1) % 7
    return (local.weekday() in hours.days and t >= start) or (prev_day in hours.days and t < end)


_DISPLAY_DROP = re.compile(r"[\x00-\x1f\x7f\"<>\\;|&]")


def caller_display(call: WaitingCall) -> str:
    """What the agent's phone shows: name and unit, else the number; nothing that could break quoting."""
    parts = [p for p in (call.caller_name.strip(), call.unit.strip()) if p]
    text = " ".join(parts) if parts else (call.caller_id or "unknown")
    return _DISPLAY_DROP.sub("", text)[:64].strip() or "unknown"


# ---------------------------------------------------------------------------------------------------
# Agent state machine
# ---------------------------------------------------------------------------------------------------
_S = AgentState
# event -> {from state: allowed to-states}. Everything not listed raises IllegalTransition.
TRANSITIONS: dict[str, dict[AgentState, frozenset[AgentState]]] = {
    "login": {_S.LOGGED_OUT: frozenset({_S.READY, _S.PAUSED})},
    "ready": {_S.PAUSED: frozenset({_S.READY}), _S.WRAP_UP: frozenset({_S.READY})},
    "pause": {s: frozenset({_S.PAUSED}) for s in (_S.READY, _S.RINGING, _S.WRAP_UP, _S.PAUSED)},
    "unpause": {_S.PAUSED: frozenset({_S.READY})},
    "logout": {s: frozenset({_S.LOGGED_OUT}) for s in (_S.READY, _S.RINGING, _S.WRAP_UP, _S.PAUSED)},
    "offer_ringing": {_S.READY: frozenset({_S.RINGING})},
    "offer_answered": {_S.RINGING: frozenset({_S.ON_CALL})},
    # The agent answered just after we gave up on the offer: reality wins.
    "late_answer": {_S.READY: frozenset({_S.ON_CALL}), _S.PAUSED: frozenset({_S.ON_CALL})},
    "offer_missed": {_S.RINGING: frozenset({_S.READY, _S.PAUSED})},
    "offer_cancelled": {_S.RINGING: frozenset({_S.READY})},
    "call_ended": {_S.ON_CALL: frozenset({_S.WRAP_UP})},
    "wrapup_done": {_S.WRAP_UP: frozenset({_S.READY})},
    "busy_elsewhere": {_S.READY: frozenset({_S.ON_CALL})},
    "free_elsewhere": {_S.ON_CALL: frozenset({_S.READY})},
}
STAFFED = frozenset({_S.READY, _S.RINGING, _S.ON_CALL, _S.WRAP_UP})


# ---------------------------------------------------------------------------------------------------
# The distributor's working records (mutable; not part of the API)
# ---------------------------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class AgentRecord:
    agent: Agent
    seq: int  # registration order: the last tie-break among equally idle agents
    state: AgentState = AgentState.LOGGED_OUT
    pause_reason: PauseReason | None = None
    since_mono: float = 0.0
    idle_since: float = 0.0  # monotonic; the longest-idle ordering
    token: int = 0  # bumps whenever index entries must be forgotten
    offer_id: str | None = None
    call_id: str | None = None
    missed_in_row: int = 0
    elsewhere: set[str] = field(default_factory=set)
    wrapup_token: int = 0
    answered_mono: float | None = None
    keys: tuple[tuple[str, ...], ...] = ()  # the selection index slots this agent sits in while READY
    call_tiers: tuple[tuple[tuple[str, ...], ...], ...] = ()  # where this agent looks for a waiting call
    indexed: bool = False

    @property
    def eligible(self) -> bool:
        return self.state is AgentState.READY and not self.elsewhere


@dataclass(slots=True, eq=False)
class CallRecord:
    call: WaitingCall
    seq: int  # arrival order
    entered_mono: float
    token: int = 0
    offer_id: str | None = None
    offers: int = 0
    missed_by: set[str] = field(default_factory=set)
    max_wait_fired: bool = False
    keys: tuple[tuple[object, ...], ...] = ()  # the selection index slots while waiting unoffered
    agent_tiers: tuple[tuple[str, ...], ...] = ()  # where this call looks for a READY agent, best first
    indexed: bool = False
    counted: bool = True  # counted in the day's call figures (a transferred call was counted already)
    wait_version: int = 0  # bumps when the call is retargeted: a MAXWAIT timer armed before is stale
    target_given_up: bool = False  # TargetUnavailable was decided for its current target

    @property
    def order_key(self) -> tuple[int, int]:
        """The queue's order (positions): priority level first, then arrival."""
        return (-int(self.call.priority_level), self.seq)


@dataclass(slots=True, eq=False)
class OfferRecord:
    offer: Offer
    state: OfferState
    made_at: datetime
    made_mono: float
    deadline: float
    version: int = 0  # bumps on every transition: a timer armed for an older version is stale
    ring_start: datetime | None = None
    agent_prev_idle: float = 0.0
