"""AMI ingest: events per second from the socket to the application, with the live push running.

Input: every byte Asterisk sent in tests/fixtures/ami-*.txt (real Asterisk 20 captures), repeated
``repeat`` times with the Uniqueid/Linkedid values renumbered on each pass, so every pass is a fresh
set of calls (a replay with the same ids would be dropped as stale and flatter us). Each round gets
ids of its own too.

Both sides read the same bytes from a simulated Asterisk (:class:`~callcentre.sim.ami_server.AMIServer`,
one per side) over a loopback socket, after logging in, and are timed from the moment the bytes are
handed to the server's socket to the moment the last event reaches the application's callback:

* **reference**: panoramisk's own :class:`~panoramisk.manager.Manager` (its ``AMIProtocol`` parses,
  ``Manager.dispatch`` matches the registered patterns and calls the callback), with one callback
  registered for ``*`` that counts the events;
* **ours**: the server as ``callcentre serve`` builds it (``build_app`` with its web part, ``gc.freeze``
  after start-up), ``agents`` agents loaded into call distribution, its own AMI link logged in to the
  simulated Asterisk and resynchronised, every event going through the application's ``on_event``
  (CallTracker with the ACD listener, ACD's AMI hook, the call-back scheduler), and a supervisor's
  wallboard page logged in over HTTP with ``/ws/wallboard`` open, whose frames are counted as they
  arrive (the live push: the snapshot pushed once a second when it changed, and alerts).

Rounds alternate (reference, ours, reference, ours ...) so both see the same machine; the ratio
ours/reference is computed per round and its median reported. panoramisk's bare parser (decode,
split, ``Message.from_line``, no dispatch, in memory) is shown beside it as a second reference.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import REPO, quiet_logs

_ID_FIELD = re.compile(rb"^((?:[A-Za-z]*)(?:Uniqueid|Linkedid)): (\d+)\.(\d+)\r$", re.MULTILINE)
_CHUNK = 65536
AMI_SECRET = "bench-ami-secret"
SUPERVISOR_PASSWORD = "bench-supervisor-password"
TARGET_EVENTS_PER_S = 60_000
TARGET_RATIO = 1.0


def capture_bytes() -> bytes:
    """The bytes Asterisk sent in every AMI capture: banners and ``Event: Shutdown`` removed."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.captures import from_asterisk

    parts = []
    for path in sorted((REPO / "tests" / "fixtures").glob("ami-*.txt")):
        data = from_asterisk(path.name)
        lines = [ln for ln in data.split(b"\r\n") if not ln.startswith(b"Asterisk Call Manager/")]
        # Event: Shutdown ends an AMI session (the link reconnects): it would stop the replay here.
        blocks = [b for b in b"\r\n".join(lines).split(b"\r\n\r\n") if b.strip() and b"Event: Shutdown" not in b]
        parts.append(b"".join(b.strip(b"\r\n") + b"\r\n\r\n" for b in blocks))
    return b"".join(parts)


def count_events(data: bytes) -> int:
    return sum(1 for block in data.split(b"\r\n\r\n") if block.lstrip(b"\r\n").startswith(b"Event:"))


def stream(repeat: int, first_pass: int = 0, base: bytes | None = None) -> tuple[bytes, int]:
    """``repeat`` passes with fresh ids (pass numbers from ``first_pass``); the bytes and their events."""
    base = capture_bytes() if base is None else base
    passes = []
    for r in range(first_pass, first_pass + repeat):
        shift = (r + 1) * 1_000_000
        passes.append(_ID_FIELD.sub(lambda m, s=shift: m[1] + b": " + str(int(m[2]) + s).encode() + b"." + m[3] + b"\r", base))
    data = b"".join(passes)
    return data, count_events(data)


def panoramisk_bare(data: bytes) -> tuple[float, int]:
    """Seconds for panoramisk's parser alone over ``data`` (in memory) and the events it produced."""
    from panoramisk import utils
    from panoramisk.message import Message

    sep = utils.EOL + utils.EOL
    events = 0
    carry = ""
    t0 = time.perf_counter()
    for i in range(0, len(data), _CHUNK):
        text = carry + data[i:i + _CHUNK].decode("utf-8", "ignore")
        blocks = text.split(sep)
        carry = blocks.pop(-1)
        for block in blocks:
            msg = Message.from_line(block.strip())
            if msg is not None and "Event" in msg:
                events += 1
    return time.perf_counter() - t0, events


