"""The composition root: builds every part from the configuration, and nothing else does.

:func:`build_services` makes the parts in dependency order, each given what it needs in its
constructor: storage (no connection is made until first use), the live hub and the wallboard
notifier, the AMI link (built, not started, so the parts that send actions get it), the service
loops, the FastAGI server and the desk's services. :func:`build_app` hands them to an aiohttp
application that owns the resources through ``cleanup_ctx``, one small named function per resource
(database, queue_log file, live hub, leadership, AMI link, FastAGI listener), so they start in
order, stop in reverse order, and their tasks are cancelled and awaited at shutdown.

Leadership (:mod:`callcentre.cluster`): call distribution and the run-once loops (call-backs,
escalation, reconciliation, recording retention, webhooks) run on the elected leader only. On SQLite
the only node is its leader from start to stop; on PostgreSQL several servers may share the database
and one of them leads at a time (a PostgreSQL advisory lock), the others take over when it is gone.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callcentre import __version__
from callcentre.agi.server import FastAGIServer, Router
from callcentre.ami.calls import CallTracker
from callcentre.ami.link import AMIDisconnected, AMILink
from callcentre.cluster.leader import PgLeaderElector, make_elector
from callcentre.cluster.node import ROLE, FollowerPass, LeaderConnector, LeaderGate, LeaderParts, NodeInfo
from callcentre.cluster.notify import ClusterHub, make_hub
from callcentre.cluster.pg import is_postgres
from callcentre.cluster.relay import AgentRelay, AgentRelayServer
from callcentre.config import Config
from callcentre.config.loader import environ as config_environ
from callcentre.distribution import ACDService, AgentRoster
from callcentre.distribution.recording import MixMonitorRecorder
from callcentre.distribution.transfers import TransferHistoryWriter
from callcentre.domain.hotlines import Hotlines, default_hotline_id
from callcentre.domain.ivr import RESULT_VARIABLE, HotlineRouter
from callcentre.domain.ports import Clock, SystemClock
from callcentre.queue_log_writer import QueueLogWriter
from callcentre.service.alerts import WallboardNotifier
from callcentre.service.ami_events import AMIEvents, Resync
from callcentre.service.callbacks import CallbackScheduler, Originate
from callcentre.service.desk import DeskServices, build_desk, desk_repo
from callcentre.service.recordings import RecordingService
from callcentre.service.escalation import EscalationLoop
from callcentre.service.reports_cmd import ReconciliationScheduler
from callcentre.service.survey import SurveyScript
from callcentre.service.tickets import TicketService
from callcentre.service.webhooks import WebhookSender, WebhookSettings, load_secret
from callcentre.storage import db as storage_db
from callcentre.storage.desk_repo import DeskRepo
from callcentre.storage.recordings import RecordingsRepo
from callcentre.storage.repo import SqlDirectory, SqlTicketStore
from callcentre.storage.users_repo import UsersRepo
from callcentre.web.auth import public
from callcentre.web.hub import Hub


log = structlog.get_logger("callcentre.app")


@dataclass
class Running:
    """What changes while the server runs: call distribution once it is started (its agents loaded),
    whether start-up is done, and whether we are draining."""

    acd: ACDService | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False


@dataclass
class Services:
    """Everything the composition root built; handed to the web layer and to tests."""

    cfg: Config
    clock: Clock
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    directory: SqlDirectory
    tickets: SqlTicketStore
    ticket_service: TicketService
    users: UsersRepo
    desk: DeskRepo  # the one desk repository: the desk's services and the screen-pop read it
    desk_services: DeskServices
    hub: Hub
    notifier: WallboardNotifier
    tracker: CallTracker
    ami_events: AMIEvents
    ami: AMILink | None  # None when disabled in config or without a secret
    callbacks: CallbackScheduler
    survey: SurveyScript
    escalation: EscalationLoop
    reconciliation: ReconciliationScheduler
    webhooks: WebhookSender | None  # None without webhook URLs
    agi: FastAGIServer
    distribution: ACDService | None  # None when acd.enabled is false: callers go to the dialplan's queue
    roster: AgentRoster | None
    ivr: HotlineRouter  # one HotlineIVR per hotline
    running: Running
    # Leadership: who runs call distribution and the run-once loops (callcentre/cluster/node.py).
    elector: Any  # PgLeaderElector on PostgreSQL, LocalLeader on SQLite
    leader_parts: LeaderParts
    node: NodeInfo
    relay: AgentRelay  # agent actions made here while another node leads
    resync: Resync | None  # the AMI resynchronisation (None without an AMI link)
    queue_log: QueueLogWriter | None = None  # the queue_log file (config queue_log:), None when off
    recordings: RecordingService | None = None  # the rows, retention, the disk, what the pages may play
    recorder: MixMonitorRecorder | None = None  # None unless recording.enabled (and call distribution on)

    @property
    def acd(self) -> ACDService | None:
        """Call distribution while it runs (None before start-up, after shutdown, or when off)."""
        return self.running.acd

    @property
    def ready(self) -> asyncio.Event:
        return self.running.ready


SERVICES = web.AppKey("services", Services)
RECORDER_DRAIN_SECONDS = 10.0  # at shutdown, for the last calls' recordings to be checked and stored


def build_services(cfg: Config, clock: Clock) -> Services:
    """Every part, in dependency order; nothing is started and nothing connects."""
    engine = storage_db.create_engine(cfg.database)
    sessions = storage_db.session_factory(engine)
    hotlines = Hotlines.from_config(cfg)
    _warn_missing_hotline_prompts(cfg, hotlines)
    tickets = SqlTicketStore(sessions, clock, cfg.centre.timezone, dict(cfg.tickets.number_prefix),
                             default_hotline=hotlines.default.id)
    ticket_service = TicketService(sessions, cfg, clock, webhook_urls=tuple(cfg.webhooks.urls))
    users = UsersRepo(sessions, clock)
    desk = desk_repo(sessions, cfg, clock)
    running = Running()
    postgres = is_postgres(cfg.database.url)
    node_name = cfg.cluster.node()
    gate = LeaderGate(ROLE, postgres=postgres)
    # PostgreSQL: a hub shared with the other nodes over LISTEN/NOTIFY; its table is the migration's.
    hub = make_hub(cfg.web.websocket_queue_max, cfg.database.url, cfg.cluster, create_schema=False)
    notifier = WallboardNotifier(hub, clock, acd=lambda: running.acd)
    tracker = CallTracker()
    ami_events = AMIEvents()
    ami = _ami_link(cfg, ami_events)
    callbacks = CallbackScheduler(sessions, ticket_service, cfg, clock, _originate_through(ami), publish=notifier.publish,
                                  dial_template=cfg.centre.outbound_template, fence=gate.allows)
    # AMI events in this order: the call records first, then call distribution, then the call-backs
    # (the leader's: every node's link sees the OriginateResponse of the leader's call-backs).
    ami_events.subscribe(lambda message: tracker.feed(message, clock.monotonic()))
    ami_events.subscribe(lambda message: running.acd.on_ami_event(message) if running.acd is not None else None)
    ami_events.subscribe(lambda message: callbacks.feed(message) if gate.leading else None)
    resync = None
    if ami is not None:
        after = lambda calls: running.acd.on_resync(calls) if running.acd is not None else None  # noqa: E731
        resync = Resync(ami, tracker, clock, cfg.acd.fallback_queue, after)
        ami_events.on_login(resync)
    survey = SurveyScript(ticket_service, callbacks, default_language=cfg.ivr.default_language)
    escalation = EscalationLoop(ticket_service, cfg, clock, notifier.publish)
    directory = SqlDirectory(sessions)
    queue_log = _queue_log_writer(cfg)
    recordings = RecordingService(cfg, RecordingsRepo(sessions), clock, notifier.publish)

    def new_distribution() -> tuple[ACDService | None, AgentRoster | None, MixMonitorRecorder | None]:
        return _distribution_parts(cfg, clock, tickets, users, sessions, desk, notifier, ami, escalation, recordings,
                                   ticket_service, queue_log, hotlines)

    distribution, roster, recorder = new_distribution()
    reconciliation = ReconciliationScheduler(sessions, cfg, clock, notifier.reconciliation_ready)
    webhooks = _webhook_sender(cfg, sessions, clock, fence=gate.allows)
    relay = AgentRelay(hub, node=node_name, timeout_seconds=cfg.cluster.relay_timeout_seconds,
                       snapshot_max_age_seconds=cfg.cluster.remote_snapshot_max_age_seconds)
    desk_services = build_desk(sessions, cfg, clock, acd=lambda: running.acd, lifecycle=ticket_service, desk=desk,
                               users=users, recordings=recordings, elsewhere=relay, node=node_name)
    leader_parts = LeaderParts(
        running=running, gate=gate, tracker=tracker,
        make_distribution=_terms(distribution, roster, lambda: new_distribution()[:2]), resync=resync,
        ami_connected=lambda: ami is not None and ami.connected,
        loops=[callbacks, escalation, reconciliation, recordings, *([webhooks] if webhooks is not None else []),
               AgentRelayServer(hub, desk_services.agents, users, calls=desk_services.calls)],
        after_stop=_drain_recorder, node=node_name,
    )
    elector = make_elector(cfg.database.url, ROLE, cfg.cluster, on_elected=leader_parts.elected,
                           on_demoted=leader_parts.demoted, create_schema=False)
    connector = None
    if distribution is not None:
        # On PostgreSQL a follower may be asked for a person: it tries to lead at once, else the dialplan's queue.
        connector = LeaderConnector(running, leader_parts, try_now=elector.try_now,
                                    promote_wait_seconds=cfg.cluster.promote_wait_seconds if postgres else 0.0)
    # One IVR per hotline; each call to the one of the number it dialled (the dialplan's AGI argument).
    ivr = HotlineRouter(cfg, directory, tickets, clock, connector, hotlines=hotlines)
    clustered = postgres and distribution is not None
    on_follower_call = elector.try_now if clustered else None
    return Services(
        cfg=cfg, clock=clock, engine=engine, session_factory=sessions, directory=directory, tickets=tickets,
        ticket_service=ticket_service, users=users, desk=desk, desk_services=desk_services,
        hub=hub, notifier=notifier, tracker=tracker, ami_events=ami_events, ami=ami, callbacks=callbacks, survey=survey,
        escalation=escalation, reconciliation=reconciliation, webhooks=webhooks,
        agi=FastAGIServer(cfg.agi, _agi_router(running, ivr, survey, on_follower_call=on_follower_call,
                                               follower_pass=FollowerPass(elector) if clustered else None),
                          prompt_path=cfg.prompts.asterisk_path),
        distribution=distribution, roster=roster, ivr=ivr, running=running,
        elector=elector, leader_parts=leader_parts, node=NodeInfo(node_name, elector, clustered=postgres), relay=relay,
        resync=resync, queue_log=queue_log, recordings=recordings, recorder=recorder,
    )


def _warn_missing_hotline_prompts(cfg: Config, hotlines: Hotlines) -> list[str]:
    """A hotline's own recordings that are not in prompts.local_dir: a warning each, and the list
    (Asterisk, perhaps on another host, plays them; a missing one is silence where the estate's name
    should be)."""
    missing: list[str] = []
    if hotlines.implicit:
        return missing
    for h in hotlines:
        for name in sorted(h.prompts.own):
            for lang in ("zh", "en"):
                prompt = h.prompts.path(name, lang)
                if not (cfg.prompts.local_dir / f"{prompt}.wav").is_file():
                    missing.append(prompt)
                    log.warning("hotline prompt missing", hotline=h.id, prompt=prompt, looked_in=str(cfg.prompts.local_dir),
                                fix="python tools/make_prompts.py (the greeting), or record it")
    return missing


def _terms(first: ACDService | None, roster: AgentRoster | None,
           build: Callable[[], tuple[ACDService | None, AgentRoster | None]]) -> Callable[[], tuple[ACDService, AgentRoster] | None]:
    """Call distribution for each term of leadership: the one built with the services first (so
    ``services.distribution`` is the one running on a single node), then a fresh one per election
    (its agents and their states loaded from the database again, nothing left over from before)."""
    unused = [(first, roster)] if first is not None and roster is not None else []

    def make() -> tuple[ACDService, AgentRoster] | None:
        if first is None or roster is None:
            return None
        acd, fresh_roster = unused.pop() if unused else build()
        assert acd is not None and fresh_roster is not None
        return acd, fresh_roster

    return make


async def _drain_recorder(acd: ACDService) -> None:
    """A term's distribution has stopped: its calls are over, their recordings are checked and stored."""
    recorder = getattr(acd, "recorder", None)
    if recorder is not None and hasattr(recorder, "drain"):
        await recorder.drain(RECORDER_DRAIN_SECONDS)


