"""The Asterisk side of FastAGI: a simulated call connects to our FastAGI server like
``AGI(agi://host:port/script,args)`` and answers its commands with res_agi's exact reply texts
(tests/fixtures/agi-*.txt). The caller's behaviour comes from a :class:`CallerScript`.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from callcentre.sim.pbx import (
    Callee,
    ChannelState,
    DialplanEntry,
    OriginateReason,
    SimChannel,
    SimPBX,
    parse_callerid,
    snapshot,
)
from callcentre.sim.scripts import CallEnd, CallerInput, CallerScript, CallResult, Hangup, Record, Silence

log = structlog.get_logger(__name__)

AGI_VERSION = "20.20.1"
DEAD_REPLY = "511 Command Not Permitted on a dead channel or intercept routine\n"
UNKNOWN_REPLY = "510 Invalid or unknown command\n"
# res_agi commands flagged as allowed on a dead channel.
DEAD_OK = {"GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "EXEC", "NOOP", "VERBOSE", "HANGUP",
           "DATABASE GET", "DATABASE PUT", "DATABASE DEL", "DATABASE DELTREE", "ASYNCAGI BREAK", "GOSUB"}
COMMANDS = sorted(
    ["ANSWER", "STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "SAY DIGITS", "SAY NUMBER", "RECORD FILE",
     "GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "SET MUSIC", "EXEC", "CHANNEL STATUS",
     "HANGUP", "NOOP", "VERBOSE"],
    key=lambda c: -len(c.split()),
)
USAGE = {
    "STREAM FILE": "Usage: STREAM FILE <filename> <escape digits> [<sample offset>]",
    "GET DATA": "Usage: GET DATA <file to be streamed> [timeout] [max digits]",
    "WAIT FOR DIGIT": "Usage: WAIT FOR DIGIT <timeout>",
    "SAY DIGITS": "Usage: SAY DIGITS <number> <escape digits>",
    "SAY NUMBER": "Usage: SAY NUMBER <number> <escape digits> [gender]",
    "RECORD FILE": "Usage: RECORD FILE <filename> <format> <escape digits> <timeout> [<offset samples>] [BEEP] [s=<silence>]",
    "GET VARIABLE": "Usage: GET VARIABLE <variablename>",
    "GET FULL VARIABLE": "Usage: GET FULL VARIABLE <variablename> [<channel name>]",
    "SET VARIABLE": "Usage: SET VARIABLE <variablename> <value>",
    "SET MUSIC": "Usage: SET MUSIC <on|off> <class>",
    "EXEC": "Usage: EXEC <application> <options>",
}
SAMPLE_RATE = 8000
DTMF_GAP = 0.25  # seconds between two keys a scripted caller presses


class Usage(Exception):
    """Wrong arguments for a known command: res_agi answers 520 with the usage text."""


def parse_args(line: str) -> list[str]:
    """Split an AGI command line exactly like res_agi's parse_args (quotes, backslash escapes)."""
    args: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                cur = []
                args.append("")
                whitespace = False
            escaped = False
            continue
        if ch in " \t" and not quoted and not escaped:
            if cur is not None and not whitespace:
                args[-1] = "".join(cur)
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            cur = []
            args.append("")
            whitespace = False
        assert cur is not None
        cur.append(ch)
        args[-1] = "".join(cur)
        escaped = False
    return args


def write_wav(path: Path, seconds: float) -> None:
    """A small silent 8 kHz mono WAV standing in for a caller's recording."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(b"\x00\x00" * int(min(seconds, 5.0) * SAMPLE_RATE))


class _StdioLines:
    """Command lines as res_agi reads them: it polls the socket, then ``fgets`` from a stdio buffer.

    Everything that arrived in one read lands in the buffer; the first line is handled, and the next
    line already buffered is only taken once the socket becomes readable again (new bytes arrive),
    so of two commands written at once the second waits for a third (agi-two-commands-one-write.txt).
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.socket = b""  # arrived, not yet read by fgets ("in the kernel")
        self.stdio = b""  # read by fgets, not yet returned
        self.eof = False

    async def _recv(self) -> None:
        chunk = await self.reader.read(65536)
        if chunk:
            self.socket += chunk
        else:
            self.eof = True

    async def next(self) -> bytes:
        """The next line, or b'' at EOF."""
        if not self.socket and not self.eof:
            await self._recv()  # poll(): wait until the socket is readable
        if self.eof and not self.socket and b"\n" not in self.stdio:
            return b""
        while b"\n" not in self.stdio:
            self.stdio += self.socket  # fgets reads what is there
            self.socket = b""
            if b"\n" in self.stdio:
                break
            if self.eof:
                line, self.stdio = self.stdio, b""
                return line
            await self._recv()
        line, _, self.stdio = self.stdio.partition(b"\n")
        return line + b"\n"


