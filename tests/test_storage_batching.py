"""The SQLite writer's and reader's own thread (callcentre/storage/batching.py): jobs asked for in one
turn of the loop are one batch, answers reach the loop each caller waits on, and what was handed to
the thread still runs when the process exits."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError

from callcentre.domain.ports import StorageUnavailable
from callcentre.storage.batching import Queued, WorkerThread
from callcentre.storage.reader import SqliteReader
from tests.test_storage import sqlite_only

pytestmark = sqlite_only

ROOT = Path(__file__).resolve().parents[1]


def _reader(tmp_path: Path) -> SqliteReader:
    from sqlalchemy.engine import make_url

    return SqliteReader(make_url(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"), busy_timeout_seconds=1.0,
                        on_connect=lambda *_: None)


async def test_jobs_asked_for_in_one_turn_are_one_batch(tmp_path: Path) -> None:
    reader = _reader(tmp_path)
    try:
        before = reader.batches
        got = await asyncio.gather(*(reader.run(lambda c, i=i: c.exec_driver_sql(f"SELECT {i}").scalar(), "read")
                                     for i in range(50)))
        assert got == list(range(50))
        assert reader.batches - before == 1
    finally:
        reader.close()


async def test_a_batch_larger_than_the_bound_is_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = _reader(tmp_path)
    monkeypatch.setattr(reader, "max_batch", 8)
    try:
        sizes: list[int] = []

        def job(c):  # type: ignore[no-untyped-def]
            return 1

        real = reader._run_in

        def counting(conn, batch):  # type: ignore[no-untyped-def]
            sizes.append(len(batch))
            return real(conn, batch)

        monkeypatch.setattr(reader, "_run_in", counting)
        assert sum(await asyncio.gather(*(reader.run(job, "read") for _ in range(20)))) == 20
        assert max(sizes) <= 8 and sum(sizes) == 20
    finally:
        reader.close()


async def test_a_failing_database_fails_the_batch_and_the_thread_goes_on(tmp_path: Path) -> None:
    reader = _reader(tmp_path)
    try:
        def broken(c):  # type: ignore[no-untyped-def]
            # What SQLAlchemy raises when the file cannot be read any more.
            raise DBAPIError.instance("SELECT 1", (), sqlite3.OperationalError("disk I/O error"), sqlite3.Error)

        results = await asyncio.gather(reader.run(broken, "read it"), reader.run(lambda c: 1, "read the other"),
                                       return_exceptions=True)
        assert [type(r) for r in results] == [StorageUnavailable, StorageUnavailable], results
        assert "cannot read the other: disk I/O error" in str(results[1])
        assert await reader.run(lambda c: c.exec_driver_sql("SELECT 7").scalar(), "read") == 7  # a new connection
    finally:
        reader.close()


async def test_a_batcher_dropped_without_close_ends_its_thread(tmp_path: Path) -> None:
    """An engine that is never disposed does not leave a thread and a connection behind once it is gone."""
    reader = _reader(tmp_path)
    assert await reader.run(lambda c: c.exec_driver_sql("SELECT 1").scalar(), "read") == 1
    thread = reader._thread._thread  # type: ignore[union-attr]
    assert thread.is_alive()
    del reader
    gc.collect()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()


async def test_no_thread_to_start_fails_the_turn_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import callcentre.storage.batching as batching

    def refuse(*_a: object, **_k: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(batching, "WorkerThread", refuse)
    reader = _reader(tmp_path)
    results = await asyncio.gather(*(reader.run(lambda c: 1, "look the caller up") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, StorageUnavailable) and "cannot look the caller up: can't start new thread" in str(r)
               for r in results), results


def test_answers_go_to_the_loop_each_caller_waits_on() -> None:
    """One batch with callers on two loops (a test or a tool that shares an engine across threads)."""
    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        batch = [Queued(lambda c: None, "read", loops[i % 2].create_future()) for i in range(6)]
        WorkerThread._send(batch, [(True, i) for i in range(6)])
        for loop in loops:
            loop.run_until_complete(asyncio.sleep(0))
        assert [q.future.result() for q in batch] == list(range(6))
    finally:
        for loop in loops:
            loop.close()


def test_a_closed_loop_is_skipped_without_failing_the_others() -> None:
    gone, alive = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        batch = [Queued(lambda c: None, "read", gone.create_future()), Queued(lambda c: None, "read", alive.create_future())]
        gone.close()
        WorkerThread._send(batch, [(True, "lost"), (False, StorageUnavailable("cannot read: gone"))])
        alive.run_until_complete(asyncio.sleep(0))
        assert isinstance(batch[1].future.exception(), StorageUnavailable)
    finally:
        alive.close()


def test_callers_on_two_threads_each_get_their_own_answers(tmp_path: Path) -> None:
    reader = _reader(tmp_path)
    answers: dict[int, list[int]] = {}

    def client(k: int) -> None:
        async def main() -> list[int]:
            return list(await asyncio.gather(*(reader.run(lambda c, v=k * 1000 + i: v, "read") for i in range(200))))

        answers[k] = asyncio.run(main())

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert answers == {k: [k * 1000 + i for i in range(200)] for k in range(2)}
    finally:
        reader.close()


def test_a_write_handed_to_the_writer_still_commits_when_the_process_exits(tmp_path: Path) -> None:
    """The loop ends right after the ticket's write was handed to the writer thread (a daemon), and the
    engine is never disposed: the process still exits at once, and the write is committed."""
    db_file = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        import asyncio
        from callcentre.config import DatabaseConfig
        from callcentre.storage import db
        from callcentre.storage.writer import writer_of
        from sqlalchemy import text

        URL = "sqlite+aiosqlite:///{db_file}"

        async def main():
            await db.upgrade(URL, progress=None)
            eng = db.create_engine(DatabaseConfig(url=URL))
            writer = writer_of(eng)

            def slow_insert(tx):
                tx.conn.exec_driver_sql("SELECT 1 FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                        "WHERE i < 300000) SELECT max(i) FROM n)")
                tx.conn.execute(text("INSERT INTO ticket_counters (day, last) VALUES ('2026-12-06', 77)"))

            task = asyncio.ensure_future(writer.run(slow_insert, "write"))
            await asyncio.sleep(0)  # run() queues the job
            await asyncio.sleep(0)  # the turn's hand-over gives it to the thread
            print("handed", flush=True)

        asyncio.run(main())
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "handed" in done.stdout
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT last FROM ticket_counters WHERE day = '2026-12-06'").fetchall() == [(77,)]
