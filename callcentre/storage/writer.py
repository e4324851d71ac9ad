"""Writes: one writer per engine that commits groups of writes; on SQLite in a thread of its own.

Why (issue 11). SQLite lets one connection write at a time. Before, every write was a transaction on
its own pooled aiosqlite connection: the write lock was taken at its first statement and held until
its COMMIT, and every statement in between, and the COMMIT itself, went through the event loop (a
thread hop each way). Connections waiting for the lock sit in SQLite's busy handler, which does not
queue: it sleeps and retries (1, 2, 5 ... then 100 ms between tries) until the busy timeout. When the
loop was busy (an AMI burst, 20 calls at once), each holder kept the lock for as long as the loop took
to come back to it, the waiters backed off to 100 ms sleeps, the lock sat idle between their tries,
and writes failed with "database is locked" after the busy timeout: the AMI benchmark's "stalled for
minutes, 'database is locked' every few seconds", and a p99 of 250-750 ms for 20 tickets at once.
``tests/test_storage.py::test_twenty_writers_while_the_event_loop_is_busy_all_succeed`` reproduces it
(on the old code 17 of its 20 calls failed).

Now the hot writes (tickets, call rows, agent states, the desk's edits) are *jobs*: plain functions
over a synchronous SQLAlchemy :class:`~sqlalchemy.engine.Connection`, queued to the engine's one
:class:`GroupWriter`. One batch at a time takes everything queued meanwhile and runs it as ONE
transaction (group commit), then answers each caller. A caller's ``await`` returns only after the
COMMIT of its group succeeded; if the database fails (locked by another process past the busy
timeout, read-only, disk full, I/O error, a failed COMMIT) the whole group is rolled back and every
waiter gets :class:`~callcentre.domain.ports.StorageUnavailable`: nothing is half-written and nothing
is acknowledged before it is committed. A job that fails on its own (a constraint, a ticket that does
not exist) is taken out and the rest of the group is run again in a new transaction, so nothing of it
stays (cheaper than a savepoint per job, which cost more than the insert itself). A caller that is
cancelled while its write is queued (a hang-up) does not take the write back.

* :class:`SqliteWriter` (a SQLite file): each group runs in the writer's own thread on its own
  connection, ``BEGIN IMMEDIATE`` ... ``COMMIT``. The lock is held only while that thread runs SQL,
  never across the event loop, and nothing else in this process competes for it on the hot paths
  (the service loops' occasional writes still use the pool, and wait in the busy handler as before).
  The day's ticket counter is handed out in memory within a group: the group's first number of a day
  is taken in ``ticket_counters`` with the one upsert below (under the write lock, so it is right even
  if another process wrote tickets to the same file), the group's further numbers are counted in
  memory and written back once before the COMMIT. A rolled-back group writes nothing, so the next one
  counts on from the committed value.
* :class:`PooledWriter` (PostgreSQL, and in-memory SQLite, which another connection cannot see):
  each group runs on a pooled connection (``AsyncConnection.run_sync``). The counter stays in the
  database, ``INSERT ... ON CONFLICT (day) DO UPDATE SET last = last + 1 RETURNING last`` per
  ticket, its row locked from the group's first ticket to its COMMIT: another node's group waits for
  that COMMIT and counts on, so two server processes on one PostgreSQL never hand out the same number
  (``test_two_servers_on_one_database_never_share_a_number``).

Durability on SQLite: WAL with ``PRAGMA synchronous = NORMAL`` (:data:`SQLITE_SYNCHRONOUS`). A COMMIT
appends the group to the WAL file without fsync; the WAL is fsynced when it is checkpointed into the
database (every ~1,000 pages). So a committed ticket survives a crash or ``kill -9`` of the server
process, an OOM kill or a restart (the data is in the operating system's page cache and reaches the
disk), but not a power cut or a kernel crash before the next checkpoint: the last commits may then be
lost (never half-written: SQLite stays consistent). ``FULL`` fsyncs the WAL at every COMMIT, so it
survives a power cut too, at the price of one fsync per group. Measured on the 2-core build
machine (``python -m bench --only tickets``, which measures both; figures in BENCHMARKS.md), one
ticket at a time: 2,473/s with NORMAL against 1,336/s with FULL in the same run (load 2.4), and
890/s against 204/s in a run at load 6.7: an fsync on that shared virtual disk costs from ~0.5 to
~4 ms. 20 at once: 4,884/s against 4,433/s (one fsync per group of 20). We keep NORMAL: what
happens to a call-centre server in practice is restarts, crashes and kills, which NORMAL survives; a
power cut takes the PBX, the phones and every call with it, and the server belongs on a UPS; FULL
would cap one-at-a-time tickets at the disk's fsync rate, below the 2,000/s target. A site that
must survive a power cut without a UPS should use PostgreSQL (``synchronous_commit = on``, its
default: durable at COMMIT).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from datetime import date
from typing import Any, Protocol, TypeVar

import structlog
from sqlalchemy import bindparam, event, literal_column, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcentre.domain.ports import StorageUnavailable
from callcentre.storage.batching import Batcher, PerEngine, Outcome, PooledBatcher, Queued, ThreadedBatcher
from callcentre.storage.errors import is_storage_failure
from callcentre.storage.models import TicketCounter

log = structlog.get_logger(__name__)

T = TypeVar("T")

# SQLite's synchronous setting on every connection (see the module docstring for why NORMAL).
SQLITE_SYNCHRONOUS = "NORMAL"
SYNCHRONOUS_CHOICES = ("NORMAL", "FULL")
# At most this many writes in one transaction (a bound on the time the lock is held for one group).
MAX_GROUP = 256


class WriteTx(Protocol):
    """What a job gets: the connection of the open transaction, and the day's ticket counter."""

    conn: Connection

    def next_ticket_counter(self, day: date) -> int:
        """The next ticket counter of ``day`` (1 for the day's first ticket), part of this transaction."""
        ...

    def give_back_ticket_counter(self, day: date) -> None:
        """Undo the last :meth:`next_ticket_counter` of ``day`` (the ticket was not made after all)."""
        ...


