"""Engine, sessions, migrations and the health check.

SQLite (the default, one file) and PostgreSQL are both supported; nothing here is SQLite-only
except the per-connection PRAGMAs, applied only to SQLite connections.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, literal, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from callcentre.config import DatabaseConfig
from callcentre.storage.reader import PooledReader, SqliteReader, reader_of, register_reader
from callcentre.storage.writer import (
    SQLITE_SYNCHRONOUS,
    SYNCHRONOUS_CHOICES,
    PooledWriter,
    SqliteWriter,
    register_writer,
    writer_of,
)

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, or None (not SQLite, in-memory, or a URI form)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _sqlite_in_memory(url: str) -> bool:
    """An in-memory SQLite database: only the connection that made it can see it."""
    u = make_url(url)
    db = u.database or ""
    return not db or db == ":memory:" or "mode=memory" in db or u.query.get("mode") == "memory"


def _sqlite_pragmas(busy_ms: int, synchronous: str) -> Callable[[Any, Any], None]:
    """The settings every SQLite connection gets (the pool's and the writer's)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
            try:
                cur.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                # A read-only file cannot switch journal mode; reads still work, writes will
                # fail with a clear error where they happen.
                log.warning("sqlite journal mode not changed", error=str(exc))
            cur.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cur.close()

    return on_connect


def create_engine(cfg: DatabaseConfig, *, sqlite_synchronous: str = SQLITE_SYNCHRONOUS) -> AsyncEngine:
    """Build the async engine; for SQLite make the file's folder, set WAL, busy timeout, FKs and
    ``synchronous`` (see :mod:`callcentre.storage.writer` for what a commit then survives); for PostgreSQL turn the busy timeout into lock_timeout.

    WAL lets the web pages read while a ticket is written; the busy timeout is how long a write
    waits for a lock held by another process before it fails (and the IVR falls back to an agent).
    The engine gets its one writer (:mod:`callcentre.storage.writer`): within this process the hot
    writes do not wait on each other's locks, they are grouped into one transaction.
    """
    url = make_url(cfg.url)
    is_sqlite = url.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {"echo": cfg.echo}
    if is_sqlite:
        if sqlite_synchronous not in SYNCHRONOUS_CHOICES:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(SYNCHRONOUS_CHOICES)}")
        path = _sqlite_file(cfg.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # sqlite3's own timeout is the busy handler too; the PRAGMA below makes it explicit.
        kwargs["connect_args"] = {"timeout": cfg.busy_timeout_seconds}
    else:
        kwargs["pool_pre_ping"] = True
        # The busy timeout means the same on PostgreSQL: a write blocked by another's lock fails
        # after this long (lock_timeout, SQLSTATE 55P03) instead of holding a caller forever.
        lock_ms = int(cfg.busy_timeout_seconds * 1000)
        # A server that does not answer (down, firewalled) fails after connect_timeout_seconds instead
        # of asyncpg's 60 s default, so a caller is sent to an agent quickly.
        kwargs["connect_args"] = {"server_settings": {"lock_timeout": str(lock_ms)}, "timeout": cfg.connect_timeout_seconds}
    engine = create_async_engine(url, **kwargs)
    if is_sqlite:
        on_connect = _sqlite_pragmas(int(cfg.busy_timeout_seconds * 1000), sqlite_synchronous)
        event.listen(engine.sync_engine, "connect", on_connect)
    if is_sqlite and not _sqlite_in_memory(cfg.url):
        # on_connect carries the PRAGMAs (the busy timeout and ``sqlite_synchronous``) to every connection.
        register_writer(engine, SqliteWriter(url, busy_timeout_seconds=cfg.busy_timeout_seconds, on_connect=on_connect))
        register_reader(engine, SqliteReader(url, busy_timeout_seconds=cfg.busy_timeout_seconds, on_connect=on_connect))
    else:
        register_writer(engine, PooledWriter(engine))
        register_reader(engine, PooledReader(engine))
    return engine


def sync_engines(engine: AsyncEngine) -> list[Engine]:
    """Every synchronous engine behind ``engine``: its own and, for a SQLite file, its writer's and its
    reader's (for tests that inject faults with engine events)."""
    writer, reader = writer_of(engine), reader_of(engine)
    return ([engine.sync_engine] + ([writer.engine] if isinstance(writer, SqliteWriter) else [])
            + ([reader.engine] if isinstance(reader, SqliteReader) else []))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: rows read in a transaction stay usable after it commits.
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a '%' in a (URL-escaped) password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest migration this code ships."""
    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def upgrade(url: str, progress: Callable[[str], object] | None = print, *,
                  default_hotline: str | None = None) -> str | None:
    """Apply every pending migration (to head); safe to run again. Returns the revision reached.

    Runs inside the caller's event loop: Alembic is given a connection instead of opening its own.
    ``default_hotline``: the hotline rows older than hotlines belong to (migration 0006; default
    ``default``, the implicit hotline of a configuration without ``hotlines:``).
    """
    say = progress or (lambda _msg: None)
    engine = create_engine(DatabaseConfig(url=url))
    alembic_cfg = _alembic_config(url)

    def _run(conn: Connection) -> tuple[str | None, str | None]:
        before = _current_revision(conn)
        alembic_cfg.attributes["connection"] = conn
        if default_hotline:
            alembic_cfg.attributes["default_hotline"] = default_hotline
        command.upgrade(alembic_cfg, "head")
        return before, _current_revision(conn)

    try:
        async with engine.begin() as conn:
            before, after = await conn.run_sync(_run)
    finally:
        await engine.dispose()
    if before == after:
        say(f"database is up to date (revision {after})")
    else:
        say(f"database upgraded from revision {before or 'empty'} to {after}")
    log.info("database migrated", before=before, after=after)
    return after


async def check(engine: AsyncEngine) -> dict[str, Any]:
    """Health check: can we reach the database, and is its schema the one this code expects?"""
    started = time.monotonic()
    result: dict[str, Any] = {"ok": False, "dialect": engine.dialect.name, "head": head_revision()}
    try:
        async with engine.connect() as conn:
            await conn.execute(select(literal(1)))
            result["revision"] = await conn.run_sync(_current_revision)
    except Exception as exc:  # any failure is the answer of a health check, not a crash
        result["error"] = f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}"
        result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        return result
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    result["up_to_date"] = result["revision"] == result["head"]
    result["ok"] = result["up_to_date"]
    if not result["up_to_date"]:
        result["error"] = f"schema at revision {result['revision']}, expected {result['head']}: run 'callcentre db upgrade'"
    return result
