"""The simulator against the captures recorded by tools/record_captures.py (tests/fixtures/README-captures.md).

AGI: a driver plays the recorder's part against the simulated Asterisk: it writes every ``>>`` of a
capture as it was written (two commands in one write stay one write), triggers the caller's hang-up
where the capture's note says the recorder did, and reads as many lines as the real Asterisk sent
before the next write; where the real one sent nothing for seconds, the simulator must send nothing
either. The transcripts must be equal (channel names and endpos normalised).

AMI: the simulated PBX's event stream for the same dial situations, compared in order and fields
with the recorded AMI side.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from callcentre.sim import AgentScript, AMIServer, CallerScript, SimPBX
from callcentre.sim.pbx import dial_end_status, dialstatus_for_cause
from tests.captures import ami_messages, read_capture

SPEED = 20
QUIET_S = 0.3  # real seconds of silence that stand for the capture's "nothing within N s"


def agi_steps(name: str) -> list[tuple[str, bytes]]:
    """The capture after the environment block: ("write", bytes) / ("read", line) / ("hangup", b"") /
    ("quiet", b"")."""
    steps: list[tuple[str, bytes]] = []
    in_env = True
    for ln in read_capture(name):
        if in_env:
            if ln.tag == "<<" and ln.data == b"\n":
                in_env = False
            continue
        if ln.tag == ">>":
            steps.append(("write", ln.data))
        elif ln.tag == "<<":
            steps.append(("read", ln.data))
        elif b"(the caller hangs up)" in ln.data:
            steps.append(("hangup", b""))
        elif ln.data.startswith(b"nothing within"):
            steps.append(("quiet", b""))
    return steps


def normalise(line: bytes) -> bytes:
    line = re.sub(rb"Local/[a-z0-9]+@[a-z-]+-[0-9a-f]{8};2", b"Local/CHANNEL;2", line)
    return re.sub(rb"endpos=[1-9]\d*", b"endpos=N", line)


async def drive(pbx: SimPBX, name: str, caller: CallerScript,
                hangup_notes: bool = True) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """Run the capture's client side against the simulator; (what we saw, what the capture shows).

    ``hangup_notes=False``: the capture's hang-up notes are left out (the caller script hangs up)."""
    steps = [s for s in agi_steps(name) if hangup_notes or s[0] != "hangup"]
    seen: list[tuple[str, bytes]] = []
    starts = 0
    started = asyncio.Event()

    def on_event(fields: list[tuple[str, str]]) -> None:
        nonlocal starts
        if fields[0] == ("Event", "AGIExecStart"):
            starts += 1
            started.set()

    pbx.subscribe(on_event)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\n", b""):
            k, _, v = line.decode().rstrip("\n").partition(": ")
            env[k] = v
        commands = 0
        for kind, data in steps:
            if kind == "write":
                writer.write(data)
                await writer.drain()
                commands += data.count(b"\n")
                seen.append(("write", data))
            elif kind == "read":
                line = await asyncio.wait_for(reader.readline(), 5)
                seen.append(("read", normalise(line)))
            elif kind == "hangup":
                # as the recorder: the caller hangs up while the last written command runs
                while starts < commands - (1 if commands > 1 and seen[-1][1].count(b"\n") > 1 else 0):
                    started.clear()
                    await asyncio.wait_for(started.wait(), 5)
                ch = pbx.find_channel(env["agi_channel"])
                assert ch is not None
                pbx.request_hangup(ch, 16)
                seen.append(("hangup", b""))
            else:
                try:
                    extra = await asyncio.wait_for(reader.readline(), QUIET_S)
                except TimeoutError:
                    extra = None
                seen.append(("quiet", b"") if extra is None else ("read", normalise(extra)))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pbx.agi_port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.wait_for(pbx.place_call(caller), 20)
    finally:
        server.close()
        await server.wait_closed()
        await pbx.aclose()
    return seen, [(k, normalise(d)) for k, d in steps]


def sim() -> SimPBX:
    pbx = SimPBX(speed=SPEED)
    pbx.core_sounds["tt-monkeys"] = 16.18  # the real file's length (258924 bytes of 8 kHz 16-bit WAV)
    pbx.add_agent(AgentScript("Local/agent8@cc-test-phones", answer_after=None))
    return pbx


