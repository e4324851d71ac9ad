"""Fakes of the domain ports: they record what they received and can be scripted."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Iterator, Mapping, Sequence

import structlog
from structlog.testing import capture_logs

from callcentre.domain.model import OwnerMatch, Ticket, TicketDraft, TicketStatus
from callcentre.domain.ports import CallerHungUp, DigitsResult, RecordResult, StorageUnavailable

HANGUP = object()


@dataclass
class FakeChannel:
    """A caller whose key presses are scripted: each read (get_digits, play with escape digits,
    wait_for_digit, record) takes the next input. An input is a digit string, "" (silence) or HANGUP.
    ``hangup_at`` hangs up when the Nth operation (1-based) starts."""

    inputs: list = field(default_factory=list)
    caller_id: str = "13800138000"
    caller_name: str = "Zhang San"
    uniqueid: str = "1795351990.1"
    linkedid: str | None = None
    channel_name: str = "SIP/owner-phone-00000002"
    language: str = "en"
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    hangup_at: int | None = None
    ops: list[tuple] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    _hung_up: bool = False

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    def _op(self, *entry) -> None:
        if self._hung_up and entry[0] not in ("set_variable", "get_variable"):
            raise CallerHungUp()
        self.ops.append(entry)
        if self.hangup_at is not None and len(self.ops) >= self.hangup_at and entry[0] not in ("set_variable", "get_variable"):
            self._hung_up = True
            raise CallerHungUp()

    def _next(self):
        if not self.inputs:
            return ""
        item = self.inputs.pop(0)
        if item is HANGUP:
            self._hung_up = True
            raise CallerHungUp()
        return item

    @property
    def played(self) -> list[str]:
        out: list[str] = []
        for op in self.ops:
            if op[0] in ("play", "get_digits"):
                out.extend(op[1])
        return out

    async def answer(self) -> None:
        self._op("answer")

    async def play(self, prompts, escape_digits=""):
        self._op("play", list(prompts))
        if escape_digits:
            d = self._next()
            return d[:1] if d and d[0] in escape_digits else None
        return None

    async def get_digits(self, prompts, timeout_ms, max_digits):
        self._op("get_digits", list(prompts), timeout_ms, max_digits)
        d = self._next()
        return DigitsResult(digits=d[:max_digits], timed_out=len(d) < max_digits)

    async def wait_for_digit(self, timeout_ms):
        self._op("wait_for_digit", timeout_ms)
        d = self._next()
        return d[:1] or None

    async def record(self, path, fmt, max_seconds, silence_seconds, beep=True):
        self._op("record", path, fmt, max_seconds)
        d = self._next()
        return RecordResult(ended_by="dtmf" if d else "timeout", digit=d[:1] or None, endpos=8000)

    async def set_variable(self, name, value, *, allow_dead=False):
        if self._hung_up and not allow_dead:
            raise CallerHungUp()
        self._op("set_variable", name, value)
        self.variables[name] = value

    async def get_variable(self, name, *, allow_dead=False):
        if self._hung_up and not allow_dead:
            raise CallerHungUp()
        self._op("get_variable", name)
        return self.variables.get(name)

    async def exec(self, application, *args):
        self._op("exec", application, *args)
        return 0

    async def music_on(self, music_class="default"):
        self._op("music_on", music_class)

    async def music_off(self):
        self._op("music_off")

    async def hangup(self):
        self._op("hangup")


@dataclass
class FakeDirectory:
    by_phone: dict[str, list[OwnerMatch]] = field(default_factory=dict)
    pins: dict[int, str] = field(default_factory=dict)
    fail: bool = False
    lookups: list[tuple] = field(default_factory=list)

    async def find_by_phone(self, normalised):
        self.lookups.append(("phone", normalised))
        if self.fail:
            raise StorageUnavailable("database is locked")
        return list(self.by_phone.get(normalised, []))

    async def find_unit(self, building, unit):
        self.lookups.append(("unit", building, unit))
        if self.fail:
            raise StorageUnavailable("database is locked")
        seen = {}
        for matches in self.by_phone.values():
            for m in matches:
                if m.building == building and m.unit == unit:
                    seen[(m.owner_id, m.unit_id)] = m
        return list(seen.values())

    async def check_pin(self, owner_id, pin):
        return self.pins.get(owner_id) == pin


@dataclass
class FakeTicketStore:
    tickets: list[Ticket] = field(default_factory=list)
    drafts: list[TicketDraft] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    fail: bool = False
    delay: float = 0.0

    async def create_ticket(self, draft: TicketDraft, promised_by: datetime | None) -> Ticket:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise StorageUnavailable("database is locked")
        for t in self.tickets:
            if t.call_uniqueid == draft.call_uniqueid and t.kind == draft.kind:
                return t
        self.drafts.append(draft)
        n = len(self.tickets) + 1
        prefix = {"repair": "R", "complaint": "C", "emergency": "E"}.get(draft.kind.value, "Q")
        t = Ticket(
            id=n, number=f"{prefix}20261124-{n:04d}", kind=draft.kind, category=draft.category,
            priority=draft.priority, status=TicketStatus.NEW, caller_id_raw=draft.caller_id_raw,
            caller_id=draft.caller_id, call_uniqueid=draft.call_uniqueid, call_linkedid=draft.call_linkedid,
            owner_id=draft.owner_id, unit_id=draft.unit_id, voice_file=draft.voice_file,
            ivr_path=draft.ivr_path, created_at=datetime(2026, 11, 24, 2, 0), promised_by=promised_by,
        )
        self.tickets.append(t)
        return t

    async def latest_open_ticket(self, owner_id, caller_id):
        for t in reversed(self.tickets):
            if t.status.is_open and (t.owner_id == owner_id or (caller_id and t.caller_id == caller_id)):
                return t
        return None

    async def record_call_event(self, uniqueid, kind, data):
        self.events.append((uniqueid, kind, dict(data)))

    async def mark_acknowledged(self, ticket_id):
        if self.fail:
            raise StorageUnavailable("database is locked")
        self.acknowledged.append(ticket_id)


def owner(owner_id=1, unit_id=10, building="3", unit="1201", balance=123456, due=date(2026, 12, 31), **kw) -> OwnerMatch:
    return OwnerMatch(
        owner_id=owner_id, owner_name=kw.pop("name", "Zhang San"), unit_id=unit_id, building=building, unit=unit,
        fee_balance_cents=balance, fee_due_date=due, **kw,
    )


@contextlib.contextmanager
def captured_logs() -> Iterator[list[dict]]:
    """Every log event at any level, whatever another test left configured (some set a level filter)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0), cache_logger_on_first_use=False)
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


__all__ = ["FakeChannel", "FakeDirectory", "FakeTicketStore", "HANGUP", "captured_logs", "owner", "replace"]
