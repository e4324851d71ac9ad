"""The services the agent desk and the supervisors' pages call, one per feature of the API.

========================  =========================================  ============================
feature (web/api/...)     service                                    over
========================  =========================================  ============================
session                   :class:`.accounts.AccountService`          users
agents                    :class:`.agents.AgentService`              call distribution, users
owners                    :class:`.owners.OwnerService`              the desk repository
tickets                   :class:`.tickets.DeskTicketService`        desk repository, lifecycle
calls                     :class:`.calls.CallService`                call distribution (transfers)
reports (web/reports.py)  :class:`callcentre.service.reports.ReportService`  report rows
recordings                :class:`callcentre.service.recordings.RecordingService`  recordings, calls
========================  =========================================  ============================

The web layer sees them through the protocols of :mod:`callcentre.web.ports`, never the storage
under them. :func:`build_desk` makes the set from storage pieces built once by the composition root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callcentre.config import Config
from callcentre.domain.hotlines import default_hotline_id
from callcentre.domain.ports import ACDControl, Clock
from callcentre.service.desk.accounts import AccountService
from callcentre.service.desk.agents import AgentService, Elsewhere
from callcentre.service.desk.calls import CallService
from callcentre.service.desk.owners import OwnerService
from callcentre.service.desk.tickets import DeskTicketService
from callcentre.service.recordings import RecordingService
from callcentre.service.reports import ReportService
from callcentre.service.tickets import TicketService
from callcentre.storage.desk_repo import DeskRepo
from callcentre.storage.users_repo import UsersRepo


@dataclass(frozen=True, slots=True)
class DeskServices:
    accounts: AccountService
    agents: AgentService
    owners: OwnerService
    tickets: DeskTicketService
    reports: ReportService
    calls: CallService
    recordings: RecordingService | None = None  # None: this server has none to offer (tests, tools)


def desk_repo(sessions: async_sessionmaker[AsyncSession], cfg: Config, clock: Clock) -> DeskRepo:
    """The desk repository as configured (ticket prefixes, time zone, repeat-caller window)."""
    return DeskRepo(sessions, clock, tz=cfg.centre.timezone, prefixes=dict(cfg.tickets.number_prefix),
                    repeat_caller_hours=cfg.acd.repeat_caller_hours, default_hotline=default_hotline_id(cfg))


def build_desk(
    sessions: async_sessionmaker[AsyncSession],
    cfg: Config,
    clock: Clock,
    *,
    acd: Callable[[], ACDControl | None],
    lifecycle: TicketService | None,
    desk: DeskRepo | None = None,
    users: UsersRepo | None = None,
    recordings: RecordingService | None = None,
    elsewhere: Elsewhere | None = None,
    node: str | None = None,
) -> DeskServices:
    """The desk's services. ``acd`` is asked for call distribution each time (it may be off, or not yet
    started); pass the ``desk`` and ``users`` repositories when they are built already (one each)."""
    desk = desk if desk is not None else desk_repo(sessions, cfg, clock)
    users = users if users is not None else UsersRepo(sessions, clock)
    return DeskServices(
        accounts=AccountService(users),
        agents=AgentService(acd, users, clock, elsewhere=elsewhere, node=node),
        owners=OwnerService(desk),
        tickets=DeskTicketService(desk, lifecycle, cfg, clock),
        reports=ReportService(sessions, cfg, clock),
        calls=CallService(acd, elsewhere=elsewhere),
        recordings=recordings,
    )


__all__ = ["DeskServices", "build_desk", "desk_repo"]
