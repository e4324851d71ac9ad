"""Automatic call distribution: agents, waiting callers, selection and the two-ring rule.

Pure: events and a :class:`~callcentre.domain.ports.Clock` in, decisions (dataclasses) out. The
adapter turns :class:`MakeOffer` into a Dial/Originate, :class:`CancelOffer` into a hang-up of the
agent leg, and feeds AMI ``DialBegin`` / ``DialEnd`` back as :meth:`Distributor.on_ringing`,
:meth:`~Distributor.on_answered`, :meth:`~Distributor.on_ring_timeout` and
:meth:`~Distributor.on_offer_failed`. Timers (ring deadline, wrap-up, announcements, maximum wait)
fire from :meth:`Distributor.tick`, which the adapter calls about once a second.

Selection, deterministic and in this order
------------------------------------------
1. **Priority** of the waiting call: EMERGENCY > REPEAT (same caller within ``repeat_caller_hours``)
   > VIP > NORMAL; first come, first served within a level. A call keeps its place while it rings an
   agent, after a missed offer and when it becomes a call-back request.
2. **Skill and language** (tiers, first non-empty wins): the IVR skill *and* the caller's language;
   the language only; the skill only; then **any ready agent** (fallback: a caller never waits while
   an agent idles). A call without a skill or language requirement matches every agent on that part.
   Language ranks above skill: an agent who speaks the caller's language can at least take the
   request down.
3. Within the tier, the owner's **previous agent** if READY (``prefer_previous_agent``).
4. Then, for VIP calls, the longest-idle ``vip_capable`` agent of the tier; for EMERGENCY and REPEAT
   calls, the longest-idle ``senior`` agent of the tier.
5. Then the agent **idle longest** (READY the longest; ties by registration order). An agent who
   missed an offer goes to the back (idle since the miss), and is not offered the same call again
   while any other agent is ready, unlike app_queue's ``leastrecent`` in the captures.

When a call arrives the call chooses the agent as above. When an agent becomes free while callers
wait, the agent takes the highest priority level waiting; within it the call best matching the
agent's skills and languages (same tiers), oldest first.

Cost: READY agents are indexed per (skill, language, preference) key in heaps ordered by idle-since,
waiting calls per (level, skill, language) in heaps ordered by arrival; entries are deleted lazily
(a token per entry), so a decision costs O(log n), never a scan of all agents.

Invariant after every public method: no waiting call that is not ringing an agent while an eligible
agent is READY, and no agent holds two offers.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import re
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable, Union
from zoneinfo import ZoneInfo

import structlog

from callcentre.config import ACDConfig, BusinessHours
from callcentre.domain.acd_metrics import AcdMetrics, AgentDayStats, Alert, AlertKind, MetricsSnapshot
from callcentre.domain.ports import Clock

log = structlog.get_logger(__name__)

__all__ = [
    "AcdError",
    "Agent",
    "AgentPaused",
    "AgentState",
    "AgentView",
    "Alert",
    "AlertKind",
    "AcdSnapshot",
    "Announce",
    "CancelOffer",
    "Decision",
    "Distributor",
    "DuplicateCall",
    "IllegalTransition",
    "MakeOffer",
    "MaxWaitReached",
    "MetricsSnapshot",
    "NoAgentAvailable",
    "Offer",
    "PauseReason",
    "PriorityLevel",
    "QueueEntry",
    "RingOnDuty",
    "StateChange",
    "UnknownAgent",
    "UnknownCall",
    "UnknownOffer",
    "WaitingCall",
    "WithdrawReason",
    "WithdrawResult",
    "business_hours_open",
    "classify_priority",
    "offers_in",
]

# Used for the expected-wait estimate until real calls have been handled.
DEFAULT_HANDLE_SECONDS = 180.0
_RECENT_HANDLE_TIMES = 50
_CLOSED_OFFERS_KEPT = 10_000
_FINISHED_CALLS_KEPT = 10_000
_ANY = "*"  # index slot: "whatever the agent/call has"
_NONE = ""  # index slot: the call states no requirement


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
    ENDED = "ended"
    MISSED = "missed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_OPEN_OFFER = (OfferState.OFFERED, OfferState.RINGING)

_TOKEN = re.compile(r"^[a-z0-9_\-]{1,32}$")
# A dial string for one phone: technology/resource. No separators Dial would interpret (& , | ( )),
# no spaces, quotes or line breaks.
_INTERFACE = re.compile(r"^(Local|SIP|PJSIP|IAX2|DAHDI)/[A-Za-z0-9_\-+.@#*]{1,100}$")


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
        if not _INTERFACE.match(self.interface):
            raise ValueError(
                f"agent {self.agent_id}: interface {self.interface!r} must look like Local/8001@agents,"
                " SIP/8001 or PJSIP/8001 (no spaces, '&', ',' or '|')"
            )
        for kind, values in (("skill", self.skills), ("language", self.languages)):
            for v in values:
                if not _TOKEN.match(v):
                    raise ValueError(f"agent {self.agent_id}: {kind} {v!r} must be a lower-case token")


@dataclass(frozen=True, slots=True)
class WaitingCall:
    """A caller who asked for a person. ``entered_at`` is wall time (aware) of entering the queue."""

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

    def __post_init__(self) -> None:
        if not self.call_id or any(c in self.call_id for c in "\r\n"):
            raise ValueError("call_id must be non-empty without line breaks")
        if self.entered_at.tzinfo is None:
            raise ValueError("entered_at must be timezone-aware")
        for kind, v in (("language", self.language), ("skill", self.required_skill)):
            if v is not None and not _TOKEN.match(v):
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
class RingOnDuty:
    """Outside business hours with nobody staffed, an emergency rings the on-duty interface."""

    call_id: str
    uniqueid: str
    interface: str


Decision = Union[
    MakeOffer, CancelOffer, Announce, MaxWaitReached, Alert, AgentPaused, NoAgentAvailable, RingOnDuty
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


def _caller_display(call: WaitingCall) -> str:
    """What the agent's phone shows: name and unit, else the number; nothing that could break quoting."""
    parts = [p for p in (call.caller_name.strip(), call.unit.strip()) if p]
    text = " ".join(parts) if parts else (call.caller_id or "unknown")
    return _DISPLAY_DROP.sub("", text)[:64].strip() or "unknown"