@dataclass
class AGISession:
    """One FastAGI connection for one channel; answers commands like res_agi."""

    pbx: SimPBX
    channel: SimChannel
    script: CallerScript
    peer: SimChannel | None = None  # the other half of a Local pair (the caller's side)
    commands: list[str] = field(default_factory=list)
    dead: bool = False
    hangup_sent: bool = False
    moh: bool = False
    agi_failure: bool = False
    in_command: bool = False
    _inputs: list[CallerInput] = field(default_factory=list)
    _silences: int = 0
    _writer: asyncio.StreamWriter | None = None

    def __post_init__(self) -> None:
        self._inputs = list(self.script.inputs)
        self.log = log.bind(uniqueid=self.channel.uniqueid, channel=self.channel.name, caller=self.script.caller_id)

    # ------------------------------------------------------------ wire
    def _send(self, text: str) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(text.encode("utf-8"))

    def _send_hangup(self) -> None:
        if not self.hangup_sent:
            self.hangup_sent = True
            self.dead = True
            self._send("HANGUP\n")

    def env_block(self, request: str, script: str, args: tuple[str, ...]) -> str:
        ch = self.channel
        num = "" if ch.caller_num == "<unknown>" else ch.caller_num
        name = "" if ch.caller_name == "<unknown>" else ch.caller_name
        lines = [
            ("agi_network", "yes"), ("agi_network_script", script), ("agi_request", request),
            ("agi_channel", ch.name), ("agi_language", ch.language), ("agi_type", ch.tech),
            ("agi_uniqueid", ch.uniqueid), ("agi_version", AGI_VERSION),
            ("agi_callerid", num or "unknown"), ("agi_calleridname", name or "unknown"),
            ("agi_callingpres", "0"), ("agi_callingani2", "0"), ("agi_callington", "0"),
            ("agi_callingtns", "0"), ("agi_dnid", ch.dnid or "unknown"), ("agi_rdnis", "unknown"),
            ("agi_context", ch.context), ("agi_extension", ch.exten), ("agi_priority", str(ch.priority)),
            ("agi_enhanced", "0.0"), ("agi_accountcode", ch.accountcode),
            ("agi_threadid", str(140185524098752 + id(self) % 100000)),
        ]
        lines += [(f"agi_arg_{i}", a) for i, a in enumerate(args, 1)]
        return "".join(f"{k}: {v}\n" for k, v in lines) + "\n"

    async def run(self, host: str, port: int, script: str, args: tuple[str, ...]) -> None:
        """Connect, send the environment, answer commands until the server closes the connection."""
        reader, writer = await asyncio.open_connection(host, port)
        self._writer = writer
        request = f"agi://{host}:{port}/{script}"
        monitor = asyncio.ensure_future(self._watch_hangup())
        try:
            self._send(self.env_block(request, script, args))
            await writer.drain()
            lines = _StdioLines(reader)
            while True:
                raw = await lines.next()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line.strip():
                    continue
                self.commands.append(line)
                self.in_command = True
                try:
                    await self._handle(line, len(self.commands))
                finally:
                    self.in_command = False
                if self.channel.hung_up:
                    self._send_hangup()
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            self.log.info("agi connection lost", error=str(exc))
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _watch_hangup(self) -> None:
        """While the script is idle, tell it at once that the caller hung up (``HANGUP`` line)."""
        await self.channel.hangup_event.wait()
        if not self.in_command:
            self._send_hangup()

    # ------------------------------------------------------------ caller
    def hang_up_caller(self) -> None:
        """The caller hangs up now: the events a real hang-up produces, then the channel is dead."""
        if self.channel.hung_up:
            return
        ch, peer = self.channel, self.peer
        if peer is not None and not peer.gone:
            if peer.name.endswith(";1") and ch.name.endswith(";2"):
                self.pbx.newexten(peer, "Hangup", "")
            self.pbx.emit_channel("SoftHangupRequest", peer, [("Cause", "16")])
            self.pbx.request_hangup(ch, 16, soft=False)
            self.pbx.destroy(peer, 16)
        else:
            self.pbx.request_hangup(ch, 16, soft=False)
        if self.moh:
            self.moh = False
            self.pbx.emit_channel("MusicOnHoldStop", ch)

    def next_input(self) -> CallerInput:
        if self._inputs:
            return self._inputs.pop(0)
        self._silences += 1
        if self._silences > self.script.silences_before_giving_up:
            return Hangup()
        return Silence()

    def push_back(self, item: CallerInput) -> None:
        if not (isinstance(item, str) and item == ""):
            self._inputs.insert(0, item)

    async def wait(self, seconds: float) -> bool:
        """Wait simulated ``seconds``; True if the caller hung up meanwhile."""
        if self.channel.hung_up:
            return True
        try:
            await asyncio.wait_for(self.channel.hangup_event.wait(), self.pbx.sleep_for(seconds))
        except asyncio.TimeoutError:
            return False
        return True

    async def press(self, digit: str) -> None:
        self.pbx.emit_channel("DTMFBegin", self.channel, [("Digit", digit), ("Direction", "Received")])
        await self.wait(0.1)
        self.pbx.emit_channel("DTMFEnd", self.channel, [("Digit", digit), ("DurationMs", "100"),
                                                         ("Direction", "Received")])

    # ------------------------------------------------------------ commands
    async def _handle(self, line: str, index: int) -> None:
        argv = parse_args(line)
        words = [a.upper() for a in argv]
        name = next((c for c in COMMANDS if words[: len(c.split())] == c.split()), None)
        command_id = str(random.randint(1, 2**31 - 1))
        if self.script.hangup_between_command_and_reply == index and not self.channel.hung_up:
            # The caller hangs up as the command arrives: res_agi sees the hang-up first, writes
            # HANGUP, then runs the command on the dead channel (agi-hangup-during-channel-status.txt:
            # HANGUP, then 511 for CHANNEL STATUS; GET/SET VARIABLE still answer).
            self.hang_up_caller()
            self._send_hangup()
        self.pbx.emit_channel("AGIExecStart", self.channel, [("CommandId", command_id), ("Command", line)],
                              privilege="agi,all")
        if name is None:
            reply = UNKNOWN_REPLY
        elif self.dead and name not in DEAD_OK:
            reply = DEAD_REPLY
        else:
            try:
                reply = await self._dispatch(name, argv)
            except Usage:
                reply = f"520-Invalid command syntax.  Proper usage follows:\n{USAGE.get(name, name)}\n520 End of proper usage.\n"
        code = reply[:3]
        result = "Success"
        if code == "200" and " result=-1" in reply and name != "EXEC":
            code, result = "-1", "Failure"
        elif code == "200" and name == "EXEC" and not reply.startswith("200 result=0"):
            result = "Unknown Result"
        elif code != "200":
            result = reply[4:].split("\n")[0]
        self.pbx.emit_channel("AGIExecEnd", self.channel, [("CommandId", command_id), ("Command", line),
                                                            ("ResultCode", code), ("Result", result)],
                              privilege="agi,all")
        if " result=-1" in reply and (self.dead or not self.channel.hung_up):
            self.agi_failure = True  # res_agi: a failing command on a live (or dead-mode) channel
        self._send(reply)

    async def _dispatch(self, name: str, argv: list[str]) -> str:
        n = len(name.split())
        args = argv[n:]
        handler = getattr(self, "cmd_" + name.lower().replace(" ", "_"))
        return await handler(args)

    async def cmd_answer(self, args: list[str]) -> str:
        if self.channel.state != ChannelState.UP:
            self.pbx.set_state(self.channel, ChannelState.UP)
            if self.peer is not None:
                self.pbx.set_state(self.peer, ChannelState.UP)
            if await self.wait(0.5):
                return "200 result=-1\n"
        return "200 result=0\n"

    async def cmd_noop(self, args: list[str]) -> str:
        return "200 result=0\n"

    async def cmd_verbose(self, args: list[str]) -> str:
        return "200 result=1\n"

    async def _play(self, seconds: float, escape: str) -> tuple[int, float]:
        """Play for ``seconds`` reading the caller if ``escape`` is set; (result, seconds played)."""
        if escape:
            item = self.next_input()
            if isinstance(item, str) and item:
                digit = item[0]
                self.push_back(item[1:])
                at = min(seconds * 0.5, 0.3)
                if await self.wait(at):
                    return -1, at
                await self.press(digit)
                if digit in escape:
                    return ord(digit), at
                if await self.wait(seconds - at):
                    return -1, seconds
                return 0, seconds
            if isinstance(item, Hangup):
                await self.wait(seconds / 2)
                self.hang_up_caller()
                return -1, seconds / 2
            if isinstance(item, Record):
                self.push_back(item)
        if await self.wait(seconds):
            return -1, seconds
        return 0, seconds

    async def cmd_stream_file(self, args: list[str]) -> str:
        if len(args) < 2:
            raise Usage
        seconds = self.pbx.prompt_seconds(args[0])
        if seconds is None:
            return "200 result=-1 endpos=0\n"
        res, played = await self._play(seconds, args[1])
        return f"200 result={res} endpos={int(played * SAMPLE_RATE)}\n"

    async def _say(self, count: int, escape: str) -> str:
        res, _ = await self._play(0.8 * max(1, count), escape)
        return f"200 result={res}\n"

    async def cmd_say_digits(self, args: list[str]) -> str:
        if len(args) < 2 or not args[0].isdigit():
            raise Usage
        return await self._say(len(args[0]), args[1])

    async def cmd_say_number(self, args: list[str]) -> str:
        if len(args) < 2 or not re.fullmatch(r"-?\d+", args[0]):
            raise Usage
        return await self._say(len(args[0].lstrip("-")), args[1])

    async def cmd_get_data(self, args: list[str]) -> str:
        if not args:
            raise Usage
        timeout_ms = int(args[1]) if len(args) > 1 and args[1].lstrip("-").isdigit() else 0
        max_digits = int(args[2]) if len(args) > 2 and args[2].isdigit() else 1024
        timeout = (timeout_ms if timeout_ms > 0 else 6000) / 1000
        prompt = self.pbx.prompt_seconds(args[0]) or 0.0
        item = self.next_input()
        if isinstance(item, Hangup):
            await self.wait(prompt / 2)
            self.hang_up_caller()
            return "200 result=-1\n"
        if isinstance(item, str) and item:
            got = ""
            ended = False
            rest = item
            if await self.wait(min(prompt * 0.5, 0.3)):
                return "200 result=-1\n"
            while rest and len(got) < max_digits:
                digit, rest = rest[0], rest[1:]
                await self.press(digit)
                if digit == "#":
                    ended = True
                    break
                got += digit
                if rest and await self.wait(DTMF_GAP):
                    return "200 result=-1\n"
            self.push_back(rest)
            if ended or len(got) >= max_digits:
                return f"200 result={got}\n"
            if await self.wait(timeout):
                return "200 result=-1\n"
            return f"200 result={got} (timeout)\n"
        if isinstance(item, Record):
            self.push_back(item)
        if await self.wait(prompt + timeout):
            return "200 result=-1\n"
        return "200 result= (timeout)\n"

    async def cmd_wait_for_digit(self, args: list[str]) -> str:
        if len(args) != 1 or not args[0].lstrip("-").isdigit():
            raise Usage
        timeout_ms = int(args[0])
        timeout = timeout_ms / 1000 if timeout_ms >= 0 else self.pbx.max_call_seconds
        item = self.next_input()
        if isinstance(item, str) and item:
            self.push_back(item[1:])
            if await self.wait(min(timeout / 2, 0.3)):
                return "200 result=-1\n"
            await self.press(item[0])
            return f"200 result={ord(item[0])}\n"
        if isinstance(item, Hangup):
            await self.wait(timeout / 2)
            self.hang_up_caller()
            return "200 result=-1\n"
        if isinstance(item, Record):
            self.push_back(item)
        if await self.wait(timeout):
            return "200 result=-1\n"
        return "200 result=0\n"

    async def cmd_record_file(self, args: list[str]) -> str:
        if len(args) < 4 or not args[3].lstrip("-").isdigit():
            raise Usage
        path, fmt, escape, timeout_ms = args[0], args[1], args[2], int(args[3])
        extra = args[4:]
        beep = any(a.upper() == "BEEP" for a in extra)
        silence = next((float(a[2:]) for a in extra if a.startswith("s=") and a[2:].isdigit()), None)
        limit = timeout_ms / 1000 if timeout_ms > 0 else self.pbx.max_call_seconds
        if beep and await self.wait(0.4):
            return "200 result=-1 (hangup) endpos=0\n"
        item = self.next_input()
        reply: str
        spoken = 0.0
        if isinstance(item, Record):
            spoken = min(item.seconds, limit)
            if await self.wait(spoken):
                return f"200 result=-1 (hangup) endpos={int(spoken * SAMPLE_RATE)}\n"
            endpos = int(spoken * SAMPLE_RATE)
            if item.end_with and item.end_with in escape and item.seconds < limit:
                await self.press(item.end_with)
                reply = f"200 result={ord(item.end_with)} (dtmf) endpos={endpos}\n"
            else:
                if silence is not None and spoken < limit and await self.wait(min(silence, limit - spoken)):
                    return f"200 result=-1 (hangup) endpos={endpos}\n"
                reply = f"200 result=0 (timeout) endpos={endpos}\n"
        elif isinstance(item, Hangup):
            await self.wait(1.0)
            self.hang_up_caller()
            return f"200 result=-1 (hangup) endpos={SAMPLE_RATE}\n"
        elif isinstance(item, str) and item and item[0] in escape:
            self.push_back(item[1:])
            if await self.wait(0.5):
                return "200 result=-1 (hangup) endpos=0\n"
            await self.press(item[0])
            spoken = 0.5
            reply = f"200 result={ord(item[0])} (dtmf) endpos={int(spoken * SAMPLE_RATE)}\n"
        else:
            if isinstance(item, str):
                self.push_back(item)
            if await self.wait(min(limit, silence if silence is not None else limit)):
                return "200 result=-1 (hangup) endpos=0\n"
            reply = "200 result=0 (timeout) endpos=0\n"
        self._store_recording(path, fmt, spoken)
        return reply

    def _store_recording(self, path: str, fmt: str, seconds: float) -> None:
        root = self.pbx.record_dir
        if root is None:
            return
        target = Path(f"{path}.{fmt}")
        try:
            inside = target.resolve().is_relative_to(root.resolve())
        except (OSError, ValueError):
            inside = False
        if not inside:
            target = root / target.name
        try:
            write_wav(target, seconds)
        except OSError as exc:
            self.log.warning("recording not written", path=str(target), error=str(exc))

    def _getvar(self, name: str) -> str | None:
        ch = self.channel
        up = name.upper()
        func = {
            "CALLERID(NUM)": "" if ch.caller_num == "<unknown>" else ch.caller_num,
            "CALLERID(NAME)": "" if ch.caller_name == "<unknown>" else ch.caller_name,
            "CHANNEL(NAME)": ch.name, "CHANNEL": ch.name, "UNIQUEID": ch.uniqueid,
            "CHANNEL(LINKEDID)": ch.linkedid, "CHANNEL(LANGUAGE)": ch.language, "LANGUAGE": ch.language,
            "CONTEXT": ch.context, "EXTEN": ch.exten, "PRIORITY": str(ch.priority),
            "CHANNEL(UNIQUEID)": ch.uniqueid,
        }
        if up == "HANGUPCAUSE" and ch.hangupcause_var is not None:
            return str(ch.hangupcause_var)
        if up == "CALLERID(ALL)":
            n, m = func["CALLERID(NAME)"], func["CALLERID(NUM)"]
            return f'"{n}" <{m}>' if n else f"<{m}>"
        if up in func:
            return func[up]
        if "(" in name:
            return None
        return ch.variables.get(name)

    async def cmd_get_variable(self, args: list[str]) -> str:
        if len(args) != 1:
            raise Usage
        value = self._getvar(args[0])
        return "200 result=0\n" if value is None else f"200 result=1 ({value})\n"

    async def cmd_get_full_variable(self, args: list[str]) -> str:
        if not args:
            raise Usage
        expanded = re.sub(r"\$\{([^{}]+)\}", lambda m: self._getvar(m.group(1)) or "", args[0])
        return f"200 result=1 ({expanded})\n"

    async def cmd_set_variable(self, args: list[str]) -> str:
        if len(args) != 2:
            raise Usage
        name, value = args
        up = name.upper()
        if up == "CALLERID(NUM)":
            self.pbx.set_callerid(self.channel, value or "<unknown>", self.channel.caller_name)
        elif up == "CALLERID(NAME)":
            self.pbx.set_callerid(self.channel, self.channel.caller_num, value or "<unknown>")
        else:
            self.pbx.set_var(self.channel, name, value)
        return "200 result=1\n"

    async def cmd_set_music(self, args: list[str]) -> str:
        if not args or args[0].upper() not in ("ON", "OFF"):
            raise Usage
        if args[0].upper() == "ON":
            cls = args[1] if len(args) > 1 else "default"
            self.moh = True
            self.pbx.emit_channel("MusicOnHoldStart", self.channel, [("Class", cls)])
        elif self.moh:
            self.moh = False
            self.pbx.emit_channel("MusicOnHoldStop", self.channel)
        return "200 result=0\n"

    async def cmd_channel_status(self, args: list[str]) -> str:
        ch = self.channel if not args else self.pbx.find_channel(args[0])
        if ch is None:
            return "200 result=-1\n"
        return f"200 result={int(ch.state)}\n"

    async def cmd_hangup(self, args: list[str]) -> str:
        if args and args[0] != self.channel.name:
            other = self.pbx.find_channel(args[0])
            if other is None:
                return "200 result=-1\n"
            self.pbx.request_hangup(other, 16)
            return "200 result=1\n"
        if not self.channel.hung_up:
            self.pbx.request_hangup(self.channel, 16)
            if self.peer is not None and not self.peer.gone:
                self.pbx.emit_channel("HangupRequest", self.peer, [("Cause", "16")])
                self.pbx.destroy(self.peer, 16)
        return "200 result=1\n"

    async def cmd_exec(self, args: list[str]) -> str:
        if not args:
            raise Usage
        app = args[0].lower()
        data = args[1] if len(args) > 1 else ""
        known = {"dial", "playback", "queue", "wait", "set", "noop", "verbose", "log", "answer", "hangup",
                 "musiconhold", "startmusiconhold", "stopmusiconhold", "saydigits", "saynumber", "goto", "gosub"}
        if app not in known:
            return "200 result=-2\n"
        if app == "dial":
            if not data:
                return "200 result=-1\n"
            _, res = await self.pbx.dial(self.channel, data, dead=self.dead)
            return f"200 result={res}\n"
        if app == "set":
            key, _, value = data.partition("=")
            if key:
                self.pbx.set_var(self.channel, key, value)
            return "200 result=0\n"
        if app in ("noop", "verbose", "log", "goto", "gosub"):
            return "200 result=0\n"
        if self.dead:
            return "200 result=-1\n"
        if app == "playback":
            total = 0.0
            ok = True
            for f in data.split(",")[0].split("&"):
                secs = self.pbx.prompt_seconds(f)
                if secs is None:
                    ok = False
                    break
                total += secs
            if await self.wait(total):
                return "200 result=-1\n"
            self.pbx.set_var(self.channel, "PLAYBACKSTATUS", "SUCCESS" if ok else "FAILED")
            return "200 result=0\n"
        if app == "queue":
            queue = data.split(",")[0] or self.pbx.fallback_queue
            await self.pbx.queue(self.channel, queue, self.script.queue_patience)
            return "200 result=-1\n" if self.channel.hung_up else "200 result=0\n"
        if app == "wait":
            try:
                secs = float(data or "0")
            except ValueError:
                secs = 0.0
            return "200 result=-1\n" if await self.wait(secs) else "200 result=0\n"
        if app == "answer":
            return await self.cmd_answer([])
        if app == "hangup":
            await self.cmd_hangup([])
            return "200 result=-1\n"
        if app in ("saydigits", "saynumber"):
            return "200 result=-1\n" if await self.wait(0.8 * max(1, len(data))) else "200 result=0\n"
        if app in ("musiconhold", "startmusiconhold"):
            await self.cmd_set_music(["on", data.split(",")[0] or "default"])
            return "200 result=0\n"
        await self.cmd_set_music(["off"])
        return "200 result=0\n"


