"""Screen-pop and call distribution through the real server, over real sockets, with traffic running.

The server runs in its own process, started the way ``callcentre serve`` starts it (bench/server.py
``serve``: FastAGI, AMI link, SQLite, call distribution, web; an event-loop lag monitor inside). This
process plays everything else: the PBX simulator (:class:`~callcentre.sim.pbx.SimPBX` and its AMI
server), the callers, and the agents' browser pages, each logged in through ``POST /api/login`` and
holding ``/ws/agent``, as the agent page does.

One agent takes a call that lasts the whole benchmark (so callers are queued), ``agents`` other agents
log in and pause through the HTTP API, and ``waiting + agents`` callers queue. Then, while new callers
keep arriving (``background_rate`` a second, the simulator's realistic mix: repairs and complaints
that make tickets, self-service, callers asking for a person, hang-ups; every one an IVR session
over FastAGI and a stream of AMI events), each paused agent in turn presses "ready" on their page
(``POST /api/agents/{id}/state``) and we time, from the moment that request is sent:

* the first ``screen_pop`` frame at that agent's page (the basic card: what the IVR learnt);
* the **full owner card**: the second ``screen_pop`` frame of the same offer, sent after the owner
  directory look-up in the database (owners, last calls, open tickets);
* ``EXEC Dial <agent>`` read by the simulated Asterisk on its FastAGI socket;
* the HTTP response to "ready".

The server's event-loop lag and GC pauses during the measurement are reported beside them.
The in-process stack below (``start_stack``) is kept for bench/bench_memory.py, which splits the
memory of server and simulator with tracemalloc in one process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from bench import REPO, latency_ms, no_collection, quiet_logs, raise_fd_limit

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
        self.user_id: str | None = None
        self.csrf = ""

    async def log_in(self) -> None:
        async with self.session.post(f"{self.url}/api/login", json={"login": self.login, "password": PASSWORD}) as r:
            if r.status != 200:
                raise RuntimeError(f"log-in of {self.login} refused: HTTP {r.status} {await r.text()}")
        async with self.session.get(f"{self.url}/api/me") as r:
            me = await r.json()
        self.user_id = str(me["user"]["id"])
        self.csrf = str(me["csrf"])

    async def open(self) -> None:
        await self.log_in()
        self.ws = await self.session.ws_connect(f"{self.url}/ws/agent", headers={"Origin": self.url})
        first = await self.ws.receive_json(timeout=30)
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

    async def state(self, action: str, reason: str | None = None) -> tuple[int, float]:
        """Press a state button: POST /api/agents/{id}/state; (HTTP status, monotonic time of the response)."""
        body: dict[str, Any] = {"action": action}
        if reason:
            body["reason"] = reason
        async with self.session.post(f"{self.url}/api/agents/{self.user_id}/state", json=body,
                                     headers={"Origin": self.url, "X-CSRF-Token": self.csrf}) as r:
            await r.read()
            return r.status, time.monotonic()

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


# ---------------------------------------------------------------- the server in its own process

@dataclass
class _Remote:
    """The simulator and pages in this process, the server (``python -m bench.server serve``) in another."""

    tmp: Path
    url: str
    pbx: Any
    ami_server: Any
    server: Any
    caller_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    http: aiohttp.ClientSession | None = None

    def place(self, script: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(self.pbx.place_call(script))
        self.caller_tasks.add(task)
        task.add_done_callback(self.caller_tasks.discard)
        return task

    async def metric(self, name: str) -> float:
        assert self.http is not None
        async with self.http.get(self.url + "/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return float("nan")

    async def agent_state(self, page: _PageClient) -> str | None:
        async with page.session.get(f"{self.url}/api/me") as r:
            agent = (await r.json()).get("agent") or {}
        return agent.get("state")


async def _start_remote(tmp: Path, agents: int, speed: float, log_level: str) -> _Remote:
    from bench.bench_agi import free_port, start_server
    from callcentre.config import load_config
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.sim.scripts import AgentScript
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.users_repo import create_user

    raise_fd_limit(16384)
    agi_port, web_port = free_port(), free_port()
    pbx = SimPBX(speed=speed, prompt_dir=REPO / "prompts", prompt_prefix="callcentre", record_dir=tmp / "rec",
                 agi_port=agi_port)
    for n in range(agents):
        pbx.add_agent(AgentScript(f"PJSIP/agent{n}", answer_after=1.0, talk_seconds=1e7))
    ami_server = AMIServer(pbx, "callcentre", AMI_SECRET)
    ami_port = await ami_server.start()
    env = bench_environ(tmp, ami_port, None, CALLCENTRE_AGI__PORT=str(agi_port), CALLCENTRE_WEB__PORT=str(web_port),
                        CALLCENTRE_WEB__HOST="127.0.0.1", CALLCENTRE_LOGGING__LEVEL=log_level,
                        CALLCENTRE_PROMPTS__LOCAL_DIR=str(REPO / "prompts"))
    cfg = load_config(None, environ=env)
    await upgrade(cfg.database.url, progress=None)
    engine = create_engine(cfg.database)
    sf = session_factory(engine)
    await import_owners(sf, REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
    gate = asyncio.Semaphore(4)  # argon2 hashing runs in threads; a few at a time

    async def make(n: int) -> None:
        async with gate:
            await create_user(sf, f"agent{n}", f"Agent {n}", "agent", PASSWORD, interface=f"PJSIP/agent{n}",
                              skills=["repair", "complaint", "fees"], languages=["zh", "en"])

    await asyncio.gather(*(make(n) for n in range(agents)))
    await engine.dispose()
    server = await start_server("serve", tmp, env, agi_port)
    remote = _Remote(tmp=tmp, url=f"http://127.0.0.1:{web_port}", pbx=pbx, ami_server=ami_server, server=server)
    remote.http = aiohttp.ClientSession()
    if not await wait_for(lambda: bool(ami_server.actions_named("CoreShowChannels")), 30.0, 0.05):
        await _stop_remote(remote)
        raise RuntimeError(f"the server did not log in to the simulated AMI; see {server.log_path}")
    return remote


async def _stop_remote(remote: _Remote) -> dict[str, Any]:
    """Callers first (the simulator hangs up), then the server (SIGTERM), then the simulated AMI."""
    tasks = list(remote.caller_tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await remote.pbx.aclose()
    stats = await asyncio.to_thread(remote.server.stop)
    if remote.http is not None:
        await remote.http.close()
    await remote.ami_server.stop()
    return stats


async def _background(remote: _Remote, rate: float, concurrency: int, counts: dict[str, int]) -> None:
    """New callers at ``rate`` a second (at most ``concurrency`` in progress): the simulator's mix."""
    import random

    from callcentre.sim.runner import DEFAULT_MIX, _pick, load_owners, make_caller

    rng = random.Random(7)
    owners = load_owners(REPO / "examples" / "owners.csv")
    gate = asyncio.Semaphore(concurrency)
    while True:
        await gate.acquire()
        kind = _pick(rng, DEFAULT_MIX)
        counts[kind.value] = counts.get(kind.value, 0) + 1
        task = remote.place(make_caller(kind, rng, owners=owners))
        task.add_done_callback(lambda _t: gate.release())
        await asyncio.sleep(1.0 / rate)


