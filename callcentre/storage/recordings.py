"""The ``recordings`` table (one row per answered offer that was to be recorded) and its queries.

A row is written once the file has been checked (:mod:`callcentre.service.recordings`): its status is what
the file turned out to be, never what an event said. ``path`` is relative to the recording root and made by
the server (``YYYY/MM/DD/<uniqueid>-<n>.wav``); the web serves a row by its id and never takes a path. The
row ties the file to the call (``call_uniqueid`` = ``calls.uniqueid``) and so to the call's tickets
(``tickets.call_uniqueid``). Retention deletes the file and keeps the row, marked ``deleted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import structlog
from sqlalchemy import Boolean, CheckConstraint, Float, Index, Integer, String, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from callcentre.domain.recordings import RecordingResult, RecordingStatus
from callcentre.storage.errors import storage_errors
from callcentre.storage.models import Base, CallRow, TicketRow, UtcDateTime
from callcentre.storage.writer import WriteTx, writes_for

log = structlog.get_logger(__name__)

_STATUSES = ", ".join(f"'{s.value}'" for s in RecordingStatus)


class RecordingRow(Base):
    __tablename__ = "recordings"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        Index("ix_recordings_call_uniqueid", "call_uniqueid"),
        Index("ix_recordings_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_uniqueid: Mapped[str] = mapped_column(String(64))
    offer_id: Mapped[str] = mapped_column(String(80))
    agent_id: Mapped[str | None] = mapped_column(String(64))
    agent_login: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255), unique=True)  # relative to recording.directory
    separate_legs: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)  # the answer (else when MixMonitor started)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # when the Dial returned
    talk_seconds: Mapped[float | None] = mapped_column(Float)  # answer -> end of the Dial, as we measured it
    seconds: Mapped[float | None] = mapped_column(Float)  # audio in the file
    bytes: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200))
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


@dataclass(frozen=True, slots=True)
class StoredRecording:
    id: int
    call_uniqueid: str
    offer_id: str
    agent_id: str | None
    agent_login: str | None
    path: str
    separate_legs: bool
    started_at: datetime
    ended_at: datetime | None
    talk_seconds: float | None
    seconds: float | None
    bytes: int | None
    status: RecordingStatus
    reason: str | None
    deleted_at: datetime | None

    @classmethod
    def of(cls, r: Any) -> "StoredRecording":
        return cls(id=r.id, call_uniqueid=r.call_uniqueid, offer_id=r.offer_id, agent_id=r.agent_id,
                   agent_login=r.agent_login, path=r.path, separate_legs=bool(r.separate_legs), started_at=r.started_at,
                   ended_at=r.ended_at, talk_seconds=r.talk_seconds, seconds=r.seconds, bytes=r.bytes,
                   status=RecordingStatus(r.status), reason=r.reason, deleted_at=r.deleted_at)


@dataclass(frozen=True, slots=True)
class CallHistoryRow:
    """A call of the history page: the call, its tickets and its recordings."""

    uniqueid: str
    caller_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str | None
    ivr_path: str
    answered_by: str | None
    tickets: tuple[str, ...]
    recordings: tuple[StoredRecording, ...]


class RecordingsRepo:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = session_factory
        self._writes = writes_for(session_factory)

    async def add(self, new: RecordingResult, checked_at: datetime) -> int:
        """Insert the row of a checked recording (or update it: a file is checked once, but a retry of the
        same path must not make a second row). Returns its id."""
        values = {**{f: getattr(new, f) for f in RecordingResult.__dataclass_fields__}, "status": new.status.value,
                  "reason": (new.reason or None) and new.reason[:200], "checked_at": checked_at}
        table = RecordingRow.__table__

        def job(tx: WriteTx) -> int:
            c = tx.conn
            found = c.execute(select(table.c.id).where(table.c.path == new.path)).scalar_one_or_none()
            if found is not None:
                c.execute(update(table).where(table.c.id == found).values(**values))
                return int(found)
            return int(c.execute(table.insert().values(**values).returning(table.c.id)).scalar_one())

        return await self._writes.run(job, "save a recording")

    async def get(self, recording_id: int) -> StoredRecording | None:
        async with storage_errors("read a recording"), self._sessions() as s:
            row = await s.get(RecordingRow, recording_id)
        return StoredRecording.of(row) if row is not None else None

    async def for_call(self, uniqueid: str) -> list[StoredRecording]:
        q = select(RecordingRow).where(RecordingRow.call_uniqueid == uniqueid).order_by(RecordingRow.started_at, RecordingRow.id)
        async with storage_errors("read recordings"), self._sessions() as s:
            return [StoredRecording.of(r) for r in (await s.execute(q)).scalars()]

    async def for_ticket(self, number: str) -> tuple[str | None, list[StoredRecording]] | None:
        """The ticket's call and that call's recordings; None when there is no such ticket."""
        async with storage_errors("read recordings"), self._sessions() as s:
            ticket = (await s.execute(select(TicketRow.call_uniqueid).where(TicketRow.number == number))).first()
            if ticket is None:
                return None
            uniqueid = ticket.call_uniqueid
            if not uniqueid:
                return None, []
            q = select(RecordingRow).where(RecordingRow.call_uniqueid == uniqueid).order_by(RecordingRow.started_at,
                                                                                          RecordingRow.id)
            return uniqueid, [StoredRecording.of(r) for r in (await s.execute(q)).scalars()]

    async def history(self, start: datetime, end: datetime, *, phone: str | None = None,
                      limit: int = 200) -> list[CallHistoryRow]:
        """Calls started in [start, end) (newest first), with their tickets and recordings; three queries."""
        q = select(CallRow).where(CallRow.started_at >= start, CallRow.started_at < end)
        if phone:
            q = q.where(CallRow.caller_id == phone)
        q = q.order_by(CallRow.started_at.desc()).limit(limit)
        async with storage_errors("read the call history"), self._sessions() as s:
            calls = list((await s.execute(q)).scalars())
            ids = [c.uniqueid for c in calls]
            tickets: dict[str, list[str]] = {}
            recs: dict[str, list[StoredRecording]] = {}
            if ids:
                for uid, number in (await s.execute(
                        select(TicketRow.call_uniqueid, TicketRow.number).where(TicketRow.call_uniqueid.in_(ids))
                        .order_by(TicketRow.id))).all():
                    tickets.setdefault(uid, []).append(number)
                for r in (await s.execute(select(RecordingRow).where(RecordingRow.call_uniqueid.in_(ids))
                                          .order_by(RecordingRow.started_at, RecordingRow.id))).scalars():
                    recs.setdefault(r.call_uniqueid, []).append(StoredRecording.of(r))
        return [CallHistoryRow(uniqueid=c.uniqueid, caller_id=c.caller_id, started_at=c.started_at, ended_at=c.ended_at,
                               outcome=c.outcome, ivr_path=c.ivr_path or "", answered_by=c.answered_by,
                               tickets=tuple(tickets.get(c.uniqueid, ())), recordings=tuple(recs.get(c.uniqueid, ())))
                for c in calls]

    async def due_for_deletion(self, before: datetime, limit: int = 500) -> list[StoredRecording]:
        """Rows of calls older than ``before`` whose file has not been deleted yet, oldest first."""
        q = (select(RecordingRow)
             .where(RecordingRow.started_at < before, RecordingRow.deleted_at.is_(None))
             .order_by(RecordingRow.started_at, RecordingRow.id).limit(limit))
        async with storage_errors("read recordings"), self._sessions() as s:
            return [StoredRecording.of(r) for r in (await s.execute(q)).scalars()]

    async def mark_deleted(self, ids: Sequence[int], at: datetime, reason: str) -> None:
        if not ids:
            return
        table = RecordingRow.__table__
        stmt = (update(table).where(table.c.id.in_(list(ids)))
                .values(status=RecordingStatus.DELETED.value, deleted_at=at,
                        reason=func.substr(func.coalesce(table.c.reason + "; ", "") + reason, 1, 200)))

        def job(tx: WriteTx) -> None:
            tx.conn.execute(stmt)

        await self._writes.run(job, "mark recordings deleted")

    async def known_paths(self, paths: Sequence[str]) -> set[str]:
        """Which of these relative paths have a row (not deleted): the rest are files nobody points to."""
        if not paths:
            return set()
        q = select(RecordingRow.path).where(RecordingRow.path.in_(list(paths)), RecordingRow.deleted_at.is_(None))
        async with storage_errors("read recordings"), self._sessions() as s:
            return set((await s.execute(q)).scalars())

    async def totals(self) -> dict[str, int]:
        """Rows by status."""
        async with storage_errors("count recordings"), self._sessions() as s:
            rows = (await s.execute(select(RecordingRow.status, func.count()).group_by(RecordingRow.status))).all()
        return {str(status): int(n) for status, n in rows}


__all__ = ["CallHistoryRow", "RecordingRow", "RecordingsRepo", "StoredRecording"]
