"""The queue call-back: a caller who pressed the call-back key while waiting is called back by the agent
whose turn it is.

Not to be confused with :mod:`callcentre.service.callbacks` (the closure call-back: calling the owner
after a ticket is resolved, the 回访). Here:

1. :meth:`QueueCallback.book`: the promise becomes a ticket (message, ``callback_request``, the general
   promise) before the caller hears it; the call keeps its place in the queue as a call-back request.
2. :meth:`QueueCallback.ring`: its turn comes (the distributor offers it to an agent): the agent's phone
   is rung with an AMI Originate into ``callcentre-callback,callback`` (:meth:`originate_response`
   reports refusals and answers).
3. :meth:`QueueCallback.script`: the FastAGI ``callback`` script, on the agent's answered phone, dials the
   owner; the ticket stays open (and is escalated) until someone closes it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import structlog

from callcentre.config import Config
from callcentre.domain.acd import Decision, Distributor, Offer, WithdrawReason
from callcentre.domain.calls import CALLBACK_CATEGORY, CallInfo, commit_shielded
from callcentre.domain.model import Priority, Ticket, TicketKind
from callcentre.domain.patterns import is_diallable
from callcentre.domain.ports import Channel, Clock, StorageUnavailable, TicketStore
from callcentre.domain.promises import promise_deadline
from callcentre.distribution.legs import AgentLegs

log = structlog.get_logger("callcentre.acd")


@dataclass(eq=False)
class CallbackRequest:
    call: CallInfo
    number: str  # E.164, validated digits
    ticket: str  # the ticket that records the promise
    offer: Offer | None = None  # the offer ringing (or answered by) the agent who makes the call
    action_id: str | None = None  # the Originate's ActionID


def safe_variable(value: str) -> str:
    """A value for an Originate channel variable: nothing AMI or the dialplan could misread."""
    return re.sub(r"[^A-Za-z0-9_.#\-]", "", value)[:64]


class QueueCallback:
    """Call-back requests from the queue, from the key press to the owner's phone ringing."""

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        tickets: TicketStore,
        dist: Distributor,
        *,
        apply: Callable[[Sequence[Decision]], None],
        ami: Callable[[], Any],
        screen_pop: Callable[[Offer, CallInfo], None],
        legs: AgentLegs,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.tickets = tickets
        self.dist = dist
        self._apply = apply
        self._ami = ami
        self._screen_pop = screen_pop
        self._legs = legs
        self.requests: dict[str, CallbackRequest] = {}  # call id -> request
        self._by_action: dict[str, str] = {}  # Originate ActionID -> call id
        self.committing: set[asyncio.Task] = set()  # ticket commits that nothing may cancel

    def calls(self) -> dict[str, CallInfo]:
        """The requests' calls by call id (the wallboard names their owners)."""
        return {call_id: req.call for call_id, req in self.requests.items()}

    async def drain(self) -> None:
        """Let call-back tickets being saved finish (before the database closes)."""
        if self.committing:
            await asyncio.gather(*self.committing, return_exceptions=True)

    # ----------------------------------------------------------------- 1. booked while waiting
    async def book(self, call: CallInfo, clog: Any) -> Ticket | None:
        """The ticket first (the caller hears of the call-back only once it is saved), then the call
        keeps its place as a call-back request; None when the ticket cannot be saved."""
        draft = call.ticket_draft(TicketKind.MESSAGE, CALLBACK_CATEGORY, Priority.GENERAL, source="callback")
        deadline = promise_deadline(self.cfg.tickets.promises, Priority.GENERAL, CALLBACK_CATEGORY, self.clock.now())
        try:
            ticket = await commit_shielded(self.tickets, draft, deadline, self.committing)
        except StorageUnavailable as exc:
            clog.error("call-back not booked: its ticket could not be saved", error=str(exc))
            return None
        position = self.dist.request_callback(call.uniqueid)
        assert call.caller_id is not None
        self.requests[call.uniqueid] = CallbackRequest(call=call, number=call.caller_id, ticket=ticket.number)
        call.tickets.append(ticket.number)
        clog.info("call-back requested", position=position, ticket=ticket.number, promised_by=deadline.isoformat())
        return ticket

    # ----------------------------------------------------------------- 2. its turn: ring the agent
    async def ring(self, offer: Offer) -> None:
        """The request's turn: ring the agent (Originate), whose script then dials the owner."""
        from callcentre.ami.link import AMIError

        req = self.requests.get(offer.call_id)
        ami = self._ami()
        if req is None or ami is None or not ami.connected:
            log.warning("call-back cannot be placed now", offer=offer.offer_id, ami=bool(ami and ami.connected))
            self._apply(self.dist.on_offer_failed(offer.offer_id, "CHANUNAVAIL" if req else "CANCEL"))
            return
        req.offer = offer
        self._screen_pop(offer, req.call)
        # The OriginateResponse of a busy or unreachable phone comes right behind the 'queued' reply and
        # can be handled before the originate call below returns: know its ActionID before sending.
        action_id = req.action_id = ami.new_action_id()
        self._by_action[action_id] = offer.call_id
        try:
            await ami.originate(
                channel=offer.interface,
                context="callcentre-callback",
                exten="callback",
                caller_id=f'"{offer.caller_display[:40]}" <{req.number.lstrip("+")}>',
                timeout_ms=int(offer.ring_timeout_seconds * 1000),
                variables={"CC_CALL": safe_variable(offer.call_id), "CC_OFFER": safe_variable(offer.offer_id)},
                action_id=action_id,
            )
        except AMIError as exc:
            self._by_action.pop(action_id, None)
            log.warning("call-back originate failed", offer=offer.offer_id, error=str(exc))
            self._apply(self.dist.on_offer_failed(offer.offer_id, "CHANUNAVAIL"))
            return
        self._apply(self.dist.on_ringing(offer.offer_id))  # a no-op if the outcome is already in

    def originate_response(self, action_id: str, response: str, reason: Any) -> None:
        """The outcome of the Originate to the agent (Reason 4 answered, 3 no answer, 5 busy)."""
        reason = None if reason is None else str(reason)
        call_id = self._by_action.pop(action_id, None)
        if call_id is None:
            return
        req = self.requests.get(call_id)
        if req is None or req.offer is None:
            return
        offer_id = req.offer.offer_id
        if response == "Success":
            self._apply(self.dist.on_answered(offer_id))
        elif reason == "5":
            self._apply(self.dist.on_offer_failed(offer_id, "BUSY"))
        elif reason == "3":
            self._apply(self.dist.on_ring_timeout(offer_id))
        else:
            self._apply(self.dist.on_offer_failed(offer_id, "CHANUNAVAIL"))

    # ----------------------------------------------------------------- 3. the agent answered: dial the owner
    async def script(self, ch: Channel) -> None:
        """FastAGI ``callback``: runs on the agent's answered phone; dials the owner."""
        call_id = await ch.get_variable("CC_CALL") or ""
        req = self.requests.get(call_id)
        if req is None or req.offer is None:
            log.warning("call-back script for an unknown request", call=call_id)
            return
        offer_id = req.offer.offer_id
        self._legs.callback_leg(req.offer.agent_id, ch.uniqueid, ch.channel_name)
        if not is_diallable(req.number):
            log.warning("call-back number is not diallable", call=call_id)
            return
        interface = self.cfg.centre.outbound_template.format(number=req.number)
        try:
            await ch.play([req.call.prompt("please-wait")])
            await ch.exec("Dial", interface, "40")
            status = await ch.get_variable("DIALSTATUS")
            if status == "ANSWER":
                log.info("call-back made", call=call_id, ticket=req.ticket, agent_id=req.offer.agent_id)
            else:  # the ticket stays open (and is escalated) until someone reaches the owner
                log.warning("call-back did not reach the owner", call=call_id, ticket=req.ticket, dial_status=status,
                            agent_id=req.offer.agent_id)
            await self.tickets.record_call_event(call_id, "callback", {"dial_status": status, "agent_id": req.offer.agent_id})
        finally:
            self.requests.pop(call_id, None)
            self._apply(self.dist.on_call_ended(offer_id))
            self._apply(self.dist.withdraw(call_id, WithdrawReason.TRANSFERRED).decisions)


__all__ = ["CallbackRequest", "QueueCallback", "safe_variable"]