async def _next_pop(page: _PageClient, timeout: float) -> tuple[float, dict[str, Any]]:  # noqa: ASYNC109
    return await asyncio.wait_for(page.pops.get(), timeout)


async def measure_ready(remote: _Remote, pages: list[_PageClient], progress: Callable[[str], None],
                        gap: float = 0.05) -> dict[str, Any]:
    """Each paused agent presses "ready" in turn; time the basic card, the full card, the Dial and the reply."""
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

    unsubscribe = remote.pbx.subscribe(on_event)
    basic: list[float] = []
    full: list[float] = []
    dial: list[float] = []
    reply: list[float] = []
    missing = {"dial": 0, "basic_card": 0, "full_card": 0}
    with_owners = 0
    try:
        for i, page in enumerate(pages):
            iface = f"PJSIP/{page.login}"
            dial_seen[iface] = loop.create_future()
            t0 = time.monotonic()
            status, t_reply = await page.state("ready")
            if status != 200:
                raise RuntimeError(f"ready of {page.login} refused: HTTP {status}")
            reply.append(t_reply - t0)
            try:
                t_basic, first = await _next_pop(page, 10.0)
                basic.append(t_basic - t0)
                offer = first.get("offer_id")
                while True:
                    t_full, card = await _next_pop(page, 10.0)
                    if card.get("offer_id") == offer:
                        break
                full.append(t_full - t0)
                with_owners += bool(card.get("call", {}).get("owners"))
            except TimeoutError:
                missing["full_card" if basic and len(basic) > len(full) else "basic_card"] += 1
            try:
                t_dial = await asyncio.wait_for(dial_seen[iface], 10.0)
                dial.append(t_dial - t0)
            except TimeoutError:
                missing["dial"] += 1
            finally:
                dial_seen.pop(iface, None)
            if i % 50 == 49:
                progress(f"  {i + 1}/{len(pages)} agents offered a call")
            await asyncio.sleep(gap)
    finally:
        unsubscribe()
    return {
        "ready_to_full_card": latency_ms(full),
        "ready_to_basic_card": latency_ms(basic),
        "ready_to_dial_written": latency_ms(dial),
        "ready_http_reply": latency_ms(reply),
        "full_cards_with_owners": with_owners,
        "missing": missing,
    }


