"""The interfaces the domain needs from the outside world.

Adapters implement them: ``callcentre.agi.channel.AGIChannel`` (a FastAGI session) implements
:class:`Channel`; ``callcentre.storage.repo`` implements :class:`Directory` and :class:`TicketStore`.
Tests implement them with fakes that record what they received.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Mapping, Protocol, Sequence

from callcentre.domain.model import OwnerMatch, Ticket, TicketDraft


class CallerHungUp(Exception):
    """The caller's channel is gone; stop talking to it."""


class ChannelError(Exception):
    """Asterisk refused or could not run a command (usage error, timeout, malformed reply)."""


class StorageUnavailable(Exception):
    """The database could not be reached or written (locked, read-only, full, down)."""


@dataclass(frozen=True, slots=True)
class DigitsResult:
    digits: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class RecordResult:
    # "dtmf" (ended by a key), "timeout" (max length or silence), "hangup"
    ended_by: str
    digit: str | None
    endpos: int


class Channel(Protocol):
    """One caller's channel, as the IVR sees it.

    Every method raises :class:`CallerHungUp` once the caller has hung up and :class:`ChannelError`
    when Asterisk rejects the command. Arguments are plain values: the adapter quotes and escapes.
    ``prompts`` are names like ``"zh/main-menu"`` resolved by the adapter against the prompt path.
    """

    uniqueid: str
    linkedid: str | None
    channel_name: str
    caller_id: str  # as received (agi_callerid), may be "unknown", "anonymous", "" …
    caller_name: str
    language: str
    env: Mapping[str, str]
    args: Sequence[str]

    @property
    def hung_up(self) -> bool: ...

    async def answer(self) -> None: ...

    async def play(self, prompts: Sequence[str], escape_digits: str = "") -> str | None:
        """Play prompts in order; return the escape digit pressed (stops playing) or None."""

    async def get_digits(self, prompts: Sequence[str], timeout_ms: int, max_digits: int) -> DigitsResult:
        """Play prompts (interruptible by a key) then collect up to max_digits; '#' ends entry."""

    async def wait_for_digit(self, timeout_ms: int) -> str | None: ...

    async def record(self, path: str, fmt: str, max_seconds: int, silence_seconds: int, beep: bool = True) -> RecordResult: ...

    async def set_variable(self, name: str, value: str, *, allow_dead: bool = False) -> None:
        """``allow_dead``: also after a hang-up (Asterisk still runs SET/GET VARIABLE on a dead channel)."""

    async def get_variable(self, name: str, *, allow_dead: bool = False) -> str | None: ...

    async def exec(self, application: str, *args: str) -> int:
        """Run a dialplan application; return its AGI result (-2 means the application does not exist)."""

    async def music_on(self, music_class: str = "default") -> None: ...

    async def music_off(self) -> None: ...

    async def hangup(self) -> None: ...


class Directory(Protocol):
    async def find_by_phone(self, normalised: str) -> list[OwnerMatch]: ...

    async def find_unit(self, building: str, unit: str) -> list[OwnerMatch]: ...

    async def check_pin(self, owner_id: int, pin: str) -> bool: ...


class TicketStore(Protocol):
    async def create_ticket(self, draft: TicketDraft, promised_by: datetime | None) -> Ticket:
        """Create and commit a ticket; idempotent per (call_uniqueid, kind): the same call gets the
        same ticket back. Raises StorageUnavailable when it cannot commit."""

    async def latest_open_ticket(self, owner_id: int | None, caller_id: str | None) -> Ticket | None: ...

    async def mark_acknowledged(self, ticket_id: int) -> None:
        """The caller has heard the ticket (its number and promise, or the call-back booked). Raises
        StorageUnavailable; the ticket itself is committed already, so callers only log that."""

    async def record_call_event(self, uniqueid: str, kind: str, data: Mapping[str, object]) -> None:
        """Append to the call's history (IVR path, outcome); best effort."""


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time (for records and promises)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never jumps (for timers and ring measurement)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move the wall clock only (an NTP step); monotonic time is untouched."""
        from datetime import timedelta

        self._now += timedelta(seconds=seconds)


def today_local(clock: Clock, tz: str) -> date:
    from zoneinfo import ZoneInfo

    return clock.now().astimezone(ZoneInfo(tz)).date()


class ACDControl(Protocol):
    """What the desk needs from call distribution (implemented by the ACD adapter; faked in tests).

    ``action`` is a :class:`~callcentre.domain.users.AgentAction` value and ``mode`` a
    :class:`~callcentre.domain.users.SuperviseMode` value: fixed words, never anything a browser typed.
    """

    def snapshot(self) -> dict[str, Any]:
        """JSON-able: {"queue": [...], "agents": [...], "figures": {...}, "alerts": [...]}.

        queue items: call_id, caller, owner_name, unit, ivr_choice, priority, entered_at, wait_seconds;
        agents: agent_id (the users.id), name, state, since, reason, current_caller, answered_today,
        missed_today, two_ring_share; figures: two_ring_share_today, avg_wait, longest_wait,
        abandon_rate, waiting, agents_ready.
        """

    def agent_entry(self, agent_id: int) -> dict[str, Any] | None:
        """One agent's item of :meth:`snapshot` (None when unknown), without building the whole picture."""

    async def agent_action(self, agent_id: int, action: str, reason: str | None) -> None:
        """Change an agent's state; raises ValueError when the change is illegal in the current state."""

    async def supervise(self, supervisor_id: int, agent_id: int, mode: str) -> None:
        """Originate ChanSpy on the agent's call to the supervisor's phone; ValueError if impossible."""
