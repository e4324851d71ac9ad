"""Call distribution and screen-pop through the real stack, over real sockets.

The whole server (``build_app``: FastAGI, AMI link, SQLite, call distribution, web) runs against the
PBX simulator (:class:`~callcentre.sim.pbx.SimPBX` + :class:`~callcentre.sim.ami_server.AMIServer`),
as in tests/conftest.py. Agents are real users who log in through ``POST /api/login`` and hold an
``/ws/agent`` websocket, like the agent page does.

With ``waiting`` callers in the queue (music on hold, FastAGI idle) and ``agents`` agents paused, each
agent in turn becomes ready (``ACDService.agent_action(id, "ready")``, what ``POST
/api/agents/{id}/state`` calls) and we time:

* ready -> ``EXEC Dial <agent>`` read by the simulated Asterisk on its FastAGI socket (issue 3 point 7);
* ready -> the ``screen_pop`` websocket frame received by that agent's page client (issue 6);
* Dial seen -> frame, to show the two are independent.

The simulator shares the server's event loop and CPU (as in the tests), so these figures are a
pessimistic bound on a machine where Asterisk runs elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from bench import REPO, latency_ms, quiet_logs, raise_fd_limit

log = structlog.get_logger(__name__)

AMI_SECRET = "bench-secret-not-for-production"
PASSWORD = "bench-password-1234"
OWNER_NUMBERS = (
    "13800138001", "13912345602", "13720000801", "13800138000", "18622221201", "13555551502", "15818001801",
    "13102020202", "15005050505", "13900001111", "15210031003", "17610031003", "14711061106", "13316011601",
)


@dataclass
class BenchStack:
    """The server, the simulator and (optionally) the web site, all on 127.0.0.1 with port 0."""

    tmp: Path
    cfg: Any
    services: Any
    runner: web.AppRunner
    pbx: Any
    ami_server: Any
    url: str
    agent_ids: list[str] = field(default_factory=list)
    agent_logins: list[str] = field(default_factory=list)
    caller_tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def interface(self, n: int) -> str:
        return f"PJSIP/agent{n}"

    def place(self, script: Any) -> asyncio.Task[Any]:
        """One simulated inbound call, owned by the stack (cancelled and awaited at stop)."""
        task = asyncio.ensure_future(self.pbx.place_call(script))
        self.caller_tasks.add(task)
        task.add_done_callback(self.caller_tasks.discard)
        return task


def bench_environ(tmp: Path, ami_port: int, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        "CALLCENTRE_DATABASE__URL": database_url or f"sqlite+aiosqlite:///{tmp / 'callcentre.db'}",
        "CALLCENTRE_AGI__PORT": "0",
        "CALLCENTRE_AMI__PORT": str(ami_port),
        "CALLCENTRE_AMI__PING_INTERVAL_SECONDS": "2",
        "CALLCENTRE_AMI__RECONNECT_MIN_SECONDS": "0.05",
        "CALLCENTRE_AMI__RECONNECT_MAX_SECONDS": "0.5",
        "CALLCENTRE_AMI_SECRET": AMI_SECRET,
        "CALLCENTRE_WEB__PORT": "0",
        "CALLCENTRE_WEB__LOGIN_ATTEMPTS_PER_MINUTE": "100000",
        "CALLCENTRE_WEB__SESSION_KEY": "bench-session-key-0123456789abcdef0123456789",
        "CALLCENTRE_IVR__DIGIT_TIMEOUT_MS": "2000",
        "CALLCENTRE_IVR__RECORD_DIR": str(tmp / "recordings"),
        "CALLCENTRE_ACD__ANNOUNCE_EVERY_SECONDS": "3600",
        "CALLCENTRE_ACD__MAX_WAIT_SECONDS": "7200",
    }
    env.update(extra)
    return env


async def start_stack(
    tmp: Path,
    *,
    agents: int,
    speed: float = 50.0,
    answer_after: float | None = 1.0,
    talk_seconds: float = 1e7,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    serve_web: bool = True,
) -> BenchStack:
    """Migrate, import the example owners, create ``agents`` agent users, start everything."""
    from callcentre.app import SERVICES, build_app
    from callcentre.config import load_config
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.sim.scripts import AgentScript
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.users_repo import create_user

    raise_fd_limit(8192)
    pbx = SimPBX(speed=speed, prompt_dir=REPO / "prompts", prompt_prefix="callcentre", record_dir=tmp / "rec")
    ami_server = AMIServer(pbx, "callcentre", AMI_SECRET)
    ami_port = await ami_server.start()
    cfg = load_config(None, environ=bench_environ(tmp, ami_port, database_url, **(extra_env or {})))
    await upgrade(cfg.database.url, progress=None)
    engine = create_engine(cfg.database)
    sf = session_factory(engine)
    await import_owners(sf, REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
    logins = [f"agent{n}" for n in range(agents)]
    gate = asyncio.Semaphore(4)  # argon2 hashing runs in threads; a few at a time

    async def make(n: int) -> None:
        async with gate:
            await create_user(sf, logins[n], f"Agent {n}", "agent", PASSWORD, interface=f"PJSIP/agent{n}",
                              skills=["repair", "complaint", "fees"], languages=["zh", "en"])

    await asyncio.gather(*(make(n) for n in range(agents)))
    await engine.dispose()
    for n in range(agents):
        pbx.add_agent(AgentScript(f"PJSIP/agent{n}", answer_after=answer_after, talk_seconds=talk_seconds))

    app = build_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    services = app[SERVICES]
    url = ""
    if serve_web:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
    pbx.agi_port = services.agi.port
    st = BenchStack(tmp=tmp, cfg=cfg, services=services, runner=runner, pbx=pbx, ami_server=ami_server, url=url)
    for login in logins:
        user = await services.users.by_login(login)
        st.agent_ids.append(str(user.id))
        st.agent_logins.append(login)
    await wait_for(lambda: services.ami is not None and services.ami.connected, 10.0)
    return st


async def stop_stack(st: BenchStack) -> None:
    """Callers first (the simulator hangs up), then the server, then the simulated AMI."""
    tasks = list(st.caller_tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await st.pbx.aclose()
    await st.runner.cleanup()
    await st.ami_server.stop()


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def waiting_caller(n: int) -> Any:
    """A known owner who presses 0 (a person) and then waits patiently with music on hold."""
    from callcentre.sim.scripts import CallerScript

    return CallerScript(OWNER_NUMBERS[n % len(OWNER_NUMBERS)], inputs=["0"], silences_before_giving_up=10**6,
                        channel_tech="PJSIP")


async def fill_queue(st: BenchStack, count: int, progress: Callable[[str], None], timeout: float = 300.0) -> bool:  # noqa: ASYNC109 - polled
    """Place ``count`` callers and wait until every one is in the queue."""
    dist = st.services.acd.dist
    target = dist.waiting_count() + count
    for n in range(count):
        st.place(waiting_caller(n))
        if n % 50 == 49:  # keep at most ~100 callers in the IVR at once, as a real ramp would
            floor = target - count + n - 100
            await wait_for(lambda floor=floor: dist.waiting_count() >= floor, 30.0)
    ok = await wait_for(lambda: dist.waiting_count() >= target, timeout, 0.1)
    progress(f"  queue: {dist.waiting_count()} callers waiting")
    return ok


class _PageClient:
    """One agent's browser page: logged in with its cookie, holding /ws/agent, noting screen-pops."""

    def __init__(self, url: str, login: str) -> None:
        self.url = url
        self.login = login
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pops: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async with self.session.post(f"{self.url}/api/login", json={"login": self.login, "password": PASSWORD}) as r:
            if r.status != 200:
                raise RuntimeError(f"log-in of {self.login} refused: HTTP {r.status} {await r.text()}")
        self.ws = await self.session.ws_connect(f"{self.url}/ws/agent", headers={"Origin": self.url})
        first = await self.ws.receive_json(timeout=10)
        if first.get("type") != "snapshot":
            raise RuntimeError(f"first websocket frame is not a snapshot: {first!r}")
        self.task = asyncio.create_task(self._read(), name=f"page-{self.login}")

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.monotonic()
            data = json.loads(msg.data)
            if data.get("type") == "screen_pop":
                self.pops.put_nowait((now, data))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()