def caller(**kw: object) -> CallerScript:
    return CallerScript("13800138000", "Zhang San", script="capture", channel_tech="Local", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [
    "agi-hangup-during-answer.txt",
    "agi-hangup-during-stream-file.txt",
    "agi-hangup-during-stream-file-escape.txt",
    "agi-hangup-during-get-data.txt",
    "agi-hangup-during-get-data-timeout.txt",
    "agi-hangup-during-record-file.txt",
    "agi-hangup-during-record-file-beep.txt",
    "agi-hangup-during-exec-dial.txt",
    "agi-hangup-during-wait-for-digit.txt",
    "agi-hangup-during-wait-for-digit-forever.txt",
])
async def test_hangup_during_a_running_command_matches_capture(name: str) -> None:
    """Reply (``result=-1``) first, ``HANGUP`` after it; then 511 for CHANNEL STATUS, GET VARIABLE
    still answers, and of two commands in one write only the first is answered."""
    seen, want = await drive(sim(), name, caller(silences_before_giving_up=99))
    assert seen == want


@pytest.mark.parametrize("name,index", [
    ("agi-hangup-during-set-variable.txt", 6),
    ("agi-hangup-during-get-variable.txt", 6),
    ("agi-hangup-during-channel-status.txt", 6),
])
async def test_hangup_as_an_instant_command_arrives_matches_capture(name: str, index: int) -> None:
    """The command written as the hang-up lands: ``HANGUP`` first, then the command runs dead
    (CHANNEL STATUS: 511). The sim's ``hangup_between_command_and_reply`` is that moment."""
    steps = agi_steps(name)
    # the capture's own hang-up note is where the recorder sent the AMI Hangup; the HANGUP line
    # shows that it landed on command number ``index`` (ANSWER is 1)
    writes = [d for k, d in steps if k == "write"]
    reads = [d for k, d in steps if k == "read"]
    assert reads.index(b"HANGUP\n") == index - 1 and writes[index - 1].count(b"\n") == 1
    seen, want = await drive(sim(), name, caller(hangup_between_command_and_reply=index), hangup_notes=False)
    assert seen == want


async def test_two_commands_in_one_write_matches_capture() -> None:
    """res_agi answers the second of two commands written at once only when more bytes arrive."""
    seen, want = await drive(sim(), "agi-two-commands-one-write.txt", caller())
    assert seen == want
    assert want[2:6] == [("write", b"GET VARIABLE CALLERID(num)\nGET VARIABLE CALLERID(name)\n"),
                         ("read", b"200 result=1 (13800138000)\n"), ("quiet", b""),
                         ("write", b"GET VARIABLE CHANNEL(name)\n")]


async def test_answer_on_local_matches_capture() -> None:
    seen, want = await drive(sim(), "agi-answer-local.txt", caller())
    assert seen == want
    assert [d for k, d in want if k == "read"][:5] == [b"200 result=4\n", b"200 result=0\n", b"200 result=6\n",
                                                        b"200 result=0\n", b"200 result=0\n"]


async def test_dial_unreachable_replies_match_capture() -> None:
    """EXEC Dial answers 200 result=0 for every unreachable destination; DIALSTATUS and HANGUPCAUSE
    as recorded (CHANUNAVAIL 20 / 66, NOANSWER after a dead SIP peer's timeout, BUSY / CONGESTION 0)."""
    pbx = sim()
    pbx.add_agent(AgentScript("SIP/deadpeer", answer_after=None, rings=False))
    pbx.add_agent(AgentScript("Local/agent7@cc-test-phones", busy=True))
    pbx.add_agent(AgentScript("Local/agent9@cc-test-phones", congested=True))
    seen, want = await drive(pbx, "agi-dial-unreachable.txt", caller())
    assert seen == want


def test_cause_mappings_match_captures() -> None:
    """DialEnd vs DIALSTATUS for a leg that hung up unanswered with cause 0 (AMI Hangup without Cause)."""
    end = next(m for m in ami_messages("ami-ami-hangup-ringing-leg.txt")
               if m.get("Event") == "DialEnd" and m["DestChannel"].startswith("Local/agent8"))
    status = [m for m in ami_messages("ami-ami-hangup-ringing-leg.txt")
              if m.get("Event") == "VarSet" and m.get("Variable") == "DIALSTATUS" and m["Value"]]
    assert (end["DialStatus"], status[-1]["Value"]) == (dial_end_status(0), dialstatus_for_cause(0))
    assert dialstatus_for_cause(17) == "BUSY" and dialstatus_for_cause(19) == "NOANSWER"


# ---------------------------------------------------------------- AMI side

