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

Research for issue 12 (``CaptureAsterisk`` adds capture-only queues, features.conf and contexts):
``QUEUE_SCENARIOS`` run app_queue itself and save the bytes it appended to ``queue_log``
(``queue_log-<name>.txt``) with their AMI side; the ``recording-*`` and ``transfer-*`` scenarios in
``SCENARIOS`` try MixMonitor and transfers on a call bridged by a FastAGI ``EXEC Dial`` (a transfer that
comes back into the FastAGI server is a second session, saved as ``-agi2.txt``: ``EXTRA_SESSIONS``).
Two of them mount a tmpfs (read-only, 64 KiB) inside the throw-away instance and unmount it after.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
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


# Capture-only configuration on top of the harness's (research for issue 12: queue_log, recording,
# transfers). The project's files stay as they are; these are appended or written beside them.

QUEUES_EXTRA = r"""
; ---- capture-only queues (tools/record_captures.py), templates of the project's hotline-fallback ----
; hotline-keys: the same queue, plus a context a waiting caller can leave it for with one key
[hotline-keys](hotline-fallback)
context = capture-queue-exit
; hotline-linear: one agent at a time for two rings (10 s), in the order they were added, like our ACD.
; Not a template: app_queue reads a queue's strategy with the first "strategy" line of its section,
; which for a template is the template's (a template of hotline-fallback stays ringall).
[hotline-linear]
strategy = linear
timeout = 10
retry = 1
timeoutpriority = app
wrapuptime = 0
ringinuse = no
joinempty = unavailable,invalid
leavewhenempty = unavailable,invalid
musicclass = default
setinterfacevar = yes
servicelevel = 10
"""

FEATURES_CONF = """[general]
transferdigittimeout = 3
atxfernoanswertimeout = 15
atxferdropcall = no
atxferabort = *1
atxfercomplete = *3
atxferthreeway = *4

[featuremap]
blindxfer = #1
atxfer = *2
automixmon = *5
"""

RESEARCH_DIALPLAN = r"""
[capture-queue]
; the caller's side of a queue call: Queue(<CC_Q>,<CC_Q_OPTS>,<CC_Q_URL>,,<CC_Q_WAIT>)
exten => _[a-z].,1,NoOp(capture: queue caller ${EXTEN})
 same => n,Answer()
 same => n,Queue(${CC_Q},${CC_Q_OPTS},${CC_Q_URL},,${CC_Q_WAIT})
 same => n,NoOp(capture: QUEUESTATUS=${QUEUESTATUS})
 same => n,Hangup()

[capture-queue-exit]
; hotline-keys' context=: the one-digit extensions here are the keys that leave the queue
exten => 5,1,NoOp(capture: the caller left the queue with key 5)
 same => n,Wait(1)
 same => n,Hangup()

[capture-xfer-phones]
; a number for each test phone agentq<n>: 8<n> (an attended transfer dials what it receives as DTMF,
; so its target must be digits)
exten => _8X,1,Goto(cc-test-phones,agentq${EXTEN:1},1)

[capture-xfer]
; where a transferred call lands: back into the capture's FastAGI server, script xfer<exten>
exten => _7XXX,1,NoOp(capture: transfer of ${CHANNEL} to ${EXTEN})
 same => n,AGI(agi://127.0.0.1:${CAPTURE_AGI_PORT}/xfer${EXTEN},${EXTEN})
 same => n,NoOp(capture: AGISTATUS=${AGISTATUS})
 same => n,Hangup()
"""


