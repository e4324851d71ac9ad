"""What the engine's writer and reader share: a queue of jobs run in batches, one batch at a time,
either by a drain task on the event loop (a pooled connection) or by a thread of its own with its own
connection (a SQLite file).

Callers queue a job with :meth:`Batcher.run` and await its result. Everything queued while a batch
runs (up to ``max_batch``) becomes the next batch, which :meth:`Batcher._run_in` runs (the writer:
one transaction; the reader: one hop), and each caller gets its own outcome. A caller that is
cancelled while its job is queued (a hang-up) does not take the job back: it runs with its batch,
and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
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


def _answer(batch: list[Queued[Any]], outcomes: list[Outcome]) -> None:
    """On the callers' loop: each caller its own outcome (a cancelled caller's is dropped)."""
    for q, (ok, value) in zip(batch, outcomes, strict=True):
        if q.future.done():  # its caller was cancelled: the job ran (or failed) all the same
            continue
        if ok:
            q.future.set_result(value)
        else:
            q.future.set_exception(value)


class Batcher:
    """Jobs run in batches, one batch at a time (see the module docstring)."""

    name = "db-batcher"
    max_batch = 256
    unit = "jobs"  # what the log calls the jobs of a failed batch ("writes", "reads")

    def __init__(self) -> None:
        self.batches = 0  # batches run or tried (for tests and benchmarks: jobs per batch)

    async def run(self, job: Callable[[Any], T], what: str) -> T:
        """Queue ``job`` and return its result once its batch has run."""
        raise NotImplementedError

    def _run_in(self, conn: Connection, batch: list[Queued[Any]]) -> list[Outcome]:
        """Run the batch on ``conn`` (in a worker thread or greenlet); a database failure raises."""
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


class PooledBatcher(Batcher):
    """Each batch on one connection from the engine's pool (PostgreSQL, in-memory SQLite), run by one
    drain task at a time on the event loop."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = weakref.ref(engine)  # the engine owns its batchers, not the other way round
        self._queue: deque[Queued[Any]] = deque()
        self._drainer: asyncio.Task[None] | None = None

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
            _answer(batch, outcomes)

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


_STOP: Any = object()  # a worker thread's last item: finish what is queued before it, then end


class WorkerThread:
    """One thread and its connection to a SQLite file (opened in that thread on first use). It takes
    the batches handed to it (:meth:`hand`), joins those that wait together (up to its owner's
    ``max_batch`` jobs), runs them with its owner's ``_in_thread`` and answers the callers on their
    own loop."""

    def __init__(self, engine: Engine, name: str, owner: ThreadedBatcher) -> None:
        self.name = name
        self._engine = engine
        self._conn: Connection | None = None
        # Weak: an engine that is dropped without dispose takes its batchers with it, and then this
        # thread ends (ThreadedBatcher's finalizer), closing its connection.
        self._owner = weakref.ref(owner)
        self._max_batch = owner.max_batch
        self._batches: queue.SimpleQueue[list[Queued[Any]]] = queue.SimpleQueue()
        self._carried: list[Queued[Any]] | None = None  # taken from the queue, for the next batch
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        _LIVE_THREADS.add(self)

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

    def hand(self, batch: list[Queued[Any]]) -> None:
        self._batches.put(batch)

    def stop(self) -> None:
        """Let the thread end once what was handed to it before has run; its connection is closed."""
        self._batches.put(_STOP)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _serve(self) -> None:
        while self._run_next():
            pass
        self.discard()

    def _run_next(self) -> bool:
        """Take the next batch, joined with those that waited meanwhile (up to ``max_batch`` jobs), run
        it and send its outcomes; False at the stop. (A method of its own, so that nothing of a batch
        stays referenced while the thread waits for the next.)"""
        batch = self._carried if self._carried is not None else self._batches.get()
        self._carried = None
        if batch is _STOP:
            return False
        while len(batch) < self._max_batch:
            try:
                more = self._batches.get_nowait()
            except queue.Empty:
                break
            if more is _STOP or len(batch) + len(more) > self._max_batch:
                self._carried = more  # the next batch (or the stop), after this one
                break
            batch = batch + more
        owner = self._owner()
        try:
            if owner is None:
                raise RuntimeError("its engine is gone")
            owner.batches += 1
            outcomes = owner._in_thread(self, batch)
        except BaseException as exc:  # _in_thread never raises; if it ever did, no caller is left waiting
            outcomes = [(False, StorageUnavailable(f"cannot {q.what}: the {self.name} failed ({exc!r})")) for q in batch]
        del owner
        self._send(batch, outcomes)
        return True

    @staticmethod
    def _send(batch: list[Queued[Any]], outcomes: list[Outcome]) -> None:
        """The outcomes to the loop(s) the callers wait on (one, but for a test that shares an engine)."""
        loop = batch[0].future.get_loop()
        if any(q.future.get_loop() is not loop for q in batch):
            by_loop: dict[asyncio.AbstractEventLoop, tuple[list[Queued[Any]], list[Outcome]]] = {}
            for q, o in zip(batch, outcomes, strict=True):
                qs, os_ = by_loop.setdefault(q.future.get_loop(), ([], []))
                qs.append(q)
                os_.append(o)
            parts = list(by_loop.items())
        else:
            parts = [(loop, (batch, outcomes))]
        for each, (qs, os_) in parts:
            try:
                each.call_soon_threadsafe(_answer, qs, os_)
            except RuntimeError:  # that loop is closed: nobody waits for these answers any more
                pass


