"""AMI leg correlation: which channel is which offer's, and which calls the agents' phones are on.

Two books, both pure (no I/O; the service acts on what they say):

* :class:`OfferLegs`: one :class:`OfferLeg` per offer handed to a waiting caller, in an explicit
  :class:`LegState`. The caller's uniqueid finds the offer being dialled (AMI ``DialBegin`` /
  ``DialEnd`` name the caller's channel); ``DialBegin`` adds the agent leg's channel and uniqueid
  (what a cancel hangs up). An offer taken back before its Dial rang is hung up when ``DialBegin``
  arrives.
* :class:`AgentLegs`: the agents' halves of the calls we put through (the channel we dialled, or the
  phone running the call-back script: what ChanSpy is given), and calls on an agent's phone that we
  did not route (the agent is busy elsewhere until that channel hangs up).

Every change is one named transition and one log line carrying the uniqueid.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import structlog

from callcentre.domain.acd import Offer

log = structlog.get_logger("callcentre.acd")


class LegState(str, enum.Enum):
    QUEUED = "queued"  # the offer is in the caller's inbox; the Dial is not written yet
    DIALLING = "dialling"  # EXEC Dial written on the caller's channel; DialBegin not seen yet
    RINGING = "ringing"  # DialBegin: the agent leg's channel and uniqueid are known
    ANSWERED = "answered"  # DialEnd ANSWER
    CANCELLED = "cancelled"  # the distributor took the offer back: its leg is hung up (now, or at DialBegin)


_L = LegState
# event -> {from state: to state}; a transition not listed is ignored with a warning (AMI events can
# come late or twice) and the leg keeps its state.
LEG_TRANSITIONS: dict[str, dict[LegState, LegState]] = {
    # Taken back between the script taking the offer and writing the Dial: the Dial still goes out and
    # its leg is hung up at DialBegin.
    "dial_written": {_L.QUEUED: _L.DIALLING, _L.CANCELLED: _L.CANCELLED},
    "dial_begin": {_L.DIALLING: _L.RINGING, _L.CANCELLED: _L.CANCELLED},
    "answered": {_L.DIALLING: _L.ANSWERED, _L.RINGING: _L.ANSWERED},
    "cancelled": {_L.QUEUED: _L.CANCELLED, _L.DIALLING: _L.CANCELLED, _L.RINGING: _L.CANCELLED,
                  _L.CANCELLED: _L.CANCELLED},
}


@dataclass(eq=False)
class OfferLeg:
    offer: Offer
    caller_uniqueid: str
    state: LegState = LegState.QUEUED
    agent_uniqueid: str | None = None
    agent_channel: str | None = None

    @property
    def offer_id(self) -> str:
        return self.offer.offer_id

    def go(self, event: str, **fields: Any) -> bool:
        frm = self.state
        to = LEG_TRANSITIONS[event].get(frm)
        if to is None:
            log.warning("offer leg event ignored", uniqueid=self.caller_uniqueid, offer=self.offer_id,
                        transition=event, state=frm.value)
            return False
        self.state = to
        log.info("offer leg state changed", uniqueid=self.caller_uniqueid, offer=self.offer_id,
                 agent_id=self.offer.agent_id, transition=event, from_state=frm.value, to_state=to.value, **fields)
        return True


class OfferLegs:
    """Offers handed to waiting callers: offer id <-> caller uniqueid <-> agent leg."""

    def __init__(self) -> None:
        self._legs: dict[str, OfferLeg] = {}  # offer id -> leg
        self._dialling: dict[str, OfferLeg] = {}  # caller uniqueid -> the leg whose Dial is in progress
        self._of_caller: dict[str, set[str]] = {}  # caller uniqueid -> offer ids

    def __len__(self) -> int:
        return len(self._legs)

    def get(self, offer_id: str) -> OfferLeg | None:
        return self._legs.get(offer_id)

    def dialling(self, caller_uniqueid: str | None) -> OfferLeg | None:
        """The leg being dialled on this caller's channel, if any."""
        return self._dialling.get(caller_uniqueid or "")

    def queued(self, offer: Offer, caller_uniqueid: str) -> OfferLeg:
        """The distributor offered the call: the offer is in the caller's inbox."""
        leg = self._legs[offer.offer_id] = OfferLeg(offer, caller_uniqueid)
        self._of_caller.setdefault(caller_uniqueid, set()).add(offer.offer_id)
        return leg

    def cancel(self, offer_id: str, reason: str) -> OfferLeg | None:
        """The distributor took the offer back; None for an offer not handed to a waiting caller."""
        leg = self._legs.get(offer_id)
        if leg is not None:
            leg.go("cancelled", reason=reason)
        return leg

    def take(self, offer_id: str) -> bool:
        """The caller's script took the offer from its inbox: False (and forgotten) when it was cancelled."""
        leg = self._legs.get(offer_id)
        if leg is None or leg.state is LegState.CANCELLED:
            self.forget(offer_id)
            return False
        return True

    def dial_written(self, offer_id: str) -> None:
        """The caller's script is writing the Dial: AMI events on the caller's channel are this offer's."""
        leg = self._legs.get(offer_id)
        if leg is not None:
            leg.go("dial_written")
            self._dialling[leg.caller_uniqueid] = leg

    def dial_begin(self, caller_uniqueid: str | None, agent_uniqueid: str, agent_channel: str) -> OfferLeg | None:
        """AMI DialBegin on a caller's channel: the agent leg exists; None when we are not dialling there."""
        leg = self.dialling(caller_uniqueid)
        if leg is None:
            return None
        leg.agent_uniqueid, leg.agent_channel = agent_uniqueid, agent_channel
        leg.go("dial_begin", agent_leg=agent_uniqueid, channel=agent_channel)
        return leg

    def answered(self, caller_uniqueid: str | None) -> OfferLeg | None:
        """AMI DialEnd ANSWER on a caller's channel. A leg we cancelled stays cancelled (the caller's
        Dial ends with our hang-up of the agent leg); the distributor still hears of the answer."""
        leg = self.dialling(caller_uniqueid)
        if leg is not None:
            leg.go("answered")
        return leg

    def dial_returned(self, offer_id: str) -> OfferLeg | None:
        """The caller's Dial is over (returned, or the caller hung up): forget the leg, return its last state."""
        return self.forget(offer_id)

    def forget(self, offer_id: str) -> OfferLeg | None:
        leg = self._legs.pop(offer_id, None)
        if leg is None:
            return None
        if self._dialling.get(leg.caller_uniqueid) is leg:
            del self._dialling[leg.caller_uniqueid]
        ids = self._of_caller.get(leg.caller_uniqueid)
        if ids is not None:
            ids.discard(offer_id)
            if not ids:
                del self._of_caller[leg.caller_uniqueid]
        return leg

    def forget_caller(self, caller_uniqueid: str) -> None:
        """The caller left: offers still in their inbox are gone with them."""
        for offer_id in list(self._of_caller.get(caller_uniqueid, ())):
            self.forget(offer_id)


