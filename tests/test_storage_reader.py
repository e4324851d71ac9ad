"""The engine's reader (callcentre/storage/reader.py): the directory's look-ups at the start of calls,
run together in one hop, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcentre.config import DatabaseConfig
from callcentre.domain.ports import StorageUnavailable
from callcentre.storage import db
from callcentre.storage.models import Owner, Phone
from callcentre.storage.reader import PooledReader, SqliteReader, reader_of, reads_for
from callcentre.storage.repo import SqlDirectory
from tests.conftest import on_postgres, test_database_url
from tests.test_storage import T0, seed, sqlite_only


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    eng = db.create_engine(DatabaseConfig(url=url, busy_timeout_seconds=0.5))
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.session_factory(engine)


NUMBERS = ("+862888881234", "+8613800138000", "+8613900001111", "+447700900123", "+8600000000000")


async def test_the_engine_has_the_reader_of_its_backend(engine: AsyncEngine) -> None:
    reader = reader_of(engine)
    assert isinstance(reader, PooledReader if on_postgres() else SqliteReader)
    assert reads_for(db.session_factory(engine)) is reader


async def test_lookups_arriving_together_share_hops_and_each_gets_its_own_answer(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    directory = SqlDirectory(sessions)
    alone = {n: await directory.find_by_phone(n) for n in NUMBERS}
    assert [len(alone[n]) for n in NUMBERS] == [2, 1, 2, 1, 0]
    reader = reader_of(engine)
    before = reader.batches
    asked = [NUMBERS[i % len(NUMBERS)] for i in range(300)]
    answers = await asyncio.gather(*(directory.find_by_phone(n) for n in asked))
    assert answers == [alone[n] for n in asked]
    hops = reader.batches - before
    assert 1 <= hops <= 300 // 10, f"300 look-ups took {hops} hops"


async def test_a_lookup_sees_what_was_committed_just_before(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    directory = SqlDirectory(sessions)
    assert await directory.find_by_phone("+8613700000001") == []
    async with sessions() as s, s.begin():
        owner = Owner(name="New Owner", vip=False, created_at=T0, updated_at=T0)
        s.add(owner)
        await s.flush()
        s.add(Phone(number="+8613700000001", raw="13700000001", owner_id=owner.id, unit_id=None))
    # A phone without units matches nobody's unit yet; give the owner one through the unit look-up's data.
    async with sessions() as s, s.begin():
        await s.execute(text("INSERT INTO owner_units (owner_id, unit_id, role) "
                             "SELECT :o, id, 'owner' FROM units WHERE building = '2' AND unit = '802'"), {"o": owner.id})
    found = await directory.find_by_phone("+8613700000001")
    assert [(m.owner_name, m.building, m.unit) for m in found] == [("New Owner", "2", "802")]


async def test_a_job_that_fails_on_its_own_fails_alone(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    reads = reads_for(sessions)

    def count(conn: Connection) -> int:
        return int(conn.execute(text("SELECT count(*) FROM owners")).scalar_one())

    def broken(conn: Connection) -> int:
        raise ValueError("a bug in this one read")

    results = await asyncio.gather(reads.run(count, "count"), reads.run(broken, "break"), reads.run(count, "count"),
                                   return_exceptions=True)
    assert results[0] == results[2] == 4
    assert isinstance(results[1], ValueError)


async def test_a_failing_database_fails_every_read_of_the_hop_then_the_reader_recovers(
        engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    directory = SqlDirectory(sessions)
    dbapi = engine.dialect.loaded_dbapi

    def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if "phones" in statement:
            raise dbapi.OperationalError("database is locked")

    engines = db.sync_engines(engine)
    for e in engines:
        event.listen(e, "before_cursor_execute", before)
    try:
        results = await asyncio.gather(*(directory.find_by_phone(n) for n in NUMBERS), return_exceptions=True)
    finally:
        for e in engines:
            event.remove(e, "before_cursor_execute", before)
    assert all(isinstance(r, StorageUnavailable) for r in results), results
    assert all("cannot look up a phone number: database is locked" in str(r) for r in results)
    assert len(await directory.find_by_phone("+8613800138000")) == 1


async def test_a_cancelled_lookup_leaves_the_others_answered(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    directory = SqlDirectory(sessions)
    tasks = [asyncio.ensure_future(directory.find_by_phone(n)) for n in NUMBERS * 4]
    await asyncio.sleep(0)  # every look-up is queued
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [len(r) for i, r in enumerate(results) if i != 3] == [[2, 1, 2, 1, 0][i % 5] for i in range(20) if i != 3]


@sqlite_only
async def test_the_reader_reads_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """WAL: a look-up at the start of a call never waits for a writer, ours or another process's."""
    import sqlite3

    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    eng = db.create_engine(DatabaseConfig(url=url, busy_timeout_seconds=0.2))
    try:
        sessions = db.session_factory(eng)
        await seed(sessions)
        holder = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("UPDATE owners SET name = 'being edited' WHERE id = 1")
            found = await SqlDirectory(sessions).find_by_phone("+8613800138000")
            assert [m.owner_name for m in found] == ["张伟"]  # the last committed value
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        await eng.dispose()
