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


def test_database_url(tmp_path: Path) -> str:
    """SQLite in tmp_path, or the PostgreSQL server named by CALLCENTRE_TEST_PG_URL (a fresh database)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'callcentre.db'}"


test_database_url.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Stack:
    cfg: Any
    services: Any
    pbx: Any
    ami_server: Any
    runner: web.AppRunner
    environ: dict[str, str]

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
    services = app[SERVICES]
    pbx.agi_port = services.agi.port
    st = Stack(cfg=cfg, services=services, pbx=pbx, ami_server=ami_server, runner=runner, environ=environ)
    try:
        yield st
    finally:
        await runner.cleanup()
        await pbx.aclose()
        await ami_server.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "stack_env(**env): extra CALLCENTRE_* settings for the stack fixture")
    os.environ.setdefault("CALLCENTRE_TESTING", "1")