# ---------------------------------------------------------------- call flows
async def _run_agi(pbx: SimPBX, session: AGISession, entry: DialplanEntry, result: CallResult) -> bool:
    """Run AGI() on the session's channel; False if the FastAGI server could not be reached."""
    ch = session.channel
    args = tuple(re.sub(r"\$\{([^{}]+)\}", lambda m: ch.variables.get(m.group(1), ""), a) for a in entry.args)
    request = f"agi://{pbx.agi_host}:{pbx.agi_port}/{entry.script}"
    pbx.newexten(ch, "AGI", ",".join((request, *args)))
    try:
        await session.run(pbx.agi_host, pbx.agi_port, entry.script, args)
    except (ConnectionError, OSError) as exc:
        session.log.info("agi server unreachable", error=str(exc))
        result.error = f"AGI connect failed: {exc}"
        return False
    finally:
        result.commands = list(session.commands)
    return True


async def _after_agi(pbx: SimPBX, session: AGISession, connected: bool, result: CallResult, fallback: bool) -> None:
    """The dialplan after AGI(): AGISTATUS, then fallback Queue() or Hangup()."""
    ch = session.channel
    if not connected:
        status = "FAILURE"
    elif session.agi_failure:
        status = "FAILURE"
    elif ch.hung_up:
        status = "HANGUP"
    else:
        status = "SUCCESS"
    result.agi_status = status
    pbx.set_var(ch, "AGISTATUS", status)
    result.cc_result = ch.variables.get("CC_RESULT")
    if fallback and not ch.hung_up and result.cc_result != "done":
        result.fallback_queue = True
        pbx.newexten(ch, "NoOp", f"AGISTATUS={status}", ch.priority + 1)
        pbx.newexten(ch, "Queue", pbx.fallback_queue, ch.priority + 1)
        await pbx.queue(ch, pbx.fallback_queue, session.script.queue_patience)
        if not ch.hung_up:
            pbx.request_hangup(ch, 16)
        result.ended = CallEnd.FALLBACK_ABANDONED
    elif not connected:
        result.ended = CallEnd.AGI_FAILED
    elif ch.hung_up:
        result.ended = CallEnd.CALLER_HUNG_UP
    else:
        result.ended = CallEnd.SCRIPT_ENDED
    if not connected and not result.fallback_queue:
        result.ended = CallEnd.AGI_FAILED
    result.variables = dict(ch.variables)
    if not ch.gone:
        pbx.emit_channel("SoftHangupRequest", ch, [("Cause", "16")])
        if session.peer is not None and not session.peer.gone:
            pbx.emit_channel("HangupRequest", session.peer, [("Cause", "16")])
        # hung up from its other half by an AMI Hangup: Hangup carries that cause (0 without one)
        pbx.destroy(ch, ch.hangup_cause if session.peer is not None and session.peer.gone else 16)
    if session.peer is not None and not session.peer.gone:
        pbx.destroy(session.peer, 16)


