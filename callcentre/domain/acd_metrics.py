"""Measurement of the two-ring promise: pure counters fed by the distributor.

Ring start and answer come from AMI ``DialBegin`` / ``DialEnd`` receipt times handed over by the
adapter (``ANSWEREDTIME`` is wrong for Local channels, see the captures). For one offer
``rings = ceil(ring_seconds / ring_cycle_seconds)`` with ring seconds rounded to the millisecond.

Definitions (documented because the wallboard and reports quote them):

* an **offer is answered within the target** when it was answered after at most ``rings_target``
  rings; the offer share's denominator is every offer that ended answered, missed or failed
  (offers cancelled because the caller hung up or the agent paused are not counted: nobody failed);
* a **call is answered within the target** when the time from entering the queue to the answer is
  at most ``rings_target`` rings (the caller's own experience);
* both are decided by one function, :func:`within_rings`, which the calls table (the monthly
  per-agent report) uses too: seconds are rounded to the millisecond, then counted in rings.
  Rounded because the times are AMI event receipt times, whose jitter is milliseconds: a call
  answered 10.0004 s after it entered is two rings of 5 s, and the stored ``answer_seconds`` (10.0)
  must agree with the stored ``within_target`` and with the wallboard's figure;
* **speed of answer** is entry to answer; p90 is the nearest-rank 90th percentile;
* **abandon rate** is abandoned / (answered + abandoned); calls withdrawn for other reasons (maximum
  wait, no agents, closed) are counted separately as *deflected*.

Everything is attributed to the local date (centre time zone) on which the call entered the queue or
the offer was made. Counting is idempotent per offer and per call: the AMI link may replay events
after a reconnect and nothing is counted twice.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

# A missed offer that Asterisk (or our own timer) stops a little after the target has not "rung
# beyond the target": timers jitter. Only this much more is tolerated before a breach alert.
RING_JITTER_SECONDS = 0.5


class AlertKind(str, enum.Enum):
    OFFER_RANG_TOO_LONG = "offer_rang_too_long"
    CALL_ANSWERED_LATE = "call_answered_late"
    AGENT_PAUSED_MISSED_CALLS = "agent_paused_missed_calls"
    PHONE_UNAVAILABLE = "phone_unavailable"


@dataclass(frozen=True, slots=True)
class Alert:
    """A live event for the supervisor page (also a distributor decision)."""

    kind: AlertKind
    message: str
    at: datetime
    agent_id: str | None = None
    call_id: str | None = None
    offer_id: str | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """One day's figures (plus live queue figures when the day is today), ready for JSON."""

    day: str
    rings_target: int
    ring_cycle_seconds: float
    calls_entered: int
    calls_answered: int
    calls_answered_within_target: int
    calls_abandoned: int
    calls_deflected: int
    call_two_ring_share: float | None
    offers: int
    offers_answered: int
    offers_answered_within_target: int
    offers_missed: int
    offer_two_ring_share: float | None
    avg_speed_of_answer: float | None
    p90_speed_of_answer: float | None
    abandon_rate: float | None
    avg_abandon_wait: float | None
    breaches: int
    waiting_now: int
    longest_current_wait: float | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AgentDayStats:
    offers: int = 0
    answered: int = 0
    answered_within_target: int = 0
    missed: int = 0

    @property
    def two_ring_share(self) -> float | None:
        closed = self.answered + self.missed
        return None if closed == 0 else self.answered_within_target / closed


@dataclass(slots=True)
class _Day:
    calls_entered: int = 0
    calls_answered: int = 0
    calls_answered_within_target: int = 0
    calls_abandoned: int = 0
    calls_deflected: int = 0
    offers_answered: int = 0
    offers_answered_within_target: int = 0
    offers_missed: int = 0
    breaches: int = 0
    speed_of_answer: list[float] = field(default_factory=list)
    abandon_waits: list[float] = field(default_factory=list)
    counted: set[str] = field(default_factory=set)
    agents: dict[str, AgentDayStats] = field(default_factory=dict)