@dataclass
class CaptureAsterisk(AsteriskInstance):
    """The harness's Asterisk plus the capture-only queues and features.conf.

    ``queue_general``: extra lines for queues.conf ``[general]`` (e.g. ``log_membername_as_agent``).
    """

    queue_general: str = ""

    def write_config(self) -> None:
        super().write_config()
        queues = (self.etc / "queues.conf").read_text()
        self._write("queues.conf", queues.replace("[general]\n", "[general]\n" + self.queue_general, 1) + QUEUES_EXTRA)
        self._write("features.conf", FEATURES_CONF)


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
        ast = CaptureAsterisk(binary, agi_port, sip_port=sip_port, sip_conf=sip_conf(sip_port),
                              extra_dialplan=CAPTURE_DIALPLAN + RESEARCH_DIALPLAN,
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
            for name, (qscenario, qlog_file, ami_file) in QUEUE_SCENARIOS.items():
                if only and name not in only:
                    continue
                print(f"recording {name} ...", flush=True)
                await self.record_queue(name, qscenario, qlog_file, ami_file)
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
        for extra in EXTRA_SESSIONS.get(name, {}):
            self.scripts[extra] = EXTRA_SCRIPTS[extra]
            self.logs.pop(f"agi-{extra}", None)
            self.sessions[extra] = asyncio.get_running_loop().create_future()
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
        for extra, extra_file in EXTRA_SESSIONS.get(name, {}).items():
            try:
                await asyncio.wait_for(self.sessions[extra], 30)
            except TimeoutError:
                print(f"  {name}: no FastAGI session {extra} came", flush=True)
            extra_log = self.logs.get(f"agi-{extra}")
            if extra_log is not None:
                (self.out / extra_file).write_text(extra_log.text())

    async def _quiet(self) -> None:
        for _ in range(100):
            chans = await asyncio.to_thread(self.ast.cli, "core show channels count")
            if chans.strip().startswith("0 active channels"):
                return
            await asyncio.sleep(0.2)


    # ------------------------------------------------------------ queue_log scenarios (no FastAGI)

    @property
    def queue_log(self) -> Path:
        return self.ast.log_dir / "queue_log"

    async def record_queue(self, name: str, scenario: QueueScenario, qlog_file: str, ami_file: str) -> None:
        """Run one app_queue scenario; save the queue_log lines it added (bytes as written) and its AMI side."""
        ami_log = Transcript()
        self.t0 = ami_log.t0
        self.ami.log = ami_log
        before = self.queue_log.stat().st_size if self.queue_log.exists() else 0
        await scenario(self, ami_log)
        await asyncio.sleep(1.0)
        await self._quiet()
        await asyncio.sleep(0.5)
        self.ami.log = None
        data = self.queue_log.read_bytes()[before:] if self.queue_log.exists() else b""
        (self.out / qlog_file).write_bytes(data)
        (self.out / ami_file).write_text(ami_log.text())

    async def set_phone(self, agent: str, spec: str) -> None:
        """The behaviour of ``Local/<agent>@cc-test-phones`` (global ``CC_PHONE_<agent>``)."""
        r = await self.ami.action("Setvar", Variable=f"CC_PHONE_{agent}", Value=spec)
        assert r.get("Response") == "Success", r

    async def queue_add(self, queue: str, agent: str, member_name: str | None = None, **extra: str) -> None:
        fields = {"Queue": queue, "Interface": member(agent), "Penalty": "0", **extra}
        if member_name is not None:
            fields["MemberName"] = member_name
        r = await self.ami.action("QueueAdd", **fields)
        assert r.get("Response") == "Success", r

    async def queue_remove(self, queue: str, agent: str) -> None:
        r = await self.ami.action("QueueRemove", Queue=queue, Interface=member(agent))
        assert r.get("Response") == "Success", r

    async def queue_pause(self, agent: str, paused: bool, queue: str | None = None, reason: str | None = None) -> None:
        fields = {"Interface": member(agent), "Paused": "true" if paused else "false"}
        if queue is not None:
            fields["Queue"] = queue
        if reason is not None:
            fields["Reason"] = reason
        r = await self.ami.action("QueuePause", **fields)
        assert r.get("Response") == "Success", r

    async def queue_caller(self, exten: str, queue: str, *, wait: str = "", url: str = "", opts: str = "",
                           callerid: str = '"Zhang San" <13800138000>') -> dict[str, str]:
        """A caller into ``Queue(queue,opts,url,,wait)``: the QueueCallerJoin event (its Channel is the
        queue caller ``Local/<exten>@capture-queue-XXXXXXXX;2``; the ``;1`` half is the handset)."""
        start = len(self.ami.messages)
        reply = await self.ami.action(
            "Originate", Channel=f"Local/{exten}@capture-queue", Application="Wait", Data="300",
            CallerID=callerid, Timeout="30000", Async="true",
            Variable=[f"CC_Q={queue}", f"CC_Q_WAIT={wait}", f"CC_Q_URL={url}", f"CC_Q_OPTS={opts}"])
        assert reply.get("Response") == "Success", reply
        return await self.event("QueueCallerJoin", start,
                                lambda m: m.get("Channel", "").startswith(f"Local/{exten}@capture-queue-"))

    async def event(self, name: str, start: int, pred: Callable[[dict[str, str]], bool] = lambda m: True,
                    limit: float = 60.0) -> dict[str, str]:
        return await self.ami.wait(lambda m: m.get("Event") == name and pred(m), limit=limit, start=start)

    async def hangup_handset(self, log: Transcript, caller_channel: str, why: str = "the caller hangs up") -> None:
        handset = caller_channel[:-1] + "1"
        log.add("--", f"AMI Hangup {handset} ({why})")
        await self.ami.action("Hangup", Channel=handset)

    def log_lines(self, since: int, *words: str) -> list[str]:
        """Lines of Asterisk's full log after byte ``since`` that mention any of ``words`` (case-insensitive)."""
        text = self.ast.full_log()[since:]
        return [ln for ln in text.splitlines() if any(w.lower() in ln.lower() for w in words)]


def member(agent: str) -> str:
    return f"Local/{agent}@cc-test-phones/n"


QueueScenario = Callable[["Recorder", Transcript], Awaitable[None]]


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


# ---------------------------------------------------------------- recording and transfers (issue 12, points 1, 2)
#
# Research only: a hotline call as our server makes it (the caller's channel is in a FastAGI session that
# ran EXEC Dial to the agent's Local phone), then what MixMonitor and the transfer actions do to it.

def note(rec: Recorder, conn: AGIConn, text: str) -> None:
    """A note in both transcripts (FastAGI and AMI) of the scenario."""
    conn.log.add("--", text)
    if rec.ami.log is not None:
        rec.ami.log.add("--", text)


async def bridge_agent(rec: Recorder, conn: AGIConn, agent: str, options: str = "") -> str:
    """Write ``EXEC Dial Local/<agent>@cc-test-phones/n,30[,options]`` (its reply comes when the call
    ends) and return the agent's leg (the dialed ``;1``) once the caller's channel is in the bridge."""
    start = len(rec.ami.messages)
    me = conn.env["agi_channel"]
    conn.write(f"EXEC Dial Local/{agent}@cc-test-phones/n,30{',' + options if options else ''}\n".encode())
    await conn.writer.drain()
    await rec.event("BridgeEnter", start, lambda m: m.get("Channel") == me, limit=40)
    end = next(m for m in rec.ami.messages[start:] if m.get("Event") == "DialEnd"
               and m.get("Channel") == me and m.get("DialStatus") == "ANSWER")
    return end["DestChannel"]


async def probe(conn: AGIConn, *names: str) -> None:
    for name in names:
        await conn.cmd(f"GET VARIABLE {name}", 10)


async def close_then_note_files(rec: Recorder, conn: AGIConn, *paths: Path) -> None:
    """End the FastAGI session (the channel can only go once AGI() returns), wait for the channel's
    Hangup, then note the files. Until then a MixMonitor that was not stopped keeps its files open."""
    me = conn.env["agi_channel"]
    await asyncio.sleep(0.5)
    await note_files(rec, conn, *paths)
    note(rec, conn, "the script closes the FastAGI session")
    conn.writer.close()
    start = max(0, len(rec.ami.messages) - 200)
    await rec.event("Hangup", start, lambda m: m.get("Channel") == me, limit=30)
    note(rec, conn, f"Hangup of {me} seen")
    await note_files(rec, conn, *paths)


async def note_files(rec: Recorder, conn: AGIConn, *paths: Path) -> None:
    """Each file's size once no size has changed for 1 s (MixMonitor's thread writes through a stdio
    buffer and finishes the WAV header when it closes the file, after MixMonitorStop), and whether the
    header was finished (RIFF size = file size - 8)."""
    def sizes() -> list[int | None]:
        return [path.stat().st_size if path.exists() else None for path in paths]

    last, stable_since = sizes(), time.monotonic()
    end = time.monotonic() + 15
    while time.monotonic() < end and time.monotonic() - stable_since < 1.0:
        await asyncio.sleep(0.2)
        now = sizes()
        if now != last:
            last, stable_since = now, time.monotonic()
    for path in paths:
        name = path.relative_to(rec.ast.root)
        if not path.exists():
            note(rec, conn, f"file {name}: missing")
            continue
        data = path.read_bytes()
        riff = int.from_bytes(data[4:8], "little") if len(data) >= 8 else -1
        header = "header finished" if riff == len(data) - 8 else f"header NOT finished (RIFF size {riff})"
        note(rec, conn, f"file {name}: {len(data)} bytes (~{max(0, len(data) - 44) / 16000:.1f} s of 8 kHz "
                        f"16-bit audio), {header}")


def note_log(rec: Recorder, conn: AGIConn, since: int, *words: str) -> None:
    lines = rec.log_lines(since, *words)
    for line in lines:
        note(rec, conn, "asterisk log: " + line.split("] ", 1)[-1][:300])
    if not lines:
        note(rec, conn, f"asterisk log: nothing about {', '.join(words)}")


def mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)


