"""A tiny AMI server for tests, speaking the captured Asterisk 20 wire format over a real socket.

It sends the banner, answers Login (accept, or ``Authentication failed`` then close, as in
ami-bad-login.txt), answers Ping in the captured ``Response: Success / Ping: Pong / Timestamp`` form,
pushes captured event bytes, simulates a restart (ami-asterisk-restart.txt: Shutdown, close, refuse
connections for a while, then FullyBooted with Uptime 0), goes half-open, drops the connection
mid-action, and records every action it received (``received``; ``reset()`` clears it).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from captures import read_capture

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
SHUTDOWN = b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: True\r\n\r\n"


def capture_events(name: str) -> list[tuple[float, dict[str, str]]]:
    """Every message Asterisk sent in a capture, with the capture time of its closing blank line.

    Parsed line by line like a reader would, so fragments (a lone ``Value: ``) are kept as they are.
    """
    out: list[tuple[float, dict[str, str]]] = []
    cur: dict[str, str] = {}
    pending = b""
    for line in read_capture(name):
        if line.tag != "<<":
            continue
        pending += line.data
        while b"\r\n" in pending:
            raw, _, pending = pending.partition(b"\r\n")
            text = raw.decode("utf-8", "replace")
            if text.startswith("Asterisk Call Manager/"):
                continue
            if text == "":
                if cur:
                    out.append((line.t, cur))
                    cur = {}
                continue
            key, _, value = text.partition(": ")
            cur[key] = value
    return out


def captured_reply(name: str, action_id: str) -> bytes:
    """The bytes Asterisk sent in reply to one captured action (its response and list events)."""
    blob = b"".join(line.data for line in read_capture(name) if line.tag == "<<")
    out = []
    for block in blob.split(b"\r\n\r\n"):
        if f"ActionID: {action_id}\r\n".encode() in block + b"\r\n" and b"Event: OriginateResponse" not in block:
            out.append(block.lstrip(b"\r\n") + b"\r\n\r\n")
    return b"".join(out)


def parse_actions(buffer: bytes) -> tuple[list[list[tuple[str, str]]], bytes]:
    """Split received bytes into actions (lists of (key, value)); return the unparsed rest."""
    actions = []
    while b"\r\n\r\n" in buffer:
        raw, _, buffer = buffer.partition(b"\r\n\r\n")
        pairs = []
        for line in raw.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(": ")
            pairs.append((key, value))
        actions.append(pairs)
    return actions, buffer


@dataclass
class ReceivedAction:
    connection: int
    pairs: list[tuple[str, str]]

    @property
    def name(self) -> str:
        return self.get("Action")

    def get(self, key: str) -> str:
        for k, v in self.pairs:
            if k.lower() == key.lower():
                return v
        return ""

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k.lower() == key.lower()]


@dataclass
class _Conn:
    number: int
    writer: asyncio.StreamWriter
    mute: bool = False


@dataclass
class AMIReplayServer:
    """Start with ``await server.start()``; ``server.port`` is the port; ``await server.close()``."""

    secret: str = "verify-secret"
    uptime: int = 2352
    # Action name (lower case) -> reply bytes with ``{action_id}`` placeholders.
    replies: dict[str, bytes] = field(default_factory=dict)
    # Action names (lower case) on which the server closes the connection without replying.
    drop_on: set[str] = field(default_factory=set)
    received: list[ReceivedAction] = field(default_factory=list)
    logins: int = 0
    connections: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._server: asyncio.base_events.Server | None = None
        self._conns: list[_Conn] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.login_event = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self._stop_listening()
        for conn in list(self._conns):
            conn.writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def reset(self) -> None:
        self.received.clear()

    def actions(self, name: str) -> list[ReceivedAction]:
        return [a for a in self.received if a.name.lower() == name.lower()]

    # ---- scenario controls -----------------------------------------------------------------
    async def push(self, data: bytes) -> None:
        """Send raw bytes (captured events) to every live connection."""
        for conn in list(self._conns):
            conn.writer.write(data)
            await conn.writer.drain()

    def go_half_open(self) -> None:
        """Current connections stop answering but stay open (like a dead peer behind NAT)."""
        for conn in self._conns:
            conn.mute = True

    async def restart(self, refuse_for: float) -> None:
        """Shutdown event, close everything, refuse connections, then listen again with Uptime 0."""
        await self.push(SHUTDOWN)
        await self._stop_listening()
        for conn in list(self._conns):
            conn.writer.close()
        await asyncio.sleep(refuse_for)
        self.uptime = 0
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def drop_all(self) -> None:
        for conn in list(self._conns):
            conn.writer.close()

    async def wait_for_action(self, name: str, count: int = 1, within: float = 3.0) -> None:
        """Poll (bounded) until ``count`` actions named ``name`` were received."""
        for _ in range(int(within / 0.01)):
            if len(self.actions(name)) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} {name} action(s) not received within {within} s")

    # ---- internals -------------------------------------------------------------------------
    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        conn = _Conn(self.connections, writer)
        self._conns.append(conn)
        try:
            writer.write(BANNER)
            await writer.drain()
            buffer = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                actions, buffer = parse_actions(buffer + chunk)
                for pairs in actions:
                    action = ReceivedAction(conn.number, pairs)
                    self.received.append(action)
                    if conn.mute:
                        continue
                    if not await self._answer(conn, action):
                        writer.close()
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.remove(conn)
            writer.close()
            self._handlers.discard(task)

    async def _answer(self, conn: _Conn, action: ReceivedAction) -> bool:
        """Write the reply; False when the connection must close."""
        name = action.name.lower()
        aid = action.get("ActionID")
        w = conn.writer
        if name in self.drop_on:
            return False
        if name == "login":
            if action.get("Secret") != self.secret:
                w.write(f"Response: Error\r\nActionID: {aid}\r\nMessage: Authentication failed\r\n\r\n".encode())
                await w.drain()
                return False
            self.logins += 1
            w.write(
                f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n"
                f"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: {self.uptime}\r\n"
                f"LastReload: {self.uptime}\r\nStatus: Fully Booted\r\n\r\n".encode()
            )
        elif name == "ping":
            w.write(
                f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\nTimestamp: {time.time():.6f}\r\n\r\n".encode()
            )
        elif name in self.replies:
            w.write(self.replies[name].replace(b"{action_id}", aid.encode()))
        else:
            w.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: OK\r\n\r\n".encode())
        await w.drain()
        return True


def with_action_id(reply: bytes, captured_id: str) -> bytes:
    """Turn a captured reply into a template for :attr:`AMIReplayServer.replies`."""
    return re.sub(rb"ActionID: " + re.escape(captured_id.encode()) + rb"\r\n", b"ActionID: {action_id}\r\n", reply)
