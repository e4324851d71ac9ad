"""What the engine's writer and reader share: a queue of jobs that one drain task at a time runs in
batches, and the thread (with its own connection) a SQLite file's batches run in.

Callers queue a job with :meth:`Batcher.run` and await its result. One drain task takes everything
queued (up to ``max_batch``), hands it to :meth:`Batcher._run_batch` (the writer: one transaction;
the reader: one hop) and answers each caller with its own outcome. A caller that is cancelled while
its job is queued (a hang-up) does not take the job back: it runs with its batch, and its answer is
dropped.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from callcentre.domain.ports import StorageUnavailable
from callcentre.storage.errors import is_storage_failure, reason

log = structlog.get_logger(__name__)

T = TypeVar("T")
Outcome = tuple[bool, Any]  # (True, result) or (False, the exception for its caller)


@dataclass(slots=True)
class Queued(Generic[T]):
    job: Callable[[Any], T]
    what: str
    future: asyncio.Future[T]


class Batcher:
    """A queue of jobs run in batches by one drain task at a time (see the module docstring)."""

    name = "db-batcher"
    max_batch = 256
    unit = "jobs"  # what the log calls the jobs of a failed batch ("writes", "reads")

    def __init__(self) -> None:
        self._queue: deque[Queued[Any]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0  # batches run or tried (for tests and benchmarks: jobs per batch)

    async def run(self, job: Callable[[Any], T], what: str) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append(Queued(job, what, future))
        drainer = self._drainer
        if drainer is None or drainer.done() or drainer.get_loop() is not loop:
            self._drainer = loop.create_task(self._drain(), name=self.name)
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
            self.batches += 1
            try:
                outcomes = await self._run_batch(batch)
            except BaseException as exc:  # cancelled with the loop, or the batch could not be started
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(StorageUnavailable(f"cannot {q.what}: the {self.name} stopped ({exc!r})"))
                raise
            for q, (ok, value) in zip(batch, outcomes, strict=True):
                if q.future.done():  # its caller was cancelled: the job ran (or failed) all the same
                    continue
                if ok:
                    q.future.set_result(value)
                else:
                    q.future.set_exception(value)

    async def _run_batch(self, batch: list[Queued[Any]]) -> list[Outcome]:
        raise NotImplementedError

    @classmethod
    def _failed(cls, batch: list[Queued[Any]], failure: BaseException) -> list[Outcome]:
        """The database failed: every job of the batch gets StorageUnavailable."""
        why = reason(failure)
        log.error("storage unavailable", actions=sorted({q.what for q in batch}), **{cls.unit: len(batch)}, reason=why)
        outcomes: list[Outcome] = []
        for q in batch:
            err = StorageUnavailable(f"cannot {q.what}: {why}")
            err.__cause__ = failure
            outcomes.append((False, err))
        return outcomes

    def close(self, *_: Any) -> None:
        """Release what the batcher holds (the engine's ``engine_disposed`` event)."""


class WorkerThread:
    """One thread and its connection to a SQLite file (opened in that thread on first use)."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._engine = engine
        self._conn: Connection | None = None

    def connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def discard(self) -> None:
        """Close the connection (SQLite rolls back whatever it still had open); the next batch opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # a broken connection: it is gone either way
                log.warning("sqlite connection not closed cleanly", thread=self.name, error=str(exc))

    def shut_down(self) -> None:
        """Close the connection in the thread, then let the thread end (a batch in flight finishes first)."""
        self.executor.submit(self.discard)
        self.executor.shutdown(wait=False)


class PooledBatcher(Batcher):
    """Each batch on one connection from the engine's pool (PostgreSQL, in-memory SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = weakref.ref(engine)  # the engine owns its batchers, not the other way round

    def _run_in(self, conn: Connection, batch: list[Queued[Any]]) -> list[Outcome]:
        """Run the batch on ``conn`` (in a worker thread or greenlet); a database failure raises."""
        raise NotImplementedError

    async def _run_batch(self, batch: list[Queued[Any]]) -> list[Outcome]:
        engine = self._engine()
        if engine is None:
            return self._failed(batch, RuntimeError("the database engine is gone"))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(self._run_in, batch)
        except Exception as exc:
            if not is_storage_failure(exc):
                raise
            return self._failed(batch, exc)


class ThreadedBatcher(Batcher):
    """Each batch in a thread of its own, on that thread's own connection to a SQLite file (``url``;
    ``on_connect``: the settings every connection of the file gets, storage.db's PRAGMAs)."""

    def __init__(self, url: URL, *, busy_timeout_seconds: float, on_connect: Callable[[Any, Any], None]) -> None:
        super().__init__()
        self.engine = create_sync_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=NullPool,
            connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", on_connect)
        self._thread: WorkerThread | None = None
        self._lock = threading.Lock()  # the thread is replaced by close() and used by _run_batch

    def _run_in(self, conn: Connection, batch: list[Queued[Any]]) -> list[Outcome]:
        raise NotImplementedError

    async def _run_batch(self, batch: list[Queued[Any]]) -> list[Outcome]:
        with self._lock:
            if self._thread is None:
                self._thread = WorkerThread(self.engine, self.name)
            thread = self._thread
        return await asyncio.get_running_loop().run_in_executor(thread.executor, self._in_thread, thread, batch)

    def _in_thread(self, thread: WorkerThread, batch: list[Queued[Any]]) -> list[Outcome]:
        """In the worker thread. Never raises: a database failure fails the batch and drops the connection."""
        try:
            return self._run_in(thread.connection(), batch)
        except Exception as exc:
            thread.discard()
            return self._failed(batch, exc)

    def close(self, *_: Any) -> None:
        """Close the connection and let the thread end (the engine's ``engine_disposed`` event).

        A batch in flight finishes first; a job queued later opens a new thread and connection (the
        engine stays usable after dispose, as SQLAlchemy's own pool does)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.shut_down()


B = TypeVar("B", bound=Batcher)


class PerEngine(Generic[B]):
    """One batcher of a kind per engine (``default`` makes it on first use for an engine built
    elsewhere than :func:`callcentre.storage.db.create_engine`)."""

    def __init__(self, default: Callable[[AsyncEngine], B]) -> None:
        self._of: weakref.WeakKeyDictionary[Engine, B] = weakref.WeakKeyDictionary()
        self._default = default

    def register(self, engine: AsyncEngine, batcher: B) -> None:
        self._of[engine.sync_engine] = batcher
        event.listen(engine.sync_engine, "engine_disposed", batcher.close)

    def of(self, engine: AsyncEngine) -> B:
        batcher = self._of.get(engine.sync_engine)
        if batcher is None:
            batcher = self._default(engine)
            self.register(engine, batcher)
        return batcher

    def of_sessions(self, sessions: async_sessionmaker[AsyncSession] | AsyncEngine) -> B:
        """The batcher of the engine behind ``sessions``."""
        engine = sessions if isinstance(sessions, AsyncEngine) else sessions.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise TypeError("the session factory must be bound to an AsyncEngine (callcentre.storage.db.session_factory)")
        return self.of(engine)


__all__ = ["Batcher", "PerEngine", "Outcome", "PooledBatcher", "Queued", "ThreadedBatcher", "WorkerThread"]
