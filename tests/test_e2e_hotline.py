"""The hotline call path end to end: our FastAGI server, AMI link and SQLite against the simulator.

Every byte crosses a real socket in the formats of the captured Asterisk 20 traffic.
"""

from __future__ import annotations

import re
import sys

import pytest

from callcentre.sim.scripts import CallEnd, CallerScript, Hangup, Record, Silence
from tests.waiting import eventually


def streamed(result) -> list[str]:
    """The prompt files our server asked Asterisk to play, in order."""
    out = []
    for line in result.commands:
        parts = line.split()
        if line.startswith("STREAM FILE"):
            out.append(parts[2])
        elif line.startswith("GET DATA"):
            out.append(parts[2])
    return out


async def test_known_owner_reports_a_repair(stack):
    result = await stack.pbx.place_call(CallerScript("13800138000", "Zhang Wei", inputs=["2", "1", Record(2)]))
    assert result.error is None, result.error
    assert result.cc_result == "done" and not result.fallback_queue
    [t] = await stack.tickets()
    assert t.kind == "repair" and t.category == "water"
    assert t.caller_id == "+8613800138000" and t.caller_id_raw == "13800138000"
    assert t.owner_id is not None and t.unit_id is not None
    assert t.call_uniqueid == result.uniqueid
    assert t.voice_file and t.voice_file.endswith(".wav")
    assert t.acknowledged_to_caller is True  # the caller heard the number and the promise to the end
    prompts = streamed(result)
    assert "callcentre/zh/ticket-created" in prompts
    assert "callcentre/zh/promise-by" in prompts
    # every prompt we played exists: the simulator answers result=-1 for a missing file and our
    # channel then probes CHANNEL STATUS; no such probe means no missing prompt
    assert not any(c.startswith("CHANNEL STATUS") for c in result.commands)
    # The number spoken is the ticket's: month-day then counter, digit by digit
    i = prompts.index("callcentre/zh/ticket-created")
    digits = [p.rsplit("-", 1)[1] for p in prompts[i + 1 : i + 9]]
    assert "".join(digits) == t.number[5:9] + t.number[-4:]


async def test_self_service_reads_the_balance_after_the_unit_check(stack):
    result = await stack.pbx.place_call(
        CallerScript("13800138000", inputs=["1", "1#", "1201#", "1", "0"])
    )
    assert result.error is None
    prompts = streamed(result)
    assert "callcentre/zh/fee-balance-is" in prompts
    i = prompts.index("callcentre/zh/fee-balance-is")
    from datetime import date

    from callcentre.domain import speech

    expected = ["fee-balance-is", *speech.amount(256000, "zh"), "fee-due-by", *speech.date(date(2026, 9, 30), "zh")]
    assert prompts[i : i + len(expected)] == [f"callcentre/zh/{n}" for n in expected]
    # then 0 for a person: nobody is logged in, so the caller is told at once and leaves a message
    assert "callcentre/zh/no-agents" in prompts and "callcentre/zh/leave-message" in prompts
    [t] = await stack.tickets()
    assert t.kind == "message" and t.number.startswith("M")
    assert result.cc_result == "done" and not result.fallback_queue


@pytest.mark.stack_env(CALLCENTRE_ACD__ENABLED="false")
async def test_without_call_distribution_a_person_is_reached_through_the_dialplan_queue(stack):
    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["0"]))
    assert result.error is None
    assert not result.cc_result  # not done: the dialplan sends the caller to hotline-fallback
    assert result.fallback_queue
    assert "callcentre/zh/transfer-agent" in streamed(result)


async def test_unknown_caller_keys_in_a_unit(stack):
    result = await stack.pbx.place_call(
        CallerScript("02799990000", inputs=["2", "1#", "1201#", "1", "5", Record(1)])
    )
    assert result.cc_result == "done"
    [t] = await stack.tickets()
    assert t.caller_id == "+862799990000"
    assert t.unit_id is not None and t.owner_id is not None
    assert "callcentre/zh/unknown-caller" in streamed(result)


async def test_anonymous_caller_can_still_report(stack):
    result = await stack.pbx.place_call(CallerScript("anonymous", inputs=["3", Silence(), "2", Record(1)]))
    assert result.cc_result == "done"
    [t] = await stack.tickets()
    assert t.kind == "complaint" and t.caller_id is None and t.owner_id is None


async def test_hang_up_during_recording_keeps_the_request(stack):
    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["2", "3", Hangup()]))
    assert result.ended is CallEnd.CALLER_HUNG_UP
    assert await eventually(lambda: stack.services.agi.active_sessions == 0)
    [t] = await stack.tickets()
    assert t.category == "lift" and t.ivr_path.endswith("rec:hangup")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8])
async def test_hang_up_between_a_command_and_its_reply(stack, n):
    result = await stack.pbx.place_call(
        CallerScript("13800138000", inputs=["2", "1", Record(1)], hangup_between_command_and_reply=n)
    )
    assert result.ended is CallEnd.CALLER_HUNG_UP
    assert await eventually(lambda: stack.services.agi.active_sessions == 0)
    tickets = await stack.tickets()
    assert len(tickets) <= 1
    assert stack.services.agi.stats.handler_errors == 0


async def test_server_down_sends_the_caller_to_the_fallback_queue(stack):
    await stack.services.agi.stop(grace_seconds=0.1)
    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["2"]))
    assert result.ended in (CallEnd.AGI_FAILED, CallEnd.FALLBACK_ABANDONED)
    assert result.fallback_queue and result.agi_status == "FAILURE"


async def test_the_same_call_retried_makes_no_duplicate(stack):
    from callcentre.domain.model import Priority, TicketDraft, TicketKind

    result = await stack.pbx.place_call(CallerScript("13800138000", inputs=["2", "1", Record(1)]))
    [t] = await stack.tickets()
    draft = TicketDraft(kind=TicketKind.REPAIR, category="water", priority=Priority.GENERAL, caller_id_raw="13800138000",
                        caller_id="+8613800138000", call_uniqueid=result.uniqueid)
    again = await stack.services.tickets.create_ticket(draft, None)
    assert again.number == t.number
    assert len(await stack.tickets()) == 1


async def test_ami_link_logs_in_and_resynchronises_after_a_restart(stack):
    ami = stack.services.ami
    assert await eventually(lambda: ami.connected)
    before = len(stack.ami_server.actions_named("CoreShowChannels"))
    await stack.ami_server.restart(0.3)
    assert await eventually(lambda: ami.connected and len(stack.ami_server.actions_named("CoreShowChannels")) > before, 10)
    assert ami.status()["reconnects"] >= 1


async def test_health_reports_every_part(stack):
    assert await eventually(lambda: stack.services.ami.connected)
    async with stack.http() as client:
        resp = await client.get("/health")
        body = await resp.json()
        metrics = await (await client.get("/metrics")).text()
    assert "callcentre_up{part=\"fastagi\"} 1.0" in metrics and "callcentre_agents_ready" in metrics
    tasks = re.search(r"^callcentre_event_loop_tasks (\d+)\.0$", metrics, re.M)
    assert tasks is not None and int(tasks.group(1)) >= 1, metrics  # at least the scrape's own task
    if sys.platform == "linux":
        rss = re.search(r"^process_resident_memory_bytes (\S+)$", metrics, re.M)
        assert rss is not None and float(rss.group(1)) > 10 * 2**20, metrics
    assert resp.status == 200, body
    assert body["database"]["ok"] and body["fastagi"]["ok"] and body["ami"]["connected"]
