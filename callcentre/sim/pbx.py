"""The simulated Asterisk core: channels, uniqueids, dialplan steps, Dial, Originate, AMI events.

Everything here mirrors what a real Asterisk 20 does on the wire, as recorded in tests/fixtures/
(field order of channel snapshots, event order of Dial/Originate/hang-up, variable side effects).
Events are delivered synchronously to subscribers (the AMI server) as ordered field lists.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog

from callcentre.sim.scripts import AgentScript, CallerScript, CallResult

log = structlog.get_logger(__name__)

Fields = list[tuple[str, str]]
Subscriber = Callable[[Fields], None]


class ChannelState(enum.IntEnum):
    DOWN = 0
    RING = 4
    RINGING = 5
    UP = 6
    BUSY = 7


STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}
CAUSE_TEXT = {
    0: "Unknown",
    3: "No route to destination",
    16: "Normal Clearing",
    17: "User busy",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    34: "Circuit/channel congestion",
    66: "Channel not implemented",
}
KNOWN_TECHS = ("Local", "SIP", "PJSIP")


def dial_end_status(cause: int) -> str:
    """DialEnd's DialStatus for an outgoing leg that hung up unanswered (ast_hangup_cause_to_dial_status)."""
    return {17: "BUSY", 34: "CONGESTION", 3: "CHANUNAVAIL", 20: "CHANUNAVAIL"}.get(cause, "NOANSWER")


def dialstatus_for_cause(cause: int) -> str:
    """DIALSTATUS app_dial sets when its only leg hung up unanswered with ``cause`` (handle_cause):
    busy, congestion, "no answer" only for causes 16 and 19, every other cause (0 included: an AMI
    Hangup without Cause) counts as "no channel" (ami-ami-hangup-ringing-leg.txt)."""
    if cause == 17:
        return "BUSY"
    if cause == 34:
        return "CONGESTION"
    if cause in (16, 19):
        return "NOANSWER"
    return "CHANUNAVAIL"
DIAL_TIME_VARS = (
    "DIALSTATUS", "DIALEDPEERNUMBER", "DIALEDPEERNAME", "ANSWEREDTIME", "ANSWEREDTIME_MS",
    "DIALEDTIME", "DIALEDTIME_MS", "RINGTIME", "RINGTIME_MS", "PROGRESSTIME", "PROGRESSTIME_MS",
)


class DialStatus(enum.Enum):
    ANSWER = "ANSWER"
    NOANSWER = "NOANSWER"
    BUSY = "BUSY"
    CANCEL = "CANCEL"
    CHANUNAVAIL = "CHANUNAVAIL"
    CONGESTION = "CONGESTION"


class OriginateReason(enum.IntEnum):
    """OriginateResponse Reason codes (AST_CONTROL_* values) seen in ami-originate-outcomes.txt."""

    FAILED = 0
    NO_ANSWER = 3
    ANSWERED = 4
    BUSY = 5


@dataclass(eq=False)
class SimChannel:
    """One channel; its fields are the AMI channel snapshot."""

    name: str
    uniqueid: str
    linkedid: str
    tech: str
    context: str
    exten: str
    state: ChannelState = ChannelState.DOWN
    priority: int = 1
    caller_num: str = "<unknown>"
    caller_name: str = "<unknown>"
    connected_num: str = "<unknown>"
    connected_name: str = "<unknown>"
    language: str = "en"
    accountcode: str = ""
    dnid: str = ""
    application: str = ""
    app_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    answered_at: float | None = None
    bridge_id: str = ""
    hangup_cause: int = 16
    # what ${HANGUPCAUSE} reads (app_dial sets it from the last outgoing leg; not a VarSet)
    hangupcause_var: int | None = None
    # the other half of a Local pair that goes down with this one (the caller's handset ;1 -> ;2)
    local_other: SimChannel | None = None
    gone: bool = False
    hangup_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def hung_up(self) -> bool:
        return self.hangup_event.is_set()