async def _hangup_timer(session: AGISession, seconds: float) -> None:
    await asyncio.sleep(session.pbx.sleep_for(seconds))
    session.hang_up_caller()


async def run_session(pbx: SimPBX, session: AGISession, entry: DialplanEntry, fallback: bool) -> CallResult:
    """AGI + what the dialplan does after it, with the caller's absolute hang-up timer owned here."""
    started = time.monotonic()
    result = CallResult(uniqueid=session.channel.uniqueid, channel=session.channel.name)
    timer = None
    if session.script.hangup_after is not None:
        timer = asyncio.ensure_future(_hangup_timer(session, session.script.hangup_after))
    try:
        connected = await _run_agi(pbx, session, entry, result)
        await _after_agi(pbx, session, connected, result, fallback)
    finally:
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
    result.duration = time.monotonic() - started
    return result


async def run_inbound_call(pbx: SimPBX, script: CallerScript) -> CallResult:
    """A scripted caller dials the hotline: channel(s) appear, the dialplan runs AGI then fallback."""
    ctx, exten = pbx.hotline_context, pbx.hotline_exten
    num = script.caller_id or "<unknown>"
    name = script.caller_name or "<unknown>"
    peer: SimChannel | None = None
    if script.channel_tech == "Local":
        one, two = pbx.new_local_pair(exten, ctx, language=script.language)
        for ch in (one, two):
            pbx.set_callerid(ch, num, name)
            pbx.set_connected(ch, num, name)
        pbx.local_bridge(one, two)
        one.local_other = two  # an AMI Hangup of the handset hangs up the hotline half
        agi_ch, peer = two, one
        pbx.set_state(one, ChannelState.UP)
        one.application, one.app_data = "Wait", "600"
    else:
        agi_ch = pbx.new_channel(f"{script.channel_tech}/{script.endpoint}-{pbx.next_name_seq()}",
                                 script.channel_tech, ctx, exten, ChannelState.DOWN, language=script.language)
        pbx.set_callerid(agi_ch, num, name)
        agi_ch.dnid = exten
        pbx.set_state(agi_ch, ChannelState.RING)
    entry = pbx.dialplan.get((ctx, exten), DialplanEntry(script.script, script.agi_args))
    session = AGISession(pbx, agi_ch, script, peer=peer)
    return await run_session(pbx, session, entry, fallback=True)


