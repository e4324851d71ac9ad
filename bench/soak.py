"""Soak: continuous simulated traffic against the real server for N minutes (default 30; not run in CI).

``python -m bench.soak --minutes 30``. The server runs as it does in production, in its own process
(``python -m callcentre serve``: FastAGI, AMI link, SQLite or ``--database-url``, call distribution,
web), configured only through ``CALLCENTRE_…`` variables. This process is the PBX: the simulator's AMI
server and its realistic caller mix (callcentre.sim.runner.make_caller: repairs, complaints,
self-service, a person, unknown callers, hang-ups) calling the server's FastAGI port, with five agents
from the configuration (four answer after 2-6 s, one never does). Every 10 s the server's RSS
(/proc/PID), and every minute its asyncio tasks (``/metrics``), open fds and sockets, calls placed and
finished. At the end, after the last call:

* no memory growth trend: the least-squares slope of the server's RSS over the second half of the run
  (the first half fills the bounded histories: 2,000 finished calls in the AMI tracker, caches);
* no leaked tasks or sockets: tasks and open sockets back to what they were before the first call;
* every call accounted for: each call the simulator placed is in the calls table with an outcome,
  and calls in = with a ticket + answered by an agent + hung up / abandoned + self-service done +
  other outcomes (voice message without a ticket, fallback queue), with nothing left over;
* a clean stop: SIGTERM, then exit status 0 within 30 s.

The server's own output goes to ``--server-log`` (default bench/soak-server.log). Exit status 1 when a
check fails, so it can gate a release.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import REPO, open_fds, open_sockets, quiet_logs, raise_fd_limit, rss_bytes
from bench.bench_screenpop import AMI_SECRET, bench_environ, wait_for

# Growth allowed over the second half of the run before it is called a trend.
GROWTH_LIMIT_BYTES_PER_MIN = 512 * 1024
AGENTS = ((2.0, 30.0), (3.0, 40.0), (4.0, 25.0), (6.0, 50.0), (None, 0.0))


def slope_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope (bytes per minute) of (seconds, rss) samples; 0 with fewer than 3."""
    if len(samples) < 3:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [float(v) for _, v in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


@dataclass(frozen=True, slots=True)
class CallSummary:
    """What reconciliation needs of a simulated call (the full CallResult, with every command line,
    would make the simulator's own memory grow in the very process whose growth we watch)."""

    uniqueid: str
    fallback_queue: bool
    answered: bool
    ended: str


def drain_results(pbx: Any, into: list[CallSummary]) -> None:
    into.extend(CallSummary(r.uniqueid, r.fallback_queue, r.variables.get("DIALSTATUS") == "ANSWER", r.ended.value)
                for r in pbx.results)
    pbx.results.clear()


async def reconcile(db_cfg: Any, results: list[CallSummary], figures: dict[str, float]) -> dict[str, Any]:
    """Every simulated call against the server's calls and tickets tables."""
    from sqlalchemy import select

    from callcentre.storage.db import create_engine
    from callcentre.storage.models import CallRow, TicketRow

    engine = create_engine(db_cfg)  # the server's own settings (busy timeout) while it still runs
    try:
        async with engine.connect() as conn:
            calls = {r.uniqueid: r.outcome for r in await conn.execute(select(CallRow.uniqueid, CallRow.outcome))}
            with_ticket = set((await conn.execute(select(TicketRow.call_uniqueid))).scalars())
    finally:
        await engine.dispose()
    buckets: Counter[str] = Counter()
    unaccounted: list[str] = []
    for res in results:
        outcome = calls.get(res.uniqueid)
        if res.fallback_queue:
            buckets["fallback_queue"] += 1
        elif res.uniqueid in with_ticket:
            buckets["ticket"] += 1
        elif res.answered:
            buckets["answered"] += 1
        elif outcome is None:
            unaccounted.append(res.uniqueid)
        elif outcome == "hung_up":
            buckets["hung_up_or_abandoned"] += 1
        elif outcome == "done":
            buckets["self_service_done"] += 1
        else:
            buckets[f"outcome_{outcome}_without_ticket"] += 1
    return {
        "calls_in": len(results),
        "buckets": dict(buckets),
        "accounted": sum(buckets.values()),
        "unaccounted": len(unaccounted),
        "unaccounted_sample": unaccounted[:10],
        "calls_table_rows": len(calls),
        "tickets": len(with_ticket),
        "acd_answered": figures.get("callcentre_today_calls_answered"),
        "acd_abandoned": figures.get("callcentre_today_calls_abandoned"),
        "sim_ended": dict(Counter(r.ended for r in results)),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agents_yaml() -> str:
    """The soak's agents for CALLCENTRE_ACD__AGENTS, ready from the start."""
    return "[" + ", ".join(
        f"{{id: agent{n}, name: Agent {n}, interface: PJSIP/agent{n}, languages: [zh, en], start: ready}}"
        for n in range(len(AGENTS))) + "]"


@dataclass
class Server:
    """``python -m callcentre serve`` in a child process, with its web address."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """``/metrics`` as {name: value} (unlabelled samples only)."""
        async with http.get(self.url + "/metrics") as resp:
            text = await resp.text()
        return {smp.name: smp.value for fam in text_string_to_metric_families(text) for smp in fam.samples if not smp.labels}

    async def stop(self, timeout: float = 30.0) -> int | None:  # noqa: ASYNC109
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
            return None


def spawn_server(env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m callcentre serve`` configured by ``env`` alone: run in ``cwd`` (no ./config.yaml
    of the checkout) and without CALLCENTRE_* variables of the calling shell. Output to ``log_path``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_")}
    with log_path.open("wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", "callcentre", "serve"], cwd=cwd,
                                env={**inherited, "PYTHONPATH": str(REPO), **env},
                                stdout=log_file, stderr=subprocess.STDOUT)


async def start_server(env: dict[str, str], log_path: Path, http: aiohttp.ClientSession, web_port: int,
                       cwd: Path) -> Server:
    proc = spawn_server(env, log_path, cwd)
    server = Server(proc, f"http://127.0.0.1:{web_port}", log_path)
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while loop.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} at start; see {log_path}")
        try:
            async with http.get(server.url + "/health") as resp:
                if resp.status == 200:
                    return server
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    await server.stop()
    raise RuntimeError(f"the server did not report healthy within 60 s; see {log_path}")


def _server_sample(server: Server) -> dict[str, int]:
    return {"rss": rss_bytes(server.pid), "fds": open_fds(server.pid), "sockets": open_sockets(server.pid)}


async def soak(minutes: float, *, rate: float, concurrency: int, speed: float, seed: int,
               database_url: str | None, say: Callable[[str], None], server_log: Path,
               settle: float = 5.0) -> dict[str, Any]:
    from callcentre.config import load_config
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.sim.runner import DEFAULT_MIX, _pick, make_caller
    from callcentre.sim.scripts import AgentScript
    from callcentre.storage.db import create_engine, session_factory, upgrade

    rng = random.Random(seed)
    raise_fd_limit(8192)
    with tempfile.TemporaryDirectory(prefix="cc-soak-") as d:
        tmp = Path(d)
        agi_port, web_port = free_port(), free_port()
        pbx = SimPBX(speed=speed, prompt_dir=REPO / "prompts", prompt_prefix="callcentre", record_dir=tmp / "rec",
                     agi_port=agi_port)
        for n, (answer, talk) in enumerate(AGENTS):
            pbx.add_agent(AgentScript(f"PJSIP/agent{n}", answer_after=answer, talk_seconds=talk))
        ami_server = AMIServer(pbx, "callcentre", AMI_SECRET)
        ami_port = await ami_server.start()
        env = bench_environ(tmp, ami_port, database_url, CALLCENTRE_AGI__PORT=str(agi_port),
                            CALLCENTRE_WEB__PORT=str(web_port), CALLCENTRE_WEB__HOST="127.0.0.1",
                            CALLCENTRE_ACD__AGENTS=agents_yaml(), CALLCENTRE_ACD__WRAPUP_SECONDS="1",
                            CALLCENTRE_LOGGING__LEVEL="warning")
        cfg = load_config(None, environ=env)
        await upgrade(cfg.database.url, progress=None)
        engine = create_engine(cfg.database)
        await import_owners(session_factory(engine), REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
        await engine.dispose()
        caller_tasks: set[asyncio.Task[Any]] = set()
        server: Server | None = None
        async with aiohttp.ClientSession() as http:
            try:
                server = await start_server(env, server_log, http, web_port, tmp)
                if not await wait_for(lambda: bool(ami_server.actions_named("CoreShowChannels")), 30.0, 0.1):
                    raise RuntimeError(f"the server did not log in to the simulated AMI; see {server_log}")
                await asyncio.sleep(settle)
                base, base_fig = _server_sample(server), await server.metrics(http)
                base_tasks = int(base_fig["callcentre_event_loop_tasks"])
                base_pool = int(base_fig.get("callcentre_db_pool_connections", 0))
                say(f"soak: {minutes} min, {rate}/s, <= {concurrency} at once, speed {speed}; server pid {server.pid}: "
                    f"rss {base['rss'] / 2**20:.1f} MiB, tasks {base_tasks}, fds {base['fds']}, sockets {base['sockets']}")
                placed = 0
                done: list[CallSummary] = []
                kinds: Counter[str] = Counter()
                samples: list[tuple[float, int]] = []
                minute_rows: list[dict[str, Any]] = []
                gate = asyncio.Semaphore(concurrency)
                loop = asyncio.get_running_loop()
                start = loop.time()
                end = start + minutes * 60
                next_sample, next_print = start, start + 60
                while loop.time() < end:
                    await gate.acquire()
                    kind = _pick(rng, DEFAULT_MIX)
                    kinds[kind.value] += 1
                    task = asyncio.ensure_future(pbx.place_call(make_caller(kind, rng)))
                    caller_tasks.add(task)
                    task.add_done_callback(caller_tasks.discard)
                    task.add_done_callback(lambda _t: gate.release())
                    placed += 1
                    now = loop.time()
                    if now >= next_sample:
                        drain_results(pbx, done)
                        if server.proc.poll() is not None:
                            raise RuntimeError(f"the server exited with status {server.proc.returncode}; see {server_log}")
                        samples.append((now - start, rss_bytes(server.pid)))
                        next_sample += 10
                    if now >= next_print:
                        smp, fig = _server_sample(server), await server.metrics(http)
                        row = {"minute": round((now - start) / 60), "rss_mib": round(smp["rss"] / 2**20, 1),
                               "tasks": int(fig["callcentre_event_loop_tasks"]), "fds": smp["fds"],
                               "sockets": smp["sockets"], "placed": placed, "finished": len(done) + len(pbx.results),
                               "simulator_rss_mib": round(rss_bytes() / 2**20, 1)}
                        minute_rows.append(row)
                        say("  minute {minute}: server rss {rss_mib} MiB, tasks {tasks}, fds {fds} (sockets {sockets}); "
                            "placed {placed}, finished {finished}; simulator rss {simulator_rss_mib} MiB".format(**row))
                        next_print += 60
                    await asyncio.sleep(1.0 / rate)
                say(f"soak: traffic stopped after {placed} calls; waiting for the last calls to end")
                await wait_for(lambda: not caller_tasks, 180.0, 0.2)
                for _ in range(300):
                    if (await server.metrics(http)).get("callcentre_agi_sessions", 1) == 0:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(settle)
                drain_results(pbx, done)
                end_smp, end_fig = _server_sample(server), await server.metrics(http)
                end_tasks = int(end_fig["callcentre_event_loop_tasks"])
                end_pool = int(end_fig.get("callcentre_db_pool_connections", 0))
                recon = await reconcile(cfg.database, done, end_fig)
                status = await server.stop()
                say(f"soak: server stopped, exit status {status}")
            finally:
                for t in list(caller_tasks):
                    t.cancel()
                await asyncio.gather(*caller_tasks, return_exceptions=True)
                if server is not None and server.proc.poll() is None:
                    await server.stop()
                await pbx.aclose()
                await ami_server.stop()
        half = [smp for smp in samples if smp[0] >= samples[-1][0] / 2] if samples else []
        slope = slope_per_minute(half)
        checks = {
            "no_memory_growth_trend": slope <= GROWTH_LIMIT_BYTES_PER_MIN,
            "no_leaked_tasks": end_tasks <= base_tasks,
            # Idle database connections kept by the pool are not leaks (sockets on PostgreSQL).
            "no_leaked_sockets": end_smp["sockets"] - max(0, end_pool - base_pool) <= base["sockets"],
            "every_call_finished": recon["calls_in"] == placed and not caller_tasks,
            "every_call_accounted_for": recon["unaccounted"] == 0 and recon["accounted"] == recon["calls_in"],
            "clean_stop": status == 0,
        }
        return {
            "minutes": minutes, "placed": placed, "by_kind": dict(kinds), "per_minute": minute_rows,
            "server_rss_mib": {"baseline": round(base["rss"] / 2**20, 1), "end": round(end_smp["rss"] / 2**20, 1),
                               "max": round(max(v for _, v in samples) / 2**20, 1) if samples else None},
            "server_rss_slope_kib_per_min_second_half": round(slope / 1024, 1),
            "server_rss_samples": [(round(t), round(v / 2**20, 2)) for t, v in samples],
            "tasks": {"baseline": base_tasks, "end": end_tasks},
            "fds": {"baseline": base["fds"], "end": end_smp["fds"]},
            "sockets": {"baseline": base["sockets"], "end": end_smp["sockets"]},
            "db_pool_connections": {"baseline": base_pool, "end": end_pool},
            "server_exit_status": status,
            "reconciliation": recon, "checks": checks, "ok": all(checks.values()),
        }


def run(minutes: float = 30.0, *, rate: float = 5.0, concurrency: int = 60, speed: float = 20.0, seed: int = 1,
        database_url: str | None = None, settle: float = 5.0, server_log: Path | None = None,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``settle``: seconds of quiet before the baseline and after the last call (timers, pools)."""
    quiet_logs()
    return asyncio.run(soak(minutes, rate=rate, concurrency=concurrency, speed=speed, seed=seed,
                            database_url=database_url, say=progress, settle=settle,
                            server_log=server_log or REPO / "bench" / "soak-server.log"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to run traffic (default 30)")
    p.add_argument("--rate", type=float, default=5.0, help="new calls per second (default 5)")
    p.add_argument("--concurrency", type=int, default=60, help="calls in progress at most (default 60)")
    p.add_argument("--speed", type=float, default=20.0, help="simulated time runs this much faster (default 20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--database-url", default=None, help="a PostgreSQL URL instead of a temporary SQLite file")
    p.add_argument("--server-log", type=Path, default=None, help="the server's output (default bench/soak-server.log)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.rate <= 0 or a.concurrency < 1 or a.speed <= 0:
        p.error("--minutes, --rate and --speed must be positive and --concurrency at least 1")
    result = run(a.minutes, rate=a.rate, concurrency=a.concurrency, speed=a.speed, seed=a.seed,
                 database_url=a.database_url, server_log=a.server_log)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json is not None:
        a.json.write_text(text + "\n", encoding="utf-8")
    for name, ok in result["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
