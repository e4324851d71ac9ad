"""The composition root: builds every part from the configuration, and nothing else does.

The aiohttp application owns the resources through ``cleanup_ctx`` (database and services, call
distribution, FastAGI listener, AMI link, background loops), so they start in order, stop in
reverse order, and their tasks are cancelled and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import gc
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
from callcentre.web.auth import public
from callcentre.web.hub import Hub

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
    ticket_service: Any = None
    users: Any = None
    ivr: HotlineIVR | None = None
    acd: Any = None  # callcentre.distribution.ACDService when call distribution is on
    agi: FastAGIServer | None = None
    ami: AMILink | None = None
    callbacks: Any = None
    escalation: Any = None
    reconciliation: Any = None
    webhooks: Any = None
    survey: Any = None
    hub: Hub | None = None
    tracker: CallTracker = field(default_factory=CallTracker)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False


SERVICES = web.AppKey("services", Services)


def build_app(cfg: Config, *, clock: Clock | None = None, migrate: bool = True, web_ui: bool = True) -> web.Application:
    services = Services(cfg=cfg, clock=clock or SystemClock())
    services.hub = Hub(cfg.web.websocket_queue_max)
    app = web.Application()
    app[SERVICES] = services

    def publish(topic: str, payload: dict) -> None:
        """Everything live goes through here; wallboard events other than snapshots become alerts."""
        assert services.hub is not None
        payload = dict(payload)
        if topic == "wallboard" and payload.get("type") not in ("snapshot", "alert"):
            payload = {"type": "alert", "alert": _as_alert(payload, services.clock)}
        if topic == "wallboard" and payload.get("type") == "alert" and services.acd is not None:
            services.acd.alerts.append(payload["alert"])
        services.hub.publish(topic, payload)

    async def database(app: web.Application) -> AsyncIterator[None]:
        from callcentre.service.tickets import TicketService
        from callcentre.storage.users_repo import UsersRepo

        if migrate:
            await storage_db.upgrade(cfg.database.url, progress=lambda msg: log.info("migration", step=msg))
        services.engine = storage_db.create_engine(cfg.database)
        sf = services.session_factory = storage_db.session_factory(services.engine)
        services.directory = SqlDirectory(sf)
        services.tickets = SqlTicketStore(sf, services.clock, cfg.centre.timezone, dict(cfg.tickets.number_prefix))
        services.ticket_service = TicketService(sf, cfg, services.clock, webhook_urls=tuple(cfg.webhooks.urls))
        services.users = UsersRepo(sf, services.clock)
        yield
        await services.engine.dispose()

    async def distribution(app: web.Application) -> AsyncIterator[None]:
        connector = None
        if cfg.acd.enabled:
            from callcentre.distribution import ACDService, AgentRoster
            from callcentre.storage.desk_repo import DeskRepo

            roster = AgentRoster(services.users, cfg, services.session_factory, services.clock)
            desk = DeskRepo(
                services.session_factory, services.clock, tz=cfg.centre.timezone,
                prefixes=dict(cfg.tickets.number_prefix), repeat_caller_hours=cfg.acd.repeat_caller_hours,
            )
            acd = ACDService(
                cfg, services.clock, services.tickets, publish=publish, persist_history=roster.record_states,
                last_call_at=services.tickets.last_call_at, supervisor_interface=roster.supervisor_phone,
                owners=desk, ami=lambda: services.ami,
                overdue=lambda: services.escalation.overdue if services.escalation is not None else [],
            )
            await roster.load(acd)
            await acd.start()
            services.acd = connector = acd
            services.tracker.add_listener(acd)  # DialBegin/DialEnd, DTMF, hang-ups, OriginateResponse
            roster.start(acd)
        else:
            log.warning("call distribution is off (acd.enabled: false): callers who ask for a person go to the dialplan's queue")
        services.ivr = HotlineIVR(cfg, services.directory, services.tickets, services.clock, connector)
        yield
        await services.ivr.drain()
        if services.acd is not None:
            await roster.stop()
            services.tracker.remove_listener(services.acd)
            await services.acd.stop()

    async def service_loop(app: web.Application) -> AsyncIterator[None]:
        from callcentre.service.callbacks import CallbackScheduler
        from callcentre.service.escalation import EscalationLoop
        from callcentre.service.survey import SurveyScript
        from callcentre.service.webhooks import WebhookSender, WebhookSettings, load_secret

        async def originate(channel, context, exten, variables, caller_id, timeout_ms, action_id) -> str:
            if services.ami is None:
                from callcentre.ami.link import AMIDisconnected

                raise AMIDisconnected("the AMI link is not configured")
            return await services.ami.originate(
                channel=channel, context=context, exten=exten, variables=variables, caller_id=caller_id,
                timeout_ms=timeout_ms, action_id=action_id,
            )

        sf = services.session_factory
        services.callbacks = CallbackScheduler(
            sf, services.ticket_service, cfg, services.clock, originate, publish=publish,
            dial_template=cfg.centre.outbound_template,
        )
        services.survey = SurveyScript(services.ticket_service, services.callbacks, default_language=cfg.ivr.default_language)
        services.escalation = EscalationLoop(services.ticket_service, cfg, services.clock, publish)

        def reconciled(day, text: str, csv_text: str) -> None:
            """当日盘点 done: tell the supervisors (the report itself is on the reports page and CLI)."""
            lines = [ln for ln in text.splitlines() if ln.strip()]
            log.info("daily reconciliation", day=str(day), summary=lines[:3])
            publish("wallboard", {"type": "daily_reconciliation", "message": f"Daily reconciliation for {day} is ready",
                                  "day": str(day)})

        from callcentre.service.reports_cmd import ReconciliationScheduler

        services.reconciliation = ReconciliationScheduler(sf, cfg, services.clock, reconciled)
        started = [services.callbacks, services.escalation, services.reconciliation]
        if cfg.webhooks.urls:
            w = cfg.webhooks
            settings = WebhookSettings(
                urls=tuple(w.urls), secret=load_secret(cfg._env(), w.secret_file), timeout_seconds=w.timeout_seconds,
                retry_base_seconds=w.retry_base_seconds, retry_max_seconds=w.retry_max_seconds,
                max_attempts=w.max_attempts, poll_seconds=w.poll_seconds,
            )
            services.webhooks = WebhookSender(sf, settings, services.clock)
            started.append(services.webhooks)
        for part in started:
            await part.start()
        yield
        for part in reversed(started):
            await part.stop()

    async def agi_listener(app: web.Application) -> AsyncIterator[None]:
        ivr = services.ivr
        assert ivr is not None

        async def hotline(channel) -> None:
            await ivr.run(channel)

        async def survey(channel) -> None:
            await services.survey.run(channel)

        async def callback(channel) -> None:
            try:
                if services.acd is not None:
                    await services.acd.callback_script(channel)
            finally:
                await channel.set_result("done")

        routes = {"hotline": hotline, "survey": survey, "callback": callback}

        def router(env):
            if services.draining and env.script == "hotline":
                return None  # shutting down: the dialplan's fallback queue takes new callers
            return routes.get(env.script)

        services.agi = FastAGIServer(cfg.agi, router, prompt_path=cfg.prompts.asterisk_path)
        await services.agi.start()
        log.info("fastagi listening", host=cfg.agi.host, port=services.agi.port)
        yield
        services.draining = True
        services.agi.stop_accepting()
        await services.agi.stop(grace_seconds=cfg.agi.shutdown_grace_seconds)

    async def ami_link(app: web.Application) -> AsyncIterator[None]:
        if not cfg.ami.enabled:
            log.warning("AMI link disabled in config (ami.enabled: false)")
            yield
            return
        secret = cfg.ami_secret()
        if not secret:
            log.warning("no AMI secret: set CALLCENTRE_AMI_SECRET or ami.secret_file; the AMI link stays off")
            yield
            return
        services.ami = AMILink(cfg.ami, secret, on_event=_on_event(services), on_login=_on_login(services))
        await services.ami.start()
        yield
        await services.ami.stop()

    async def mark_ready(app: web.Application) -> AsyncIterator[None]:
        services.ready.set()
        yield

    # Started in this order and stopped in reverse: at shutdown the FastAGI listener stops taking calls
    # and lets calls in progress finish while the AMI link and the database are still up.
    app.cleanup_ctx.extend([database, distribution, service_loop, ami_link, agi_listener, mark_ready])
    # Open to monitoring without a log-in (they carry no owner data); bind web.host to a private address.
    app.router.add_get("/health", public(health))
    app.router.add_get("/metrics", public(metrics))
    if web_ui:
        from callcentre.web import setup_web

        setup_web(app, services)
    return app


def _as_alert(payload: dict, clock: Clock) -> dict:
    """A service-loop event (promise warning or breach, call-back needing a person) as a wallboard alert."""
    kind = str(payload.get("type") or payload.get("kind") or "alert")
    ticket = payload.get("ticket")
    messages = {
        "promise_warning": f"Ticket {ticket} has used 80% of its promised time",
        "promise_breach": f"Ticket {ticket} is past its promised time: escalated to the quality department",
    }
    message = payload.get("message") or messages.get(kind) or (f"{kind.replace('_', ' ')}: ticket {ticket}" if ticket else kind)
    return {**{k: v for k, v in payload.items() if isinstance(v, (str, int, float, bool)) or v is None},
            "kind": kind, "message": str(message), "at": payload.get("at") or clock.now().isoformat()}


def _on_event(services: Services):
    tracker = services.tracker
    clock = services.clock

    def on_event(message) -> None:
        tracker.feed(message, clock.monotonic())
        if services.acd is not None:
            services.acd.on_ami_event(message)
        if services.callbacks is not None:
            services.callbacks.feed(message)

    return on_event


def _on_login(services: Services):
    async def on_login() -> None:
        """Resynchronise on every login: Asterisk may have restarted and forgotten every call.

        CoreShowChannels rebuilds the call records (phantoms are closed, unknown channels added);
        QueueStatus and Status are read for the fallback queue and the channels' details. Each is
        best effort: a PBX without app_queue answers QueueStatus with an error, which is logged.
        """
        from callcentre.ami.link import AMIError
        from callcentre.ami.protocol import event_name

        ami = services.ami
        assert ami is not None
        channels = await ami.core_show_channels()
        services.tracker.resync(channels, services.clock.monotonic())
        summary = {"channels": sum(1 for m in channels if m.get("Event") == "CoreShowChannel")}
        # Counted by event name: a real QueueStatus answers QueueParams and a QueueMember per member
        # before any QueueEntry (a caller waiting), so "all events but the Complete" counted the members.
        steps = (("queue_entries", "QueueEntry", lambda: ami.queue_status(services.cfg.acd.fallback_queue)),
                 ("status", "Status", ami.channel_status))
        for name, event, action in steps:  # each coroutine made only when its turn comes (a cancel leaves none behind)
            try:
                events = await action()
                summary[name] = sum(1 for m in events if event_name(m) == event)
            except AMIError as exc:
                log.warning("ami resync step failed", step=name, error=str(exc))
        if services.acd is not None:
            services.acd.on_resync(services.tracker.open_calls())
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
        # open_calls: the channels the call tracker believes are up (after a resync, what Asterisk listed)
        "ami": {**ami.status(), "open_calls": len(services.tracker.open_calls())} if ami
        else {"connected": False, "enabled": False},
        "acd": {"enabled": services.acd is not None},
    }
    ok = body["database"].get("ok") and body["fastagi"]["ok"] and (ami is None or ami.connected)
    body["ok"] = bool(ok)
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    from callcentre.metrics import render

    body, content_type = render(request.app[SERVICES])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def serve(cfg: Config) -> None:
    """Run until SIGINT/SIGTERM, then stop taking calls, let calls in progress finish, and exit."""
    app = build_app(cfg)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    # Everything built at start-up lives as long as the server: keep it out of the garbage collector's
    # full passes, whose pauses showed up as tail latency with 1,000 calls (BENCHMARKS.md).
    gc.freeze()
    site = web.TCPSite(runner, cfg.web.host, cfg.web.port)
    await site.start()
    log.info("web listening", url=f"http://{cfg.web.host}:{cfg.web.port}/")
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