async def recording_ami(rec: Recorder, conn: AGIConn) -> None:
    """AMI MixMonitor on the caller's channel once bridged: mixed file given relative (lands in
    astspooldir/monitor), both legs apart with r()/t(), b (only while bridged), i(var) for the ID;
    StopMixMonitor after 4 s; the caller hangs up 2 s later."""
    await rec.set_phone("agentr1", "answer:1:60")
    await conn.cmd("ANSWER")
    me = conn.env["agi_channel"]
    await bridge_agent(rec, conn, "agentr1")
    await asyncio.sleep(1)
    recdir = rec.ast.root / "rec"
    recdir.mkdir(exist_ok=True)
    options = f"br({recdir}/recami-rx.wav)t({recdir}/recami-tx.wav)i(CC_MIXMON)"
    note(rec, conn, f"AMI MixMonitor Channel {me} File recami-mix.wav Options {options}")
    r = await rec.ami.action("MixMonitor", Channel=me, File="recami-mix.wav", Options=options)
    note(rec, conn, f"MixMonitor answered {r.get('Response')}: {r.get('Message')}")
    await asyncio.sleep(4)
    note(rec, conn, "AMI StopMixMonitor")
    r = await rec.ami.action("StopMixMonitor", Channel=me)
    note(rec, conn, f"StopMixMonitor answered {r.get('Response')}: {r.get('Message')}")
    await asyncio.sleep(2)
    await hangup_caller(rec, conn)
    await conn.reply(30)
    await probe(conn, "DIALSTATUS", "MIXMONITOR_FILENAME", "CC_MIXMON")
    await note_files(rec, conn, rec.ast.var / "spool" / "monitor" / "recami-mix.wav", recdir / "recami-rx.wav",
                     recdir / "recami-tx.wav")


