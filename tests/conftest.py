"""Shared fixtures: the whole server wired as in production, against the PBX simulator over sockets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
AMI_SECRET = "test-secret-not-for-production"


PG_URL_ENV = "CALLCENTRE_TEST_PG_URL"
_PG_DB_PREFIX = "cctest_"
_PG_DB_MARKER = ".callcentre-pg-database"  # in tmp_path: the test's database name, so a 2nd call reuses it
_PG_STALE_SECONDS = 6 * 3600  # databases left by crashed runs are dropped after this long


def on_postgres() -> bool:
    """True when the suite runs against the PostgreSQL server named by CALLCENTRE_TEST_PG_URL."""
    return bool(os.environ.get(PG_URL_ENV))


def _pg_dsn(url: str, database: str | None = None) -> str:
    """The asyncpg DSN (plain postgresql://) of a SQLAlchemy URL, optionally for another database."""
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _run_pg(coro_fn: Any, *args: Any) -> Any:
    """Run an asyncpg coroutine to completion from sync code, even inside a running event loop.

    Tests call test_database_url from async tests (a loop is running), so asyncio.run must get
    its own thread.
    """
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro_fn(*args)).result(timeout=60)


async def _pg_create_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        # A name we generate ([a-z0-9_] only), so quoting it is enough.
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _pg_drop_databases(admin_dsn: str, pid: int, now: float) -> list[str]:
    """Drop this process's test databases and any left over from runs older than _PG_STALE_SECONDS."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=10)
    dropped: list[str] = []
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", _PG_DB_PREFIX + "%")
        for row in rows:
            name: str = row["datname"]
            parts = name[len(_PG_DB_PREFIX):].split("_")
            try:
                created, owner_pid = int(parts[0]), int(parts[1])
            except (IndexError, ValueError):
                continue  # not one of ours
            if owner_pid == pid or now - created > _PG_STALE_SECONDS:
                # WITH (FORCE): a test that leaked a connection must not keep its database alive.
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(name)
    finally:
        await conn.close()
    return dropped


def test_database_url(tmp_path: Path) -> str:
    """SQLite in tmp_path, or the PostgreSQL server named by CALLCENTRE_TEST_PG_URL (a fresh database).

    On PostgreSQL each tmp_path gets its own database named cctest_<epoch>_<pid>_<random>, created
    empty on first call (calling again with the same tmp_path returns the same one); the session
    drops them at the end (pytest_sessionfinish below).
    """
    base = os.environ.get(PG_URL_ENV)
    if not base:
        return f"sqlite+aiosqlite:///{tmp_path / 'callcentre.db'}"
    import secrets
    import time

    from sqlalchemy.engine import make_url

    marker = tmp_path / _PG_DB_MARKER
    if marker.exists():
        name = marker.read_text().strip()
    else:
        name = f"{_PG_DB_PREFIX}{int(time.time())}_{os.getpid()}_{secrets.token_hex(4)}"
        _run_pg(_pg_create_database, _pg_dsn(base), name)
        tmp_path.mkdir(parents=True, exist_ok=True)
        marker.write_text(name)
    return make_url(base).set(database=name).render_as_string(hide_password=False)


test_database_url.__test__ = False  # type: ignore[attr-defined]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """On PostgreSQL, drop the databases this run created, so the server does not fill up."""
    import time

    base = os.environ.get(PG_URL_ENV)
    if not base:
        return
    try:
        dropped = _run_pg(_pg_drop_databases, _pg_dsn(base), os.getpid(), time.time())
    except Exception as exc:  # cleanup must not turn a green run red; say why instead
        print(f"\nconftest: could not drop the test databases on PostgreSQL: {exc!r}")
        return
    print(f"\nconftest: dropped {len(dropped)} test database(s) on PostgreSQL")


@dataclass
class Stack:
    cfg: Any
    services: Any
    pbx: Any
    ami_server: Any
    runner: web.AppRunner
    environ: dict[str, str]
    url: str = ""  # the running app's web address (http://127.0.0.1:port)

    def http(self):
        """A browser-like HTTP client of the running app (keeps cookies for 127.0.0.1)."""
        import aiohttp

        return aiohttp.ClientSession(base_url=self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def tickets(self) -> list[Any]:
        from sqlalchemy import select

        from callcentre.storage.models import TicketRow

        async with self.services.session_factory() as s:
            return list((await s.execute(select(TicketRow).order_by(TicketRow.id))).scalars())


def stack_environ(tmp_path: Path, ami_port: int, **extra: str) -> dict[str, str]:
    env = {
        "CALLCENTRE_DATABASE__URL": test_database_url(tmp_path),
        "CALLCENTRE_AGI__PORT": "0",
        "CALLCENTRE_AMI__PORT": str(ami_port),
        "CALLCENTRE_AMI__PING_INTERVAL_SECONDS": "0.5",
        "CALLCENTRE_AMI__RECONNECT_MIN_SECONDS": "0.05",
        "CALLCENTRE_AMI__RECONNECT_MAX_SECONDS": "0.5",
        "CALLCENTRE_AMI_SECRET": AMI_SECRET,
        "CALLCENTRE_WEB__PORT": "0",
        "CALLCENTRE_IVR__DIGIT_TIMEOUT_MS": "2000",
        "CALLCENTRE_IVR__RECORD_DIR": str(tmp_path / "recordings"),
        # used only with CALLCENTRE_QUEUE_LOG__ENABLED=true; never the working directory's var/
        "CALLCENTRE_QUEUE_LOG__PATH": str(tmp_path / "var" / "queue_log"),
    }
    env.update(extra)
    return env


@pytest_asyncio.fixture
async def stack(tmp_path, request):
    """The server (FastAGI, AMI link, SQLite with the example owners) and the simulator, connected."""
    from callcentre.app import SERVICES, build_app
    from callcentre.config import load_config
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.storage.db import create_engine, session_factory, upgrade

    marker = request.node.get_closest_marker("stack_env")
    extra = marker.kwargs if marker else {}
    pbx = SimPBX(speed=50.0, prompt_dir=REPO / "prompts", prompt_prefix="callcentre", record_dir=tmp_path / "rec")
    ami_server = AMIServer(pbx, "callcentre", AMI_SECRET)
    ami_port = await ami_server.start()
    environ = stack_environ(tmp_path, ami_port, **extra)
    cfg = load_config(None, environ=environ)
    await upgrade(cfg.database.url, progress=None)
    engine = create_engine(cfg.database)
    await import_owners(session_factory(engine), REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
    await engine.dispose()

    app = build_app(cfg)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    services = app[SERVICES]
    pbx.agi_port = services.agi.port
    st = Stack(cfg=cfg, services=services, pbx=pbx, ami_server=ami_server, runner=runner, environ=environ,
               url=f"http://127.0.0.1:{port}")
    try:
        yield st
    finally:
        await runner.cleanup()
        await pbx.aclose()
        await ami_server.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "stack_env(**env): extra CALLCENTRE_* settings for the stack fixture")
    os.environ.setdefault("CALLCENTRE_TESTING", "1")
