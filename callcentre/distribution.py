"""Call distribution, the adapter: drives the pure :class:`~callcentre.domain.acd.Distributor`.

The caller stays in our FastAGI session while waiting: music on hold plays (Asterisk keeps playing it
while the session is idle after ``SET MUSIC ON``), announcements interrupt it every
``acd.announce_every_seconds``, and the moment an agent is chosen the session writes
``EXEC Dial <agent>,<two rings>``. The ring timeout *is* the two-ring rule: Asterisk stops ringing
after ``rings_target × ring_cycle_seconds`` and the next agent is tried at once.

Ring and answer times come from AMI ``DialBegin`` / ``DialEnd`` (not ``ANSWEREDTIME``, which the
captures show is wrong for Local channels). Without AMI the Dial still runs and is measured from our
own clock, with a warning. A key pressed while waiting is seen as an AMI ``DTMFEnd`` on the
caller's channel (the session is idle, so it cannot read it) and turns the wait into a call-back
request that keeps its place: when its turn comes, the agent's phone is rung with an AMI Originate
into the ``callback`` script, which then dials the owner.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping

import structlog

from callcentre.ami.calls import CallListener
from callcentre.config import Config
from callcentre.domain import speech
from callcentre.domain.callerid import safe_display_name
from callcentre.domain.acd import (
    AcdError,
    Agent,
    AgentPaused,
    AgentState,
    Alert,
    Announce,
    CancelOffer,
    Decision,
    Distributor,
    MakeOffer,
    MaxWaitReached,
    NoAgentAvailable,
    Offer,
    PauseReason,
    RingOnDuty,
    StateChange,
    WaitingCall,
    WithdrawReason,
    classify_priority,
)
from callcentre.domain.ivr import CALLBACK_CATEGORY, CallInfo, Outcome, acknowledged, commit_shielded
from callcentre.domain.model import Priority, TicketKind
from callcentre.domain.promises import promise_deadline
from callcentre.domain.ports import CallerHungUp, Channel, ChannelError, Clock, StorageUnavailable, TicketStore
from callcentre.tasks import cancel_and_wait

log = structlog.get_logger("callcentre.acd")

Publish = Callable[[str, Mapping[str, Any]], None]
_CALLBACK = "callback-key"
_SKILL = re.compile(r"^[a-z0-9_\-]{1,32}$")
_DIGITS = re.compile(r"^\+?[0-9]{3,20}$")
# A caller number passed on to the agent's phone as it came (anything else is replaced, see _ring).
_DIALLABLE = re.compile(r"\+?[0-9*#]{0,32}")
_PREVIOUS_AGENT_MAX = 100_000
# A channel name as Asterisk reports it (Local/agent1@callcentre-agents-0000002a;1, PJSIP/agent1-0000002a):
# nothing ChanSpy's argument list would split on.
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_\-+.@#*/;]{1,128}$")
_SPY_OPTIONS = {"listen": "qE", "whisper": "qwE", "barge": "qBE"}


@dataclass
class _Waiter:
    ch: Channel
    call: CallInfo
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    answered: bool = False
    callback: bool = False
    offer_id: str | None = None  # the offer whose Dial is in progress
    agent_id: str | None = None  # who answered
    entered_mono: float = 0.0  # entry into the queue, on the monotonic clock
    answer_recorded: bool = False
    announcing: bool = False  # the position announcement is playing (it blocks the AGI session)
    offer_pending: bool = False  # an offer is in the inbox: stop announcing


@dataclass
class _CallbackRequest:
    call: CallInfo
    number: str  # E.164, validated digits
    ticket: str  # the ticket that records the promise
    offer: Offer | None = None
    action_id: str | None = None


class ACDService(CallListener):
    """Implements the IVR's AgentConnector with our own call distribution; also listens to the AMI
    call tracker (ring and answer times, DTMF, hang-ups, Originate outcomes)."""

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        tickets: TicketStore,
        *,
        publish: Publish | None = None,
        persist_history: Callable[[list[StateChange]], Awaitable[None]] | None = None,
        last_call_at: Callable[[str | None, int | None, str | None], Awaitable[datetime | None]] | None = None,
        supervisor_interface: Callable[[int], Awaitable[str | None]] | None = None,
        screen_pop: Callable[[CallInfo], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.tickets = tickets
        self.dist = Distributor(cfg.acd, clock, timezone=cfg.centre.timezone)
        self.publish: Publish = publish or (lambda topic, payload: None)
        self.persist_history = persist_history
        self.last_call_at = last_call_at
        self.ami: Any = None  # AMILink, set by the application when the link exists
        self._waiters: dict[str, _Waiter] = {}
        self._offer_by_caller: dict[str, str] = {}  # caller uniqueid -> offer being dialled
        self._dest_channel: dict[str, str] = {}  # offer id -> agent-leg channel (for cancelling)
        self._our_legs: set[str] = set()  # agent-leg uniqueids of our own offers
        # The agent's half of each call we put through (the channel the server dialled or originated,
        # i.e. the ';1' of a Local agent leg): uniqueid -> (agent id, channel name), and agent -> uniqueid.
        self._agent_legs: dict[str, tuple[str, str]] = {}
        self._leg_of_agent: dict[str, str] = {}
        self._elsewhere: dict[str, str] = {}  # channel uniqueid -> agent id busy on a call we did not route
        self._cancelled: set[str] = set()
        self._callbacks: dict[str, _CallbackRequest] = {}
        self._callback_by_action: dict[str, str] = {}
        # owner/caller key -> last agent who answered them; least recently used dropped past the cap
        self._previous_agent: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self._committing: set[asyncio.Task] = set()  # ticket commits that nothing may cancel
        self._ticker: asyncio.Task | None = None
        self.alerts: deque[dict[str, Any]] = deque(maxlen=30)  # recent alerts, for a wallboard that (re)connects
        self._history: list[StateChange] = []
        self._supervisor_interface = supervisor_interface
        self._agent_by_interface: dict[str, str] = {}
        # Open tickets past their promise (set by the application from the escalation loop).
        self.overdue_provider: Callable[[], list[dict[str, Any]]] | None = None
        self._screen_pop_builder = screen_pop

    def load_agents(self, agents: list[Agent], last_states: Mapping[str, tuple[str, datetime, str | None]],
                    start_ready: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Add the agents and rebuild their states after a restart (not reset them).

        An agent who was ringing, on a call or wrapping up when the server stopped is READY again
        (those calls went to the dialplan's fallback queue); a paused agent stays paused with the
        same reason; a logged-out agent stays logged out. AMI resynchronisation then marks agents
        still busy on a live call.
        """
        for agent in agents:
            self.dist.add_agent(agent)
            self._agent_by_interface[agent.interface] = agent.agent_id
            last = last_states.get(agent.agent_id)
            if last is None:
                if agent.agent_id in start_ready:
                    self._apply(self.dist.agent_ready(agent.agent_id))
                continue
            state, since, reason = last
            if state in (AgentState.RINGING.value, AgentState.ON_CALL.value, AgentState.WRAP_UP.value):
                state = AgentState.READY.value
            pause = None
            if state == AgentState.PAUSED.value:
                try:
                    pause = PauseReason(reason or "other")
                except ValueError:
                    pause = PauseReason.OTHER
            try:
                self.dist.restore(agent.agent_id, AgentState(state), since, pause)
            except (AcdError, ValueError) as exc:
                log.warning("agent state not restored", agent=agent.agent_id, error=str(exc))
        self._history.clear()  # restoring is not a change to record again
        self.dist.take_history()

    def sync_agents(self, agents: list[Agent]) -> None:
        """Add agents created since start-up and apply changed phones, skills or languages."""
        for agent in agents:
            try:
                current = self.dist.agent(agent.agent_id)
            except AcdError:
                self.dist.add_agent(agent)
                self._agent_by_interface[agent.interface] = agent.agent_id
                log.info("agent added", agent=agent.agent_id, login=agent.login)
                continue
            if current != agent:
                self._agent_by_interface.pop(current.interface, None)
                self._agent_by_interface[agent.interface] = agent.agent_id
                self._apply(self.dist.update_agent(agent))
                log.info("agent updated", agent=agent.agent_id, login=agent.login)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="acd-ticker")

    async def stop(self) -> None:
        await cancel_and_wait(self._ticker, *self._tasks)
        self._ticker = None
        if self._committing:  # call-back tickets being saved: finish them before the database closes
            await asyncio.gather(*self._committing, return_exceptions=True)
        await self._flush_history()

    async def _tick_loop(self) -> None:
        """Timers (ring deadlines, wrap-ups, announcements, maximum waits) and history writes.

        Wallboard snapshots are pushed by the web layer (callcentre/web, once a second when changed);
        alerts, agent states and screen-pops are published here at once."""
        while True:
            # Wake for the earliest timer (a wrap-up ending is an agent becoming free: the waiting
            # caller should not wait up to a whole period for it), at most 0.2 s apart.
            due = self.dist.next_timer()
            await asyncio.sleep(0.2 if due is None else min(0.2, max(0.005, due - self.clock.monotonic())))
            try:
                self._apply(self.dist.tick(self.clock.monotonic()))
            except Exception:  # the loop must survive a bug in one decision
                log.exception("acd tick failed")
            await self._flush_history()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("acd task failed", task=task.get_name(), error=repr(task.exception()))

    # ------------------------------------------------------------------ decisions

    def _apply(self, decisions: list[Decision] | tuple[Decision, ...]) -> None:
        for d in decisions:
            if isinstance(d, MakeOffer):
                offer = d.offer
                if offer.callback:
                    self._spawn(self._ring_callback(offer), f"callback-{offer.offer_id}")
                    continue
                waiter = self._waiters.get(offer.call_id)
                if waiter is None:  # the caller is gone; the domain will hear of it through withdraw
                    log.warning("offer for a call no longer waiting", offer=offer.offer_id)
                    continue
                waiter.inbox.put_nowait(d)
                waiter.offer_pending = True
                if waiter.announcing:
                    self._interrupt_announcement(waiter, offer.offer_id)
                self._screen_pop(offer, waiter.call)
            elif isinstance(d, CancelOffer):
                self._cancelled.add(d.offer_id)
                self._cancel_leg(d.offer_id, d.reason)
            elif isinstance(d, (Announce, MaxWaitReached, NoAgentAvailable, RingOnDuty)):
                waiter = self._waiters.get(d.call_id)
                if waiter is not None:
                    waiter.inbox.put_nowait(d)
            elif isinstance(d, Alert):
                log.warning("service alert", kind=d.kind.value, detail=_plain(d))
                self.publish("wallboard", {"type": "alert", "alert": _plain(d)})
            elif isinstance(d, AgentPaused):
                log.warning("agent paused", agent=d.agent_id, reason=d.reason.value, automatic=d.automatic)
                self.publish(f"agent:{d.agent_id}", {"type": "state", "state": "paused", "reason": d.reason.value})
        self._drain_history()

    def _drain_history(self) -> None:
        changes = self.dist.take_history()
        for c in changes:
            log.info("agent state", agent=c.agent_id, old=c.from_state.value, new=c.to_state.value, trigger=c.event, reason=c.reason)
            self.publish(f"agent:{c.agent_id}", {"type": "state", "state": c.to_state.value, "reason": c.reason})
        self._history.extend(changes)

    async def _flush_history(self) -> None:
        if not self._history or self.persist_history is None:
            self._history.clear()
            return
        batch, self._history = self._history, []
        try:
            await self.persist_history(batch)
        except StorageUnavailable as exc:
            log.warning("agent history not saved; will retry", error=str(exc), changes=len(batch))
            self._history[:0] = batch[-5000:]

    def _screen_pop(self, offer: Offer, call: CallInfo) -> None:
        """Publish the caller's record to the agent whose phone is about to ring.

        The basic card (what the IVR learnt) goes out at once, before the Dial is written; the full
        owner card from the database follows a few milliseconds later in a second message."""
        topic = f"agent:{offer.agent_id}"
        owner = call.owner
        basic = {
            "uniqueid": call.uniqueid,
            "caller_id": call.caller_id,
            "caller_id_raw": safe_display_name(call.caller_id_raw or "", 64),
            "caller_name": safe_display_name(call.caller_name or "", 64),
            "language": call.language,
            "identified": {"owner_id": owner.owner_id, "unit_id": owner.unit_id, "building": owner.building,
                           "unit": owner.unit} if owner else None,
            "ivr_path": call.path,
            "ivr_tickets": list(call.tickets),
            "owners": [],
            "last_calls": [],
            "repeat_caller": False,
            "unowned_tickets": [],
        }
        self.publish(topic, {"type": "screen_pop", "offer_id": offer.offer_id, "call": basic})
        if self._screen_pop_builder is None:
            return
        builder = self._screen_pop_builder

        async def full() -> None:
            try:
                card = await builder(call)
            except StorageUnavailable as exc:
                log.warning("screen-pop card not built", offer=offer.offer_id, error=str(exc))
                return
            self.publish(topic, {"type": "screen_pop", "offer_id": offer.offer_id, "call": card})

        self._spawn(full(), f"screen-pop-{offer.offer_id}")

    def _interrupt_digit(self) -> str:
        return "*" if self.cfg.acd.callback_digit == "#" else "#"

    def _interrupt_announcement(self, waiter: _Waiter, offer_id: str) -> None:
        """An agent is free while the caller hears the (10-second) position announcement: stop it now.

        The session is busy in STREAM FILE and reads nothing from us until the file ends, so the
        announcement's escape digits include one the server itself "presses" on the caller's channel
        (AMI PlayDTMF, Receive: true). Without AMI the announcement stops at the end of the current
        file instead (see _announce)."""
        if self.ami is None or not self.ami.connected:
            return
        from callcentre.ami.link import AMIError

        channel, digit = waiter.call.channel, self._interrupt_digit()

        async def press() -> None:
            try:
                await self.ami.send({"Action": "PlayDTMF", "Channel": channel, "Digit": digit,
                                     "Duration": "80", "Receive": "true"})
            except AMIError as exc:
                log.info("announcement not interrupted; it stops at the end of the current file",
                         uniqueid=waiter.call.uniqueid, offer=offer_id, error=str(exc))

        self._spawn(press(), f"interrupt-{offer_id}")

    def _end_pop(self, agent_id: str | None, offer_id: str | None) -> None:
        if agent_id:
            self.publish(f"agent:{agent_id}", {"type": "call_ended", "offer_id": offer_id})

    def _cancel_leg(self, offer_id: str, reason: str) -> None:
        channel = self._dest_channel.get(offer_id)
        if channel is None:
            log.info("offer cancelled before its phone rang; stopped when DialBegin arrives", offer=offer_id, reason=reason)
            return
        if self.ami is None or not self.ami.connected:
            log.info("offer cancelled; its Dial ends at its own ring timeout (AMI down)", offer=offer_id, reason=reason)
            return

        async def hang_up() -> None:
            from callcentre.ami.link import AMIError

            try:
                await self.ami.hangup(channel)
            except AMIError as exc:
                log.warning("could not stop the agent's phone ringing", offer=offer_id, error=str(exc))

        self._spawn(hang_up(), f"cancel-{offer_id}")

    # ------------------------------------------------------------------ AgentConnector

    async def connect(self, ch: Channel, call: CallInfo, *, reason: str, skill: str | None, emergency: bool) -> Outcome:
        now = self.clock.now()
        last = None
        if self.last_call_at is not None:
            try:
                last = await self.last_call_at(call.caller_id, call.owner.owner_id if call.owner else None, call.uniqueid)
            except StorageUnavailable:
                last = None
        level = classify_priority(
            emergency=emergency, vip=bool(call.owner and call.owner.vip), last_call_at=last, now=now,
            repeat_caller_hours=self.cfg.acd.repeat_caller_hours,
        )
        owner = call.owner
        key = _who(call)
        wc = WaitingCall(
            call_id=call.uniqueid,
            uniqueid=call.uniqueid,
            caller_id=call.caller_id,
            owner_id=owner.owner_id if owner else None,
            language=call.language if _SKILL.match(call.language or "") else None,
            required_skill=skill if skill and _SKILL.match(skill) else None,
            priority_level=level,
            entered_at=now,
            previous_agent_id=self._previous_agent.get(key) if key and self.cfg.acd.prefer_previous_agent else None,
            caller_name=(owner.owner_name if owner else call.caller_name) or "",
            unit=f"{owner.building}-{owner.unit}" if owner else "",
        )
        waiter = _Waiter(ch=ch, call=call, entered_mono=self.clock.monotonic())
        self._waiters[wc.call_id] = waiter
        clog = log.bind(uniqueid=call.uniqueid, caller=call.caller_id or "withheld")
        clog.info("caller waiting for an agent", level=level.name, skill=wc.required_skill, reason=reason,
                  agents_ready=self.dist.ready_count())
        try:
            self._apply(self.dist.enqueue(wc))
            return await self._wait(waiter, clog)
        finally:
            await self._leave(waiter, clog)

    async def _leave(self, waiter: _Waiter, clog) -> None:
        call_id = waiter.call.uniqueid
        self._waiters.pop(call_id, None)
        offer_id = waiter.offer_id
        if offer_id is not None:
            # The caller left during a Dial (hang-up). GET VARIABLE still answers on a dead channel.
            status = None
            try:
                status = await waiter.ch.get_variable("DIALSTATUS", allow_dead=True)
            except (CallerHungUp, ChannelError, asyncio.CancelledError):
                status = None
            self._offer_by_caller.pop(call_id, None)
            self._dest_channel.pop(offer_id, None)
            self._cancelled.discard(offer_id)
            try:
                self._end_pop(self.dist.offer(offer_id).agent_id, offer_id)
            except AcdError:
                pass
            if status == "ANSWER" or waiter.answered:
                waiter.answered = True
                self._answered(waiter, offer_id, None)
                self._apply(self.dist.on_call_ended(offer_id))
        if not waiter.answered and not waiter.callback:
            result = self.dist.withdraw(call_id, WithdrawReason.ABANDONED if waiter.ch.hung_up else WithdrawReason.OTHER)
            self._apply(result.decisions)
            if not result.already_withdrawn:
                clog.info("caller left the queue", waited=round(result.waited_seconds, 1), offers=result.offers)

    async def _wait(self, waiter: _Waiter, clog) -> Outcome:
        ch = waiter.ch
        acd = self.cfg.acd
        music = False
        while True:
            if not music:
                await ch.music_on(acd.music_class)
                music = True
            item = await waiter.inbox.get()
            if isinstance(item, MakeOffer):
                waiter.offer_pending = False
                if item.offer.offer_id in self._cancelled:
                    self._cancelled.discard(item.offer.offer_id)
                    continue
                await ch.music_off()
                music = False
                if await self._ring(waiter, item.offer, clog):
                    return await self._after_call(waiter, clog)
            elif isinstance(item, Announce):
                await ch.music_off()
                music = False
                if await self._announce(waiter, item) and await self._register_callback(waiter, clog):
                    return Outcome.DONE
            elif item == _CALLBACK:
                if waiter.call.caller_id and _DIGITS.match(waiter.call.caller_id):
                    await ch.music_off()
                    music = False
                    if await self._register_callback(waiter, clog):
                        return Outcome.DONE
            elif isinstance(item, NoAgentAvailable):
                await ch.music_off()
                await self._say(ch, waiter.call, ["closed-hours" if item.reason == "closed" else "no-agents"])
                self._apply(self.dist.withdraw(item.call_id, WithdrawReason.CLOSED if item.reason == "closed" else WithdrawReason.NO_AGENTS).decisions)
                return Outcome.MESSAGE
            elif isinstance(item, MaxWaitReached):
                await ch.music_off()
                await self._say(ch, waiter.call, ["max-wait-reached"])
                self._apply(self.dist.withdraw(item.call_id, WithdrawReason.MAX_WAIT).decisions)
                return Outcome.MESSAGE
            elif isinstance(item, RingOnDuty):
                await ch.music_off()
                music = False
                status = await self._dial(ch, item.interface, max(30, int(acd.ring_timeout_seconds)))
                if status == "ANSWER":
                    waiter.answered = True
                    self.dist.withdraw(item.call_id, WithdrawReason.TRANSFERRED)
                    return Outcome.DONE
                self._apply(self.dist.withdraw(item.call_id, WithdrawReason.CLOSED).decisions)
                return Outcome.MESSAGE

    async def _say(self, ch: Channel, call: CallInfo, names: list[str], escape: str = "") -> str | None:
        return await ch.play([f"{call.language}/{n}" for n in names], escape)

    async def _announce(self, waiter: _Waiter, a: Announce) -> bool:
        """Position and expected wait; returns True if the caller pressed the call-back key."""
        lang = waiter.call.language
        words = ["queue-position", *speech.number(max(1, a.position), lang)]
        if a.expected_wait_seconds is not None:
            minutes = max(1, math.ceil(a.expected_wait_seconds / 60))
            words += ["queue-expected-wait", *speech.number(minutes, lang), "minutes-word"]
        can_callback = bool(waiter.call.caller_id and _DIGITS.match(waiter.call.caller_id))
        if can_callback:
            words.append("callback-offer")
        key = self.cfg.acd.callback_digit
        escape = (key if can_callback else "") + self._interrupt_digit()
        # File by file, so an offer that comes while it plays waits for one file at most even when
        # the AMI interrupt (a digit pressed on the caller's channel) cannot be sent.
        waiter.announcing = True
        try:
            for word in words:
                if waiter.offer_pending:
                    return False
                pressed = await self._say(waiter.ch, waiter.call, [word], escape)
                if pressed:
                    return pressed == key and can_callback
        finally:
            waiter.announcing = False
        return False

    async def _register_callback(self, waiter: _Waiter, clog) -> bool:
        """The caller pressed the call-back key. A ticket records the promise before the caller hears
        it (message, ``callback_request``, the general promise): it outlives a restart, the owner's
        line being busy when we call, or no agent ever coming free, and is escalated like any other
        ticket until someone closes it. Then the call keeps its place as a call-back. False (the
        caller keeps waiting, nothing was promised) when the ticket cannot be saved."""
        call = waiter.call
        draft = call.ticket_draft(TicketKind.MESSAGE, CALLBACK_CATEGORY, Priority.GENERAL, source="callback")
        deadline = promise_deadline(self.cfg.tickets.promises, Priority.GENERAL, CALLBACK_CATEGORY, self.clock.now())
        try:
            ticket = await commit_shielded(self.tickets, draft, deadline, self._committing)
        except StorageUnavailable as exc:
            clog.error("call-back not booked: its ticket could not be saved", error=str(exc))
            await self._say(waiter.ch, call, ["apology", "please-wait"])
            # The key press also came as an AMI DTMFEnd (queued as _CALLBACK): that echo is not a new request.
            kept = [item for item in _drain(waiter.inbox) if item != _CALLBACK]
            for item in kept:
                waiter.inbox.put_nowait(item)
            return False
        position = self.dist.request_callback(call.uniqueid)
        waiter.callback = True
        assert call.caller_id is not None
        self._callbacks[call.uniqueid] = _CallbackRequest(call=call, number=call.caller_id, ticket=ticket.number)
        call.tickets.append(ticket.number)
        clog.info("call-back requested", position=position, ticket=ticket.number, promised_by=deadline.isoformat())
        await self._say(waiter.ch, call, ["callback-registered"])
        await acknowledged(self.tickets, ticket, clog)
        await self._say(waiter.ch, call, ["goodbye"])
        return True

    async def _dial(self, ch: Channel, interface: str, ring_seconds: int) -> str | None:
        """EXEC Dial: Asterisk stops ringing after ``ring_seconds``; returns DIALSTATUS."""
        await ch.exec("Dial", interface, str(ring_seconds))
        return await ch.get_variable("DIALSTATUS")

    async def _ring(self, waiter: _Waiter, offer: Offer, clog) -> bool:
        """Ring one agent for at most two rings; True when the agent answered (the call is over now)."""
        ch = waiter.ch
        try:
            await ch.set_variable("CALLERID(name)", offer.caller_display[:64])
            if not _DIALLABLE.fullmatch(waiter.call.caller_id_raw or ""):
                # The agent's phone gets the caller's number too: one with anything but digits (CR/LF,
                # ${...}, a name typed into the number) is replaced by what we understood of it.
                await ch.set_variable("CALLERID(num)", waiter.call.caller_id or "anonymous")
        except ChannelError:
            pass
        waiter.offer_id = offer.offer_id
        self._offer_by_caller[ch.uniqueid] = offer.offer_id
        timeout = max(1, math.ceil(offer.ring_timeout_seconds))
        clog.info("offering call", agent=offer.agent_id, offer=offer.offer_id, ring_timeout=timeout)
        written = self.clock.now()
        status = await self._dial(ch, offer.interface, timeout)
        self._offer_by_caller.pop(ch.uniqueid, None)
        waiter.offer_id = None
        self._end_pop(offer.agent_id, offer.offer_id)
        self._dest_channel.pop(offer.offer_id, None)
        was_cancelled = offer.offer_id in self._cancelled
        self._cancelled.discard(offer.offer_id)
        if was_cancelled:
            clog.info("offer ended after cancel", offer=offer.offer_id, dial_status=status)
            return False
        if status == "ANSWER":
            waiter.answered = True
            self._answered(waiter, offer.offer_id, written)
            self._apply(self.dist.on_call_ended(offer.offer_id))
            clog.info("call answered by agent and finished", agent=offer.agent_id)
            return True
        if status in ("BUSY", "CONGESTION", "CHANUNAVAIL"):
            self._apply(self.dist.on_offer_failed(offer.offer_id, status))
        else:  # NOANSWER, or anything unexpected: the next agent at once
            self._apply(self.dist.on_ring_timeout(offer.offer_id))
        clog.info("offer not answered", agent=offer.agent_id, dial_status=status)
        return False

    def _record_answer(self, waiter: _Waiter, offer_id: str, at_mono: float | None) -> None:
        """Keep who answered and how fast on the call's row (monthly per-agent two-ring share)."""
        if waiter.answer_recorded:
            return
        waiter.answer_recorded = True
        try:
            agent = self.dist.agent(self.dist.offer(offer_id).agent_id)
        except AcdError:
            return
        data: dict[str, object] = {"answered_by": agent.login}
        if at_mono is not None:  # None: the answer was not seen on AMI, its time is unknown
            seconds = max(0.0, at_mono - waiter.entered_mono)
            data.update(answer_seconds=round(seconds, 3), within_target=seconds <= self.cfg.acd.ring_timeout_seconds)
        self._spawn(self.tickets.record_call_event(waiter.call.uniqueid, "answered", data), f"answer-{offer_id}")

    def _answered(self, waiter: _Waiter, offer_id: str, fallback_at: datetime | None) -> None:
        """Make sure the domain knows the offer was answered (AMI normally told it at the answer)."""
        try:
            offer = self.dist.offer(offer_id)
        except AcdError:
            return
        waiter.agent_id = offer.agent_id
        key = _who(waiter.call)
        if key:
            self._previous_agent[key] = offer.agent_id
            self._previous_agent.move_to_end(key)
            while len(self._previous_agent) > _PREVIOUS_AGENT_MAX:
                self._previous_agent.popitem(last=False)
        if self.dist.agent_state(offer.agent_id) is AgentState.RINGING:
            log.warning("answer not seen on AMI; measured from our own clock", offer=offer_id)
            self._apply(self.dist.on_answered(offer_id, fallback_at))
        self._record_answer(waiter, offer_id, None)

    async def _after_call(self, waiter: _Waiter, clog) -> Outcome:
        """The agent hung up first and the caller is still here: ask for a rating (1 to 5)."""
        ch = waiter.ch
        if not self.cfg.acd.satisfaction_survey:
            return Outcome.DONE
        lang = waiter.call.language
        result = await ch.get_digits([f"{lang}/rate-service"], 5000, 1)
        rating = result.digits[:1]
        if rating in ("1", "2", "3", "4", "5"):
            await self._say(ch, waiter.call, ["thanks-rating", "goodbye"])
            clog.info("satisfaction rated", rating=int(rating), agent=waiter.agent_id)
            try:
                await self.tickets.record_call_event(
                    waiter.call.uniqueid, "satisfaction",
                    {"rating": int(rating), "agent_id": waiter.agent_id, "tickets": list(waiter.call.tickets)},
                )
            except StorageUnavailable:
                clog.warning("rating not saved", rating=int(rating))
        return Outcome.DONE

    # ------------------------------------------------------------------ call-back requests

    async def _ring_callback(self, offer: Offer) -> None:
        """The call-back request's turn: ring the agent (Originate), whose script then dials the owner."""
        req = self._callbacks.get(offer.call_id)
        if req is None or self.ami is None or not self.ami.connected:
            log.warning("call-back cannot be placed now", offer=offer.offer_id, ami=bool(self.ami and self.ami.connected))
            self._apply(self.dist.on_offer_failed(offer.offer_id, "CHANUNAVAIL" if req else "CANCEL"))
            return
        from callcentre.ami.link import AMIError

        req.offer = offer
        self._screen_pop(offer, req.call)
        # The OriginateResponse of a busy or unreachable phone comes right behind the 'queued' reply and
        # can be handled before the originate call below returns: know its ActionID before sending.
        action_id = req.action_id = self.ami.new_action_id()
        self._callback_by_action[action_id] = offer.call_id
        try:
            await self.ami.originate(
                channel=offer.interface,
                context="callcentre-callback",
                exten="callback",
                caller_id=f'"{offer.caller_display[:40]}" <{req.number.lstrip("+")}>',
                timeout_ms=int(offer.ring_timeout_seconds * 1000),
                variables={"CC_CALL": _safe_var(offer.call_id), "CC_OFFER": _safe_var(offer.offer_id)},
                action_id=action_id,
            )
        except AMIError as exc:
            self._callback_by_action.pop(action_id, None)
            log.warning("call-back originate failed", offer=offer.offer_id, error=str(exc))
            self._apply(self.dist.on_offer_failed(offer.offer_id, "CHANUNAVAIL"))
            return
        self._apply(self.dist.on_ringing(offer.offer_id))  # a no-op if the outcome is already in

    def originate_response(self, action_id: str, response: str, reason: Any, uniqueid: str | None, at: float) -> None:
        """The outcome of a call-back request's Originate to the agent (Reason 4 answered, 3 no answer, 5 busy)."""
        reason = None if reason is None else str(reason)
        call_id = self._callback_by_action.pop(action_id, None)
        if call_id is None:
            return
        req = self._callbacks.get(call_id)
        if req is None or req.offer is None:
            return
        offer_id = req.offer.offer_id
        if response == "Success":
            self._apply(self.dist.on_answered(offer_id))
        elif str(reason) == "5":
            self._apply(self.dist.on_offer_failed(offer_id, "BUSY"))
        elif str(reason) == "3":
            self._apply(self.dist.on_ring_timeout(offer_id))
        else:
            self._apply(self.dist.on_offer_failed(offer_id, "CHANUNAVAIL"))

    async def callback_script(self, ch: Channel) -> None:
        """FastAGI ``callback``: runs on the agent's answered phone; dials the owner."""
        call_id = await ch.get_variable("CC_CALL") or ""
        req = self._callbacks.get(call_id)
        if req is None or req.offer is None:
            log.warning("call-back script for an unknown request", call=call_id)
            return
        offer_id = req.offer.offer_id
        self._remember_leg(req.offer.agent_id, ch.uniqueid, ch.channel_name)
        if not _DIGITS.match(req.number):
            log.warning("call-back number is not diallable", call=call_id)
            return
        interface = self.cfg.centre.outbound_template.format(number=req.number)
        try:
            await ch.play([f"{req.call.language}/please-wait"])
            status = await self._dial(ch, interface, 40)
            if status == "ANSWER":
                log.info("call-back made", call=call_id, ticket=req.ticket, agent_id=req.offer.agent_id)
            else:  # the ticket stays open (and is escalated) until someone reaches the owner
                log.warning("call-back did not reach the owner", call=call_id, ticket=req.ticket, dial_status=status,
                            agent_id=req.offer.agent_id)
            await self.tickets.record_call_event(call_id, "callback", {"dial_status": status, "agent_id": req.offer.agent_id})
        finally:
            self._callbacks.pop(call_id, None)
            self._apply(self.dist.on_call_ended(offer_id))
            self._apply(self.dist.withdraw(call_id, WithdrawReason.TRANSFERRED).decisions)

    # ------------------------------------------------------------------ AMI events

    def dial_begin(self, caller_uniqueid: str | None, dest_uniqueid: str, dest_channel: str, at: float) -> None:
        offer_id = self._offer_by_caller.get(caller_uniqueid or "")
        if offer_id is None:
            return
        self._dest_channel[offer_id] = dest_channel
        self._our_legs.add(dest_uniqueid)
        try:
            self._remember_leg(self.dist.offer(offer_id).agent_id, dest_uniqueid, dest_channel)
        except AcdError:
            pass
        if offer_id in self._cancelled:
            # Cancelled (agent paused, caller's turn re-offered) before the phone started ringing.
            self._cancel_leg(offer_id, "cancelled before ringing")
            return
        self._apply(self.dist.on_ringing(offer_id, self._wall(at)))

    def dial_end(self, caller_uniqueid: str | None, dest_uniqueid: str, dial_status: str, at: float) -> None:
        offer_id = self._offer_by_caller.get(caller_uniqueid or "")
        if offer_id is None:
            return
        if dial_status == "ANSWER":
            self._apply(self.dist.on_answered(offer_id, self._wall(at)))
            waiter = self._waiters.get(caller_uniqueid or "")
            if waiter is not None:
                waiter.answered = True
                self._record_answer(waiter, offer_id, at)
        # NOANSWER / BUSY / CANCEL are handled when the Dial returns in the AGI session, with DIALSTATUS.

    def _remember_leg(self, agent_id: str, uniqueid: str, channel: str) -> None:
        old = self._leg_of_agent.pop(agent_id, None)
        if old is not None:
            self._agent_legs.pop(old, None)
        self._agent_legs[uniqueid] = (agent_id, channel)
        self._leg_of_agent[agent_id] = uniqueid

    def hangup(self, uniqueid: str, cause: int | None, at: float) -> None:
        self._our_legs.discard(uniqueid)
        leg = self._agent_legs.pop(uniqueid, None)
        if leg is not None and self._leg_of_agent.get(leg[0]) == uniqueid:
            del self._leg_of_agent[leg[0]]
        agent_id = self._elsewhere.pop(uniqueid, None)
        if agent_id is not None:
            self._apply(self.dist.free_elsewhere(agent_id, uniqueid))

    def dtmf(self, uniqueid: str, digit: str, at: float) -> None:
        waiter = self._waiters.get(uniqueid)
        if waiter is not None and digit == self.cfg.acd.callback_digit and waiter.offer_id is None:
            waiter.inbox.put_nowait(_CALLBACK)

    def on_ami_event(self, event: Mapping[str, Any]) -> None:
        """An agent's phone in use on a call we did not route is not offered another."""
        if event.get("Event") != "Newstate" or event.get("ChannelStateDesc") != "Up":
            return
        uniqueid = str(event.get("Uniqueid") or "")
        if not uniqueid or uniqueid in self._our_legs or uniqueid in self._elsewhere:
            return
        agent_id = self._agent_for_channel(str(event.get("Channel") or ""))
        if agent_id is None or self.dist.agent_state(agent_id) in (AgentState.RINGING, AgentState.ON_CALL):
            return
        self._elsewhere[uniqueid] = agent_id
        self._apply(self.dist.busy_elsewhere(agent_id, uniqueid))

    def on_resync(self, open_calls: list[Any]) -> None:
        """After an AMI (re)login: rebuild which agents are busy on calls we did not route."""
        refs: dict[str, set[str]] = {}
        for rec in open_calls:
            agent_id = self._agent_for_channel(rec.channel)
            if agent_id and rec.uniqueid not in self._our_legs and getattr(rec, "answered_at", None) is not None:
                refs.setdefault(agent_id, set()).add(rec.uniqueid)
        self._elsewhere = {u: a for a, us in refs.items() for u in us}
        # legs whose Hangup was lost while the link was down are gone from Asterisk: forget them
        present = {rec.uniqueid for rec in open_calls}
        self._our_legs &= present
        for uid in [u for u in self._agent_legs if u not in present]:
            self.hangup(uid, None, 0.0)
        for view in self.dist.snapshot().agents:
            self._apply(self.dist.resync_elsewhere(view.agent_id, refs.get(view.agent_id, set())))

    def _agent_for_channel(self, channel: str) -> str | None:
        """The agent whose phone this channel is: ``PJSIP/agent1-0000002a`` -> agent of ``PJSIP/agent1``.

        A dict look-up per event (the AMI hot path), not a scan of the agents."""
        base, sep, _seq = channel.rpartition("-")
        if not sep:
            return None
        return self._agent_by_interface.get(base)

    def _wall(self, mono: float) -> datetime:
        return self.clock.now() - timedelta(seconds=max(0.0, self.clock.monotonic() - mono))

    # ------------------------------------------------------------------ control (web API)

    def snapshot(self) -> dict[str, Any]:
        """The live picture for the wallboard and the API (the web layer's ACDControl contract)."""
        snap = self.dist.snapshot()
        m = snap.metrics.to_dict()
        now_wall = self.clock.now()
        queue = []
        for q in snap.queue:
            w = self._waiters.get(q.call_id)
            req = self._callbacks.get(q.call_id)
            call = w.call if w else (req.call if req else None)
            owner = call.owner if call else None
            queue.append(
                {
                    "call_id": q.call_id, "caller": q.caller_id, "priority": q.priority, "position": q.position,
                    "wait_seconds": round(q.waited_seconds, 1),
                    "entered_at": (now_wall - timedelta(seconds=q.waited_seconds)).isoformat(),
                    "callback": q.callback, "ivr_choice": q.required_skill or "agent", "language": q.language,
                    "ringing_agent_id": q.ringing_agent_id,
                    "owner_name": owner.owner_name if owner else None,
                    "unit": f"{owner.building}-{owner.unit}" if owner else None,
                }
            )
        callers = {q["call_id"]: q["caller"] for q in queue}
        agents = [
            {
                "agent_id": a.agent_id, "name": a.name, "state": a.state.value,
                "reason": a.pause_reason.value if a.pause_reason else None,
                "since": (now_wall - timedelta(seconds=a.seconds_in_state)).timestamp(),
                "current_call_id": a.current_call_id,
                "current_caller": callers.get(a.current_call_id or "") or self._caller_of(a.current_call_id),
                "busy_elsewhere": a.busy_elsewhere, "answered_today": a.answered_today, "missed_today": a.missed_today,
                "offers_today": a.offers_today, "two_ring_share": a.two_ring_share,
            }
            for a in snap.agents
        ]
        figures = {
            "two_ring_share_today": m.get("call_two_ring_share"),
            "offer_two_ring_share_today": m.get("offer_two_ring_share"),
            "avg_wait": m.get("avg_speed_of_answer"),
            "p90_wait": m.get("p90_speed_of_answer"),
            "longest_wait": m.get("longest_current_wait"),
            "abandon_rate": m.get("abandon_rate"),
            "waiting": len(queue),
            "agents_ready": sum(1 for a in agents if a["state"] == AgentState.READY.value),
            "target_wait_seconds": self.cfg.acd.ring_timeout_seconds,
            "today": m,
        }
        overdue = self.overdue_provider() if self.overdue_provider is not None else []
        return {"at": snap.at.isoformat(), "queue": queue, "agents": agents, "figures": figures,
                "alerts": list(self.alerts), "overdue": overdue}

    def _caller_of(self, call_id: str | None) -> str | None:
        if not call_id:
            return None
        w = self._waiters.get(call_id)
        return w.call.caller_id if w else None

    def metrics(self) -> dict[str, Any]:
        return self.dist.metrics_snapshot().to_dict()

    async def agent_action(self, agent_id: str, action: str, reason: str | None = None) -> None:
        """ready / pause / unpause / end_wrapup / login / logout; raises ValueError when not allowed."""
        agent_id = str(agent_id)
        try:
            if action in ("ready", "end_wrapup", "unpause"):
                decisions = self.dist.agent_ready(agent_id)
            elif action == "pause":
                try:
                    pr = PauseReason(reason or "other")
                except ValueError:
                    raise ValueError(f"unknown pause reason {reason!r}") from None
                decisions = self.dist.pause(agent_id, pr)
            elif action == "login":
                decisions = self.dist.login(agent_id)
            elif action == "logout":
                decisions = self.dist.logout(agent_id)
            else:
                raise ValueError(f"unknown action {action!r}")
        except AcdError as exc:
            raise ValueError(str(exc)) from exc
        self._apply(decisions)

    async def supervise(self, supervisor_id: int, agent_id: int | str, mode: str) -> None:
        """Listen (q), whisper (qw) or barge (qB) on an agent's call, rung on the supervisor's own phone.

        ChanSpy is given the exact channel of the agent's half of the call (the channel we dialled or
        originated), never the agent's interface as a prefix: ``PJSIP/agent1`` is also a prefix of
        ``PJSIP/agent10-…``, and a Local interface names two halves, of which the ``;2`` one faces the
        caller (whispering there is heard by the caller, not the agent). Option E ends the
        supervisor's leg with the call. The browser picks only the agent and one of three modes:
        the application, the channel and the phone rung (the supervisor's validated interface, from
        the database) are all ours."""
        from callcentre.ami.link import AMIError

        options = _SPY_OPTIONS.get(mode)
        if options is None:
            raise ValueError(f"unknown mode {mode!r}")
        if self.ami is None or not self.ami.connected:
            raise ValueError("the AMI link is down")
        try:
            agent = self.dist.agent(str(agent_id))
        except AcdError as exc:
            raise ValueError(str(exc)) from exc
        leg = self._agent_legs.get(self._leg_of_agent.get(agent.agent_id, ""))
        if self.dist.agent_state(agent.agent_id) is not AgentState.ON_CALL or leg is None:
            raise ValueError(f"agent {agent.login} is not on a call put through by the server")
        channel = leg[1]
        if not _CHANNEL_NAME.match(channel):
            raise ValueError("the agent's channel name cannot be given to ChanSpy")
        phone = await self._supervisor_interface(int(supervisor_id)) if self._supervisor_interface else None
        if not phone:
            raise ValueError("no phone is set for this supervisor (users.supervisor_interface)")
        try:
            await self.ami.send(
                {
                    "Action": "Originate", "Channel": phone, "Application": "ChanSpy",
                    "Data": f"{channel},{options}", "CallerID": f'"Listen {agent.login}" <0>',
                    "Timeout": "30000", "Async": "true",
                }
            )
        except AMIError as exc:
            raise ValueError(f"Asterisk refused: {exc}") from exc
        log.info("supervision started", supervisor=supervisor_id, agent=agent.agent_id, mode=mode, channel=channel)


def _who(call: CallInfo) -> str | None:
    if call.owner is not None:
        return f"owner:{call.owner.owner_id}"
    return f"phone:{call.caller_id}" if call.caller_id else None


def _drain(queue: asyncio.Queue) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _safe_var(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.#\-]", "", value)[:64]


def _plain(obj: Any) -> Any:
    """A dataclass as JSON-able data (enums to values, datetimes to ISO text)."""
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (list, tuple, frozenset, set)):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    return obj
