"""Record byte-exact FastAGI and AMI transcripts from a real Asterisk (tests/fixtures/README-captures.md).

    python3 tools/record_captures.py [--out tests/fixtures] [--only NAME ...]

A throw-away Asterisk is built with tests/pbx/asterisk.py's ``AsteriskInstance`` (the project's
dialplans plus the capture contexts below); this script is its FastAGI server (every line read or
written is logged) and holds a raw AMI connection (every line logged). Each scenario is one call
into ``[capture-agi]``: the AGI channel is ``Local/<scenario>@capture-agi-XXXXXXXX;2``; its ``;1``
half is the caller's handset, which the scenario hangs up with AMI ``Hangup`` at the moment it wants
("the caller hangs up"). Each scenario writes ``agi-<name>.txt`` and/or ``ami-<name>.txt`` in the
format of ../shared/asterisk-captures: ``SECONDS TAG 'python-repr of the bytes'`` (``<<`` from
Asterisk, ``>>`` to it, ``--`` a note), seconds since the scenario started.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pbx.asterisk import AsteriskInstance, find_asterisk, free_port  # noqa: E402

DEAD_SIP_PORT = free_port()  # nothing listens here: a chan_sip peer that never answers INVITEs

CAPTURE_DIALPLAN = r"""
[capture-agi]
exten => _[a-z].,1,AGI(agi://127.0.0.1:${CAPTURE_AGI_PORT}/${EXTEN})
 same => n,NoOp(capture: AGISTATUS=${AGISTATUS})
 same => n,Hangup()
"""


def sip_conf(port: int) -> str:
    return f"""[general]
udpbindaddr = 127.0.0.1:{port}
context = cc-test-nowhere
allowguest = no

[deadpeer]
type = friend
host = 127.0.0.1
port = {DEAD_SIP_PORT}
context = cc-test-nowhere
disallow = all
allow = ulaw
"""


class Transcript:
    """One capture file: lines ``SECONDS TAG repr`` relative to ``t0``."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.lines: list[str] = []

    def add(self, tag: str, data: bytes | str) -> None:
        t = time.monotonic() - self.t0
        if tag == "--":
            self.lines.append(f"{t:8.3f} -- {data!r}")
        else:
            assert isinstance(data, bytes)
            self.lines.append(f"{t:8.3f} {tag} {data.decode('latin-1')!r}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# ---------------------------------------------------------------- AMI

class RawAMI:
    """A raw AMI client: every line read and every action written goes to ``self.log`` (if set)."""

    def __init__(self, port: int, username: str, secret: str) -> None:
        self.port, self.username, self.secret = port, username, secret
        self.log: Transcript | None = None
        self.messages: list[dict[str, str]] = []
        self._changed = asyncio.Event()
        self._n = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        await self.reader.readline()
        self._task = asyncio.create_task(self._read())
        reply = await self.action("Login", Username=self.username, Secret=self.secret)
        assert reply.get("Response") == "Success", reply

    async def _read(self) -> None:
        cur: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if not line:
                if self.log:
                    self.log.add("--", "EOF")
                return
            if self.log is not None:
                self.log.add("<<", line)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text:
                k, _, v = text.partition(": ")
                cur[k] = v
                continue
            if cur:
                self.messages.append(cur)
                cur = {}
                self._changed.set()

    async def action(self, name: str, **fields: str) -> dict[str, str]:
        self._n += 1
        aid = f"rec-{self._n}"
        data = f"Action: {name}\r\nActionID: {aid}\r\n" + "".join(
            f"{k}: {x}\r\n" for k, v in fields.items() for x in (v if isinstance(v, list) else [v])) + "\r\n"
        start = len(self.messages)
        if self.log is not None:
            self.log.add(">>", data.encode())
        self.writer.write(data.encode())
        await self.writer.drain()
        return await self.wait(lambda m: m.get("ActionID") == aid and "Response" in m and "Event" not in m,
                               start=start)

    async def wait(self, pred: Callable[[dict[str, str]], bool], limit: float = 30.0, start: int = 0) -> dict[str, str]:
        async with asyncio.timeout(limit):
            i = start
            while True:
                while i < len(self.messages):
                    if pred(self.messages[i]):
                        return self.messages[i]
                    i += 1
                self._changed.clear()
                await self._changed.wait()


# ---------------------------------------------------------------- FastAGI

@dataclass
class AGIConn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    log: Transcript
    env: dict[str, str] = field(default_factory=dict)
    hangup_seen: bool = False
    pending: list[bytes] = field(default_factory=list)

    async def read_env(self) -> None:
        while True:
            line = await self.reader.readline()
            self.log.add("<<", line)
            if line in (b"\n", b""):
                return
            k, _, v = line.decode().rstrip("\n").partition(": ")
            self.env[k] = v

    def write(self, data: bytes) -> None:
        self.log.add(">>", data)
        self.writer.write(data)

    async def line(self, limit: float = 30.0) -> bytes | None:
        """The next line from Asterisk (None: nothing within ``limit`` s, b'' at EOF)."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), limit)
        except TimeoutError:
            self.log.add("--", f"nothing within {limit:g} s")
            return None
        if not line:
            self.log.add("--", "EOF")
            return b""
        self.log.add("<<", line)
        if line == b"HANGUP\n":
            self.hangup_seen = True
        return line

    async def reply(self, limit: float = 30.0, on_hangup: Callable[[], None] | None = None) -> bytes | None:
        """Lines until a reply (``HANGUP`` lines logged and skipped; ``on_hangup`` runs when one arrives)."""
        while True:
            line = await self.line(limit)
            if line is None or line == b"":
                return line
            if line == b"HANGUP\n":
                if on_hangup is not None:
                    on_hangup()
                continue
            if line.startswith(b"520-"):
                while line and not line.startswith(b"520 "):
                    line = await self.line(limit)
            return line

    async def cmd(self, command: str, limit: float = 30.0) -> bytes | None:
        self.write(command.encode() + b"\n")
        await self.writer.drain()
        return await self.reply(limit)

    async def drain_for(self, seconds: float) -> None:
        """Log whatever Asterisk sends during ``seconds`` (to see a late HANGUP or a reply that never comes)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            line = await self.line(left)
            if not line:
                return

    @property
    def caller(self) -> str:
        """The caller's handset: the ;1 half of our Local channel."""
        return self.env["agi_channel"][:-1] + "1"


Scenario = Callable[["Recorder", AGIConn], Awaitable[None]]


class Recorder:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.scripts: dict[str, Scenario] = {}
        self.sessions: dict[str, asyncio.Future[None]] = {}
        self.logs: dict[str, Transcript] = {}
        self.t0 = time.monotonic()

    async def _on_agi(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AGIConn(reader, writer, Transcript(self.t0))
        await conn.read_env()
        name = conn.env.get("agi_network_script", "")
        self.logs[f"agi-{name}"] = conn.log
        fut = self.sessions.get(name)
        try:
            await self.scripts[name](self, conn)
            conn.log.add("--", "script done")
        except Exception as exc:  # noqa: BLE001 - recorded in the capture
            conn.log.add("--", f"script error: {exc!r}")
            raise
        finally:
            writer.close()
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def run(self, only: set[str] | None) -> None:
        binary = find_asterisk()
        if binary is None:
            raise SystemExit("no asterisk binary (set CALLCENTRE_TEST_ASTERISK)")
        server = await asyncio.start_server(self._on_agi, "127.0.0.1", 0)
        agi_port = server.sockets[0].getsockname()[1]
        sip_port = free_port()
        ast = AsteriskInstance(binary, agi_port, sip_port=sip_port, sip_conf=sip_conf(sip_port),
                               extra_dialplan=CAPTURE_DIALPLAN,
                               globals_extra={"CAPTURE_AGI_PORT": str(agi_port), "CC_PHONE_agent8": "never",
                                              "CC_PHONE_agent9": "unavailable", "CC_PHONE_agent7": "busy"})
        ast.start()
        self.ast = ast
        try:
            self.ami = RawAMI(ast.ami_port, "cctest", ast.test_secret)
            await self.ami.connect()
            for name, (scenario, agi_file, ami_file) in SCENARIOS.items():
                if only and name not in only:
                    continue
                print(f"recording {name} ...", flush=True)
                await self.record(name, scenario, agi_file, ami_file)
        finally:
            server.close()
            ast.stop()
            ast.cleanup()

    async def record(self, name: str, scenario: Scenario, agi_file: str | None, ami_file: str | None) -> None:
        ami_log = Transcript()
        self.t0 = ami_log.t0
        self.logs.pop(f"agi-{name}", None)
        self.scripts[name] = scenario
        self.sessions[name] = asyncio.get_running_loop().create_future()
        self.ami.log = ami_log
        start = len(self.ami.messages)
        reply = await self.ami.action("Originate", Channel=f"Local/{name}@capture-agi", Application="Wait",
                                      Data="120", CallerID='"Zhang San" <13800138000>', Timeout="60000",
                                      Async="true")
        assert reply.get("Response") == "Success", reply
        await asyncio.wait_for(self.sessions[name], 120)
        # until the call's channels are all gone
        await self.ami.wait(lambda m: m.get("Event") == "Hangup" and m.get("Channel", "").startswith(
            f"Local/{name}@capture-agi-") and m["Channel"].endswith(";2"), limit=60, start=start)
        await asyncio.sleep(1.0)
        await self._quiet()
        self.ami.log = None
        if ami_file:
            (self.out / ami_file).write_text(ami_log.text())
        agi_log = self.logs.get(f"agi-{name}")
        if agi_file and agi_log is not None:
            (self.out / agi_file).write_text(agi_log.text())

    async def _quiet(self) -> None:
        for _ in range(100):
            chans = await asyncio.to_thread(self.ast.cli, "core show channels count")
            if chans.strip().startswith("0 active channels"):
                return
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------- scenarios

async def hangup_caller(rec: Recorder, conn: AGIConn, after: float = 0.0) -> None:
    if after:
        await asyncio.sleep(after)
    conn.log.add("--", f"AMI Hangup {conn.caller} (the caller hangs up)")
    await rec.ami.action("Hangup", Channel=conn.caller)


async def after_hangup_probes(conn: AGIConn) -> None:
    """What a dead channel answers, and whether two commands written at once are both answered."""
    if not conn.hangup_seen:
        await conn.drain_for(2.0)
    await conn.cmd("CHANNEL STATUS", 5)
    await conn.cmd("GET VARIABLE CALLERID(num)", 5)
    conn.log.add("--", "two commands in one write")
    conn.write(b"GET VARIABLE CALLERID(num)\nGET VARIABLE CALLERID(name)\n")
    await conn.writer.drain()
    await conn.drain_for(3.0)


def hangup_during(command: str, delay: float, answer: bool = True) -> Scenario:
    """Send ``command``; ``delay`` s later the caller hangs up; if ``HANGUP`` arrives before the reply,
    a second command is written at once (is it answered?)."""

    async def scenario(rec: Recorder, conn: AGIConn) -> None:
        if answer:
            await conn.cmd("ANSWER")
        conn.write(command.encode() + b"\n")
        await conn.writer.drain()
        hang = asyncio.create_task(hangup_caller(rec, conn, delay))
        late: list[bytes] = []

        def on_hangup() -> None:
            conn.log.add("--", "HANGUP before the reply: a second command written now")
            conn.write(b"GET VARIABLE CALLERID(num)\n")
            late.append(b"sent")

        await conn.reply(30, on_hangup)
        await hang
        if late:
            await conn.drain_for(3.0)
        await after_hangup_probes(conn)

    return scenario


def hangup_race(command: str, rounds: int = 40) -> Scenario:
    """An instant command sent in a loop while the caller hangs up: where does ``HANGUP`` land?"""

    async def scenario(rec: Recorder, conn: AGIConn) -> None:
        await conn.cmd("ANSWER")
        hang: asyncio.Task[None] | None = None
        after = 0
        for i in range(rounds):
            if i == 3:
                hang = asyncio.create_task(hangup_caller(rec, conn))
            reply = await conn.cmd(command, 5)
            if not reply:
                break
            if conn.hangup_seen:
                after += 1
                if after >= 3:
                    break
        if hang is not None:
            await hang
        await after_hangup_probes(conn)

    return scenario


async def answer_local(rec: Recorder, conn: AGIConn) -> None:
    """ANSWER on a ringing Local channel, then on the now answered channel."""
    await conn.cmd("CHANNEL STATUS")
    await conn.cmd("ANSWER")
    await conn.cmd("CHANNEL STATUS")
    await conn.cmd("ANSWER")
    await conn.cmd("EXEC Answer")
    await hangup_caller(rec, conn)
    await conn.drain_for(2.0)


async def dial_unreachable(rec: Recorder, conn: AGIConn) -> None:
    await conn.cmd("ANSWER")
    for target in ("SIP/nobody,5", "Local/x@nonexistent-context,5", "Local/nosuchexten@cc-test-phones,5",
                   "SIP/deadpeer,5", "Local/agent9@cc-test-phones/n,5", "Local/agent7@cc-test-phones/n,5",
                   "NoSuchTech/foo,5"):
        await conn.cmd(f"EXEC Dial {target}", 40)
        for var in ("DIALSTATUS", "HANGUPCAUSE", "DIALEDPEERNAME"):
            await conn.cmd(f"GET VARIABLE {var}")
    await hangup_caller(rec, conn)
    await conn.drain_for(2.0)


def ami_hangup_ringing(which: str, cause: str | None = None) -> Scenario:
    """EXEC Dial to a phone that never answers; the test's AMI hangs up the ringing leg (;1 = the dialed
    channel, ;2 = the phone's own half), with ``Cause`` if given."""

    async def scenario(rec: Recorder, conn: AGIConn) -> None:
        await conn.cmd("ANSWER")
        start = len(rec.ami.messages)
        conn.write(b"EXEC Dial Local/agent8@cc-test-phones/n,30\n")
        await conn.writer.drain()
        state = await rec.ami.wait(lambda m: m.get("Event") == "DialState" and m.get("DialStatus") == "RINGING",
                                   start=start)
        await asyncio.sleep(1.0)
        dest = state["DestChannel"]
        target = dest if which == "1" else dest[:-1] + "2"
        conn.log.add("--", f"AMI Hangup {target} (the ringing agent leg)")
        await rec.ami.action("Hangup", Channel=target, **({"Cause": cause} if cause else {}))
        await conn.reply(30)
        for var in ("DIALSTATUS", "HANGUPCAUSE", "DIALEDPEERNAME", "DIALEDTIME", "ANSWEREDTIME"):
            await conn.cmd(f"GET VARIABLE {var}")
        await hangup_caller(rec, conn)
        await conn.drain_for(2.0)

    return scenario


async def pipelined_live(rec: Recorder, conn: AGIConn) -> None:
    """Two commands in one write on a live channel: does res_agi answer the second?"""
    await conn.cmd("ANSWER")
    conn.write(b"GET VARIABLE CALLERID(num)\nGET VARIABLE CALLERID(name)\n")
    await conn.writer.drain()
    await conn.drain_for(3.0)
    conn.log.add("--", "a third command, alone")
    await conn.cmd("GET VARIABLE CHANNEL(name)", 5)
    await conn.drain_for(1.0)
    await hangup_caller(rec, conn)
    await conn.drain_for(2.0)


SCENARIOS: dict[str, tuple[Scenario, str | None, str | None]] = {
    "answer": (answer_local, "agi-answer-local.txt", "ami-answer-local.txt"),
    "dialunreach": (dial_unreachable, "agi-dial-unreachable.txt", "ami-dial-unreachable.txt"),
    "amihangup1": (ami_hangup_ringing("1"), "agi-ami-hangup-ringing-leg.txt", "ami-ami-hangup-ringing-leg.txt"),
    "amihangup2": (ami_hangup_ringing("2"), "agi-ami-hangup-ringing-phone.txt", "ami-ami-hangup-ringing-phone.txt"),
    "amihangupcause": (ami_hangup_ringing("1", "16"), "agi-ami-hangup-ringing-leg-cause16.txt",
                       "ami-ami-hangup-ringing-leg-cause16.txt"),
    "pipelined": (pipelined_live, "agi-two-commands-one-write.txt", None),
    "hupanswer": (hangup_during("ANSWER", 0.1, answer=False), "agi-hangup-during-answer.txt", "ami-hangup-during-answer.txt"),
    "hupstream": (hangup_during('STREAM FILE tt-monkeys ""', 1.0), "agi-hangup-during-stream-file.txt", None),
    "hupstreamesc": (hangup_during('STREAM FILE tt-monkeys "0123456789#*"', 1.0),
                     "agi-hangup-during-stream-file-escape.txt", None),
    "hupgetdata": (hangup_during("GET DATA tt-monkeys 5000 4", 1.0), "agi-hangup-during-get-data.txt", None),
    "hupgetdatatimeout": (hangup_during("GET DATA beep 10000 4", 2.0), "agi-hangup-during-get-data-timeout.txt", None),
    "huprecord": (hangup_during("RECORD FILE /tmp/capture-rec wav # 10000", 1.0),
                  "agi-hangup-during-record-file.txt", None),
    "huprecordbeep": (hangup_during("RECORD FILE /tmp/capture-rec2 wav # 10000 0 BEEP s=5", 1.0),
                      "agi-hangup-during-record-file-beep.txt", None),
    "hupdial": (hangup_during("EXEC Dial Local/agent8@cc-test-phones/n,30", 2.0),
                "agi-hangup-during-exec-dial.txt", "ami-hangup-during-exec-dial.txt"),
    "hupwfd": (hangup_during("WAIT FOR DIGIT 10000", 1.0), "agi-hangup-during-wait-for-digit.txt", None),
    "hupwfdinf": (hangup_during("WAIT FOR DIGIT -1", 1.0), "agi-hangup-during-wait-for-digit-forever.txt", None),
    "hupsetvar": (hangup_race("SET VARIABLE CAPTURE x"), "agi-hangup-during-set-variable.txt", None),
    "hupgetvar": (hangup_race("GET VARIABLE CALLERID(num)"), "agi-hangup-during-get-variable.txt", None),
    "hupstatus": (hangup_race("CHANNEL STATUS"), "agi-hangup-during-channel-status.txt", None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names: " + ", ".join(SCENARIOS))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(Recorder(a.out).run(set(a.only) if a.only else None))


if __name__ == "__main__":
    main()