def _distribution_parts(cfg: Config, clock: Clock, tickets: SqlTicketStore, users: UsersRepo,
                        sessions: async_sessionmaker[AsyncSession], desk: DeskRepo, notifier: WallboardNotifier,
                        ami: AMILink | None, escalation: EscalationLoop, recordings: RecordingService,
                        ticket_service: TicketService, queue_log: QueueLogWriter | None = None,
                        hotlines: Hotlines | None = None,
                        ) -> tuple[ACDService | None, AgentRoster | None, MixMonitorRecorder | None]:
    """Our own call distribution, the roster that feeds it its agents, and the recorder of its calls; none
    when acd.enabled is false (the recorder also none unless recording.enabled)."""
    if not cfg.acd.enabled:
        if cfg.recording.enabled:
            log.warning("recording.enabled, but calls are recorded only when our call distribution puts them through")
        return None, None, None
    roster = AgentRoster(users, cfg, sessions, clock)
    recorder = None
    if cfg.recording.enabled:
        recorder = MixMonitorRecorder(cfg, clock, recordings, agent_login=lambda agent_id: acd.agent_login(agent_id))
    acd = ACDService(
        cfg, clock, tickets, publish=notifier.publish, persist_history=roster.record_states,
        last_call_at=tickets.last_call_at, supervisor_interface=roster.supervisor_phone,
        owners=desk, ami=lambda: ami, overdue=lambda: escalation.overdue, queue_log=queue_log, recorder=recorder,
        hotlines=hotlines,
        transfer_history=TransferHistoryWriter(tickets, ticket_service),
    )
    return acd, roster, recorder