@dataclass(eq=False)
class Bridge:
    uniqueid: str
    channels: list[SimChannel] = field(default_factory=list)
    technology: str = "simple_bridge"

    def fields(self) -> Fields:
        return [
            ("BridgeUniqueid", self.uniqueid), ("BridgeType", "basic"),
            ("BridgeTechnology", self.technology), ("BridgeCreator", "<unknown>"),
            ("BridgeName", "<unknown>"), ("BridgeNumChannels", str(len(self.channels))),
            ("BridgeVideoSourceMode", "none"),
        ]


@dataclass
class QueueEntry:
    channel: SimChannel
    joined: float


@dataclass(slots=True)
class DialplanEntry:
    """What a (context, exten) runs: AGI(agi://host:port/<script>,<args>) (``${VAR}`` expanded)."""

    script: str
    args: tuple[str, ...] = ()


@dataclass(slots=True)
class Callee:
    """A destination reachable by Originate: rings ``answer_after`` (None: never), or is busy;
    once answered a ``script`` drives its AGI session (a person) or it hangs up after ``talk_seconds``."""

    answer_after: float | None = 1.0
    busy: bool = False
    script: CallerScript | None = None
    talk_seconds: float = 5.0


def snapshot(ch: SimChannel, prefix: str = "") -> Fields:
    """The channel snapshot block in Asterisk's field order."""
    return [
        (f"{prefix}Channel", ch.name), (f"{prefix}ChannelState", str(int(ch.state))),
        (f"{prefix}ChannelStateDesc", STATE_DESC[int(ch.state)]),
        (f"{prefix}CallerIDNum", ch.caller_num), (f"{prefix}CallerIDName", ch.caller_name),
        (f"{prefix}ConnectedLineNum", ch.connected_num), (f"{prefix}ConnectedLineName", ch.connected_name),
        (f"{prefix}Language", ch.language), (f"{prefix}AccountCode", ch.accountcode),
        (f"{prefix}Context", ch.context), (f"{prefix}Exten", ch.exten),
        (f"{prefix}Priority", str(ch.priority)), (f"{prefix}Uniqueid", ch.uniqueid),
        (f"{prefix}Linkedid", ch.linkedid),
    ]


def parse_callerid(value: str) -> tuple[str, str]:
    """``"Name" <num>`` / ``<num>`` / ``num`` -> (num, name) with Asterisk's ``<unknown>`` for blanks."""
    value = value.strip()
    name, num = "", value
    if "<" in value and value.endswith(">"):
        name, _, rest = value.rpartition("<")
        num = rest[:-1]
        name = name.strip().strip('"')
    return (num or "<unknown>", name or "<unknown>")


