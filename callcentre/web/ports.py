"""What the web layer needs from the rest of the server, one protocol per feature of the API.

The handlers in :mod:`callcentre.web.api` and :mod:`callcentre.web.reports` call these and nothing
under them (no repository, no SQL): the services of :mod:`callcentre.service.desk` implement them,
tests may fake them. Refusals come back as the domain's errors (:mod:`callcentre.domain.errors`),
which the error middleware turns into JSON with their codes.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Protocol, Sequence

from callcentre.config import Config
from callcentre.domain import reports
from callcentre.domain.model import Priority, TicketKind
from callcentre.domain.ports import ACDControl, Clock
from callcentre.domain.users import AgentAction, SuperviseMode, UserView
from callcentre.service.desk.tickets import NewDeskTicket, TicketChange
from callcentre.service.reports import MonthRows


class Accounts(Protocol):
    async def authenticate(self, login: str, password: str) -> UserView | None: ...

    async def active_user(self, user_id: int) -> UserView | None: ...


class Agents(Protocol):
    @property
    def running(self) -> bool: ...

    def server_time(self) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...

    def agent_entry(self, agent_id: int) -> dict[str, Any] | None: ...

    def queue(self) -> dict[str, Any]: ...

    def agents(self) -> dict[str, Any]: ...

    async def change_state(self, actor: UserView, agent_id: int, action: AgentAction,
                           reason: str | None) -> dict[str, Any] | None: ...

    async def supervise(self, actor: UserView, agent_id: int, mode: SuperviseMode) -> None: ...


class Owners(Protocol):
    async def lookup_by_phone(self, phone: str | None, *, exclude_uniqueid: str | None = None) -> dict[str, Any]: ...

    async def owner_card(self, owner_id: int) -> dict[str, Any]: ...

    async def search(self, text: str, *, phone: str | None) -> list[dict[str, Any]]: ...

    async def attach_phone(self, actor: UserView, owner_id: int, number: str, raw: str, *,
                           unit_id: int | None) -> dict[str, Any]: ...


class Tickets(Protocol):
    def categories(self) -> dict[str, list[dict[str, str]]]: ...

    def category_priority(self, kind: TicketKind, category: str) -> Priority | None: ...

    async def find(self, *, owner_id: int | None, phone: str | None) -> list[dict[str, Any]]: ...

    async def get(self, number: str) -> dict[str, Any]: ...

    async def create(self, actor: UserView, new: NewDeskTicket) -> dict[str, Any]: ...

    async def update(self, actor: UserView, number: str, change: TicketChange) -> dict[str, Any]: ...


class Calls(Protocol):
    def targets(self, actor: UserView) -> dict[str, Any]: ...

    async def transfer(self, actor: UserView, uniqueid: str, kind: str, target: dict[str, str]) -> dict[str, Any]: ...

    async def complete(self, actor: UserView, uniqueid: str) -> dict[str, Any]: ...

    async def cancel(self, actor: UserView, uniqueid: str) -> dict[str, Any]: ...


class Reports(Protocol):
    def today(self) -> date: ...

    async def daily(self, day: date) -> reports.DailyReconciliation: ...

    async def month(self, year: int, month: int) -> MonthRows: ...

    def render_daily(self, recon: reports.DailyReconciliation) -> str: ...

    def chart(self, month: MonthRows, group: reports.GroupBy, rows: Sequence[reports.MonthlyRow]) -> bytes: ...


class Recordings(Protocol):
    """Call recordings and the call history (``callcentre.service.recordings.RecordingService``)."""

    def today(self) -> date: ...

    async def for_ticket(self, actor: UserView, number: str) -> dict[str, Any]: ...

    async def for_call(self, actor: UserView, uniqueid: str) -> dict[str, Any]: ...

    async def history(self, actor: UserView, day: date, phone: str | None) -> dict[str, Any]: ...

    async def file(self, actor: UserView, recording_id: int, leg: str | None = None) -> Any:
        """A ``RecordingFile``: ``path`` (built by the server), ``size``, ``recording`` (the row)."""


class DeskFeatures(Protocol):
    """Every feature's service, as :func:`callcentre.service.desk.build_desk` makes them."""

    @property
    def accounts(self) -> Accounts: ...

    @property
    def agents(self) -> Agents: ...

    @property
    def owners(self) -> Owners: ...

    @property
    def tickets(self) -> Tickets: ...

    @property
    def reports(self) -> Reports: ...

    @property
    def recordings(self) -> Recordings | None: ...
    def calls(self) -> Calls: ...


class WebServices(Protocol):
    """The part of the composition root's services the web layer reads (``app.Services`` has them)."""

    cfg: Config
    clock: Clock
    acd: ACDControl | None
    hub: Any  # callcentre.web.hub.Hub


__all__ = [
    "ACDControl", "Accounts", "AgentAction", "Agents", "Calls", "DeskFeatures", "Owners", "Recordings", "Reports",
    "SuperviseMode", "Tickets",
    "WebServices",
]
