"""Owner CSV import: good files, every kind of bad row with its line, all or nothing, re-import."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcentre.config import DatabaseConfig
from callcentre.owners_import import ImportFailed, import_owners
from callcentre.storage import db
from callcentre.storage.models import Owner, OwnerUnit, Phone, Unit
from callcentre.storage.repo import SqlDirectory
from tests.conftest import on_postgres, test_database_url

FIXTURE = Path(__file__).parent / "fixtures" / "owners-sample.csv"
EXAMPLE = Path(__file__).parent.parent / "examples" / "owners.csv"
HEADER = "building,unit,owner_name,phones,fee_balance,fee_due_date,vip,language,pin,role\n"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    eng = db.create_engine(DatabaseConfig(url=url))
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.session_factory(engine)


async def run(sessions: async_sessionmaker[AsyncSession], path: Path, **kw: object):  # type: ignore[no-untyped-def]
    return await import_owners(sessions, path, country_code="86", trunk_prefix="0", **kw)  # type: ignore[arg-type]


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int, int, int]:
    async with sessions() as s:
        return tuple(  # type: ignore[return-value]
            [(await s.execute(select(func.count()).select_from(t))).scalar_one() for t in (Owner, Unit, OwnerUnit, Phone)]
        )


def write(tmp_path: Path, text: str, name: str = "owners.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def test_good_file(sessions: async_sessionmaker[AsyncSession]) -> None:
    said: list[str] = []
    report = await run(sessions, FIXTURE, progress=said.append)
    assert (report.rows, report.owners_created, report.units_created) == (5, 4, 3)
    assert report.created == 7 and report.updated == 0
    assert await counts(sessions) == (4, 3, 5, 7)
    assert said and "5 rows" in said[0]

    directory = SqlDirectory(sessions)
    shared = await directory.find_by_phone("+862888881234")
    assert sorted(m.owner_name for m in shared) == ["张伟", "李娜"]
    zhang = next(m for m in shared if m.owner_name == "张伟")
    assert (zhang.building, zhang.unit, zhang.fee_balance_cents, zhang.vip, zhang.has_pin) == ("1", "1201", 256000, True, True)
    assert await directory.check_pin(zhang.owner_id, "2468")
    async with sessions() as s:
        hashes = (await s.execute(select(Owner.pin_hash).where(Owner.pin_hash.is_not(None)))).scalars().all()
    assert hashes and all(h.startswith("$argon2") and "2468" not in h for h in hashes)

    wang = await directory.find_by_phone("+8613900001111")  # written two ways in the file
    assert [(m.owner_name, m.building, m.unit, m.fee_balance_cents) for m in wang] == [
        ("王芳", "2", "802", 78050),
        ("王芳", "5", "1501", -2000),
    ]
    assert len({m.owner_id for m in wang}) == 1
    emma = await directory.find_by_phone("+447700900123")
    assert emma[0].language == "en"
    unit = await directory.find_unit("2", "802")
    assert [m.owner_name for m in unit] == ["王芳", "Emma Wilson"]  # owner before tenant


async def test_reimport_updates_never_duplicates(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    await run(sessions, FIXTURE)
    before = await counts(sessions)
    again = await run(sessions, FIXTURE)
    assert (again.created, again.updated, again.owners_unchanged, again.units_unchanged) == (0, 0, 4, 3)
    assert await counts(sessions) == before

    changed = FIXTURE.read_text(encoding="utf-8-sig").replace("780.5,2026-11-15", "0,").replace(
        "+86 138-0013-8000;028-8888-1234", "028-8888-1234"
    )
    report = await run(sessions, write(tmp_path, changed))
    assert (report.units_updated, report.owners_updated, report.phones_removed, report.created) == (1, 1, 1, 0)
    directory = SqlDirectory(sessions)
    assert await directory.find_by_phone("+8613800138000") == []
    assert [m.fee_due_date for m in await directory.find_unit("2", "802")] == [None, None]


async def test_example_directory_imports(sessions: async_sessionmaker[AsyncSession]) -> None:
    report = await run(sessions, EXAMPLE)
    assert report.owners_created >= 30
    assert len(await SqlDirectory(sessions).find_by_phone("+862888881234")) == 2
    assert len(await SqlDirectory(sessions).find_by_phone("+8613900001111")) == 2


BAD_ROWS = [
    # (row text, expected reason fragment); line numbers follow from the order (header is line 1).
    (",1201,张三,13800138001,,,,,,", "building is empty"),
    ("1,1202,,13800138002,,,,,,", "owner_name is empty"),
    ("1,1203,张三,12345,,,,,,", "internal extension"),
    ("1,1204,张三,13800138003;not-a-phone,,,,,,", "'not-a-phone' is not a valid phone number"),
    ("1,1205,张三,88881234,,,,,,", "needs its area code"),
    ("1,1206,张三,13800138004,12.345,,,,,", "fee_balance '12.345'"),
    ("1,1207,张三,13800138005,¥100,,,,,", "fee_balance"),
    ("1,1208,张三,13800138006,100,2026-13-01,,,,", "fee_due_date '2026-13-01'"),
    ("1,1209,张三,13800138007,,2026-12-01,,,,", "fee_due_date is given without fee_balance"),
    ("1,1210,张三,13800138008,,,maybe,,,", "vip 'maybe'"),
    ("1,1211,张三,13800138009,,,,fr,,", "language 'fr'"),
    ("1,1212,张三,13800138010,,,,,12,", "pin must be 4 to 8 digits"),
    ("1,1213,张三,13800138011,,,,,12ab,", "pin must be 4 to 8 digits"),
    ("1,1214,张三,13800138012,,,,,,landlord", "role 'landlord'"),
    ("1,1215,张三,13800138013", "expected 10 fields, found 4"),
    ("1,1216,张三,13800138014,100,,,,,", None),  # good on its own …
    ("1,1216,李四,13800138015,200,,,,,", "fee_balance/fee_due_date differ from line"),  # … but not with this
    ("1,1217,王五,13800138016,,,,,,", None),
    ("1,1217,王五,13800138016,,,,,,", "is already on line"),
    ('"1\x07",1218,张三,13800138017,,,,,,', "building '1\\x07' contains control characters"),
]


async def test_every_bad_row_reported_with_line_and_nothing_written(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await run(sessions, FIXTURE)
    before = await counts(sessions)
    # A good change to an existing owner, which must not be applied either.
    good = "2,0802,王芳,13900001111,999.99,2026-12-31,no,zh,,owner\n"
    text = HEADER + good + "".join(row + "\n" for row, _ in BAD_ROWS)
    with pytest.raises(ImportFailed) as info:
        await run(sessions, write(tmp_path, text))
    got = [(e.line, e.reason) for e in info.value.errors]
    expected = [(i + 3, frag) for i, (_, frag) in enumerate(BAD_ROWS) if frag]
    for line, frag in expected:
        assert any(ln == line and frag in reason for ln, reason in got), (line, frag, got)
    assert len(got) == len(expected), got
    assert f"line {expected[0][0]}:" in str(info.value)
    assert await counts(sessions) == before
    assert [m.fee_balance_cents for m in await SqlDirectory(sessions).find_unit("2", "802")][0] == 78050


async def test_several_problems_in_one_row(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    with pytest.raises(ImportFailed) as info:
        await run(sessions, write(tmp_path, HEADER + ",,,x,y,z,q,r,s,t\n"))
    reasons = [e.reason for e in info.value.errors]
    assert all(e.line == 2 for e in info.value.errors)
    assert len(reasons) >= 8, reasons
    assert "pin must be 4 to 8 digits" in reasons  # the PIN itself is never echoed


async def test_line_numbers_count_physical_lines(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    text = "building,unit,owner_name,phones,notes\n\n1,101,甲,13800138001,\"two\nlines\"\n1,102,乙,bad,\n"
    with pytest.raises(ImportFailed) as info:
        await run(sessions, write(tmp_path, text))
    assert [(e.line, "bad" in e.reason) for e in info.value.errors] == [(5, True)]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("building,unit,owner_name,phone\n1,101,甲,13800138001\n", 1, "unknown column(s): phone"),
        ("building,owner_name,phones\n1,甲,13800138001\n", 1, "missing column(s): unit"),
        ("building,unit,owner_name,unit\n1,101,甲,101\n", 1, "repeated column(s): unit"),
        ("", 0, "the file is empty"),
        ("\n\n", 0, "the file is empty"),
        (HEADER, 1, "no owners"),
    ],
)
async def test_file_level_problems(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    with pytest.raises(ImportFailed) as info:
        await run(sessions, write(tmp_path, text))
    assert [(e.line, fragment in e.reason) for e in info.value.errors] == [(line, True)], info.value.errors
    assert await counts(sessions) == (0, 0, 0, 0)


async def test_not_utf8_names_the_line(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes((HEADER + "1,101,Li,13800138001,,,,,,\n1,102,张三,13800138002,,,,,,\n").encode("gbk"))
    with pytest.raises(ImportFailed) as info:
        await run(sessions, path)
    assert info.value.errors[0].line == 3 and "UTF-8" in info.value.errors[0].reason


async def test_missing_file(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="cannot read"):
        await run(sessions, tmp_path / "nope.csv")


async def test_area_code_for_local_numbers(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    path = write(tmp_path, "building,unit,owner_name,phones\n3,101,朱红梅,8765 4321\n")
    with pytest.raises(ImportFailed, match="area code"):
        await run(sessions, path)
    await run(sessions, path, area_code="028")
    assert [m.owner_name for m in await SqlDirectory(sessions).find_by_phone("+862887654321")] == ["朱红梅"]


async def test_hostile_names_are_cleaned(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    path = write(tmp_path, 'building,unit,owner_name,phones\n1,101,"张\u202e三\r\nAction: Hangup",13800138001\n')
    await run(sessions, path)
    matches = await SqlDirectory(sessions).find_by_phone("+8613800138001")
    assert [m.owner_name for m in matches] == ["张三 Action: Hangup"]


@pytest.mark.skipif(on_postgres(), reason="SQLite-specific (an exclusive SQLite file lock); see the PostgreSQL counterpart")
async def test_locked_database_is_storage_unavailable(tmp_path: Path) -> None:
    import sqlite3

    from callcentre.domain.ports import StorageUnavailable

    path = tmp_path / "locked.db"
    await db.upgrade(f"sqlite+aiosqlite:///{path}", progress=None)
    eng = db.create_engine(DatabaseConfig(url=f"sqlite+aiosqlite:///{path}", busy_timeout_seconds=0.2))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageUnavailable, match="locked"):
            await run(db.session_factory(eng), FIXTURE)
        holder.execute("ROLLBACK")
        assert await counts(db.session_factory(eng)) == (0, 0, 0, 0)
    finally:
        holder.close()
        await eng.dispose()


@pytest.mark.postgres
@pytest.mark.skipif(not on_postgres(), reason="needs PostgreSQL: CALLCENTRE_TEST_PG_URL not set")
async def test_locked_table_on_postgres_is_storage_unavailable(tmp_path: Path) -> None:
    """Counterpart of the SQLite lock test: another session holds the phones table; the import
    gives up after the busy timeout (lock_timeout), writes nothing, and works once it lets go."""
    from callcentre.domain.ports import StorageUnavailable

    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    eng = db.create_engine(DatabaseConfig(url=url, busy_timeout_seconds=0.2))
    holder_eng = db.create_engine(DatabaseConfig(url=url))
    try:
        async with holder_eng.connect() as holder:
            trans = await holder.begin()
            await holder.exec_driver_sql("LOCK TABLE phones IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StorageUnavailable, match="lock timeout"):
                await run(db.session_factory(eng), FIXTURE)
            await trans.rollback()
        assert await counts(db.session_factory(eng)) == (0, 0, 0, 0)
        await run(db.session_factory(eng), FIXTURE)
        assert (await counts(db.session_factory(eng)))[0] > 0
    finally:
        await holder_eng.dispose()
        await eng.dispose()


async def test_a_unit_written_with_leading_zeros_is_found_however_it_is_keyed(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """The owners file writes 0305; callers key 0305 or 305 (and building 1 or 01): one unit.

    Labels are stored canonically (digits without leading zeros), so the file's "0305" and a later
    file's "305" are the same unit, not two."""
    path = write(tmp_path, HEADER + "1,0305,陈建国,13800138001,1280.50,2026-10-31,no,zh,,owner\n"
                 "01,305,陈太太,13800138009,1280.50,2026-10-31,no,zh,,owner\n")
    report = await run(sessions, path)
    assert report.units_created == 1
    async with sessions() as s:
        [(building, unit)] = (await s.execute(select(Unit.building, Unit.unit))).all()
    assert (building, unit) == ("1", "305")
    directory = SqlDirectory(sessions)
    for keyed in (("1", "0305"), ("1", "305"), ("01", "0305"), ("001", "00305")):
        found = await directory.find_unit(*keyed)
        assert [m.owner_name for m in found] == ["陈建国", "陈太太"], keyed
    # and a phone's own matches carry the same unit as the keyed look-up (the IVR compares unit ids)
    [mine] = await directory.find_by_phone("+8613800138001")
    assert mine.unit_id == found[0].unit_id
    assert await directory.find_unit("1", "3050") == [] and await directory.find_unit("10", "305") == []
