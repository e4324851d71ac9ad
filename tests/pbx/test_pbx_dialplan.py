"""Our dialplans (dialplans/*.conf) on a real Asterisk: agent legs, owner legs, the fallback, chan_sip.

What the real PBX showed, and what these tests keep fixed:

* ``[callcentre-agents]``'s old pattern ``_[0-9A-Za-z_-]!`` made Asterisk log "A matching ']' was not
  found" on every agent leg (the trailing '-' is read as a range up to ']'), and it matched ``h``: every
  hang-up of an agent leg ran ``Dial(PJSIP/h,120)``.
* Agents on Local channels could not be rung through ``[callcentre-agents]`` (PJSIP/SIP only), and
  ``[callcentre-outbound]`` could only dial PJSIP: on chan_sip the call-back path failed.
* With no server, or one that closes at once or dies mid-call, the caller must reach a person through
  app_queue (members added at run time with AMI QueueAdd), or voicemail when nobody answers.
* A chan_sip desk phone (a second Asterisk) answers hotline calls put through by the server.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.pbx.conftest import ARTIFACTS
from tests.pbx.sip_peer import SipPhoneBox

LOCAL_AGENTS = {"CALLCENTRE_AGENT_TECH": "LOCAL", "CALLCENTRE_AGENT_CONTEXT": "cc-test-phones"}


async def _originate(pbx: Any, channel: str, timeout_ms: int = 10000) -> dict[str, str]:
    """AMI Originate of ``channel`` into [cc-test-park]; the OriginateResponse."""
    start = len(pbx.ami.events)
    reply = await pbx.ami.action("Originate", Channel=channel, Context="cc-test-park", Exten="s", Priority="1",
                                 Async="true", Timeout=str(timeout_ms))
    assert reply.get("Response") == "Success", reply
    aid = reply["ActionID"]
    return await pbx.ami.wait_for(lambda e: e.get("Event") == "OriginateResponse" and e.get("ActionID") == aid,
                                  limit=timeout_ms / 1000 + 10, start=start)


async def _eventually(check: Callable[[], Awaitable[Any] | Any], limit: float, what: str) -> Any:
    end = time.monotonic() + limit
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(0.2)


def _exec_lines(log: str, app: str) -> list[str]:
    return [ln for ln in log.splitlines() if f"] {app}(" in ln]


# ---------------------------------------------------------------------------------------------------
# 1-3: agent legs and owner legs, without the server


@pytest.mark.pbx_world(
    start_server=False,
    agents={"agent1": "answer:1:3", "agentbusy": "busy"},
    globals={**LOCAL_AGENTS, "CALLCENTRE_TRUNK_TECH": "LOCAL", "CALLCENTRE_TRUNK_CONTEXT": "cc-test-owner",
             "CC_OWNER": "answer:1::3"},
)
async def test_agent_and_owner_legs_dial_what_the_settings_say(pbx):
    ring = {
        "agent1": _originate(pbx, "Local/agent1@callcentre-agents/n"),
        "agentbusy": _originate(pbx, "Local/agentbusy@callcentre-agents/n"),
        "x": _originate(pbx, "Local/x@callcentre-agents/n"),  # a one-character name is still an agent
        "bad.name": _originate(pbx, "Local/bad.name@callcentre-agents/n"),
        "h": _originate(pbx, "Local/h@callcentre-agents/n"),
        "mobile": _originate(pbx, "Local/+8613800138000@callcentre-outbound"),
        "landline": _originate(pbx, "Local/+862888881234@callcentre-outbound"),
        "foreign": _originate(pbx, "Local/+14155550100@callcentre-outbound"),
        "not-e164": _originate(pbx, "Local/13800138000@callcentre-outbound"),
    }
    got = dict(zip(ring, await asyncio.gather(*ring.values()), strict=True))
    outcome = {k: (v["Response"], v["Reason"]) for k, v in got.items()}
    print(outcome)
    assert outcome["agent1"] == ("Success", "4")  # LOCAL: Local/agent1@cc-test-phones answered
    assert outcome["agentbusy"] == ("Failure", "5")  # busy comes back through the Local channel as busy
    assert outcome["mobile"] == ("Success", "4")
    assert outcome["landline"] == ("Success", "4")
    for name in ("x", "bad.name", "h"):
        assert outcome[name][0] == "Failure", name
    # Refused numbers: congestion at once (Reason 8), not a call that rings nowhere.
    assert outcome["foreign"] == outcome["not-e164"] == ("Failure", "8")
    await pbx.no_channels(20)

    log = pbx.asterisk_log()
    # The pattern no longer draws a warning, and no hang-up ever runs the agent dial as "h".
    assert "A matching ']' was not found" not in log
    assert not re.search(r"Executing \[h@callcentre-agent", log), "an agent leg's hang-up ran the dial as 'h'"
    dials = [re.search(r'Dial\("[^"]*", "([^"]*)"\)', ln)[1] for ln in _exec_lines(log, "Dial")]
    print(dials)
    assert "Local/agent1@cc-test-phones/n,120" in dials
    assert "Local/agentbusy@cc-test-phones/n,120" in dials
    assert "Local/x@cc-test-phones/n,120" in dials
    assert not any("/h," in d or "bad" in d for d in dials), dials
    assert "Local/13800138000@cc-test-owner/n,60" in dials  # mobile: 11 digits as they are
    assert "Local/02888881234@cc-test-owner/n,60" in dials  # landline: national form with trunk 0
    assert not any("4155550100" in d for d in dials)
    assert "No such extension/context h@callcentre-agents" in log  # 'h' is not an agent name here
    assert "callcentre: refused an agent name" in log
    refused = [ln for ln in log.splitlines() if "WARNING[" in ln and "refusing an outbound number that is not +86" in ln]
    assert len(refused) == 2, refused
    owner_rang = set(re.findall(r"app_verbose.c: cc-test: owner phone (\S+) rings", log))
    assert owner_rang == {"02888881234", "13800138000"}

    # PJSIP (the default) with no PJSIP channel driver, and no trunk named: the caller-back learns it
    # at once (congestion), and the log says why.
    await pbx.set_global("CALLCENTRE_TRUNK_TECH", "")
    failed = await _originate(pbx, "Local/+8613800138000@callcentre-outbound")
    assert (failed["Response"], failed["Reason"]) == ("Failure", "8")
    await pbx.expect_logged("callcentre: CALLCENTRE_TRUNK is not set, cannot call owners back")
    await pbx.set_global("CALLCENTRE_AGENT_CONTEXT", "")
    failed = await _originate(pbx, "Local/agent1@callcentre-agents/n")
    assert (failed["Response"], failed["Reason"]) == ("Failure", "8")
    await pbx.expect_logged("callcentre: agent agent1 is LOCAL but CALLCENTRE_AGENT_CONTEXT is not set")


# ---------------------------------------------------------------------------------------------------
# 4: the server stopped, refusing, crashed -> the hotline-fallback queue -> an agent, or voicemail


class TinyAGI:
    """A FastAGI listener that misbehaves in one chosen way (the real server is not running)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.replies: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "close":  # accept and close at once
                writer.close()
                return
            while await reader.readline() not in (b"", b"\n"):
                pass  # the agi_* environment

            async def command(text: str) -> None:
                writer.write(text.encode() + b"\n")
                await writer.drain()
                self.replies.append((await reader.readline()).decode().strip())

            await command("ANSWER")
            if self.mode == "crash":  # answered, played a prompt, then died: no CC_RESULT
                await command("STREAM FILE beep \"\"")
                writer.transport.abort()
                return
            if self.mode == "hangup":  # the server ends the call itself
                await command("HANGUP")
            if self.mode == "done":  # fully handled
                await command("SET VARIABLE CC_RESULT done")
            writer.close()
        except (ConnectionError, OSError):
            pass

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _vm_inbox(pbx: Any) -> Path:
    return pbx.ast.var / "spool" / "voicemail" / "callcentre" / "9000" / "INBOX"