class LegKind(str, enum.Enum):
    DIALLED = "dialled"  # the agent's half of a call we put through (DialBegin of our Dial)
    CALLBACK = "callback"  # the agent's phone running our call-back script


@dataclass(frozen=True, slots=True)
class AgentLeg:
    uniqueid: str
    agent_id: str
    channel: str  # exactly as Asterisk named it (the ';1' of a Local agent leg): what ChanSpy is given
    kind: LegKind


class AgentLegs:
    """The agents' phones: legs of calls we put through, and calls we did not route ("elsewhere")."""

    def __init__(self) -> None:
        self._ours: dict[str, AgentLeg] = {}  # uniqueid -> leg, until its Hangup
        self._current: dict[str, str] = {}  # agent id -> uniqueid of the agent's latest leg of ours
        self._elsewhere: dict[str, str] = {}  # uniqueid -> agent id busy on a call we did not route

    def dialled(self, agent_id: str, uniqueid: str, channel: str, *, current: bool = True) -> None:
        """DialBegin of our Dial: the agent's phone is ringing for us on this channel. ``current``: False
        for an offer already closed (its leg is ours until it hangs up, but it is not the agent's call)."""
        self._add(AgentLeg(uniqueid, agent_id, channel, LegKind.DIALLED), current)

    def callback_leg(self, agent_id: str, uniqueid: str, channel: str) -> None:
        """The call-back script runs on the agent's answered phone (this channel)."""
        self._add(AgentLeg(uniqueid, agent_id, channel, LegKind.CALLBACK), True)

    def _add(self, leg: AgentLeg, current: bool) -> None:
        self._ours[leg.uniqueid] = leg
        if current:
            self._current[leg.agent_id] = leg.uniqueid
        log.info("agent leg seen", uniqueid=leg.uniqueid, agent_id=leg.agent_id, channel=leg.channel,
                 kind=leg.kind.value, current=current)

    def is_dialled(self, uniqueid: str) -> bool:
        """One of the legs our own Dials rang (not a call the agent is on elsewhere)."""
        leg = self._ours.get(uniqueid)
        return leg is not None and leg.kind is LegKind.DIALLED

    def is_elsewhere(self, uniqueid: str) -> bool:
        return uniqueid in self._elsewhere

    def current_channel(self, agent_id: str) -> str | None:
        """The channel of the agent's latest leg of ours, while it is up."""
        uid = self._current.get(agent_id)
        leg = self._ours.get(uid) if uid is not None else None
        return leg.channel if leg is not None else None

    def current_uniqueid(self, agent_id: str) -> str | None:
        """The uniqueid of the agent's latest leg of ours, while it is up."""
        uid = self._current.get(agent_id)
        return uid if uid is not None and uid in self._ours else None

    def elsewhere(self, agent_id: str, uniqueid: str) -> None:
        """The agent's phone is up on a call we did not route."""
        self._elsewhere[uniqueid] = agent_id
        log.info("agent busy on a call we did not route", uniqueid=uniqueid, agent_id=agent_id)

    def hung_up(self, uniqueid: str) -> str | None:
        """A channel hung up: forget it; returns the agent who was busy elsewhere on it, if any."""
        leg = self._ours.pop(uniqueid, None)
        if leg is not None:
            if self._current.get(leg.agent_id) == uniqueid:
                del self._current[leg.agent_id]
            log.info("agent leg gone", uniqueid=uniqueid, agent_id=leg.agent_id, kind=leg.kind.value)
        agent_id = self._elsewhere.pop(uniqueid, None)
        if agent_id is not None:
            log.info("call we did not route is over", uniqueid=uniqueid, agent_id=agent_id)
        return agent_id

    def resync(self, open_calls: Iterable[Any], agent_for_channel: Callable[[str], str | None]) -> dict[str, set[str]]:
        """After an AMI (re)login, from the channels Asterisk lists: which agents are busy on calls we did
        not route (returned, per agent), and legs whose Hangup was lost while the link was down are
        forgotten."""
        calls = list(open_calls)
        refs: dict[str, set[str]] = {}
        for rec in calls:
            agent_id = agent_for_channel(rec.channel)
            if agent_id and not self.is_dialled(rec.uniqueid) and getattr(rec, "answered_at", None) is not None:
                refs.setdefault(agent_id, set()).add(rec.uniqueid)
        self._elsewhere = {u: a for a, us in refs.items() for u in us}
        present = {rec.uniqueid for rec in calls}
        for uid in [u for u in self._ours if u not in present]:
            self.hung_up(uid)
        log.info("agent legs resynchronised", ours=len(self._ours), elsewhere=len(self._elsewhere))
        return refs


__all__ = ["AgentLeg", "AgentLegs", "LEG_TRANSITIONS", "LegKind", "LegState", "OfferLeg", "OfferLegs"]