class SimPBX:
    """The simulated Asterisk: owns channels, bridges, queues, agents and the event stream."""

    def __init__(
        self,
        agi_host: str = "127.0.0.1",
        agi_port: int = 4573,
        *,
        speed: float = 1.0,
        prompt_dir: Path | None = None,
        prompt_prefix: str = "",
        record_dir: Path | None = None,
        default_prompt_seconds: float = 1.0,
        hotline_context: str = "hotline-in",
        hotline_exten: str = "8000",
        fallback_queue: str = "hotline-fallback",
        max_call_seconds: float = 600.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.agi_host = agi_host
        self.agi_port = agi_port
        self.speed = speed
        self.prompt_dir = prompt_dir
        self.prompt_prefix = prompt_prefix.strip("/")
        self.record_dir = record_dir
        self.default_prompt_seconds = default_prompt_seconds
        self.hotline_context = hotline_context
        self.hotline_exten = hotline_exten
        self.fallback_queue = fallback_queue
        self.max_call_seconds = max_call_seconds
        self.channels: dict[str, SimChannel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.queues: dict[str, list[QueueEntry]] = {fallback_queue: []}
        self.agents: dict[str, AgentScript] = {}
        self.callees: dict[str, Callee] = {}
        self.dialplan: dict[tuple[str, str], DialplanEntry] = {}
        self.results: list[CallResult] = []
        self._subscribers: list[Subscriber] = []
        self._uid_seq = itertools.count()
        self._name_seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ringing: dict[str, str] = {}  # channel name -> "leg" / "far" while its Dial rings it
        self.booted_at = time.monotonic()
        self.core_sounds: dict[str, float] = {"beep": 0.4255}

    # ----------------------------------------------------------------- events
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def emit(self, event: str, privilege: str, *parts: Fields) -> None:
        fields: Fields = [("Event", event), ("Privilege", privilege)]
        for part in parts:
            fields.extend(part)
        for sub in list(self._subscribers):
            sub(fields)

    def emit_channel(self, event: str, ch: SimChannel, extra: Fields | None = None, privilege: str = "call,all") -> None:
        self.emit(event, privilege, snapshot(ch), extra or [])

    # --------------------------------------------------------------- channels
    def uptime(self) -> int:
        return int(time.monotonic() - self.booted_at)

    def sleep_for(self, seconds: float) -> float:
        return max(0.0, seconds) / self.speed

    def _uniqueid(self) -> str:
        return f"{int(time.time())}.{next(self._uid_seq)}"

    def next_name_seq(self) -> str:
        return f"{next(self._name_seq):08x}"

    def new_channel(
        self, name: str, tech: str, context: str, exten: str, state: ChannelState,
        linkedid: str | None = None, language: str = "en",
    ) -> SimChannel:
        uid = self._uniqueid()
        ch = SimChannel(name=name, uniqueid=uid, linkedid=linkedid or uid, tech=tech, context=context,
                        exten=exten, state=state, language=language)
        self.channels[name] = ch
        self.emit_channel("Newchannel", ch)
        return ch

    def new_local_pair(
        self, exten: str, context: str, linkedid: str | None = None, language: str = "en"
    ) -> tuple[SimChannel, SimChannel]:
        base = f"Local/{exten}@{context}-{self.next_name_seq()}"
        one = self.new_channel(f"{base};1", "Local", context, exten, ChannelState.DOWN, linkedid, language)
        two = self.new_channel(f"{base};2", "Local", context, exten, ChannelState.RING, one.linkedid, language)
        return one, two

    def local_bridge(self, one: SimChannel, two: SimChannel) -> None:
        self.emit("LocalBridge", "call,all", snapshot(one, "LocalOne"), snapshot(two, "LocalTwo"),
                  [("Context", two.context), ("Exten", two.exten), ("LocalOptimization", "Yes")])

    def set_state(self, ch: SimChannel, state: ChannelState) -> None:
        if ch.state == state or ch.gone:
            return
        ch.state = state
        if state == ChannelState.UP and ch.answered_at is None:
            ch.answered_at = time.monotonic()
        self.emit_channel("Newstate", ch)

    def set_var(self, ch: SimChannel, name: str, value: str) -> None:
        ch.variables[name] = value
        self.emit_channel("VarSet", ch, [("Variable", name), ("Value", value)], privilege="dialplan,all")

    def set_callerid(self, ch: SimChannel, num: str, name: str) -> None:
        ch.caller_num, ch.caller_name = num, name
        self.emit_channel("NewCallerid", ch, [("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")])

    def set_connected(self, ch: SimChannel, num: str, name: str) -> None:
        ch.connected_num, ch.connected_name = num, name
        self.emit_channel("NewConnectedLine", ch)

    def newexten(self, ch: SimChannel, app: str, data: str, priority: int | None = None) -> None:
        if priority is not None:
            ch.priority = priority
        ch.application, ch.app_data = app, data
        self.emit_channel("Newexten", ch, [("Extension", ch.exten), ("Application", app), ("AppData", data)],
                          privilege="dialplan,all")

    def request_hangup(self, ch: SimChannel, cause: int = 16, soft: bool = True) -> None:
        """Ask a channel to hang up (SoftHangupRequest / HangupRequest) and wake whoever waits on it."""
        if ch.gone:
            return
        ch.hangup_cause = cause
        self.emit_channel("SoftHangupRequest" if soft else "HangupRequest", ch, [("Cause", str(cause))])
        ch.hangup_event.set()

    def manager_hangup(self, ch: SimChannel, cause: int = 0) -> None:
        """AMI ``Hangup`` (cause 0 unless the action gives one). A ringing Dial leg is ended by its Dial,
        which emits the events in Asterisk's order (ami-ami-hangup-ringing-*.txt); the phone's own half
        of a Local leg first shows ``SoftHangupRequest`` Cause 16, the dialed ``;1`` nothing."""
        role = self._ringing.get(ch.name)
        other = ch.local_other
        if role is None and other is not None and not ch.gone and not other.gone:
            # ami-hangup-during-exec-dial.txt: HangupRequest on the other half, Hangup of this one,
            # both with the action's cause; the other half's application sees the hang-up
            self.emit_channel("HangupRequest", other, [("Cause", str(cause))])
            ch.hangup_cause = cause
            self.destroy(ch, cause)
            other.hangup_cause = cause
            other.hangup_event.set()
            return
        if role is None or ch.gone:
            self.request_hangup(ch, cause)
            return
        if role == "far":
            self.emit_channel("SoftHangupRequest", ch, [("Cause", "16")])
        ch.hangup_cause = cause
        ch.hangup_event.set()

    def destroy(self, ch: SimChannel, cause: int | None = None) -> None:
        """The channel is gone: emit Hangup with its cause and forget it."""
        if ch.gone:
            return
        ch.gone = True
        ch.hangup_event.set()
        c = ch.hangup_cause if cause is None else cause
        self.emit_channel("Hangup", ch, [("Cause", str(c)), ("Cause-txt", CAUSE_TEXT.get(c, "Unknown"))])
        self.channels.pop(ch.name, None)

    def find_channel(self, name: str) -> SimChannel | None:
        return self.channels.get(name)

    # ------------------------------------------------------------- configuration
    def add_agent(self, agent: AgentScript) -> None:
        self.agents[agent.interface] = agent

    def set_agent_behaviour(self, interface: str, *, answer_after: float | None | str = "keep",
                            talk_seconds: float | None = None, busy: bool | None = None) -> AgentScript:
        """Change how an agent's phone behaves from now on (tests and the demo use it at run time)."""
        agent = self.agents.get(interface)
        if agent is None:
            agent = AgentScript(interface)
            self.agents[interface] = agent
        if answer_after != "keep":
            agent.answer_after = answer_after  # type: ignore[assignment]
        if talk_seconds is not None:
            agent.talk_seconds = talk_seconds
        if busy is not None:
            agent.busy = busy
        return agent

    def add_callee(self, channel: str, callee: Callee) -> None:
        self.callees[channel] = callee

    def add_dialplan(self, context: str, exten: str, entry: DialplanEntry) -> None:
        self.dialplan[(context, exten)] = entry

    # ------------------------------------------------------------- prompts
    def prompt_seconds(self, name: str) -> float | None:
        """Length of a prompt in seconds, or None when Asterisk would not find the file."""
        if name in self.core_sounds:
            return self.core_sounds[name]
        if self.prompt_dir is None:
            return self.default_prompt_seconds
        rel = name
        if self.prompt_prefix and rel.startswith(self.prompt_prefix + "/"):
            rel = rel[len(self.prompt_prefix) + 1:]
        path = Path(name) if name.startswith("/") else self.prompt_dir / rel
        for candidate in (path.with_name(path.name + ".wav"), path):
            if candidate.is_file():
                return wav_seconds(candidate) or self.default_prompt_seconds
        return None

    # ------------------------------------------------------------- tasks
    def spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Cancel and await every call still running (owned tasks)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def reset(self) -> None:
        """Asterisk restarted: no channels, no bridges, uptime 0."""
        for t in list(self._tasks):
            t.cancel()
        self.channels.clear()
        self.bridges.clear()
        for q in self.queues.values():
            q.clear()
        self.booted_at = time.monotonic()

    # ------------------------------------------------------------- calls
    async def place_call(self, script: CallerScript) -> CallResult:
        """An inbound call from a scripted caller reaches the hotline dialplan (AGI, then fallback)."""
        from callcentre.sim.agi_client import run_inbound_call

        result = await run_inbound_call(self, script)
        self.results.append(result)
        return result

    async def originate(self, fields: dict[str, str], variables: list[tuple[str, str]]) -> tuple[OriginateReason, SimChannel | None]:
        from callcentre.sim.agi_client import run_originate

        return await run_originate(self, fields, variables)

    # ------------------------------------------------------------- Dial
    async def dial(self, caller: SimChannel, data: str, *, dead: bool = False) -> tuple[DialStatus, int]:
        """app_dial on ``caller`` with ``data`` = ``interface[&...],timeout[,options]``.

        Returns (DIALSTATUS, application result): 0 when nobody answered, -1 after an answered
        call ends or when the caller hung up (as agi-dial-agents.txt / agi-ivr-commands.txt show).
        """
        parts = data.split(",")
        interface = parts[0].split("&")[0].strip()
        timeout = float(parts[1]) if len(parts) > 1 and parts[1].strip() else None
        for var in DIAL_TIME_VARS:
            self.set_var(caller, var, "")
        if dead or caller.hung_up:
            self.set_var(caller, "DIALSTATUS", DialStatus.CANCEL.value)
            return DialStatus.CANCEL, -1
        tech, _, rest = interface.partition("/")
        key = interface
        dialstring = rest
        if tech == "Local":
            key = f"Local/{rest.split('/')[0]}"
        agent = self.agents.get(key)
        if agent is None or tech not in KNOWN_TECHS:
            return self._dial_unreachable(caller, tech, rest, dialstring)
        leg, far = self._agent_legs(caller, tech, rest, dialstring)
        self.emit("DialBegin", "call,all", snapshot(caller), snapshot(leg, "Dest"), [("DialString", dialstring)])
        if agent.busy or agent.congested:
            # ami-dial-unreachable.txt: Busy() shows Newstate Busy before DialEnd, Congestion() after
            # Hangup ;1; HangupRequest ;2 and Hangup ;1 with Cause 0, the phone's ;2 with 17 / 34
            status = DialStatus.BUSY if agent.busy else DialStatus.CONGESTION
            if agent.busy:
                self.set_state(far, ChannelState.BUSY)
            self.emit("DialEnd", "call,all", snapshot(caller), snapshot(leg, "Dest"), [("DialStatus", status.value)])
            caller.hangupcause_var = 0
            if far is not leg and not agent.busy:
                self.request_hangup(far, 0, soft=False)
                self.set_var(caller, "DIALSTATUS", status.value)
                self.destroy(leg, 0)
                self.set_state(far, ChannelState.BUSY)
                self.emit_channel("SoftHangupRequest", far, [("Cause", "16")])
                self.destroy(far, 34)
                return status, 0
            self._drop_legs(leg, far, 0, far_cause=17 if agent.busy else 34)
            self.set_var(caller, "DIALSTATUS", status.value)
            return status, 0
        if agent.rings:
            ring_started = time.monotonic()
            self.set_state(leg, ChannelState.RINGING)
            self.set_var(caller, "RINGTIME", "0")
            self.set_var(caller, "RINGTIME_MS", str(int((time.monotonic() - ring_started) * 1000)))
            self.emit("DialState", "call,all", snapshot(caller), snapshot(leg, "Dest"), [("DialStatus", "RINGING")])
        caller.application, caller.app_data = "Dial", data
        self._ringing[leg.name] = "leg"
        if far is not leg:
            self._ringing[far.name] = "far"
        try:
            outcome = await self.race(
                answer=None if agent.answer_after is None else self.sleep_for(agent.answer_after),
                deadline=None if timeout is None else self.sleep_for(timeout),
                events=(caller.hangup_event, leg.hangup_event, far.hangup_event),
            )
        finally:
            self._ringing.pop(leg.name, None)
            self._ringing.pop(far.name, None)
        if caller.hung_up:
            # ami-hangup-during-exec-dial.txt: the legs go with cause 16, DIALSTATUS between them
            self.emit("DialEnd", "call,all", snapshot(caller), snapshot(leg, "Dest"), [("DialStatus", "CANCEL")])
            self._drop_legs(leg, far, 16, status_var=(caller, DialStatus.CANCEL.value))
            return DialStatus.CANCEL, -1
        if outcome == "event":
            return self._leg_hung_up(caller, leg, far)
        if outcome != "answer":
            self.emit("DialEnd", "call,all", snapshot(caller), snapshot(leg, "Dest"), [("DialStatus", "NOANSWER")])
            self._drop_legs(leg, far, 0, status_var=(caller, "NOANSWER"))
            return DialStatus.NOANSWER, 0
        return await self._bridge_call(caller, leg, far, agent, dialstring)

    def _leg_hung_up(self, caller: SimChannel, leg: SimChannel, far: SimChannel) -> tuple[DialStatus, int]:
        """The ringing leg hung up unanswered (an AMI Hangup, the phone rejecting): DialEnd maps the
        cause one way, DIALSTATUS another (ami-ami-hangup-ringing-leg.txt / -phone.txt)."""
        by_far = far is not leg and far.hung_up and not leg.hung_up
        cause = far.hangup_cause if by_far else leg.hangup_cause
        end = [("DialStatus", dial_end_status(cause))]
        if by_far:
            self.emit_channel("HangupRequest", leg, [("Cause", str(cause))])
            self.destroy(far, cause)
            self.emit("DialEnd", "call,all", snapshot(caller), snapshot(leg, "Dest"), end)
            self.destroy(leg, cause)
        else:
            self.emit("DialEnd", "call,all", snapshot(caller), snapshot(leg, "Dest"), end)
            if far is not leg:
                self.emit_channel("HangupRequest", far, [("Cause", str(cause))])
            self.destroy(leg, cause)
            if far is not leg:
                self.emit_channel("SoftHangupRequest", far, [("Cause", "16")])
                self.destroy(far, cause)
        caller.hangupcause_var = cause
        status = DialStatus(dialstatus_for_cause(cause))
        self.set_var(caller, "DIALSTATUS", status.value)
        return status, 0

    def _dial_unreachable(self, caller: SimChannel, tech: str, rest: str, dialstring: str) -> tuple[DialStatus, int]:
        """No such peer / technology / extension (ami-dial-unreachable.txt): CHANUNAVAIL with no
        DialBegin or DialEnd; a Local pair is created and hung up at once (cause 0)."""
        log.info("dial to unknown interface", interface=f"{tech}/{rest}", uniqueid=caller.uniqueid)
        if tech == "Local":
            leg, far = self._local_pair(caller, rest)
            self.newexten(leg, "AppDial", "(Outgoing Line)")
            self.destroy(far, 0)
            self.destroy(leg, 0)
        caller.hangupcause_var = 20 if tech in KNOWN_TECHS else 66
        self.set_var(caller, "DIALSTATUS", DialStatus.CHANUNAVAIL.value)
        return DialStatus.CHANUNAVAIL, 0

    def _local_pair(self, caller: SimChannel, rest: str) -> tuple[SimChannel, SimChannel]:
        """The two halves Asterisk makes for a Dial of ``Local/<exten>@<context>[/n]``: ;1 faces the
        caller (state Down), ;2 runs the dialplan (state Ring)."""
        target = rest.split("/")[0]
        exten, _, ctx = target.partition("@")
        base = f"Local/{target}-{self.next_name_seq()}"
        leg = self.new_channel(f"{base};1", "Local", ctx, caller.exten, ChannelState.DOWN, caller.linkedid)
        far = self.new_channel(f"{base};2", "Local", ctx, exten, ChannelState.RING, caller.linkedid)
        return leg, far

    def _agent_legs(self, caller: SimChannel, tech: str, rest: str, dialstring: str) -> tuple[SimChannel, SimChannel]:
        """Create the outgoing channel(s) of a Dial: a Local pair (;1 is the leg) or one SIP/PJSIP channel."""
        if tech == "Local":
            leg, far = self._local_pair(caller, rest)
            self.set_var(leg, "DIALEDPEERNUMBER", dialstring)
            self.newexten(leg, "AppDial", "(Outgoing Line)")
            self.set_callerid(leg, caller.exten, caller.caller_name)
            self.set_connected(leg, caller.caller_num, caller.caller_name)
            self.set_var(far, "DIALEDPEERNUMBER", dialstring)
            self.set_callerid(far, caller.caller_num, caller.caller_name)
            self.set_connected(far, caller.exten, caller.caller_name)
            self.local_bridge(leg, far)
            return leg, far
        peer = rest.split("/")[0]
        leg = self.new_channel(f"{tech}/{peer}-{self.next_name_seq()}", tech, caller.context, caller.exten,
                               ChannelState.DOWN, caller.linkedid)
        self.set_var(leg, "DIALEDPEERNUMBER", peer)
        self.newexten(leg, "AppDial", "(Outgoing Line)")
        self.set_callerid(leg, caller.exten, "<unknown>")
        self.set_connected(leg, caller.caller_num, caller.caller_name)
        return leg, leg

    def _drop_legs(self, leg: SimChannel, far: SimChannel, cause: int,
                   status_var: tuple[SimChannel, str] | None = None, far_cause: int | None = None) -> None:
        if far is not leg and not far.gone:
            self.request_hangup(far, cause, soft=False)
        self.destroy(leg, cause)
        if status_var:
            self.set_var(status_var[0], "DIALSTATUS", status_var[1])
        if far is not leg and not far.gone:
            self.emit_channel("SoftHangupRequest", far, [("Cause", "16")])
            self.destroy(far, cause if far_cause is None else far_cause)

    async def race(self, answer: float | None, deadline: float | None, events: tuple[asyncio.Event, ...]) -> str:
        """Wait for the first of: answer timer, dial timeout, any of ``events``; return which."""
        waiters: dict[asyncio.Task[object], str] = {}
        if answer is not None:
            waiters[asyncio.ensure_future(asyncio.sleep(answer))] = "answer"
        if deadline is not None:
            waiters[asyncio.ensure_future(asyncio.sleep(deadline))] = "timeout"
        for ev in events:
            waiters[asyncio.ensure_future(ev.wait())] = "event"
        if answer is None and deadline is None:
            waiters[asyncio.ensure_future(asyncio.sleep(self.sleep_for(self.max_call_seconds)))] = "timeout"
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waiters:
                t.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        kinds = {waiters[t] for t in done}
        for k in ("event", "timeout", "answer"):
            if k in kinds:
                return k
        return "event"

    async def _bridge_call(self, caller: SimChannel, leg: SimChannel, far: SimChannel,
                           agent: AgentScript, dialstring: str) -> tuple[DialStatus, int]:
        if far is not leg:
            self.newexten(far, "Answer", "")
        self.set_state(leg, ChannelState.UP)
        self.set_var(caller, "DIALSTATUS", "ANSWER")
        self.set_var(caller, "DIALEDPEERNAME", leg.name)
        self.set_var(caller, "DIALEDPEERNUMBER", dialstring)
        if leg.tech == "Local":
            leg.exten = ""
        self.emit("DialEnd", "call,all", snapshot(caller), snapshot(leg, "Dest"), [("DialStatus", "ANSWER")])
        bridge = Bridge(str(uuid.uuid4()))
        self.bridges[bridge.uniqueid] = bridge
        self.emit("BridgeCreate", "call,all", bridge.fields())
        for ch in (leg, caller):
            bridge.channels.append(ch)
            ch.bridge_id = bridge.uniqueid
            self.emit("BridgeEnter", "call,all", bridge.fields(), snapshot(ch))
        self.set_var(leg, "BRIDGEPEER", caller.name)
        self.set_var(caller, "BRIDGEPEER", leg.name)
        if far is not leg:
            self.set_state(far, ChannelState.UP)
        await self.race(answer=None, deadline=self.sleep_for(agent.talk_seconds),
                         events=(caller.hangup_event, leg.hangup_event, far.hangup_event))
        caller_left = caller.hung_up
        if caller_left:
            self.emit_channel("HangupRequest", caller, [("Cause", "16")])
        else:
            if far is not leg:
                self.emit_channel("SoftHangupRequest", far, [("Cause", "16")])
                self.emit_channel("HangupRequest", leg, [("Cause", "16")])
                self.destroy(far, 16)
            else:
                self.emit_channel("HangupRequest", leg, [("Cause", "16")])
        self.set_var(leg, "BRIDGEPEER", "")
        self.set_var(caller, "BRIDGEPEER", "")
        for ch in (leg, caller):
            if ch in bridge.channels:
                bridge.channels.remove(ch)
            ch.bridge_id = ""
            self.emit("BridgeLeave", "call,all", bridge.fields(), snapshot(ch))
        now = time.monotonic()
        up_ms = int((now - (caller.answered_at or caller.created)) * 1000)
        dur_ms = int((now - caller.created) * 1000)
        # Asterisk 20 reports the CALLER's up time and age here, not the talk time (see CAPTURES.md).
        self.set_var(caller, "ANSWEREDTIME", str(up_ms // 1000))
        self.set_var(caller, "ANSWEREDTIME_MS", str(up_ms))
        self.set_var(caller, "DIALEDTIME", str(dur_ms // 1000))
        self.set_var(caller, "DIALEDTIME_MS", str(dur_ms))
        self.set_var(caller, "DIALSTATUS", "ANSWER")
        self.destroy(leg, 16)
        if far is not leg:
            self.destroy(far, 16)
        self.emit("BridgeDestroy", "call,all", bridge.fields())
        self.bridges.pop(bridge.uniqueid, None)
        return DialStatus.ANSWER, -1

    # ------------------------------------------------------------- queue
    async def queue(self, caller: SimChannel, queue: str, patience: float) -> None:
        """app_queue with no member answering: the caller waits, then abandons (or hangs up)."""
        entries = self.queues.setdefault(queue, [])
        entry = QueueEntry(caller, time.monotonic())
        entries.append(entry)
        pos = len(entries)
        self.emit_channel("QueueCallerJoin", caller, [("Queue", queue), ("Position", str(pos)), ("Count", str(pos))],
                          privilege="agent,all")
        outcome = await self.race(answer=None, deadline=self.sleep_for(patience), events=(caller.hangup_event,))
        if outcome == "timeout" and not caller.hung_up:
            self.request_hangup(caller, 16)
        pos = entries.index(entry) + 1 if entry in entries else 1
        hold = int(time.monotonic() - entry.joined)
        self.emit_channel("QueueCallerAbandon", caller, [("Queue", queue), ("Position", str(pos)),
                                                          ("OriginalPosition", str(pos)), ("HoldTime", str(hold))],
                          privilege="agent,all")
        if entry in entries:
            entries.remove(entry)
        self.emit_channel("QueueCallerLeave", caller, [("Queue", queue), ("Position", str(pos)),
                                                        ("Count", str(len(entries)))], privilege="agent,all")


def wav_seconds(path: Path) -> float | None:
    """Duration of a PCM WAV file from its header (None if it is not one)."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / rate if rate else None
    except (wave.Error, OSError, EOFError):
        return None