# ---------------------------------------------------------------------------------------------------
# Agent state machine
# ---------------------------------------------------------------------------------------------------
S = AgentState
# event -> {from state: allowed to-states}. Everything not listed raises IllegalTransition.
TRANSITIONS: dict[str, dict[AgentState, frozenset[AgentState]]] = {
    "login": {S.LOGGED_OUT: frozenset({S.READY, S.PAUSED})},
    "ready": {S.PAUSED: frozenset({S.READY}), S.WRAP_UP: frozenset({S.READY})},
    "pause": {s: frozenset({S.PAUSED}) for s in (S.READY, S.RINGING, S.WRAP_UP, S.PAUSED)},
    "unpause": {S.PAUSED: frozenset({S.READY})},
    "logout": {s: frozenset({S.LOGGED_OUT}) for s in (S.READY, S.RINGING, S.WRAP_UP, S.PAUSED)},
    "offer_ringing": {S.READY: frozenset({S.RINGING})},
    "offer_answered": {S.RINGING: frozenset({S.ON_CALL})},
    # The agent answered just after we gave up on the offer: reality wins.
    "late_answer": {S.READY: frozenset({S.ON_CALL}), S.PAUSED: frozenset({S.ON_CALL})},
    "offer_missed": {S.RINGING: frozenset({S.READY, S.PAUSED})},
    "offer_cancelled": {S.RINGING: frozenset({S.READY})},
    "call_ended": {S.ON_CALL: frozenset({S.WRAP_UP})},
    "wrapup_done": {S.WRAP_UP: frozenset({S.READY})},
    "busy_elsewhere": {S.READY: frozenset({S.ON_CALL})},
    "free_elsewhere": {S.ON_CALL: frozenset({S.READY})},
}
_STAFFED = frozenset({S.READY, S.RINGING, S.ON_CALL, S.WRAP_UP})


@dataclass(slots=True, eq=False)
class _AgentRec:
    agent: Agent
    seq: int
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
    keys: tuple[tuple[str, str, str], ...] = ()
    indexed: bool = False

    @property
    def eligible(self) -> bool:
        return self.state is AgentState.READY and not self.elsewhere


@dataclass(slots=True, eq=False)
class _CallRec:
    call: WaitingCall
    seq: int
    entered_mono: float
    token: int = 0
    offer_id: str | None = None
    offers: int = 0
    missed_by: set[str] = field(default_factory=set)
    max_wait_fired: bool = False
    indexed: bool = False

    @property
    def order_key(self) -> tuple[int, int]:
        return (-int(self.call.priority_level), self.seq)


@dataclass(slots=True, eq=False)
class _OfferRec:
    offer: Offer
    state: OfferState
    made_at: datetime
    made_mono: float
    deadline: float
    version: int = 0
    ring_start: datetime | None = None
    agent_prev_idle: float = 0.0


# ---------------------------------------------------------------------------------------------------
# The distributor
# ---------------------------------------------------------------------------------------------------
class _LazyIndex:
    """Heaps per key with lazy deletion, shared by the ready agents and the waiting calls.

    An entry is a tuple ordered by its leading fields and ending in (…, id, token); it is live while
    ``is_live(entry)`` says so (the record is still indexed with that token). Counts per key are exact,
    stale entries are dropped when met at the top, and a heap is compacted once it holds more than four
    times its live entries, so a decision stays O(log n) without ever scanning every record.
    """

    __slots__ = ("_heaps", "_counts", "_is_live")

    def __init__(self, is_live: Callable[[tuple], bool]) -> None:
        self._heaps: dict[tuple, list[tuple]] = {}
        self._counts: dict[tuple, int] = {}
        self._is_live = is_live

    def add(self, keys: Iterable[tuple], entry: tuple) -> None:
        for key in keys:
            heap = self._heaps.setdefault(key, [])
            heapq.heappush(heap, entry)
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if len(heap) > 64 and len(heap) > 4 * count:
                live = [e for e in heap if self._is_live(e)]
                heapq.heapify(live)
                self._heaps[key] = live

    def remove(self, keys: Iterable[tuple]) -> None:
        """The record left the index (its token changed): only the count moves now."""
        for key in keys:
            self._counts[key] -= 1

    def count(self, key: tuple) -> int:
        return self._counts.get(key, 0)

    def peek(self, key: tuple, skip: Callable[[tuple], bool] | None = None) -> tuple | None:
        """The first live entry under ``key`` that ``skip`` does not reject (skipped ones stay)."""
        if not self._counts.get(key):
            return None
        heap = self._heaps[key]
        skipped: list[tuple] = []
        found: tuple | None = None
        while heap:
            e = heap[0]
            if not self._is_live(e):
                heapq.heappop(heap)
                continue
            if skip is not None and skip(e):
                skipped.append(heapq.heappop(heap))
                continue
            found = e
            break
        for e in skipped:
            heapq.heappush(heap, e)
        return found


