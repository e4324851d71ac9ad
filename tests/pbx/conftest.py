"""The real-PBX tier: a throw-away Asterisk with our own dialplans, and ``callcentre serve`` over real sockets.

Every test here gets a fresh Asterisk (tests/pbx/asterisk.py) and a fresh server process with its own
database. The Asterisk binary comes from $CALLCENTRE_TEST_ASTERISK, else PATH, else
/opt/asterisk-20/bin/asterisk (what ../shared/asterisk/install.sh installs). Without one the tier is
skipped with a one-line reason; under CI=true it fails instead, so CI cannot pass without it.

Mark a test to shape its world::

    @pytest.mark.pbx_world(agents={"agent1": "answer:2:30"}, config={"acd": {...}}, globals={...},
                           owners="building,unit,...\\n...", users=[("boss", "supervisor", {...})])

(also ``dialplan=`` extra contexts, ``queues=`` extra queues.conf sections, ``env=``, ``start_server=False``,
``queue_log_in_asterisk_logdir=True``: the server's queue_log is Asterisk's own file)

``postgres=True`` in the world puts the server on a fresh database of a PostgreSQL server (the
``pbx_postgres`` fixture: $CALLCENTRE_TEST_PBX_PG_URL, else $CALLCENTRE_TEST_PG_URL, else a throw-away
cluster started from Debian's binaries by .ci/start-postgres); without one the test is skipped, and
under CI=true it fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from tests.conftest import PG_URL_ENV, REPO, _pg_create_database, _pg_dsn, _run_pg, test_database_url
from tests.pbx.asterisk import AMIEvents, AsteriskInstance, find_asterisk, free_port, handset_vars
from tests.serverproc import ServerProcess

ARTIFACTS = REPO / "tests" / "artifacts" / "pbx"
PASSWORD = "pbx-tier-password-1"
# After the test, the server gets SIGTERM with no call in progress: it must be gone by then.
SIGTERM_EXIT_BOUND = 15.0


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.pbx)


@pytest.fixture(scope="session")
def asterisk_binary() -> str:
    binary = find_asterisk()
    if binary is None:
        reason = ("no Asterisk for the real-PBX tier: set CALLCENTRE_TEST_ASTERISK or run "
                  "../shared/asterisk/install.sh")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: this tier must run)")
        pytest.skip(reason)
    return binary


PBX_PG_URL_ENV = "CALLCENTRE_TEST_PBX_PG_URL"


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster started by .ci/start-postgres for this session (stopped and deleted at its end)."""

    url: str
    directory: str
    pid: str

    @classmethod
    def start(cls) -> "ThrowawayPostgres":
        # An EXIT trap of our own, so the script does not install its own that would stop the server
        # when this shell exits; the session fixture stops it instead.
        script = ('trap "" EXIT; source .ci/start-postgres >&2 || exit 1; '
                  'printf "%s\\n%s\\n%s\\n" "$CALLCENTRE_TEST_PG_URL" "$CALLCENTRE_TEST_PG_DIR" "$CALLCENTRE_TEST_PG_PID"')
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_TEST_PG_")}
        r = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        lines = r.stdout.split()
        if r.returncode != 0 or len(lines) != 3:
            raise RuntimeError(f"could not start a PostgreSQL for the real-PBX tier: {r.stderr.strip()[-800:]}")
        return cls(*lines)

    def stop(self) -> None:
        env = {**os.environ, "CALLCENTRE_TEST_PG_URL": self.url, "CALLCENTRE_TEST_PG_DIR": self.directory,
               "CALLCENTRE_TEST_PG_PID": self.pid}
        subprocess.run(["bash", "-c", 'trap "" EXIT; source .ci/start-postgres >/dev/null 2>&1 && stop_test_postgres'],
                       cwd=REPO, env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def pbx_postgres() -> Any:
    """The PostgreSQL server of the real-PBX tests that need one (two nodes on one database)."""
    url = os.environ.get(PBX_PG_URL_ENV) or os.environ.get(PG_URL_ENV)
    if url:
        yield url
        return
    try:
        server = ThrowawayPostgres.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        reason = (f"no PostgreSQL for the real-PBX tier: set {PBX_PG_URL_ENV} or install Debian's postgresql "
                  f"({exc})")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI=true: this test must run)")
        pytest.skip(reason)
    try:
        yield server.url
    finally:
        server.stop()