async def run_originate(
    pbx: SimPBX, fields: dict[str, str], variables: list[tuple[str, str]]
) -> tuple[OriginateReason, SimChannel | None]:
    """The Originate action: ring the destination, report the outcome (OriginateResponse fields are
    emitted by the caller of this function), and on answer run the dialplan in a PBX-owned task."""
    dest = fields["Channel"]
    timeout = float(fields.get("Timeout") or 30000) / 1000
    cid_num, cid_name = parse_callerid(fields["CallerID"]) if fields.get("CallerID") else ("<unknown>", "<unknown>")
    callee = pbx.callees.get(dest)
    if callee is None and dest in pbx.agents:
        agent = pbx.agents[dest]
        callee = Callee(answer_after=agent.answer_after, busy=agent.busy, talk_seconds=agent.talk_seconds)
    tech, _, rest = dest.partition("/")
    if tech not in ("Local", "SIP", "PJSIP") or not rest:
        return OriginateReason.FAILED, None
    if tech == "Local":
        exten, _, ctx = rest.partition("@")
        one, two = pbx.new_local_pair(exten, ctx or "default")
        if callee is None:
            pbx.destroy(two, 0)
            pbx.destroy(one, 0)
            return OriginateReason.FAILED, None
        for ch in (one, two):
            for k, v in variables:
                pbx.set_var(ch, k, v)
        if fields.get("CallerID"):
            for ch in (one, two):
                pbx.set_callerid(ch, cid_num, cid_name)
                pbx.set_connected(ch, cid_num, cid_name)
        leg, far = one, two
    else:
        if callee is None:
            return OriginateReason.FAILED, None
        leg = far = pbx.new_channel(f"{tech}/{rest.split('/')[0]}-{pbx.next_name_seq()}", tech,
                                    "default", "s", ChannelState.DOWN)
        for k, v in variables:
            pbx.set_var(leg, k, v)
        if fields.get("CallerID"):
            pbx.set_callerid(leg, cid_num, cid_name)
            pbx.set_connected(leg, cid_num, cid_name)
    if callee.busy:
        if far is not leg:
            pbx.local_bridge(leg, far)
        pbx.emit("DialBegin", "call,all", snapshot(leg, "Dest"), [("DialString", rest)])
        pbx.set_state(far, ChannelState.BUSY)
        pbx.emit("DialEnd", "call,all", snapshot(leg, "Dest"), [("DialStatus", "BUSY")])
        if far is not leg:
            pbx.request_hangup(far, 0, soft=False)
            pbx.emit_channel("SoftHangupRequest", far, [("Cause", "16")])
            pbx.destroy(far, 17)
            pbx.destroy(leg, 0)
        else:
            pbx.destroy(leg, 17)
        return OriginateReason.BUSY, None
    if far is not leg:
        pbx.local_bridge(leg, far)
    pbx.emit("DialBegin", "call,all", snapshot(leg, "Dest"), [("DialString", rest)])
    pbx.set_state(leg, ChannelState.RINGING)
    pbx.emit("DialState", "call,all", snapshot(leg, "Dest"), [("DialStatus", "RINGING")])
    outcome = await pbx.race(
        answer=None if callee.answer_after is None else pbx.sleep_for(callee.answer_after),
        deadline=pbx.sleep_for(timeout), events=(leg.hangup_event, far.hangup_event),
    )
    if outcome != "answer":
        cause = 19 if outcome == "timeout" else 16
        if far is not leg:
            pbx.request_hangup(far, cause, soft=False)
            pbx.emit_channel("SoftHangupRequest", far, [("Cause", "16")])
            pbx.destroy(far, cause)
        pbx.spawn(_late_destroy(pbx, leg, cause), name=f"originate-cleanup-{leg.uniqueid}")
        return OriginateReason.NO_ANSWER, None
    pbx.set_state(leg, ChannelState.UP)
    pbx.emit("DialEnd", "call,all", snapshot(leg, "Dest"), [("DialStatus", "ANSWER")])
    pbx.spawn(_originated_dialplan(pbx, leg, far, callee, fields), name=f"originate-{leg.uniqueid}")
    return OriginateReason.ANSWERED, leg


