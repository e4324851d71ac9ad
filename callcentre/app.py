"""The composition root: builds every part from the configuration, and nothing else does.

The aiohttp application owns the resources through ``cleanup_ctx`` (database engine, FastAGI
listener, AMI link), so they start in order, stop in reverse order, and their tasks are cancelled and
awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import structlog
from aiohttp import web

from callcentre import __version__
from callcentre.agi.server import FastAGIServer
from callcentre.ami.calls import CallTracker
from callcentre.ami.link import AMILink
from callcentre.config import Config
from callcentre.domain.ivr import HotlineIVR
from callcentre.domain.ports import Clock, SystemClock
from callcentre.storage import db as storage_db
from callcentre.storage.repo import SqlDirectory, SqlTicketStore

log = structlog.get_logger("callcentre.app")


@dataclass
class Services:
    """Everything the composition root built; handed to the web layer and to tests."""

    cfg: Config
    clock: Clock
    engine: Any = None
    session_factory: Any = None
    directory: SqlDirectory | None = None
    tickets: SqlTicketStore | None = None
    ivr: HotlineIVR | None = None
    agi: FastAGIServer | None = None
    ami: AMILink | None = None
    tracker: CallTracker = field(default_factory=CallTracker)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    on_resync: Any = None  # called after every AMI resynchronisation (call distribution hooks in)


SERVICES = web.AppKey("services", Services)


def build_app(cfg: Config, *, clock: Clock | None = None, migrate: bool = True) -> web.Application:
    services = Services(cfg=cfg, clock=clock or SystemClock())
    app = web.Application()
    app[SERVICES] = services

    async def database(app: web.Application) -> AsyncIterator[None]:
        if migrate:
            await storage_db.upgrade(cfg.database.url, progress=lambda msg: log.info("migration", step=msg))
        services.engine = storage_db.create_engine(cfg.database)
        services.session_factory = storage_db.session_factory(services.engine)
        services.directory = SqlDirectory(services.session_factory)
        services.tickets = SqlTicketStore(
            services.session_factory, services.clock, cfg.centre.timezone, dict(cfg.tickets.number_prefix)
        )
        services.ivr = HotlineIVR(cfg, services.directory, services.tickets, services.clock)
        yield
        if services.ivr is not None:
            await services.ivr.drain()
        await services.engine.dispose()

    async def agi_listener(app: web.Application) -> AsyncIterator[None]:
        assert services.ivr is not None
        ivr = services.ivr

        async def hotline(channel) -> None:
            await ivr.run(channel)

        routes = {"hotline": hotline}

        def router(env):
            return routes.get(env.script)

        services.agi = FastAGIServer(cfg.agi, router, prompt_path=cfg.prompts.asterisk_path)
        await services.agi.start()
        log.info("fastagi listening", host=cfg.agi.host, port=services.agi.port)
        yield
        await services.agi.stop(grace_seconds=10.0)

    async def ami_link(app: web.Application) -> AsyncIterator[None]:
        if not cfg.ami.enabled:
            log.warning("AMI link disabled in config (ami.enabled: false)")
            yield
            return
        secret = cfg.ami_secret()
        if not secret:
            log.warning(
                "no AMI secret: set CALLCENTRE_AMI_SECRET or ami.secret_file; the AMI link stays off"
            )
            yield
            return
        services.ami = AMILink(cfg.ami, secret, on_event=_on_event(services), on_login=_on_login(services))
        await services.ami.start()
        yield
        await services.ami.stop()

    async def mark_ready(app: web.Application) -> AsyncIterator[None]:
        services.ready.set()
        yield

    app.cleanup_ctx.extend([database, agi_listener, ami_link, mark_ready])
    app.router.add_get("/health", health)
    return app


def _on_event(services: Services):
    tracker = services.tracker
    clock = services.clock

    def on_event(message) -> None:
        tracker.feed(message, clock.monotonic())

    return on_event


def _on_login(services: Services):
    async def on_login() -> None:
        """Resynchronise on every login: Asterisk may have restarted and forgotten every call.

        CoreShowChannels rebuilds the call records (phantoms are closed, unknown channels added);
        QueueStatus and Status are read for the fallback queue and the channels' details. Each is
        best effort: a PBX without app_queue answers QueueStatus with an error, which is logged.
        """
        from callcentre.ami.link import AMIError

        ami = services.ami
        assert ami is not None
        channels = await ami.core_show_channels()
        services.tracker.resync(channels, services.clock.monotonic())
        summary = {"channels": sum(1 for m in channels if m.get("Event") == "CoreShowChannel")}
        for name, action in (("queue_entries", ami.queue_status(services.cfg.acd.fallback_queue)), ("status", ami.channel_status())):
            try:
                events = await action
                summary[name] = len(events) - 1
            except AMIError as exc:
                log.warning("ami resync step failed", step=name, error=str(exc))
        if services.on_resync is not None:
            services.on_resync()
        log.info("ami resynchronised", **summary)

    return on_login


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    db_status = await storage_db.check(services.engine) if services.engine is not None else {"ok": False}
    agi = services.agi
    ami = services.ami
    body = {
        "version": __version__,
        "database": db_status,
        "fastagi": {
            "ok": agi is not None and agi.listening,
            "port": agi.port if agi else None,
            "active_sessions": agi.active_sessions if agi else 0,
        },
        "ami": ami.status() if ami else {"connected": False, "enabled": False},
    }
    ok = body["database"].get("ok") and body["fastagi"]["ok"] and (ami is None or ami.connected)
    body["ok"] = bool(ok)
    return web.json_response(body, status=200 if ok else 503)


async def serve(cfg: Config) -> None:
    """Run until SIGINT/SIGTERM, then stop taking calls, let calls in progress finish, and exit."""
    app = build_app(cfg)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, cfg.web.host, cfg.web.port)
    await site.start()
    log.info("web listening", host=cfg.web.host, port=cfg.web.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping: no new calls; waiting for calls in progress")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.info("stopped")