def fresh_pg_database(base_url: str) -> str:
    """A new empty database on the server of ``base_url`` (its SQLAlchemy URL), named like the suite's."""
    import secrets

    from sqlalchemy.engine import make_url

    name = f"cctest_{int(time.time())}_{os.getpid()}_{secrets.token_hex(4)}"
    _run_pg(_pg_create_database, _pg_dsn(base_url), name)
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    conn = await asyncpg.connect(_pg_dsn(url, "postgres"), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class PBX:
    """One test's world: the Asterisk, the server, the test's own AMI client, the database."""

    ast: AsteriskInstance
    server: ServerProcess
    ami: AMIEvents
    env: dict[str, str]
    tmp: Path
    web_url: str
    db_url: str
    agents: dict[str, str] = field(default_factory=dict)
    sigterm_exit_seconds: float | None = None
    _engine: Any = None

    # -------------------------------------------------------------- calls

    async def call(self, number: str, steps: list[str], *, name: str = "", did: str = "4008001234",
                   hold: float | None = None, channel: str | None = None, timeout_ms: int = 30000) -> dict[str, str]:
        """Place a hotline call from ``"name" <number>``: the handset runs ``steps``.

        Returns the OriginateResponse (Success once the server answered the call). The hotline leg
        is ``Local/<did>@cc-test-trunk;2``, the handset its ``;1``."""
        cid = f'"{name}" <{number}>' if name else f"<{number}>"
        start = len(self.ami.events)
        reply = await self.ami.action(
            "Originate", Channel=channel or f"Local/{did}@cc-test-trunk", Context="cc-test-handset", Exten="s",
            Priority="1", CallerID=cid, Async="true", Timeout=str(timeout_ms),
            Variable=handset_vars(steps, hold),
        )
        assert reply.get("Response") == "Success", reply
        aid = reply["ActionID"]
        return await self.ami.wait_for(lambda e: e.get("Event") == "OriginateResponse" and e.get("ActionID") == aid,
                                       limit=timeout_ms / 1000 + 10, start=start)

    async def hotline_leg(self, number: str, limit: float = 15.0) -> dict[str, str]:
        """The Newchannel of the hotline leg (the AGI side) of the latest call from ``number``."""
        return await self.ami.wait_for(
            lambda e: e.get("Event") == "AGIExecStart" and e.get("CallerIDNum") == number, limit)

    async def wait_hangup(self, uniqueid: str, limit: float = 60.0) -> dict[str, str]:
        return await self.ami.wait_for("Hangup", limit, Uniqueid=uniqueid)

    async def channels(self) -> list[dict[str, str]]:
        return await self.ami.list_action("CoreShowChannels")

    async def no_channels(self, limit: float = 30.0) -> None:
        """Wait until Asterisk has no channel left (every call over)."""
        end = time.monotonic() + limit
        while True:
            left = await self.channels()
            if not left:
                return
            if time.monotonic() > end:
                raise AssertionError(f"channels still up after {limit} s: {[c.get('Channel') for c in left]}")
            await asyncio.sleep(0.2)

    async def sigterm(self, limit: float = SIGTERM_EXIT_BOUND + 5) -> tuple[int, float]:
        """SIGTERM the server as systemd would; its exit code and the seconds it took to exit."""
        proc = self.server.proc
        assert proc is not None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), limit)
        return rc, time.monotonic() - t0

    async def set_phone(self, agent: str, spec: str) -> None:
        r = await self.ami.action("Setvar", Variable=f"CC_PHONE_{agent}", Value=spec)
        assert r.get("Response") == "Success", r

    async def set_global(self, name: str, value: str) -> None:
        r = await self.ami.action("Setvar", Variable=name, Value=value)
        assert r.get("Response") == "Success", r

    # -------------------------------------------------------------- what the server stored

    def engine(self) -> Any:
        if self._engine is None:
            from callcentre.config import DatabaseConfig
            from callcentre.storage.db import create_engine
            self._engine = create_engine(DatabaseConfig(url=self.db_url))
        return self._engine

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        from sqlalchemy import select

        from callcentre.storage.db import session_factory
        async with session_factory(self.engine())() as s:
            q = select(model)
            if where:
                q = q.where(*where)
            # by primary key (CallRow's is its uniqueid, not an id)
            return list((await s.execute(q.order_by(*model.__mapper__.primary_key))).scalars())

    async def tickets(self) -> list[Any]:
        from callcentre.storage.models import TicketRow
        return await self.rows(TicketRow)

    async def eventually_tickets(self, n: int, limit: float = 20.0) -> list[Any]:
        end = time.monotonic() + limit
        while True:
            t = await self.tickets()
            if len(t) >= n or time.monotonic() > end:
                return t
            await asyncio.sleep(0.1)

    # -------------------------------------------------------------- web

    async def login(self, login: str, password: str = PASSWORD) -> aiohttp.ClientSession:
        """A browser-like session logged in as ``login`` (close it yourself)."""
        s = aiohttp.ClientSession(base_url=self.web_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        r = await s.post("/api/login", json={"login": login, "password": password})
        if r.status != 200:
            body = await r.text()
            await s.close()
            raise AssertionError(f"login {login}: {r.status} {body}")
        return s

    # -------------------------------------------------------------- what Asterisk logged

    def asterisk_log(self) -> str:
        return self.ast.full_log()

    async def asterisk_log_lines(self, needle: str, limit: float = 5.0) -> list[str]:
        """The lines of Asterisk's log that contain ``needle``, once there is at least one, or none
        after ``limit`` seconds. Asterisk's logger thread writes a line after the dialplan step that
        logged it has run on, so a test that has seen a later event may still be ahead of the file."""
        deadline = time.monotonic() + limit
        while True:
            found = [ln for ln in self.asterisk_log().splitlines() if needle in ln]
            if found or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)

    async def expect_logged(self, needle: str, limit: float = 5.0) -> None:
        """Asterisk's log has a line with ``needle`` (within ``limit`` s; see :meth:`asterisk_log_lines`)."""
        if not await self.asterisk_log_lines(needle, limit):
            raise AssertionError(f"{needle!r} is not in Asterisk's log after {limit} s")

    def agi_debug(self) -> list[str]:
        """The ``AGI Tx >>`` / ``AGI Rx <<`` lines of ``agi set debug on`` (the real wire)."""
        return [ln for ln in self.ast.full_log().splitlines() if "AGI Tx >>" in ln or "AGI Rx <<" in ln]


