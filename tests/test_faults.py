"""Fault injection against the whole server (FastAGI, AMI link, database) and the PBX simulator.

Each test breaks one thing in the middle of a call, as it breaks in production (a reset AMI link, a
half-open one, an Asterisk restart, a FastAGI socket reset by the PBX, a locked, read-only or full
database, a wall-clock step), then checks the two promises of issue 6: nothing promised to a caller
is lost (a ticket number read back is committed, a caller always reaches a person), and the state
afterwards is right (no phantom calls, nothing counted twice, no leaked task).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from sqlalchemy import event

from callcentre.ami.calls import LOST_IN_RESTART, LOST_IN_RESYNC
from callcentre.domain.acd import AgentState
from callcentre.sim.agi_client import AGISession, run_session
from callcentre.sim.pbx import ChannelState, DialplanEntry
from callcentre.sim.scripts import AgentScript, CallEnd, CallerScript, Record
from callcentre.storage import db
from tests.conftest import AMI_SECRET, REPO, Stack, on_postgres, stack_environ
from tests.waiting import eventually

ONE_AGENT = "[{id: a1, name: Agent One, interface: PJSIP/agent1, start: ready}]"
KNOWN_MOBILE = "13800138000"  # Zhang Wei, unit 1-1201, in examples/owners.csv


# ------------------------------------------------------------------------------------ helpers


def prompts_of(result) -> list[str]:
    """The prompt files our server asked Asterisk to play, in order."""
    out = []
    for line in result.commands:
        parts = line.split()
        if line.startswith(("STREAM FILE", "GET DATA")) and len(parts) > 2:
            out.append(parts[2])
    return out


@dataclass
class AGIWatch:
    """Every AGI command the simulated Asterisk starts (AGIExecStart), to act at a precise moment."""

    commands: list[str] = field(default_factory=list)

    def __call__(self, fields) -> None:
        d = dict(fields)
        if d.get("Event") == "AGIExecStart":
            self.commands.append(d.get("Command", ""))

    def saw(self, prefix: str) -> bool:
        return any(c.startswith(prefix) for c in self.commands)


def watch_agi(stack: Stack) -> AGIWatch:
    w = AGIWatch()
    stack.pbx.subscribe(w)
    return w


def agi_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(("agi-session", "agi-reader", "agi-handler"))]


async def no_agi_left(stack: Stack) -> bool:
    return await eventually(lambda: stack.services.agi.active_sessions == 0 and not agi_tasks(), 5)


def fail_statements(engine, message: str, *, only: tuple[str, ...] = ()) -> Any:
    """Make every statement (or those whose SQL starts with one of ``only``) fail as the driver does
    when the database is locked, read-only or full: the DB-API's own OperationalError with SQLite's
    message. On every connection of the engine: its pool's and its SQLite writer's. Returns the
    listener so the fault can be cleared with :func:`clear_fault`."""

    def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001 - event signature
        if not only or statement.lstrip().upper().startswith(only):
            raise conn.dialect.loaded_dbapi.OperationalError(message)

    for sync_engine in db.sync_engines(engine):
        event.listen(sync_engine, "before_cursor_execute", before)
    return before


def clear_fault(engine, listener) -> None:
    for sync_engine in db.sync_engines(engine):
        event.remove(sync_engine, "before_cursor_execute", listener)


# ------------------------------------------------------------------------------------ AMI faults


async def test_ami_link_reset_mid_call_loses_nothing_and_counts_nothing_twice(stack):
    ami, tracker = stack.services.ami, stack.services.tracker
    assert await eventually(lambda: ami.connected)
    watch = watch_agi(stack)
    before_reconnects = ami.status()["reconnects"]
    before_resyncs = len(stack.ami_server.actions_named("CoreShowChannels"))
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(40)])))
    assert await eventually(lambda: watch.saw("RECORD FILE"))
    uid = next(c.uniqueid for c in stack.pbx.channels.values() if c.name.startswith("SIP/owner-phone"))
    assert tracker.get(uid) is not None and not tracker.get(uid).finished
    await stack.ami_server.drop_clients()  # TCP reset while the caller is speaking
    result = await asyncio.wait_for(call, 10)
    assert result.cc_result == "done" and not result.fallback_queue
    [t] = await stack.tickets()
    assert t.call_uniqueid == uid and t.kind == "repair"
    assert await eventually(lambda: ami.connected and ami.status()["reconnects"] == before_reconnects + 1)
    # one resync per login, and the call record ends closed exactly once (Hangup or lost in resync)
    assert await eventually(lambda: len(stack.ami_server.actions_named("CoreShowChannels")) == before_resyncs + 1)
    assert await eventually(lambda: not tracker.open_calls())
    rec = tracker.get(uid)
    assert rec is not None and rec.finished
    assert [r.uniqueid for r in tracker.records()].count(uid) == 1
    # the in-flight actions were not re-sent: every action after the drop is the new session's own
    assert len(stack.ami_server.actions_named("Login")) == 2
    assert await no_agi_left(stack)


@pytest.mark.stack_env(CALLCENTRE_AMI__PING_INTERVAL_SECONDS="0.2", CALLCENTRE_AMI__MISSED_PINGS="2",
                       CALLCENTRE_AMI__ACTION_TIMEOUT_SECONDS="1")
async def test_half_open_ami_link_is_detected_within_two_missed_pings_and_resynchronised(stack):
    # (a reconnect into a server that is still half-open waits ami.action_timeout_seconds for the
    # banner; 1 s here keeps the test short)
    ami, tracker, server = stack.services.ami, stack.services.tracker, stack.ami_server
    assert await eventually(lambda: ami.connected)
    watch = watch_agi(stack)
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(20)])))
    assert await eventually(lambda: watch.saw("RECORD FILE"))
    uid = next(c.uniqueid for c in stack.pbx.channels.values() if c.name.startswith("SIP/owner-phone"))
    assert tracker.get(uid) is not None and not tracker.get(uid).finished
    pings_before = len(server.actions_named("Ping"))
    server.half_open(True)  # the socket stays up; nothing comes back, not even Pong
    assert await eventually(lambda: not ami.connected, 5)
    unanswered = len(server.actions_named("Ping")) - pings_before
    assert unanswered <= 2, f"{unanswered} pings sent into a half-open link before it was declared dead"
    assert "half-open" in (ami.status()["last_error"] or "")
    # the caller never noticed: the call finishes while the link is down, its Hangup event is lost
    result = await asyncio.wait_for(call, 10)
    assert result.cc_result == "done"
    assert tracker.get(uid) is not None
    # Usually the call ends while the link is still down and its Hangup is lost; on a loaded machine
    # the link may already be back (a new connection to the simulator is served normally) and hear it.
    heard_live = tracker.get(uid).finished
    resyncs = len(server.actions_named("CoreShowChannels"))
    server.half_open(False)
    assert await eventually(lambda: ami.connected and len(server.actions_named("CoreShowChannels")) > resyncs)
    assert await eventually(lambda: not tracker.open_calls())
    if not heard_live:
        assert tracker.get(uid).closed_reason == LOST_IN_RESYNC
    assert len(await stack.tickets()) == 1


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__RING_CYCLE_SECONDS="30")
async def test_asterisk_restart_leaves_no_phantom_calls(stack):
    services, server = stack.services, stack.ami_server
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=None))
    assert await eventually(lambda: services.ami.connected)
    a1 = str((await services.users.by_login("a1")).id)
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["0"])))
    assert await eventually(lambda: services.acd.dist.agent_state(a1) is AgentState.RINGING)
    open_before = {r.uniqueid for r in services.tracker.open_calls()}
    assert open_before  # the caller and the agent's ringing leg
    resyncs = len(server.actions_named("CoreShowChannels"))
    await server.restart(0.2)  # Shutdown, EOF, refused, then a fresh Asterisk with Uptime 0
    # Asterisk's restart hangs up every channel: the FastAGI socket of the call goes with it
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await server.wait_running()
    assert await eventually(lambda: services.ami.connected and len(server.actions_named("CoreShowChannels")) > resyncs)
    assert await eventually(lambda: not services.tracker.open_calls())
    for uid in open_before:
        rec = services.tracker.get(uid)
        assert rec is not None and rec.closed_reason in (LOST_IN_RESTART, LOST_IN_RESYNC), (uid, rec)
    # no phantom caller waiting or ringing in call distribution, and the agent is offered calls again
    assert await eventually(lambda: services.acd.dist.waiting_count() == 0)
    assert await eventually(lambda: services.acd.dist.agent_state(a1) is AgentState.READY)
    assert services.acd.snapshot()["queue"] == []
    assert await no_agi_left(stack)
    # and the next call after the restart works end to end
    stack.pbx.set_agent_behaviour("PJSIP/agent1", answer_after=1, talk_seconds=2)
    result = await asyncio.wait_for(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", ""])), 15)
    assert result.variables.get("DIALSTATUS") == "ANSWER"
    assert services.acd.metrics()["calls_answered"] == 1


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_ami_link_reset_while_the_agent_rings_counts_the_answer_once(stack):
    services = stack.services
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=2, talk_seconds=20))
    assert await eventually(lambda: services.ami.connected)
    a1 = str((await services.users.by_login("a1")).id)
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["0", ""])))
    assert await eventually(lambda: services.acd.dist.agent_state(a1) is AgentState.RINGING)
    await stack.ami_server.drop_clients()  # the DialEnd(ANSWER) may be lost with the link
    result = await asyncio.wait_for(call, 15)
    assert result.variables.get("DIALSTATUS") == "ANSWER"
    assert await eventually(lambda: services.acd.dist.agent_state(a1) is AgentState.READY)
    f = services.acd.metrics()
    assert f["calls_entered"] == 1 and f["calls_answered"] == 1 and f["offers"] == 1 and f["offers_missed"] == 0
    assert await eventually(lambda: not services.tracker.open_calls())


# ------------------------------------------------------------------------------------ FastAGI reset


@dataclass(eq=False)
class ResettingSession(AGISession):
    """Asterisk's side of FastAGI, which resets the TCP connection (RST) on its ``reset_at``-th
    command, after reading it and before answering (the command is in flight on our side)."""

    reset_at: int = 0

    async def _handle(self, line: str, index: int) -> None:
        if index == self.reset_at and self._writer is not None:
            sock = self._writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._writer.transport.abort()
            raise ConnectionResetError("test: connection reset by the PBX")
        await super()._handle(line, index)


async def call_with_reset(stack: Stack, script: CallerScript, reset_at: int):
    pbx = stack.pbx
    ch = pbx.new_channel(f"SIP/owner-phone-{pbx.next_name_seq()}", "SIP", pbx.hotline_context, pbx.hotline_exten,
                         ChannelState.DOWN, language=script.language)
    pbx.set_callerid(ch, script.caller_id, script.caller_name or "<unknown>")
    pbx.set_state(ch, ChannelState.RING)
    session = ResettingSession(pbx, ch, script, reset_at=reset_at)
    return await run_session(pbx, session, DialplanEntry("hotline", ()), fallback=True)


@pytest.mark.parametrize("reset_at", range(1, 16))
async def test_fastagi_connection_reset_mid_command(stack, reset_at):
    """Whatever command is in flight when the PBX resets the socket, the session ends cleanly, no task
    is left, and a ticket is either whole and committed or not there at all."""
    script = CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1)])
    result = await asyncio.wait_for(call_with_reset(stack, script, reset_at), 10)
    sent = result.commands
    assert len(sent) >= min(reset_at, 1)
    assert await no_agi_left(stack)
    assert stack.services.agi.stats.handler_errors == 0
    tickets = await stack.tickets()
    assert len(tickets) <= 1
    # once the caller has chosen the category (we asked them to describe it), the request is kept
    chosen = any("record-repair" in c for c in sent)
    if chosen:
        [t] = tickets
        assert t.kind == "repair" and t.category == "water" and t.call_uniqueid == result.uniqueid
        assert t.number and t.owner_id is not None and t.caller_id == "+8613800138000"
    else:
        assert tickets == []
    # nothing promised was lost: any number read out is a committed ticket's
    if any("ticket-created" in c for c in sent):
        assert tickets and tickets[0].number
    # a caller cut off before we said "done" reaches the dialplan's fallback queue, never silence
    if result.cc_result != "done":
        assert result.fallback_queue or result.ended is CallEnd.CALLER_HUNG_UP


async def test_reset_before_recording_starts_makes_a_ticket_without_a_voice_file(stack):
    script = CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1)])
    # ANSWER, GET VARIABLE linkedid, greeting, repair menu, then the "record after the beep" prompt
    result = await asyncio.wait_for(call_with_reset(stack, script, 5), 10)
    assert "record-repair" in result.commands[-1] and not any(c.startswith("RECORD FILE") for c in result.commands)
    [t] = await stack.tickets()
    assert t.voice_file is None, f"ticket {t.number} points at {t.voice_file}, which was never recorded"


async def test_hang_up_during_recording_stores_the_file_asterisk_wrote(stack):
    from callcentre.sim.scripts import Hangup

    result = await asyncio.wait_for(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "3", Hangup()])), 10)
    assert result.ended is CallEnd.CALLER_HUNG_UP
    [t] = await stack.tickets()
    assert t.voice_file and t.voice_file.endswith("." + stack.cfg.ivr.record_format), t.voice_file
    assert t.acknowledged_to_caller is False  # kept, though the caller never heard its number


# ------------------------------------------------------------------------------------ database faults

SQLITE_FAULTS = {
    "locked": "database is locked",
    "read-only": "attempt to write a readonly database",
    "full": "database or disk is full",
}


def _assert_told_and_sent_to_a_person(result) -> None:
    prompts = prompts_of(result)
    assert "callcentre/zh/system-busy-agent" in prompts, prompts
    assert not any(p.endswith("/ticket-created") for p in prompts), "a ticket number was read that was not committed"
    assert not any(p.endswith("/message-saved") for p in prompts)
    assert result.cc_result != "done" and result.fallback_queue  # the dialplan's queue: a person


@pytest.mark.parametrize("fault", list(SQLITE_FAULTS))
async def test_database_write_fault_mid_call_tells_the_caller_and_sends_them_to_a_person(stack, fault):
    engine = stack.services.engine
    # ticket writes fail (the directory is still readable), as when another process holds the write
    # lock, the file turned read-only, or the disk filled up
    listener = fail_statements(engine, SQLITE_FAULTS[fault], only=("INSERT", "UPDATE", "DELETE"))
    try:
        result = await asyncio.wait_for(
            stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1), Record(1)])), 15)
    finally:
        clear_fault(engine, listener)
    assert result.error is None
    _assert_told_and_sent_to_a_person(result)
    assert await stack.tickets() == []
    assert await no_agi_left(stack)
    # the fault clears: the next call works and its number is the committed one
    ok = await asyncio.wait_for(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1)])), 15)
    assert ok.cc_result == "done" and not ok.fallback_queue
    [t] = await stack.tickets()
    assert t.call_uniqueid == ok.uniqueid
    prompts = prompts_of(ok)
    i = prompts.index("callcentre/zh/ticket-created")
    assert "".join(p.rsplit("-", 1)[1] for p in prompts[i + 1 : i + 9]) == t.number[5:9] + t.number[-4:]


async def test_disk_full_at_commit_reads_no_number(stack, monkeypatch):
    """The INSERT succeeds and the number is allocated, but COMMIT fails (SQLite writes the WAL at
    commit): the number must not be read to the caller, and it is not in the database."""
    failing = {"on": True}

    def failing_commit(dialect):
        real_commit = dialect.do_commit

        def do_commit(dbapi_connection):
            if failing["on"]:
                raise dialect.loaded_dbapi.OperationalError("database or disk is full")
            return real_commit(dbapi_connection)

        return do_commit

    for sync_engine in db.sync_engines(stack.services.engine):  # the pool's and the SQLite writer's
        monkeypatch.setattr(sync_engine.dialect, "do_commit", failing_commit(sync_engine.dialect))
    result = await asyncio.wait_for(
        stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["3", "2", Record(1), Record(1)])), 15)
    failing["on"] = False
    _assert_told_and_sent_to_a_person(result)
    assert await stack.tickets() == []
    ok = await asyncio.wait_for(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["3", "2", Record(1)])), 15)
    assert ok.cc_result == "done"
    [t] = await stack.tickets()
    assert t.kind == "complaint" and t.number.endswith("-0001")  # the failed allocation was rolled back


async def test_database_unreachable_for_the_whole_call(stack):
    """Every statement fails, reads too: the caller is not recognised, is told, and reaches a person."""
    engine = stack.services.engine
    listener = fail_statements(engine, "database is locked")
    try:
        result = await asyncio.wait_for(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1)])), 15)
    finally:
        clear_fault(engine, listener)
    _assert_told_and_sent_to_a_person(result)
    assert await no_agi_left(stack)
    assert stack.services.agi.stats.handler_errors == 0


@pytest.mark.stack_env(CALLCENTRE_ACD__AGENTS=ONE_AGENT, CALLCENTRE_ACD__WRAPUP_SECONDS="0")
async def test_a_call_back_is_not_promised_when_its_ticket_cannot_be_saved(stack):
    """A caller in the queue presses 1 for a call-back while ticket writes fail: nothing is promised
    (no 'call-back booked'), the caller hears an apology and keeps their place, and an agent answers."""
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=1, talk_seconds=100))
    a1 = str((await stack.services.users.by_login("a1")).id)
    blocker = asyncio.ensure_future(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["0", ""])))
    assert await eventually(lambda: stack.services.acd.dist.agent_state(a1) is AgentState.ON_CALL)
    watch = watch_agi(stack)
    engine = stack.services.engine
    listener = fail_statements(engine, SQLITE_FAULTS["full"], only=("INSERT", "UPDATE", "DELETE"))
    try:
        # 1 (the call-back key) during the queue announcement
        asker = asyncio.ensure_future(stack.pbx.place_call(
            CallerScript("13912345602", inputs=["0", "1"], silences_before_giving_up=100)))
        assert await eventually(lambda: watch.saw("STREAM FILE callcentre/zh/apology"), 15), watch.commands[-5:]
    finally:
        clear_fault(engine, listener)
    result = await asyncio.wait_for(asker, 30)
    await asyncio.wait_for(blocker, 30)
    prompts = prompts_of(result)
    assert "callcentre/zh/callback-registered" not in prompts, "\n".join(result.commands)
    i = prompts.index("callcentre/zh/apology")
    assert prompts[i - 1:i + 2] == ["callcentre/zh/queue-position", "callcentre/zh/apology", "callcentre/zh/please-wait"]
    assert result.variables.get("DIALSTATUS") == "ANSWER"  # kept their place and reached the agent
    assert not [t for t in await stack.tickets() if t.category == "callback_request"]
    assert stack.ami_server.actions_named("Originate") == []


@pytest.mark.skipif(on_postgres(), reason="SQLite file locking")
@pytest.mark.stack_env(CALLCENTRE_DATABASE__BUSY_TIMEOUT_SECONDS="0.2")
async def test_database_locked_by_another_process(stack):
    """A real lock: another process holds SQLite's write lock (e.g. a backup or a manual sqlite3 shell)."""
    path = Path(stack.cfg.database.url.split("///", 1)[1])
    other = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock; readers (WAL) still read
        result = await asyncio.wait_for(
            stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1), Record(1)])), 15)
        other.execute("ROLLBACK")
    finally:
        other.close()
    _assert_told_and_sent_to_a_person(result)
    assert await stack.tickets() == []
    ok = await asyncio.wait_for(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=["2", "1", Record(1)])), 15)
    assert ok.cc_result == "done"
    assert len(await stack.tickets()) == 1


