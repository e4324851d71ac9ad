"""A hardened FastAGI server (panoramisk's fast_agi spins on a half-sent header and has no limits).

FastAGI has no authentication, so: peers outside ``agi.allowed_peers`` are closed at once; at most
``agi.max_sessions`` calls at a time; the header must arrive within ``header_timeout_seconds`` and
``header_max_bytes``; no line may exceed ``line_max_bytes``. Whatever a peer sends, it only ends
that peer's connection, with one log line. When we close a session without having set
``CC_RESULT`` the dialplan sends the caller to its fallback queue, so refusing is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable

import structlog

from callcentre.agi.channel import AGIChannel
from callcentre.agi.protocol import AGIEnv
from callcentre.agi.transport import AGIConnection, HeaderRejected
from callcentre.config import AGIConfig

Handler = Callable[[AGIChannel], Awaitable[None]]
Router = Callable[[AGIEnv], "Handler | None"]

log = structlog.get_logger(__name__)

_CLOSE_TIMEOUT_SECONDS = 2.0


@dataclass(slots=True)
class AGIServerStats:
    """Counters for /health and metrics."""

    accepted: int = 0
    rejected_peer: int = 0
    rejected_busy: int = 0
    bad_header: int = 0
    unknown_script: int = 0
    handler_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class FastAGIServer:
    """Accepts Asterisk's FastAGI connections and runs ``router(env)``'s handler for each."""

    def __init__(
        self,
        config: AGIConfig,
        router: Router,
        *,
        prompt_path: str = "",
        prompt_max_seconds: float = 120.0,
    ) -> None:
        self._cfg = config
        self._router = router
        self._prompt_path = prompt_path
        self._prompt_max = prompt_max_seconds
        self._networks = [ipaddress.ip_network(n, strict=False) for n in config.allowed_peers]
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._accepting = False
        self.stats = AGIServerStats()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and listen; ``port`` then holds the real port (config port 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError("FastAGI server already started")
        cfg = self._cfg

        def connection() -> AGIConnection:
            return AGIConnection(self._on_connect, line_max_bytes=cfg.line_max_bytes, header_max_bytes=cfg.header_max_bytes)

        self._server = await asyncio.get_running_loop().create_server(connection, cfg.host, cfg.port)
        self._accepting = True
        log.info("fastagi server started", host=self._cfg.host, port=self.port)

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._server is not None and self._accepting and self._server.is_serving()

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    def stop_accepting(self) -> None:
        """Stop taking new calls (graceful shutdown); calls in progress go on."""
        self._accepting = False
        if self._server is not None and self._server.is_serving():
            self._server.close()
            log.info("fastagi server stopped accepting", active_sessions=self.active_sessions)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let sessions finish for up to ``grace_seconds``, then cancel and await them."""
        self.stop_accepting()
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=grace_seconds)
            if pending:
                log.warning("fastagi sessions cancelled at shutdown", sessions=len(pending))
                for task in pending:
                    task.cancel("server stopping")
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        log.info("fastagi server stopped")

    # ------------------------------------------------------------------ connections

    def _peer_allowed(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr.version == net.version and addr in net for net in self._networks)

    def _on_connect(self, conn: AGIConnection) -> bool:
        """A new connection (in the loop's callback): refused at once, or its session task started."""
        peername = conn.get_extra_info("peername")
        host = peername[0] if isinstance(peername, tuple) and peername else None
        if not self._accepting:
            conn.close()
            return False
        if not self._peer_allowed(host):
            self.stats.rejected_peer += 1
            log.warning("fastagi peer rejected: not in agi.allowed_peers", peer=host)
            conn.close()
            return False
        if len(self._sessions) >= self._cfg.max_sessions:
            self.stats.rejected_busy += 1
            log.warning("fastagi session refused: agi.max_sessions reached", peer=host, max_sessions=self._cfg.max_sessions)
            conn.close()
            return False
        self.stats.accepted += 1
        task = asyncio.get_running_loop().create_task(self._session(conn, host), name=f"agi-session-{host}")
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)
        return True

    async def _session(self, conn: AGIConnection, peer: str | None) -> None:
        try:
            try:
                # Where the header ends is the assembler's call: a blank line inside a caller's name
                # is not the end of Asterisk's header (protocol.EnvAssembler).
                env, lines = await conn.read_header(self._cfg.header_timeout_seconds)
            except HeaderRejected as exc:
                self.stats.bad_header += 1
                log.warning("fastagi header rejected; connection closed", peer=peer, reason=str(exc))
                return
            if not env.script:
                self.stats.bad_header += 1
                log.warning(
                    "fastagi header rejected; connection closed",
                    peer=peer,
                    reason="no agi_network_script (not an AGI header)",
                    lines=lines,
                    malformed_lines=env.malformed_lines,
                )
                return
            if env.decode_errors:
                log.warning("fastagi header had non-UTF-8 bytes; replaced", peer=peer, uniqueid=env.uniqueid,
                            lines=env.decode_errors)
            if env.control_fields:
                # Raw CR/LF or other control characters (a caller name can carry them): kept, shown escaped.
                log.warning("fastagi header values held control characters; shown escaped", peer=peer,
                            uniqueid=env.uniqueid, fields=list(env.control_fields))
            try:
                handler = self._router(env)
            except Exception:
                self.stats.handler_errors += 1
                log.exception("fastagi router failed; connection closed", script=env.script, uniqueid=env.uniqueid)
                return
            if handler is None:
                self.stats.unknown_script += 1
                log.warning("fastagi script unknown; connection closed (dialplan falls back)",
                            script=env.script, uniqueid=env.uniqueid, peer=peer)
                return
            channel = AGIChannel(
                conn,
                env,
                prompt_path=self._prompt_path,
                command_timeout=self._cfg.command_timeout_seconds,
                prompt_max_seconds=self._prompt_max,
            )
            channel.log.info("fastagi session started", script=env.script, peer=peer)
            await channel.run(handler)
            channel.log.info("fastagi session ended")
        except Exception:
            self.stats.handler_errors += 1
            log.exception("fastagi session failed", peer=peer)
        finally:
            await _close_writer(conn)


async def _close_writer(writer: AGIConnection) -> None:
    """Close politely; a peer that stopped reading gets the connection aborted."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
            await writer.wait_closed()
    except TimeoutError:
        writer.abort()
    except (ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.abort()