async def keep_staffed(st: BenchStack, agent_id: str) -> None:
    """Callers are only queued while someone is staffed (paused agents are not): one agent takes a
    call that lasts the whole benchmark, so the queue stays open while the others are paused."""
    from callcentre.domain.acd import AgentState

    acd = st.services.acd
    await acd.agent_action(agent_id, "ready")
    st.place(waiting_caller(0))
    if not await wait_for(lambda: acd.dist.agent_state(agent_id) is AgentState.ON_CALL, 30.0):
        raise RuntimeError("the staffing agent never got on a call")


async def measure_offers(
    st: BenchStack, agent_ids: list[str], pages: dict[str, _PageClient] | None, progress: Callable[[str], None],
    gap: float = 0.05,
) -> dict[str, Any]:
    """Each paused agent becomes ready in turn; time the Dial line and the screen-pop frame."""
    acd = st.services.acd
    loop = asyncio.get_running_loop()
    dial_seen: dict[str, asyncio.Future[float]] = {}

    def on_event(fields: list[tuple[str, str]]) -> None:
        if fields[0][1] != "AGIExecStart":
            return
        command = dict(fields).get("Command", "")
        if not command.upper().startswith("EXEC DIAL"):
            return
        now = time.monotonic()
        for iface, fut in dial_seen.items():
            if f"{iface}," in command and not fut.done():
                fut.set_result(now)

    unsubscribe = st.pbx.subscribe(on_event)
    ready_to_dial: list[float] = []
    ready_to_pop: list[float] = []
    dial_to_pop: list[float] = []
    missing = 0
    try:
        for agent_id in agent_ids:
            n = st.agent_ids.index(agent_id)
            iface = st.interface(n)
            dial_seen[iface] = loop.create_future()
            waiting = acd.dist.waiting_count()
            t0 = time.monotonic()
            await acd.agent_action(agent_id, "ready")
            try:
                t_dial = await asyncio.wait_for(dial_seen[iface], 10.0)
            except TimeoutError:
                missing += 1
                continue
            finally:
                dial_seen.pop(iface, None)
            ready_to_dial.append(t_dial - t0)
            if pages is not None:
                try:
                    t_pop, _ = await asyncio.wait_for(pages[agent_id].pops.get(), 10.0)
                except TimeoutError:
                    missing += 1
                    continue
                ready_to_pop.append(t_pop - t0)
                dial_to_pop.append(t_pop - t_dial)
            if n % 50 == 49:
                progress(f"  {n + 1}/{len(agent_ids)} agents offered a call ({waiting} waiting)")
            await asyncio.sleep(gap)
    finally:
        unsubscribe()
    out: dict[str, Any] = {"ready_to_dial_written": latency_ms(ready_to_dial), "missing": missing}
    if pages is not None:
        out["ready_to_screen_pop"] = latency_ms(ready_to_pop)
        out["dial_to_screen_pop"] = latency_ms(dial_to_pop)
    return out


