"""The distributor: the state machine of agents, waiting calls and offers.

Pure: events and a :class:`~callcentre.domain.ports.Clock` in, decisions (dataclasses) out. The
adapter turns :class:`~.model.MakeOffer` into a Dial/Originate, :class:`~.model.CancelOffer` into a
hang-up of the agent leg, and feeds AMI ``DialBegin`` / ``DialEnd`` back as
:meth:`Distributor.on_ringing`, :meth:`~Distributor.on_answered`, :meth:`~Distributor.on_ring_timeout`
and :meth:`~Distributor.on_offer_failed`. Timers (:class:`~.model.TimerKind`: ring deadline, wrap-up,
announcements, maximum wait) fire from :meth:`Distributor.tick`, which the adapter calls about once a
second.

Who gets which call is :mod:`.selection`'s; agent transitions are :data:`~.model.TRANSITIONS`, offer
transitions :data:`~.model.OFFER_TRANSITIONS` (one log line each, with the call's uniqueid).

Invariant after every public method: no waiting call that is not ringing an agent while an eligible
agent is READY, and no agent holds two offers. A transferred call (``WaitingCall.only``) is the one
exception: it waits for its own target only, and when nobody of the target is left to try it is given
up on (:class:`~.model.TargetUnavailable`, once per target) for the adapter to retarget or withdraw.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, insort
from collections import OrderedDict, deque
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Callable, Iterable

import structlog

from callcentre.config import ACDConfig
from callcentre.domain.acd.model import (
    OFFER_TRANSITIONS,
    OPEN_OFFER,
    STAFFED,
    TRANSITIONS,
    AcdError,
    AcdSnapshot,
    Agent,
    AgentPaused,
    AgentRecord,
    AgentState,
    AgentView,
    Announce,
    CallRecord,
    CancelOffer,
    Decision,
    DuplicateCall,
    IllegalOfferTransition,
    IllegalTransition,
    MakeOffer,
    MaxWaitReached,
    NoAgentAvailable,
    Offer,
    OfferRecord,
    OnlyFor,
    OfferState,
    PauseReason,
    PriorityLevel,
    QueueEntry,
    RingOnDuty,
    StateChange,
    TargetUnavailable,
    TimerKind,
    UnknownAgent,
    UnknownCall,
    UnknownOffer,
    WaitingCall,
    WithdrawReason,
    WithdrawResult,
    business_hours_open,
    caller_display,
)
from callcentre.domain.acd.selection import AgentSelector
from callcentre.domain.acd_metrics import AcdMetrics, AgentDayStats, Alert, AlertKind, MetricsSnapshot
from callcentre.domain.ports import Clock

log = structlog.get_logger("callcentre.domain.acd")

# Used for the expected-wait estimate until real calls have been handled.
DEFAULT_HANDLE_SECONDS = 180.0
_RECENT_HANDLE_TIMES = 50
_CLOSED_OFFERS_KEPT = 10_000
_FINISHED_CALLS_KEPT = 10_000


class Distributor:
    """Owns agent states, the waiting queue and open offers; every method returns decisions."""

    def __init__(self, config: ACDConfig, clock: Clock, timezone: str = "Asia/Shanghai") -> None:
        self.cfg = config
        self.clock = clock
        self.timezone = timezone
        self.metrics = AcdMetrics(config.rings_target, config.ring_cycle_seconds, timezone)
        # Ring times are measured on a steady timeline (wall time at start-up + monotonic seconds), so
        # a wall-clock step (NTP) between DialBegin and DialEnd cannot distort them.
        self._anchor = (clock.now(), clock.monotonic())
        self._agents: dict[str, AgentRecord] = {}
        self._agent_seq = itertools.count()
        self._calls: dict[str, CallRecord] = {}
        self._call_seq = itertools.count()
        self._order: list[tuple[int, int]] = []  # sorted queue order keys of every waiting call
        self._offers: dict[str, OfferRecord] = {}
        self._closed_offers: OrderedDict[str, tuple[OfferState, str]] = OrderedDict()
        self._finished_calls: OrderedDict[str, WithdrawResult | None] = OrderedDict()
        # Who gets which call: the selection rules and their indexes (READY agents, unoffered calls).
        self.selector = AgentSelector(self._agents, self._calls, prefer_previous_agent=config.prefer_previous_agent)
        self._timers: list[tuple[float, int, TimerKind, str, int]] = []
        self._timer_seq = itertools.count()
        self._staffed = 0
        self._handle_times: deque[float] = deque(maxlen=_RECENT_HANDLE_TIMES)
        self._history: list[StateChange] = []
        self._timer_handlers: dict[TimerKind, Callable[[float, float, str, int, list[Decision]], None]] = {
            TimerKind.WRAPUP: self._wrapup_over,
            TimerKind.RING: self._ring_deadline,
            TimerKind.MAXWAIT: self._max_wait,
            TimerKind.ANNOUNCE: self._announce,
        }

    # ===== agents: registration ==================================================================
    def add_agent(self, agent: Agent) -> None:
        if agent.agent_id in self._agents:
            raise AcdError(f"agent {agent.agent_id} already exists")
        rec = AgentRecord(agent, next(self._agent_seq), since_mono=self.clock.monotonic())
        self.selector.prepare_agent(rec)
        self._agents[agent.agent_id] = rec

    def update_agent(self, agent: Agent) -> list[Decision]:
        """Change skills, languages or phone; a READY agent is re-indexed at once."""
        rec = self._agent(agent.agent_id)
        was_ready = rec.indexed
        if was_ready:
            self.selector.unindex_agent(rec)
        rec.agent = agent
        self.selector.prepare_agent(rec)
        out: list[Decision] = []
        if was_ready:
            self.selector.index_agent(rec)
            self._dispatch(out, rec)
        return out

    def remove_agent(self, agent_id: str) -> None:
        rec = self._agent(agent_id)
        if rec.state is not AgentState.LOGGED_OUT:
            raise AcdError(f"agent {agent_id}: log out before removing (state {rec.state.value})")
        del self._agents[agent_id]

    def agent(self, agent_id: str) -> Agent:
        return self._agent(agent_id).agent

    def agent_state(self, agent_id: str) -> AgentState:
        return self._agent(agent_id).state

    def take_history(self) -> list[StateChange]:
        """Transitions since the last call, oldest first; the adapter persists them."""
        out, self._history = self._history, []
        return out

    # ===== agents: transitions from the API and AMI =============================================
    def login(self, agent_id: str, pause_reason: PauseReason | None = None) -> list[Decision]:
        rec = self._agent(agent_id)
        out: list[Decision] = []
        if pause_reason is not None:
            self._go(rec, "login", AgentState.PAUSED, pause_reason.value, pause_reason=pause_reason)
        else:
            self._go(rec, "login", AgentState.READY, "login")
            self._became_ready(rec, out)
        return out

    def ready(self, agent_id: str) -> list[Decision]:
        """PAUSED or WRAP_UP -> READY (ends a pause or the wrap-up early)."""
        rec = self._agent(agent_id)
        out: list[Decision] = []
        self._go(rec, "ready", AgentState.READY, "agent ready")
        self._became_ready(rec, out)
        return out

    def agent_ready(self, agent_id: str) -> list[Decision]:
        """Whatever the agent was doing off-line (logged out, paused, wrap-up), make them READY."""
        if self._agent(agent_id).state is AgentState.LOGGED_OUT:
            return self.login(agent_id)
        return self.ready(agent_id)

    def unpause(self, agent_id: str) -> list[Decision]:
        rec = self._agent(agent_id)
        out: list[Decision] = []
        self._go(rec, "unpause", AgentState.READY, "unpause")
        self._became_ready(rec, out)
        return out

    def pause(self, agent_id: str, reason: PauseReason) -> list[Decision]:
        """Pause; a ringing offer is cancelled and its call offered to the next agent at once."""
        rec = self._agent(agent_id)
        reason = PauseReason(reason)
        self._check(rec, "pause")
        out: list[Decision] = []
        if rec.state is AgentState.RINGING:
            self._cancel_offer_for_agent(rec, out, "agent paused")
        self._go(rec, "pause", AgentState.PAUSED, reason.value, pause_reason=reason)
        out.append(AgentPaused(rec.agent.agent_id, reason, self.clock.now(), automatic=False))
        self._dispatch(out)
        return out

    def logout(self, agent_id: str) -> list[Decision]:
        rec = self._agent(agent_id)
        self._check(rec, "logout")
        out: list[Decision] = []
        if rec.state is AgentState.RINGING:
            self._cancel_offer_for_agent(rec, out, "agent logged out")
        self._go(rec, "logout", AgentState.LOGGED_OUT, "logout")
        self._dispatch(out)
        return out

    def busy_elsewhere(self, agent_id: str, channel_ref: str) -> list[Decision]:
        """AMI saw the agent's phone on a call we did not route; idempotent per channel."""
        rec = self._agent(agent_id)
        if channel_ref in rec.elsewhere:
            return []
        was_eligible = rec.eligible
        rec.elsewhere.add(channel_ref)
        if was_eligible:
            self._go(rec, "busy_elsewhere", AgentState.ON_CALL, f"busy on {channel_ref}")
        return []

    def free_elsewhere(self, agent_id: str, channel_ref: str) -> list[Decision]:
        rec = self._agent(agent_id)
        if channel_ref not in rec.elsewhere:
            return []
        rec.elsewhere.discard(channel_ref)
        return self._settle_elsewhere(rec)

    def resync_elsewhere(self, agent_id: str, channel_refs: Iterable[str]) -> list[Decision]:
        """After an AMI reconnect: the complete set of foreign calls the agent's phone is on now."""
        rec = self._agent(agent_id)
        refs = set(channel_refs)
        out: list[Decision] = []
        if refs and rec.eligible:
            rec.elsewhere = refs
            self._go(rec, "busy_elsewhere", AgentState.ON_CALL, "resync")
            return out
        rec.elsewhere = refs
        return self._settle_elsewhere(rec)

    def restore(
        self, agent_id: str, state: AgentState, since: datetime, pause_reason: PauseReason | None = None
    ) -> list[Decision]:
        """Rebuild an agent's state after a restart from the persisted history (no history entry).

        RINGING cannot survive a restart (the offer is gone): it becomes READY. ON_CALL becomes a
        call we no longer route: busy elsewhere until AMI says otherwise (:meth:`resync_elsewhere`).
        READY keeps its idle-since, so the longest-idle order survives; WRAP_UP keeps what is left.
        """
        rec = self._agent(agent_id)
        state = AgentState(state)
        if rec.state is not AgentState.LOGGED_OUT or rec.offer_id is not None:
            raise AcdError(f"agent {agent_id}: restore only before any other event (state {rec.state.value})")
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        elapsed = max(0.0, (self.clock.now() - since).total_seconds())
        mono_since = self.clock.monotonic() - elapsed
        out: list[Decision] = []
        if state is AgentState.LOGGED_OUT:
            return out
        if state is AgentState.PAUSED:
            self._set(rec, AgentState.PAUSED, mono_since, pause_reason or PauseReason.OTHER)
            return out
        if state is AgentState.ON_CALL:
            rec.elsewhere.add("restored")
            self._set(rec, AgentState.ON_CALL, mono_since, None)
            return out
        if state is AgentState.WRAP_UP:
            self._set(rec, AgentState.WRAP_UP, mono_since, None)
            rec.wrapup_token += 1
            self._schedule(mono_since + self.cfg.wrapup_seconds, TimerKind.WRAPUP, agent_id, rec.wrapup_token)
            return out
        # READY or RINGING
        self._set(rec, AgentState.READY, mono_since, None)
        rec.idle_since = mono_since
        self.selector.index_agent(rec)
        self._dispatch(out, rec)
        return out

    # ===== calls ==================================================================================
    def enqueue(self, call: WaitingCall) -> list[Decision]:
        """A caller asks for a person: offer at once if an agent is ready, else queue and announce.

        A transferred call (its offers named apart: ``offer_prefix``) may come back under the id of a
        call answered before; it is not counted again as a call."""
        if call.call_id in self._calls:
            raise DuplicateCall(f"call {call.call_id} is already known")
        if call.call_id in self._finished_calls:
            if not call.offer_prefix:
                raise DuplicateCall(f"call {call.call_id} is already known")
            del self._finished_calls[call.call_id]
        now_mono = self.clock.monotonic()
        rec = CallRecord(call, next(self._call_seq), now_mono, counted=not call.offer_prefix)
        self.selector.prepare_call(rec)
        self._calls[call.call_id] = rec
        if call.only is None:
            insort(self._order, rec.order_key)
        self.selector.index_call(rec)
        if rec.counted:
            self.metrics.call_entered(call.call_id, call.entered_at)
        clog = log.bind(uniqueid=call.uniqueid, call_id=call.call_id)
        clog.info("caller queued", priority=call.priority_level.name.lower(), skill=call.required_skill,
                  target=call.only.describe() if call.only else None)
        if call.only is not None:
            wait = call.target_wait_seconds or self.cfg.max_wait_seconds
            self._schedule(now_mono + wait, TimerKind.MAXWAIT, call.call_id, rec.wait_version)
        elif not call.callback:
            self._schedule(now_mono + self.cfg.max_wait_seconds, TimerKind.MAXWAIT, call.call_id, 0)
            self._schedule(now_mono + self.cfg.announce_every_seconds, TimerKind.ANNOUNCE, call.call_id, 0)
        out: list[Decision] = []
        self._dispatch(out)
        if call.only is None and rec.offer_id is None and not call.callback:
            if self._staffed == 0:
                open_now = business_hours_open(self.cfg.business_hours, self.timezone, self.clock.now())
                if not open_now and call.priority_level is PriorityLevel.EMERGENCY and self.cfg.on_duty_interface:
                    # Night service for an emergency: the on-duty phone, instead of "we are closed, leave a
                    # message" (the wait script acts on the first decision it gets; it must be this one).
                    out.append(RingOnDuty(call.call_id, call.uniqueid, self.cfg.on_duty_interface))
                else:
                    out.append(NoAgentAvailable(call.call_id, call.uniqueid, "no_agents" if open_now else "closed"))
            else:
                out.append(
                    Announce(
                        call.call_id,
                        call.uniqueid,
                        self.position(call.call_id),
                        self.expected_wait(call.call_id),
                    )
                )
        return out

    def request_callback(self, call_id: str) -> int:
        """The caller pressed the call-back key: same place in the queue; returns the position."""
        rec = self._call(call_id)
        if not rec.call.callback:
            rec.call = replace(rec.call, callback=True)
            log.info("call-back requested", uniqueid=rec.call.uniqueid, call_id=call_id)
        return self.position(call_id)

    def retarget(self, call_id: str, only: OnlyFor | None, wait_seconds: float | None = None) -> list[Decision]:
        """A transferred call gets a new target (``only``), or joins the queue like any caller (None):
        its place keeps its priority and arrival, a ringing offer is taken back, the wait starts again."""
        rec = self._call(call_id)
        out: list[Decision] = []
        if rec.offer_id is not None:
            orec = self._offers[rec.offer_id]
            self._close_offer(orec, "cancelled", "call retargeted")
            out.append(CancelOffer(orec.offer.offer_id, call_id, orec.offer.agent_id, orec.offer.interface, "retargeted"))
            rec.offer_id = None
            arec = self._agents.get(orec.offer.agent_id)
            if arec is not None and arec.offer_id == orec.offer.offer_id:
                self._agent_offer_cancelled(arec, orec, out)
        self.selector.unindex_call(rec)
        was_queued = rec.call.only is None
        if was_queued:
            i = bisect_left(self._order, rec.order_key)
            if i < len(self._order) and self._order[i] == rec.order_key:
                del self._order[i]
        rec.call = replace(rec.call, only=only, target_wait_seconds=wait_seconds if only is not None else None)
        rec.target_given_up = False
        rec.wait_version += 1
        self.selector.prepare_call(rec)
        now_mono = self.clock.monotonic()
        if only is None:
            insort(self._order, rec.order_key)
            self._schedule(now_mono + self.cfg.max_wait_seconds, TimerKind.MAXWAIT, call_id, rec.wait_version)
            self._schedule(now_mono + self.cfg.announce_every_seconds, TimerKind.ANNOUNCE, call_id, 0)
        else:
            wait = wait_seconds or self.cfg.max_wait_seconds
            self._schedule(now_mono + wait, TimerKind.MAXWAIT, call_id, rec.wait_version)
        self.selector.index_call(rec)
        log.info("call retargeted", uniqueid=rec.call.uniqueid, call_id=call_id,
                 target=only.describe() if only else "queue")
        self._dispatch(out)
        if only is None and rec.offer_id is None:
            if self._staffed == 0:
                out.append(NoAgentAvailable(call_id, rec.call.uniqueid, "no_agents"))
            else:
                out.append(Announce(call_id, rec.call.uniqueid, self.position(call_id), self.expected_wait(call_id)))
        return out

    def withdraw(self, call_id: str, reason: WithdrawReason, at: datetime | None = None) -> WithdrawResult:
        """The call leaves the queue unanswered; a ringing offer is cancelled without a missed count."""
        reason = WithdrawReason(reason)
        if call_id in self._finished_calls:
            prev = self._finished_calls[call_id]
            return WithdrawResult(
                call_id, reason, prev.waited_seconds if prev else 0.0, prev.offers if prev else 0, None, True
            )
        rec = self._call(call_id)
        at = at or self.clock.now()
        out: list[Decision] = []
        cancelled: str | None = None
        if rec.offer_id is not None:
            orec = self._offers[rec.offer_id]
            cancelled = orec.offer.offer_id
            self._close_offer(orec, "cancelled", f"caller left ({reason.value})")
            arec = self._agents.get(orec.offer.agent_id)
            out.append(
                CancelOffer(cancelled, call_id, orec.offer.agent_id, orec.offer.interface, reason.value)
            )
            rec.offer_id = None
            if arec is not None and arec.offer_id == cancelled:
                self._agent_offer_cancelled(arec, orec, out)
        waited = max(0.0, self.clock.monotonic() - rec.entered_mono)
        self._remove_call(rec)
        if not rec.counted:
            pass  # a transferred call: counted as a call when it first entered
        elif reason is WithdrawReason.ABANDONED:
            self.metrics.call_abandoned(call_id, rec.call.entered_at, at)
        else:
            self.metrics.call_deflected(call_id, rec.call.entered_at)
        log.info(
            "caller left queue",
            uniqueid=rec.call.uniqueid,
            call_id=call_id,
            reason=reason.value,
            waited=round(waited, 3),
        )
        self._dispatch(out)
        result = WithdrawResult(call_id, reason, waited, rec.offers, cancelled, False, tuple(out))
        self._remember_finished(call_id, result)
        return result

    # ===== offers: events from AMI ================================================================
    def on_ringing(self, offer_id: str, at: datetime | None = None) -> list[Decision]:
        """DialBegin for the offer: the ring starts now; the ring deadline is measured from here."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state is OfferState.OFFERED:
            self._offer_go(orec, "ringing")
            orec.ring_start = self._steady_of(at)
            orec.deadline = self.clock.monotonic() + self.cfg.ring_timeout_seconds
            self._schedule(orec.deadline, TimerKind.RING, offer_id, orec.version)
        return []

    def on_answered(self, offer_id: str, at: datetime | None = None) -> list[Decision]:
        """DialEnd ANSWER: the agent has the caller; measurements are taken from ``at``."""
        at = at or self.clock.now()
        orec = self._offers.get(offer_id)
        if orec is None:
            return self._late_answer(offer_id, at)
        if orec.state not in OPEN_OFFER:
            return []  # replayed
        out: list[Decision] = []
        crec = self._calls[orec.offer.call_id]
        arec = self._agents[orec.offer.agent_id]
        self._offer_go(orec, "answered")
        self._answered(orec, crec, arec, at, out)
        arec.missed_in_row = 0
        self._go(arec, "offer_answered", AgentState.ON_CALL, f"answered {crec.call.call_id}")
        return out

    def on_ring_timeout(self, offer_id: str) -> list[Decision]:
        """DialEnd NOANSWER (or our own deadline): the next agent is offered the call at once."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state not in OPEN_OFFER:
            return []
        out: list[Decision] = []
        self._missed(orec, out, "rang_out", "ring timeout", pause_now=False)
        return out

    def on_offer_failed(self, offer_id: str, status: str) -> list[Decision]:
        """DialEnd BUSY/CONGESTION/CHANUNAVAIL…: a missed offer; an unreachable phone pauses at once."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state not in OPEN_OFFER:
            return []
        status = (status or "").strip().upper()
        if status == "ANSWER":
            return self.on_answered(offer_id)
        if status == "NOANSWER":
            return self.on_ring_timeout(offer_id)
        out: list[Decision] = []
        if status == "CANCEL":
            # The caller hung up while the agent's phone rang: not the agent's fault.
            crec = self._calls.get(orec.offer.call_id)
            arec = self._agents[orec.offer.agent_id]
            self._close_offer(orec, "cancelled", "caller hung up while ringing")
            if crec is not None:
                crec.offer_id = None
                self.selector.index_call(crec)
            self._agent_offer_cancelled(arec, orec, out)
            self._dispatch(out)
            return out
        self._missed(orec, out, "refused", status.lower() or "failed", pause_now=status == "CHANUNAVAIL")
        return out

    def on_call_ended(self, offer_id: str, at: datetime | None = None) -> list[Decision]:
        """The answered call is over: the agent wraps up for ``wrapup_seconds`` before the next offer."""
        orec = self._offers.get(offer_id)
        if orec is None:
            self._known_offer(offer_id)
            return []
        if orec.state is not OfferState.ANSWERED:
            raise AcdError(f"offer {offer_id} was not answered (state {orec.state.value})")
        out: list[Decision] = []
        self._close_offer(orec, "call_ended", "call ended")
        arec = self._agents.get(orec.offer.agent_id)
        if arec is None or arec.offer_id != offer_id:
            return out
        now = self.clock.monotonic()
        if arec.answered_mono is not None:
            self._handle_times.append(now - arec.answered_mono + self.cfg.wrapup_seconds)
        arec.answered_mono = None
        arec.offer_id = arec.call_id = None
        self._go(arec, "call_ended", AgentState.WRAP_UP, "call ended")
        arec.wrapup_token += 1
        if self.cfg.wrapup_seconds <= 0:
            self._go(arec, "wrapup_done", AgentState.READY, "no wrap-up")
            self._became_ready(arec, out)
        else:
            self._schedule(now + self.cfg.wrapup_seconds, TimerKind.WRAPUP, arec.agent.agent_id, arec.wrapup_token)
        return out

    # ===== time ===================================================================================
    def tick(self, now: float | None = None) -> list[Decision]:
        """Fire due timers (monotonic seconds): wrap-ups, ring deadlines, max waits, announcements."""
        now = self.clock.monotonic() if now is None else now
        out: list[Decision] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, kind, ref, version = heapq.heappop(timers)
            self._timer_handlers[kind](due, now, ref, version, out)
        return out

    def _wrapup_over(self, due: float, now: float, agent_id: str, token: int, out: list[Decision]) -> None:
        arec = self._agents.get(agent_id)
        if arec and arec.state is AgentState.WRAP_UP and arec.wrapup_token == token:
            self._go(arec, "wrapup_done", AgentState.READY, "wrap-up over")
            self._became_ready(arec, out)

    def _ring_deadline(self, due: float, now: float, offer_id: str, version: int, out: list[Decision]) -> None:
        orec = self._offers.get(offer_id)
        if orec and orec.state in OPEN_OFFER and orec.version == version:
            o = orec.offer
            out.append(CancelOffer(offer_id, o.call_id, o.agent_id, o.interface, "ring timeout"))
            self._missed(orec, out, "rang_out", "ring timeout", pause_now=False)

    def _max_wait(self, due: float, now: float, call_id: str, version: int, out: list[Decision]) -> None:
        crec = self._calls.get(call_id)
        if crec is None or version != crec.wait_version:
            return
        if crec.call.only is not None:  # a transfer's target had its time
            if crec.offer_id is not None:  # ringing one of them now: give that ring its chance first
                self._schedule(due + self.cfg.ring_timeout_seconds, TimerKind.MAXWAIT, call_id, version)
            elif not crec.target_given_up:
                self._give_up(crec, "timeout", out)
            return
        if not crec.call.callback and not crec.max_wait_fired:
            if crec.offer_id is not None:  # ringing an agent now: give that ring its chance first
                self._schedule(due + self.cfg.ring_timeout_seconds, TimerKind.MAXWAIT, call_id, version)
            else:
                crec.max_wait_fired = True
                out.append(MaxWaitReached(call_id, crec.call.uniqueid, now - crec.entered_mono))

    def _announce(self, due: float, now: float, call_id: str, _version: int, out: list[Decision]) -> None:
        crec = self._calls.get(call_id)
        if crec and not crec.call.callback and crec.call.only is None:
            self._schedule(due + self.cfg.announce_every_seconds, TimerKind.ANNOUNCE, call_id, 0)
            if crec.offer_id is None:
                out.append(Announce(call_id, crec.call.uniqueid, self.position(call_id), self.expected_wait(call_id)))

    def next_timer(self) -> float | None:
        """Monotonic time of the earliest pending timer (stale ones included), for the adapter's sleep."""
        return self._timers[0][0] if self._timers else None

    # ===== reading ================================================================================
    def position(self, call_id: str) -> int:
        """1-based place in the queue (calls ringing an agent keep theirs)."""
        rec = self._call(call_id)
        return bisect_left(self._order, rec.order_key) + 1

    def expected_wait(self, call_id: str) -> float | None:
        """Rough estimate in seconds, or None when nobody is staffed.

        Each staffed agent frees up once per recent average handle time (talk + wrap-up, last 50
        calls; 180 s until known) at a random moment, so the caller at position p waits about
        AHT × ((p − 1) / staffed + 0.5). Zero when an agent is ready now.
        """
        pos = self.position(call_id)
        if self.selector.ready_count() > 0:
            return 0.0
        if self._staffed == 0:
            return None
        aht = (
            sum(self._handle_times) / len(self._handle_times)
            if self._handle_times
            else DEFAULT_HANDLE_SECONDS
        )
        return round(aht * ((pos - 1) / self._staffed + 0.5), 1)

    def waiting_count(self) -> int:
        return len(self._calls)

    def ready_count(self) -> int:
        return self.selector.ready_count()

    def staffed_count(self) -> int:
        return self._staffed

    def offer(self, offer_id: str) -> Offer:
        orec = self._offers.get(offer_id)
        if orec is None:
            raise UnknownOffer(f"offer {offer_id} is not open")
        return orec.offer

    def metrics_snapshot(self, day: datetime | None = None) -> MetricsSnapshot:
        now_mono = self.clock.monotonic()
        d = self.metrics.local_day(day or self.clock.now())
        today = self.metrics.local_day(self.clock.now())
        waits = [now_mono - c.entered_mono for c in self._calls.values()] if d == today else []
        return self.metrics.snapshot(d, waits)

    def snapshot(self) -> AcdSnapshot:
        """Queue with positions and waits, agents with state and today's figures (for API/wallboard)."""
        now = self.clock.now()
        now_mono = self.clock.monotonic()
        today = self.metrics.local_day(now)
        calls = sorted(self._calls.values(), key=lambda c: c.order_key)
        queue = tuple(
            QueueEntry(
                c.call.call_id,
                c.call.uniqueid,
                c.call.caller_id,
                c.call.priority_level.name.lower(),
                i + 1,
                round(now_mono - c.entered_mono, 3),
                c.call.callback,
                c.call.required_skill,
                c.call.language,
                self._offers[c.offer_id].offer.agent_id if c.offer_id else None,
                c.call.only.describe() if c.call.only else None,
            )
            for i, c in enumerate(calls)
        )
        agents = []
        for a in sorted(self._agents.values(), key=lambda r: r.seq):
            st: AgentDayStats = self.metrics.agent_stats(a.agent.agent_id, today)
            agents.append(
                AgentView(
                    a.agent.agent_id,
                    a.agent.name,
                    a.state,
                    a.pause_reason,
                    round(now_mono - a.since_mono, 3),
                    a.call_id,
                    bool(a.elsewhere),
                    st.answered,
                    st.missed,
                    st.offers,
                    st.two_ring_share,
                )
            )
        return AcdSnapshot(now, queue, tuple(agents), self.metrics_snapshot())

    # ===== internals: lookups =====================================================================
    def _agent(self, agent_id: str) -> AgentRecord:
        rec = self._agents.get(agent_id)
        if rec is None:
            raise UnknownAgent(f"no agent {agent_id!r}")
        return rec

    def _call(self, call_id: str) -> CallRecord:
        rec = self._calls.get(call_id)
        if rec is None:
            raise UnknownCall(f"no waiting call {call_id!r}")
        return rec

    def _known_offer(self, offer_id: str) -> None:
        """A replayed event for a closed offer is fine; an offer we never made is an error."""
        if offer_id not in self._closed_offers:
            raise UnknownOffer(f"no offer {offer_id!r}")

    # ===== internals: state machine ===============================================================
    def _check(self, rec: AgentRecord, event: str, to: AgentState | None = None) -> None:
        allowed = TRANSITIONS[event]
        targets = allowed.get(rec.state)
        if targets is None or (to is not None and to not in targets):
            raise IllegalTransition(rec.agent.agent_id, event, rec.state, allowed)

    def _go(
        self, rec: AgentRecord, event: str, to: AgentState, reason: str, pause_reason: PauseReason | None = None
    ) -> None:
        self._check(rec, event, to)
        frm = rec.state
        if frm is AgentState.READY and to is not AgentState.READY:
            self.selector.unindex_agent(rec)
        now = self.clock.now()
        self._set(rec, to, self.clock.monotonic(), pause_reason if to is AgentState.PAUSED else None)
        self._history.append(StateChange(rec.agent.agent_id, frm, to, event, reason, now))
        log.info(
            "agent state changed",
            agent_id=rec.agent.agent_id,
            transition=event,
            from_state=frm.value,
            to_state=to.value,
            reason=reason,
        )

    def _set(
        self, rec: AgentRecord, to: AgentState, since_mono: float, pause_reason: PauseReason | None
    ) -> None:
        self._staffed += int(to in STAFFED) - int(rec.state in STAFFED)
        rec.state = to
        rec.since_mono = since_mono
        rec.pause_reason = pause_reason

    def _became_ready(
        self, rec: AgentRecord, out: list[Decision], idle_since: float | None = None, agent_first: bool = True
    ) -> None:
        """Index a newly READY agent (or move them to ON_CALL if AMI sees them busy) and dispatch."""
        if rec.elsewhere:
            self._go(rec, "busy_elsewhere", AgentState.ON_CALL, "busy on another call")
            # Not this agent, but the call they let go of (a missed offer) still needs one.
            self._dispatch(out)
            return
        rec.idle_since = self.clock.monotonic() if idle_since is None else idle_since
        self.selector.index_agent(rec)
        self._dispatch(out, rec if agent_first else None)

    def _settle_elsewhere(self, rec: AgentRecord) -> list[Decision]:
        out: list[Decision] = []
        if not rec.elsewhere and rec.state is AgentState.ON_CALL and rec.offer_id is None:
            self._go(rec, "free_elsewhere", AgentState.READY, "foreign call over")
            self._became_ready(rec, out)
        return out

    # ===== internals: offers ======================================================================
    def _make_offer(self, crec: CallRecord, arec: AgentRecord, out: list[Decision]) -> None:
        crec.offers += 1
        offer_id = f"{crec.call.call_id}#{crec.call.offer_prefix}{crec.offers}"
        offer = Offer(
            offer_id,
            crec.call.call_id,
            arec.agent.agent_id,
            arec.agent.interface,
            self.cfg.ring_timeout_seconds,
            caller_display(crec.call),
            crec.call.uniqueid,
            crec.call.callback,
        )
        now_mono = self.clock.monotonic()
        now = self.clock.now()
        # Before DialBegin is seen, allow one ring cycle for call set-up on top of the target.
        deadline = now_mono + self.cfg.ring_timeout_seconds + self.cfg.ring_cycle_seconds
        orec = OfferRecord(offer, OfferState.OFFERED, self._steady_of(None), now_mono, deadline, agent_prev_idle=arec.idle_since)
        self._offers[offer_id] = orec
        self.selector.unindex_call(crec)
        crec.offer_id = offer_id
        arec.offer_id = offer_id
        arec.call_id = crec.call.call_id
        self._go(arec, "offer_ringing", AgentState.RINGING, f"offer {offer_id}")
        self._schedule(deadline, TimerKind.RING, offer_id, orec.version)
        self.metrics.offer_made(offer_id, arec.agent.agent_id, now)
        log.info(
            "offer made",
            uniqueid=crec.call.uniqueid,
            call_id=crec.call.call_id,
            offer_id=offer_id,
            agent_id=arec.agent.agent_id,
        )
        out.append(MakeOffer(offer))

    def _offer_go(self, orec: OfferRecord, event: str, reason: str = "") -> None:
        """One offer transition (OFFER_TRANSITIONS), logged with the call's uniqueid."""
        frm = orec.state
        to = OFFER_TRANSITIONS[event].get(frm)
        if to is None:
            raise IllegalOfferTransition(orec.offer.offer_id, event, frm)
        orec.state = to
        orec.version += 1  # a ring timer armed before this transition is stale now
        offer = orec.offer
        log.info("offer state changed", uniqueid=offer.uniqueid, offer_id=offer.offer_id, agent_id=offer.agent_id,
                 transition=event, from_state=frm.value, to_state=to.value, reason=reason or event)

    def _close_offer(self, orec: OfferRecord, event: str, reason: str) -> None:
        """A transition that ends the offer (rang out, refused, cancelled, call ended): forget it, keep
        its outcome for replayed and late AMI events."""
        self._offer_go(orec, event, reason)
        self._offers.pop(orec.offer.offer_id, None)
        self._closed_offers[orec.offer.offer_id] = (orec.state, orec.offer.agent_id)
        if len(self._closed_offers) > _CLOSED_OFFERS_KEPT:
            self._closed_offers.popitem(last=False)

    def _agent_offer_cancelled(self, arec: AgentRecord, orec: OfferRecord, out: list[Decision]) -> None:
        """Back to READY, keeping the place in the idle order: the agent did nothing wrong."""
        arec.offer_id = arec.call_id = None
        if arec.state is AgentState.RINGING:
            self._go(arec, "offer_cancelled", AgentState.READY, "offer cancelled")
            self._became_ready(arec, out, idle_since=orec.agent_prev_idle)

    def _cancel_offer_for_agent(self, arec: AgentRecord, out: list[Decision], reason: str) -> None:
        """The agent leaves while ringing: cancel and put the call back in its place."""
        orec = self._offers[arec.offer_id] if arec.offer_id else None
        arec.offer_id = arec.call_id = None
        if orec is None:
            return
        self._close_offer(orec, "cancelled", reason)
        out.append(
            CancelOffer(
                orec.offer.offer_id, orec.offer.call_id, orec.offer.agent_id, orec.offer.interface, reason
            )
        )
        crec = self._calls.get(orec.offer.call_id)
        if crec is not None:
            crec.offer_id = None
            self.selector.index_call(crec)

    def _missed(self, orec: OfferRecord, out: list[Decision], event: str, reason: str, pause_now: bool) -> None:
        """Close an unanswered offer (``rang_out`` or ``refused``), count it against the agent, re-queue
        the call in its place."""
        now = self.clock.now()
        self._close_offer(orec, event, reason)
        offer = orec.offer
        alert = self.metrics.offer_closed(
            offer.offer_id, offer.agent_id, orec.made_at, orec.ring_start, self._steady_of(None), False, offer.call_id
        )
        if alert:
            out.append(alert)
        crec = self._calls.get(offer.call_id)
        if crec is not None:
            crec.offer_id = None
            crec.missed_by.add(offer.agent_id)
            self.selector.index_call(crec)
        arec = self._agents.get(offer.agent_id)
        if arec is not None and arec.offer_id == offer.offer_id:
            arec.offer_id = arec.call_id = None
            arec.missed_in_row += 1
            log.info(
                "offer missed",
                uniqueid=offer.uniqueid,
                offer_id=offer.offer_id,
                agent_id=offer.agent_id,
                reason=reason,
                missed_in_row=arec.missed_in_row,
            )
            if pause_now or arec.missed_in_row >= self.cfg.missed_offers_before_pause:
                self._go(
                    arec,
                    "offer_missed",
                    AgentState.PAUSED,
                    PauseReason.MISSED_CALLS.value,
                    PauseReason.MISSED_CALLS,
                )
                out.append(AgentPaused(offer.agent_id, PauseReason.MISSED_CALLS, now, automatic=True))
                kind = AlertKind.PHONE_UNAVAILABLE if pause_now else AlertKind.AGENT_PAUSED_MISSED_CALLS
                out.append(
                    Alert(
                        kind,
                        f"agent {arec.agent.name} ({offer.agent_id}) paused after {arec.missed_in_row} missed"
                        f" offer(s), last: {reason}",
                        now,
                        agent_id=offer.agent_id,
                        call_id=offer.call_id,
                        offer_id=offer.offer_id,
                        value=float(arec.missed_in_row),
                    )
                )
            else:
                self._go(arec, "offer_missed", AgentState.READY, reason)
                # To the back of the idle order; the call-driven dispatch keeps them off this call.
                self._became_ready(arec, out, agent_first=False)
                return
        self._dispatch(out)

    def _steady_of(self, at: datetime | None) -> datetime:
        """``at`` (an event's wall time, as far in the past as ``now - at``) on the steady timeline."""
        wall0, mono0 = self._anchor
        mono = self.clock.monotonic()
        if at is not None:
            mono -= (self.clock.now() - at).total_seconds()
        return wall0 + timedelta(seconds=mono - mono0)

    def _steady(self, crec: CallRecord, at: datetime) -> datetime:
        """``at`` re-expressed on the call's own timeline: entry time plus the monotonic time elapsed.

        The speed of answer must not change when the wall clock is stepped (NTP) while a caller
        waits; ``at`` is taken to be as far in the past as ``now - at`` says, and the wait is then
        measured on the monotonic clock from the call's entry."""
        at_mono = self.clock.monotonic() - (self.clock.now() - at).total_seconds()
        return crec.call.entered_at + timedelta(seconds=max(0.0, at_mono - crec.entered_mono))

    def _answered(
        self, orec: OfferRecord, crec: CallRecord, arec: AgentRecord, at: datetime, out: list[Decision]
    ) -> None:
        offer = orec.offer
        alert = self.metrics.offer_closed(
            offer.offer_id, offer.agent_id, orec.made_at, orec.ring_start, self._steady_of(at), True, offer.call_id
        )
        if alert:
            out.append(alert)
        if crec.counted:
            alert = self.metrics.call_answered(crec.call.call_id, crec.call.entered_at, self._steady(crec, at), offer.agent_id)
            if alert:
                out.append(alert)
        crec.offer_id = None
        self._remove_call(crec)
        self._remember_finished(crec.call.call_id, None)
        arec.offer_id = offer.offer_id
        arec.call_id = crec.call.call_id
        arec.answered_mono = self.clock.monotonic()
        # Keep the record reachable for on_call_ended.
        self._offers[offer.offer_id] = orec

    def _late_answer(self, offer_id: str, at: datetime) -> list[Decision]:
        """DialEnd ANSWER for an offer we had given up on: if the agent is free, accept reality."""
        self._known_offer(offer_id)
        state, agent_id = self._closed_offers[offer_id]
        if state not in (OfferState.MISSED, OfferState.FAILED):
            return []  # replay of an answered/ended/cancelled offer
        call_id, _, _ = offer_id.rpartition("#")
        crec = self._calls.get(call_id)
        arec = self._agents.get(agent_id)
        if (
            crec is None
            or arec is None
            or arec.offer_id is not None
            or arec.state not in TRANSITIONS["late_answer"]
        ):
            log.warning("late answer ignored", offer_id=offer_id, agent_id=agent_id)
            return []
        out: list[Decision] = []
        if crec.offer_id is not None:
            other = self._offers[crec.offer_id]
            out.append(
                CancelOffer(
                    other.offer.offer_id,
                    call_id,
                    other.offer.agent_id,
                    other.offer.interface,
                    "answered elsewhere",
                )
            )
            self._close_offer(other, "cancelled", "answered elsewhere")
            crec.offer_id = None
            oarec = self._agents[other.offer.agent_id]
            if oarec.offer_id == other.offer.offer_id:
                self._agent_offer_cancelled(oarec, other, out)
        orec = OfferRecord(
            Offer(
                offer_id,
                call_id,
                agent_id,
                arec.agent.interface,
                self.cfg.ring_timeout_seconds,
                caller_display(crec.call),
                crec.call.uniqueid,
                crec.call.callback,
            ),
            OfferState.ANSWERED,
            at,
            self.clock.monotonic(),
            0.0,
        )
        self.selector.unindex_call(crec)
        self._remove_call(crec)
        self._remember_finished(call_id, None)
        self._offers[offer_id] = orec
        log.info("offer state changed", uniqueid=crec.call.uniqueid, offer_id=offer_id, agent_id=agent_id,
                 transition="late_answer", from_state=state.value, to_state=OfferState.ANSWERED.value,
                 reason="answered after we gave up on it")
        if crec.counted:
            self.metrics.call_answered(call_id, crec.call.entered_at, self._steady(crec, at), agent_id)
        self._go(arec, "late_answer", AgentState.ON_CALL, f"late answer {offer_id}")
        arec.offer_id = offer_id
        arec.call_id = call_id
        arec.answered_mono = self.clock.monotonic()
        self._dispatch(out)
        return out

    def _remember_finished(self, call_id: str, result: WithdrawResult | None) -> None:
        self._finished_calls[call_id] = result
        if len(self._finished_calls) > _FINISHED_CALLS_KEPT:
            self._finished_calls.popitem(last=False)

    def _remove_call(self, crec: CallRecord) -> None:
        self.selector.unindex_call(crec)
        del self._calls[crec.call.call_id]
        key = crec.order_key
        i = bisect_left(self._order, key)
        if i < len(self._order) and self._order[i] == key:
            del self._order[i]

    # ===== internals: dispatch =====================================================================
    def _dispatch(self, out: list[Decision], freed: AgentRecord | None = None) -> None:
        """Restore the invariant: while a call waits unoffered and an agent is READY, make offers.

        ``freed``: the agent who just became READY chooses first (the best call for them); then calls
        choose in queue order (the best agent for each). Both choices are the selector's. Transferred
        calls go first, each to its own target; one whose target has nobody left is given up on."""
        sel = self.selector
        if sel.targeted_count():
            for crec in sel.targeted_in_order():
                if not crec.indexed:
                    continue
                arec = sel.pick_agent_for(crec)
                if arec is not None:
                    self._make_offer(crec, arec, out)
                elif not crec.target_given_up:
                    reason = self._target_left(crec)
                    if reason is not None:
                        self._give_up(crec, reason, out)
        if freed is not None and freed.eligible and sel.unoffered_count():
            crec = sel.pick_call_for(freed)
            if crec is not None:
                self._make_offer(crec, freed, out)
        while sel.ready_count() and sel.unoffered_count():
            crec = sel.head_call()
            arec = sel.pick_agent_for(crec) if crec is not None else None
            if crec is None or arec is None:  # pragma: no cover - counts and heaps disagree
                log.error("dispatch found no pair", ready=sel.ready_count(), waiting=sel.unoffered_count())
                return
            self._make_offer(crec, arec, out)

    def _target_left(self, crec: CallRecord) -> str | None:
        """None while someone of a transferred call's target may still take it (staffed: ready, ringing,
        on a call or wrapping up, and not one who missed it); else why not: ``not_staffed`` or ``missed``.
        A skill group is a scan of the agents: done only for a transfer nobody is free to take."""
        only = crec.call.only
        assert only is not None
        if only.agent_id is not None:
            rec = self._agents.get(only.agent_id)
            candidates = [rec] if rec is not None else []
        else:
            candidates = [a for a in self._agents.values() if only.skill in a.agent.skills]
        staffed = [a for a in candidates if a.state in STAFFED]
        if any(a.agent.agent_id not in crec.missed_by for a in staffed):
            return None
        return "missed" if staffed else "not_staffed"

    def _give_up(self, crec: CallRecord, reason: str, out: list[Decision]) -> None:
        only = crec.call.only
        assert only is not None
        crec.target_given_up = True
        log.info("transfer target unavailable", uniqueid=crec.call.uniqueid, call_id=crec.call.call_id,
                 target=only.describe(), reason=reason, offers=crec.offers)
        out.append(TargetUnavailable(crec.call.call_id, crec.call.uniqueid, only, reason))

    def _schedule(self, due: float, kind: TimerKind, ref: str, version: int) -> None:
        heapq.heappush(self._timers, (due, next(self._timer_seq), kind, ref, version))