async def test_owner_import_interrupted_by_a_full_disk_writes_nothing(tmp_path):
    from callcentre.config import DatabaseConfig
    from callcentre.domain.ports import StorageUnavailable
    from callcentre.owners_import import import_owners
    from callcentre.storage.models import Owner, Phone, Unit
    from sqlalchemy import func, select
    from tests.conftest import test_database_url

    url = test_database_url(tmp_path)
    await db.upgrade(url, progress=None)
    engine = db.create_engine(DatabaseConfig(url=url))
    sessions = db.session_factory(engine)
    seen = {"n": 0}
    dbapi = engine.dialect.loaded_dbapi

    def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if statement.lstrip().upper().startswith("INSERT"):
            seen["n"] += 1
            if seen["n"] == 10:  # well into the file
                raise dbapi.OperationalError("database or disk is full")

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        with pytest.raises(StorageUnavailable, match="full"):
            await import_owners(sessions, REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
        event.remove(engine.sync_engine, "before_cursor_execute", before)
        async with sessions() as s:
            counts = [(await s.execute(select(func.count()).select_from(m))).scalar_one() for m in (Owner, Unit, Phone)]
        assert counts == [0, 0, 0]
        report = await import_owners(sessions, REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
        assert report.rows > 0
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------ wall-clock jump


class SteppingClock:
    """The system clock, whose wall time an operator (or NTP) can step; monotonic time never jumps."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    def jump_wall(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@contextlib.asynccontextmanager
async def stack_with_clock(tmp_path: Path, clock: Any, **env: str) -> AsyncIterator[Stack]:
    """The conftest ``stack`` with an injected clock (build_app(cfg, clock=...))."""
    from aiohttp import web

    from callcentre.app import SERVICES, build_app
    from callcentre.config import load_config
    from callcentre.owners_import import import_owners
    from callcentre.sim.ami_server import AMIServer
    from callcentre.sim.pbx import SimPBX
    from callcentre.storage.db import create_engine, session_factory, upgrade

    pbx = SimPBX(speed=50.0, prompt_dir=REPO / "prompts", prompt_prefix="callcentre", record_dir=tmp_path / "rec")
    ami_server = AMIServer(pbx, "callcentre", AMI_SECRET)
    environ = stack_environ(tmp_path, await ami_server.start(), **env)
    cfg = load_config(None, environ=environ)
    await upgrade(cfg.database.url, progress=None)
    engine = create_engine(cfg.database)
    await import_owners(session_factory(engine), REPO / "examples" / "owners.csv", country_code="86", trunk_prefix="0")
    await engine.dispose()
    app = build_app(cfg, clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    services = app[SERVICES]
    pbx.agi_port = services.agi.port
    try:
        yield Stack(cfg=cfg, services=services, pbx=pbx, ami_server=ami_server, runner=runner, environ=environ)
    finally:
        await runner.cleanup()
        await pbx.aclose()
        await ami_server.stop()


async def _ring_across_a_wall_clock_step(stack: Stack, clock: SteppingClock) -> tuple[Any, dict, list[str]]:
    """An agent's phone rings (answers after 4 simulated seconds) while NTP steps the wall clock
    three days ahead. Returns the call, the figures of the day the call came in, and the alert kinds."""
    services = stack.services
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=4, talk_seconds=2))
    a1 = str((await services.users.by_login("a1")).id)
    entered = clock.now()
    call = asyncio.ensure_future(stack.pbx.place_call(CallerScript("13912345602", inputs=["0", ""])))
    assert await eventually(lambda: services.acd.dist.agent_state(a1) is AgentState.RINGING)
    clock.jump_wall(3 * 86400)
    result = await asyncio.wait_for(call, 15)
    assert await eventually(lambda: services.acd.dist.agent_state(a1) is AgentState.READY)
    figures = services.acd.dist.metrics_snapshot(entered)
    figures = figures.to_dict() if hasattr(figures, "to_dict") else dict(vars(figures))
    alerts = [str(a.get("kind")) for a in services.acd.snapshot().get("alerts", [])]
    return result, figures, alerts


WALL_STEP_ENV = {"CALLCENTRE_ACD__AGENTS": ONE_AGENT, "CALLCENTRE_ACD__WRAPUP_SECONDS": "0",
                 "CALLCENTRE_ACD__RING_CYCLE_SECONDS": "30"}


async def test_wall_clock_jump_causes_no_mass_escalation_and_leaves_ring_timers_alone(tmp_path):
    clock = SteppingClock()
    async with stack_with_clock(tmp_path, clock, **WALL_STEP_ENV) as stack:
        services = stack.services
        for inputs in (["2", "1", Record(1)], ["3", "2", Record(1)]):
            r = await asyncio.wait_for(stack.pbx.place_call(CallerScript(KNOWN_MOBILE, inputs=inputs)), 15)
            assert r.cc_result == "done"
        tickets = await stack.tickets()
        assert len(tickets) == 2 and all(t.promised_by is not None for t in tickets)
        assert await services.escalation.run_once() == []
        result, figures, _alerts = await _ring_across_a_wall_clock_step(stack, clock)
        # the ring timer runs on the monotonic clock: the agent was not timed out by the step
        assert result.variables.get("DIALSTATUS") == "ANSWER"
        assert figures["offers"] == 1 and figures["offers_missed"] == 0 and figures["calls_answered"] == 1
        # the escalation pass right after the step does not breach every promise at once
        alerts = await services.escalation.run_once()
        assert [a for a in alerts if a.kind.value == "breach"] == []
        rows = await stack.tickets()
        assert all(t.status != "escalated" for t in rows), [(t.number, t.status) for t in rows]


async def test_wall_clock_jump_while_ringing_does_not_distort_the_speed_of_answer(tmp_path):
    clock = SteppingClock()
    async with stack_with_clock(tmp_path, clock, **WALL_STEP_ENV) as stack:
        _result, figures, alerts = await _ring_across_a_wall_clock_step(stack, clock)
        assert "call_answered_late" not in alerts
        assert figures["calls_answered_within_target"] == 1 and figures["breaches"] == 0, figures
