"""The simulator's FastAGI client against a tiny FastAGI server written here, compared with the
real Asterisk captures (tests/fixtures/agi-*.txt)."""

from __future__ import annotations

import asyncio
import re
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from callcentre.sim import AgentScript, CallEnd, CallerScript, Hangup, Record, SimPBX, Silence
from callcentre.sim.agi_client import parse_args
from tests.captures import read_capture

Script = Callable[["MiniAGI", dict[str, str]], Awaitable[None]]


class MiniAGI:
    """A tiny FastAGI server: reads the env block, runs one scripted list of commands, records
    every line the simulated Asterisk sent (``HANGUP`` lines included, in order)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.env: dict[str, str] = {}
        self.env_keys: list[str] = []
        self.received: list[str] = []
        self.done = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        try:
            while True:
                line = (await reader.readline()).decode()
                if line in ("\n", ""):
                    break
                key, _, value = line.rstrip("\n").partition(": ")
                self.env_keys.append(key)
                self.env[key] = value
            await self.script(self, self.env)
        finally:
            writer.close()
            self.done.set()

    async def line(self) -> str:
        assert self.reader is not None
        text = (await asyncio.wait_for(self.reader.readline(), 3)).decode()
        self.received.append(text)
        return text

    async def cmd(self, command: str) -> str:
        """Send one command; return its reply (a ``HANGUP`` line before it is recorded, skipped)."""
        assert self.writer is not None
        self.received.append(">> " + command)
        self.writer.write((command + "\n").encode())
        await self.writer.drain()
        reply = await self.line()
        while reply == "HANGUP\n":
            reply = await self.line()
        if reply.startswith("520-"):
            while not reply.startswith("520 "):
                reply = await self.line()
        return reply


def capture_transcript(name: str) -> tuple[list[str], list[str]]:
    """(env keys in order, the command/reply transcript after the env block) from a capture."""
    keys: list[str] = []
    transcript: list[str] = []
    in_env = True
    for ln in read_capture(name):
        text = ln.data.decode()
        if ln.tag == "--":
            continue
        if in_env and ln.tag == "<<":
            if text == "\n":
                in_env = False
            else:
                keys.append(text.split(":")[0])
            continue
        transcript.append((">> " + text.rstrip("\n")) if ln.tag == ">>" else text)
    return keys, transcript


async def run_call(pbx: SimPBX, script: Script, caller: CallerScript):
    agi = MiniAGI(script)
    pbx.agi_port = await agi.start()
    try:
        result = await asyncio.wait_for(pbx.place_call(caller), 4)
    finally:
        await agi.close()
        await pbx.aclose()
    return agi, result


def test_parse_args_like_res_agi() -> None:
    assert parse_args('SET VARIABLE CC_TEST "hello world"') == ["SET", "VARIABLE", "CC_TEST", "hello world"]
    assert parse_args('STREAM FILE welcome ""') == ["STREAM", "FILE", "welcome", ""]
    assert parse_args('SET VARIABLE X "say \\"hi\\""') == ["SET", "VARIABLE", "X", 'say "hi"']
    assert parse_args("SET VARIABLE X a\\ b") == ["SET", "VARIABLE", "X", "a b"]
    assert parse_args('EXEC Dial   "Local/a@b,10"') == ["EXEC", "Dial", "Local/a@b,10"]
    assert parse_args("GET  DATA\tbeep") == ["GET", "DATA", "beep"]


async def test_ivr_commands_replay_matches_capture(tmp_path: Path) -> None:
    """Every reply (and the unsolicited HANGUP) of agi-ivr-commands.txt, byte for byte."""
    keys, transcript = capture_transcript("agi-ivr-commands.txt")
    commands = [t[3:] for t in transcript if t.startswith(">> ")]
    pbx = SimPBX(speed=200, prompt_dir=tmp_path)

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        for command in commands:
            await agi.cmd(command)
            if command.startswith("SET MUSIC ON"):
                ch = pbx.find_channel(env["agi_channel"])
                assert ch is not None
                pbx.request_hangup(ch)  # the caller hangs up while music plays and the script is idle
                assert await agi.line() == "HANGUP\n"

    caller = CallerScript("13800138000", "Zhang San", script="capture", channel_tech="Local",
                          inputs=[Silence(), "12", Silence(), Silence()], agi_args=("arg one", "arg2"))
    agi, result = await run_call(pbx, script, caller)
    assert agi.env_keys == keys
    assert agi.received == transcript
    assert agi.env["agi_arg_1"] == "arg one" and agi.env["agi_version"] == "20.20.1"
    assert agi.env["agi_channel"].startswith("Local/8000@hotline-in-") and agi.env["agi_channel"].endswith(";2")
    assert agi.env["agi_type"] == "Local" and agi.env["agi_callerid"] == "13800138000"
    assert result.ended is CallEnd.CALLER_HUNG_UP
    assert result.agi_status == "FAILURE"  # as the capture: EXEC Dial failed on the dead channel
    assert result.commands == commands


async def test_dial_agents_replay_matches_capture() -> None:
    _, transcript = capture_transcript("agi-dial-agents.txt")
    commands = [t[3:] for t in transcript if t.startswith(">> ")]
    pbx = SimPBX(speed=50)
    pbx.add_agent(AgentScript("Local/agent2@sim-agents", answer_after=None))
    pbx.add_agent(AgentScript("Local/agent1@sim-agents", answer_after=3, talk_seconds=4))

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        for command in commands:
            await agi.cmd(command)

    caller = CallerScript("02888881234", "Li Si", script="connect", channel_tech="Local", inputs=["4"])
    agi, _ = await run_call(pbx, script, caller)
    got = agi.received
    assert len(got) == len(transcript)
    for mine, theirs in zip(got, transcript, strict=True):
        if "ANSWEREDTIME" in theirs or "DIALEDTIME" in theirs or theirs.startswith("200 result=1 (15)"):
            continue
        if theirs.startswith("200 result=1 (Local/agent1@sim-agents-"):
            assert re.fullmatch(r"200 result=1 \(Local/agent1@sim-agents-[0-9a-f]{8};1\)\n", mine)
            continue
        assert mine == theirs
    assert re.fullmatch(r"200 result=1 \(\d+\)\n", got[got.index(">> GET VARIABLE ANSWEREDTIME") + 1])


async def test_hangup_between_command_and_reply() -> None:
    """agi-sip-call.txt: GET VARIABLE -> HANGUP -> 200 result=1 (...); then 511 for media commands."""
    pbx = SimPBX(speed=100)

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        await agi.cmd("ANSWER")
        await agi.cmd("GET VARIABLE CALLERID(num)")
        await agi.cmd('STREAM FILE beep ""')
        await agi.cmd("GET VARIABLE CALLERID(num)")

    caller = CallerScript("13800138000", "Zhang San", script="sipconnect", channel_tech="SIP",
                          hangup_between_command_and_reply=2)
    agi, result = await run_call(pbx, script, caller)
    assert agi.received == [
        ">> ANSWER", "200 result=0\n",
        ">> GET VARIABLE CALLERID(num)", "HANGUP\n", "200 result=1 (13800138000)\n",
        '>> STREAM FILE beep ""', "511 Command Not Permitted on a dead channel or intercept routine\n",
        ">> GET VARIABLE CALLERID(num)", "200 result=1 (13800138000)\n",
    ]
    assert agi.env["agi_channel"].startswith("SIP/owner-phone-") and agi.env["agi_type"] == "SIP"
    assert agi.env["agi_dnid"] == "8000"
    assert result.ended is CallEnd.CALLER_HUNG_UP and result.agi_status == "HANGUP"


async def test_hangup_during_wait_for_digit_replies_then_hangup_line() -> None:
    """agi-callback-survey.txt: WAIT FOR DIGIT -> 200 result=-1, then HANGUP."""
    pbx = SimPBX(speed=100)

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        await agi.cmd("WAIT FOR DIGIT 3000")
        await agi.line()

    caller = CallerScript("95000", "Property Service", channel_tech="PJSIP", inputs=[Hangup()])
    agi, _ = await run_call(pbx, script, caller)
    assert agi.received == [">> WAIT FOR DIGIT 3000", "200 result=-1\n", "HANGUP\n"]
    assert agi.env["agi_type"] == "PJSIP"


async def test_reading_commands_consume_inputs(tmp_path: Path) -> None:
    pbx = SimPBX(speed=200, record_dir=tmp_path)

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        await agi.cmd('STREAM FILE beep "123"')
        await agi.cmd("GET DATA beep 3000 6")
        await agi.cmd("GET DATA beep 3000 2")
        await agi.cmd("WAIT FOR DIGIT 1000")
        await agi.cmd(f"RECORD FILE {tmp_path}/msg wav # 10000 0 BEEP s=3")
        await agi.cmd('SAY DIGITS 12 "5"')
        await agi.cmd("SET MUSIC ON default")
        await agi.cmd("SET MUSIC OFF")
        await agi.cmd("CHANNEL STATUS")
        await agi.cmd("EXEC Playback beep")
        await agi.cmd("SET VARIABLE CALLERID(num) 555")
        await agi.cmd("GET FULL VARIABLE ${CALLERID(num)}-${NOPE}")
        await agi.cmd("NO SUCH COMMAND")
        await agi.cmd("GET VARIABLE")
        await agi.cmd("SET VARIABLE CC_RESULT done")

    caller = CallerScript("13800138000", inputs=["2", "1201#", "789", Record(2, "#"), "5"])
    agi, result = await run_call(pbx, script, caller)
    replies = [r for r in agi.received if not r.startswith(">> ")]
    assert replies[:12] == [
        "200 result=50 endpos=1702\n",  # '2' interrupts the prompt half-way: ASCII code
        "200 result=1201\n",  # '#' ends entry
        "200 result=78\n",  # max digits reached; the '9' stays buffered
        "200 result=57\n",  # the buffered '9'
        "200 result=35 (dtmf) endpos=16000\n",
        "200 result=53\n",  # '5' is an escape digit of SAY DIGITS
        "200 result=0\n", "200 result=0\n",
        "200 result=4\n",  # CHANNEL STATUS: never answered, still Ring
        "200 result=0\n", "200 result=1\n",
        "200 result=1 (555-)\n",
    ]
    assert replies[12] == "510 Invalid or unknown command\n"
    assert replies[13:16] == [
        "520-Invalid command syntax.  Proper usage follows:\n",
        "Usage: GET VARIABLE <variablename>\n",
        "520 End of proper usage.\n",
    ]
    with wave.open(str(tmp_path / "msg.wav")) as w:
        assert w.getframerate() == 8000 and w.getnframes() > 0
    assert result.cc_result == "done" and not result.fallback_queue
    assert result.ended is CallEnd.SCRIPT_ENDED and result.agi_status == "SUCCESS"


async def test_agi_unreachable_runs_fallback_queue() -> None:
    pbx = SimPBX(speed=100)
    events: list[dict[str, str]] = []
    pbx.subscribe(lambda f: events.append(dict(f)))
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    pbx.agi_port = port
    result = await asyncio.wait_for(pbx.place_call(CallerScript("anonymous", queue_patience=1)), 4)
    await pbx.aclose()
    assert result.ended is CallEnd.FALLBACK_ABANDONED and result.fallback_queue
    assert result.agi_status == "FAILURE"
    names = [e["Event"] for e in events]
    varset = next(e for e in events if e["Event"] == "VarSet" and e["Variable"] == "AGISTATUS")
    assert varset["Value"] == "FAILURE"
    assert names.index("QueueCallerJoin") < names.index("QueueCallerAbandon") < names.index("Hangup")
    assert next(e for e in events if e["Event"] == "QueueCallerJoin")["Queue"] == "hotline-fallback"


async def test_script_without_cc_result_goes_to_fallback_queue() -> None:
    pbx = SimPBX(speed=100)

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        await agi.cmd("ANSWER")

    agi, result = await run_call(pbx, script, CallerScript("13800138000", queue_patience=1))
    assert result.fallback_queue and result.agi_status == "SUCCESS" and result.cc_result is None


@pytest.mark.parametrize("inputs,expected", [([Silence()], "200 result= (timeout)\n"), (["12"], "200 result=12 (timeout)\n")])
async def test_get_data_timeouts(inputs: list, expected: str) -> None:
    pbx = SimPBX(speed=200)

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        await agi.cmd("GET DATA beep 2000 4")

    agi, _ = await run_call(pbx, script, CallerScript("1", inputs=inputs))
    assert agi.received[-1] == expected


async def test_runner_places_calls_and_summarises() -> None:
    from callcentre.sim.runner import CallKind, run

    async def script(agi: MiniAGI, env: dict[str, str]) -> None:
        await agi.cmd("ANSWER")
        await agi.cmd("GET DATA beep 2000 1")
        await agi.cmd("SET VARIABLE CC_RESULT done")

    agi = MiniAGI(script)
    port = await agi.start()
    lines: list[str] = []
    ami_ports: list[int] = []
    try:
        summary = await asyncio.wait_for(
            run(0, "127.0.0.1", port, calls=4, concurrency=2, mix={CallKind.REPAIR: 1, CallKind.AGENT: 1},
                speed=200, progress=lines.append, seed=7, ami_ready=ami_ports.append), 4)
    finally:
        await agi.close()
    assert summary.placed == summary.finished == 4 and summary.failed == 0
    assert sum(summary.by_kind.values()) == 4 and set(summary.by_kind) <= {"repair", "agent"}
    assert ami_ports and ami_ports[0] > 0
    assert any(line.startswith("calls placed 4/4") for line in lines)
    assert lines[-5].startswith("calls placed 4, finished 4, failed 0")