def _queue_log_writer(cfg: Config) -> QueueLogWriter | None:
    """The app_queue-compatible queue_log file; none when off, or when there is no distribution to log."""
    if not cfg.queue_log.enabled:
        return None
    if not cfg.acd.enabled:
        log.warning("queue_log.enabled but acd.enabled is false: the dialplan's queue (app_queue) writes its own")
        return None
    return QueueLogWriter(cfg.queue_log.path, max_pending=cfg.queue_log.max_pending)


def _ami_link(cfg: Config, events: AMIEvents) -> AMILink | None:
    if not cfg.ami.enabled:
        log.warning("AMI link disabled in config (ami.enabled: false)")
        return None
    secret = cfg.ami_secret()
    if not secret:
        log.warning("no AMI secret: set CALLCENTRE_AMI_SECRET or ami.secret_file; the AMI link stays off")
        return None
    return AMILink(cfg.ami, secret, on_event=events.dispatch, on_login=events.logged_in)


def _originate_through(ami: AMILink | None) -> Originate:
    async def originate(channel, context, exten, variables, caller_id, timeout_ms, action_id) -> str:
        if ami is None:
            raise AMIDisconnected("the AMI link is not configured")
        return await ami.originate(
            channel=channel, context=context, exten=exten, variables=variables, caller_id=caller_id,
            timeout_ms=timeout_ms, action_id=action_id,
        )

    return originate