class Distributor:
    """Owns agent states, the waiting queue and open offers; every method returns decisions."""

    def __init__(self, config: ACDConfig, clock: Clock, timezone: str = "Asia/Shanghai") -> None:
        self.cfg = config
        self.clock = clock
        self.timezone = timezone
        self.metrics = AcdMetrics(config.rings_target, config.ring_cycle_seconds, timezone)
        # Ring times are measured on a steady timeline (wall time at start-up + monotonic seconds), so
        # a wall-clock step (NTP) between DialBegin and DialEnd cannot distort them.
        self._anchor = (clock.now(), clock.monotonic())
        self._agents: dict[str, _AgentRec] = {}
        self._agent_seq = itertools.count()
        self._calls: dict[str, _CallRec] = {}
        self._call_seq = itertools.count()
        self._order: list[tuple[int, int]] = []  # sorted queue order keys of every waiting call
        self._offers: dict[str, _OfferRec] = {}
        self._closed_offers: OrderedDict[str, tuple[OfferState, str]] = OrderedDict()
        self._finished_calls: OrderedDict[str, WithdrawResult | None] = OrderedDict()
        # READY agents: key (skill|*, language|*, pref "" / "vip" / "senior") -> entries
        # (idle_since, seq, agent_id, token).
        self._agent_index = _LazyIndex(self._agent_entry_valid)
        # Waiting calls not ringing anyone: key (level, skill|""|*, language|""|*) -> entries
        # (seq, call_id, token).
        self._call_index = _LazyIndex(self._call_entry_valid)
        self._timers: list[tuple[float, int, str, str, int]] = []
        self._timer_seq = itertools.count()
        self._staffed = 0
        self._handle_times: deque[float] = deque(maxlen=_RECENT_HANDLE_TIMES)
        self._history: list[StateChange] = []

    # ===== agents: registration ==================================================================
    def add_agent(self, agent: Agent) -> None:
        if agent.agent_id in self._agents:
            raise AcdError(f"agent {agent.agent_id} already exists")
        self._agents[agent.agent_id] = _AgentRec(
            agent, next(self._agent_seq), since_mono=self.clock.monotonic(), keys=self._agent_keys(agent)
        )

    def update_agent(self, agent: Agent) -> list[Decision]:
        """Change skills, languages or phone; a READY agent is re-indexed at once."""
        rec = self._agent(agent.agent_id)
        was_ready = rec.indexed
        if was_ready:
            self._unindex_agent(rec)
        rec.agent = agent
        rec.keys = self._agent_keys(agent)
        out: list[Decision] = []
        if was_ready:
            self._index_agent(rec)
            self._dispatch(out, rec)
        return out

    def remove_agent(self, agent_id: str) -> None:
        rec = self._agent(agent_id)
        if rec.state is not AgentState.LOGGED_OUT:
            raise AcdError(f"agent {agent_id}: log out before removing (state {rec.state.value})")
        del self._agents[agent_id]

    def agent(self, agent_id: str) -> Agent:
        return self._agent(agent_id).agent

    def agent_state(self, agent_id: str) -> AgentState:
        return self._agent(agent_id).state

    def take_history(self) -> list[StateChange]:
        """Transitions since the last call, oldest first; the adapter persists them."""
        out, self._history = self._history, []
        return out

    # ===== agents: transitions from the API and AMI =============================================
    def login(self, agent_id: str, pause_reason: PauseReason | None = None) -> list[Decision]:
        rec = self._agent(agent_id)
        out: list[Decision] = []
        if pause_reason is not None:
            self._go(rec, "login", AgentState.PAUSED, pause_reason.value, pause_reason=pause_reason)
        else:
            self._go(rec, "login", AgentState.READY, "login")
            self._became_ready(rec, out)
        return out

    def ready(self, agent_id: str) -> list[Decision]:
        """PAUSED or WRAP_UP -> READY (ends a pause or the wrap-up early)."""
        rec = self._agent(agent_id)
        out: list[Decision] = []
        self._go(rec, "ready", AgentState.READY, "agent ready")
        self._became_ready(rec, out)
        return out

    def agent_ready(self, agent_id: str) -> list[Decision]:
        """Whatever the agent was doing off-line (logged out, paused, wrap-up), make them READY."""
        if self._agent(agent_id).state is AgentState.LOGGED_OUT:
            return self.login(agent_id)
        return self.ready(agent_id)

    def unpause(self, agent_id: str) -> list[Decision]:
        rec = self._agent(agent_id)
        out: list[Decision] = []
        self._go(rec, "unpause", AgentState.READY, "unpause")
        self._became_ready(rec, out)
        return out

    def pause(self, agent_id: str, reason: PauseReason) -> list[Decision]:
        """Pause; a ringing offer is cancelled and its call offered to the next agent at once."""
        rec = self._agent(agent_id)
        reason = PauseReason(reason)
        self._check(rec, "pause")
        out: list[Decision] = []
        if rec.state is AgentState.RINGING:
            self._cancel_offer_for_agent(rec, out, "agent paused")
        self._go(rec, "pause", AgentState.PAUSED, reason.value, pause_reason=reason)
        out.append(AgentPaused(rec.agent.agent_id, reason, self.clock.now(), automatic=False))
        self._dispatch(out)
        return out

    def logout(self, agent_id: str) -> list[Decision]:
        rec = self._agent(agent_id)
        self._check(rec, "logout")
        out: list[Decision] = []
        if rec.state is AgentState.RINGING:
            self._cancel_offer_for_agent(rec, out, "agent logged out")
        self._go(rec, "logout", AgentState.LOGGED_OUT, "logout")
        self._dispatch(out)
        return out

    def busy_elsewhere(self, agent_id: str, channel_ref: str) -> list[Decision]:
        """AMI saw the agent's phone on a call we did not route; idempotent per channel."""
        rec = self._agent(agent_id)
        if channel_ref in rec.elsewhere:
            return []
        was_eligible = rec.eligible
        rec.elsewhere.add(channel_ref)
        if was_eligible:
            self._go(rec, "busy_elsewhere", AgentState.ON_CALL, f"busy on {channel_ref}")
        return []

    def free_elsewhere(self, agent_id: str, channel_ref: str) -> list[Decision]:
        rec = self._agent(agent_id)
        if channel_ref not in rec.elsewhere:
            return []
        rec.elsewhere.discard(channel_ref)
        return self._settle_elsewhere(rec)

    def resync_elsewhere(self, agent_id: str, channel_refs: Iterable[str]) -> list[Decision]:
        """After an AMI reconnect: the complete set of foreign calls the agent's phone is on now."""
        rec = self._agent(agent_id)
        refs = set(channel_refs)
        out: list[Decision] = []
        if refs and rec.eligible:
            rec.elsewhere = refs
            self._go(rec, "busy_elsewhere", AgentState.ON_CALL, "resync")
            return out
        rec.elsewhere = refs
        return self._settle_elsewhere(rec)

    def restore(
        self, agent_id: str, state: AgentState, since: datetime, pause_reason: PauseReason | None = None
    ) -> list[Decision]:
        """Rebuild an agent's state after a restart from the persisted history (no history entry).

        RINGING cannot survive a restart (the offer is gone): it becomes READY. ON_CALL becomes a
        call we no longer route: busy elsewhere until AMI says otherwise (:meth:`resync_elsewhere`).
        READY keeps its idle-since, so the longest-idle order survives; WRAP_UP keeps what is left.
        """
        rec = self._agent(agent_id)
        state = AgentState(state)
        if rec.state is not AgentState.LOGGED_OUT or rec.offer_id is not None:
            raise AcdError(f"agent {agent_id}: restore only before any other event (state {rec.state.value})")
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        elapsed = max(0.0, (self.clock.now() - since).total_seconds())
        mono_since = self.clock.monotonic() - elapsed
        out: list[Decision] = []
        if state is AgentState.LOGGED_OUT:
            return out
        if state is AgentState.PAUSED:
            self._set(rec, AgentState.PAUSED, mono_since, pause_reason or PauseReason.OTHER)
            return out
        if state is AgentState.ON_CALL:
            rec.elsewhere.add("restored")
            self._set(rec, AgentState.ON_CALL, mono_since, None)
            return out
        if state is AgentState.WRAP_UP:
            self._set(rec, AgentState.WRAP_UP, mono_since, None)
            rec.wrapup_token += 1
            self._schedule(mono_since + self.cfg.wrapup_seconds, "wrapup", agent_id, rec.wrapup_token)
            return out
        # READY or RINGING
        self._set(rec, AgentState.READY, mono_since, None)
        rec.idle_since = mono_since
        self._index_agent(rec)
        self._dispatch(out, rec)
        return out

    # ===== calls ==================================================================================
    def enqueue(self, call: WaitingCall) -> list[Decision]:
        """A caller asks for a person: offer at once if an agent is ready, else queue and announce."""
        if call.call_id in self._calls or call.call_id in self._finished_calls:
            raise DuplicateCall(f"call {call.call_id} is already known")
        now_mono = self.clock.monotonic()
        rec = _CallRec(call, next(self._call_seq), now_mono)
        self._calls[call.call_id] = rec
        insort(self._order, rec.order_key)
        self._index_call(rec)
        self.metrics.call_entered(call.call_id, call.entered_at)
        clog = log.bind(uniqueid=call.uniqueid, call_id=call.call_id)
        clog.info("caller queued", priority=call.priority_level.name.lower(), skill=call.required_skill)
        if not call.callback:
            self._schedule(now_mono + self.cfg.max_wait_seconds, "maxwait", call.call_id, 0)
            self._schedule(now_mono + self.cfg.announce_every_seconds, "announce", call.call_id, 0)
        out: list[Decision] = []
        self._dispatch(out)
        if rec.offer_id is None and not call.callback:
            if self._staffed == 0:
                open_now = business_hours_open(self.cfg.business_hours, self.timezone, self.clock.now())
                out.append(
                    NoAgentAvailable(call.call_id, call.uniqueid, "no_agents" if open_now else "closed")
                )
                if (
                    not open_now
                    and call.priority_level is PriorityLevel.EMERGENCY
                    and self.cfg.on_duty_interface
                ):
                    out.append(RingOnDuty(call.call_id, call.uniqueid, self.cfg.on_duty_interface))
            else:
                out.append(
                    Announce(
                        call.call_id,
                        call.uniqueid,
                        self.position(call.call_id),
                        self.expected_wait(call.call_id),
                    )
                )
        return out

    def request_callback(self, call_id: str) -> int:
        """The caller pressed the call-back key: same place in the queue; returns the position."""
        rec = self._call(call_id)
        if not rec.call.callback:
            rec.call = replace(rec.call, callback=True)
            log.info("call-back requested", uniqueid=rec.call.uniqueid, call_id=call_id)
        return self.position(call_id)

    def withdraw(self, call_id: str, reason: WithdrawReason, at: datetime | None = None) -> WithdrawResult:
        """The call leaves the queue unanswered; a ringing offer is cancelled without a missed count."""
        reason = WithdrawReason(reason)
        if call_id in self._finished_calls:
            prev = self._finished_calls[call_id]
            return WithdrawResult(
                call_id, reason, prev.waited_seconds if prev else 0.0, prev.offers if prev else 0, None, True
            )
        rec = self._call(call_id)
        at = at or self.clock.now()
        out: list[Decision] = []
        cancelled: str | None = None
        if rec.offer_id is not None:
            orec = self._offers[rec.offer_id]
            cancelled = orec.offer.offer_id
            self._close_offer(orec, OfferState.CANCELLED)
            arec = self._agents.get(orec.offer.agent_id)
            out.append(
                CancelOffer(cancelled, call_id, orec.offer.agent_id, orec.offer.interface, reason.value)
            )
            rec.offer_id = None
            if arec is not None and arec.offer_id == cancelled:
                self._agent_offer_cancelled(arec, orec, out)
        waited = max(0.0, self.clock.monotonic() - rec.entered_mono)
        self._remove_call(rec)
        if reason is WithdrawReason.ABANDONED:
            self.metrics.call_abandoned(call_id, rec.call.entered_at, at)
        else:
            self.metrics.call_deflected(call_id, rec.call.entered_at)
        log.info(
            "caller left queue",
            uniqueid=rec.call.uniqueid,
            call_id=call_id,
            reason=reason.value,
            waited=round(waited, 3),
        )
        self._dispatch(out)
        result = WithdrawResult(call_id, reason, waited, rec.offers, cancelled, False, tuple(out))
        self._remember_finished(call_id, result)
        return result

    # ===== offers: events from AMI ================================================================
    def on_ringing(self, offer_id: str, at: datetime | None = None) -> list[Decision]:
        """DialBegin for the offer: the ring starts now; the ring deadline is measured from here."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state is OfferState.OFFERED:
            orec.state = OfferState.RINGING
            orec.ring_start = self._steady_of(at)
            orec.version += 1
            orec.deadline = self.clock.monotonic() + self.cfg.ring_timeout_seconds
            self._schedule(orec.deadline, "ring", offer_id, orec.version)
        return []

    def on_answered(self, offer_id: str, at: datetime | None = None) -> list[Decision]:
        """DialEnd ANSWER: the agent has the caller; measurements are taken from ``at``."""
        at = at or self.clock.now()
        orec = self._offers.get(offer_id)
        if orec is None:
            return self._late_answer(offer_id, at)
        if orec.state not in _OPEN_OFFER:
            return []  # replayed
        out: list[Decision] = []
        crec = self._calls[orec.offer.call_id]
        arec = self._agents[orec.offer.agent_id]
        orec.state = OfferState.ANSWERED
        orec.version += 1
        self._answered(orec, crec, arec, at, out)
        arec.missed_in_row = 0
        self._go(arec, "offer_answered", AgentState.ON_CALL, f"answered {crec.call.call_id}")
        return out

    def on_ring_timeout(self, offer_id: str) -> list[Decision]:
        """DialEnd NOANSWER (or our own deadline): the next agent is offered the call at once."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state not in _OPEN_OFFER:
            return []
        out: list[Decision] = []
        self._missed(orec, out, OfferState.MISSED, "ring timeout", pause_now=False)
        return out

    def on_offer_failed(self, offer_id: str, status: str) -> list[Decision]:
        """DialEnd BUSY/CONGESTION/CHANUNAVAIL…: a missed offer; an unreachable phone pauses at once."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state not in _OPEN_OFFER:
            return []
        status = (status or "").strip().upper()
        if status == "ANSWER":
            return self.on_answered(offer_id)
        if status == "NOANSWER":
            return self.on_ring_timeout(offer_id)
        out: list[Decision] = []
        if status == "CANCEL":
            # The caller hung up while the agent's phone rang: not the agent's fault.
            crec = self._calls.get(orec.offer.call_id)
            arec = self._agents[orec.offer.agent_id]
            self._close_offer(orec, OfferState.CANCELLED)
            if crec is not None:
                crec.offer_id = None
                self._index_call(crec)
            self._agent_offer_cancelled(arec, orec, out)
            self._dispatch(out)
            return out
        self._missed(
            orec, out, OfferState.FAILED, status.lower() or "failed", pause_now=status == "CHANUNAVAIL"
        )
        return out

    def on_call_ended(self, offer_id: str, at: datetime | None = None) -> list[Decision]:
        """The answered call is over: the agent wraps up for ``wrapup_seconds`` before the next offer."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state is not OfferState.ANSWERED:
            raise AcdError(f"offer {offer_id} was not answered (state {orec.state.value})")
        out: list[Decision] = []
        self._close_offer(orec, OfferState.ENDED)
        arec = self._agents.get(orec.offer.agent_id)
        if arec is None or arec.offer_id != offer_id:
            return out
        now = self.clock.monotonic()
        if arec.answered_mono is not None:
            self._handle_times.append(now - arec.answered_mono + self.cfg.wrapup_seconds)
        arec.answered_mono = None
        arec.offer_id = arec.call_id = None
        self._go(arec, "call_ended", AgentState.WRAP_UP, "call ended")
        arec.wrapup_token += 1
        if self.cfg.wrapup_seconds <= 0:
            self._go(arec, "wrapup_done", AgentState.READY, "no wrap-up")
            self._became_ready(arec, out)
        else:
            self._schedule(now + self.cfg.wrapup_seconds, "wrapup", arec.agent.agent_id, arec.wrapup_token)
        return out

    # ===== time ===================================================================================
    def tick(self, now: float | None = None) -> list[Decision]:
        """Fire due timers (monotonic seconds): wrap-ups, ring deadlines, max waits, announcements."""
        now = self.clock.monotonic() if now is None else now
        out: list[Decision] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, kind, ref, version = heapq.heappop(timers)
            if kind == "wrapup":
                arec = self._agents.get(ref)
                if arec and arec.state is AgentState.WRAP_UP and arec.wrapup_token == version:
                    self._go(arec, "wrapup_done", AgentState.READY, "wrap-up over")
                    self._became_ready(arec, out)
            elif kind == "ring":
                orec = self._offers.get(ref)
                if orec and orec.state in _OPEN_OFFER and orec.version == version:
                    out.append(
                        CancelOffer(
                            ref, orec.offer.call_id, orec.offer.agent_id, orec.offer.interface, "ring timeout"
                        )
                    )
                    self._missed(orec, out, OfferState.MISSED, "ring timeout", pause_now=False)
            elif kind == "maxwait":
                crec = self._calls.get(ref)
                if crec and not crec.call.callback and not crec.max_wait_fired:
                    if crec.offer_id is not None:
                        self._schedule(due + self.cfg.ring_timeout_seconds, "maxwait", ref, 0)
                    else:
                        crec.max_wait_fired = True
                        out.append(MaxWaitReached(ref, crec.call.uniqueid, now - crec.entered_mono))
            elif kind == "announce":
                crec = self._calls.get(ref)
                if crec and not crec.call.callback:
                    self._schedule(due + self.cfg.announce_every_seconds, "announce", ref, 0)
                    if crec.offer_id is None:
                        out.append(
                            Announce(ref, crec.call.uniqueid, self.position(ref), self.expected_wait(ref))
                        )
        return out

    def next_timer(self) -> float | None:
        """Monotonic time of the earliest pending timer (stale ones included), for the adapter's sleep."""
        return self._timers[0][0] if self._timers else None

    # ===== reading ================================================================================
    def position(self, call_id: str) -> int:
        """1-based place in the queue (calls ringing an agent keep theirs)."""
        rec = self._call(call_id)
        return bisect_left(self._order, rec.order_key) + 1

    def expected_wait(self, call_id: str) -> float | None:
        """Rough estimate in seconds, or None when nobody is staffed.

        Each staffed agent frees up once per recent average handle time (talk + wrap-up, last 50
        calls; 180 s until known) at a random moment, so the caller at position p waits about
        AHT × ((p − 1) / staffed + 0.5). Zero when an agent is ready now.
        """
        pos = self.position(call_id)
        if self._ready_count() > 0:
            return 0.0
        if self._staffed == 0:
            return None
        aht = (
            sum(self._handle_times) / len(self._handle_times)
            if self._handle_times
            else DEFAULT_HANDLE_SECONDS
        )
        return round(aht * ((pos - 1) / self._staffed + 0.5), 1)

    def waiting_count(self) -> int:
        return len(self._calls)

    def ready_count(self) -> int:
        return self._ready_count()

    def staffed_count(self) -> int:
        return self._staffed

    def offer(self, offer_id: str) -> Offer:
        orec = self._offers.get(offer_id)
        if orec is None:
            raise UnknownOffer(f"offer {offer_id} is not open")
        return orec.offer

    def metrics_snapshot(self, day: datetime | None = None) -> MetricsSnapshot:
        now_mono = self.clock.monotonic()
        d = self.metrics.local_day(day or self.clock.now())
        today = self.metrics.local_day(self.clock.now())
        waits = [now_mono - c.entered_mono for c in self._calls.values()] if d == today else []
        return self.metrics.snapshot(d, waits)

    def snapshot(self) -> AcdSnapshot:
        """Queue with positions and waits, agents with state and today's figures (for API/wallboard)."""
        now = self.clock.now()
        now_mono = self.clock.monotonic()
        today = self.metrics.local_day(now)
        calls = sorted(self._calls.values(), key=lambda c: c.order_key)
        queue = tuple(
            QueueEntry(
                c.call.call_id,
                c.call.uniqueid,
                c.call.caller_id,
                c.call.priority_level.name.lower(),
                i + 1,
                round(now_mono - c.entered_mono, 3),
                c.call.callback,
                c.call.required_skill,
                c.call.language,
                self._offers[c.offer_id].offer.agent_id if c.offer_id else None,
            )
            for i, c in enumerate(calls)
        )
        agents = []
        for a in sorted(self._agents.values(), key=lambda r: r.seq):
            st: AgentDayStats = self.metrics.agent_stats(a.agent.agent_id, today)
            agents.append(
                AgentView(
                    a.agent.agent_id,
                    a.agent.name,
                    a.state,
                    a.pause_reason,
                    round(now_mono - a.since_mono, 3),
                    a.call_id,
                    bool(a.elsewhere),
                    st.answered,
                    st.missed,
                    st.offers,
                    st.two_ring_share,
                )
            )
        return AcdSnapshot(now, queue, tuple(agents), self.metrics_snapshot())

    # ===== internals: lookups =====================================================================
    def _agent(self, agent_id: str) -> _AgentRec:
        rec = self._agents.get(agent_id)
        if rec is None:
            raise UnknownAgent(f"no agent {agent_id!r}")
        return rec

    def _call(self, call_id: str) -> _CallRec:
        rec = self._calls.get(call_id)
        if rec is None:
            raise UnknownCall(f"no waiting call {call_id!r}")
        return rec

    def _known_offer(self, offer_id: str) -> None:
        """A replayed event for a closed offer is fine; an offer we never made is an error."""
        if offer_id not in self._closed_offers:
            raise UnknownOffer(f"no offer {offer_id!r}")

    # ===== internals: state machine ===============================================================
    def _check(self, rec: _AgentRec, event: str, to: AgentState | None = None) -> None:
        allowed = TRANSITIONS[event]
        targets = allowed.get(rec.state)
        if targets is None or (to is not None and to not in targets):
            raise IllegalTransition(rec.agent.agent_id, event, rec.state, allowed)

    def _go(
        self, rec: _AgentRec, event: str, to: AgentState, reason: str, pause_reason: PauseReason | None = None
    ) -> None:
        self._check(rec, event, to)
        frm = rec.state
        if frm is AgentState.READY and to is not AgentState.READY:
            self._unindex_agent(rec)
        now = self.clock.now()
        self._set(rec, to, self.clock.monotonic(), pause_reason if to is AgentState.PAUSED else None)
        self._history.append(StateChange(rec.agent.agent_id, frm, to, event, reason, now))
        log.info(
            "agent state changed",
            agent_id=rec.agent.agent_id,
            transition=event,
            from_state=frm.value,
            to_state=to.value,
            reason=reason,
        )

    def _set(
        self, rec: _AgentRec, to: AgentState, since_mono: float, pause_reason: PauseReason | None
    ) -> None:
        self._staffed += int(to in _STAFFED) - int(rec.state in _STAFFED)
        rec.state = to
        rec.since_mono = since_mono
        rec.pause_reason = pause_reason

    def _became_ready(
        self, rec: _AgentRec, out: list[Decision], idle_since: float | None = None, agent_first: bool = True
    ) -> None:
        """Index a newly READY agent (or move them to ON_CALL if AMI sees them busy) and dispatch."""
        if rec.elsewhere:
            self._go(rec, "busy_elsewhere", AgentState.ON_CALL, "busy on another call")
            # Not this agent, but the call they let go of (a missed offer) still needs one.
            self._dispatch(out)
            return
        rec.idle_since = self.clock.monotonic() if idle_since is None else idle_since
        self._index_agent(rec)
        self._dispatch(out, rec if agent_first else None)

    def _settle_elsewhere(self, rec: _AgentRec) -> list[Decision]:
        out: list[Decision] = []
        if not rec.elsewhere and rec.state is AgentState.ON_CALL and rec.offer_id is None:
            self._go(rec, "free_elsewhere", AgentState.READY, "foreign call over")
            self._became_ready(rec, out)
        return out

    # ===== internals: offers ======================================================================
    def _make_offer(self, crec: _CallRec, arec: _AgentRec, out: list[Decision]) -> None:
        crec.offers += 1
        offer_id = f"{crec.call.call_id}#{crec.offers}"
        offer = Offer(
            offer_id,
            crec.call.call_id,
            arec.agent.agent_id,
            arec.agent.interface,
            self.cfg.ring_timeout_seconds,
            _caller_display(crec.call),
            crec.call.uniqueid,
            crec.call.callback,
        )
        now_mono = self.clock.monotonic()
        now = self.clock.now()
        # Before DialBegin is seen, allow one ring cycle for call set-up on top of the target.
        deadline = now_mono + self.cfg.ring_timeout_seconds + self.cfg.ring_cycle_seconds
        orec = _OfferRec(offer, OfferState.OFFERED, self._steady_of(None), now_mono, deadline, agent_prev_idle=arec.idle_since)
        self._offers[offer_id] = orec
        self._unindex_call(crec)
        crec.offer_id = offer_id
        arec.offer_id = offer_id
        arec.call_id = crec.call.call_id
        self._go(arec, "offer_ringing", AgentState.RINGING, f"offer {offer_id}")
        self._schedule(deadline, "ring", offer_id, orec.version)
        self.metrics.offer_made(offer_id, arec.agent.agent_id, now)
        log.info(
            "offer made",
            uniqueid=crec.call.uniqueid,
            call_id=crec.call.call_id,
            offer_id=offer_id,
            agent_id=arec.agent.agent_id,
        )
        out.append(MakeOffer(offer))

    def _close_offer(self, orec: _OfferRec, state: OfferState) -> None:
        orec.state = state
        orec.version += 1
        self._offers.pop(orec.offer.offer_id, None)
        self._closed_offers[orec.offer.offer_id] = (state, orec.offer.agent_id)
        if len(self._closed_offers) > _CLOSED_OFFERS_KEPT:
            self._closed_offers.popitem(last=False)

    def _agent_offer_cancelled(self, arec: _AgentRec, orec: _OfferRec, out: list[Decision]) -> None:
        """Back to READY, keeping the place in the idle order: the agent did nothing wrong."""
        arec.offer_id = arec.call_id = None
        if arec.state is AgentState.RINGING:
            self._go(arec, "offer_cancelled", AgentState.READY, "offer cancelled")
            self._became_ready(arec, out, idle_since=orec.agent_prev_idle)

    def _cancel_offer_for_agent(self, arec: _AgentRec, out: list[Decision], reason: str) -> None:
        """The agent leaves while ringing: cancel and put the call back in its place."""
        orec = self._offers[arec.offer_id] if arec.offer_id else None
        arec.offer_id = arec.call_id = None
        if orec is None:
            return
        self._close_offer(orec, OfferState.CANCELLED)
        out.append(
            CancelOffer(
                orec.offer.offer_id, orec.offer.call_id, orec.offer.agent_id, orec.offer.interface, reason
            )
        )
        crec = self._calls.get(orec.offer.call_id)
        if crec is not None:
            crec.offer_id = None
            self._index_call(crec)

    def _missed(
        self, orec: _OfferRec, out: list[Decision], state: OfferState, reason: str, pause_now: bool
    ) -> None:
        """Close an unanswered offer, count it against the agent, re-queue the call in its place."""
        now = self.clock.now()
        self._close_offer(orec, state)
        offer = orec.offer
        alert = self.metrics.offer_closed(
            offer.offer_id, offer.agent_id, orec.made_at, orec.ring_start, self._steady_of(None), False, offer.call_id
        )
        if alert:
            out.append(alert)
        crec = self._calls.get(offer.call_id)
        if crec is not None:
            crec.offer_id = None
            crec.missed_by.add(offer.agent_id)
            self._index_call(crec)
        arec = self._agents.get(offer.agent_id)
        if arec is not None and arec.offer_id == offer.offer_id:
            arec.offer_id = arec.call_id = None
            arec.missed_in_row += 1
            log.info(
                "offer missed",
                uniqueid=offer.uniqueid,
                offer_id=offer.offer_id,
                agent_id=offer.agent_id,
                reason=reason,
                missed_in_row=arec.missed_in_row,
            )
            if pause_now or arec.missed_in_row >= self.cfg.missed_offers_before_pause:
                self._go(
                    arec,
                    "offer_missed",
                    AgentState.PAUSED,
                    PauseReason.MISSED_CALLS.value,
                    PauseReason.MISSED_CALLS,
                )
                out.append(AgentPaused(offer.agent_id, PauseReason.MISSED_CALLS, now, automatic=True))
                kind = AlertKind.PHONE_UNAVAILABLE if pause_now else AlertKind.AGENT_PAUSED_MISSED_CALLS
                out.append(
                    Alert(
                        kind,
                        f"agent {arec.agent.name} ({offer.agent_id}) paused after {arec.missed_in_row} missed"
                        f" offer(s), last: {reason}",
                        now,
                        agent_id=offer.agent_id,
                        call_id=offer.call_id,
                        offer_id=offer.offer_id,
                        value=float(arec.missed_in_row),
                    )
                )
            else:
                self._go(arec, "offer_missed", AgentState.READY, reason)
                # To the back of the idle order; the call-driven dispatch keeps them off this call.
                self._became_ready(arec, out, agent_first=False)
                return
        self._dispatch(out)

    def _steady_of(self, at: datetime | None) -> datetime:
        """``at`` (an event's wall time, as far in the past as ``now - at``) on the steady timeline."""
        wall0, mono0 = self._anchor
        mono = self.clock.monotonic()
        if at is not None:
            mono -= (self.clock.now() - at).total_seconds()
        return wall0 + timedelta(seconds=mono - mono0)

    def _steady(self, crec: _CallRec, at: datetime) -> datetime:
        """``at`` re-expressed on the call's own timeline: entry time plus the monotonic time elapsed.

        The speed of answer must not change when the wall clock is stepped (NTP) while a caller
        waits; ``at`` is taken to be as far in the past as ``now - at`` says, and the wait is then
        measured on the monotonic clock from the call's entry."""
        at_mono = self.clock.monotonic() - (self.clock.now() - at).total_seconds()
        return crec.call.entered_at + timedelta(seconds=max(0.0, at_mono - crec.entered_mono))

    def _answered(
        self, orec: _OfferRec, crec: _CallRec, arec: _AgentRec, at: datetime, out: list[Decision]
    ) -> None:
        offer = orec.offer
        alert = self.metrics.offer_closed(
            offer.offer_id, offer.agent_id, orec.made_at, orec.ring_start, self._steady_of(at), True, offer.call_id
        )
        if alert:
            out.append(alert)
        alert = self.metrics.call_answered(crec.call.call_id, crec.call.entered_at, self._steady(crec, at), offer.agent_id)
        if alert:
            out.append(alert)
        crec.offer_id = None
        self._remove_call(crec)
        self._remember_finished(crec.call.call_id, None)
        arec.offer_id = offer.offer_id
        arec.call_id = crec.call.call_id
        arec.answered_mono = self.clock.monotonic()
        # Keep the record reachable for on_call_ended.
        self._offers[offer.offer_id] = orec
        log.info(
            "offer answered", uniqueid=crec.call.uniqueid, offer_id=offer.offer_id, agent_id=offer.agent_id
        )

    def _late_answer(self, offer_id: str, at: datetime) -> list[Decision]:
        """DialEnd ANSWER for an offer we had given up on: if the agent is free, accept reality."""
        self._known_offer(offer_id)
        state, agent_id = self._closed_offers[offer_id]
        if state not in (OfferState.MISSED, OfferState.FAILED):
            return []  # replay of an answered/ended/cancelled offer
        call_id, _, _ = offer_id.rpartition("#")
        crec = self._calls.get(call_id)
        arec = self._agents.get(agent_id)
        if (
            crec is None
            or arec is None
            or arec.offer_id is not None
            or arec.state not in TRANSITIONS["late_answer"]
        ):
            log.warning("late answer ignored", offer_id=offer_id, agent_id=agent_id)
            return []
        out: list[Decision] = []
        if crec.offer_id is not None:
            other = self._offers[crec.offer_id]
            out.append(
                CancelOffer(
                    other.offer.offer_id,
                    call_id,
                    other.offer.agent_id,
                    other.offer.interface,
                    "answered elsewhere",
                )
            )
            self._close_offer(other, OfferState.CANCELLED)
            crec.offer_id = None
            oarec = self._agents[other.offer.agent_id]
            if oarec.offer_id == other.offer.offer_id:
                self._agent_offer_cancelled(oarec, other, out)
        orec = _OfferRec(
            Offer(
                offer_id,
                call_id,
                agent_id,
                arec.agent.interface,
                self.cfg.ring_timeout_seconds,
                _caller_display(crec.call),
                crec.call.uniqueid,
                crec.call.callback,
            ),
            OfferState.ANSWERED,
            at,
            self.clock.monotonic(),
            0.0,
        )
        self._unindex_call(crec)
        self._remove_call(crec)
        self._remember_finished(call_id, None)
        self._offers[offer_id] = orec
        self.metrics.call_answered(call_id, crec.call.entered_at, self._steady(crec, at), agent_id)
        self._go(arec, "late_answer", AgentState.ON_CALL, f"late answer {offer_id}")
        arec.offer_id = offer_id
        arec.call_id = call_id
        arec.answered_mono = self.clock.monotonic()
        self._dispatch(out)
        return out

    def _remember_finished(self, call_id: str, result: WithdrawResult | None) -> None:
        self._finished_calls[call_id] = result
        if len(self._finished_calls) > _FINISHED_CALLS_KEPT:
            self._finished_calls.popitem(last=False)

    def _remove_call(self, crec: _CallRec) -> None:
        self._unindex_call(crec)
        del self._calls[crec.call.call_id]
        key = crec.order_key
        i = bisect_left(self._order, key)
        if i < len(self._order) and self._order[i] == key:
            del self._order[i]

    # ===== internals: indexes =====================================================================
    @staticmethod
    def _agent_keys(agent: Agent) -> tuple[tuple[str, str, str], ...]:
        skills = (*sorted(agent.skills), _ANY)
        langs = (*sorted(agent.languages), _ANY)
        prefs = ("",) + (("vip",) if agent.vip_capable else ()) + (("senior",) if agent.senior else ())
        return tuple((s, lang, p) for s in skills for lang in langs for p in prefs)

    def _index_agent(self, rec: _AgentRec) -> None:
        if rec.indexed:
            return
        rec.indexed = True
        rec.token += 1
        self._agent_index.add(rec.keys, (rec.idle_since, rec.seq, rec.agent.agent_id, rec.token))

    def _unindex_agent(self, rec: _AgentRec) -> None:
        if not rec.indexed:
            return
        rec.indexed = False
        rec.token += 1
        self._agent_index.remove(rec.keys)

    def _agent_entry_valid(self, e: tuple[float, int, str, int]) -> bool:
        rec = self._agents.get(e[2])
        return rec is not None and rec.indexed and rec.token == e[3]

    def _ready_count(self) -> int:
        return self._agent_index.count((_ANY, _ANY, ""))

    def _peek_agent(self, key: tuple[str, str, str], exclude: set[str]) -> _AgentRec | None:
        e = self._agent_index.peek(key, (lambda e: e[2] in exclude) if exclude else None)
        return self._agents[e[2]] if e is not None else None

    @staticmethod
    def _agent_matches(rec: _AgentRec, skill: str, lang: str) -> bool:
        return (skill == _ANY or skill in rec.agent.skills) and (lang == _ANY or lang in rec.agent.languages)

    def _pick_agent_for(self, crec: _CallRec) -> _AgentRec | None:
        """The selection rules of the module docstring, for one call."""
        call = crec.call
        skill = call.required_skill or _ANY
        lang = call.language or _ANY
        tiers: list[tuple[str, str]] = []
        for t in ((skill, lang), (_ANY, lang), (skill, _ANY), (_ANY, _ANY)):
            if t not in tiers:
                tiers.append(t)
        pref = {
            PriorityLevel.VIP: "vip",
            PriorityLevel.EMERGENCY: "senior",
            PriorityLevel.REPEAT: "senior",
        }.get(call.priority_level)
        prev = (
            self._agents.get(call.previous_agent_id)
            if call.previous_agent_id and self.cfg.prefer_previous_agent
            else None
        )
        for exclude in (crec.missed_by, set()) if crec.missed_by else (set(),):
            for s, lang_key in tiers:
                if not self._agent_index.count((s, lang_key, "")):
                    continue
                if (
                    prev is not None
                    and prev.eligible
                    and prev.agent.agent_id not in exclude
                    and self._agent_matches(prev, s, lang_key)
                ):
                    return prev
                if pref is not None:
                    found = self._peek_agent((s, lang_key, pref), exclude)
                    if found is not None:
                        return found
                found = self._peek_agent((s, lang_key, ""), exclude)
                if found is not None:
                    return found
        return None

    @staticmethod
    def _call_keys(crec: _CallRec) -> tuple[tuple[int, str, str], ...]:
        lvl = int(crec.call.priority_level)
        s = crec.call.required_skill or _NONE
        lang = crec.call.language or _NONE
        return ((lvl, s, lang), (lvl, _ANY, lang), (lvl, s, _ANY), (lvl, _ANY, _ANY))

    def _index_call(self, crec: _CallRec) -> None:
        if crec.indexed:
            return
        crec.indexed = True
        crec.token += 1
        self._call_index.add(self._call_keys(crec), (crec.seq, crec.call.call_id, crec.token))

    def _unindex_call(self, crec: _CallRec) -> None:
        """Only a call waiting without an offer is indexed."""
        if not crec.indexed:
            return
        crec.indexed = False
        crec.token += 1
        self._call_index.remove(self._call_keys(crec))

    def _call_entry_valid(self, e: tuple[int, str, int]) -> bool:
        rec = self._calls.get(e[1])
        return rec is not None and rec.indexed and rec.token == e[2]

    def _peek_call(self, key: tuple[int, str, str]) -> _CallRec | None:
        e = self._call_index.peek(key)
        return self._calls[e[1]] if e is not None else None

    def _unoffered_count(self) -> int:
        return sum(self._call_index.count((int(lvl), _ANY, _ANY)) for lvl in PriorityLevel)

    def _head_call(self) -> _CallRec | None:
        for lvl in sorted(PriorityLevel, reverse=True):
            found = self._peek_call((int(lvl), _ANY, _ANY))
            if found is not None:
                return found
        return None

    def _pick_call_for(self, arec: _AgentRec) -> _CallRec | None:
        """An agent freed up while callers wait: top level, then best skill/language tier, oldest."""
        skills = (*sorted(arec.agent.skills), _NONE)
        langs = (*sorted(arec.agent.languages), _NONE)
        for lvl in sorted(PriorityLevel, reverse=True):
            lv = int(lvl)
            if not self._call_index.count((lv, _ANY, _ANY)):
                continue
            tiers = (
                [(lv, s, lang) for s in skills for lang in langs],
                [(lv, _ANY, lang) for lang in langs],
                [(lv, s, _ANY) for s in skills],
                [(lv, _ANY, _ANY)],
            )
            for keys in tiers:
                best: _CallRec | None = None
                for key in keys:
                    c = self._peek_call(key)
                    if c is not None and (best is None or c.seq < best.seq):
                        best = c
                if best is not None:
                    return best
        return None

    def _dispatch(self, out: list[Decision], freed: _AgentRec | None = None) -> None:
        """Restore the invariant: while a call waits unoffered and an agent is READY, make offers."""
        if freed is not None and freed.eligible and self._unoffered_count():
            crec = self._pick_call_for(freed)
            if crec is not None:
                self._make_offer(crec, freed, out)
        while self._ready_count() and self._unoffered_count():
            crec = self._head_call()
            arec = self._pick_agent_for(crec) if crec is not None else None
            if crec is None or arec is None:  # pragma: no cover - counts and heaps disagree
                log.error(
                    "dispatch found no pair", ready=self._ready_count(), waiting=self._unoffered_count()
                )
                return
            self._make_offer(crec, arec, out)

    def _schedule(self, due: float, kind: str, ref: str, version: int) -> None:
        heapq.heappush(self._timers, (due, next(self._timer_seq), kind, ref, version))