async def recording_dialplan(rec: Recorder, conn: AGIConn) -> None:
    """The FastAGI session starts MixMonitor itself (EXEC MixMonitor <file>,bB(3)i(var); func_periodic_hook
    and what it needs are loaded for the beep) before dialing; Dial option A(x:y) plays "conf-now-recording" to the agent and
    to the caller at the answer, before the bridge; the caller hangs up after 4 s of talk."""
    await rec.set_phone("agentr1", "answer:1:60")
    for module in ("func_groupcount.so", "func_uri.so", "func_periodic_hook.so"):  # B() needs the last
        note(rec, conn, "CLI: " + (await rec.ast.acli(f"module load {module}")).strip())
    since = len(rec.ast.full_log())
    await conn.cmd("ANSWER")
    recdir = rec.ast.root / "rec"
    recdir.mkdir(exist_ok=True)
    await conn.cmd(f"EXEC MixMonitor {recdir}/recdial.wav,bB(3)i(CC_MIXMON)")
    await probe(conn, "MIXMONITOR_FILENAME", "CC_MIXMON")
    start = len(rec.ami.messages)
    await bridge_agent(rec, conn, "agentr1", "A(conf-now-recording:conf-now-recording)")
    me = conn.env["agi_channel"]
    answered = next(m for m in rec.ami.messages[start:] if m.get("Event") == "DialEnd" and m.get("Channel") == me)
    bridged = next(m for m in rec.ami.messages[start:] if m.get("Event") == "BridgeEnter" and m.get("Channel") == me)
    note(rec, conn, f"DialEnd ANSWER at index {rec.ami.messages.index(answered)}, caller BridgeEnter at index "
                    f"{rec.ami.messages.index(bridged)} (the A() announcement plays in between)")
    await asyncio.sleep(4)
    await hangup_caller(rec, conn)
    await conn.reply(30)
    await probe(conn, "DIALSTATUS", "ANSWEREDTIME")
    note_log(rec, conn, since, "mixmonitor", "periodic", "beep")
    await close_then_note_files(rec, conn, recdir / "recdial.wav")


async def recording_readonly(rec: Recorder, conn: AGIConn) -> None:
    """AMI MixMonitor to a file on a read-only tmpfs: what AMI answers, what is logged, whether the
    bridged call goes on (the caller hangs up after 5 s)."""
    await rec.set_phone("agentr1", "answer:1:60")
    rodir = rec.ast.root / "ro"
    mount_tmpfs(rodir, "size=100k,ro")
    try:
        await conn.cmd("ANSWER")
        me = conn.env["agi_channel"]
        await bridge_agent(rec, conn, "agentr1")
        since = len(rec.ast.full_log())
        start = len(rec.ami.messages)
        note(rec, conn, f"AMI MixMonitor Channel {me} File {rodir}/recro.wav Options b (read-only tmpfs)")
        r = await rec.ami.action("MixMonitor", Channel=me, File=f"{rodir}/recro.wav", Options="b")
        note(rec, conn, f"MixMonitor answered {r.get('Response')}: {r.get('Message')}")
        await asyncio.sleep(5)
        left = [m for m in rec.ami.messages[start:] if m.get("Event") == "BridgeLeave" and m.get("Channel") == me]
        note(rec, conn, f"5 s later: the caller {'LEFT' if left else 'is still in'} the bridge")
        await hangup_caller(rec, conn)
        await conn.reply(30)
        await probe(conn, "DIALSTATUS", "ANSWEREDTIME", "MIXMONITOR_FILENAME")
        note_log(rec, conn, since, "mixmonitor", "read-only", "cannot", "unable")
        await close_then_note_files(rec, conn, rodir / "recro.wav")
    finally:
        unmount(rodir)


async def recording_disk_full(rec: Recorder, conn: AGIConn) -> None:
    """AMI MixMonitor (mixed plus both legs apart) onto a 64 KiB tmpfs, which is full within ~1.5 s;
    the call goes on for 10 s, then the caller hangs up."""
    await rec.set_phone("agentr1", "answer:1:60")
    fulldir = rec.ast.root / "full"
    mount_tmpfs(fulldir, "size=64k")
    try:
        await conn.cmd("ANSWER")
        me = conn.env["agi_channel"]
        await bridge_agent(rec, conn, "agentr1")
        since = len(rec.ast.full_log())
        start = len(rec.ami.messages)
        options = f"br({fulldir}/recfull-rx.wav)t({fulldir}/recfull-tx.wav)"
        note(rec, conn, f"AMI MixMonitor Channel {me} File {fulldir}/recfull-mix.wav Options {options} (64 KiB tmpfs)")
        r = await rec.ami.action("MixMonitor", Channel=me, File=f"{fulldir}/recfull-mix.wav", Options=options)
        note(rec, conn, f"MixMonitor answered {r.get('Response')}: {r.get('Message')}")
        for _ in range(5):
            await asyncio.sleep(2)
            used = shutil.disk_usage(fulldir)
            note(rec, conn, f"tmpfs: {used.used} of {used.total} bytes used")
        left = [m for m in rec.ami.messages[start:] if m.get("Event") == "BridgeLeave" and m.get("Channel") == me]
        note(rec, conn, f"10 s later: the caller {'LEFT' if left else 'is still in'} the bridge")
        await hangup_caller(rec, conn)
        await conn.reply(30)
        await probe(conn, "DIALSTATUS", "ANSWEREDTIME")
        await close_then_note_files(rec, conn, fulldir / "recfull-mix.wav", fulldir / "recfull-rx.wav",
                                    fulldir / "recfull-tx.wav")
        note_log(rec, conn, since, "mixmonitor", "space", "write", "unable", "error", "close")
    finally:
        unmount(fulldir)


XFER_PROBES = ("BLINDTRANSFER", "ATTENDEDTRANSFER", "TRANSFERERNAME", "DIALSTATUS", "DIALEDPEERNAME", "CALLERID(num)")


