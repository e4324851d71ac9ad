"""A throw-away real Asterisk for the real-PBX test tier, with the project's own ``dialplans/``.

The instance lives in a short temporary directory (the console socket path must stay under 108
bytes), listens on loopback ports picked for it, and reads:

* ``dialplans/extensions_callcentre.conf``, ``globals_callcentre.conf``, ``queues_callcentre.conf``
  copied **unmodified**; ``manager_callcentre.conf`` with only its secret replaced and
  ``voicemail_callcentre.conf.sample`` with only its PIN replaced, as docs/asterisk.md says;
* the documented globals (``CALLCENTRE_AGI`` and friends) set after the include, which is how an
  operator overrides the file's defaults;
* ``extensions_test.conf``: the tests' own "handsets" and "phones" (Local channels), below.

Test contexts (all driven by channel variables given to AMI Originate, or by globals set with AMI
Setvar, so a test states its caller and its agents in one place):

``[cc-test-trunk]``
    The carrier side of a hotline call: ``Local/<DID>@cc-test-trunk`` runs
    ``Goto(callcentre-hotline,<DID>,1)``, exactly what an operator's inbound context does.
``[cc-test-handset]``, extension ``s``
    The caller's handset (the other half of the Local channel). It runs steps ``CC_T_1``,
    ``CC_T_2``, ... in order: ``wait:<s>``, ``dtmf:<digits>`` (SendDTMF; ``w`` is a 0.5 s pause),
    ``play:<file>`` (Playback, so RECORD FILE hears a voice), ``hangup``; after the last step it
    holds for ``CC_T_HOLD`` seconds (default 120) and hangs up.
``[cc-test-phones]``, extensions ``agent...``
    An agent's phone, ``Local/<agent>@cc-test-phones``. Its behaviour is the global
    ``CC_PHONE_<agent>``: ``answer:<ring s>:<talk s>`` (Ringing, answer after ring s, talk, hang
    up), ``never`` (rings until cancelled), ``busy``, ``unavailable``; unset = ``answer:1:30``.
    After answering it runs ``CC_PHONE_DTMF_<agent>`` (SendDTMF) if set, and it plays
    ``tt-monkeys`` while it talks so there is audio on the line.
``[cc-test-owner]``
    The owner's phone for calls the server places outward (closure survey, call-back):
    ``CC_OWNER`` global ``answer:<ring s>:<dtmf>:<hold s>``, ``busy``, ``never``.
    ``CC_OWNER_<digits of the number>`` (e.g. ``CC_OWNER_8613800138000``) overrides it for one number.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
DIALPLANS = REPO / "dialplans"
SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
MOH = Path("/usr/share/asterisk/moh")

MODULES = [
    # core of the call path
    "pbx_config.so", "res_agi.so", "app_dial.so", "app_queue.so", "app_voicemail.so", "app_playback.so",
    "app_verbose.so", "app_senddtmf.so", "app_stack.so", "app_exec.so", "app_echo.so", "app_record.so",
    "app_read.so", "app_chanspy.so", "app_mixmonitor.so", "app_originate.so", "app_softhangup.so",
    "app_transfer.so", "app_userevent.so", "app_system.so", "app_waituntil.so", "app_playtones.so",
    "app_bridgewait.so", "app_attended_transfer.so", "app_blind_transfer.so", "app_channelredirect.so",
    "res_musiconhold.so", "res_timing_timerfd.so",
    "bridge_simple.so", "bridge_softmix.so", "bridge_holding.so", "bridge_native_rtp.so",
    "bridge_builtin_features.so",
    "func_strings.so", "func_channel.so", "func_callerid.so", "func_logic.so", "func_cut.so",
    "func_global.so", "func_math.so", "func_shell.so", "func_db.so", "func_timeout.so", "func_hangupcause.so",
    "func_devstate.so", "func_rand.so", "func_env.so", "func_base64.so",
    "format_wav.so", "format_pcm.so", "format_gsm.so", "format_sln.so", "codec_ulaw.so", "codec_alaw.so",
    "codec_gsm.so", "codec_resample.so", "codec_a_mu.so",
    "res_rtp_asterisk.so", "chan_sip.so", "res_crypto.so", "res_speech.so",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_asterisk() -> str | None:
    """The asterisk command: $CALLCENTRE_TEST_ASTERISK, else PATH, else the shared install's default."""
    explicit = os.environ.get("CALLCENTRE_TEST_ASTERISK")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("asterisk")
    if found:
        return found
    default = "/opt/asterisk-20/bin/asterisk"
    return default if os.access(default, os.X_OK) else None