def rings_heard(seconds: float, ring_cycle_seconds: float) -> int:
    """How many rings the caller (or the agent's phone) heard: ceil(seconds / cycle), seconds to the ms."""
    return math.ceil(round(max(0.0, seconds), 3) / ring_cycle_seconds)


def within_rings(seconds: float, rings_target: int, ring_cycle_seconds: float) -> bool:
    """The two-ring promise, decided in one place (module docstring): answered within ``rings_target`` rings."""
    return rings_heard(seconds, ring_cycle_seconds) <= rings_target


def percentile(samples: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation: the value is one that really happened)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


class AcdMetrics:
    """Per-day counters; every update is keyed so a replayed event changes nothing."""

    def __init__(
        self, rings_target: int, ring_cycle_seconds: float, timezone: str, keep_days: int = 31
    ) -> None:
        if rings_target < 1 or ring_cycle_seconds <= 0:
            raise ValueError("rings_target must be >= 1 and ring_cycle_seconds > 0")
        self.rings_target = rings_target
        self.ring_cycle_seconds = ring_cycle_seconds
        self.target_seconds = rings_target * ring_cycle_seconds
        self._tz = ZoneInfo(timezone)
        self._keep_days = keep_days
        self._days: dict[date, _Day] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def rings(self, ring_seconds: float) -> int:
        """rings = ceil(ring seconds / cycle), ring seconds rounded to the millisecond."""
        return rings_heard(ring_seconds, self.ring_cycle_seconds)

    def within_target(self, seconds: float) -> bool:
        return within_rings(seconds, self.rings_target, self.ring_cycle_seconds)

    def local_day(self, at: datetime) -> date:
        return at.astimezone(self._tz).date()

    def _day(self, at: datetime) -> _Day:
        d = self.local_day(at)
        day = self._days.get(d)
        if day is None:
            day = self._days[d] = _Day()
            if len(self._days) > self._keep_days:
                for old in sorted(self._days)[: len(self._days) - self._keep_days]:
                    del self._days[old]
            # The "counted once" keys only guard events that may still arrive late (a call that
            # spans midnight): past yesterday, a day keeps its figures and drops its keys.
            for past, kept in self._days.items():
                if (d - past).days > 1:
                    kept.counted.clear()
        return day

    @staticmethod
    def _once(day: _Day, key: str) -> bool:
        if key in day.counted:
            return False
        day.counted.add(key)
        return True

    def _agent(self, day: _Day, agent_id: str) -> AgentDayStats:
        return day.agents.get(agent_id) or AgentDayStats()

    # -- updates -----------------------------------------------------------------------------------
    def call_entered(self, call_id: str, entered_at: datetime) -> None:
        day = self._day(entered_at)
        if self._once(day, "enter:" + call_id):
            day.calls_entered += 1

    def offer_made(self, offer_id: str, agent_id: str, at: datetime) -> None:
        day = self._day(at)
        if self._once(day, "made:" + offer_id):
            a = self._agent(day, agent_id)
            day.agents[agent_id] = AgentDayStats(a.offers + 1, a.answered, a.answered_within_target, a.missed)

    def offer_closed(
        self,
        offer_id: str,
        agent_id: str,
        made_at: datetime,
        ring_start: datetime | None,
        ring_end: datetime,
        answered: bool,
        call_id: str | None = None,
    ) -> Alert | None:
        """Count one answered or missed offer; return an Alert when it rang beyond the target."""
        day = self._day(made_at)
        if not self._once(day, "offer:" + offer_id):
            return None
        ring_seconds = max(0.0, (ring_end - (ring_start or made_at)).total_seconds())
        within = self.within_target(ring_seconds)
        a = self._agent(day, agent_id)
        if answered:
            day.offers_answered += 1
            day.offers_answered_within_target += int(within)
            day.agents[agent_id] = AgentDayStats(
                a.offers, a.answered + 1, a.answered_within_target + int(within), a.missed
            )
        else:
            day.offers_missed += 1
            day.agents[agent_id] = AgentDayStats(a.offers, a.answered, a.answered_within_target, a.missed + 1)
        breach = (not within) if answered else ring_seconds > self.target_seconds + RING_JITTER_SECONDS
        if not breach:
            return None
        day.breaches += 1
        return Alert(
            AlertKind.OFFER_RANG_TOO_LONG,
            f"offer to agent {agent_id} rang {ring_seconds:.1f} s ({self.rings(ring_seconds)} rings,"
            f" target {self.rings_target})",
            ring_end,
            agent_id=agent_id,
            call_id=call_id,
            offer_id=offer_id,
            value=ring_seconds,
        )

    def call_answered(
        self, call_id: str, entered_at: datetime, answered_at: datetime, agent_id: str
    ) -> Alert | None:
        day = self._day(entered_at)
        if not self._once(day, "end:" + call_id):
            return None
        soa = max(0.0, (answered_at - entered_at).total_seconds())
        within = self.within_target(soa)
        day.calls_answered += 1
        day.calls_answered_within_target += int(within)
        day.speed_of_answer.append(soa)
        if within:
            return None
        day.breaches += 1
        return Alert(
            AlertKind.CALL_ANSWERED_LATE,
            f"call answered after {soa:.1f} s (target {self.target_seconds:g} s)",
            answered_at,
            agent_id=agent_id,
            call_id=call_id,
            value=soa,
        )

    def call_abandoned(self, call_id: str, entered_at: datetime, at: datetime) -> None:
        day = self._day(entered_at)
        if self._once(day, "end:" + call_id):
            day.calls_abandoned += 1
            day.abandon_waits.append(max(0.0, (at - entered_at).total_seconds()))

    def call_deflected(self, call_id: str, entered_at: datetime) -> None:
        day = self._day(entered_at)
        if self._once(day, "end:" + call_id):
            day.calls_deflected += 1

    # -- reading -----------------------------------------------------------------------------------
    def agent_stats(self, agent_id: str, day: date) -> AgentDayStats:
        d = self._days.get(day)
        return (d.agents.get(agent_id) if d else None) or AgentDayStats()

    def days(self) -> list[date]:
        return sorted(self._days)

    def snapshot(self, day: date, current_waits: list[float] | None = None) -> MetricsSnapshot:
        """Figures for ``day``; ``current_waits`` (seconds) adds the live queue figures."""
        d = self._days.get(day) or _Day()
        waits = current_waits or []
        offers = d.offers_answered + d.offers_missed
        ended = d.calls_answered + d.calls_abandoned
        return MetricsSnapshot(
            day=day.isoformat(),
            rings_target=self.rings_target,
            ring_cycle_seconds=self.ring_cycle_seconds,
            calls_entered=d.calls_entered,
            calls_answered=d.calls_answered,
            calls_answered_within_target=d.calls_answered_within_target,
            calls_abandoned=d.calls_abandoned,
            calls_deflected=d.calls_deflected,
            call_two_ring_share=(d.calls_answered_within_target / d.calls_answered)
            if d.calls_answered
            else None,
            offers=offers,
            offers_answered=d.offers_answered,
            offers_answered_within_target=d.offers_answered_within_target,
            offers_missed=d.offers_missed,
            offer_two_ring_share=(d.offers_answered_within_target / offers) if offers else None,
            avg_speed_of_answer=(sum(d.speed_of_answer) / len(d.speed_of_answer))
            if d.speed_of_answer
            else None,
            p90_speed_of_answer=percentile(d.speed_of_answer, 90),
            abandon_rate=(d.calls_abandoned / ended) if ended else None,
            avg_abandon_wait=(sum(d.abandon_waits) / len(d.abandon_waits)) if d.abandon_waits else None,
            breaches=d.breaches,
            waiting_now=len(waits),
            longest_current_wait=max(waits) if waits else None,
        )