async def transfer_then_probe(rec: Recorder, conn: AGIConn, action: str, **fields: str) -> None:
    """Send the transfer action while the caller's EXEC Dial is bridged; then what the FastAGI session sees:
    the Dial's reply, anything else within 2 s, a few commands; then the session ends (the script returns)."""
    note(rec, conn, f"AMI {action} " + " ".join(f"{k}={v}" for k, v in fields.items()))
    r = await rec.ami.action(action, **fields)
    note(rec, conn, f"{action} answered {r.get('Response')}: {r.get('Message')}")
    await conn.reply(30)
    await conn.drain_for(2.0)
    await conn.cmd("CHANNEL STATUS", 10)
    await probe(conn, "DIALSTATUS", "ANSWEREDTIME", "DIALEDPEERNAME", "BLINDTRANSFER")
    note(rec, conn, "the script returns: the session ends")


async def transfer_redirect(rec: Recorder, conn: AGIConn) -> None:
    """AMI Redirect of the caller's channel (in EXEC Dial, bridged with agent T1) to 7001@capture-xfer,
    whose dialplan runs AGI(agi://.../xfer7001): the second session rings agent T2."""
    await rec.set_phone("agentt1", "answer:1:60")
    await rec.set_phone("agentt2", "answer:2:60")
    await conn.cmd("ANSWER")
    await bridge_agent(rec, conn, "agentt1")
    await asyncio.sleep(2)
    await transfer_then_probe(rec, conn, "Redirect", Channel=conn.env["agi_channel"], Context="capture-xfer",
                              Exten="7001", Priority="1")


async def transfer_blind(rec: Recorder, conn: AGIConn) -> None:
    """AMI BlindTransfer of the agent's leg (the transferer; the caller is the transferee) to
    7002@capture-xfer: the caller comes back in a second FastAGI session, which rings agent T2."""
    await rec.set_phone("agentt1", "answer:1:60")
    await rec.set_phone("agentt2", "answer:2:60")
    await conn.cmd("ANSWER")
    leg = await bridge_agent(rec, conn, "agentt1")
    await asyncio.sleep(2)
    await transfer_then_probe(rec, conn, "BlindTransfer", Channel=leg, Context="capture-xfer", Exten="7002")


async def transfer_attended(rec: Recorder, conn: AGIConn) -> None:
    """Dial options tT; AMI Atxfer of the agent's leg to 7003@capture-xfer: the consultation call runs a
    second FastAGI session that rings agent T2; when T2 has answered, T1's leg hangs up (completes the
    transfer); 3 s later the caller hangs up."""
    await rec.set_phone("agentt1", "answer:1:60")
    await rec.set_phone("agentt2", "answer:2:60")
    await conn.cmd("ANSWER")
    leg = await bridge_agent(rec, conn, "agentt1", "tT")
    await asyncio.sleep(2)
    start = len(rec.ami.messages)
    note(rec, conn, f"AMI Atxfer Channel={leg} Context=capture-xfer Exten=7003")
    r = await rec.ami.action("Atxfer", Channel=leg, Context="capture-xfer", Exten="7003")
    note(rec, conn, f"Atxfer answered {r.get('Response')}: {r.get('Message')}")
    try:
        await rec.event("DialEnd", start, lambda m: m.get("DialStatus") == "ANSWER"
                        and m.get("DestChannel", "").startswith("Local/agentt2@cc-test-phones-"), limit=30)
        await asyncio.sleep(2)
        note(rec, conn, f"AMI Hangup {leg} (agent T1 hangs up: completes the transfer)")
        await rec.ami.action("Hangup", Channel=leg)
        await rec.event("AttendedTransfer", start, limit=10)
    except TimeoutError:
        note(rec, conn, "the transfer did not happen (no DialEnd ANSWER of agent T2 or no AttendedTransfer)")
    await asyncio.sleep(3)
    await hangup_caller(rec, conn)
    await conn.reply(30)
    await conn.drain_for(1.0)
    await probe(conn, "DIALSTATUS", "ANSWEREDTIME", "DIALEDPEERNAME")


async def transfer_target(rec: Recorder, conn: AGIConn) -> None:
    """The second FastAGI session (script xfer7001/2/3): what it knows of the transfer, then it rings agent
    T2 like our distribution would (EXEC Dial, 10 s = two rings). For a redirect or blind transfer the
    session's channel is the caller's, and the caller hangs up 3 s after T2 answered; for an attended
    transfer it is the consultation channel, and its Dial lasts until the caller hangs up."""
    await conn.cmd("CHANNEL STATUS", 10)
    await probe(conn, *XFER_PROBES)
    own_caller = conn.env.get("agi_network_script") != "xfer7003"
    start = len(rec.ami.messages)
    conn.write(b"EXEC Dial Local/agentt2@cc-test-phones/n,10\n")
    await conn.writer.drain()
    if own_caller:
        await rec.event("BridgeEnter", start, lambda m: m.get("Channel") == conn.env["agi_channel"], limit=30)
        await asyncio.sleep(3)
        await hangup_caller(rec, conn)
    await conn.reply(60)
    await conn.drain_for(1.0)
    await probe(conn, "DIALSTATUS", "ANSWEREDTIME", "DIALEDPEERNAME")


# ---------------------------------------------------------------- app_queue's queue_log (issue 12, point 4)
#
# Each scenario is one situation of the queue hotline-fallback (or a template of it, QUEUES_EXTRA); the
# agents are Local phones of [cc-test-phones] added with AMI QueueAdd; the caller is an Originate into
# [capture-queue] whose ;1 half (the handset) only waits: the test's AMI hangs it up or plays a key on it.
# queue_log-<name>.txt holds exactly the bytes app_queue appended to astlogdir/queue_log meanwhile.