def _messages(pbx: Any) -> list[Path]:
    inbox = _vm_inbox(pbx)
    return sorted(inbox.glob("msg*.txt")) if inbox.exists() else []


@pytest.mark.pbx_world(
    start_server=False,
    agents={"agent4": "answer:2:3", "agent5": "answer:2:3", "agent6": "answer:2:3"},
    globals={**LOCAL_AGENTS, "CALLCENTRE_FALLBACK_WAIT": "25", "CALLCENTRE_TRUNK_TECH": "LOCAL",
             "CALLCENTRE_TRUNK_CONTEXT": "cc-test-owner", "CC_OWNER": "answer:1::30"},
)
async def test_fallback_queue_reaches_an_agent_or_voicemail_whenever_the_server_cannot_handle_the_call(pbx):
    # The operator's step when the static members in queues_callcentre.conf are not the real phones
    # (here: PJSIP, and this Asterisk has no chan_pjsip, so they are Invalid): add members at run time.
    for name in pbx.agents:
        r = await pbx.ami.action("QueueAdd", Queue="hotline-fallback", Interface=f"Local/{name}@callcentre-agents/n",
                                 StateInterface=f"Local/{name}@cc-test-phones", MemberName=f"Agent {name}")
        assert r.get("Response") == "Success", r
    shown = await pbx.ast.acli("queue show hotline-fallback")
    print(shown)
    assert "(Invalid)" in shown and shown.count("(dynamic) (Not in use)") == 3

    listeners = {mode: TinyAGI(mode) for mode in ("close", "crash", "hangup", "done")}
    ports = {mode: await agi.start() for mode, agi in listeners.items()}
    # Each caller meets a different "server": its number says which.
    cases = {"13900000001": "none", "13900000002": "close", "13900000003": "crash",
             "13900000004": "hangup", "13900000005": "done"}
    t0 = time.monotonic()
    try:
        for number, mode in cases.items():
            port = ports.get(mode) or pbx.ast.agi_port  # "none": nothing listens on the configured port
            await pbx.set_global("CALLCENTRE_AGI", f"127.0.0.1:{port}")
            start = len(pbx.ami.events)
            reply = await pbx.ami.action(
                "Originate", Channel="Local/4008001234@cc-test-trunk", Context="cc-test-handset", Exten="s",
                Priority="1", CallerID=f"<{number}>", Async="true", Timeout="30000", Variable=["CC_T_1=wait:1",
                                                                                             "CC_T_HOLD=60"])
            assert reply.get("Response") == "Success", reply
            # AGI() has run (the global was read) before the next caller changes it.
            await pbx.ami.wait_for(lambda e, n=number: e.get("Event") == "VarSet" and e.get("Variable") == "AGISTATUS"
                                   and e.get("CallerIDNum") == n, 15, start=start)

        # With the server down: a closure survey whose owner picked up (a person takes over), and an
        # ACD call-back whose agent picked up (the agent is told, never queued).
        await pbx.set_global("CALLCENTRE_AGI", f"127.0.0.1:{pbx.ast.agi_port}")
        for number, channel, exten, variables in (
                ("13900000006", "Local/+8613800138000@callcentre-outbound", "survey", ["TICKET=T20261202-0001"]),
                ("13900000007", "Local/agent4@callcentre-agents/n", "callback", ["CC_CALL=x"])):
            start = len(pbx.ami.events)
            reply = await pbx.ami.action("Originate", Channel=channel, Context="callcentre-callback", Exten=exten,
                                         Priority="1", CallerID=f"<{number}>", Async="true", Timeout="30000",
                                         Variable=variables)
            assert reply.get("Response") == "Success", reply
            await pbx.ami.wait_for(lambda e, n=number: e.get("Event") == "VarSet" and e.get("Variable") == "AGISTATUS"
                                   and e.get("CallerIDNum") == n, 15, start=start)

        def agistatus(number: str) -> tuple[str, str]:
            (e,) = [e for e in pbx.ami.find("VarSet", Variable="AGISTATUS") if e.get("CallerIDNum") == number]
            return e["Value"], e["Channel"]

        assert agistatus("13900000001")[0] == "FAILURE"  # nothing listening
        assert agistatus("13900000002")[0] == "SUCCESS"  # accepted and closed: AGI "succeeded", no CC_RESULT
        assert agistatus("13900000003")[0] == "SUCCESS"  # died mid-call: same
        assert agistatus("13900000004")[0] == "HANGUP"  # the server hung up: AGI() ends the dialplan
        assert agistatus("13900000005")[0] == "SUCCESS"
        assert any(e.get("Value") == "done" and e.get("CallerIDNum") == "13900000005"
                   for e in pbx.ami.find("VarSet", Variable="CC_RESULT"))
        assert listeners["crash"].replies[:1] == ["200 result=0"], listeners["crash"].replies  # ANSWER
        assert listeners["hangup"].replies == ["200 result=0", "200 result=1"], listeners["hangup"].replies

        assert agistatus("13900000006")[0] == agistatus("13900000007")[0] == "FAILURE"
        fallen = ["13900000001", "13900000002", "13900000003", "13900000006"]
        joined: dict[str, str] = {}
        for number in fallen:
            join = await pbx.ami.wait_for(lambda e, n=number: e.get("Event") == "QueueCallerJoin"
                                          and e.get("CallerIDNum") == n, 15)
            assert join["Queue"] == "hotline-fallback", join
            joined[number] = join["Uniqueid"]
            connect = await pbx.ami.wait_for(lambda e, n=number: e.get("Event") == "AgentConnect"
                                             and e.get("CallerIDNum") == n, 30)
            assert re.fullmatch(r"Local/agent[456]@callcentre-agents/n", connect["Interface"]), connect
            status, channel = agistatus(number)
            await pbx.expect_logged(f"callcentre: fallback for {channel}: AGISTATUS={status} CC_RESULT=")
        answered_after = time.monotonic() - t0
        _, agent_leg = agistatus("13900000007")
        await pbx.expect_logged(f"callcentre: agent leg failed for {agent_leg}: AGISTATUS=FAILURE")
        assert not [e for e in pbx.ami.find("QueueCallerJoin") if e.get("CallerIDNum") == "13900000007"]
        # The agent hangs up after talking: the caller is hung up too (Queue() without 'c'), no voicemail.
        # (Not the survey leg: Local/+86...@callcentre-outbound has no /n, so once it is bridged to
        # the agent Asterisk may optimise the Local pair away, swapping the owner's own channel into
        # the bridge; app_queue then reports AgentComplete Reason=caller with no caller fields at
        # all, while the owner and the agent go on talking.)
        # Judged by the caller's own Hangup, well before its handset's 60 s hold would end (voicemail is
        # ruled out below). app_queue's AgentComplete reports the same end, but in one CI run it did not
        # come within 30 s for one of the three callers (cause not found: that run kept no event log);
        # the caller's own events are now printed if the hang-up itself is ever missing.
        for number in fallen[:3]:
            try:
                await pbx.wait_hangup(joined[number], 30)
            except AssertionError as e:
                raise AssertionError(f"caller {number} was not hung up after its agent: {e}\n"
                                     + "\n".join(pbx.ami.about(joined[number]))) from None
        for number in ("13900000004", "13900000005"):
            _, channel = agistatus(number)
            assert not [e for e in pbx.ami.find("QueueCallerJoin") if e.get("CallerIDNum") == number]
            assert f"fallback for {channel}:" not in pbx.asterisk_log()
            await pbx.wait_hangup(next(e["Uniqueid"] for e in pbx.ami.find("VarSet", Variable="AGISTATUS")
                                       if e.get("CallerIDNum") == number), 20)
        await pbx.no_channels(20)
        assert not _messages(pbx), "a caller who talked to an agent was sent to voicemail"

        # Nobody answers: after CALLCENTRE_FALLBACK_WAIT the caller leaves a message in 9000@callcentre.
        for name in pbx.agents:
            await pbx.set_phone(name, "never")
        await pbx.set_global("CALLCENTRE_FALLBACK_WAIT", "6")
        await pbx.set_global("CALLCENTRE_AGI", f"127.0.0.1:{pbx.ast.agi_port}")
        t1 = time.monotonic()
        # '#' skips the mailbox greeting if it is still playing; the next '#' ends the message.
        reply = await pbx.call("13900000009", ["wait:10", "dtmf:#", "play:hello-world", "dtmf:#", "wait:2",
                                               "play:hello-world", "dtmf:#", "wait:5"])
        assert reply["Response"] == "Success", reply
        join = await pbx.ami.wait_for(lambda e: e.get("Event") == "QueueCallerJoin"
                                      and e.get("CallerIDNum") == "13900000009", 15)
        leave = await pbx.ami.wait_for(lambda e: e.get("Event") == "QueueCallerLeave"
                                       and e.get("CallerIDNum") == "13900000009", 20)
        waited = float(leave["_t"]) - float(join["_t"])
        msg = await _eventually(lambda: _messages(pbx), 40, "a voicemail in 9000@callcentre's INBOX")
        voicemail_after = time.monotonic() - t1
        text = msg[0].read_text()
        print(text)
        assert "13900000009" in text and "callcentre" in text
        assert list(_vm_inbox(pbx).glob("msg0000.wav"))
        assert not [e for e in pbx.ami.find("AgentConnect") if e.get("CallerIDNum") == "13900000009"]
        assert [e for e in pbx.ami.find("AgentRingNoAnswer") if e.get("CallerIDNum") == "13900000009"] or \
            [e for e in pbx.ami.find("AgentCalled") if e.get("CallerIDNum") == "13900000009"]
        assert 5.0 <= waited <= 9.0, waited
        print(f"fallback: four callers (three hotline, one survey) answered {answered_after:.1f} s after the first call; "
              f"queue wait before voicemail {waited:.1f} s; message saved {voicemail_after:.1f} s after the call")
    finally:
        for agi in listeners.values():
            agi.close()


