"""The caller's side of waiting for an agent: what they hear and what they can press, over the Channel port.

The caller stays in our FastAGI session while waiting: music on hold plays (Asterisk keeps playing it
while the session is idle after ``SET MUSIC ON``), announcements interrupt it every
``acd.announce_every_seconds`` (position, expected wait, and "press 1 to be called back"), and the
moment an agent is chosen the session writes ``EXEC Dial <agent>,<two rings>``. The ring timeout *is*
the two-ring rule: Asterisk stops ringing after ``rings_target × ring_cycle_seconds`` and the next
agent is tried at once. Nobody staffed, night service, the maximum wait: the caller is told why and
leaves a message (the IVR takes it, :class:`~callcentre.domain.calls.Outcome` ``MESSAGE``).

:class:`WaitScript` is the script; it learns what happens from its :class:`Waiter`'s inbox (the
distributor's decisions, and the call-back key seen on AMI while the session is idle) and asks call
distribution for everything else through the :class:`WaitingRoom` port. It is tested with the fake
channel (tests/fakes.py), no sockets.
"""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Sequence

import structlog

from callcentre.config.schema import ACDConfig
from callcentre.domain import speech
from callcentre.domain.acd import (
    Announce,
    MakeOffer,
    MaxWaitReached,
    NoAgentAvailable,
    Offer,
    RingOnDuty,
    WaitingCall,
    WithdrawReason,
)
from callcentre.domain.calls import CallInfo, Outcome, acknowledged
from callcentre.domain.model import Ticket
from callcentre.domain.patterns import PLAIN_CALLER_NUMBER, is_diallable
from callcentre.domain.ports import CallerHungUp, Channel, ChannelError, Clock, StorageUnavailable, TicketStore
from callcentre.domain.recordings import CallRecorder

log = structlog.get_logger("callcentre.acd")


class CallbackKey(enum.Enum):
    """The caller pressed the call-back key while the session was idle (seen as an AMI DTMFEnd)."""

    PRESSED = "callback-key"


CALLBACK_KEY = CallbackKey.PRESSED


class HandOver(enum.Enum):
    """Call distribution stops on this node while the caller waits (another node leads now): the
    caller goes back to the dialplan, whose fallback queue rings the agents' phones."""

    TO_DIALPLAN = "hand-over"


HAND_OVER = HandOver.TO_DIALPLAN


class StopWaiting(enum.Enum):
    """Call distribution took the caller out of the queue without a word to say (a transfer's
    consultation was cancelled or not answered: the agent waiting here goes back to their caller)."""

    STOP = "stop"


STOP_WAITING = StopWaiting.STOP

InboxItem = (MakeOffer | Announce | MaxWaitReached | NoAgentAvailable | RingOnDuty | CallbackKey | HandOver
             | StopWaiting)


class WaitState(str, enum.Enum):
    WAITING = "waiting"  # music on hold; nothing to say or ring
    ANNOUNCING = "announcing"  # position / expected wait playing (the AGI session is busy until it ends)
    DIALLING = "dialling"  # EXEC Dial written (an agent, or the on-duty phone); DIALSTATUS not back yet
    ANSWERED = "answered"  # a person took the call
    CALLBACK = "callback"  # a call-back was booked: the caller has gone, the request keeps the place
    LEFT = "left"  # left the queue unanswered (hung up, a message, the maximum wait, night service)


_W = WaitState
# event -> {from state: to state}; anything else is a bug and raises IllegalWaitTransition.
WAIT_TRANSITIONS: dict[str, dict[WaitState, WaitState]] = {
    "announcement_started": {_W.WAITING: _W.ANNOUNCING},
    "announcement_ended": {_W.ANNOUNCING: _W.WAITING},
    "dial_written": {_W.WAITING: _W.DIALLING},
    "dial_unanswered": {_W.DIALLING: _W.WAITING},  # no answer, refused, or the offer was taken back
    "answered": {_W.DIALLING: _W.ANSWERED},
    "callback_booked": {_W.WAITING: _W.CALLBACK},
    "left": {_W.WAITING: _W.LEFT, _W.ANNOUNCING: _W.LEFT, _W.DIALLING: _W.LEFT},
}


class IllegalWaitTransition(RuntimeError):
    pass


def interrupt_digit(callback_digit: str) -> str:
    """The digit the server itself "presses" on the caller's channel to cut an announcement short."""
    return "*" if callback_digit == "#" else "#"