TEST_DIALPLAN = r"""
; ---- the tests' own contexts (see tests/pbx/asterisk.py) ----
[cc-test-trunk]
exten => _X.,1,NoOp(cc-test: trunk delivers a hotline call on ${EXTEN})
 same => n,Goto(callcentre-hotline,${EXTEN},1)
exten => s,1,Goto(callcentre-hotline,s,1)

[cc-test-handset]
exten => s,1,NoOp(cc-test: handset of ${CALLERID(all)})
 same => n,Set(i=1)
 same => n(loop),Set(step=${CC_T_${i}})
 same => n,GotoIf($["${step}" = ""]?hold)
 same => n,Set(op=${CUT(step,:,1)})
 same => n,Set(arg=${CUT(step,:,2-)})
 same => n,Verbose(1,cc-test: handset step ${i} ${op} ${arg})
 same => n,ExecIf($["${op}" = "wait"]?Wait(${arg}))
 same => n,ExecIf($["${op}" = "dtmf"]?SendDTMF(${arg},250,120))
 same => n,ExecIf($["${op}" = "play"]?Playback(${arg}))
 same => n,GotoIf($["${op}" = "hangup"]?bye)
 same => n,Set(i=$[${i} + 1])
 same => n,Goto(loop)
 same => n(hold),Wait(${IF($["${CC_T_HOLD}" = ""]?120:${CC_T_HOLD})})
 same => n(bye),Verbose(1,cc-test: handset hangs up)
 same => n,Hangup()

[cc-test-phones]
exten => _age[n]t.,1,Set(spec=${GLOBAL(CC_PHONE_${EXTEN})})
 same => n,ExecIf($["${spec}" = ""]?Set(spec=answer:1:30))
 same => n,Set(mode=${CUT(spec,:,1)})
 same => n,Verbose(1,cc-test: phone ${EXTEN} rings (${spec}))
 same => n,GotoIf($["${mode}" = "busy"]?busy)
 same => n,GotoIf($["${mode}" = "unavailable"]?unavail)
 same => n,Ringing()
 same => n,GotoIf($["${mode}" = "never"]?never)
 same => n,Wait(${CUT(spec,:,2)})
 same => n,Answer()
 same => n,Verbose(1,cc-test: phone ${EXTEN} answered)
 same => n,Set(dtmf=${GLOBAL(CC_PHONE_DTMF_${EXTEN})})
 same => n,ExecIf($["${dtmf}" != ""]?SendDTMF(${dtmf},250,120))
 same => n,Set(TIMEOUT(absolute)=${CUT(spec,:,3)})
 same => n(talk),Playback(tt-monkeys)
 same => n,Goto(talk)
 same => n(never),Wait(600)
 same => n,Hangup()
 same => n(busy),Busy(5)
 same => n,Hangup()
 same => n(unavail),Congestion(5)
 same => n,Hangup()
exten => T,1,Verbose(1,cc-test: phone ${CALLERID(num)} hangs up after talking)
 same => n,Hangup()

[cc-test-owner]
exten => _[+0-9].,1,Set(spec=${GLOBAL(CC_OWNER_${FILTER(0-9,${EXTEN})})})
 same => n,ExecIf($["${spec}" = ""]?Set(spec=${GLOBAL(CC_OWNER)}))
 same => n,ExecIf($["${spec}" = ""]?Set(spec=answer:1::20))
 same => n,Set(mode=${CUT(spec,:,1)})
 same => n,Verbose(1,cc-test: owner phone ${EXTEN} rings (${spec}))
 same => n,GotoIf($["${mode}" = "busy"]?busy)
 same => n,Ringing()
 same => n,GotoIf($["${mode}" = "never"]?never)
 same => n,Wait(${CUT(spec,:,2)})
 same => n,Answer()
 same => n,Set(dtmf=${CUT(spec,:,3)})
 same => n,ExecIf($["${dtmf}" != ""]?SendDTMF(${dtmf},250,120))
 same => n,Wait(${CUT(spec,:,4)})
 same => n,Hangup()
 same => n(never),Wait(600)
 same => n,Hangup()
 same => n(busy),Busy(5)
 same => n,Hangup()

[cc-test-park]
; a channel that only waits (the far end of a supervisor's ChanSpy leg, and the like)
exten => _X.,1,Answer()
 same => n,Wait(600)
 same => n,Hangup()
exten => s,1,Answer()
 same => n,Wait(600)
 same => n,Hangup()
"""


