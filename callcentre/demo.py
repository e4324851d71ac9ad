"""``callcentre demo``: the server and the PBX simulator together, on a throw-away database.

A newcomer sees the whole loop without an Asterisk: calls arrive over FastAGI, the IVR answers,
tickets appear, callers who ask for a person are distributed to three simulated agents (one answers
fast, one slowly, one never — and ends up paused for missed calls), and the web pages are live.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path
from typing import Callable

from aiohttp import web

from callcentre.config import Config, load_config

DEMO_AGENTS = (
    ("agent1", "Wang Fang", "PJSIP/agent1"),
    ("agent2", "Li Qiang", "PJSIP/agent2"),
    ("agent3", "Zhao Min", "PJSIP/agent3"),
)
EXAMPLE_OWNERS = Path(__file__).resolve().parent.parent / "examples" / "owners.csv"


async def run_demo(cfg: Config, *, calls: int, speed: float, keep_running: bool, echo: Callable[[str], None]) -> int:
    from callcentre.app import SERVICES, build_app
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.sim.runner import DEFAULT_AGENTS, DEFAULT_MIX, CallKind, load_owners, make_caller
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.users_repo import create_user

    workdir = Path(tempfile.mkdtemp(prefix="callcentre-demo-"))
    secret = "demo-only-secret"
    pbx = SimPBX("127.0.0.1", 0, speed=speed, prompt_dir=Path(cfg.prompts.local_dir), prompt_prefix=cfg.prompts.asterisk_path,
                 record_dir=workdir / "recordings")
    for agent in DEFAULT_AGENTS:
        pbx.add_agent(agent)
    ami_server = AMIServer(pbx, "callcentre", secret)
    ami_port = await ami_server.start()
    agents_yaml = "[" + ", ".join(
        f"{{id: {login}, name: {name}, interface: {iface}, start: ready}}" for login, name, iface in DEMO_AGENTS
    ) + "]"
    environ = {
        "CALLCENTRE_DATABASE__URL": f"sqlite+aiosqlite:///{workdir / 'demo.db'}",
        "CALLCENTRE_AGI__PORT": "0",
        "CALLCENTRE_AMI__HOST": "127.0.0.1",
        "CALLCENTRE_AMI__PORT": str(ami_port),
        "CALLCENTRE_AMI_SECRET": secret,
        "CALLCENTRE_WEB__HOST": cfg.web.host,
        "CALLCENTRE_WEB__PORT": str(cfg.web.port),
        "CALLCENTRE_IVR__RECORD_DIR": str(workdir / "recordings"),
        "CALLCENTRE_ACD__AGENTS": agents_yaml,
        "CALLCENTRE_ACD__WRAPUP_SECONDS": "2",
        "CALLCENTRE_LOGGING__LEVEL": "warning",
    }
    demo_cfg = load_config(None, environ=environ)
    echo(f"demo: working files in {workdir}")
    await upgrade(demo_cfg.database.url, progress=None)
    engine = create_engine(demo_cfg.database)
    sf = session_factory(engine)
    if EXAMPLE_OWNERS.exists():
        report = await import_owners(sf, EXAMPLE_OWNERS, country_code="86", trunk_prefix="0")
        echo(f"demo: owner directory imported from {EXAMPLE_OWNERS.name} ({report.summary()})")
    passwords = {"supervisor": "demo-supervisor-pass"}
    await create_user(sf, "supervisor", "Demo Supervisor", "supervisor", passwords["supervisor"])
    await engine.dispose()

    app = build_app(demo_cfg)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, demo_cfg.web.host, demo_cfg.web.port)
    services = app[SERVICES]
    try:
        await site.start()
        url = f"http://{demo_cfg.web.host}:{demo_cfg.web.port}/"
        echo(f"demo: web pages at {url} (supervisor / {passwords['supervisor']})")
    except OSError as exc:
        url = None
        echo(f"demo: web pages not started ({exc.strerror}); calls still run")
    pbx.agi_port = services.agi.port
    for _ in range(100):
        if services.ami is not None and services.ami.connected:
            break
        await asyncio.sleep(0.05)
    echo(f"demo: FastAGI on 127.0.0.1:{services.agi.port}, AMI link {'up' if services.ami.connected else 'down'}; "
         f"placing {calls} calls at {speed:g}x speed")
    rng = random.Random(7)
    owners = load_owners(EXAMPLE_OWNERS) if EXAMPLE_OWNERS.exists() else []
    kinds = list(DEFAULT_MIX)
    weights = [DEFAULT_MIX[k] for k in kinds]
    failures = 0
    try:
        for i in range(1, calls + 1):
            kind = kinds[0] if i == 1 else rng.choices(kinds, weights)[0]
            if kind is CallKind.HANGUP and i <= 3:
                kind = CallKind.AGENT
            script = make_caller(kind, rng, owners=owners)
            result = await pbx.place_call(script)
            numbers = await services.tickets.numbers_for_call(result.uniqueid)
            how = result.ended.value
            if result.variables.get("DIALSTATUS") == "ANSWER":
                how = f"answered by {result.variables.get('DIALEDPEERNAME', 'an agent').split('-')[0]}"
            echo(f"call {i:>3}/{calls}: {script.caller_id:<14} {kind.value:<14} -> {how}"
                 + (f", ticket {', '.join(numbers)}" if numbers else ""))
            if result.error:
                failures += 1
        figures = services.acd.metrics() if services.acd is not None else {}
        echo("demo: two-ring share today {share}, calls answered {ans}, abandoned {ab}".format(
            share=_pct(figures.get("call_two_ring_share")), ans=figures.get("calls_answered", 0),
            ab=figures.get("calls_abandoned", 0)))
        for a in (services.acd.snapshot()["agents"] if services.acd is not None else []):
            echo(f"  agent {a['name']:<10} {a['state']:<9} {a['reason'] or '':<13} answered {a['answered_today']}, missed {a['missed_today']}")
        if keep_running and url:
            echo("demo: still running; press Ctrl-C to stop")
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await pbx.aclose()
        await ami_server.stop()
    return 1 if failures else 0


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"
