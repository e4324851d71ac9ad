"""Replay each real Asterisk capture over a real socket: a fake Asterisk sends the captured ``<<``
lines (header, replies, HANGUP at the same point) and checks that our channel writes exactly the
captured ``>>`` lines when a handler makes the same calls, and derives the same facts.

The one addition our channel makes is a ``CHANNEL STATUS`` probe after an ambiguous ``result=-1``;
the fake answers it (``200 result=6`` while the call is up, 511 once it has sent HANGUP) and lists
the probes separately.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import pytest
from captures import read_capture

from callcentre.agi.channel import AGIChannel
from callcentre.agi.server import FastAGIServer
from callcentre.config import AGIConfig
from callcentre.domain.ports import CallerHungUp, DigitsResult, RecordResult

PROBE = b"CHANNEL STATUS\n"
DEAD = b"511 Command Not Permitted on a dead channel or intercept routine\n"


@dataclass
class Replay:
    written: list[bytes] = field(default_factory=list)  # what our server wrote, probes excluded
    probes: int = 0
    extra: list[bytes] = field(default_factory=list)  # lines written after the capture's script ended


async def replay(port: int, name: str, extra: dict[bytes, bytes] | None = None) -> Replay:
    """Be Asterisk for one capture; return what our side wrote."""
    script = [line for line in read_capture(name) if line.tag in ("<<", ">>")]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = Replay()
    hung = False
    i = 0

    async def send_pending() -> None:
        nonlocal i, hung
        while i < len(script) and script[i].tag == "<<":
            writer.write(script[i].data)
            hung = hung or script[i].data == b"HANGUP\n"
            i += 1
        await writer.drain()

    try:
        await send_pending()
        while True:
            line = await reader.readline()
            if not line:
                break
            if line == PROBE:
                out.probes += 1
                writer.write(DEAD if hung else b"200 result=6\n")
                continue
            if i < len(script):
                out.written.append(line)
                if line != script[i].data:
                    break  # mismatch: the test's comparison shows it
                i += 1
                await send_pending()
            else:
                out.extra.append(line)
                writer.write((extra or {}).get(line, b"510 Invalid or unknown command\n"))
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()
    return out


def expected(name: str) -> list[bytes]:
    return [line.data for line in read_capture(name) if line.tag == ">>"]


async def run_capture(
    name: str, handler: Callable[[AGIChannel], Awaitable[None]], extra: dict[bytes, bytes] | None = None
) -> Replay:
    server = FastAGIServer(AGIConfig(port=0, command_timeout_seconds=2.0), lambda env: handler)
    await server.start()
    try:
        assert server.port
        result = await asyncio.wait_for(replay(server.port, name, extra), 4.0)
    finally:
        await server.stop(1.0)
    assert server.stats.accepted == 1
    return result


async def test_ivr_commands_capture() -> None:
    facts: dict[str, object] = {}
    cleanups = 0

    async def handler(ch: AGIChannel) -> None:
        nonlocal cleanups
        facts["args"] = tuple(ch.args)
        facts["caller"] = (ch.caller_id, ch.caller_name, ch.uniqueid, ch.channel_name)
        await ch.answer()
        facts["cid"] = await ch.get_variable("CALLERID(num)")
        facts["nosuch"] = await ch.get_variable("NOSUCHVAR")
        await ch.set_variable("CC_TEST", "hello world")
        facts["full"] = await ch.get_full_variable("${CC_TEST}")
        facts["play_missing_1"] = await ch.play(["welcome"])
        facts["play_missing_2"] = await ch.play(["no-such-prompt"])
        facts["gd_timeout"] = await ch.get_digits(["beep"], 4000, 1)
        facts["gd_partial"] = await ch.get_digits(["beep"], 2000, 4)
        facts["wfd"] = await ch.wait_for_digit(1500)
        await ch.command("SAY DIGITS", "1234", "")
        await ch.command("SAY NUMBER", 42, "")
        facts["playback"] = await ch.exec("Playback", "beep")
        facts["nosuchapp"] = await ch.exec("NoSuchApp", "foo")
        facts["rec"] = await ch.record("/var/spool/asterisk/monitor/rec-test", "wav", 2, 1)
        try:
            await ch.music_on("default")
            await asyncio.sleep(30)  # idle, as the captured script was: HANGUP cancels us
            facts["slept"] = True
        finally:
            cleanups += 1
            facts["hung_up"] = ch.hung_up
            # The typed methods refuse without writing anything …
            for call in (ch.music_off(), ch.play(["beep"]), ch.exec("Dial", "x")):
                with pytest.raises(CallerHungUp):
                    await call
            # … the raw escape hatch writes what the captured script wrote, to learn what Asterisk says.
            with pytest.raises(CallerHungUp):  # 511
                await ch.command("SET MUSIC", "OFF", allow_dead=True)
            reply = await ch.command("EXEC", "Dial", "Local/agent1@sim-agents/n,10", allow_dead=True)
            facts["dead_dial"] = reply.result_int
            facts["dialstatus"] = await ch.get_variable("DIALSTATUS", allow_dead=True)
            facts["answeredtime"] = await ch.get_variable("ANSWEREDTIME", allow_dead=True)
            with pytest.raises(CallerHungUp):
                await ch.command("STREAM FILE", "beep", "", allow_dead=True)
            facts["cid_dead"] = await ch.get_variable("CALLERID(num)", allow_dead=True)

    out = await run_capture("agi-ivr-commands.txt", handler)
    assert out.written == expected("agi-ivr-commands.txt")
    assert out.extra == []
    assert out.probes == 2  # one per missing prompt; both found the channel up
    assert cleanups == 1 and "slept" not in facts and facts["hung_up"] is True
    assert facts["args"] == ("arg one", "arg2")
    assert facts["caller"] == ("13800138000", "Zhang San", "1795351990.1", "Local/8000@capture-agi-00000000;2")
    assert facts["cid"] == "13800138000"
    assert facts["nosuch"] is None
    assert facts["full"] == "hello world"
    assert facts["play_missing_1"] is None and facts["play_missing_2"] is None
    assert facts["gd_timeout"] == DigitsResult("", True)
    assert facts["gd_partial"] == DigitsResult("12", True)
    assert facts["wfd"] is None
    assert facts["playback"] == 0
    assert facts["nosuchapp"] == -2
    assert facts["rec"] == RecordResult("timeout", None, 0)
    assert facts["dead_dial"] == -1
    assert facts["dialstatus"] == "CANCEL"
    assert facts["answeredtime"] == ""
    assert facts["cid_dead"] == "13800138000"


async def test_dial_agents_capture() -> None:
    facts: dict[str, object] = {}

    async def handler(ch: AGIChannel) -> None:
        await ch.answer()
        facts["digits"] = await ch.get_digits(["beep"], 6000, 1)
        await ch.music_on()
        await ch.music_off()
        facts["dial2"] = await ch.exec("Dial", "Local/agent2@sim-agents/n", "4")
        facts["status2"] = await ch.get_variable("DIALSTATUS")
        facts["dial1"] = await ch.exec("Dial", "Local/agent1@sim-agents/n", "10")
        facts["status1"] = await ch.get_variable("DIALSTATUS")
        facts["answered"] = await ch.get_variable("ANSWEREDTIME")
        facts["dialed"] = await ch.get_variable("DIALEDTIME")
        facts["peer"] = await ch.get_variable("DIALEDPEERNAME")

    out = await run_capture("agi-dial-agents.txt", handler)
    assert out.written == expected("agi-dial-agents.txt")
    assert out.probes == 0 and out.extra == []
    assert facts == {
        "digits": DigitsResult("4", False),
        "dial2": 0,
        "status2": "NOANSWER",
        "dial1": -1,
        "status1": "ANSWER",
        "answered": "15",
        "dialed": "15",
        "peer": "Local/agent1@sim-agents-00000006;1",
    }


async def test_callback_survey_capture() -> None:
    facts: dict[str, object] = {}

    async def handler(ch: AGIChannel) -> None:
        facts["args"] = tuple(ch.args)
        facts["ticket"] = await ch.get_variable("TICKET")
        facts["beep"] = await ch.play(["beep"])
        try:
            await ch.wait_for_digit(3000)
        except CallerHungUp:
            facts["hung_up"] = True

    out = await run_capture("agi-callback-survey.txt", handler)
    assert out.written == expected("agi-callback-survey.txt")
    assert out.probes <= 1  # the -1 is resolved by the HANGUP line or by a probe answered 511
    assert facts == {"args": ("T20261122-0001",), "ticket": "T20261122-0001", "beep": None, "hung_up": True}


async def test_sip_call_capture_hangup_between_command_and_reply() -> None:
    facts: dict[str, object] = {}

    async def handler(ch: AGIChannel) -> None:
        facts["channel"] = ch.channel_name
        await ch.answer()
        facts["digits"] = await ch.get_digits(["beep"], 6000, 1)
        await ch.music_on("default")
        await ch.music_off()
        facts["dial"] = await ch.exec("Dial", "SIP/agent3", "10")
        try:
            await ch.get_variable("DIALSTATUS")
        except CallerHungUp:
            facts["hung_up"] = True
            # The late "(ANSWER)" reply is dropped: the next command gets its own reply.
            facts["after"] = await ch.get_variable("DIALSTATUS", allow_dead=True)
            await ch.set_result("done")

    extra = {b"GET VARIABLE DIALSTATUS\n": b"200 result=1 (FRESH)\n", b"SET VARIABLE CC_RESULT done\n": b"200 result=1\n"}
    out = await run_capture("agi-sip-call.txt", handler, extra)
    assert out.written == expected("agi-sip-call.txt")
    assert out.extra == [b"GET VARIABLE DIALSTATUS\n", b"SET VARIABLE CC_RESULT done\n"]
    assert facts == {
        "channel": "SIP/owner-phone-00000002",
        "digits": DigitsResult("4", False),
        "dial": -1,
        "hung_up": True,
        "after": "FRESH",
    }


# ------------------------------------------------------------------------------- hang-up captures
# tests/fixtures/agi-hangup-during-*.txt: the caller hangs up (AMI Hangup of the Local ;1) while each
# command runs. Asterisk answers the command itself first (-1, or "-1 (hangup)" for RECORD FILE) and
# sends HANGUP ~40 ms later; agi-two-commands-one-write.txt shows that a second line written before
# the first is answered is not read (res_agi's buffered fgets): it is answered only when a third comes.


class FgetsAsterisk:
    """Plays res_agi after the hang-up as the captures show it: answers one command per read, and
    records any read that held more than one line (a command written before its predecessor's reply)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lines: list[bytes] = []
        self.pipelined: list[bytes] = []
        self._buf = b""

    async def command(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = await self.reader.read(4096)
            if not chunk:
                return b""
            if chunk.count(b"\n") > 1:
                self.pipelined.append(chunk)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        self.lines.append(line + b"\n")
        return line + b"\n"

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


def _after_hangup(name: str) -> tuple[bytes, bytes, bytes, float]:
    """The command, Asterisk's reply to it, the HANGUP line, and the seconds between them, as captured."""
    lines = read_capture(name)
    note = next(i for i, ln in enumerate(lines) if ln.tag == "--" and b"hangs up" in ln.data)
    command = next(ln.data for ln in reversed(lines[:note]) if ln.tag == ">>")
    after = [ln for ln in lines[note + 1:] if ln.tag == "<<"]
    assert after[1].data == b"HANGUP\n", (name, after[:2])
    return command, after[0].data, after[1].data, after[1].t - after[0].t


HANGUP_CAPTURES = {
    "agi-hangup-during-answer.txt": lambda ch: ch.answer(),
    "agi-hangup-during-stream-file.txt": lambda ch: ch.play(["tt-monkeys"]),
    "agi-hangup-during-stream-file-escape.txt": lambda ch: ch.play(["tt-monkeys"], "0123456789#*"),
    "agi-hangup-during-get-data.txt": lambda ch: ch.get_digits(["tt-monkeys"], 5000, 4),
    "agi-hangup-during-get-data-timeout.txt": lambda ch: ch.get_digits(["beep"], 10000, 4),
    "agi-hangup-during-record-file.txt": lambda ch: ch.record("/tmp/capture-rec", "wav", 10, 0, beep=False),
    "agi-hangup-during-exec-dial.txt": lambda ch: ch.exec("Dial", "Local/agent8@cc-test-phones/n", "30"),
    "agi-hangup-during-wait-for-digit.txt": lambda ch: ch.wait_for_digit(5000),
}


@pytest.mark.parametrize("name", sorted(HANGUP_CAPTURES))
async def test_hangup_during_each_command_as_captured(name: str) -> None:
    command, reply, hangup, gap = _after_hangup(name)
    outcome: list[object] = []

    async def handler(ch: AGIChannel) -> None:
        try:
            outcome.append(await HANGUP_CAPTURES[name](ch))
        except CallerHungUp:
            outcome.append("hung up")
        finally:
            await ch.set_result("done")

    server = FastAGIServer(AGIConfig(port=0, command_timeout_seconds=2.0), lambda env: handler)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ast = FgetsAsterisk(reader, writer)
        head = []
        for ln in read_capture(name):
            head.append(ln.data)
            if ln.data == b"\n":
                break
        await ast.send(b"".join(head))  # the captured environment, as Asterisk sent it
        ours = await ast.command()
        assert ours.split()[:2] == command.split()[:2], (ours, command)  # the same command (our own arguments)
        await ast.send(reply)
        # as captured: HANGUP ~40 ms after the reply, and only then does res_agi read the next command
        await asyncio.sleep(gap)
        await ast.send(hangup)
        await asyncio.sleep(0.05)
        nxt = await ast.command()
        if nxt == PROBE:  # -1 is ambiguous: the channel asked; res_agi answers it 511 after HANGUP
            await ast.send(DEAD)
            nxt = await ast.command()
        assert nxt == b"SET VARIABLE CC_RESULT done\n", ast.lines
        await ast.send(b"200 result=1\n")
        assert await asyncio.wait_for(ast.command(), 3) == b""  # then the session ends
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop(1.0)
    assert ast.pipelined == []
    if name.endswith("exec-dial.txt"):
        assert outcome == [-1]  # Dial's -1: the distribution reads DIALSTATUS (allowed on a dead channel)
    else:
        assert outcome == ["hung up"], outcome