class _Counter:
    """Counts events and resolves a future when ``expected`` have arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = -1
        self.done: asyncio.Future[float] | None = None

    def arm(self, expected: int) -> asyncio.Future[float]:
        self.count = 0
        self.expected = expected
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def hit(self) -> None:
        self.count += 1
        if self.count == self.expected and self.done is not None and not self.done.done():
            self.done.set_result(time.perf_counter())


async def _simulated_asterisk() -> Any:
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX

    server = AMIServer(SimPBX(), "callcentre", AMI_SECRET)
    await server.start()
    return server


async def _replay(server: Any, data: bytes, counter: _Counter, events: int, timeout: float) -> float:  # noqa: ASYNC109
    """Hand ``data`` to the server's socket; seconds until the ``events``-th event was counted."""
    done = counter.arm(events)
    t0 = time.perf_counter()
    sent = await server.send_raw(data)
    if sent != 1:
        raise RuntimeError(f"the replay reached {sent} AMI clients, not 1")
    try:
        t_end = await asyncio.wait_for(done, timeout)
    except TimeoutError:
        raise RuntimeError(f"only {counter.count} of {events} events arrived within {timeout:.0f} s") from None
    return t_end - t0


class _Reference:
    """panoramisk's Manager logged in to its own simulated Asterisk, one callback on ``*``."""

    def __init__(self) -> None:
        self.counter = _Counter()
        self.server: Any = None
        self.manager: Any = None

    async def start(self) -> None:
        from panoramisk.manager import Manager

        self.server = await _simulated_asterisk()
        counter = self.counter

        def on_event(_manager: Any, _message: Any) -> None:
            counter.hit()

        self.manager = Manager(host="127.0.0.1", port=self.server.port, username="callcentre", secret=AMI_SECRET,
                               ping_delay=3600, ping_interval=3600, reconnect_timeout=3600,
                               loop=asyncio.get_running_loop())
        self.manager.register_event("*", on_event)
        await self.manager.connect()
        if not await _until(lambda: self.manager.authenticated, 10.0):
            raise RuntimeError("panoramisk did not log in to the simulated Asterisk")
        await asyncio.sleep(0.2)  # its FullyBooted / SuccessfulAuth events are not part of the figure

    async def stop(self) -> None:
        if self.manager is not None:
            self.manager.close()
        if self.server is not None:
            await self.server.stop()


class _Ours:
    """The server built by build_app with its web part, its AMI link, and a wallboard page."""

    def __init__(self, tmp: Path, agents: int) -> None:
        self.tmp = tmp
        self.agents = agents
        self.counter = _Counter()
        self.frames: list[tuple[float, str]] = []
        self.frames_total = 0
        self.server: Any = None
        self.runner: web.AppRunner | None = None
        self.services: Any = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from callcentre.app import SERVICES, build_app
        from callcentre.config import load_config
        from callcentre.domain.acd import Agent
        from callcentre.storage.users_repo import create_user

        self.server = await _simulated_asterisk()
        env = {
            "CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{self.tmp / 'ami.db'}",
            "CALLCENTRE_AGI__PORT": "0",
            "CALLCENTRE_AMI__PORT": str(self.server.port),
            "CALLCENTRE_AMI_SECRET": AMI_SECRET,
            "CALLCENTRE_WEB__PORT": "0",
            "CALLCENTRE_WEB__SESSION_KEY": "bench-session-key-0123456789abcdef0123456789",
        }
        cfg = load_config(None, environ=env)
        app = build_app(cfg, web_ui=True)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        gc.freeze()  # as callcentre serve does after start-up
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        services = self.services = app[SERVICES]
        # Agents on the interfaces the captures use plus many others: the ACD's AMI hook maps channels to agents.
        ifaces = ["Local/agent1@agents", "Local/agent2@agents", "SIP/agent3"] + [f"PJSIP/bench{n}" for n in range(self.agents)]
        services.acd.load_agents(
            [Agent(str(10_000 + n), f"A{n}", f"a{n}", iface, frozenset({"repair"}), frozenset({"zh"}))
             for n, iface in enumerate(ifaces)],
            {}, {str(10_000 + n) for n in range(len(ifaces))},
        )
        if not await _until(lambda: services.ami is not None and services.ami.connected, 10.0):
            raise RuntimeError("our AMI link did not log in to the simulated Asterisk")
        link = services.ami
        inner = link._on_event  # noqa: SLF001 - the application's own callback, counted on the way in
        counter = self.counter

        def counting(message: Any) -> None:
            counter.hit()
            inner(message)

        link._on_event = counting  # noqa: SLF001
        await create_user(services.session_factory, "bench-supervisor", "Bench Supervisor", "supervisor",
                          SUPERVISOR_PASSWORD)
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with self.http.post(f"{url}/api/login",
                                  json={"login": "bench-supervisor", "password": SUPERVISOR_PASSWORD}) as r:
            if r.status != 200:
                raise RuntimeError(f"supervisor log-in refused: HTTP {r.status} {await r.text()}")
        self.ws = await self.http.ws_connect(f"{url}/ws/wallboard", headers={"Origin": url})
        first = await self.ws.receive_json(timeout=10)
        if first.get("type") != "snapshot":
            raise RuntimeError(f"the wallboard's first frame is not a snapshot: {str(first)[:200]}")
        self.reader = asyncio.create_task(self._read(), name="bench-wallboard")
        await asyncio.sleep(0.3)  # the link's resync after login is not part of the figure

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type", "?")
                self.frames.append((time.perf_counter(), str(kind)))
                self.frames_total += 1

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.server is not None:
            await self.server.stop()


