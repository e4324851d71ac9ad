"""Transfers, the adapter: an agent hands a call our distribution put through to another agent, a skill
group or a department, blind or attended (docs/transfers.md; the states are :mod:`callcentre.domain.transfers`).

What the real Asterisk 20 showed (docs/research-recording-transfers.md section 2, docs/transfers.md):
an AMI ``Redirect`` of the caller's channel while our FastAGI session is in ``EXEC Dial`` makes that
Dial answer ``200 result=0`` and ``HANGUP`` 40 ms later; the caller only moves when the session ends,
and comes back to our ``transfer`` script in a new session on the same channel and uniqueid. With
``ExtraChannel`` the first agent's leg moves too (``Dual Redirect``), to our ``consult`` script; from
there it rings the target, and ``EXEC Bridge <leg>,x`` in the caller's session takes the target's leg
out of that consultation (complete) or the first agent's leg out of the consult script (cancel).

So:

* **blind**: :meth:`Transfers.start` marks the call as being handed over *before* it sends the
  Redirect (so the first session's ``200 result=0`` + HANGUP is not taken for the caller hanging up:
  no survey, the first agent wraps up at once, the session ends so the caller moves); the caller's
  ``transfer`` script queues the same call (same uniqueid, tickets, owner, IVR path) for the target
  only (:class:`~callcentre.domain.acd.OnlyFor`), offers named ``x<n>-...``, two rings each like any
  offer; the screen-pop says who transferred it. Nobody of the target takes it: ``transfers.no_answer``.
* **attended**: the caller holds (music) in the ``transfer`` script while the first agent's leg, in the
  ``consult`` script, rings the target; *complete* bridges the caller to the target's leg, *cancel* or
  no answer bridges the caller back to the first agent.

Departments ring their ``transfer_interfaces`` in order (two rings each) from the session that rings
(the caller's, or the first agent's), or their ``transfer_skill`` group. Nothing from a browser
reaches an AMI action: it sends a call's uniqueid, a kind and a target id; the channels, contexts and
tokens are the server's own.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Protocol

import structlog

from callcentre.config import Config, Department
from callcentre.domain.acd import (
    AcdError,
    Agent,
    AgentState,
    Distributor,
    NoAgentAvailable,
    Offer,
    OnlyFor,
    PriorityLevel,
    TargetUnavailable,
    WaitingCall,
    WithdrawReason,
)
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.patterns import CHANNEL_NAME, INTERFACE, is_token
from callcentre.domain.ports import CallerHungUp, Channel, ChannelError, Clock, StorageUnavailable
from callcentre.domain.transfers import (
    InvalidTarget,
    TargetKind,
    Transfer,
    TransferForbidden,
    TransferKind,
    TransferRefused,
    TransfersUnavailable,
    TransferState,
    TransferTarget,
    UnknownCall,
)
from callcentre.domain.waiting import STOP_WAITING, Waiter

log = structlog.get_logger("callcentre.transfers")

_SEQ_KEPT = 10_000  # calls whose transfer count is remembered (offer names stay apart)
_RETURN_WAIT_SECONDS = 30.0  # the first agent waits this long in the consult script to be bridged back


# ------------------------------------------------------------------------------------------------ ports
@dataclass(frozen=True, slots=True)
class Connected:
    """A caller our server has connected to an agent: what a transfer starts from."""

    call: CallInfo
    agent_id: str
    offer_id: str | None  # the distributor's offer the agent answered (None: a department phone)
    level: PriorityLevel


class TransferRoom(Protocol):
    """What the transfers need from call distribution (``ACDService`` implements it)."""

    cfg: Config
    clock: Clock
    dist: Distributor
    waiters: dict[str, Waiter]

    def apply(self, decisions: Any) -> None: ...

    def publish(self, topic: str, payload: Mapping[str, Any]) -> None: ...

    def ami_up(self) -> Any: ...

    def connected_call(self, uniqueid: str) -> Connected | None: ...

    def agent_leg(self, agent_id: str) -> tuple[str, str] | None:
        """(channel, uniqueid) of the agent's current leg of a call we put through."""

    async def wait_transferred(self, ch: Channel, call: CallInfo, wc: WaitingCall) -> Outcome: ...

    def end_offer(self, offer_id: str | None, agent_id: str | None) -> None: ...

    async def after_call(self, ch: Channel, call: CallInfo, agent_id: str | None) -> Outcome: ...

    def spawn(self, coro: Awaitable[Any], name: str) -> None: ...

    def call_hotline(self, call: CallInfo) -> str | None:
        """The hotline the call is distributed within (None: any agent)."""


class TransferHistory(Protocol):
    """Where a finished transfer is kept: a history row on each ticket of the call and a step of the
    call's own record (``TransferHistoryWriter``). Best effort: never raises."""

    async def record(self, uniqueid: str, tickets: list[str], entry: Mapping[str, Any]) -> None: ...


class TransferQueueLog(Protocol):
    """The Asterisk-compatible queue_log (``distribution.queue_log.TransferLines``): called once when a
    transfer hands the call over (blind: at the Redirect; attended: at complete), so the emitter writes
    BLINDTRANSFER (exten = ``transfer.token``, context = ``transfers.context``) or ATTENDEDTRANSFER, with
    hold and talk times from its own CONNECT record, and no COMPLETE* line for the first agent."""

    def transferred(self, transfer: Transfer, at: datetime) -> None: ...


