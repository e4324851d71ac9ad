"""The simulated AMI server, compared with the real Asterisk captures (tests/fixtures/ami-*.txt)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from callcentre.sim import AgentScript, AMIServer, Callee, CallerScript, DialplanEntry, Hangup, SimPBX
from tests.captures import ami_messages, from_asterisk

SECRET = "verify-secret"
LOGIN = b"Action: Login\r\nActionID: login-1\r\nUsername: callcentre\r\nSecret: verify-secret\r\n\r\n"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def message(self, wait_s: float = 3) -> bytes:
        data = b""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), wait_s)
            if not line:
                raise EOFError(data)
            data += line
            if line == b"\r\n":
                return data

    async def until(self, pred, wait_s: float = 3) -> dict[str, str]:
        while True:
            msg = parse(await self.message(wait_s))
            if pred(msg):
                return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def parse(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode().split("\r\n"):
        if line:
            k, _, v = line.partition(": ")
            out[k] = v
    return out


def keys_of(capture: str, event: str, **match: str) -> list[str]:
    for m in ami_messages(capture):
        if m.get("Event") == event and all(m.get(k) == v for k, v in match.items()):
            return list(m)
    raise AssertionError(f"{event} not in {capture}")


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimPBX, AMIServer]]:
    pbx = SimPBX(speed=50)
    server = AMIServer(pbx, "callcentre", SECRET)
    await server.start()
    try:
        yield pbx, server
    finally:
        await server.stop()
        await pbx.aclose()


async def connect(server: AMIServer, login: bool = True) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    c = Client(reader, writer)
    assert await reader.readline() == b"Asterisk Call Manager/9.0.0\r\n"
    if login:
        await c.send(LOGIN)
        assert await c.message() == b"Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n"
        booted = parse(await c.message())
        assert list(booted) == list(ami_messages("ami-ivr-commands.txt")[1])
        auth = parse(await c.message())
        assert list(auth) == list(ami_messages("ami-ivr-commands.txt")[2])
    return c


async def test_login_matches_capture(sim) -> None:
    _, server = sim
    c = await connect(server)
    assert server.actions_named("Login")[0].get("Username") == "callcentre"
    await c.close()


async def test_bad_login_is_byte_exact_then_closed(sim) -> None:
    _, server = sim
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"Action: Login\r\nActionID: login-1\r\nUsername: callcentre\r\nSecret: wrong\r\n\r\n")
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 3)  # until EOF: Asterisk closes the connection
    assert got == from_asterisk("ami-bad-login.txt")
    writer.close()


async def test_ping_unknown_action_and_originate_without_channel(sim) -> None:
    _, server = sim
    c = await connect(server)
    await c.send(b"Action: Ping\r\nActionID: ping-1\r\n\r\n")
    assert re.fullmatch(rb"Response: Success\r\nActionID: ping-1\r\nPing: Pong\r\nTimestamp: \d+\.\d{6}\r\n\r\n",
                        await c.message())
    captured = from_asterisk("ami-queue-abandon-and-errors.txt")
    await c.send(b"Action: NoSuchAction\r\nActionID: bad-1\r\n\r\n")
    reply = await c.message()
    assert reply in captured and reply.startswith(b"Response: Error\r\nActionID: bad-1\r\nMessage: Invalid/unknown")
    await c.send(b"Action: Originate\r\nActionID: bad-2\r\n\r\n")
    reply = await c.message()
    assert reply == b"Response: Error\r\nActionID: bad-2\r\nMessage: Channel not specified\r\n\r\n" and reply in captured
    assert [a.name for a in server.actions] == ["Login", "Ping", "NoSuchAction", "Originate"]
    server.reset_actions()
    assert server.actions == []
    await c.close()


async def test_originate_outcomes_match_capture(sim) -> None:
    pbx, server = sim
    pbx.add_agent(AgentScript("Local/agent2@sim-agents", answer_after=None))
    pbx.add_callee("Local/busy@capture-callback", Callee(busy=True))
    pbx.add_callee("Local/agent1@sim-agents",
                   Callee(answer_after=2, script=CallerScript("", inputs=[Hangup()])))
    pbx.add_dialplan("capture-callback", "survey", DialplanEntry("survey", ("${TICKET}",)))
    seen: list[str] = []
    env: dict[str, str] = {}

    async def agi(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (line := (await reader.readline()).decode()) not in ("\n", ""):
            k, _, v = line.rstrip("\n").partition(": ")
            env[k] = v
        for cmd in ("GET VARIABLE TICKET", 'STREAM FILE beep ""', "WAIT FOR DIGIT 3000"):
            writer.write(cmd.encode() + b"\n")
            seen.append((await reader.readline()).decode())
        seen.append((await reader.readline()).decode())
        writer.close()

    agi_server = await asyncio.start_server(agi, "127.0.0.1", 0)
    pbx.agi_port = agi_server.sockets[0].getsockname()[1]
    c = await connect(server)
    cap = {m["ActionID"]: m for m in ami_messages("ami-originate-outcomes.txt") if m.get("Event") == "OriginateResponse"}
    for aid, chan, extra in [
        ("cb-noanswer", "Local/agent2@sim-agents", b'CallerID: "Property Service" <95000>\r\n'),
        ("cb-busy", "Local/busy@capture-callback", b""),
        ("cb-nosuch", "Local/nosuchexten@capture-callback", b""),
        ("cb-answered", "Local/agent1@sim-agents",
         b'CallerID: "Property Service" <95000>\r\nVariable: TICKET=T20261122-0001\r\n'),
    ]:
        await c.send(b"Action: Originate\r\nActionID: " + aid.encode() + b"\r\nChannel: " + chan.encode()
                     + b"\r\nContext: capture-callback\r\nExten: survey\r\nPriority: 1\r\nTimeout: 6000\r\n"
                     + extra + b"Async: true\r\n\r\n")
        queued = await c.until(lambda m, aid=aid: m.get("ActionID") == aid and "Event" not in m)
        assert list(queued.items()) == [("Response", "Success"), ("ActionID", aid),
                                        ("Message", "Originate successfully queued")]
        got = await c.until(lambda m: m.get("Event") == "OriginateResponse")
        want = cap[aid]
        assert list(got) == list(want)
        for key in ("ActionID", "Response", "Reason", "Context", "Exten", "CallerIDNum", "CallerIDName"):
            assert got[key] == want[key], key
        if want["Uniqueid"] == "<unknown>":
            assert got["Uniqueid"] == "<unknown>" and got["Channel"] == chan
        else:
            assert re.fullmatch(r"Local/agent1@sim-agents-[0-9a-f]{8};1", got["Channel"])
    await c.until(lambda m: m.get("Event") == "VarSet" and m.get("Variable") == "AGISTATUS")
    assert env["agi_arg_1"] == "T20261122-0001" and env["agi_extension"] == "survey"
    assert env["agi_channel"].endswith(";1") and env["agi_callerid"] == "95000"
    assert seen == ["200 result=1 (T20261122-0001)\n", "200 result=0 endpos=3404\n", "200 result=-1\n", "HANGUP\n"]
    await c.send(b"Action: Originate\r\nActionID: cb-sync\r\nChannel: Local/busy@capture-callback\r\n"
                 b"Application: Wait\r\nData: 1\r\nTimeout: 4000\r\n\r\n")
    sync = await c.until(lambda m: m.get("ActionID") == "cb-sync" and "Response" in m and "Event" not in m)
    assert list(sync.items()) == [("Response", "Error"), ("ActionID", "cb-sync"), ("Message", "Originate failed")]
    await c.close()
    agi_server.close()
    await agi_server.wait_closed()


async def _tiny_dialer(dial: str, done: asyncio.Event):
    async def agi(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\n", b""):
            pass
        for cmd in ("ANSWER", f"EXEC Dial {dial}", "GET VARIABLE DIALSTATUS", "SET VARIABLE CC_RESULT done"):
            writer.write(cmd.encode() + b"\n")
            await reader.readline()
        writer.close()
        done.set()

    return await asyncio.start_server(agi, "127.0.0.1", 0)


async def test_dial_events_order_and_fields_match_capture(sim) -> None:
    pbx, server = sim
    pbx.add_agent(AgentScript("Local/agent1@sim-agents", answer_after=3, talk_seconds=4))
    done = asyncio.Event()
    agi_server = await _tiny_dialer("Local/agent1@sim-agents/n,10", done)
    pbx.agi_port = agi_server.sockets[0].getsockname()[1]
    c = await connect(server)
    call = asyncio.ensure_future(pbx.place_call(CallerScript("02888881234", "Li Si", channel_tech="Local")))
    events: list[dict[str, str]] = []
    while not any(e.get("Event") == "Hangup" and e["Channel"].startswith("Local/8000") and e["Channel"].endswith(";2")
                  for e in events):
        events.append(parse(await c.message()))
    result = await call
    names = [e["Event"] for e in events if e["Event"] in ("DialBegin", "DialState", "DialEnd", "BridgeEnter",
                                                           "BridgeLeave", "BridgeDestroy")]
    assert names == ["DialBegin", "DialState", "DialEnd", "BridgeEnter", "BridgeEnter", "BridgeLeave",
                     "BridgeLeave", "BridgeDestroy"]
    by = {e["Event"]: e for e in events if e["Event"] in ("DialBegin", "DialState", "DialEnd", "BridgeCreate")}
    cap = "ami-dial-agents.txt"
    assert list(by["DialBegin"]) == keys_of(cap, "DialBegin", DialString="agent1@sim-agents/n")
    assert list(by["DialState"]) == keys_of(cap, "DialState")
    assert list(by["DialEnd"]) == keys_of(cap, "DialEnd", DialStatus="ANSWER", DestExten="")
    assert list(by["BridgeCreate"]) == keys_of(cap, "BridgeCreate")
    assert by["DialEnd"]["DialStatus"] == "ANSWER" and by["DialBegin"]["DestContext"] == "sim-agents"
    assert by["DialBegin"]["DestCallerIDNum"] == "8000" and by["DialBegin"]["DestConnectedLineNum"] == "02888881234"
    for e in events:
        if "Channel" in e and "Uniqueid" in e and e["Event"] not in ("CoreShowChannel",):
            assert list(e)[:16] == ["Event", "Privilege", "Channel", "ChannelState", "ChannelStateDesc",
                                    "CallerIDNum", "CallerIDName", "ConnectedLineNum", "ConnectedLineName",
                                    "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid",
                                    "Linkedid"] or e["Event"].startswith("Bridge")
    assert result.variables["DIALSTATUS"] == "ANSWER" and not result.fallback_queue
    await c.close()
    agi_server.close()
    await agi_server.wait_closed()


async def test_ami_hangup_of_ringing_agent_ends_dial(sim) -> None:
    pbx, server = sim
    pbx.add_agent(AgentScript("SIP/agent3", answer_after=None))
    done = asyncio.Event()
    agi_server = await _tiny_dialer("SIP/agent3,60", done)
    pbx.agi_port = agi_server.sockets[0].getsockname()[1]
    c = await connect(server)
    call = asyncio.ensure_future(pbx.place_call(CallerScript("13800138000", "Zhang San")))
    state = await c.until(lambda m: m.get("Event") == "DialState")
    assert re.fullmatch(r"SIP/agent3-[0-9a-f]{8}", state["DestChannel"])
    await c.send(b"Action: CoreShowChannels\r\nActionID: csc-1\r\n\r\n")
    await c.until(lambda m: m.get("EventList") == "start")
    item = await c.until(lambda m: m.get("Event") == "CoreShowChannel")
    assert list(item) == keys_of("ami-dial-agents.txt", "CoreShowChannel")
    await c.until(lambda m: m.get("Event") == "CoreShowChannelsComplete")
    await c.send(b"Action: Hangup\r\nActionID: h-1\r\nChannel: " + state["DestChannel"].encode() + b"\r\n\r\n")
    end = await c.until(lambda m: m.get("Event") == "DialEnd")
    assert end["DialStatus"] == "NOANSWER" and end["DestChannel"] == state["DestChannel"]
    result = await asyncio.wait_for(call, 3)
    # An AMI Hangup without Cause ends the leg with cause 0: DialEnd says NOANSWER, DIALSTATUS is
    # CHANUNAVAIL (recorded for a Local leg in ami-ami-hangup-ringing-leg.txt; app_dial's cause
    # handling does not depend on the technology, so a SIP leg is taken to behave the same).
    assert result.variables["DIALSTATUS"] == "CHANUNAVAIL"
    await c.close()
    agi_server.close()
    await agi_server.wait_closed()


async def test_restart_shutdown_eof_refusal_then_uptime_zero(sim) -> None:
    _, server = sim
    c = await connect(server)
    await server.restart(down_seconds=0.3)
    assert await c.message() == b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: True\r\n\r\n"
    assert await asyncio.wait_for(c.reader.read(), 3) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)
    await server.wait_running()
    c2 = await connect(server, login=False)
    await c2.send(LOGIN.replace(b"login-1", b"login-2"))
    await c2.message()
    booted = parse(await c2.message())
    assert booted["Event"] == "FullyBooted" and booted["Uptime"] == "0" and booted["LastReload"] == "0"
    await c2.close()
    await c.close()


async def test_half_open_and_drop_clients(sim) -> None:
    _, server = sim
    c = await connect(server)
    server.half_open(True)
    await c.send(b"Action: Ping\r\nActionID: p1\r\n\r\n")
    with pytest.raises(asyncio.TimeoutError):
        await c.message(wait_s=0.3)
    server.half_open(False)
    await c.send(b"Action: Ping\r\nActionID: p2\r\n\r\n")
    assert parse(await c.message())["ActionID"] == "p2"
    await server.drop_clients()
    with pytest.raises((EOFError, ConnectionError)):
        await c.message()
    await c.close()


async def test_status_and_queue_lists_end_with_complete(sim) -> None:
    _, server = sim
    c = await connect(server)
    await c.send(b"Action: Status\r\nActionID: status-1\r\n\r\n")
    assert parse(await c.message()) == {"Response": "Success", "ActionID": "status-1", "EventList": "start",
                                        "Message": "Channel status will follow"}
    assert parse(await c.message()) == {"Event": "StatusComplete", "ActionID": "status-1", "EventList": "Complete",
                                        "ListItems": "0", "Items": "0"}
    await c.send(b"Action: QueueStatus\r\nActionID: qs-1\r\n\r\n")
    await c.message()
    params = parse(await c.message())
    assert list(params) == keys_of("ami-queue-abandon-and-errors.txt", "QueueParams")
    assert parse(await c.message())["Event"] == "QueueStatusComplete"
    await c.send(b"Action: BridgeList\r\nActionID: bl\r\n\r\n")
    assert parse(await c.message())["Message"] == "Bridge listing will follow"
    assert parse(await c.message()) == {"Event": "BridgeListComplete", "ActionID": "bl", "EventList": "Complete",
                                        "ListItems": "0"}
    await c.close()