# ---------------------------------------------------------------------------------------------------
# 5 (and 3 on chan_sip): SIP desk phones and a SIP trunk on a second Asterisk


@pytest_asyncio.fixture
async def phone_box(pbx, asterisk_binary: str, request: Any):
    kw: dict[str, Any] = getattr(request, "param", {})  # indirect parametrisation: the box's phones
    box = SipPhoneBox(asterisk_binary, kw.get("phones", {}), kw.get("owner", "answer:1::20"))
    await asyncio.to_thread(box.start)
    failed = True
    try:
        await box.attach(pbx.ast, list(kw.get("phones", {})), kw.get("trunk", "carrier"))
        yield box
        failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    finally:
        await asyncio.to_thread(box.stop, ARTIFACTS / request.node.name / "phone-box" if failed else None)


SIP_AGENTS = {"acd": {"agents": [
    {"id": "agent3", "name": "Agent Three", "interface": "SIP/agent3", "start": "ready"},
    {"id": "agent7", "name": "Agent Seven", "interface": "Local/agent7@callcentre-agents", "start": "ready"},
], "wrapup_seconds": 2, "satisfaction_survey": False}}


@pytest.mark.parametrize("phone_box", [{"phones": {"agent3": "answer:3:6", "agent7": "answer:2:6"},
                                        "owner": "answer:1::4"}], indirect=True, ids=["box"])
