"""Helpers for the cluster tests: a PostgreSQL URL per test, and a TCP proxy that can cut a connection
off the way a network partition does (nothing arrives, nothing is closed)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import on_postgres, test_database_url

postgres_only = pytest.mark.skipif(not on_postgres(), reason="needs PostgreSQL: CALLCENTRE_TEST_PG_URL not set")


def pg_url(tmp_path: Path) -> str:
    """A fresh PostgreSQL database for this test (SQLAlchemy URL)."""
    return test_database_url(tmp_path)


class PartitionProxy:
    """Forwards TCP to PostgreSQL until :meth:`partition`; then drops every byte both ways and keeps both
    sockets open, so neither end sees a close (a pulled cable, a firewall that drops, a frozen NAT)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.cut = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @classmethod
    def for_url(cls, url: str) -> "PartitionProxy":
        u = make_url(url)
        return cls(u.host or "127.0.0.1", u.port or 5432)

    def url_through(self, url: str) -> str:
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def partition(self) -> None:
        self.cut = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await src.read(65536)
                if not data:
                    if not self.cut:
                        dst.close()
                    return
                if not self.cut:
                    dst.write(data)
                    await dst.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