async def _run(waiting: int, agents: int, with_pages: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as d:
        t = time.monotonic()
        st = await start_stack(Path(d), agents=agents + 1, serve_web=with_pages)
        progress(f"  stack up with {agents} + 1 agents in {time.monotonic() - t:.1f}s")
        pages: dict[str, _PageClient] = {}
        measured = st.agent_ids[:agents]
        try:
            acd = st.services.acd
            for agent_id in measured:
                await acd.agent_action(agent_id, "login")
                await acd.agent_action(agent_id, "pause", "break")
            await keep_staffed(st, st.agent_ids[agents])
            if with_pages:
                for agent_id, login in zip(measured, st.agent_logins, strict=False):
                    page = _PageClient(st.url, login)
                    pages[agent_id] = page
                    await page.open()
                progress(f"  {len(pages)} agent pages logged in with a websocket open")
            # Every agent takes one caller: keep `waiting` callers in the queue until the last offer.
            ok = await fill_queue(st, waiting + agents, progress)
            if not ok:
                raise RuntimeError(f"only {acd.dist.waiting_count()} of {waiting + agents} callers reached the queue")
            for page in pages.values():  # drop the state frames sent so far
                while not page.pops.empty():
                    page.pops.get_nowait()
            result = await measure_offers(st, measured, pages if with_pages else None, progress)
            result.update({"waiting": waiting, "agents": agents, "websocket_clients": len(pages)})
            return result
        finally:
            for page in pages.values():
                await page.close()
            await stop_stack(st)


def run(waiting: int = 500, agents: int = 200, with_pages: bool = True,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Both figures in one run; see the module docstring."""
    quiet_logs()
    return asyncio.run(_run(waiting, agents, with_pages, progress))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