async def q_members(rec: Recorder, log: Transcript) -> None:
    """Member administration without a call: add (with and without a member name), pause with and
    without a reason, in one queue and in all queues, unpause, remove."""
    q = "hotline-fallback"
    await rec.queue_add(q, "agentq1", "Agent Q1")
    await rec.queue_add(q, "agentq9")  # no MemberName: the interface is the name
    await rec.queue_pause("agentq1", True, q, "lunch")
    await rec.queue_pause("agentq1", False, q)
    await rec.queue_pause("agentq1", True, q)  # no reason
    await rec.queue_pause("agentq1", False, q, "back")
    await rec.queue_pause("agentq9", True, None, "break")  # no Queue: every queue the member is in
    await rec.queue_pause("agentq9", False, None)
    await rec.queue_remove(q, "agentq1")
    await rec.queue_remove(q, "agentq9")


async def q_connect_ringall(rec: Recorder, log: Transcript) -> None:
    """hotline-fallback as configured (ringall, 15 s rounds, 2 s retry): agent Q1 never answers; after
    the first round agent Q2 is added; the second round rings both, Q2 answers after 2 s; 4 s later
    the caller hangs up."""
    q = "hotline-fallback"
    await rec.set_phone("agentq1", "never")
    await rec.set_phone("agentq2", "answer:2:60")
    await rec.queue_add(q, "agentq1", "Agent Q1")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("ringall", q, url="https://desk.example/pop?call=1")
    await rec.event("AgentRingNoAnswer", start)
    await rec.queue_add(q, "agentq2", "Agent Q2")
    await rec.event("AgentConnect", start)
    await asyncio.sleep(4)
    await rec.hangup_handset(log, join["Channel"])
    await rec.event("AgentComplete", start)
    await rec.queue_remove(q, "agentq1")
    await rec.queue_remove(q, "agentq2")


async def q_connect_linear(rec: Recorder, log: Transcript) -> None:
    """hotline-linear (one agent at a time, 10 s = two rings): Q1 rings and does not answer, Q2 rings
    and answers after 2 s; 3 s later the caller hangs up."""
    q = "hotline-linear"
    await rec.set_phone("agentq1", "never")
    await rec.set_phone("agentq2", "answer:2:60")
    await rec.queue_add(q, "agentq1", "Agent Q1")
    await rec.queue_add(q, "agentq2", "Agent Q2")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("linear", q)
    await rec.event("AgentConnect", start)
    await asyncio.sleep(3)
    await rec.hangup_handset(log, join["Channel"])
    await rec.event("AgentComplete", start)
    await rec.queue_remove(q, "agentq1")
    await rec.queue_remove(q, "agentq2")


async def q_complete_agent(rec: Recorder, log: Transcript) -> None:
    """Q3 answers after 1 s and hangs up after 4 s of talk (the agent ends the call)."""
    q = "hotline-fallback"
    await rec.set_phone("agentq3", "answer:1:4")
    await rec.queue_add(q, "agentq3", "Agent Q3")
    start = len(rec.ami.messages)
    await rec.queue_caller("agentend", q)
    await rec.event("AgentComplete", start)
    await rec.queue_remove(q, "agentq3")


async def q_abandon(rec: Recorder, log: Transcript) -> None:
    """The caller hangs up after 6 s while Q1 (never answers) is ringing."""
    q = "hotline-fallback"
    await rec.set_phone("agentq1", "never")
    await rec.queue_add(q, "agentq1", "Agent Q1")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("abandon", q)
    await rec.event("AgentCalled", start)
    await asyncio.sleep(6)
    await rec.hangup_handset(log, join["Channel"])
    await rec.event("QueueCallerAbandon", start)
    await rec.queue_remove(q, "agentq1")


async def q_abandon_paused(rec: Recorder, log: Transcript) -> None:
    """The only member is paused (reason 'training'); the caller waits 4 s with nobody ringing and
    hangs up; the member is unpaused."""
    q = "hotline-fallback"
    await rec.set_phone("agentq2", "answer:2:60")
    await rec.queue_add(q, "agentq2", "Agent Q2")
    await rec.queue_pause("agentq2", True, q, "training")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("paused", q)
    await asyncio.sleep(4)
    await rec.hangup_handset(log, join["Channel"])
    await rec.event("QueueCallerAbandon", start)
    await rec.queue_pause("agentq2", False, q)
    await rec.queue_remove(q, "agentq2")


async def q_positions(rec: Recorder, log: Transcript) -> None:
    """Two callers wait while the only member is paused: the first enters at position 1, the second at 2;
    the first hangs up after 3 s (the second moves up to 1), the second 3 s later."""
    q = "hotline-fallback"
    await rec.set_phone("agentq2", "answer:2:60")
    await rec.queue_add(q, "agentq2", "Agent Q2")
    await rec.queue_pause("agentq2", True, q, "lunch")
    start = len(rec.ami.messages)
    first = await rec.queue_caller("first", q)
    second = await rec.queue_caller("second", q, callerid='"Li Si" <13700137000>')
    await asyncio.sleep(3)
    await rec.hangup_handset(log, first["Channel"], "the first caller hangs up")
    await rec.event("QueueCallerAbandon", start, lambda m: m.get("Channel") == first["Channel"])
    await asyncio.sleep(3)
    await rec.hangup_handset(log, second["Channel"], "the second caller hangs up")
    await rec.event("QueueCallerAbandon", start, lambda m: m.get("Channel") == second["Channel"])
    await rec.queue_pause("agentq2", False, q)
    await rec.queue_remove(q, "agentq2")