@dataclass(eq=False)
class Waiter:
    """One caller waiting for an agent: their channel, what the IVR learnt, and where the wait is."""

    ch: Channel
    call: CallInfo
    entered_mono: float  # entry into the queue, on the monotonic clock
    queued_as: WaitingCall | None = None  # what the distributor is told about this caller
    state: WaitState = WaitState.WAITING
    inbox: asyncio.Queue[InboxItem] = field(default_factory=asyncio.Queue)
    offers_queued: int = 0  # offers in the inbox not yet taken: an announcement must stop for them
    dialling_offer: Offer | None = None  # the offer whose Dial is in progress
    agent_id: str | None = None  # who answered
    answered_offer: str | None = None  # the offer that was answered (a recording is kept only for it)
    answered_mono: float | None = None  # when, on the monotonic clock (None: not seen on AMI)
    handed_over: bool = False  # distribution stopped here: leave for the dialplan's queue at the next step
    log: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.log is None:
            self.log = log.bind(uniqueid=self.call.uniqueid, caller=self.call.caller_id or "withheld")

    @property
    def uniqueid(self) -> str:
        return self.call.uniqueid

    @property
    def can_call_back(self) -> bool:
        """A call-back needs a number we may dial."""
        return is_diallable(self.call.caller_id)

    def go(self, event: str) -> None:
        frm = self.state
        to = WAIT_TRANSITIONS[event].get(frm)
        if to is None:
            raise IllegalWaitTransition(f"caller {self.uniqueid}: cannot {event} while {frm.value}")
        self.state = to
        self.log.info("caller wait state changed", transition=event, from_state=frm.value, to_state=to.value)

    def deliver(self, item: InboxItem) -> bool:
        """Hand the script something to act on; True when it is an offer and an announcement is playing
        (the adapter then cuts the announcement short)."""
        self.inbox.put_nowait(item)
        if isinstance(item, MakeOffer):
            self.offers_queued += 1
            return self.state is WaitState.ANNOUNCING
        return False

    def hand_over(self) -> None:
        """Leave for the dialplan's queue as soon as the script can (before any offer already queued);
        a Dial in progress is not cut: an agent may be answering."""
        self.handed_over = True
        self.inbox.put_nowait(HAND_OVER)

    def discard_callback_keys(self) -> None:
        """Drop call-back key echoes from the inbox (the key pressed during an announcement also comes as
        an AMI DTMFEnd); everything else stays, in order."""
        kept = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if item is not CALLBACK_KEY:
                kept.append(item)
        for item in kept:
            self.inbox.put_nowait(item)


class WaitingRoom(Protocol):
    """What the wait script needs from call distribution (``callcentre.distribution.ACDService``)."""

    def enter(self, waiter: Waiter) -> None:
        """Join the queue; the first decisions (an offer, an announcement, nobody staffed) reach the inbox."""

    def take_offer(self, waiter: Waiter, offer: Offer) -> bool:
        """The script took ``offer`` from the inbox: False when it was taken back meanwhile (skip it)."""

    def dialling(self, waiter: Waiter, offer: Offer) -> None:
        """The Dial for ``offer`` is about to be written (AMI events for it can come from now on)."""

    def dial_returned(self, waiter: Waiter, offer: Offer, dial_status: str | None, written_at: datetime) -> bool:
        """The Dial returned; True when the agent answered and the call is over."""

    def withdraw(self, waiter: Waiter, reason: WithdrawReason) -> None:
        """The caller leaves the queue without an agent (a message, night service, the maximum wait)."""

    def on_duty_answered(self, waiter: Waiter) -> None:
        """Outside hours, the on-duty phone answered the emergency."""

    def handed_over(self, waiter: Waiter) -> bool:
        """The answered call left this session for a transfer (or this session only consulted): the
        script ends at once, without the satisfaction survey."""

    async def book_callback(self, waiter: Waiter) -> Ticket | None:
        """The caller asked to be called back: a ticket records the promise and the call keeps its place
        as a call-back request. None (nothing was promised) when the ticket cannot be saved."""

    def leaving(self, waiter: Waiter) -> None:
        """The script is ending (any reason, a hang-up too): stop handing the waiter anything."""

    def left(self, waiter: Waiter, dial_status: str | None) -> None:
        """The script has ended; ``dial_status``: DIALSTATUS read after a hang-up during a Dial."""