async def _late_destroy(pbx: SimPBX, ch: SimChannel, cause: int) -> None:
    """OriginateResponse is written before the last leg's Hangup (ami-originate-outcomes.txt)."""
    await asyncio.sleep(0)
    pbx.destroy(ch, cause)


async def _originated_dialplan(pbx: SimPBX, leg: SimChannel, far: SimChannel, callee: Callee,
                               fields: dict[str, str]) -> None:
    """After an answered Originate: Application/Data, or Context/Exten/Priority (AGI from the dialplan)."""
    script = callee.script or CallerScript(caller_id="", hangup_after=callee.talk_seconds)
    if callee.script is None:
        script.hangup_after = callee.talk_seconds
    peer = far if far is not leg else None
    if far is not leg:
        pbx.set_state(far, ChannelState.UP)
    if fields.get("Application"):
        pbx.newexten(leg, fields["Application"], fields.get("Data", ""))
        wait = float(fields.get("Data") or 0) if fields["Application"].lower() == "wait" else 0.0
        await pbx.race(answer=None, deadline=pbx.sleep_for(wait), events=(leg.hangup_event,))
        for ch in (far, leg):
            if not ch.gone:
                pbx.destroy(ch, 16)
        return
    leg.context = fields.get("Context") or "default"
    leg.exten = fields.get("Exten") or "s"
    leg.priority = int(fields.get("Priority") or 1)
    entry = pbx.dialplan.get((leg.context, leg.exten), DialplanEntry(leg.exten))
    session = AGISession(pbx, leg, script, peer=peer)
    try:
        pbx.results.append(await run_session(pbx, session, entry, fallback=False))
    finally:
        for ch in (far, leg):
            if not ch.gone:
                pbx.destroy(ch, 16)