@dataclass
class AsteriskInstance:
    """One throw-away Asterisk: build its directory, start it, run CLI commands, stop it."""

    binary: str
    agi_port: int
    ami_port: int = field(default_factory=free_port)
    sip_port: int = field(default_factory=free_port)
    ami_secret: str = "pbx-tier-secret-0123456789abcdef"
    test_secret: str = "pbx-tier-test-account-secret"
    globals_extra: dict[str, str] = field(default_factory=dict)
    sip_conf: str = ""
    extra_dialplan: str = ""
    queues_extra: str = ""  # test-only queues appended to queues.conf (after the project's own)
    root: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # short: the console socket RUN/var/run/asterisk.ctl must fit in sun_path (108 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="ccast-", dir="/tmp"))
        self.etc = self.root / "etc"
        self.var = self.root / "var"
        self.log_dir = self.var / "log"
        self.record_dir = self.var / "spool" / "callcentre"
        self._layout()

    # ------------------------------------------------------------------ configuration

    @property
    def conf(self) -> Path:
        return self.etc / "asterisk.conf"

    def _layout(self) -> None:
        for d in (self.etc, self.var / "lib" / "agi-bin", self.var / "spool", self.var / "run", self.log_dir,
                  self.record_dir, self.var / "lib" / "sounds", self.var / "lib" / "keys"):
            d.mkdir(parents=True, exist_ok=True)
        prefix = Path(self.binary).resolve().parent.parent
        sounds = self.var / "lib" / "sounds"
        (sounds / "en").symlink_to(SOUNDS)
        (sounds / "callcentre").symlink_to(REPO / "prompts")  # prompts.asterisk_path: callcentre
        (self.var / "lib" / "moh").symlink_to(MOH)
        (self.var / "lib" / "documentation").symlink_to(prefix / "var" / "lib" / "asterisk" / "documentation")

    def write_config(self) -> None:
        """(Re)write every configuration file from the fields (called by start())."""
        prefix = Path(self.binary).resolve().parent.parent
        w = self._write
        w("asterisk.conf", f"""[directories]
astetcdir => {self.etc}
astmoddir => {prefix}/lib/asterisk/modules
astvarlibdir => {self.var}/lib
astdbdir => {self.var}/lib
astkeydir => {self.var}/lib
astdatadir => {self.var}/lib
astagidir => {self.var}/lib/agi-bin
astspooldir => {self.var}/spool
astrundir => {self.var}/run
astlogdir => {self.log_dir}
astsbindir => {prefix}/sbin
[options]
verbose = 5
debug = 0
runuser = root
rungroup = root
defaultlanguage = en
""")
        w("modules.conf", "[modules]\nautoload = no\n" + "".join(f"load => {m}\n" for m in MODULES))
        w("logger.conf", """[general]
dateformat = %F %T.%3q
[logfiles]
full => notice,warning,error,verbose,dtmf
messages => notice,warning,error
""")
        # The project's files, unmodified where the docs say to copy them as they are.
        for name in ("extensions_callcentre.conf", "globals_callcentre.conf", "queues_callcentre.conf"):
            shutil.copyfile(DIALPLANS / name, self.etc / name)
        # manager_callcentre.conf: the docs' one edit is the secret.
        manager = (DIALPLANS / "manager_callcentre.conf").read_text()
        assert "secret = CHANGE-ME-callcentre-ami-secret" in manager
        w("manager_callcentre.conf", manager.replace("CHANGE-ME-callcentre-ami-secret", self.ami_secret))
        vm = (DIALPLANS / "voicemail_callcentre.conf.sample").read_text().replace("CHANGE-ME-PIN", "4242")
        w("voicemail.conf", "[general]\nformat = wav\nmaxsilence = 5\nminsecs = 0\nmaxsecs = 60\n\n" + vm)
        w("manager.conf", f"""[general]
enabled = yes
port = {self.ami_port}
bindaddr = 127.0.0.1
#include manager_callcentre.conf

[cctest]
secret = {self.test_secret}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
""")
        glob = {"CALLCENTRE_AGI": f"127.0.0.1:{self.agi_port}", "CALLCENTRE_FALLBACK_WAIT": "20",
                **self.globals_extra}
        w("extensions.conf", "[general]\nstatic = yes\nwriteprotect = yes\n\n[globals]\n"
          "#include globals_callcentre.conf\n"
          + "".join(f"{k}={v}\n" for k, v in glob.items())
          + "\n#include extensions_callcentre.conf\n#include extensions_test.conf\n")
        w("extensions_test.conf", TEST_DIALPLAN + "\n" + self.extra_dialplan)
        w("queues.conf", "[general]\npersistentmembers = no\nshared_lastcall = yes\n\n#include queues_callcentre.conf\n"
          + self.queues_extra)
        w("musiconhold.conf", "[default]\nmode = files\ndirectory = moh\n")
        w("sip.conf", self.sip_conf or f"""[general]
udpbindaddr = 127.0.0.1:{self.sip_port}
context = cc-test-nowhere
allowguest = no
""")
        w("indications.conf", "[general]\ncountry = cn\n[cn]\ndescription = China\n"
          "ringcadence = 1000,4000\nring = 450/1000,0/4000\nbusy = 450/350,0/350\ndial = 450\n"
          "congestion = 450/700,0/700\ncallwaiting = 450/400,0/4000\n")
        for empty in ("cdr.conf", "cel.conf", "features.conf", "rtp.conf", "ccss.conf", "udptl.conf",
                      "acl.conf", "res_stun_monitor.conf", "stasis.conf", "http.conf"):
            if not (self.etc / empty).exists():
                w(empty, "")
        w("cdr.conf", "[general]\nenable = no\n")
        w("rtp.conf", "[general]\nrtpstart = 30000\nrtpend = 40000\n")

    def _write(self, name: str, text: str) -> None:
        (self.etc / name).write_text(text)

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 20.0) -> None:
        """Start in the foreground (a child we own) and wait until it is fully booted."""
        self.write_config()
        self.console = open(self.log_dir / "console.txt", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, "-C", str(self.conf), "-f", "-c", "-n", "-g"],
            stdin=subprocess.PIPE, stdout=self.console, stderr=subprocess.STDOUT, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.proc.returncode} at start:\n{self.console_text()[-3000:]}")
            r = subprocess.run([self.binary, "-C", str(self.conf), "-rx", "core waitfullybooted"],
                               capture_output=True, timeout=timeout)
            if r.returncode == 0 and b"fully booted" in r.stdout.lower():
                break
            if time.monotonic() > end:
                raise RuntimeError(f"asterisk did not boot within {timeout} s:\n{self.console_text()[-3000:]}")
            time.sleep(0.1)
        missing = [m for m in MODULES if m not in self.cli(f"module show like {m}")]
        if missing:
            raise RuntimeError(f"asterisk did not load {missing}:\n{self.full_log()[-3000:]}")
        self.cli("agi set debug on")

    def cli(self, command: str, timeout: float = 15.0) -> str:
        r = subprocess.run([self.binary, "-C", str(self.conf), "-rx", command], capture_output=True, timeout=timeout)
        return r.stdout.decode("utf-8", "replace")

    async def acli(self, command: str, limit: float = 15.0) -> str:
        return await asyncio.to_thread(self.cli, command, limit)

    def console_text(self) -> str:
        p = self.log_dir / "console.txt"
        return p.read_text("utf-8", "replace") if p.exists() else ""

    def full_log(self) -> str:
        p = self.log_dir / "full"
        return p.read_text("utf-8", "replace") if p.exists() else ""

    def restart_process(self, timeout: float = 20.0) -> None:
        """Start again after a ``core restart now`` or a stop (same directory, same ports)."""
        self.start(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run([self.binary, "-C", str(self.conf), "-rx", "core stop now"], capture_output=True, timeout=15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "console", None) is not None:
            self.console.close()

    def cleanup(self, keep: Path | None = None) -> None:
        """Remove the directory; with ``keep``, first copy the logs there (for a failed test's report)."""
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for f in self.log_dir.iterdir():
                if f.is_file():
                    shutil.copyfile(f, keep / f.name)
        shutil.rmtree(self.root, ignore_errors=True)


class AMIEvents:
    """A test's own AMI client (the ``cctest`` account): send actions, keep every event with its time.

    Independent of the server's AMI link on purpose: the test judges the server by what Asterisk
    itself reports.
    """

    def __init__(self, port: int, username: str, secret: str) -> None:
        self.port, self.username, self.secret = port, username, secret
        self.events: list[dict[str, str]] = []
        self._replies: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._lists: dict[str, list[dict[str, str]]] = {}
        self._n = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.closed_at: int | None = None  # how many events had arrived when Asterisk closed the connection

    async def connect(self, limit: float = 10.0) -> None:
        end = asyncio.get_running_loop().time() + limit
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                break
            except OSError:
                if asyncio.get_running_loop().time() > end:
                    raise
                await asyncio.sleep(0.1)
        await self.reader.readline()  # banner
        self._task = asyncio.create_task(self._read(), name="cctest-ami-reader")
        reply = await self.action("Login", Username=self.username, Secret=self.secret)
        assert reply.get("Response") == "Success", reply

    async def _read(self) -> None:
        try:
            await self._read_events()
        finally:  # EOF, a reset link or a cancelled reader: a waiter must learn that no more events come
            self.closed_at = len(self.events)
            self._changed.set()

    async def _read_events(self) -> None:
        msg: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text:
                key, _, value = text.partition(":")
                msg[key.strip()] = value.strip()
                continue
            if not msg:
                continue
            msg["_t"] = f"{time.monotonic():.6f}"
            aid = msg.get("ActionID")
            if "Event" in msg:
                self.events.append(msg)
                if aid in self._lists:
                    self._lists[aid].append(msg)
                    if msg.get("EventList") == "Complete" or msg["Event"].endswith("Complete"):
                        fut = self._replies.pop(f"list-{aid}", None)
                        if fut and not fut.done():
                            fut.set_result(msg)
            elif aid in self._replies:
                fut = self._replies.pop(aid)
                if not fut.done():
                    fut.set_result(msg)
            self._changed.set()
            msg = {}

    async def action(self, name: str, *, limit: float = 15.0, **fields: Any) -> dict[str, str]:
        assert self.writer is not None
        self._n += 1
        aid = f"t-{self._n}"
        fut: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._replies[aid] = fut
        lines = [f"Action: {name}", f"ActionID: {aid}"]
        for k, v in fields.items():
            values = v if isinstance(v, list) else [v]
            lines += [f"{k}: {x}" for x in values]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        return await asyncio.wait_for(fut, limit)

    async def list_action(self, name: str, **fields: Any) -> list[dict[str, str]]:
        """An action answered by an event list (CoreShowChannels, QueueStatus): the events."""
        self._n += 1
        aid = f"t-{self._n}"
        self._lists[aid] = []
        done: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._replies[f"list-{aid}"] = done
        fut: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._replies[aid] = fut
        assert self.writer is not None
        lines = [f"Action: {name}", f"ActionID: {aid}"] + [f"{k}: {v}" for k, v in fields.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        reply = await asyncio.wait_for(fut, 15)
        if reply.get("Response") != "Success":
            return []
        await asyncio.wait_for(done, 15)
        return [e for e in self._lists.pop(aid) if e.get("EventList") != "Complete" and not e["Event"].endswith("Complete")]

    def find(self, event: str, **fields: str) -> list[dict[str, str]]:
        return [e for e in self.events if e.get("Event") == event and all(e.get(k) == v for k, v in fields.items())]

    async def wait_for(self, pred: Callable[[dict[str, str]], bool] | str, limit: float = 15.0,
                       start: int = 0, **fields: str) -> dict[str, str]:
        """The first event from index ``start`` on matching ``pred`` (an event name plus fields, or a function)."""
        if isinstance(pred, str):
            name = pred

            def pred(e: dict[str, str]) -> bool:  # noqa: F811 - the name form
                return e.get("Event") == name and all(e.get(k) == v for k, v in fields.items())
        assert callable(pred)
        try:
            async with asyncio.timeout(limit):
                i = start
                while True:
                    while i < len(self.events):
                        if pred(self.events[i]):
                            return self.events[i]
                        i += 1
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            closed = "" if self._task is None or not self._task.done() else (
                f" (the test's AMI connection closed at event {self.closed_at}: later events were never seen)")
            raise AssertionError(f"no matching AMI event within {limit} s{closed}; last events: "
                                 f"{[e.get('Event') for e in self.events[-25:]]}") from None

    def about(self, uniqueid: str) -> list[str]:
        """One line per event that concerns this channel (its Uniqueid, Linkedid or DestUniqueid), for a failure message."""
        t0 = float(self.events[0]["_t"]) if self.events else 0.0
        return [f"{float(e['_t']) - t0:.2f} {e.get('Event')} {e.get('Channel', '')} -> {e.get('DestChannel', '')} "
                f"{e.get('Reason', e.get('Cause-txt', ''))}".rstrip()
                for e in self.events if uniqueid in (e.get("Uniqueid"), e.get("Linkedid"), e.get("DestUniqueid"))
                and e.get("Event") not in ("VarSet", "Newexten", "DeviceStateChange")]

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def reconnect(self, limit: float = 20.0) -> None:
        """Log in again on a new connection (after ``core restart now`` or a kick); events so far are kept."""
        await self.close()
        self._replies.clear()
        self._lists.clear()
        await self.connect(limit)


def handset_vars(steps: Iterable[str], hold: float | None = None, **extra: str) -> list[str]:
    """Originate ``Variable:`` values for [cc-test-handset]: ``["CC_T_1=wait:3", ...]``."""
    out = [f"CC_T_{i}={s}" for i, s in enumerate(steps, 1)]
    if hold is not None:
        out.append(f"CC_T_HOLD={hold}")
    out += [f"{k}={v}" for k, v in extra.items()]
    return out
