"""Call distribution, the adapter: drives the pure :class:`~callcentre.domain.acd.Distributor`.

:class:`ACDService` is three things to the rest of the server:

* the IVR's ``AgentConnector``: :meth:`ACDService.connect` runs the caller's wait script
  (:class:`~callcentre.domain.waiting.WaitScript`: music, announcements, the call-back key, the Dial to
  two rings) and is its :class:`~callcentre.domain.waiting.WaitingRoom`;
* a listener of the AMI call tracker: ring and answer times come from ``DialBegin`` / ``DialEnd`` (not
  ``ANSWEREDTIME``, which the captures show is wrong for Local channels), matched to offers by
  :class:`~callcentre.distribution.legs.OfferLegs`; a key pressed while waiting is an AMI ``DTMFEnd``
  on the caller's channel (the session is idle, so it cannot read it); agents' phones busy on calls we
  did not route are kept by :class:`~callcentre.distribution.legs.AgentLegs`. Without AMI the Dial
  still runs and is measured from our own clock, with a warning;
* the web layer's ``ACDControl``: the wallboard snapshot (:mod:`callcentre.domain.wallboard`), agent
  state changes and supervision (ChanSpy).

The queue call-back is :class:`~callcentre.distribution.queue_callback.QueueCallback`'s; transfers
are :class:`~callcentre.distribution.transfers.Transfers`' (this service is their ``TransferRoom``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping

import structlog

from callcentre.ami.calls import CallListener
from callcentre.config import Config
from callcentre.distribution.legs import AgentLegs, LegState, OfferLeg, OfferLegs
from callcentre.distribution.queue_callback import QueueCallback
from callcentre.distribution.queue_log import QueueLogEmitter, TransferLines
from callcentre.distribution.transfers import Connected, TransferHistory, TransferQueueLog, Transfers
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
    PriorityLevel,
    RingOnDuty,
    StateChange,
    TargetUnavailable,
    WaitingCall,
    WithdrawReason,
    classify_priority,
)
from callcentre.domain.acd_metrics import within_rings
from callcentre.domain.calls import CallInfo, Outcome
from callcentre.domain.hotlines import Hotlines
from callcentre.domain.model import Ticket
from callcentre.domain.patterns import CHANNEL_NAME, is_token
from callcentre.domain.ports import Channel, Clock, StorageUnavailable, TicketStore
from callcentre.domain.queue_log import QueueLogSink
from callcentre.domain.recordings import CallRecorder
from callcentre.domain.screen_pop import OwnerLookup, basic_card, full_card
from callcentre.domain.waiting import CALLBACK_KEY, Waiter, WaitScript, WaitState, interrupt_digit
from callcentre.domain.wallboard import WallboardSnapshot, agent_item, wallboard_snapshot
from callcentre.tasks import cancel_and_wait

log = structlog.get_logger("callcentre.acd")

Publish = Callable[[str, Mapping[str, Any]], None]
_PREVIOUS_AGENT_MAX = 100_000
_SPY_OPTIONS = {"listen": "qE", "whisper": "qwE", "barge": "qBE"}


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
        owners: OwnerLookup | None = None,
        ami: Callable[[], Any] | None = None,
        overdue: Callable[[], list[dict[str, Any]]] | None = None,
        queue_log: QueueLogSink | None = None,
        recorder: CallRecorder | None = None,
        hotlines: Hotlines | None = None,
        transfer_history: TransferHistory | None = None,
        transfer_queue_log: TransferQueueLog | None = None,
    ) -> None:
        """``owners``: where the full screen-pop card's owner record comes from (none: basic card only).
        ``ami``: returns the AMI link (or None while there is none; it is built after this service).
        ``overdue``: open tickets past their promise, for the wallboard (the escalation loop's).
        ``queue_log``: where app_queue-compatible queue_log lines go (none: not written).
        ``recorder``: records answered calls (:mod:`callcentre.distribution.recording`); None: no recording.
        ``transfer_history``: where finished transfers are kept (tickets' and the call's history);
        ``transfer_queue_log``: the queue_log's transfer lines (default: ``TransferLines`` over ``queue_log``)."""
        self.cfg = cfg
        self.clock = clock
        self.tickets = tickets
        # Several hotlines: each agent answers some (group tags), each hotline has its night service.
        # Without `hotlines:` in the configuration nothing is partitioned: as before hotlines existed.
        self.hotlines = hotlines or Hotlines.from_config(cfg)
        self._by_hotline = not self.hotlines.implicit
        self.dist = Distributor(cfg.acd, clock, timezone=cfg.centre.timezone,
                                night=self.hotlines.night_services() if self._by_hotline else None)
        self.publish: Publish = publish or (lambda topic, payload: None)
        self.persist_history = persist_history
        self.last_call_at = last_call_at
        self._ami_link: Callable[[], Any] = ami or (lambda: None)
        self._overdue: Callable[[], list[dict[str, Any]]] = overdue or (lambda: [])
        self._supervisor_interface = supervisor_interface
        self._owners = owners
        self.recorder = recorder
        self.waiters: dict[str, Waiter] = {}  # caller uniqueid (= call id) -> the caller waiting in our session
        self.offer_legs = OfferLegs()
        self.agent_legs = AgentLegs()
        self.queue_callback = QueueCallback(
            cfg, clock, tickets, self.dist, apply=self._apply, ami=self._ami, screen_pop=self._screen_pop,
            legs=self.agent_legs,
        )
        self._committing = self.queue_callback.committing  # call-back tickets being saved (stop() waits for them)
        # owner/caller key -> last agent who answered them; least recently used dropped past the cap
        self._previous_agent: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self.alerts: deque[dict[str, Any]] = deque(maxlen=30)  # recent alerts, for a wallboard that (re)connects
        self._history: list[StateChange] = []
        self._agent_by_interface: dict[str, str] = {}
        qlc = cfg.queue_log
        self.queue_log = QueueLogEmitter(  # facts -> app_queue's queue_log lines (distribution/queue_log.py)
            queue_log, clock, queue=qlc.queue_name, agents=self.dist.agent, positions=self.dist.position,
            agent_field=qlc.agent_field, caller_name=qlc.log_caller_name, hotline_queues=cfg.queue_log_names(),
        )
        self.transfers = Transfers(self, history=transfer_history,
                                   queue_log=transfer_queue_log or TransferLines(self.queue_log, cfg.transfers.context))

    def _ami(self) -> Any:
        return self._ami_link()

    def _ami_up(self) -> Any:
        ami = self._ami()
        return ami if ami is not None and ami.connected else None

    def load_agents(self, agents: list[Agent], last_states: Mapping[str, tuple[str, datetime, str | None]],
                    start_ready: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Add the agents and rebuild their states after a restart (not reset them).

        An agent who was ringing, on a call or wrapping up when the server stopped is READY again
        (those calls went to the dialplan's fallback queue); a paused agent stays paused with the
        same reason; a logged-out agent stays logged out. AMI resynchronisation then marks agents
        still busy on a live call.
        """
        for agent in agents:
            agent = self._answering(agent)
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
            agent = self._answering(agent)
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

    def _answering(self, agent: Agent) -> Agent:
        """The agent with the hotlines they answer (their login and skills against each hotline's agent
        groups), unless the caller already said."""
        if agent.hotlines or not self._by_hotline:
            return agent
        return replace(agent, hotlines=self.hotlines.for_agent(agent.login, agent.skills))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.queue_log.started(self.dist.snapshot().agents)
        self._ticker = asyncio.create_task(self._tick_loop(), name="acd-ticker")

    async def stop(self) -> None:
        await cancel_and_wait(self._ticker, *self._tasks)
        self._ticker = None
        self.queue_log.flush()
        await self.queue_callback.drain()  # call-back tickets being saved: finish them before the database closes
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
                self.queue_log.tick()
                self.transfers.tick(self.clock.monotonic())
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
                    self._spawn(self.queue_callback.ring(offer), f"callback-{offer.offer_id}")
                    continue
                waiter = self.waiters.get(offer.call_id)
                if waiter is None:  # the caller is gone; the domain will hear of it through withdraw
                    log.warning("offer for a call no longer waiting", offer=offer.offer_id)
                    continue
                self.offer_legs.queued(offer, waiter.uniqueid)
                if waiter.deliver(d):  # an announcement is playing: cut it short
                    self._interrupt_announcement(waiter, offer.offer_id)
                self._screen_pop(offer, waiter.call)
            elif isinstance(d, CancelOffer):
                self.queue_log.unanswered(d.call_id, d.offer_id)
                self._cancel_leg(d.offer_id, d.reason, self.offer_legs.cancel(d.offer_id, d.reason))
            elif isinstance(d, (Announce, MaxWaitReached, NoAgentAvailable, RingOnDuty)):
                waiter = self.waiters.get(d.call_id)
                if waiter is not None:
                    waiter.deliver(d)
            elif isinstance(d, Alert):
                log.warning("service alert", kind=d.kind.value, detail=_plain(d))
                self.publish("wallboard", {"type": "alert", "alert": _plain(d)})
            elif isinstance(d, AgentPaused):
                log.warning("agent paused", agent=d.agent_id, reason=d.reason.value, automatic=d.automatic)
                self.publish(f"agent:{d.agent_id}", {"type": "state", "state": "paused", "reason": d.reason.value})
            elif isinstance(d, TargetUnavailable):
                self.transfers.target_unavailable(d)
        self._drain_history()

    def _drain_history(self) -> None:
        changes = self.dist.take_history()
        self.queue_log.agents_changed(changes)
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
        extra = self.transfers.card_extra(offer)  # a transferred call: who transferred it
        self.publish(topic, {"type": "screen_pop", "offer_id": offer.offer_id, "call": {**basic_card(call), **extra}})
        if self._owners is None:
            return
        owners = self._owners

        async def full() -> None:
            try:
                card = await full_card(owners, call)
            except StorageUnavailable as exc:
                log.warning("screen-pop card not built", offer=offer.offer_id, error=str(exc))
                return
            self.publish(topic, {"type": "screen_pop", "offer_id": offer.offer_id, "call": {**card, **extra}})

        self._spawn(full(), f"screen-pop-{offer.offer_id}")

    def _interrupt_announcement(self, waiter: Waiter, offer_id: str) -> None:
        """An agent is free while the caller hears the (10-second) position announcement: stop it now.

        The session is busy in STREAM FILE and reads nothing from us until the file ends, so the
        announcement's escape digits include one the server itself "presses" on the caller's channel
        (AMI PlayDTMF, Receive: true). Without AMI the announcement stops at the end of the current
        file instead (see WaitScript._announce)."""
        ami = self._ami_up()
        if ami is None:
            return
        from callcentre.ami.link import AMIError

        channel, digit = waiter.call.channel, interrupt_digit(self.cfg.acd.callback_digit)

        async def press() -> None:
            try:
                await ami.send({"Action": "PlayDTMF", "Channel": channel, "Digit": digit,
                                "Duration": "80", "Receive": "true"})
            except AMIError as exc:
                log.info("announcement not interrupted; it stops at the end of the current file",
                         uniqueid=waiter.call.uniqueid, offer=offer_id, error=str(exc))

        self._spawn(press(), f"interrupt-{offer_id}")

    def _end_pop(self, agent_id: str | None, offer_id: str | None) -> None:
        if agent_id:
            self.publish(f"agent:{agent_id}", {"type": "call_ended", "offer_id": offer_id})

    def _cancel_leg(self, offer_id: str, reason: str, leg: OfferLeg | None) -> None:
        channel = leg.agent_channel if leg is not None else None
        if channel is None:
            log.info("offer cancelled before its phone rang; stopped when DialBegin arrives", offer=offer_id, reason=reason)
            return
        ami = self._ami_up()
        if ami is None:
            log.info("offer cancelled; its Dial ends at its own ring timeout (AMI down)", offer=offer_id, reason=reason)
            return

        async def hang_up() -> None:
            from callcentre.ami.link import AMIError

            try:
                await ami.hangup(channel)
            except AMIError as exc:
                log.warning("could not stop the agent's phone ringing", offer=offer_id, error=str(exc))

        self._spawn(hang_up(), f"cancel-{offer_id}")

    # ------------------------------------------------------------------ AgentConnector

    async def connect(self, ch: Channel, call: CallInfo, *, reason: str, skill: str | None, emergency: bool) -> Outcome:
        if self.recorder is not None:
            await self.recorder.announce(ch, call)  # "this call may be recorded", before anyone is rung
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
        key = call.who
        wc = WaitingCall(
            call_id=call.uniqueid,
            uniqueid=call.uniqueid,
            caller_id=call.caller_id,
            owner_id=owner.owner_id if owner else None,
            language=call.language if is_token(call.language) else None,
            required_skill=skill if is_token(skill) else None,
            priority_level=level,
            entered_at=now,
            previous_agent_id=self._previous_agent.get(key) if key and self.cfg.acd.prefer_previous_agent else None,
            caller_name=(owner.owner_name if owner else call.caller_name) or "",
            unit=f"{owner.building}-{owner.unit}" if owner else "",
            # offered to its hotline's agents only
            hotline=self.call_hotline(call),
        )
        waiter = Waiter(ch=ch, call=call, entered_mono=self.clock.monotonic(), queued_as=wc)
        self.waiters[wc.call_id] = waiter
        waiter.log.info("caller waiting for an agent", level=level.name, skill=wc.required_skill, reason=reason,
                        agents_ready=self.dist.ready_count(), hotline=wc.hotline)
        return await WaitScript(waiter, self, self.cfg.acd, self.clock, self.tickets, self.recorder).run()

    def call_hotline(self, call: CallInfo) -> str | None:
        """The hotline a call is distributed within (None: any agent; so always with one hotline)."""
        return call.hotline_id if self._by_hotline and is_token(call.hotline_id) else None

    # ------------------------------------------------------------------ WaitingRoom (the wait script's port)

    def enter(self, waiter: Waiter) -> None:
        assert waiter.queued_as is not None
        decisions = self.dist.enqueue(waiter.queued_as)
        self.queue_log.entered(waiter.uniqueid, caller_number=waiter.call.caller_id_raw,
                               caller_name=waiter.call.caller_name,
                               queue=self.queue_log.queue_for(waiter.queued_as.hotline))
        self._apply(decisions)

    def take_offer(self, waiter: Waiter, offer: Offer) -> bool:
        return self.offer_legs.take(offer.offer_id)

    def dialling(self, waiter: Waiter, offer: Offer) -> None:
        self.offer_legs.dial_written(offer.offer_id)
        self.queue_log.dialling(waiter.uniqueid, offer.offer_id, offer.agent_id)

    def dial_returned(self, waiter: Waiter, offer: Offer, dial_status: str | None, written_at: datetime) -> bool:
        leg = self.offer_legs.dial_returned(offer.offer_id)
        waiter.dialling_offer = None
        if self.transfers.handing_over(waiter.uniqueid):
            # Redirected for a transfer: the Dial answered 200 result=0; the caller moves when we end.
            self.transfers.session_left(waiter.uniqueid, offer.offer_id, offer.agent_id, waiter)
            return True
        if self.transfers.keeps_offer(waiter, offer):
            # A consultation completed: the target's leg went on with the caller, and so does the offer.
            waiter.log.info("consultation over; the target keeps the caller", offer=offer.offer_id)
            return True
        self._end_pop(offer.agent_id, offer.offer_id)
        if leg is not None and leg.state is LegState.CANCELLED:
            waiter.log.info("offer ended after cancel", offer=offer.offer_id, dial_status=dial_status)
            waiter.go("dial_unanswered")
            return False
        if dial_status == "ANSWER" or waiter.state is WaitState.ANSWERED:
            self._answered(waiter, offer.offer_id, written_at)
            self.queue_log.call_ended(waiter.uniqueid, caller_gone=waiter.ch.hung_up)
            self._apply(self.dist.on_call_ended(offer.offer_id))
            waiter.log.info("call answered by agent and finished", agent=offer.agent_id)
            return True
        waiter.go("dial_unanswered")
        self.queue_log.unanswered(waiter.uniqueid, offer.offer_id)
        if dial_status in ("BUSY", "CONGESTION", "CHANUNAVAIL"):
            self._apply(self.dist.on_offer_failed(offer.offer_id, dial_status))
        else:  # NOANSWER, or anything unexpected: the next agent at once
            self._apply(self.dist.on_ring_timeout(offer.offer_id))
        waiter.log.info("offer not answered", agent=offer.agent_id, dial_status=dial_status)
        return False

    def withdraw(self, waiter: Waiter, reason: WithdrawReason) -> None:
        self.queue_log.leaving(waiter.uniqueid, reason)
        self._apply(self.dist.withdraw(waiter.uniqueid, reason).decisions)

    def on_duty_answered(self, waiter: Waiter) -> None:
        waiter.go("answered")
        self.queue_log.leaving(waiter.uniqueid, WithdrawReason.TRANSFERRED)
        self._apply(self.dist.withdraw(waiter.uniqueid, WithdrawReason.TRANSFERRED).decisions)

    async def book_callback(self, waiter: Waiter) -> Ticket | None:
        ticket = await self.queue_callback.book(waiter.call, waiter.log)
        if ticket is not None:
            self.queue_log.callback_booked(waiter.uniqueid, key=self.cfg.acd.callback_digit)
        return ticket

    def leaving(self, waiter: Waiter) -> None:
        if self.waiters.get(waiter.uniqueid) is waiter:
            del self.waiters[waiter.uniqueid]
        self.transfers.leaving(waiter)

    def handed_over(self, waiter: Waiter) -> bool:
        return self.transfers.handed_over(waiter)

    def left(self, waiter: Waiter, dial_status: str | None) -> None:
        offer = waiter.dialling_offer
        if offer is not None and self.transfers.handing_over(waiter.uniqueid):
            # The HANGUP of a Redirect came before the Dial's reply was read: the same hand-over.
            self.offer_legs.dial_returned(offer.offer_id)
            self.transfers.session_left(waiter.uniqueid, offer.offer_id, offer.agent_id, waiter)
            waiter.dialling_offer = offer = None
        if offer is not None:  # the caller hung up during a Dial
            offer_id = offer.offer_id
            self.offer_legs.dial_returned(offer_id)
            try:
                self._end_pop(self.dist.offer(offer_id).agent_id, offer_id)
            except AcdError:
                pass
            if dial_status == "ANSWER" or waiter.state is WaitState.ANSWERED:
                self._answered(waiter, offer_id, None)
                self.queue_log.call_ended(waiter.uniqueid, caller_gone=waiter.ch.hung_up)
                self._apply(self.dist.on_call_ended(offer_id))
            waiter.dialling_offer = None
        self.offer_legs.forget_caller(waiter.uniqueid)
        if waiter.state not in (WaitState.ANSWERED, WaitState.CALLBACK):
            reason = WithdrawReason.ABANDONED if waiter.ch.hung_up else WithdrawReason.OTHER
            self.queue_log.leaving(waiter.uniqueid, reason)
            result = self.dist.withdraw(waiter.uniqueid, reason)
            self._apply(result.decisions)
            if not result.already_withdrawn:
                waiter.log.info("caller left the queue", waited=round(result.waited_seconds, 1), offers=result.offers)
            waiter.go("left")
        self.queue_log.script_ended(waiter.uniqueid, caller_gone=waiter.ch.hung_up)

    def _record_answer(self, waiter: Waiter, offer_id: str, at_mono: float | None) -> None:
        """Keep who answered and how fast on the call's row (monthly per-agent two-ring share)."""
        try:
            agent = self.dist.agent(self.dist.offer(offer_id).agent_id)
        except AcdError:
            return
        data: dict[str, object] = {"answered_by": agent.login}
        if at_mono is not None:  # None: the answer was not seen on AMI, its time is unknown
            acd = self.cfg.acd
            seconds = max(0.0, at_mono - waiter.entered_mono)
            data.update(answer_seconds=round(seconds, 3),
                        within_target=within_rings(seconds, acd.rings_target, acd.ring_cycle_seconds))
        self._spawn(self.tickets.record_call_event(waiter.call.uniqueid, "answered", data), f"answer-{offer_id}")

    def _answered(self, waiter: Waiter, offer_id: str, fallback_at: datetime | None) -> None:
        """The caller's Dial was answered: the waiter's state, the caller's previous agent, and the
        domain told if AMI did not tell it at the answer (then measured from our own clock)."""
        first = waiter.state is WaitState.DIALLING  # not seen on AMI: recorded here, without its time
        if first:
            waiter.go("answered")
        try:
            offer = self.dist.offer(offer_id)
        except AcdError:
            return
        waiter.agent_id = offer.agent_id
        self.queue_log.answered(waiter.uniqueid, offer_id, offer.agent_id, at=fallback_at or self.clock.now())
        if waiter.answered_offer is None:
            waiter.answered_offer = offer_id
        key = waiter.call.who
        if key:
            self._previous_agent[key] = offer.agent_id
            self._previous_agent.move_to_end(key)
            while len(self._previous_agent) > _PREVIOUS_AGENT_MAX:
                self._previous_agent.popitem(last=False)
        if self.dist.agent_state(offer.agent_id) is AgentState.RINGING:
            log.warning("answer not seen on AMI; measured from our own clock", offer=offer_id)
            self._apply(self.dist.on_answered(offer_id, fallback_at))
        if first:
            if self.transfers.is_transfer_wait(waiter):
                self.transfers.answered(waiter, offer)
            else:
                self._record_answer(waiter, offer_id, None)

    # ------------------------------------------------------------------ TransferRoom (the transfers' port)

    def apply(self, decisions: Any) -> None:
        self._apply(decisions)

    def ami_up(self) -> Any:
        return self._ami_up()

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        self._spawn(coro, name)

    def connected_call(self, uniqueid: str) -> Connected | None:
        """The caller, if we have put them through to an agent who is on the call now: answered in a
        waiting session's Dial, or bridged by the transfer script."""
        waiter = self.waiters.get(uniqueid)
        if waiter is not None and waiter.state is WaitState.ANSWERED and waiter.dialling_offer is not None:
            offer = waiter.dialling_offer
            if self.dist.agent_state(offer.agent_id) is AgentState.ON_CALL:
                level = waiter.queued_as.priority_level if waiter.queued_as else PriorityLevel.NORMAL
                return Connected(waiter.call, offer.agent_id, offer.offer_id, level)
            return None
        return self.transfers.connected_bridge(uniqueid)

    def agent_leg(self, agent_id: str) -> tuple[str, str] | None:
        channel = self.agent_legs.current_channel(agent_id)
        uid = self.agent_legs.current_uniqueid(agent_id)
        return (channel, uid) if channel and uid else None

    async def wait_transferred(self, ch: Channel, call: CallInfo, wc: WaitingCall) -> Outcome:
        """A transferred caller (or a consultation on the first agent's leg) waits for the target: the
        wait script as for any caller, with the distributor told ``wc``."""
        waiter = Waiter(ch=ch, call=call, entered_mono=self.clock.monotonic(), queued_as=wc)
        if call.log is not None:
            waiter.log = call.log.bind(uniqueid=wc.uniqueid)
        self.waiters[wc.call_id] = waiter
        waiter.log.info("transferred call waiting for its target", target=wc.only.describe() if wc.only else "queue",
                        offers=wc.offer_prefix)
        return await WaitScript(waiter, self, self.cfg.acd, self.clock, self.tickets).run()

    def end_offer(self, offer_id: str | None, agent_id: str | None) -> None:
        """The agent's part of a call put through outside a Dial of ours is over: wrap-up."""
        if offer_id is None:
            return
        try:
            self._apply(self.dist.on_call_ended(offer_id))
        except AcdError as exc:
            log.info("offer not ended", offer=offer_id, error=str(exc))
        self._end_pop(agent_id, offer_id)

    async def after_call(self, ch: Channel, call: CallInfo, agent_id: str | None) -> Outcome:
        """The caller is still here after a call put through by a transfer's bridge: the survey."""
        waiter = Waiter(ch=ch, call=call, entered_mono=self.clock.monotonic(), state=WaitState.ANSWERED,
                        agent_id=agent_id)
        return await WaitScript(waiter, self, self.cfg.acd, self.clock, self.tickets).after_call()

    # ------------------------------------------------------------------ transfers (the desk's TransferControl)

    async def transfer(self, uniqueid: str, kind: str, target: dict[str, str], *, actor_agent_id: str,
                       actor_login: str, supervisor: bool) -> dict[str, Any]:
        t = await self.transfers.start(uniqueid, kind, target, actor_agent_id=actor_agent_id,
                                       actor_login=actor_login, supervisor=supervisor)
        return t.to_dict()

    async def transfer_complete(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> dict[str, Any]:
        return (await self.transfers.complete(uniqueid, actor_agent_id=actor_agent_id, supervisor=supervisor)).to_dict()

    async def transfer_cancel(self, uniqueid: str, *, actor_agent_id: str, supervisor: bool) -> dict[str, Any]:
        return (await self.transfers.cancel(uniqueid, actor_agent_id=actor_agent_id, supervisor=supervisor)).to_dict()

    def transfer_targets(self) -> dict[str, Any]:
        return self.transfers.targets()

    # ------------------------------------------------------------------ call-back requests

    async def callback_script(self, ch: Channel) -> None:
        """FastAGI ``callback``: runs on the agent's answered phone; dials the owner."""
        await self.queue_callback.script(ch)

    def originate_response(self, action_id: str, response: str, reason: Any, uniqueid: str | None, at: float) -> None:
        self.queue_callback.originate_response(action_id, response, reason)

    # ------------------------------------------------------------------ AMI events

    def dial_begin(self, caller_uniqueid: str | None, dest_uniqueid: str, dest_channel: str, at: float) -> None:
        leg = self.offer_legs.dial_begin(caller_uniqueid, dest_uniqueid, dest_channel)
        if leg is None:
            self.transfers.phone_dial_begin(caller_uniqueid, dest_channel, self._wall(at))  # a department's phone?
            return
        try:
            current = self.dist.offer(leg.offer_id) is not None
        except AcdError:
            current = False
        self.agent_legs.dialled(leg.offer.agent_id, dest_uniqueid, dest_channel, current=current)
        if leg.state is LegState.CANCELLED:
            # Cancelled (agent paused, caller's turn re-offered) before the phone started ringing.
            self._cancel_leg(leg.offer_id, "cancelled before ringing", leg)
            return
        self.queue_log.ringing(leg.caller_uniqueid, leg.offer_id, leg.offer.agent_id, member_uniqueid=dest_uniqueid,
                               at=self._wall(at))
        self._apply(self.dist.on_ringing(leg.offer_id, self._wall(at)))

    def dial_end(self, caller_uniqueid: str | None, dest_uniqueid: str, dial_status: str, at: float) -> None:
        leg = self.offer_legs.dialling(caller_uniqueid)
        if leg is None:
            self.transfers.phone_dial_end(caller_uniqueid, dial_status, self._wall(at))  # a department's phone?
            return
        self.queue_log.ring_ended(leg.caller_uniqueid, leg.offer_id, at=self._wall(at))
        if dial_status == "ANSWER":
            self.offer_legs.answered(caller_uniqueid)
            self.queue_log.answered(leg.caller_uniqueid, leg.offer_id, leg.offer.agent_id, at=self._wall(at),
                                    member_uniqueid=dest_uniqueid)
            self._apply(self.dist.on_answered(leg.offer_id, self._wall(at)))
            waiter = self.waiters.get(caller_uniqueid or "")
            if waiter is not None and leg.state is LegState.ANSWERED and waiter.answered_offer is None:
                waiter.answered_offer, waiter.answered_mono = leg.offer_id, at
            if waiter is not None and leg.state is LegState.ANSWERED and waiter.state is WaitState.DIALLING:
                waiter.go("answered")
                if self.transfers.is_transfer_wait(waiter):
                    self.transfers.answered(waiter, leg.offer)  # the call's own answer was recorded before
                else:
                    self._record_answer(waiter, leg.offer_id, at)
        # NOANSWER / BUSY / CANCEL are handled when the Dial returns in the AGI session, with DIALSTATUS.

    def hangup(self, uniqueid: str, cause: int | None, at: float) -> None:
        agent_id = self.agent_legs.hung_up(uniqueid)
        if agent_id is not None:
            self._apply(self.dist.free_elsewhere(agent_id, uniqueid))

    def dtmf(self, uniqueid: str, digit: str, at: float) -> None:
        waiter = self.waiters.get(uniqueid)
        if (waiter is not None and digit == self.cfg.acd.callback_digit
                and waiter.state in (WaitState.WAITING, WaitState.ANNOUNCING)):
            waiter.deliver(CALLBACK_KEY)

    def on_ami_event(self, event: Mapping[str, Any]) -> None:
        """An agent's phone in use on a call we did not route is not offered another; the caller's hang-up
        request and bridge leave tell the queue_log who ended an answered call."""
        if event.get("Event") in ("BridgeLeave", "HangupRequest", "SoftHangupRequest"):
            self.queue_log.channel_event(str(event.get("Uniqueid") or ""), str(event.get("Event")), at=self.clock.now())
        if event.get("Event") != "Newstate" or event.get("ChannelStateDesc") != "Up":
            return
        uniqueid = str(event.get("Uniqueid") or "")
        if not uniqueid or self.agent_legs.is_dialled(uniqueid) or self.agent_legs.is_elsewhere(uniqueid):
            return
        agent_id = self._agent_for_channel(str(event.get("Channel") or ""))
        if agent_id is None or self.dist.agent_state(agent_id) in (AgentState.RINGING, AgentState.ON_CALL):
            return
        self.agent_legs.elsewhere(agent_id, uniqueid)
        self._apply(self.dist.busy_elsewhere(agent_id, uniqueid))

    def on_resync(self, open_calls: list[Any]) -> None:
        """After an AMI (re)login: rebuild which agents are busy on calls we did not route."""
        refs = self.agent_legs.resync(open_calls, self._agent_for_channel)
        for view in self.dist.snapshot().agents:
            self._apply(self.dist.resync_elsewhere(view.agent_id, refs.get(view.agent_id, set())))

    def agent_login(self, agent_id: str) -> str | None:
        """The login of one of our agents (None when unknown)."""
        try:
            return self.dist.agent(agent_id).login
        except AcdError:
            return None

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

    def wallboard(self) -> WallboardSnapshot:
        """The live picture for the wallboard and the API, typed."""
        return wallboard_snapshot(
            self.dist.snapshot(),
            waiting={call_id: w.call for call_id, w in self.waiters.items()},
            callbacks=self.queue_callback.calls(),
            alerts=list(self.alerts),
            overdue=self._overdue(),
            target_wait_seconds=self.cfg.acd.ring_timeout_seconds,
            hotlines=self.hotlines.cards(),
            transfers=self.transfers.snapshot(),
        )

    def snapshot(self) -> dict[str, Any]:
        """The wallboard as JSON-able data (the web layer's ACDControl contract)."""
        return self.wallboard().to_dict()

    def agent_entry(self, agent_id: str | int) -> dict[str, Any] | None:
        """One agent's line of :meth:`snapshot` (None if unknown), built alone: an agent's click needs
        its own line, not the whole queue sorted and every agent's figures."""
        view = self.dist.agent_view(str(agent_id))
        if view is None:
            return None
        caller = None
        if view.current_call_id:
            caller = self.dist.caller_of(view.current_call_id)
            waiter = self.waiters.get(view.current_call_id)
            if caller is None and waiter is not None:
                caller = waiter.call.caller_id
        return agent_item(view, self.dist.clock.now(), caller).to_dict()

    def metrics(self) -> dict[str, Any]:
        return self.dist.metrics_snapshot().to_dict()

    def hand_over_waiting(self) -> int:
        """Distribution stops on this node while the server goes on (another node leads now): every caller
        still waiting leaves for the dialplan's fallback queue at its next step; one whose agent's phone
        is ringing goes when the ring ends unanswered. Returns how many were told."""
        told = 0
        for waiter in list(self.waiters.values()):
            if waiter.state in (WaitState.WAITING, WaitState.ANNOUNCING, WaitState.DIALLING) and not waiter.handed_over:
                waiter.hand_over()
                told += 1
        return told

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
        ami = self._ami_up()
        if ami is None:
            raise ValueError("the AMI link is down")
        try:
            agent = self.dist.agent(str(agent_id))
        except AcdError as exc:
            raise ValueError(str(exc)) from exc
        channel = self.agent_legs.current_channel(agent.agent_id)
        if self.dist.agent_state(agent.agent_id) is not AgentState.ON_CALL or channel is None:
            raise ValueError(f"agent {agent.login} is not on a call put through by the server")
        if not CHANNEL_NAME.match(channel):
            raise ValueError("the agent's channel name cannot be given to ChanSpy")
        phone = await self._supervisor_interface(int(supervisor_id)) if self._supervisor_interface else None
        if not phone:
            raise ValueError("no phone is set for this supervisor (users.supervisor_interface)")
        try:
            await ami.send(
                {
                    "Action": "Originate", "Channel": phone, "Application": "ChanSpy",
                    "Data": f"{channel},{options}", "CallerID": f'"Listen {agent.login}" <0>',
                    "Timeout": "30000", "Async": "true",
                }
            )
        except AMIError as exc:
            raise ValueError(f"Asterisk refused: {exc}") from exc
        log.info("supervision started", supervisor=supervisor_id, agent=agent.agent_id, mode=mode, channel=channel)


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