CALL = ("Event", "Channel", "DestChannel", "DialStatus", "Cause", "Variable", "Value")


def shape(msgs: list[dict[str, str]], agent_prefix: str) -> list[tuple[str, ...]]:
    """The dial-relevant events of one call, channel names reduced to their role."""
    def role(name: str) -> str:
        if name.startswith(agent_prefix):
            return "agent" + name[-2:]
        if name.startswith("SIP/"):
            return name.split("-")[0]
        if name.startswith("Local/") and name.endswith(";2") and "@cc-test" not in name and "@sim-" not in name:
            return "caller"
        return name.split("-")[0] + name[-2:] if name.startswith("Local/") else name

    out = []
    for m in msgs:
        ev = m.get("Event")
        if ev in ("DialBegin", "DialState", "DialEnd") and "Channel" in m:  # not the Originate's own dial
            out.append((ev, role(m["Channel"]), role(m["DestChannel"]), m.get("DialStatus", "")))
        elif ev in ("Newchannel", "Hangup", "HangupRequest", "SoftHangupRequest") and (
                m["Channel"].startswith(agent_prefix) or m["Channel"].startswith("SIP/")):
            out.append((ev, role(m["Channel"]), m.get("Cause", "")))
        elif ev == "VarSet" and m.get("Variable") == "DIALSTATUS" and m["Value"]:
            out.append((ev, m["Value"]))
    return out