# ------------------------------------------------------------------------------------------------ state
@dataclass(frozen=True, slots=True)
class _Signal:
    """What the caller's holding session does next: bridge a leg (the target's, or the first agent's
    back), or go on as a blind transfer (the first agent left the consultation)."""

    kind: str  # "bridge" | "blind"
    channel: str = ""
    offer_id: str | None = None
    agent_id: str | None = None


@dataclass(eq=False)
class _PhoneDial:
    """A department phone being rung by one of our sessions (not a distributor offer)."""

    handover: "_Handover"
    interface: str
    offer_id: str  # the name it is counted under in the two-ring figures
    made_at: datetime
    ring_start: datetime | None = None
    answered_at: datetime | None = None
    channel: str | None = None


@dataclass(eq=False)
class _Handover:
    t: Transfer
    call: CallInfo
    level: PriorityLevel
    arrive_by: float
    signals: asyncio.Queue[_Signal] = field(default_factory=asyncio.Queue)
    first_waiter: Waiter | None = None  # the session the caller left from (no survey there)
    left_first: bool = False  # the first session has ended: the caller is on the move
    caller_arrived: bool = False
    consult_arrived: bool = False


@dataclass(eq=False)
class _Bridged:
    call: CallInfo
    agent_id: str | None
    offer_id: str | None
    level: PriorityLevel


