"""The queue_log file end to end: the whole server (config ``queue_log:``) against the PBX simulator.

A call through our distribution leaves whole app_queue lines in the file, which a report reads back to
the same figures as the API; a restart writes QUEUESTART again; a file on a full disk (/dev/full) or at
a path nobody may create (sysfs) never touches the call: it is answered as always, and the failures
are counted on /health and /metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from callcentre.domain.queue_log import QueueLogEvent as E
from callcentre.sim.scripts import AgentScript, CallerScript
from tests.queue_log_report import check_calls_are_closed, read_entries, report
from tests.waiting import eventually

AGENTS = (
    "[{id: a1, name: Agent One, interface: PJSIP/agent1, start: ready},"
    " {id: a2, name: Agent Two, interface: PJSIP/agent2, start: ready}]"
)
QUEUE_LOG_ENV = {"CALLCENTRE_ACD__AGENTS": AGENTS, "CALLCENTRE_ACD__WRAPUP_SECONDS": "0",
                 "CALLCENTRE_QUEUE_LOG__ENABLED": "true", "CALLCENTRE_QUEUE_LOG__QUEUE_NAME": "estate-hotline"}


async def call_missed_then_answered(stack) -> None:
    """agent1 never answers (two rings), agent2 answers after 3 s and hangs up 5 s later."""
    stack.pbx.add_agent(AgentScript("PJSIP/agent1", answer_after=None))
    stack.pbx.add_agent(AgentScript("PJSIP/agent2", answer_after=3, talk_seconds=5))
    assert await eventually(lambda: stack.services.ami.connected)
    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["0", "5"]))
    assert result.error is None and result.variables.get("DIALSTATUS") == "ANSWER"


async def supervisor(stack):
    from callcentre.storage.users_repo import create_user

    await create_user(stack.services.session_factory, "boss", "Boss", "supervisor", "boss-password-1")
    client = stack.http()
    r = await client.post("/api/login", json={"login": "boss", "password": "boss-password-1"})
    assert r.status == 200, await r.text()
    return client


def file_of(stack) -> Path:
    return Path(stack.cfg.queue_log.path)


@pytest.mark.stack_env(**QUEUE_LOG_ENV)
async def test_a_call_leaves_whole_app_queue_lines_that_report_what_the_api_says(stack, tmp_path):
    path = file_of(stack)
    assert path == tmp_path / "var" / "queue_log"  # tests/conftest.py: var/ under the test's directory, made at start
    await call_missed_then_answered(stack)
    # the agent hung up, the caller rates the call: the simulator reports no BridgeLeave, so who hung up
    # first is decided from the AGI session within the grace
    assert await eventually(lambda: path.exists() and b"COMPLETE" in path.read_bytes(), limit=10)
    entries = read_entries(path)
    assert [e.event for e in entries[:3]] == [E.QUEUESTART, E.ADDMEMBER, E.ADDMEMBER]
    assert {e.agent for e in entries[1:3]} == {"a1", "a2"}
    rep = report(entries, "estate-hotline")
    check_calls_are_closed(rep)
    [call] = rep.calls.values()
    assert [e.event for e in call] == [E.ENTERQUEUE, E.RINGNOANSWER, E.CONNECT, E.COMPLETEAGENT]
    assert call[0].callid == call[-1].callid == next(iter(rep.calls))
    assert call[0].data == ("", "13800138000", "1")  # the caller's number as Asterisk gave it
    assert call[2].agent == "a2" and call[1].agent == "a1"
    client = await supervisor(stack)
    try:
        agents = {a["name"]: a for a in (await (await client.get("/api/agents")).json())["agents"]}
        queue = await (await client.get("/api/queue")).json()
        health = await (await client.get("/health")).json()
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    assert rep.answered["a2"] == agents["Agent Two"]["answered_today"] == 1
    assert rep.not_answered["a1"] == agents["Agent One"]["missed_today"] == 1
    assert rep.abandoned == queue["figures"]["today"]["calls_abandoned"] == 0
    written = len(entries)
    assert health["queue_log"] | {"last_error": None} == {
        "enabled": True, "path": str(path), "ok": True, "written": written, "failed": 0, "dropped": 0, "pending": 0,
        "last_error": None, "event_errors": 0}
    assert health["ok"] is True
    assert f'callcentre_queue_log_lines_total{{outcome="written"}} {float(written)}' in metrics
    assert 'callcentre_queue_log_lines_total{outcome="failed"} 0.0' in metrics
    assert "callcentre_queue_log_failing 0.0" in metrics


@pytest.mark.stack_env(**QUEUE_LOG_ENV)
async def test_a_restart_appends_queuestart_and_the_members_again(stack):
    from callcentre.app import build_app

    path = file_of(stack)
    assert await eventually(lambda: path.exists() and path.read_bytes().count(b"\n") >= 3)
    await stack.runner.cleanup()  # the first server stops (SIGTERM does this)
    runner = web.AppRunner(build_app(stack.cfg, migrate=False, web_ui=False))
    await runner.setup()
    try:
        assert await eventually(lambda: path.read_bytes().count(b"QUEUESTART") == 2)
    finally:
        await runner.cleanup()
    entries = read_entries(path)
    assert [e.event for e in entries] == [E.QUEUESTART, E.ADDMEMBER, E.ADDMEMBER] * 2


@pytest.mark.stack_env(**QUEUE_LOG_ENV, CALLCENTRE_QUEUE_LOG__PATH="/dev/full")
async def test_a_full_disk_never_touches_the_call(stack):
    await refused_file_never_touches_the_call(stack, "ENOSPC")


@pytest.mark.stack_env(**QUEUE_LOG_ENV, CALLCENTRE_QUEUE_LOG__PATH="/sys/callcentre-queue_log")
async def test_an_unwritable_path_never_touches_the_call(stack):
    await refused_file_never_touches_the_call(stack, "EACCES")


async def refused_file_never_touches_the_call(stack, error: str) -> None:
    await call_missed_then_answered(stack)
    f = stack.services.acd.metrics()
    assert f["calls_answered"] == 1 and f["offers"] == 2 and f["offers_missed"] == 1
    writer = stack.services.queue_log
    assert await eventually(lambda: writer.stats().failed >= 7 and writer.stats().pending == 0, limit=10)
    async with stack.http() as client:
        health_r = await client.get("/health")
        health = await health_r.json()
        metrics = await (await client.get("/metrics")).text()
    assert health_r.status == 200 and health["ok"] is True
    ql = health["queue_log"]
    assert (ql["ok"], ql["written"], ql["dropped"]) == (False, 0, 0) and ql["failed"] >= 7
    assert ql["last_error"].startswith(error + ":")
    assert f'callcentre_queue_log_lines_total{{outcome="failed"}} {float(ql["failed"])}' in metrics
    assert "callcentre_queue_log_failing 1.0" in metrics