async def sim_events(pbx: SimPBX, commands: list[str], during=None) -> list[dict[str, str]]:
    """Run ``commands`` (ANSWER, EXEC Dial …) in a simulated call; ``during(pbx, events)`` runs
    concurrently (e.g. an AMI Hangup of the ringing leg); the PBX's events as dicts."""
    events: list[dict[str, str]] = []
    pbx.subscribe(lambda f: events.append(dict(f)))

    async def agi(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\n", b""):
            pass
        for cmd in commands:
            writer.write(cmd.encode() + b"\n")
            await writer.drain()
            await reader.readline()
        writer.close()

    server = await asyncio.start_server(agi, "127.0.0.1", 0)
    pbx.agi_port = server.sockets[0].getsockname()[1]
    task = asyncio.ensure_future(during(pbx, events)) if during else None
    try:
        await asyncio.wait_for(pbx.place_call(caller()), 20)
    finally:
        if task is not None:
            await task
        server.close()
        await server.wait_closed()
        await pbx.aclose()
    return events


def captured_call(name: str) -> list[dict[str, str]]:
    return [m for m in ami_messages(name) if "Event" in m]


@pytest.mark.parametrize("half,cause,name", [
    ("1", 0, "ami-ami-hangup-ringing-leg.txt"),
    ("2", 0, "ami-ami-hangup-ringing-phone.txt"),
    ("1", 16, "ami-ami-hangup-ringing-leg-cause16.txt"),
])
async def test_ami_hangup_of_ringing_leg_matches_capture(half: str, cause: int, name: str) -> None:
    """Without Cause: DialEnd NOANSWER but DIALSTATUS CHANUNAVAIL; with Cause 16 both NOANSWER; the
    legs' events in the recorded order."""
    pbx = sim()
    server = AMIServer(pbx, "callcentre", "x")

    ringing = asyncio.Event()
    pbx.subscribe(lambda f: ringing.set() if f[0] == ("Event", "DialState") else None)

    async def hang(pbx: SimPBX, events: list[dict[str, str]]) -> None:
        await asyncio.wait_for(ringing.wait(), 10)
        dest = next(e for e in events if e["Event"] == "DialState")["DestChannel"]
        target = pbx.find_channel(dest[:-1] + half)
        assert target is not None
        pbx.manager_hangup(target, cause)  # what AMIServer's Hangup action does (no Cause header: 0)
        await asyncio.sleep(0.1)
        ch = next(c for c in pbx.channels.values() if c.name.endswith(";2") and "@hotline-in" in c.name)
        pbx.request_hangup(ch, 16)

    events = await sim_events(pbx, ["ANSWER", "EXEC Dial Local/agent8@cc-test-phones/n,30",
                                    "GET VARIABLE DIALSTATUS"], hang)
    await server.stop()
    got = shape(events, "Local/agent8@cc-test-phones-")
    want = shape(captured_call(name), "Local/agent8@cc-test-phones-")
    assert got == want


async def test_dial_unreachable_events_match_capture() -> None:
    """No DialBegin/DialEnd for a missing peer, technology, context or extension; a Local pair
    appears and is hung up at once; a dead SIP peer: DialBegin and DialEnd NOANSWER at the timeout."""
    pbx = sim()
    pbx.add_agent(AgentScript("SIP/deadpeer", answer_after=None, rings=False))
    pbx.add_agent(AgentScript("Local/agent7@cc-test-phones", busy=True))
    pbx.add_agent(AgentScript("Local/agent9@cc-test-phones", congested=True))
    dials = ["SIP/nobody,5", "Local/x@nonexistent-context,5", "Local/nosuchexten@cc-test-phones,5",
             "SIP/deadpeer,5", "Local/agent9@cc-test-phones/n,5", "Local/agent7@cc-test-phones/n,5",
             "NoSuchTech/foo,5"]
    events = await sim_events(pbx, ["ANSWER"] + [f"EXEC Dial {d}" for d in dials])
    cap = captured_call("ami-dial-unreachable.txt")

    def unreach(msgs: list[dict[str, str]]) -> list[tuple[str, ...]]:
        out = []
        for m in msgs:
            ev, chan = m.get("Event"), m.get("Channel", "")
            if ev in ("DialBegin", "DialState", "DialEnd") and "Channel" in m:  # not the Originate's own dial
                out.append((ev, m["DestChannel"].split("-")[0], m["DialStatus"] if ev != "DialBegin" else ""))
            elif ev in ("Newchannel", "Hangup", "HangupRequest", "SoftHangupRequest") and (
                    "@capture-agi" not in chan and "@hotline-in" not in chan):
                out.append((ev, chan.split("-0")[0] + chan[-2:] * chan.startswith("Local/"), m.get("Cause", "")))
            elif ev == "Newexten" and m.get("Application") == "AppDial":
                out.append((ev, chan.split("-0")[0] + chan[-2:] * chan.startswith("Local/")))
            elif ev == "VarSet" and m.get("Variable") == "DIALSTATUS" and m["Value"]:
                out.append((ev, m["Value"]))
        return out

    got, want = unreach(events), unreach(cap)
    assert got == want
    assert not any(e[0] == "DialBegin" and e[1] in ("SIP/nobody", "Local/x@nonexistent", "Local/nosuchexten@cc")
                   for e in want)


async def test_caller_hangup_during_exec_dial_events_match_capture() -> None:
    """The handset (;1) hung up by AMI during EXEC Dial: HangupRequest ;2 and Hangup ;1 with Cause 0,
    DialEnd CANCEL, the agent legs with 16, DIALSTATUS CANCEL, AGISTATUS HANGUP, Hangup ;2 Cause 0."""
    pbx = sim()
    ringing = asyncio.Event()
    pbx.subscribe(lambda f: ringing.set() if f[0] == ("Event", "DialState") else None)

    async def hang(pbx: SimPBX, events: list[dict[str, str]]) -> None:
        await asyncio.wait_for(ringing.wait(), 10)
        handset = next(c for c in pbx.channels.values() if c.name.endswith(";1") and "@hotline-in" in c.name)
        pbx.manager_hangup(handset, 0)  # AMI Hangup without Cause

    events = await sim_events(pbx, ["ANSWER", "EXEC Dial Local/agent8@cc-test-phones/n,30", "CHANNEL STATUS"], hang)

    def calls(msgs: list[dict[str, str]]) -> list[tuple[str, ...]]:
        def role(name: str) -> str:
            return ("agent" if "@cc-test-phones" in name else "caller") + name[-2:]

        out: list[tuple[str, ...]] = []
        for m in msgs:
            ev = m.get("Event")
            if ev == "DialBegin" and "Channel" in m:
                out = []  # from the EXEC Dial on (the Originate of the recording is not the sim's)
            if ev in ("DialBegin", "DialState", "DialEnd") and "Channel" in m:
                out.append((ev, role(m["DestChannel"]), m.get("DialStatus", "")))
            elif ev in ("HangupRequest", "SoftHangupRequest", "Hangup"):
                out.append((ev, role(m["Channel"]), m["Cause"]))
            elif ev == "VarSet" and m["Variable"] in ("DIALSTATUS", "AGISTATUS") and m["Value"]:
                out.append((ev, m["Variable"], m["Value"]))
        return out

    got, want = calls(events), calls(captured_call("ami-hangup-during-exec-dial.txt"))
    assert got == want
    assert ("DialEnd", "agent;1", "CANCEL") in want and ("Hangup", "caller;2", "0") == want[-1]