_LIVE_THREADS: weakref.WeakSet[WorkerThread] = weakref.WeakSet()


@atexit.register
def _finish_at_exit() -> None:
    """At interpreter exit, what was handed to a worker thread still runs (its threads are daemons, so
    an engine never disposed cannot keep the process alive)."""
    threads = list(_LIVE_THREADS)
    for t in threads:
        t.stop()
    for t in threads:
        t.join(timeout=10)


class ThreadedBatcher(Batcher):
    """Each batch in a thread of its own, on that thread's own connection to a SQLite file (``url``;
    ``on_connect``: the settings every connection of the file gets, storage.db's PRAGMAs).

    The jobs queued on a loop in one turn are handed to the thread together, by one callback at the
    end of that turn (so jobs asked for at the same moment are one batch); the thread answers with one
    callback per batch. Two hops per batch, and no task or executor future between them."""

    def __init__(self, url: URL, *, busy_timeout_seconds: float, on_connect: Callable[[Any, Any], None]) -> None:
        super().__init__()
        self.engine = create_sync_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=NullPool,
            connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", on_connect)
        self._thread: WorkerThread | None = None
        self._lock = threading.Lock()  # the thread is replaced by close() and used by _hand_over
        # The jobs queued on each loop since its last hand-over (weak: a loop closed before its
        # hand-over ran takes its never-answered jobs with it).
        self._turn: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Queued[Any]]] = weakref.WeakKeyDictionary()

    async def run(self, job: Callable[[Any], T], what: str) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        turn = self._turn.get(loop)
        if turn is None:
            turn = self._turn[loop] = []
            loop.call_soon(self._hand_over, loop)
        turn.append(Queued(job, what, future))
        return await future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._turn.pop(loop, [])
        try:
            with self._lock:
                if self._thread is None:
                    self._thread = WorkerThread(self.engine, self.name, self)
                    # Dropped without close(): end the thread. (At interpreter exit _finish_at_exit
                    # stops and joins every thread, so this finalizer does not run then as well.)
                    weakref.finalize(self, self._thread.stop).atexit = False
                thread = self._thread
        except Exception as exc:  # no thread can be started (the process is at its limit)
            _answer(turn, self._failed(turn, exc))
            return
        for i in range(0, len(turn), self.max_batch):
            thread.hand(turn[i:i + self.max_batch])

    def _in_thread(self, thread: WorkerThread, batch: list[Queued[Any]]) -> list[Outcome]:
        """In the worker thread. Never raises: a database failure fails the batch and drops the connection."""
        try:
            return self._run_in(thread.connection(), batch)
        except Exception as exc:
            thread.discard()
            return self._failed(batch, exc)

    def close(self, *_: Any) -> None:
        """Let the thread end and close its connection (the engine's ``engine_disposed`` event).

        What was handed to it runs first; a job queued later starts a new thread and connection (the
        engine stays usable after dispose, as SQLAlchemy's own pool does)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()


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