class Writes(Protocol):
    async def run(self, job: Callable[[WriteTx], T], what: str) -> T:
        """Run ``job`` in a transaction and return its result once committed. Database failures raise
        StorageUnavailable ("cannot {what}: ..."); anything else the job raises is raised as it is."""
        ...


def run_statement(stmt: Any, params: dict[str, Any] | None = None) -> Callable[[WriteTx], None]:
    """A job that executes one statement (with ``params``, if given)."""

    def job(tx: WriteTx) -> None:
        tx.conn.execute(stmt, params)

    return job


def insert_for(dialect: str) -> Callable[[Any], Any]:
    """The ``insert`` with ON CONFLICT of a dialect (SQLite or PostgreSQL)."""
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise StorageUnavailable(f"database dialect {dialect!r} is not supported (use SQLite or PostgreSQL)")


@functools.cache
def _counter_increment(dialect: str) -> Any:
    """``INSERT (day, 1) ON CONFLICT (day) DO UPDATE SET last = last + 1 RETURNING last`` (the day its
    one parameter)."""
    return (
        insert_for(dialect)(TicketCounter)
        .values(day=bindparam("day"), last=literal_column("1"))
        .on_conflict_do_update(index_elements=["day"], set_={"last": TicketCounter.last + literal_column("1")})
        .returning(TicketCounter.last)
    )


# The SQLite writer runs two statements of every group straight on the driver's connection: its BEGIN
# and the day's first counter. Through a SQLAlchemy execution context each costs ~30 us more than
# the statement itself (BEGIN + counter + COMMIT: 42-65 us against 15 us), and a ticket taken one at a
# time is a group of its own. The counter's SQL is the statement above, compiled once for SQLite; its
# day is bound as SQLAlchemy's Date stores it there (ISO, ``YYYY-MM-DD``).
_SQLITE_BEGIN = "BEGIN IMMEDIATE"
_SQLITE_COUNTER_TAKE = str(_counter_increment("sqlite").compile(dialect=sqlite.dialect()))