@pytest.mark.pbx_world(
    agents={},
    config=SIP_AGENTS,
    globals={"CALLCENTRE_TECH_agent7": "SIP", "CALLCENTRE_TRUNK_TECH": "SIP", "CALLCENTRE_TRUNK": "carrier"},
)
async def test_sip_desk_phones_answer_hotline_calls_and_the_sip_trunk_reaches_owners(pbx, phone_box):
    # agent3: the server dials SIP/agent3 itself; agent7: the server dials Local/agent7@callcentre-agents,
    # whose CALLCENTRE_TECH_agent7=SIP makes the dialplan dial SIP/agent7. Two callers ask for a person
    # at the same time, and meanwhile a call-back leg goes out through the chan_sip trunk.
    callers = ["13800138000", "13912345602"]
    steps = ["wait:2", "dtmf:0", "wait:40", "hangup"]
    calls = [pbx.call(n, steps) for n in callers]
    owner = _originate(pbx, "Local/+8613800138000@callcentre-outbound")
    *answers, owner_leg = await asyncio.gather(*calls, owner)
    assert all(a["Response"] == "Success" for a in answers), answers
    assert (owner_leg["Response"], owner_leg["Reason"]) == ("Success", "4"), owner_leg

    ends = {}
    for agent in ("agent3", "agent7"):
        ends[agent] = await pbx.ami.wait_for(lambda e, a=agent: e.get("Event") == "DialEnd"
                                             and e.get("DestChannel", "").startswith(f"SIP/{a}-")
                                             and e.get("DialStatus") == "ANSWER", 40)
    begins = {a: next(e for e in pbx.ami.find("DialBegin") if e.get("DestUniqueid") == end["DestUniqueid"])
              for a, end in ends.items()}
    assert begins["agent3"]["DialString"] == "agent3"
    # agent3's SIP leg is dialled by the caller's own channel; agent7's by the Local channel of the dialplan.
    assert begins["agent3"]["Channel"].startswith("Local/4008001234@cc-test-trunk-")
    assert begins["agent7"]["Channel"].startswith("Local/agent7@callcentre-agents-")
    trunk = next(e for e in pbx.ami.find("DialBegin") if e.get("DestChannel", "").startswith("SIP/carrier-"))
    assert trunk["DialString"] == "carrier/13800138000"
    assert "cc-test: owner phone 13800138000 rings" in phone_box.log()
    for agent in ("agent3", "agent7"):  # the box's own log: that very phone took the call
        await _eventually(lambda a=agent: f"app_verbose.c: cc-test: phone {a} answered" in phone_box.log(), 5,
                          f"the box's {agent} answered")

    from callcentre.storage.models import CallRow

    rows = await _eventually(
        lambda: _answered_rows(pbx, CallRow), 30, "both calls rows with answered_by")
    by_agent = {r.answered_by: r for r in rows}
    assert set(by_agent) == {"agent3", "agent7"}, [(r.uniqueid, r.answered_by) for r in rows]
    for agent, end in ends.items():
        row = by_agent[agent]
        ring = float(end["_t"]) - float(begins[agent]["_t"])
        print(f"{agent}: rang {ring:.2f} s (AMI), answer_seconds={row.answer_seconds} within_target={row.within_target}")
        # The server measures from the caller's entry into its queue (after the '0') to the answer:
        # at least the ring Asterisk reported, and within the two-ring target (2 x 5 s).
        assert row.answer_seconds is not None and ring - 0.3 <= row.answer_seconds <= ring + 2.5, (agent, ring, row)
        assert row.within_target is True
        assert row.caller_id in {f"+86{n}" for n in callers}
    # Each row is the call of the caller whose channel rang that phone.
    assert by_agent["agent3"].uniqueid == begins["agent3"]["Uniqueid"]
    outer = next(e for e in pbx.ami.find("DialBegin") if e.get("DestChannel", "").startswith("Local/agent7@callcentre-agents-"))
    assert by_agent["agent7"].uniqueid == outer["Uniqueid"]
    assert 2.5 <= float(ends["agent3"]["_t"]) - float(begins["agent3"]["_t"]) <= 5.0  # its phone rings 3 s


async def _answered_rows(pbx: Any, model: Any) -> list[Any]:
    """The calls rows an agent answered, once there are two (CallRow has no ``id`` for ``pbx.rows``)."""
    from sqlalchemy import select

    from callcentre.storage.db import session_factory

    async with session_factory(pbx.engine())() as s:
        rows = list((await s.execute(select(model).where(model.answered_by.is_not(None)))).scalars())
    return rows if len(rows) >= 2 else []