def _webhook_sender(cfg: Config, sessions: async_sessionmaker[AsyncSession], clock: Clock,
                    fence: Callable[[AsyncSession], Awaitable[bool]] | None = None) -> WebhookSender | None:
    if not cfg.webhooks.urls:
        return None
    w = cfg.webhooks
    settings = WebhookSettings(
        urls=tuple(w.urls), secret=load_secret(config_environ(cfg), w.secret_file), timeout_seconds=w.timeout_seconds,
        retry_base_seconds=w.retry_base_seconds, retry_max_seconds=w.retry_max_seconds,
        max_attempts=w.max_attempts, poll_seconds=w.poll_seconds,
    )
    return WebhookSender(sessions, settings, clock, fence=fence)


def _agi_router(running: Running, ivr: HotlineRouter, survey: SurveyScript, *,
                on_follower_call: Callable[[], None] | None = None,
                follower_pass: Callable[[Any], Awaitable[bool]] | None = None) -> Router:
    """FastAGI scripts by name: the hotline IVR, the closing call-back's survey, the queue call-back, and a
    transferred caller (``transfer``) and the first agent's consultation leg (``consult``).

    ``on_follower_call``: a hotline call reached this node while it does not run call distribution
    (the dialplan tries the second server only when the first failed): the elector tries the lock at
    once, so that a leader that is gone is replaced before the caller asks for a person.
    ``follower_pass``: on a follower, a hotline call or a queue call-back's agent leg on its first
    try is handed with CC_RESULT=pass to the dialplan's second server, the leader
    (callcentre/cluster/node.py, FollowerPass)."""

    async def callback(channel) -> None:
        result = "done"
        try:
            if running.acd is not None:
                await running.acd.callback_script(channel)
            elif follower_pass is not None and await follower_pass(channel):
                result = "pass"  # the leader placed this call-back and knows it: the dialplan gives it the leg
        finally:
            await channel.set_result(result)

    async def hotline(channel) -> None:
        if running.acd is None and follower_pass is not None and await follower_pass(channel):
            await channel.set_variable(RESULT_VARIABLE, "pass")  # never answered: the dialplan tries its second server
            return
        await ivr.run(channel)

    async def transfer(channel) -> None:
        if running.acd is not None:  # without it CC_RESULT stays unset: the dialplan's fallback queue
            await running.acd.transfers.caller_script(channel, take_message=ivr.take_message)
        elif follower_pass is not None and await follower_pass(channel):
            await channel.set_variable(RESULT_VARIABLE, "pass")  # the leader made the token: the dialplan gives it the caller

    async def consult(channel) -> None:
        if running.acd is not None:
            await running.acd.transfers.consult_script(channel)
        elif follower_pass is not None and await follower_pass(channel):
            await channel.set_variable(RESULT_VARIABLE, "pass")  # the leader started the consultation: the dialplan tries it

    routes = {"hotline": ivr.run if follower_pass is None else hotline, "survey": survey.run, "callback": callback,
              "transfer": transfer, "consult": consult}

    def router(env):
        if running.draining and env.script == "hotline":
            return None  # shutting down: the dialplan's fallback queue takes new callers
        if on_follower_call is not None and env.script == "hotline" and running.acd is None:
            on_follower_call()
        return routes.get(env.script)

    return router


