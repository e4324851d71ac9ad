"""``python -m callcentre serve`` as a child process, as systemd or a container runtime runs it.

Its JSON log lines (stderr) are collected by an owned reader task, so a test can wait for a log
event and assert on every line the server wrote.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


class ServerProcess:
    """``python -m callcentre serve`` with its JSON log lines collected by an owned reader task."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self.env = env
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callcentre", "serve", env=self.env, cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(), name="serve-log-reader")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            raw = await self.proc.stderr.readline()
            if not raw:
                return
            text = raw.decode("utf-8", "replace").rstrip("\n")
            self.raw.append(text)
            try:
                self.lines.append(json.loads(text))
            except ValueError:
                pass
            self._changed.set()

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]

    async def wait_log(self, event: str, limit: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first log line with this event (and these fields); AssertionError if the server exits first."""
        try:
            async with asyncio.timeout(limit):
                while True:
                    for line in self.lines:
                        if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                            return line
                    if self.proc is not None and self.proc.returncode is not None:
                        raise AssertionError(
                            f"server exited {self.proc.returncode} before {event!r}:\n" + "\n".join(self.raw[-30:]))
                    self._changed.clear()
                    with_wait = asyncio.ensure_future(self._changed.wait())
                    try:
                        await asyncio.wait({with_wait}, timeout=0.1)
                    finally:
                        with_wait.cancel()
                        await asyncio.gather(with_wait, return_exceptions=True)
        except TimeoutError:
            raise AssertionError(f"no {event!r} {fields or ''} in the server log within {limit} s:\n"
                                 + "\n".join(self.raw[-40:])) from None

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
