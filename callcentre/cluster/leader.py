"""Leader election: exactly one node at a time runs the run-once parts (call distribution and the loops).

**How.** Each node keeps ONE dedicated asyncpg connection (not SQLAlchemy's pool: a session-level
advisory lock belongs to one server session, and a pool resets, recycles and lends sessions out, so
the lock would silently follow a connection into someone else's hands or vanish at ``dispose()``).
A follower calls ``pg_try_advisory_lock(class, key)`` every ``retry_seconds`` (never the blocking
form). The winner increments the role's *term* in ``callcentre_leader`` (the fencing token) and then
awaits ``on_elected(term)``. While leading it checks every ``heartbeat_seconds`` that its session
still holds the lock; when that check fails or takes longer than ``heartbeat_timeout_seconds``, or
the connection closes, :attr:`is_leader` turns False at once and ``on_demoted()`` is awaited.
``on_elected`` and ``on_demoted`` are always awaited one after the other, never overlapping, from
one task. A clean :meth:`stop` awaits ``on_demoted()`` first and then unlocks, so the other node
takes over in one ``retry_seconds`` instead of waiting for a timeout.

**When does the other node take over?** PostgreSQL frees a session lock when the session ends:

* the process is killed (SIGKILL, a crash, OOM): the kernel closes its socket, the server sees the
  connection end at once, and the follower wins at its next try (``retry_seconds``, 2 s by default);
* the node vanishes without closing anything (power cut, network partition, frozen VM): no FIN ever
  reaches the server. ``idle_in_transaction_session_timeout`` does not help (the lock session is idle
  *outside* a transaction). Instead the lock session sets ``idle_session_timeout = lease_seconds``
  (PostgreSQL 14+): a healthy leader talks every ``heartbeat_seconds``, so only a node that has gone
  silent is cut off by the server, ``lease_seconds`` after the last thing it sent: a lease enforced
  by the database itself, which also works through proxies and NAT that keep a dead TCP connection
  open. The leader steps down on its own after ``heartbeat_seconds + heartbeat_timeout_seconds``
  without an answer, before the lease can run out (:class:`~callcentre.cluster.config.ClusterConfig`
  refuses settings where it could not). On PostgreSQL older than 14 the session falls back to TCP
  keepalives of about ``lease_seconds`` (they only help when the peer's host is gone, not a proxy).

**Fencing.** A leader that is cut off may still have a write in flight through the application's
own connection pool. Writes that only the leader may make call :func:`check_fence` inside their
transaction with the term they were elected with: it reads the role's row ``FOR SHARE``, so either
the write commits before a new leader's term increment, or it sees the new term and is refused
with :class:`FencedOut`.

On SQLite (one node by definition) :class:`LocalLeader` is leader from :meth:`start` to :meth:`stop`
behind the same interface; :func:`make_elector` picks one by the database URL.

``python -m callcentre.cluster.leader --url postgresql+asyncpg://… --role acd`` runs one elector and
prints a JSON line per change (used by the tests to SIGKILL a leader; also a quick check of a
database before deploying a second node).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

import asyncpg
import structlog
from sqlalchemy import text

from callcentre.cluster.config import ClusterConfig
from callcentre.cluster.pg import LOCK_CLASS, asyncpg_dsn, ensure_schema, is_postgres, role_key
from callcentre.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

OnElected = Callable[[int], Awaitable[None]]
OnDemoted = Callable[[], Awaitable[None]]
Connect = Callable[..., Awaitable[Any]]

_HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
    "AND classid = ($1::int4)::oid AND objid = ($2::int4)::oid AND objsubid = 2 AND granted"
)
_BUMP = (
    "INSERT INTO callcentre_leader (role, term, node, elected_at) VALUES ($1, 1, $2, now()) "
    "ON CONFLICT (role) DO UPDATE SET term = callcentre_leader.term + 1, node = EXCLUDED.node, "
    "elected_at = EXCLUDED.elected_at RETURNING term"
)
# What the connection-level errors look like: the session is gone or unusable, start again.
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. (Not ``asyncio.wait_for``: on Python 3.11 it can swallow a
    cancellation that arrives as the awaited thing completes, and then ``stop()`` would hang.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class FencedOut(Exception):
    """A write of a leader that is no longer the leader (its term is not the current one)."""


class Elector(Protocol):
    """What the composition root needs from an elector, on PostgreSQL or SQLite."""

    role: str
    node: str

    @property
    def is_leader(self) -> bool: ...

    @property
    def term(self) -> int | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def fence(self, session: Any, term: int) -> None: ...

    def try_now(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


async def check_fence(session: Any, role: str, term: int) -> None:
    """Refuse a leader-only write of ``term`` unless ``term`` is still the role's current term.

    ``session`` is the SQLAlchemy ``AsyncSession`` or ``AsyncConnection`` of the write's own
    transaction; the role's row stays share-locked until that transaction ends, so a new leader's
    election waits for the write to commit or roll back (never the other way round).
    """
    row = (await session.execute(
        text("SELECT term, node FROM callcentre_leader WHERE role = :role FOR SHARE"), {"role": role})).first()
    if row is None or int(row[0]) != int(term):
        current = None if row is None else f"term {row[0]} of {row[1]}"
        raise FencedOut(f"{role}: term {term} is no longer the leader ({current or 'no leader row'})")


class _Leadership:
    """What both electors answer the same way: whether this node leads now, and in which term."""

    _leader: bool
    _term: int | None

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def term(self) -> int | None:
        return self._term if self._leader else None


class LocalLeader(_Leadership):
    """One node (SQLite): leader from :meth:`start` to :meth:`stop`; same interface as the PostgreSQL one."""

    def __init__(self, role: str, *, node: str, on_elected: OnElected, on_demoted: OnDemoted) -> None:
        self.role, self.node = role, node
        self._on_elected, self._on_demoted = on_elected, on_demoted
        self._term = 0
        self._leader = False
        self._since: datetime | None = None

    async def start(self) -> None:
        if self._leader:
            raise RuntimeError(f"{self.role}: already started")
        self._term = (self._term or 0) + 1
        self._leader = True
        self._since = datetime.now(timezone.utc)
        log.info("leadership acquired", role=self.role, node=self.node, term=self._term, backend="local")
        await self._on_elected(self._term)

    async def stop(self) -> None:
        if not self._leader:
            return
        self._leader = False
        await self._on_demoted()
        log.info("leadership released", role=self.role, node=self.node, term=self._term, backend="local")

    async def fence(self, session: Any, term: int) -> None:
        if not self._leader or term != self._term:
            raise FencedOut(f"{self.role}: term {term} is no longer the leader")

    def try_now(self) -> None:
        """Nothing to try: the only node is the leader while it runs."""

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "node": self.node, "backend": "local", "state": "leader" if self._leader else "stopped",
                "leader": self._leader, "term": self.term, "since": self._since.isoformat() if self._since else None,
                "leader_node": self.node if self._leader else None}


class _Lost(Exception):
    """The lock session is gone or cannot be trusted any more."""


class PgLeaderElector(_Leadership):
    """Leader election for one role over a PostgreSQL advisory lock; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        role: str,
        *,
        node: str,
        on_elected: OnElected,
        on_demoted: OnDemoted,
        retry_seconds: float = 2.0,
        heartbeat_seconds: float = 1.0,
        heartbeat_timeout_seconds: float = 1.0,
        lease_seconds: float = 6.0,
        connect_timeout_seconds: float = 5.0,
        connect: Connect = asyncpg.connect,
        create_schema: bool = True,
    ) -> None:
        self.role, self.node = role, node
        self._dsn = dsn
        self._key = role_key(role)
        self._on_elected, self._on_demoted = on_elected, on_demoted
        self.retry_seconds = retry_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self.lease_seconds = lease_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self._connect = connect
        self._create_schema = create_schema  # False when the migration made the tables (callcentre serve)
        self._task: asyncio.Task[None] | None = None
        self._leader = False
        self._term: int | None = None
        self._state = "stopped"
        self._since: datetime | None = None
        self._lost_reason = ""
        self.elections = 0
        self.losses = 0
        self._changed = asyncio.Event()  # set at every state change (tests and tools wait on it)
        self._poke = asyncio.Event()  # a follower's wait for its next try ends early (try_now, a lost session)
        self.leader_node: str | None = None  # a follower: the node the leader row names (last seen)
        self.log = log.bind(role=role, node=node)

    @classmethod
    def from_config(cls, url: str, role: str, cfg: ClusterConfig, *, on_elected: OnElected, on_demoted: OnDemoted,
                    connect_timeout_seconds: float = 5.0, create_schema: bool = True) -> "PgLeaderElector":
        return cls(asyncpg_dsn(url), role, node=cfg.node(), on_elected=on_elected, on_demoted=on_demoted,
                   retry_seconds=cfg.retry_seconds, heartbeat_seconds=cfg.heartbeat_seconds,
                   heartbeat_timeout_seconds=cfg.heartbeat_timeout_seconds, lease_seconds=cfg.lease_seconds,
                   connect_timeout_seconds=connect_timeout_seconds, create_schema=create_schema)

    # ------------------------------------------------------------------ interface

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self.role}: already started")
        self._set_state("connecting")
        self._task = asyncio.create_task(self._run(), name=f"leader-{self.role}")

    async def stop(self) -> None:
        """Step down (``on_demoted`` first, then unlock) and close the lock session."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self._set_state("stopped")

    async def fence(self, session: Any, term: int) -> None:
        await check_fence(session, self.role, term)

    def try_now(self) -> None:
        """A follower tries the lock at once instead of at its next ``retry_seconds`` (a sign that the
        leader may be gone: the dialplan sent this node a call because the first server failed). Safe at
        any time: the lock alone decides, this only brings the next try forward."""
        self._poke.set()

    def status(self) -> dict[str, Any]:
        """For /health and /metrics."""
        return {"role": self.role, "node": self.node, "backend": "postgresql", "state": self._state,
                "leader": self._leader, "term": self.term, "since": self._since.isoformat() if self._since else None,
                "leader_node": self.node if self._leader else self.leader_node,
                "elections": self.elections, "losses": self.losses, "last_loss": self._lost_reason or None}

    async def wait_for(self, predicate: Callable[["PgLeaderElector"], bool], limit: float) -> None:
        """Wait until ``predicate(self)`` holds, at most ``limit`` seconds (tests and tools)."""
        async with asyncio.timeout(limit):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    # ------------------------------------------------------------------ the loop

    def _set_state(self, state: str) -> None:
        self._state = state
        self._changed.set()

    async def _run(self) -> None:
        while True:
            conn = await self._open()
            if conn is None:
                await asyncio.sleep(self.retry_seconds)
                continue
            try:
                await self._session(conn)
            except _Lost as exc:
                self.log.warning("lock session lost", reason=str(exc))
            finally:
                # A lost session may still be open on our side: close it so the server frees the lock as
                # soon as it can hear us (a clean stop already unlocked and closed it).
                if not conn.is_closed():
                    conn.terminate()
            self._set_state("connecting")
            await asyncio.sleep(self.retry_seconds)

    async def _open(self) -> Any | None:
        try:
            conn = await self._connect(self._dsn, timeout=self.connect_timeout_seconds,
                                       server_settings={"application_name": f"callcentre-leader:{self.node}"[:63]})
        except _CONNECTION_ERRORS as exc:
            self._lost_reason = f"connect: {type(exc).__name__}: {exc}"
            self.log.warning("cannot reach the database for the leader lock", error=self._lost_reason)
            return None
        try:
            async with asyncio.timeout(self.connect_timeout_seconds):
                lease_ms = str(int(self.lease_seconds * 1000))
                if conn.get_server_version().major >= 14:
                    await conn.execute(f"SET idle_session_timeout = {lease_ms}")
                else:  # no server-side lease: TCP keepalives of about the same length instead
                    half = max(1, int(self.lease_seconds / 2))
                    await conn.execute(f"SET tcp_keepalives_idle = {half}; SET tcp_keepalives_interval = 1; "
                                       f"SET tcp_keepalives_count = {half}")
                    self.log.warning("postgresql older than 14: no idle_session_timeout lease, TCP keepalives only")
                if self._create_schema:
                    await ensure_schema(conn)
        except _CONNECTION_ERRORS as exc:
            self._lost_reason = f"set-up: {type(exc).__name__}: {exc}"
            self.log.warning("leader lock session set-up failed", error=self._lost_reason)
            conn.terminate()
            return None
        return conn

    async def _session(self, conn: Any) -> None:
        lost = asyncio.Event()

        def on_terminated(_conn: Any) -> None:
            self._mark_lost(lost, "the connection closed")

        conn.add_termination_listener(on_terminated)
        try:
            await self._follow(conn, lost)
            await self._lead(conn, lost)
        finally:
            conn.remove_termination_listener(on_terminated)

    async def _follow(self, conn: Any, lost: asyncio.Event) -> None:
        """Try, wait, try again, until this session holds the lock (a stalled connection is replaced).

        The state is ``follower`` once a try has lost (another session holds the lock), not before."""
        while True:
            if lost.is_set():
                raise _Lost(self._lost_reason)
            self._poke.clear()
            if await self._ask(conn, "SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, self._key):
                return
            node = await self._ask(conn, "SELECT node FROM callcentre_leader WHERE role = $1", self.role)
            if node != self.leader_node:
                self.leader_node = node
                self._changed.set()
            if self._state != "follower":
                self._set_state("follower")
            await _wait(self._poke, self.retry_seconds)  # also set by _mark_lost

    async def _lead(self, conn: Any, lost: asyncio.Event) -> None:
        """The new term first (the fencing token), then on_elected; on_demoted once the lock is gone."""
        try:
            term = await self._bump(conn)
        except asyncpg.LockNotAvailableError:
            # A write of the previous leader holds the role's row (see check_fence): let go, compete again.
            self.log.warning("leader row busy, letting the lock go and trying again")
            await self._ask(conn, "SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, self._key)
            return
        self._term, self._leader, self._since = term, True, datetime.now(timezone.utc)
        self._lost_reason = ""
        self.elections += 1
        self._set_state("leader")
        self.log.info("leadership acquired", term=term)
        heartbeat = asyncio.create_task(self._heartbeat(conn, lost), name=f"leader-heartbeat-{self.role}")
        release = False  # True: we step down ourselves (stop, or our parts failed to start) and unlock
        try:
            try:
                await self._on_elected(term)
            except Exception:
                self.log.exception("starting the leader's parts failed; giving up the lead", term=term)
                release = True
                self._mark_lost(lost, "on_elected failed")
            await lost.wait()
        except asyncio.CancelledError:
            release = True
            raise
        finally:
            self._leader = False
            await cancel_and_wait(heartbeat)
            reason = "stop" if release and not self._lost_reason else self._lost_reason
            self._set_state("demoted")
            if release:
                self.log.info("stepping down", term=term, reason=reason)
            else:
                self.losses += 1
                self.log.warning("leadership lost", term=term, reason=reason)
            try:
                await self._on_demoted()
            except Exception:
                self.log.exception("stopping the leader's parts failed", term=term)
            if release:
                lost.set()  # our own close below is not a loss
                await self._release(conn, term)
        raise _Lost(self._lost_reason)

    def _mark_lost(self, lost: asyncio.Event, reason: str) -> None:
        if not lost.is_set():
            self._lost_reason = reason
            self._leader = False  # at once: whatever runs now must see it before on_demoted is awaited
            lost.set()
            self._poke.set()
            self._changed.set()

    async def _ask(self, conn: Any, query: str, *args: Any) -> Any:
        try:
            async with asyncio.timeout(self.heartbeat_timeout_seconds):
                return await conn.fetchval(query, *args)
        except _CONNECTION_ERRORS as exc:
            raise _Lost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def _bump(self, conn: Any) -> int:
        try:
            async with asyncio.timeout(self.heartbeat_timeout_seconds + 2.0):
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '2s'")
                    return int(await conn.fetchval(_BUMP, self.role, self.node))
        except asyncpg.LockNotAvailableError:
            raise
        except _CONNECTION_ERRORS as exc:
            raise _Lost(f"term: {type(exc).__name__}: {exc}") from exc

    async def _heartbeat(self, conn: Any, lost: asyncio.Event) -> None:
        while not lost.is_set():
            await _wait(lost, self.heartbeat_seconds)
            if lost.is_set():
                return
            try:
                held = await self._ask(conn, _HELD, LOCK_CLASS, self._key)
            except _Lost as exc:
                self._mark_lost(lost, f"heartbeat: {exc}")
                return
            if held != 1:
                self._mark_lost(lost, "heartbeat: the lock is no longer held by this session")
                return

    async def _release(self, conn: Any, term: int) -> None:
        with contextlib.suppress(_Lost):
            await self._ask(conn, "SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, self._key)
        with contextlib.suppress(*_CONNECTION_ERRORS):
            async with asyncio.timeout(self.heartbeat_timeout_seconds):
                await conn.close()
        self.log.info("leadership released", term=term)


def make_elector(url: str, role: str, cfg: ClusterConfig, *, on_elected: OnElected, on_demoted: OnDemoted,
                 connect_timeout_seconds: float = 5.0, create_schema: bool = True) -> PgLeaderElector | LocalLeader:
    """PostgreSQL → :class:`PgLeaderElector`; SQLite (a single node) → :class:`LocalLeader`.

    ``create_schema``: create the cluster tables if missing (a database never migrated); ``callcentre
    serve`` passes False, its migration ``0007_cluster`` made them."""
    if is_postgres(url):
        return PgLeaderElector.from_config(url, role, cfg, on_elected=on_elected, on_demoted=on_demoted,
                                           connect_timeout_seconds=connect_timeout_seconds, create_schema=create_schema)
    return LocalLeader(role, node=cfg.node(), on_elected=on_elected, on_demoted=on_demoted)


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Run one elector until SIGTERM/SIGINT; one JSON line on stdout per change of leadership."""
    import argparse
    import json
    import os
    import signal
    import sys

    from callcentre.logging import configure_logging

    p = argparse.ArgumentParser(prog="python -m callcentre.cluster.leader", description=main.__doc__)
    p.add_argument("--url", default=os.environ.get("CALLCENTRE_DATABASE__URL", ""),
                   help="the database URL (default: $CALLCENTRE_DATABASE__URL)")
    p.add_argument("--role", default="leader")
    p.add_argument("--node", default="")
    p.add_argument("--retry", type=float, default=2.0)
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--heartbeat-timeout", type=float, default=1.0)
    p.add_argument("--lease", type=float, default=6.0)
    args = p.parse_args(argv)
    if not args.url:
        p.error("--url or CALLCENTRE_DATABASE__URL is required")
    cfg = ClusterConfig(node_name=args.node, retry_seconds=args.retry, heartbeat_seconds=args.heartbeat,
                        heartbeat_timeout_seconds=args.heartbeat_timeout, lease_seconds=args.lease)
    configure_logging("info", "json", stream=sys.stderr)

    def say(event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, "node": cfg.node(), "pid": os.getpid(), "time": time.time(), **fields}),
              flush=True)

    async def run() -> None:
        async def elected(term: int) -> None:
            say("elected", term=term)

        async def demoted() -> None:
            say("demoted")

        elector = make_elector(args.url, args.role, cfg, on_elected=elected, on_demoted=demoted)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        say("started", role=args.role)
        await elector.start()
        await stop.wait()
        await elector.stop()
        say("stopped")

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess by the tests
    raise SystemExit(main())