def _run_cli(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "callcentre", *args], env=env, cwd=cwd, input=stdin,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"callcentre {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest_asyncio.fixture
async def pbx(asterisk_binary: str, tmp_path: Path, request: Any):
    """A real Asterisk with our dialplans, and ``callcentre serve`` connected to it over AMI and FastAGI."""
    marker = request.node.get_closest_marker("pbx_world")
    world: dict[str, Any] = dict(marker.kwargs) if marker else {}
    agents: dict[str, str] = world.get("agents", {"agent1": "answer:1:30"})
    agi_port, web_port = free_port(), free_port()
    ast = AsteriskInstance(asterisk_binary, agi_port=agi_port, globals_extra=world.get("globals", {}),
                           sip_conf=world.get("sip_conf", ""), extra_dialplan=world.get("dialplan", ""),
                           queues_extra=world.get("queues", ""))
    for name, spec in agents.items():
        ast.globals_extra[f"CC_PHONE_{name}"] = spec

    postgres = bool(world.get("postgres"))
    db_url = fresh_pg_database(request.getfixturevalue("pbx_postgres")) if postgres else test_database_url(tmp_path)
    config: dict[str, Any] = {
        "acd": {"agents": [
            {"id": name, "name": f"Agent {name}", "interface": f"Local/{name}@cc-test-phones", "start": "ready"}
            for name in agents]},
        "logging": {"level": "debug" if world.get("debug") else "info", "format": "json"},
    }
    config = _deep_merge(config, world.get("config", {}))
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_")}
    env.update({
        "CALLCENTRE_CONFIG": str(cfg_path),
        "CALLCENTRE_DATABASE__URL": db_url,
        "CALLCENTRE_AGI__PORT": str(agi_port),
        "CALLCENTRE_AMI__PORT": str(ast.ami_port),
        "CALLCENTRE_AMI_SECRET": ast.ami_secret,
        "CALLCENTRE_AMI__PING_INTERVAL_SECONDS": "1",
        "CALLCENTRE_AMI__RECONNECT_MIN_SECONDS": "0.1",
        "CALLCENTRE_AMI__RECONNECT_MAX_SECONDS": "1",
        "CALLCENTRE_WEB__PORT": str(web_port),
        "CALLCENTRE_WEB_SESSION_KEY": "pbx-tier-session-key-0123456789",
        "CALLCENTRE_IVR__RECORD_DIR": str(ast.record_dir),
        "CALLCENTRE_IVR__DIGIT_TIMEOUT_MS": str(world.get("digit_timeout_ms", 3000)),
        "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
    })
    env.update(world.get("env", {}))
    if world.get("queue_log_in_asterisk_logdir"):  # our queue_log lines in Asterisk's own astlogdir/queue_log
        env["CALLCENTRE_QUEUE_LOG__PATH"] = str(ast.log_dir / "queue_log")

    await asyncio.to_thread(_run_cli, env, tmp_path, "db", "upgrade")
    owners = world.get("owners")
    owners_file = REPO / "examples" / "owners.csv"
    if owners is not None:
        owners_file = tmp_path / "owners.csv"
        owners_file.write_text(owners)
    await asyncio.to_thread(_run_cli, env, tmp_path, "owners", "import", str(owners_file))
    for login, role, extra in world.get("users", []):
        args = ["user", "add", login, "--role", role, "--name", extra.pop("name", login), "--password-stdin"]
        for k, v in extra.items():
            args += [f"--{k.replace('_', '-')}", v]
        await asyncio.to_thread(_run_cli, env, tmp_path, *args, stdin=PASSWORD + "\n")

    await asyncio.to_thread(ast.start)
    server = ServerProcess(env, str(tmp_path))
    ami = AMIEvents(ast.ami_port, "cctest", ast.test_secret)
    p = PBX(ast=ast, server=server, ami=ami, env=env, tmp=tmp_path, web_url=f"http://127.0.0.1:{web_port}",
            db_url=db_url, agents=agents)
    failed = True
    try:
        await ami.connect()
        if world.get("start_server", True):
            await server.start()
            await server.wait_log("fastagi listening", 30)
            await server.wait_log("ami resynchronised", 15)
        yield p
        failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    finally:
        exit_problem = None
        if server.proc is not None and server.proc.returncode is None and ami.writer is not None:
            # the test is over: hang up what is left, so SIGTERM finds no call in progress
            try:
                await ami.action("Hangup", Channel="/.*/", Cause="16")
                await p.no_channels(10)
            except (AssertionError, OSError, TimeoutError):
                pass
        if server.proc is not None and server.proc.returncode is None:
            server.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                rc = await asyncio.wait_for(server.proc.wait(), SIGTERM_EXIT_BOUND)
                if rc != 0:
                    exit_problem = f"callcentre serve exited {rc} on SIGTERM"
            except TimeoutError:
                exit_problem = f"callcentre serve did not exit within {SIGTERM_EXIT_BOUND} s of SIGTERM"
            p.sigterm_exit_seconds = time.monotonic() - t0
        await server.close()
        await ami.close()
        if p._engine is not None:
            await p._engine.dispose()
        await asyncio.to_thread(ast.stop)
        keep = ARTIFACTS / request.node.name if (failed or exit_problem) else None
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / "server.log").write_text("\n".join(server.raw))
        await asyncio.to_thread(ast.cleanup, keep)
        if postgres:
            try:
                await _drop_pg_database(db_url)
            except Exception as exc:  # a leftover database must not turn a green test red; say why
                print(f"pbx: could not drop {db_url.rsplit('/', 1)[-1]}: {exc!r}")
        if exit_problem and not world.get("allow_slow_exit"):
            raise AssertionError(exit_problem + ":\n" + "\n".join(server.raw[-30:]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# ------------------------------------------------------------------------------------------------------
# A second ``callcentre serve`` beside the pbx fixture's (tests of a second node, CALLCENTRE_AGI2)


@dataclass
class SecondNode:
    """Another server process on the same Asterisk and database, with its own FastAGI and web ports."""

    server: ServerProcess
    agi_port: int
    web_port: int

    @property
    def agi_address(self) -> str:
        return f"127.0.0.1:{self.agi_port}"


@pytest_asyncio.fixture
async def second_node(pbx: PBX):
    """``await second_node()`` starts a second ``callcentre serve`` sharing the pbx fixture's
    configuration and database (SQLite file or PostgreSQL database) on new FastAGI/web ports; every
    one still running at the end gets SIGTERM and must exit 0 within SIGTERM_EXIT_BOUND."""
    started: list[SecondNode] = []

    async def start(**env_extra: str) -> SecondNode:
        agi_port, web_port = free_port(), free_port()
        env = {**pbx.env, "CALLCENTRE_AGI__PORT": str(agi_port), "CALLCENTRE_WEB__PORT": str(web_port), **env_extra}
        node = SecondNode(ServerProcess(env, str(pbx.tmp)), agi_port, web_port)
        started.append(node)
        await node.server.start()
        await node.server.wait_log("fastagi listening", 30)
        await node.server.wait_log("ami resynchronised", 15)
        return node

    problems: list[str] = []
    try:
        yield start
    finally:
        running = [n for n in started if n.server.proc is not None and n.server.proc.returncode is None]
        if running and pbx.ami.writer is not None:
            # as the pbx fixture does: no call in progress when SIGTERM comes
            try:
                await pbx.ami.action("Hangup", Channel="/.*/", Cause="16")
                await pbx.no_channels(10)
            except (AssertionError, OSError, TimeoutError):
                pass
        for node in started:
            proc = node.server.proc
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = await asyncio.wait_for(proc.wait(), SIGTERM_EXIT_BOUND)
                    if rc != 0:
                        problems.append(f"second node on {node.agi_address} exited {rc} on SIGTERM")
                except TimeoutError:
                    problems.append(f"second node on {node.agi_address} did not exit within {SIGTERM_EXIT_BOUND} s")
            await node.server.close()
        if problems:
            raise AssertionError("; ".join(problems))