# ------------------------------------------------------------------------------------------------ service
class Transfers:
    """Blind and attended transfers over call distribution; one per ``ACDService``."""

    def __init__(
        self,
        room: TransferRoom,
        *,
        history: TransferHistory | None = None,
        queue_log: TransferQueueLog | None = None,
        token: Callable[[], str] | None = None,
    ) -> None:
        self._room = room
        self._history = history
        self._queue_log = queue_log
        self._make_token = token or (lambda: str(10**9 + secrets.randbelow(9 * 10**9)))
        self._open: dict[str, _Handover] = {}  # caller uniqueid -> its open transfer
        self._tokens: dict[str, _Handover] = {}  # caller and consult tokens -> transfer
        self._consults: dict[str, _Handover] = {}  # the first agent's leg uniqueid -> its consultation
        self._bridged: dict[str, _Bridged] = {}  # callers bridged to an agent by our transfer script
        self._phones: dict[str, _PhoneDial] = {}  # dialling channel uniqueid -> department phone ringing
        self._fell_back: dict[str, str] = {}  # call id -> the fallback in force ("back": then the queue)
        self._seq: OrderedDict[str, int] = OrderedDict()
        self._recent: OrderedDict[str, Transfer] = OrderedDict()  # finished, for the wallboard (a while)

    @property
    def cfg(self) -> Config:
        return self._room.cfg

    def _now(self) -> datetime:
        return self._room.clock.now()

    # ============================================================================ targets
    def targets(self) -> dict[str, Any]:
        """What the desk's picker offers: agents (with their state), skill groups, departments."""
        dist = self._room.dist
        snap = dist.snapshot()
        agents = []
        skills: dict[str, int] = {}
        for view in snap.agents:
            agent = dist.agent(view.agent_id)
            agents.append({"agent_id": view.agent_id, "name": view.name, "state": view.state.value,
                           "skills": sorted(agent.skills)})
            if view.state is not AgentState.LOGGED_OUT:
                for skill in agent.skills:
                    skills[skill] = skills.get(skill, 0) + (1 if view.state is AgentState.READY else 0)
        departments = [{"code": d.code, "name": d.name, "phones": len(d.transfer_interfaces),
                        "skill": d.transfer_skill} for d in self._departments().values()]
        return {"enabled": self.cfg.transfers.enabled, "agents": agents,
                "skills": [{"code": k, "ready": v} for k, v in sorted(skills.items())],
                "departments": departments}

    def _departments(self) -> dict[str, Department]:
        return {d.code: d for d in self.cfg.service.departments if d.takes_transfers}

    def _target(self, target: Mapping[str, Any], exclude_agent: str) -> TransferTarget:
        """The browser's ``{"agent": id}`` / ``{"skill": code}`` / ``{"department": code}``, checked
        against what the server knows (never used as it came)."""
        if not isinstance(target, Mapping) or len(target) != 1:
            raise InvalidTarget('target must be one of {"agent": id}, {"skill": code}, {"department": code}')
        (kind, value), = target.items()
        value = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        dist = self._room.dist
        if kind == "agent":
            try:
                agent: Agent = dist.agent(value)
            except AcdError:
                raise InvalidTarget(f"no agent {value!r}") from None
            if agent.agent_id == exclude_agent:
                raise InvalidTarget("a call cannot be transferred to the agent who has it")
            state = dist.agent_state(agent.agent_id)
            if state in (AgentState.LOGGED_OUT, AgentState.PAUSED):
                raise TransferRefused(f"{agent.name} is {state.value.replace('_', ' ')} and takes no calls",
                                      code="target_unavailable")
            return TransferTarget(TargetKind.AGENT, agent.agent_id, agent.name)
        if kind == "skill":
            if not is_token(value):
                raise InvalidTarget("a skill is a lower-case word such as repair")
            if not any(value in a.skills for a in self._agents()):
                raise InvalidTarget(f"no agent has the skill {value!r}")
            return TransferTarget(TargetKind.SKILL, value, value)
        if kind == "department":
            dept = self._departments().get(value)
            if dept is None:
                raise InvalidTarget(f"no department {value!r} takes transfers")
            return TransferTarget(TargetKind.DEPARTMENT, dept.code, dept.name)
        raise InvalidTarget(f"unknown target kind {kind!r}: agent, skill or department")

    def _agents(self) -> list[Agent]:
        dist = self._room.dist
        return [dist.agent(v.agent_id) for v in dist.snapshot().agents]

    def _only_for(self, target: TransferTarget, hotline: str | None = None) -> OnlyFor | None:
        """Who may take the transferred call. A named agent or a department is the transferring agent's
        explicit choice and may cross hotlines; a skill group stays among the call's ``hotline``'s agents
        (the distributor widens it to the whole group when none of them is staffed: docs/transfers.md)."""
        if target.kind is TargetKind.AGENT:
            return OnlyFor(agent_id=target.code)
        if target.kind is TargetKind.SKILL:
            return OnlyFor(skill=target.code, hotline=hotline)
        dept = self._departments().get(target.code)
        if dept is not None and not dept.transfer_interfaces and dept.transfer_skill:
            return OnlyFor(skill=dept.transfer_skill)
        return None

    def _phones_of(self, target: TransferTarget) -> list[str]:
        if target.kind is not TargetKind.DEPARTMENT:
            return []
        dept = self._departments().get(target.code)
        return [i for i in (dept.transfer_interfaces if dept else []) if INTERFACE.match(i)]

    # ============================================================================ the desk's actions
    async def start(self, uniqueid: str, kind: str, target: Mapping[str, Any], *, actor_agent_id: str,
                    actor_login: str, supervisor: bool) -> Transfer:
        """Check, mark the call as being handed over, then send the Redirect (caller; and for an attended
        transfer the first agent's leg too)."""
        tc = self.cfg.transfers
        if not tc.enabled:
            raise TransfersUnavailable("transfers are switched off (transfers.enabled)")
        try:
            kind_ = TransferKind(kind)
        except ValueError:
            raise InvalidTarget("kind must be blind or attended", code="invalid_kind") from None
        conn = self._room.connected_call(uniqueid)
        if conn is None:
            raise UnknownCall(f"no call {uniqueid} is connected to an agent by this server")
        if conn.agent_id != actor_agent_id and not supervisor:
            raise TransferForbidden("only the agent on the call, or a supervisor, may transfer it")
        if uniqueid in self._open:
            raise TransferRefused("this call is being transferred already", code="transfer_in_progress")
        tgt = self._target(target, conn.agent_id)
        ami = self._room.ami_up()
        if ami is None:
            raise TransfersUnavailable("the AMI link to Asterisk is down")
        if not CHANNEL_NAME.match(conn.call.channel or ""):
            raise TransferRefused("the caller's channel name cannot be given to Asterisk")
        leg = self._room.agent_leg(conn.agent_id) if kind_ is TransferKind.ATTENDED else None
        if kind_ is TransferKind.ATTENDED and (leg is None or not CHANNEL_NAME.match(leg[0])):
            raise TransferRefused("the agent's leg of this call is not known: transfer it blind",
                                  code="consult_unavailable")
        seq = self._seq.get(uniqueid, 0) + 1
        self._seq[uniqueid] = seq
        self._seq.move_to_end(uniqueid)
        while len(self._seq) > _SEQ_KEPT:
            self._seq.popitem(last=False)
        dist = self._room.dist
        try:
            from_name = dist.agent(conn.agent_id).name
        except AcdError:
            from_name = conn.agent_id
        t = Transfer(uniqueid=uniqueid, seq=seq, kind=kind_, target=tgt, from_agent_id=conn.agent_id,
                     from_agent_name=from_name, token=self._new_token(), created_at=self._now(), by=actor_login,
                     caller_channel=conn.call.channel, agent_channel=leg[0] if leg else None,
                     consult_token=self._new_token() if leg else None, first_offer_id=conn.offer_id,
                     consult_uniqueid=leg[1] if leg else None, hotline=conn.call.hotline_id)
        h = _Handover(t, conn.call, conn.level, self._room.clock.monotonic() + tc.arrive_seconds)
        self._open[uniqueid] = h
        self._tokens[t.token] = h
        if t.consult_token and t.consult_uniqueid:
            self._tokens[t.consult_token] = h
            self._consults[t.consult_uniqueid] = h
        step = f"xfer-{kind_.value[0]}:{tgt.code}"[:32]
        conn.call.path.append(step)
        action: dict[str, Any] = {"Action": "Redirect", "Channel": conn.call.channel, "Context": tc.context,
                                  "Exten": t.token, "Priority": "1"}
        if leg is not None:
            action.update({"ExtraChannel": leg[0], "ExtraContext": tc.consult_context,
                           "ExtraExten": t.consult_token, "ExtraPriority": "1"})
        from callcentre.ami.link import AMIError

        try:
            await ami.send(action)
        except AMIError as exc:
            if conn.call.path and conn.call.path[-1] == step:
                conn.call.path.pop()
            t.outcome = "redirect_refused"
            t.go("redirect_refused", self._now(), error=str(exc))
            self._done(h)
            raise TransferRefused(f"Asterisk refused the transfer: {exc}") from None
        t.go("redirect_sent", self._now(), by=actor_login)
        if kind_ is TransferKind.BLIND:
            self._queue_logged(t)
        self._publish(h)
        return t

    async def complete(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> Transfer:
        """Attended: the target answered; bridge the caller to them (the first agent's leg then ends)."""
        h = self._attended(uniqueid, actor_agent_id, supervisor, "a blind transfer completes by itself")
        t = h.t
        if t.state is not TransferState.CONSULTING or not t.to_channel:
            raise TransferRefused("the target has not answered yet: wait, or cancel", code="not_answered_yet")
        if not CHANNEL_NAME.match(t.to_channel):
            raise TransferRefused("the target's channel name cannot be bridged")
        t.go("completed", self._now(), by=actor_agent_id)
        h.signals.put_nowait(_Signal("bridge", t.to_channel, t.consult_offer_id, t.to_agent_id))
        self._queue_logged(t)
        self._finish(h)
        return t

    async def cancel(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> Transfer:
        """Attended: stop ringing or consulting the target; the caller is bridged back to the first agent."""
        h = self._attended(uniqueid, actor_agent_id, supervisor,
                           "a blind transfer cannot be taken back once the caller has moved")
        t = h.t
        if not t.can("cancelled"):
            raise TransferRefused(f"nothing to cancel: the transfer is {t.state.value}")
        was = t.state
        t.outcome = "cancelled"
        t.go("cancelled", self._now(), by=actor_agent_id)
        self._stop_consult(h, was)
        self._finish(h)
        return t

    def _attended(self, uniqueid: str, actor_agent_id: str, supervisor: bool, refusal: str) -> _Handover:
        """The actor's transfer of this call, which must be an attended one (else ``refusal``)."""
        h = self._mine(uniqueid, actor_agent_id, supervisor)
        if h.t.kind is not TransferKind.ATTENDED:
            raise TransferRefused(refusal, code="not_attended")
        return h

    def _mine(self, uniqueid: str, actor_agent_id: str, supervisor: bool) -> _Handover:
        h = self._open.get(uniqueid)
        if h is None:
            raise UnknownCall(f"no transfer of call {uniqueid} is in progress")
        if h.t.from_agent_id != actor_agent_id and not supervisor:
            raise TransferForbidden("only the agent who started the transfer, or a supervisor, may do this")
        return h

    def _new_token(self) -> str:
        while True:
            token = self._make_token()
            if token.isdigit() and token not in self._tokens:
                return token

    # ============================================================================ hooks from distribution
    def handing_over(self, uniqueid: str) -> bool:
        """Is this caller being redirected away right now (their session must end at once)?"""
        h = self._open.get(uniqueid)
        return h is not None and not h.left_first and h.t.state in (TransferState.REQUESTED, TransferState.MOVING)

    def session_left(self, uniqueid: str, offer_id: str | None, agent_id: str | None,
                     waiter: Waiter | None = None) -> None:
        """The session the caller was connected in has ended for the transfer (the Dial answered
        ``200 result=0``, or the caller's Bridge returned). Blind: the first agent's call is over (wrap-up).
        Attended: the first agent is still on the phone, now in the consult script."""
        h = self._open.get(uniqueid)
        if h is None:
            return
        h.left_first = True
        h.first_waiter = waiter
        if offer_id is not None:
            h.t.first_offer_id = offer_id
        if h.t.kind is TransferKind.BLIND:
            self._room.end_offer(offer_id, agent_id)
        h.t.log.info("caller handed over", first_offer=offer_id, agent_id=agent_id)

    def handed_over(self, waiter: Waiter) -> bool:
        """No survey in a session the caller left for a transfer, nor on a consultation leg."""
        if waiter.uniqueid in self._consults:
            return True
        h = self._open.get(waiter.uniqueid)
        return h is not None and h.first_waiter is waiter

    def keeps_offer(self, waiter: Waiter, offer: Offer) -> bool:
        """The consultation's answered offer goes on with the caller (complete): its Dial returning in
        the consult script does not end the target's call."""
        h = self._consults.get(waiter.uniqueid)
        return h is not None and h.t.state is TransferState.COMPLETED and h.t.consult_offer_id == offer.offer_id

    def is_transfer_wait(self, waiter: Waiter) -> bool:
        wc = waiter.queued_as
        return wc is not None and bool(wc.offer_prefix)

    def answered(self, waiter: Waiter, offer: Offer) -> None:
        """A transfer's offer was answered (AMI DialEnd ANSWER, or our own clock without AMI)."""
        consult = self._consults.get(waiter.uniqueid)
        h = consult or self._open.get(waiter.uniqueid)
        if h is None or not h.t.is_open or h.t.state is not TransferState.RINGING:
            return
        t = h.t
        try:
            t.to_agent_name = self._room.dist.agent(offer.agent_id).name
        except AcdError:
            t.to_agent_name = offer.agent_id
        t.to_agent_id = offer.agent_id
        if consult is not None:
            leg = self._room.agent_leg(offer.agent_id)
            t.to_channel = leg[0] if leg else None
            t.consult_offer_id = offer.offer_id
            t.go("consult_answered", self._now(), agent_id=offer.agent_id)
            self._publish(h)
            return
        t.go("target_answered", self._now(), agent_id=offer.agent_id)
        self._finish(h)

    def target_unavailable(self, d: TargetUnavailable) -> None:
        """Nobody of a transfer's target is left to try (``d.reason``)."""
        consult = self._consults.get(d.call_id)
        if consult is not None:
            t = consult.t
            if t.state is TransferState.RINGING:
                t.outcome = d.reason
                t.go("not_answered", self._now(), reason=d.reason)
                self._stop_consult(consult, TransferState.RINGING)
                self._finish(consult)
            return
        h = self._open.get(d.call_id)
        if h is not None and h.t.state is TransferState.RINGING and h.t.kind is TransferKind.BLIND:
            h.t.outcome = d.reason
            h.t.go("fell_back", self._now(), reason=d.reason, fallback=self.cfg.transfers.no_answer)
            self._finish(h)
            self._fall_back(d.call_id, d.uniqueid, h.t.from_agent_id, self.cfg.transfers.no_answer)
            return
        # a fallback's own target ("back": the first agent) gave up too: the queue
        if self._fell_back.pop(d.call_id, None) is not None:
            self._fall_back(d.call_id, d.uniqueid, None, "queue")

    def _fall_back(self, call_id: str, uniqueid: str, first_agent: str | None, mode: str) -> None:
        dist = self._room.dist
        log.info("transfer fallback", uniqueid=uniqueid, call_id=call_id, fallback=mode)
        try:
            if mode == "back" and first_agent is not None:
                self._fell_back[call_id] = "back"
                wait = self.cfg.transfers.target_wait_seconds
                self._room.apply(dist.retarget(call_id, OnlyFor(agent_id=first_agent), wait))
            elif mode == "message":
                waiter = self._room.waiters.get(call_id)
                if waiter is not None:
                    waiter.deliver(NoAgentAvailable(call_id, uniqueid, "no_agents"))
            else:
                self._room.apply(dist.retarget(call_id, None))
        except AcdError as exc:  # the caller left meanwhile
            log.info("transfer fallback not needed", uniqueid=uniqueid, error=str(exc))

    def leaving(self, waiter: Waiter) -> None:
        self._fell_back.pop(waiter.uniqueid, None)

    def connected_bridge(self, uniqueid: str) -> Connected | None:
        b = self._bridged.get(uniqueid)
        if b is None or b.agent_id is None:
            return None
        return Connected(b.call, b.agent_id, b.offer_id, b.level)

    def card_extra(self, offer: Offer) -> dict[str, Any]:
        """What the new agent's screen-pop adds: who transferred the call, and the caller's uniqueid
        (a consultation rings from the first agent's leg)."""
        h = self._consults.get(offer.call_id) or self._open.get(offer.call_id)
        if h is None or not offer.offer_id.split("#", 1)[-1].startswith(("x", "c")):
            return {}
        t = h.t
        return {"uniqueid": t.uniqueid,
                "transfer": {"kind": t.kind.value, "from_agent_id": t.from_agent_id, "from": t.from_agent_name,
                             "target": t.target.describe(), "consult": offer.call_id != t.uniqueid}}

    def tick(self, now_mono: float) -> None:
        """A Redirect whose sessions never arrived: the transfer is lost (the dialplan's fallback has the
        caller, or they hung up)."""
        for h in [h for h in self._open.values() if h.t.state is TransferState.MOVING and now_mono > h.arrive_by]:
            late = not h.caller_arrived or (h.t.kind is TransferKind.ATTENDED and not h.consult_arrived)
            if not late:
                continue
            h.t.outcome = "session_never_came"
            h.t.go("lost", self._now(), caller_arrived=h.caller_arrived, consult_arrived=h.consult_arrived)
            if h.caller_arrived:
                h.signals.put_nowait(_Signal("blind"))  # holding for a consultation that never started
            self._finish(h)
        # tokens of transfers over whose sessions can no longer come
        for token, h in list(self._tokens.items()):
            if not h.t.is_open and now_mono > h.arrive_by + _RETURN_WAIT_SECONDS:
                del self._tokens[token]

    # ============================================================================ AMI: department phones
    def phone_dial_begin(self, caller_uniqueid: str | None, dest_channel: str, at: datetime) -> None:
        pd = self._phones.get(caller_uniqueid or "")
        if pd is not None and pd.ring_start is None:
            pd.ring_start, pd.channel = at, dest_channel

    def phone_dial_end(self, caller_uniqueid: str | None, status: str, at: datetime) -> None:
        pd = self._phones.get(caller_uniqueid or "")
        if pd is None or status != "ANSWER" or pd.answered_at is not None:
            return
        pd.answered_at = at
        h = pd.handover
        t = h.t
        if t.state is not TransferState.RINGING:
            return
        t.to_agent_name = t.target.name
        if t.kind is TransferKind.ATTENDED and caller_uniqueid == t.consult_uniqueid:
            t.to_channel = pd.channel
            t.go("consult_answered", self._now(), phone=pd.interface)
            self._publish(h)
        else:
            t.go("target_answered", self._now(), phone=pd.interface)
            self._finish(h)

    # ============================================================================ FastAGI scripts
    async def caller_script(self, ch: Channel,
                            take_message: Callable[[Channel, CallInfo, str], Awaitable[Outcome]] | None = None) -> None:
        """FastAGI ``transfer`` (arg 1: the token): the caller, redirected here, same uniqueid."""
        token = ch.args[0] if ch.args else ""
        h = self._tokens.get(token)
        if h is None or h.t.token != token or h.t.uniqueid != ch.uniqueid:
            log.warning("transfer not known here: the dialplan's fallback takes the caller", uniqueid=ch.uniqueid,
                        channel=ch.channel_name, token_known=h is not None)
            return
        t = h.t
        h.caller_arrived = True
        self._tokens.pop(token, None)
        if not t.is_open and t.state is not TransferState.RETURNED:
            t.log.warning("transfer over before the caller arrived: the dialplan's fallback takes them",
                          state=t.state.value)
            return
        call = h.call
        call.channel = ch.channel_name
        t.log.info("caller arrived in the transfer script", channel=ch.channel_name)
        outcome: Outcome | None = None
        try:
            if t.kind is TransferKind.BLIND:
                outcome = await self._blind(ch, h)
            else:
                outcome = await self._hold(ch, h)
            if outcome is Outcome.MESSAGE:
                outcome = await take_message(ch, call, "transfer-not-answered") if take_message else Outcome.AGENT
        except CallerHungUp:
            outcome = Outcome.HUNG_UP
        finally:
            if t.is_open and ch.hung_up:
                was = t.state
                t.go("caller_hung_up", self._now())
                if t.kind is TransferKind.ATTENDED and was is not TransferState.CONSULTING:
                    self._stop_consult(h, was)  # nobody to consult about any more; a consultation goes on
                self._finish(h)
            t.log.info("transfer script over", outcome=outcome.value if outcome else "interrupted",
                       state=t.state.value)
        if outcome in (Outcome.DONE, Outcome.HUNG_UP):
            try:
                await ch.set_variable("CC_RESULT", "done", allow_dead=True)
            except (CallerHungUp, ChannelError):
                pass

    async def consult_script(self, ch: Channel) -> None:
        """FastAGI ``consult`` (arg 1: the consult token): the first agent's leg, redirected here with the
        caller; it rings the target, then either hangs up (completed) or is bridged back to the caller."""
        token = ch.args[0] if ch.args else ""
        h = self._tokens.get(token)
        if h is None or h.t.consult_token != token or h.t.consult_uniqueid != ch.uniqueid:
            log.warning("consultation not known here: the agent's leg is told and hung up", uniqueid=ch.uniqueid,
                        token_known=h is not None)
            return
        self._tokens.pop(token, None)
        h.consult_arrived = True
        t = h.t
        t.log.info("first agent arrived in the consult script", channel=ch.channel_name)
        clog = t.log.bind(consult_leg=ch.uniqueid)
        ended = False

        def first_agent_done() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self._room.end_offer(t.first_offer_id, t.from_agent_id)

        try:
            if t.state is TransferState.MOVING:
                phones = self._phones_of(t.target)
                call = replace(h.call, uniqueid=ch.uniqueid, channel=ch.channel_name, path=list(h.call.path),
                               tickets=h.call.tickets, log=None)
                if phones:
                    await self._ring_phones(ch, h, phones, consult=True)
                else:
                    t.go("target_offered", self._now())
                    self._publish(h)
                    await self._room.wait_transferred(ch, call, self._waiting_call(h, ch.uniqueid, f"c{t.seq}-"))
            if t.state is TransferState.RETURNED:
                # Back to the caller: their session bridges this channel, which ends this session (HANGUP);
                # the first agent's call goes on there.
                h.signals.put_nowait(_Signal("bridge", ch.channel_name, t.first_offer_id, t.from_agent_id))
                await ch.music_on(self.cfg.acd.music_class)
                await asyncio.sleep(_RETURN_WAIT_SECONDS)
                clog.warning("the caller never took the first agent back", waited=_RETURN_WAIT_SECONDS)
            # Completed (the target has the caller), or the caller is gone: the first agent's call is over.
            first_agent_done()
            await ch.set_variable("CC_RESULT", "done", allow_dead=True)
        except CallerHungUp:
            pass
        finally:
            if ch.hung_up and t.state in (TransferState.MOVING, TransferState.RINGING, TransferState.CONSULTING):
                # The first agent hung up during the consultation: the caller goes to the target blind.
                t.go("first_agent_left", self._now())
                first_agent_done()
                self._withdraw_consult(t)
                h.signals.put_nowait(_Signal("blind"))
                self._publish(h)
            elif t.state is not TransferState.RETURNED:
                first_agent_done()  # completed, abandoned, lost: nothing more for the first agent here
            if self._consults.get(t.consult_uniqueid or "") is h:
                del self._consults[t.consult_uniqueid or ""]
            clog.info("consult script over", state=t.state.value)

    # ---------------------------------------------------------------------------- pieces of the scripts
    def _waiting_call(self, h: _Handover, call_id: str, prefix: str, *, to_target: bool = True,
                      only: OnlyFor | None = None) -> WaitingCall:
        """The call as the distributor is told of it: for the transfer's target (or ``only``, or anyone)."""
        call, t = h.call, h.t
        owner = call.owner
        return WaitingCall(
            call_id=call_id, uniqueid=call_id, caller_id=call.caller_id,
            owner_id=owner.owner_id if owner else None,
            language=call.language if is_token(call.language) else None, required_skill=None,
            priority_level=h.level, entered_at=self._now(), previous_agent_id=None,
            caller_name=(owner.owner_name if owner else call.caller_name) or "",
            unit=f"{owner.building}-{owner.unit}" if owner else "",
            only=self._only_for(t.target, self._room.call_hotline(call)) if to_target else only,
            offer_prefix=prefix, target_wait_seconds=self.cfg.transfers.target_wait_seconds,
            hotline=self._room.call_hotline(call),  # the call keeps its hotline (queue fallback, figures)
        )

    async def _blind(self, ch: Channel, h: _Handover) -> Outcome:
        t = h.t
        phones = self._phones_of(t.target)
        if phones:
            answered = await self._ring_phones(ch, h, phones, consult=False)
            if answered:
                return await self._room.after_call(ch, h.call, None)
            # nobody at the department's phones: the fallback, as for an agent or a group
            mode = self.cfg.transfers.no_answer
            if mode == "message":
                return Outcome.MESSAGE
            only = OnlyFor(agent_id=t.from_agent_id) if mode == "back" else None
            if only is not None:
                self._fell_back[t.uniqueid] = "back"
            wc = self._waiting_call(h, t.uniqueid, t.offer_prefix, to_target=False, only=only)
            return await self._room.wait_transferred(ch, h.call, wc)
        t.go("target_offered", self._now())
        self._publish(h)
        return await self._room.wait_transferred(ch, h.call, self._waiting_call(h, t.uniqueid, t.offer_prefix))

    async def _hold(self, ch: Channel, h: _Handover) -> Outcome:
        """Attended: the caller holds (music) until the consultation says what happens."""
        await ch.music_on(self.cfg.acd.music_class)
        sig = await h.signals.get()
        await ch.music_off()
        if sig.kind == "blind":
            if h.t.is_open:
                return await self._blind(ch, h)
            return Outcome.AGENT  # lost: the dialplan's fallback queue
        return await self._bridge(ch, h, sig)

    async def _bridge(self, ch: Channel, h: _Handover, sig: _Signal) -> Outcome:
        """``EXEC Bridge <leg>,x``: the target's leg (complete) or the first agent's (back); the leg is hung
        up when the bridge ends, the caller comes back here (a survey, or a further transfer)."""
        uid = h.t.uniqueid
        b = _Bridged(h.call, sig.agent_id, sig.offer_id, h.level)
        self._bridged[uid] = b
        result: str | None = None
        handed = False
        h.t.log.info("bridging the caller", channel=sig.channel, agent_id=sig.agent_id)
        try:
            await ch.exec("Bridge", sig.channel, "x")
            result = await ch.get_variable("BRIDGERESULT")
        finally:
            if self._bridged.get(uid) is b:
                del self._bridged[uid]
            handed = self.handing_over(uid)
            if handed:
                self.session_left(uid, b.offer_id, b.agent_id)
            else:
                self._room.end_offer(b.offer_id, b.agent_id)
        if handed:
            return Outcome.DONE
        if result != "SUCCESS":
            h.t.log.warning("bridge failed: the dialplan's fallback queue takes the caller", result=result)
            return Outcome.AGENT
        return await self._room.after_call(ch, h.call, b.agent_id)

    async def _ring_phones(self, ch: Channel, h: _Handover, phones: list[str], *, consult: bool) -> bool:
        """A department's phones in order, two rings each, from this session; True when one answered (its
        call, or the consultation, is over now)."""
        t = h.t
        t.go("target_offered", self._now())
        self._publish(h)
        ring = max(1, math.ceil(self.cfg.acd.ring_timeout_seconds))
        metrics = self._room.dist.metrics
        prefix = f"c{t.seq}-" if consult else t.offer_prefix
        who = f"department:{t.target.code}"
        for n, iface in enumerate(phones, 1):
            if t.state is not TransferState.RINGING:
                break
            pd = _PhoneDial(h, iface, f"{ch.uniqueid}#{prefix}d{n}", self._now())
            self._phones[ch.uniqueid] = pd
            metrics.offer_made(pd.offer_id, who, pd.made_at)
            t.log.info("ringing a department phone", phone=iface, ring_timeout=ring)
            status: str | None = None
            try:
                await ch.exec("Dial", iface, str(ring))
                status = await ch.get_variable("DIALSTATUS", allow_dead=True)
            finally:
                self._phones.pop(ch.uniqueid, None)
                end = pd.answered_at or self._now()
                metrics.offer_closed(pd.offer_id, who, pd.made_at, pd.ring_start, end, pd.answered_at is not None,
                                     t.uniqueid)
            if pd.answered_at is not None or status == "ANSWER":
                if t.state is TransferState.RINGING and not consult:  # the answer was not seen on AMI
                    t.to_agent_name = t.target.name
                    t.go("target_answered", self._now(), phone=iface)
                    self._finish(h)
                return True
        if t.state is TransferState.RINGING:
            t.outcome = "missed"
            if consult:
                t.go("not_answered", self._now(), reason="missed")
            else:
                t.go("fell_back", self._now(), reason="missed", fallback=self.cfg.transfers.no_answer)
            self._finish(h)
        return False

    def _stop_consult(self, h: _Handover, was: TransferState) -> None:
        """End the consultation (``was``: the state it was in): hang up the target's answered leg, or take
        back the offer ringing it; the consult script then bridges the first agent back (or, the caller
        gone, ends)."""
        t = h.t
        if was is TransferState.CONSULTING and t.to_channel:
            ami = self._room.ami_up()
            channel = t.to_channel
            if ami is not None and CHANNEL_NAME.match(channel):
                async def hang_up() -> None:
                    from callcentre.ami.link import AMIError

                    try:
                        await ami.hangup(channel)
                    except AMIError as exc:
                        t.log.warning("could not hang up the target's leg", error=str(exc))

                self._room.spawn(hang_up(), f"consult-end-{t.uniqueid}")
            return
        self._withdraw_consult(t)

    def _withdraw_consult(self, t: Transfer) -> None:
        cid = t.consult_uniqueid
        if not cid:
            return
        try:
            self._room.apply(self._room.dist.withdraw(cid, WithdrawReason.OTHER).decisions)
        except AcdError:
            pass  # not waiting (never queued, or answered)
        waiter = self._room.waiters.get(cid)
        if waiter is not None:
            waiter.deliver(STOP_WAITING)

    # ============================================================================ ends, history, the wallboard
    def _finish(self, h: _Handover) -> None:
        """The transfer reached an end state: free the call for another transfer, keep the history."""
        t = h.t
        if self._open.get(t.uniqueid) is h:
            del self._open[t.uniqueid]
        self._recent[f"{t.uniqueid}/{t.seq}"] = t
        while len(self._recent) > 20:
            self._recent.popitem(last=False)
        self._publish(h)
        if self._history is not None:
            history = self._history
            entry = t.history_entry()
            tickets = list(h.call.tickets)

            async def write() -> None:
                await history.record(t.uniqueid, tickets, entry)

            self._room.spawn(write(), f"transfer-history-{t.uniqueid}-{t.seq}")

    def _done(self, h: _Handover) -> None:
        """Forget a transfer that never started."""
        t = h.t
        if self._open.get(t.uniqueid) is h:
            del self._open[t.uniqueid]
        for token in (t.token, t.consult_token):
            if token and self._tokens.get(token) is h:
                del self._tokens[token]
        if t.consult_uniqueid and self._consults.get(t.consult_uniqueid) is h:
            del self._consults[t.consult_uniqueid]

    def _queue_logged(self, t: Transfer) -> None:
        if self._queue_log is None:
            return
        try:
            self._queue_log.transferred(t, self._now())
        except Exception:  # the queue_log never stops a call
            log.exception("queue_log transfer line failed", uniqueid=t.uniqueid)

    def _publish(self, h: _Handover) -> None:
        t = h.t
        frame = {"type": "transfer", "transfer": t.to_dict()}
        self._room.publish(f"agent:{t.from_agent_id}", frame)
        if t.to_agent_id and t.to_agent_id != t.from_agent_id:
            self._room.publish(f"agent:{t.to_agent_id}", frame)
        self._room.publish("wallboard", frame)

    def snapshot(self) -> list[dict[str, Any]]:
        """Open transfers, then the last few that ended (for the wallboard)."""
        open_ = [h.t.to_dict() for h in self._open.values()]
        ended = [t.to_dict() for t in reversed(self._recent.values()) if not t.is_open][:5]
        return open_ + ended

    def get(self, uniqueid: str) -> Transfer | None:
        h = self._open.get(uniqueid)
        return h.t if h is not None else None


# ------------------------------------------------------------------------------------------------ history
class TransferHistoryWriter:
    """A finished transfer in the history: a ``transferred`` row on each ticket made in the call (actor:
    who asked; details: from, to, kind, when, outcome) and a step of the call's record (its IVR path)."""

    def __init__(self, tickets: Any, lifecycle: Any) -> None:
        """``tickets``: the TicketStore (``record_call_event``); ``lifecycle``: the TicketService
        (``id_for_number``, ``add_note``)."""
        self._tickets = tickets
        self._lifecycle = lifecycle

    async def record(self, uniqueid: str, tickets: list[str], entry: Mapping[str, Any]) -> None:
        blog = log.bind(uniqueid=uniqueid)
        kind = str(entry.get("kind", ""))
        to = str(entry.get("to_agent_id") or entry.get("target") or "")
        step = f"xfer-{kind[:1]}>{to}:{entry.get('state')}"[:32]
        try:
            await self._tickets.record_call_event(uniqueid, "transfer", {"ivr_step": step})
        except StorageUnavailable as exc:
            blog.warning("transfer not recorded on the call", error=str(exc))
        note = (f"Transferred ({kind}) from {entry.get('from')} to {entry.get('to')}: {entry.get('state')}"
                + (f" ({entry.get('outcome')})" if entry.get("outcome") else ""))
        for number in tickets:
            try:
                ticket_id = await self._lifecycle.id_for_number(number)
                if ticket_id is not None:
                    await self._lifecycle.add_note(ticket_id, str(entry.get("by") or "transfer"), note,
                                                   event="transferred", details=dict(entry))
            except Exception as exc:  # noqa: BLE001 - best effort: a history row never breaks a call
                blog.warning("transfer not recorded on the ticket", ticket=number, error=str(exc))


__all__ = [
    "Connected",
    "TransferHistory",
    "TransferHistoryWriter",
    "TransferQueueLog",
    "TransferRoom",
    "Transfers",
]