def _on_sqlite_driver(conn: Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """Execute ``sql`` on the SQLite driver's own connection; a driver error is raised as SQLAlchemy
    wraps it (so a locked or full database fails the group, as from ``conn.execute``)."""
    try:
        return conn.connection.dbapi_connection.execute(sql, params)  # type: ignore[union-attr]
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc


_COUNTER_DECREMENT = update(TicketCounter).where(TicketCounter.day == bindparam("of_day")).values(last=TicketCounter.last - 1)


# ---------------------------------------------------------------------------------------- counters


class _DatabaseCounter:
    """The counter kept in the database, its row locked by the group's transaction until COMMIT
    (PostgreSQL, in-memory SQLite): another node's group waits for that COMMIT, then counts on."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def next_ticket_counter(self, day: date) -> int:
        return int(self.conn.execute(_counter_increment(self.conn.dialect.name), {"day": day}).scalar_one())

    def give_back_ticket_counter(self, day: date) -> None:
        # We hold the row's lock since our upsert: nobody took a number after ours.
        self.conn.execute(_COUNTER_DECREMENT, {"of_day": day})

    def write_back(self) -> None:
        """Nothing: every number was counted in the database as it was taken."""


_counter_insert = sqlite.insert(TicketCounter)
_COUNTER_WRITE = _counter_insert.on_conflict_do_update(index_elements=["day"], set_={"last": _counter_insert.excluded.last})


class _GroupCounter:
    """The day's counter within one group transaction on a SQLite file (see the module docstring): the
    group's first number of a day is taken in the database, with the same one statement as
    :class:`_DatabaseCounter` (it reads and writes the counter under the group's write lock); the
    group's further numbers of that day are counted in memory and written back once, before the COMMIT.
    A group of one ticket (one call at a time) then costs one counter statement, not a read and a write."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._written: dict[date, int] = {}
        self._last: dict[date, int] = {}

    def next_ticket_counter(self, day: date) -> int:
        if day in self._last:
            self._last[day] += 1
        else:
            taken = int(_on_sqlite_driver(self.conn, _SQLITE_COUNTER_TAKE, (day.isoformat(),)).fetchone()[0])
            self._written[day] = self._last[day] = taken
        return self._last[day]

    def give_back_ticket_counter(self, day: date) -> None:
        self._last[day] -= 1

    def write_back(self) -> None:
        for day, last in self._last.items():
            if last != self._written[day]:
                self.conn.execute(_COUNTER_WRITE, {"day": day, "last": last})


class _Counter(WriteTx, Protocol):
    def write_back(self) -> None: ...


class GroupWriter(Batcher):
    """One writer per engine: callers queue jobs; one batch at a time runs everything queued meanwhile
    as one transaction (:meth:`_transaction`) and answers each caller after the COMMIT."""

    name = "db-writer"
    max_batch = MAX_GROUP
    unit = "writes"

    @property
    def groups(self) -> int:
        """Transactions committed or tried (for tests and benchmarks: writes per group)."""
        return self.batches

    @staticmethod
    def _transaction(conn: Connection, group: list[Queued[Any]], counter_for: Callable[[Connection], _Counter],
                     begin: Callable[[Connection], None] | None = None) -> list[Outcome]:
        """Run the group's jobs in one transaction and commit. A job that fails on its own (a
        constraint, a ticket that does not exist) is taken out and the others are run again from the
        start in a new transaction, so nothing it did stays; a database failure raises."""
        failed: dict[int, Exception] = {}
        while True:
            todo = [i for i in range(len(group)) if i not in failed]
            if not todo:
                return [(False, failed[i]) for i in range(len(group))]
            counter = counter_for(conn)
            results: dict[int, Any] = {}
            with conn.begin() as trans:
                if begin is not None:
                    begin(conn)
                for i in todo:
                    try:
                        results[i] = group[i].job(counter)
                    except Exception as exc:
                        if is_storage_failure(exc):
                            raise  # the database failed, not this write: the whole group is rolled back
                        failed[i] = exc
                        break
                if len(results) < len(todo):
                    trans.rollback()
                    continue
                counter.write_back()
            return [(True, results[i]) if i in results else (False, failed[i]) for i in range(len(group))]


class PooledWriter(GroupWriter, PooledBatcher):
    """PostgreSQL (and in-memory SQLite): each group on a connection from the engine's pool, the
    counter in the database."""

    def _run_in(self, conn: Connection, group: list[Queued[Any]]) -> list[Outcome]:
        return self._transaction(conn, group, _DatabaseCounter)


class SqliteWriter(GroupWriter, ThreadedBatcher):
    """The one writer of a SQLite file: each group in a thread of its own, on its own connection, the
    day's counter in memory (see the module docstring)."""

    name = "sqlite-writer"

    def __init__(self, url: URL, *, busy_timeout_seconds: float, on_connect: Callable[[Any, Any], None]) -> None:
        super().__init__(url, busy_timeout_seconds=busy_timeout_seconds, on_connect=on_connect)

        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            # BEGIN is ours (below), not the driver's: the driver would start the transaction only at
            # the first INSERT, after the group's reads, and never as IMMEDIATE.
            dbapi_connection.isolation_level = None

    @staticmethod
    def _begin(conn: Connection) -> None:
        # The write lock first: the group's reads (the counter, a ticket's current state) are then the
        # values it writes over, whatever other processes do. Issued here, not from a "begin" event
        # listener: a connection event listener makes SQLAlchemy dispatch its events around every
        # statement of every group.
        _on_sqlite_driver(conn, _SQLITE_BEGIN)

    def _run_in(self, conn: Connection, group: list[Queued[Any]]) -> list[Outcome]:
        """In the writer thread: one transaction for the whole group."""
        return self._transaction(conn, group, _GroupCounter, self._begin)


# ---------------------------------------------------------------------------------------- look-up

_WRITERS: PerEngine[GroupWriter] = PerEngine(PooledWriter)


def register_writer(engine: AsyncEngine, writer: GroupWriter) -> None:
    _WRITERS.register(engine, writer)


def writer_of(engine: AsyncEngine) -> GroupWriter:
    """The engine's one writer (made on first use for an engine built elsewhere than storage.db)."""
    return _WRITERS.of(engine)


def writes_for(sessions: async_sessionmaker[AsyncSession] | AsyncEngine) -> Writes:
    """The writer of the engine behind ``sessions``."""
    return _WRITERS.of_sessions(sessions)