def build_app(cfg: Config, *, clock: Clock | None = None, migrate: bool = True, web_ui: bool = True) -> web.Application:
    services = build_services(cfg, clock or SystemClock())
    app = web.Application()
    app[SERVICES] = services
    # Started in this order and stopped in reverse: at shutdown the FastAGI listener stops taking calls
    # and lets calls in progress finish while the AMI link and the database are still up.
    app.cleanup_ctx.extend([
        functools.partial(_database, migrate=migrate), _queue_log, _live_hub, _leadership, _ami, _agi_listener,
        _mark_ready,
    ])
    # Open to monitoring without a log-in (they carry no owner data); bind web.host to a private address.
    app.router.add_get("/health", public(health))
    app.router.add_get("/metrics", public(metrics))
    if web_ui:
        from callcentre.web import setup_web

        setup_web(app, services, services.desk_services)
    return app


# --- one context per resource, started in the order above ------------------------------------------


async def _database(app: web.Application, *, migrate: bool) -> AsyncIterator[None]:
    services = app[SERVICES]
    if migrate:
        await storage_db.upgrade(services.cfg.database.url, progress=lambda msg: log.info("migration", step=msg),
                                 default_hotline=default_hotline_id(services.cfg))
    yield
    await services.engine.dispose()


async def _queue_log(app: web.Application) -> AsyncIterator[None]:
    """The queue_log file's writer: started before call distribution writes to it, closed after it stopped
    (what is queued is written first). Its directory is made if missing; a file that cannot be written is
    counted on /health and /metrics and never stops the server or a call."""
    writer = app[SERVICES].queue_log
    if writer is None:
        yield
        return
    try:
        await asyncio.to_thread(writer.path.parent.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        log.error("queue_log directory cannot be made; lines will fail until it exists", path=str(writer.path),
                  error=str(exc))
    await writer.start()
    log.info("queue_log file", path=str(writer.path))
    yield
    await writer.close()


async def _live_hub(app: web.Application) -> AsyncIterator[None]:
    """The live hub's link to the other nodes (PostgreSQL only) and the relay of agent actions to the leader."""
    services = app[SERVICES]
    hub = services.hub
    if isinstance(hub, ClusterHub):
        await hub.start()
    await services.relay.start()
    yield
    await services.relay.stop()
    if isinstance(hub, ClusterHub):
        await hub.stop()


# How long start-up waits for the first election on PostgreSQL (a node that cannot reach the lock
# goes on starting: its IVR serves callers, and the elector keeps trying).
FIRST_ELECTION_WAIT_SECONDS = 10.0


async def _leadership(app: web.Application) -> AsyncIterator[None]:
    """Leadership: while this node leads, call distribution (agents loaded from the database, then
    started; the IVR hands it callers) and the run-once loops run here (callcentre/cluster/node.py)."""
    services = app[SERVICES]
    elector = services.elector
    if services.distribution is None:
        log.warning("call distribution is off (acd.enabled: false): callers who ask for a person go to the dialplan's queue")
    await elector.start()  # on SQLite: the leader's parts run when this returns
    if isinstance(elector, PgLeaderElector):
        await _first_election(services, FIRST_ELECTION_WAIT_SECONDS)
    try:
        yield
    finally:
        await services.ivr.drain()
        await elector.stop()  # the parts stop first, then the lock is let go: another node takes over at once


async def _first_election(services: Services, limit: float) -> None:
    """Wait until this node either leads with its parts running, or knows another node leads."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        if services.leader_parts.running or services.elector.status().get("state") == "follower":
            break
        await asyncio.sleep(0.05)
    node = services.node.status()
    log.info("cluster role", node=node["name"], role=node["role"], term=node["term"], leader=node["leader_node"])


async def _ami(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    ami = services.ami
    if ami is None:
        yield
        return
    await ami.start()
    yield
    await ami.stop()


async def _agi_listener(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    agi, cfg = services.agi, services.cfg
    await agi.start()
    log.info("fastagi listening", host=cfg.agi.host, port=agi.port)
    yield
    services.running.draining = True
    agi.stop_accepting()
    await agi.stop(grace_seconds=cfg.agi.shutdown_grace_seconds)


async def _mark_ready(app: web.Application) -> AsyncIterator[None]:
    app[SERVICES].ready.set()
    yield


def _on_event(services: Services):
    """The AMI link's event callback as the app builds it (the AMI benchmark drives it directly)."""
    return services.ami_events.dispatch


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
        "queue_log": _queue_log_health(services),
        # this node's part: leader (runs call distribution and the run-once loops) or follower
        "node": services.node.status(),
    }
    if services.recordings is not None:  # informative: a full recording disk does not take the node out
        body["recording"] = await services.recordings.health()
    ok = body["database"].get("ok") and body["fastagi"]["ok"] and (ami is None or ami.connected)
    body["ok"] = bool(ok)
    return web.json_response(body, status=200 if ok else 503)


def _queue_log_health(services: Services) -> dict[str, object]:
    """The queue_log file's counters; its failures never make the server unhealthy (calls go on)."""
    writer = services.queue_log
    if writer is None:
        return {"enabled": False}
    st = writer.stats()
    acd = services.acd or services.distribution  # this term's distribution (a cluster makes a fresh one per term)
    emitter = acd.queue_log if acd is not None else None
    return {
        "enabled": True, "path": str(writer.path), "ok": not st.failing, "written": st.written, "failed": st.failed,
        "dropped": st.dropped, "pending": st.pending, "last_error": st.last_error,
        "event_errors": emitter.errors if emitter is not None else 0,
    }


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
