"""Hot reads: one reader per engine that runs the reads queued meanwhile together, in one hop.

Why (issue 11). The look-up of a caller by number happens once per call, at the start, before the
greeting. Through the pool each look-up was an ``AsyncSession`` on an aiosqlite connection: a
checkout, the query, the fetch, the cursor's close and the reset on return, each a hop to that
connection's thread and back through the event loop, with up to 15 such threads waiting for the GIL
behind the loop. With 1,000 calls arriving within a second (``python -m bench --only agi``) the
look-ups queued for the pool: the caller waited 1.5 s (median) for the greeting while the event
loop itself was late by ~10 ms at the 99th percentile.

Now the look-ups on the call's path are *read jobs*: plain functions over a synchronous SQLAlchemy
:class:`~sqlalchemy.engine.Connection` (Core statements, no ORM identity map), queued to the
engine's one :class:`GroupReader`. One batch at a time takes everything queued meanwhile (up to
:data:`MAX_READS`) and runs it in one hop, then answers each caller:

* :class:`SqliteReader` (a SQLite file): in a thread of its own, on its own connection (WAL: it
  sees every committed write and never waits for the writer);
* :class:`PooledReader` (PostgreSQL, and in-memory SQLite, which another connection cannot see): on
  one pooled connection (``AsyncConnection.run_sync``).

A database failure (locked past the busy timeout, an unreadable file, PostgreSQL down) fails every
read of the batch with :class:`~callcentre.domain.ports.StorageUnavailable` ("cannot {what}: ...");
the IVR then sends the caller to an agent. Anything else a job raises (a bug) is raised to its own
caller only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcentre.storage.batching import Batcher, PerEngine, Outcome, PooledBatcher, Queued, ThreadedBatcher
from callcentre.storage.errors import is_storage_failure

T = TypeVar("T")

# At most this many reads in one hop (a bound on how long the first of them waits for the last).
MAX_READS = 128


class Reads(Protocol):
    async def run(self, job: Callable[[Connection], T], what: str) -> T:
        """Run ``job`` on a connection and return its result. Database failures raise
        StorageUnavailable ("cannot {what}: ..."); anything else the job raises is raised as it is."""
        ...


class GroupReader(Batcher):
    """Callers queue read jobs; one batch at a time runs everything queued meanwhile in one hop."""

    name = "db-reader"
    max_batch = MAX_READS
    unit = "reads"

    def _run_in(self, conn: Connection, batch: list[Queued[Any]]) -> list[Outcome]:
        """Run every job; a database failure raises (the whole batch fails), anything else is that job's own."""
        outcomes: list[Outcome] = []
        try:
            for q in batch:
                try:
                    outcomes.append((True, q.job(conn)))
                except Exception as exc:
                    if is_storage_failure(exc):
                        raise
                    outcomes.append((False, exc))
        finally:
            conn.rollback()  # end the read transaction: the next batch sees the newest commits
        return outcomes


class PooledReader(GroupReader, PooledBatcher):
    """PostgreSQL (and in-memory SQLite): each batch on one connection from the engine's pool."""


class SqliteReader(GroupReader, ThreadedBatcher):
    """The hot reads of a SQLite file: each batch in a thread of its own, on its own connection."""

    name = "sqlite-reader"


# ---------------------------------------------------------------------------------------- look-up

_READERS: PerEngine[GroupReader] = PerEngine(PooledReader)


def register_reader(engine: AsyncEngine, reader: GroupReader) -> None:
    _READERS.register(engine, reader)


def reader_of(engine: AsyncEngine) -> GroupReader:
    """The engine's one reader (made on first use for an engine built elsewhere than storage.db)."""
    return _READERS.of(engine)


def reads_for(sessions: async_sessionmaker[AsyncSession] | AsyncEngine) -> Reads:
    """The reader of the engine behind ``sessions``."""
    return _READERS.of_sessions(sessions)