async def _until(predicate: Callable[[], bool], timeout: float) -> bool:  # noqa: ASYNC109 - polled
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def _run(repeat: int, agents: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    base = capture_bytes()
    per_round: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cc-bench-ami-") as d:
        ref, ours = _Reference(), _Ours(Path(d), agents)
        try:
            await ref.start()
            await ours.start()
            for n in range(rounds):
                data, events = stream(repeat, first_pass=n * repeat, base=base)
                timeout = 120.0 + events / 1000
                ref_s = await _replay(ref.server, data, ref.counter, events, timeout)
                ours.frames.clear()
                t_start = time.perf_counter()
                ours_s = await _replay(ours.server, data, ours.counter, events, timeout)
                during = [kind for at, kind in ours.frames if t_start <= at <= t_start + ours_s]
                row = {
                    "round": n + 1,
                    "events": events,
                    "bytes": len(data),
                    "reference_seconds": round(ref_s, 4),
                    "reference_events_per_s": round(events / ref_s),
                    "ours_seconds": round(ours_s, 4),
                    "ours_events_per_s": round(events / ours_s),
                    "ratio": round(ref_s / ours_s, 3),
                    "wallboard_frames": len(during),
                    "wallboard_frame_kinds": {k: during.count(k) for k in sorted(set(during))},
                }
                per_round.append(row)
                progress(f"  round {n + 1}: panoramisk parse+dispatch {row['reference_events_per_s']:,}/s, "
                         f"ours {row['ours_events_per_s']:,}/s (x{row['ratio']}), "
                         f"{row['wallboard_frames']} wallboard frames received during it")
                await asyncio.sleep(0.2)
            calls = len(ours.services.tracker.records())
            # The page keeps receiving the live push (once a second while the picture changes).
            seen = ours.frames_total
            await _until(lambda: ours.frames_total > seen, 3.0)
            frames_total = ours.frames_total
        finally:
            await ours.stop()
            await ref.stop()
    bare_data, bare_events = stream(repeat, base=base)
    bare_s, bare_count = panoramisk_bare(bare_data)
    progress(f"  panoramisk bare parser (in memory, no dispatch): {bare_count / bare_s:,.0f} events/s")

    def median(key: str) -> float:
        return statistics.median(r[key] for r in per_round)

    ours_eps = round(median("ours_events_per_s"))
    ratio = round(median("ratio"), 3)
    return {
        "events": per_round[0]["events"],
        "bytes": per_round[0]["bytes"],
        "agents": agents,
        "rounds": per_round,
        "reference_events_per_s": round(median("reference_events_per_s")),
        "ours_events_per_s": ours_eps,
        "ratio_ours_to_reference": ratio,
        "wallboard_frames": sum(r["wallboard_frames"] for r in per_round),
        "wallboard_frames_total": frames_total,
        "calls_tracked": calls,
        "panoramisk_bare": {"seconds": round(bare_s, 4), "events": bare_count, "events_per_s": round(bare_count / bare_s)},
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_ratio": TARGET_RATIO,
        "met": ours_eps >= TARGET_EVENTS_PER_S and ratio >= TARGET_RATIO,
    }


def run(repeat: int = 60, agents: int = 200, rounds: int = 3, progress: Callable[[str], None] = print) -> dict[str, Any]:
    quiet_logs()
    return asyncio.run(_run(repeat, agents, rounds, progress))


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