async def _run(waiting: int, agents: int, background_rate: float, background_concurrency: int, speed: float,
               log_level: str, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench.server import LoopMonitor, window_stats

    with tempfile.TemporaryDirectory(prefix="cc-bench-pop-") as d:
        t = time.monotonic()
        remote = await _start_remote(Path(d), agents + 1, speed, log_level)
        client = LoopMonitor()  # this process's own loop: its stalls delay the frames it times
        client.start()
        progress(f"  server (pid {remote.server.proc.pid}) up with {agents} + 1 agents in {time.monotonic() - t:.1f}s")
        pages: list[_PageClient] = []
        staff: _PageClient | None = None
        background: asyncio.Task[None] | None = None
        counts: dict[str, int] = {}
        window = (0.0, 0.0)
        result: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        try:
            staff = _PageClient(remote.url, f"agent{agents}")
            await staff.log_in()
            status, _ = await staff.state("login")  # logged in is ready
            if status != 200:
                raise RuntimeError(f"log-in of the staffing agent refused: HTTP {status}")
            remote.place(waiting_caller(0))
            if not await _poll_async(lambda: _is(remote, staff, "on_call"), 30.0):
                raise RuntimeError("the staffing agent never got on a call")
            for n in range(agents):
                page = _PageClient(remote.url, f"agent{n}")
                pages.append(page)
                await page.open()
                for action, reason in (("login", None), ("pause", "break")):
                    status, _ = await page.state(action, reason)
                    if status != 200:
                        raise RuntimeError(f"{action} of agent{n} refused: HTTP {status}")
            progress(f"  {len(pages)} agent pages logged in over HTTP with /ws/agent open, paused")
            target = waiting + agents + 1
            for n in range(waiting + agents):
                remote.place(waiting_caller(n + 1))
                if n % 50 == 49:  # keep at most ~100 callers in the IVR at once, as a real ramp would
                    floor = n - 100
                    await _poll_async(lambda floor=floor: _metric_at_least(remote, "callcentre_queue_waiting", floor), 60.0)
            if not await _poll_async(lambda: _metric_at_least(remote, "callcentre_queue_waiting", target - 1), 300.0):
                raise RuntimeError(f"only {await remote.metric('callcentre_queue_waiting')} of {target - 1} callers queued")
            progress(f"  queue: {int(await remote.metric('callcentre_queue_waiting'))} callers waiting")
            for page in pages:  # drop the frames sent so far
                while not page.pops.empty():
                    page.pops.get_nowait()
            if background_rate > 0:
                background = asyncio.create_task(_background(remote, background_rate, background_concurrency, counts),
                                                 name="bench-background-callers")
                await asyncio.sleep(2.0)  # traffic under way before the first measurement
            # This process stands in for the PBX, the callers and the agents' browsers: no collection
            # of its own while it times (bench.no_collection).
            with no_collection():
                start = time.monotonic()
                _profile_signal(remote, signal.SIGUSR1)
                result = await measure_ready(remote, pages, progress)
                _profile_signal(remote, signal.SIGUSR2)
            window = (start, time.monotonic())
            result.update({"waiting": waiting, "agents": agents, "websocket_clients": len(pages),
                           "background_rate_per_s": background_rate, "background_calls_placed": dict(counts),
                           "measure_seconds": round(window[1] - window[0], 1)})
        finally:
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
            for page in [*pages, *([staff] if staff else [])]:
                await page.close()
            stats = await _stop_remote(remote)
            await client.stop()
        result["server"] = window_stats(stats, *window)
        result["client"] = window_stats(client.figures(), *window)
        return result


def _profile_signal(remote: _Remote, sig: int) -> None:
    """With BENCH_PROFILE_DIR and BENCH_PROFILE_WINDOW set, the server is profiled only while we measure."""
    if os.environ.get("BENCH_PROFILE_DIR") and os.environ.get("BENCH_PROFILE_WINDOW"):
        remote.server.proc.send_signal(sig)


async def _is(remote: _Remote, page: _PageClient, state: str) -> bool:
    return await remote.agent_state(page) == state


async def _metric_at_least(remote: _Remote, name: str, value: float) -> bool:
    return await remote.metric(name) >= value


async def _poll_async(predicate: Callable[[], Any], timeout: float, step: float = 0.1) -> bool:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return bool(await predicate())


def run(waiting: int = 500, agents: int = 200, background_rate: float = 10.0, background_concurrency: int = 60,
        speed: float = 50.0, log_level: str = "warning", progress: Callable[[str], None] = print) -> dict[str, Any]:
    """All figures in one run; see the module docstring."""
    quiet_logs()
    return asyncio.run(_run(waiting, agents, background_rate, background_concurrency, speed, log_level, progress))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