async def q_exit_with_key(rec: Recorder, log: Transcript) -> None:
    """hotline-keys (context=capture-queue-exit): Q1 rings (never answers); after 4 s the caller
    presses 5 (AMI PlayDTMF on the handset) and leaves the queue to 5@capture-queue-exit."""
    q = "hotline-keys"
    await rec.set_phone("agentq1", "never")
    await rec.queue_add(q, "agentq1", "Agent Q1")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("withkey", q)
    await asyncio.sleep(4)
    handset = join["Channel"][:-1] + "1"
    log.add("--", f"AMI PlayDTMF 5 on {handset} (the caller presses 5)")
    r = await rec.ami.action("PlayDTMF", Channel=handset, Digit="5", Duration="250")
    assert r.get("Response") == "Success", r
    await rec.event("QueueCallerLeave", start)
    await rec.event("Hangup", start, lambda m: m.get("Channel") == join["Channel"])
    await rec.queue_remove(q, "agentq1")


async def q_exit_with_timeout(rec: Recorder, log: Transcript) -> None:
    """Queue(hotline-fallback,,,,6): Q1 rings (never answers); the 6 s maximum wait ends the wait
    (timeoutpriority = app cuts the 15 s ring round)."""
    q = "hotline-fallback"
    await rec.set_phone("agentq1", "never")
    await rec.queue_add(q, "agentq1", "Agent Q1")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("timeout", q, wait="6")
    await rec.event("QueueCallerLeave", start)
    await rec.event("Hangup", start, lambda m: m.get("Channel") == join["Channel"])
    await rec.queue_remove(q, "agentq1")


async def q_blind_transfer(rec: Recorder, log: Transcript) -> None:
    """Q2 answers; 2 s later AMI BlindTransfer of Q2's leg sends the caller to s@cc-test-park; 2 s
    later the caller hangs up."""
    q = "hotline-fallback"
    await rec.set_phone("agentq2", "answer:1:60")
    await rec.queue_add(q, "agentq2", "Agent Q2")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("blindxfer", q)
    conn_ev = await rec.event("AgentConnect", start)
    await asyncio.sleep(2)
    log.add("--", f"AMI BlindTransfer {conn_ev['DestChannel']} (the agent's leg) to s@cc-test-park")
    r = await rec.ami.action("BlindTransfer", Channel=conn_ev["DestChannel"], Context="cc-test-park", Exten="s")
    assert r.get("Response") == "Success", r
    await rec.event("BlindTransfer", start)
    await asyncio.sleep(2)
    await rec.hangup_handset(log, join["Channel"])
    await rec.event("Hangup", start, lambda m: m.get("Channel") == join["Channel"])
    await rec.queue_remove(q, "agentq2")


async def q_attended_transfer(rec: Recorder, log: Transcript) -> None:
    """Queue option t (the member may transfer): Q2 answers; AMI Atxfer of Q2's leg to 83@capture-xfer-phones
    (agentq3, answers after 1 s); 2 s later Q2's leg hangs up, which completes the transfer; 3 s later
    the caller hangs up."""
    q = "hotline-fallback"
    await rec.set_phone("agentq2", "answer:1:60")
    await rec.set_phone("agentq3", "answer:1:60")
    await rec.queue_add(q, "agentq2", "Agent Q2")
    start = len(rec.ami.messages)
    join = await rec.queue_caller("attxfer", q, opts="t")
    conn_ev = await rec.event("AgentConnect", start)
    await asyncio.sleep(2)
    agent_leg = conn_ev["DestChannel"]
    log.add("--", f"AMI Atxfer {agent_leg} (the agent's leg) to 83@capture-xfer-phones (agentq3)")
    r = await rec.ami.action("Atxfer", Channel=agent_leg, Context="capture-xfer-phones", Exten="83")
    log.add("--", f"Atxfer answered {r.get('Response')}: {r.get('Message')}")
    if r.get("Response") == "Success":
        try:
            await rec.event("Newstate", start, lambda m: m.get("ChannelStateDesc") == "Up"
                            and m.get("Channel", "").startswith("Local/83@capture-xfer-phones-"), limit=20)
        except TimeoutError:
            log.add("--", "agentq3's phone did not answer within 20 s")
        await asyncio.sleep(2)
        log.add("--", f"AMI Hangup {agent_leg} (the transferring agent hangs up: completes the transfer)")
        await rec.ami.action("Hangup", Channel=agent_leg)
        try:
            await rec.event("AttendedTransfer", start, limit=10)
        except TimeoutError:
            log.add("--", "no AttendedTransfer event within 10 s")
        await asyncio.sleep(3)
    await rec.hangup_handset(log, join["Channel"])
    await rec.event("Hangup", start, lambda m: m.get("Channel") == join["Channel"])
    await rec.queue_remove(q, "agentq2")