class WaitScript:
    """What one waiting caller hears and can press, from joining the queue to the agent or a message."""

    def __init__(self, waiter: Waiter, room: WaitingRoom, acd: ACDConfig, clock: Clock, tickets: TicketStore,
                 recorder: CallRecorder | None = None) -> None:
        """``recorder``: records each offer's talk (MixMonitor before the Dial); None: calls are not recorded."""
        self.w = waiter
        self.room = room
        self.acd = acd
        self.clock = clock
        self.tickets = tickets
        self.recorder = recorder

    async def run(self) -> Outcome:
        try:
            self.room.enter(self.w)
            return await self._wait()
        finally:
            await self._leave()

    async def _leave(self) -> None:
        w = self.w
        self.room.leaving(w)
        status = None
        if w.dialling_offer is not None:
            # The caller left during a Dial (hang-up). GET VARIABLE still answers on a dead channel.
            try:
                status = await w.ch.get_variable("DIALSTATUS", allow_dead=True)
            except (CallerHungUp, ChannelError, asyncio.CancelledError):
                status = None
        self.room.left(w, status)

    async def _wait(self) -> Outcome:
        w, ch, acd = self.w, self.w.ch, self.acd
        music = False
        while True:
            if not music:
                await ch.music_on(acd.music_class)
                music = True
            item = await w.inbox.get()
            if w.handed_over:
                await ch.music_off()
                self.room.withdraw(w, WithdrawReason.OTHER)
                w.log.warning("call distribution stopped on this node: caller handed to the dialplan's queue")
                return Outcome.AGENT
            if isinstance(item, MakeOffer):
                w.offers_queued -= 1
                if not self.room.take_offer(w, item.offer):
                    continue
                await ch.music_off()
                music = False
                if await self._ring(item.offer):
                    return await self._after_call()
            elif isinstance(item, Announce):
                await ch.music_off()
                music = False
                if await self._announce(item) and await self._book_callback():
                    return Outcome.DONE
            elif item is STOP_WAITING:
                await ch.music_off()
                return Outcome.DONE
            elif item is CALLBACK_KEY:
                if w.can_call_back:
                    await ch.music_off()
                    music = False
                    if await self._book_callback():
                        return Outcome.DONE
            elif isinstance(item, NoAgentAvailable):
                closed = item.reason == "closed"
                await ch.music_off()
                await self._say(["closed-hours" if closed else "no-agents"])
                self.room.withdraw(w, WithdrawReason.CLOSED if closed else WithdrawReason.NO_AGENTS)
                return Outcome.MESSAGE
            elif isinstance(item, MaxWaitReached):
                await ch.music_off()
                await self._say(["max-wait-reached"])
                self.room.withdraw(w, WithdrawReason.MAX_WAIT)
                return Outcome.MESSAGE
            elif isinstance(item, RingOnDuty):
                await ch.music_off()
                music = False
                w.go("dial_written")
                # Recorded like an agent's call: a pseudo-offer <uniqueid>#0 names the file.
                duty = Offer(f"{w.uniqueid}#0", w.uniqueid, "on-duty", item.interface, 30.0, "", w.uniqueid)
                status = await self._recorded_dial(duty, max(30, int(acd.ring_timeout_seconds)))
                if status == "ANSWER":
                    self.room.on_duty_answered(w)
                    return Outcome.DONE
                w.go("dial_unanswered")
                self.room.withdraw(w, WithdrawReason.CLOSED)
                return Outcome.MESSAGE

    async def _say(self, names: Sequence[str], escape: str = "") -> str | None:
        return await self.w.ch.play([self.w.call.prompt(n) for n in names], escape)  # the hotline's own, else shared

    async def _dial(self, interface: str, ring_seconds: int, options: str = "") -> str | None:
        """EXEC Dial: Asterisk stops ringing after ``ring_seconds``; returns DIALSTATUS."""
        await self.w.ch.exec("Dial", interface, str(ring_seconds), *((options,) if options else ()))
        return await self.w.ch.get_variable("DIALSTATUS")

    async def _announce(self, a: Announce) -> bool:
        """Position and expected wait; True if the caller pressed the call-back key."""
        w = self.w
        lang = w.call.language
        words = ["queue-position", *speech.number(max(1, a.position), lang)]
        if a.expected_wait_seconds is not None:
            minutes = max(1, math.ceil(a.expected_wait_seconds / 60))
            words += ["queue-expected-wait", *speech.number(minutes, lang), "minutes-word"]
        can_callback = w.can_call_back
        if can_callback:
            words.append("callback-offer")
        key = self.acd.callback_digit
        escape = (key if can_callback else "") + interrupt_digit(key)
        if w.offers_queued:
            return False  # an agent is waiting to be rung: no announcement now
        # File by file, so an offer that comes while it plays waits for one file at most even when
        # the AMI interrupt (a digit pressed on the caller's channel) cannot be sent.
        w.go("announcement_started")
        try:
            for word in words:
                if w.offers_queued or w.handed_over:
                    return False
                pressed = await self._say([word], escape)
                if pressed:
                    return pressed == key and can_callback
        finally:
            w.go("announcement_ended")
        return False

    async def _book_callback(self) -> bool:
        """The caller pressed the call-back key. The promise is a ticket before the caller hears it (it
        outlives a restart, a busy line when we call, or no agent ever coming free); then the call keeps
        its place as a call-back. False (the caller keeps waiting, nothing was promised) when the ticket
        cannot be saved."""
        w = self.w
        ticket = await self.room.book_callback(w)
        if ticket is None:
            await self._say(["apology", "please-wait"])
            # The key press also came as an AMI DTMFEnd (queued as CALLBACK_KEY): that echo is not a new request.
            w.discard_callback_keys()
            return False
        w.go("callback_booked")
        await self._say(["callback-registered"])
        await acknowledged(self.tickets, ticket, w.log)
        await self._say(["goodbye"])
        return True

    async def _ring(self, offer: Offer) -> bool:
        """Ring one agent for at most two rings; True when the agent answered (the call is over now)."""
        w, ch = self.w, self.w.ch
        try:
            await ch.set_variable("CALLERID(name)", offer.caller_display[:64])
            if not PLAIN_CALLER_NUMBER.fullmatch(w.call.caller_id_raw or ""):
                # The agent's phone gets the caller's number too: one with anything but digits (CR/LF,
                # ${...}, a name typed into the number) is replaced by what we understood of it.
                await ch.set_variable("CALLERID(num)", w.call.caller_id or "anonymous")
        except ChannelError:
            pass
        w.dialling_offer = offer
        self.room.dialling(w, offer)
        w.go("dial_written")
        timeout = max(1, math.ceil(offer.ring_timeout_seconds))
        w.log.info("offering call", agent=offer.agent_id, offer=offer.offer_id, ring_timeout=timeout)
        written = self.clock.now()
        status = await self._recorded_dial(offer, timeout)
        return self.room.dial_returned(w, offer, status, written)

    async def _recorded_dial(self, offer: Offer, ring_seconds: int) -> str | None:
        """The Dial of one offer; with a recorder, MixMonitor is started before it and stopped after."""
        w, recorder = self.w, self.recorder
        if recorder is None:
            return await self._dial(offer.interface, ring_seconds)
        rec = await recorder.start(w, offer)
        try:
            status = await self._dial(offer.interface, ring_seconds, rec.dial_options)
        except BaseException:  # a hang-up, or the session cancelled: the file closes when the channel goes
            recorder.abandon(rec, w)
            raise
        if status == "ANSWER" and w.answered_offer is None:  # not seen on AMI (or the on-duty phone)
            w.answered_offer = offer.offer_id
        await recorder.stop(rec, w)
        return status

    async def after_call(self) -> Outcome:
        """What follows an answered call when the caller is still on the line (a call put through some
        other way than this script's Dial: a transfer's bridge)."""
        return await self._after_call()

    async def _after_call(self) -> Outcome:
        """The agent hung up first and the caller is still here: ask for a rating (1 to 5)."""
        w, ch = self.w, self.w.ch
        if self.room.handed_over(w):
            return Outcome.DONE
        if not self.acd.satisfaction_survey:
            return Outcome.DONE
        result = await ch.get_digits([w.call.prompt("rate-service")], 5000, 1)
        rating = result.digits[:1]
        if rating in ("1", "2", "3", "4", "5"):
            await self._say(["thanks-rating", "goodbye"])
            w.log.info("satisfaction rated", rating=int(rating), agent=w.agent_id)
            try:
                await self.tickets.record_call_event(
                    w.call.uniqueid, "satisfaction",
                    {"rating": int(rating), "agent_id": w.agent_id, "tickets": list(w.call.tickets)},
                )
            except StorageUnavailable:
                w.log.warning("rating not saved", rating=int(rating))
        return Outcome.DONE


__all__ = [
    "CALLBACK_KEY",
    "HAND_OVER",
    "WAIT_TRANSITIONS",
    "CallbackKey",
    "HandOver",
    "IllegalWaitTransition",
    "STOP_WAITING",
    "StopWaiting",
    "WaitScript",
    "WaitState",
    "Waiter",
    "WaitingRoom",
    "interrupt_digit",
]