async def q_membername_as_agent(rec: Recorder, log: Transcript) -> None:
    """queues.conf [general] log_membername_as_agent = yes and log-caller-id-name = yes (module reload
    app_queue.so): add, a caller whose name holds a '|' answered by Q2, pause, unpause, remove."""
    rec.ast.queue_general = "log_membername_as_agent = yes\nlog-caller-id-name = yes\n"
    rec.ast.write_config()
    log.add("--", "queues.conf [general]: log_membername_as_agent = yes, log-caller-id-name = yes; "
                  "module reload app_queue.so")
    log.add("--", (await rec.ast.acli("module reload app_queue.so")).strip())
    try:
        q = "hotline-fallback"
        await rec.set_phone("agentq2", "answer:1:60")
        await rec.queue_add(q, "agentq2", "Agent Q2")
        start = len(rec.ami.messages)
        join = await rec.queue_caller("membername", q, callerid='"Wang|Wu" <13900139000>')
        await rec.event("AgentConnect", start)
        await asyncio.sleep(2)
        await rec.hangup_handset(log, join["Channel"])
        await rec.event("AgentComplete", start)
        await rec.queue_pause("agentq2", True, q, "lunch")
        await rec.queue_pause("agentq2", False, q)
        await rec.queue_remove(q, "agentq2")
    finally:
        rec.ast.queue_general = ""
        rec.ast.write_config()
        await rec.ast.acli("module reload app_queue.so")


async def q_logger(rec: Recorder, log: Transcript) -> None:
    """The logger's own lines: the queue_log's first line (written when Asterisk started, before any
    scenario) goes into a note; then ``logger reload`` from the CLI."""
    first = rec.queue_log.read_bytes().split(b"\n", 1)[0] + b"\n"
    log.add("--", f"first line of queue_log, written at boot: {first.decode()!r}")
    log.add("--", "CLI: logger reload")
    await rec.ast.acli("logger reload")
    await asyncio.sleep(0.5)


QUEUE_SCENARIOS: dict[str, tuple[QueueScenario, str, str]] = {
    "qlogger": (q_logger, "queue_log-logger.txt", "queue_log-logger-ami.txt"),
    "qmembers": (q_members, "queue_log-members.txt", "queue_log-members-ami.txt"),
    "qringall": (q_connect_ringall, "queue_log-ringnoanswer-connect-completecaller.txt",
                 "queue_log-ringnoanswer-connect-completecaller-ami.txt"),
    "qlinear": (q_connect_linear, "queue_log-linear.txt", "queue_log-linear-ami.txt"),
    "qagentend": (q_complete_agent, "queue_log-completeagent.txt", "queue_log-completeagent-ami.txt"),
    "qabandon": (q_abandon, "queue_log-abandon.txt", "queue_log-abandon-ami.txt"),
    "qpaused": (q_abandon_paused, "queue_log-abandon-paused.txt", "queue_log-abandon-paused-ami.txt"),
    "qpositions": (q_positions, "queue_log-positions.txt", "queue_log-positions-ami.txt"),
    "qkey": (q_exit_with_key, "queue_log-exitwithkey.txt", "queue_log-exitwithkey-ami.txt"),
    "qtimeout": (q_exit_with_timeout, "queue_log-exitwithtimeout.txt", "queue_log-exitwithtimeout-ami.txt"),
    "qblindxfer": (q_blind_transfer, "queue_log-blindtransfer.txt", "queue_log-blindtransfer-ami.txt"),
    "qattxfer": (q_attended_transfer, "queue_log-attendedtransfer.txt", "queue_log-attendedtransfer-ami.txt"),
    # last: it reloads app_queue with other [general] options (and back)
    "qmembername": (q_membername_as_agent, "queue_log-membername-as-agent.txt",
                    "queue_log-membername-as-agent-ami.txt"),
}


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
    # issue 12 research: recording and transfers of a call our server put through (docs/research-recording-transfers.md)
    "recami": (recording_ami, "recording-ami-action-agi.txt", "recording-ami-action-ami.txt"),
    "recdial": (recording_dialplan, "recording-dialplan-agi.txt", "recording-dialplan-ami.txt"),
    "recro": (recording_readonly, "recording-readonly-dir-agi.txt", "recording-readonly-dir-ami.txt"),
    "recfull": (recording_disk_full, "recording-disk-full-agi.txt", "recording-disk-full-ami.txt"),
    "xferredir": (transfer_redirect, "transfer-redirect-agi.txt", "transfer-redirect-ami.txt"),
    "xferblind": (transfer_blind, "transfer-blind-agi.txt", "transfer-blind-ami.txt"),
    "xferatt": (transfer_attended, "transfer-attended-agi.txt", "transfer-attended-ami.txt"),
}


# Further FastAGI sessions of a scenario's call (script name -> capture file), e.g. a transfer that
# brings the caller back into the FastAGI server.
EXTRA_SESSIONS: dict[str, dict[str, str]] = {
    "xferredir": {"xfer7001": "transfer-redirect-agi2.txt"},
    "xferblind": {"xfer7002": "transfer-blind-agi2.txt"},
    "xferatt": {"xfer7003": "transfer-attended-agi2.txt"},
}
EXTRA_SCRIPTS: dict[str, Scenario] = {"xfer7001": transfer_target, "xfer7002": transfer_target,
                                      "xfer7003": transfer_target}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--only", nargs="*", default=None,
                    help="scenario names: " + ", ".join([*SCENARIOS, *QUEUE_SCENARIOS]))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(Recorder(a.out).run(set(a.only) if a.only else None))


if __name__ == "__main__":
    main()
