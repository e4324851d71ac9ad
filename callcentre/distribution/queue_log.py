"""Our call distribution as app_queue's ``queue_log``: the lines app_queue would write for the same calls.

:class:`QueueLogEmitter` is a listener. :class:`~callcentre.distribution.service.ACDService` calls one
small method at each fact it already handles (the caller joined, an agent's phone began to ring, was
answered or not, the answered call ended, the caller left, agents' states changed) and the emitter keeps
what app_queue keeps per call (when the caller joined and at which position, each ring's start and the
agent leg's uniqueid, the answer) to build each line with :mod:`callcentre.domain.queue_log` and hand it
to a sink (:class:`~callcentre.queue_log_writer.QueueLogWriter`, which never waits for the disk). It
decides nothing about a call, and it never raises into call handling: a fact that cannot become a line
is logged with the call's uniqueid and counted in :attr:`QueueLogEmitter.errors`.

Which line for which fact is docs/queue-log.md's table; in short:

* our distribution starts: ``QUEUESTART``, then ``ADDMEMBER`` (and ``PAUSE``) for every agent logged in
  after the restart, so reports that close open sessions at QUEUESTART see who is there;
* agent login / logout / pause / unpause (the API, a supervisor, the automatic pause after missed offers,
  reason ``Auto-Pause`` as app_queue writes it): ``ADDMEMBER`` / ``REMOVEMEMBER`` / ``PAUSE`` / ``UNPAUSE``;
* a ring that ended unanswered (two rings, busy, unreachable, the agent paused while it rang):
  ``RINGNOANSWER`` in milliseconds; a ring taken back because another ring of the call was answered: no line;
* the answer: ``CONNECT``; the end: ``COMPLETECALLER`` / ``COMPLETEAGENT`` (who hung up first, below);
* the caller left unanswered: ``RINGCANCELED`` (if a phone was ringing) then ``ABANDON`` (hung up),
  ``EXITWITHTIMEOUT`` (the maximum wait) or ``EXITEMPTY`` (nobody staffed, night service, the on-duty
  phone, any other end); the call-back key: ``EXITWITHKEY``;
* transfers (another feature performs them): :meth:`QueueLogEmitter.blind_transferred` /
  :meth:`QueueLogEmitter.attended_transferred`, after which no COMPLETE* line is written.

Who hung up first. The Dial of an answered call returns ``result=-1`` either way (the captures), so the
AGI alone cannot tell at once. Asterisk's own order of events can: when the caller hangs up, its channel
gets a ``HangupRequest`` / ``SoftHangupRequest`` *before* it leaves the bridge (``BridgeLeave``); when the
agent hangs up, the caller's channel leaves the bridge first and is only hung up later (the captures of
app_queue's COMPLETECALLER and COMPLETEAGENT show exactly this). Without those AMI events (AMI down, the
simulator) the emitter falls back to the AGI: the caller is taken to have hung up first if the session
had seen ``HANGUP`` when the Dial returned or when the wait script ended, decided at the latest
``complete_grace_seconds`` after the Dial returned.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Literal, Sequence

import structlog

from callcentre.domain import queue_log as ql
from callcentre.domain.acd import AgentState, AgentView, PauseReason, StateChange, WithdrawReason
from callcentre.domain.ports import Clock
from callcentre.domain.transfers import TransferKind

__all__ = ["AUTO_PAUSE", "AgentField", "QueueLogEmitter", "TransferLines"]

log = structlog.get_logger("callcentre.queue_log")

AUTO_PAUSE = "Auto-Pause"  # app_queue's reason for its own automatic pause (autopause); ours after missed offers
AgentField = Literal["login", "name", "interface"]
Ended = Literal["caller", "agent"]
_HANGUP_REQUESTS = frozenset({"HangupRequest", "SoftHangupRequest"})


def _call_fact(method: Callable[..., None]) -> Callable[..., None]:
    """A fact about one call (first argument: its uniqueid): nothing when off, never an exception."""

    @functools.wraps(method)
    def wrapper(self: QueueLogEmitter, uniqueid: str, *args: Any, **kwargs: Any) -> None:
        if self._sink is None:
            return
        try:
            method(self, uniqueid, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the queue_log must never reach call handling
            self.errors += 1
            log.error("queue_log line not built", uniqueid=uniqueid, fact=method.__name__, error=repr(exc))

    return wrapper


def _fact(method: Callable[..., None]) -> Callable[..., None]:
    """A fact about the agents or the distribution: nothing when off, never an exception."""

    @functools.wraps(method)
    def wrapper(self: QueueLogEmitter, *args: Any, **kwargs: Any) -> None:
        if self._sink is None:
            return
        try:
            method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the queue_log must never reach call handling
            self.errors += 1
            log.error("queue_log line not built", fact=method.__name__, error=repr(exc))

    return wrapper


def pause_reason_text(reason: PauseReason | str | None) -> str:
    """The PAUSE line's reason: ours by name, the automatic pause after missed offers as app_queue's."""
    if reason is None:
        return ""
    value = reason.value if isinstance(reason, PauseReason) else str(reason)
    return AUTO_PAUSE if value == PauseReason.MISSED_CALLS.value else value


@dataclass(slots=True, eq=False)
class _Ring:
    """One offer's ring, as app_queue would time it."""

    offer_id: str
    agent: str  # the queue_log agent field
    dialled_at: datetime | None = None  # EXEC Dial written (the ring start when AMI says nothing)
    began_at: datetime | None = None  # AMI DialBegin
    ended_at: datetime | None = None  # AMI DialEnd, any status
    member_uniqueid: str | None = None  # the agent leg (DialBegin's DestUniqueid)
    open: bool = True

    @property
    def started_at(self) -> datetime | None:
        return self.began_at or self.dialled_at

    def ring_ms(self, now: datetime) -> int:
        start = self.started_at
        if start is None:
            return 0
        return max(0, round(((self.ended_at or now) - start).total_seconds() * 1000))


@dataclass(slots=True, eq=False)
class _Call:
    """One caller in the queue, from ENTERQUEUE to its last line."""

    uniqueid: str
    queue: str
    entered_at: datetime
    position: int  # on entering (app_queue's "original position")
    rings: dict[str, _Ring] = field(default_factory=dict)
    connected: _Ring | None = None
    answered_at: datetime | None = None
    hangup_requested: bool = False  # AMI: the caller's channel was asked to hang up (after the answer)
    ended_by: Ended | None = None
    left_bridge_at: datetime | None = None
    dial_returned_at: datetime | None = None
    caller_gone_seen: bool = False  # the AGI session had seen HANGUP (Dial returned / script ended)
    decide_by: float | None = None  # monotonic: decide who hung up by now, at the latest
    transferred: bool = False

    def ring(self, offer_id: str, agent: str) -> _Ring:
        ring = self.rings.get(offer_id)
        if ring is None:
            ring = self.rings[offer_id] = _Ring(offer_id, agent)
        return ring


class QueueLogEmitter:
    """What call distribution does, as app_queue's queue_log lines (see the module docstring).

    ``sink``: where lines go (None: the queue_log is off and every method returns at once).
    ``agents``: agent id -> :class:`~callcentre.domain.acd.Agent`; ``agent_field`` names which of its
    fields is the line's agent (``login`` by default: stable and unique, like app_queue's
    ``log_membername_as_agent = yes``). ``positions``: call id -> position in the queue now.
    """

    def __init__(
        self,
        sink: ql.QueueLogSink | None,
        clock: Clock,
        *,
        queue: str = "hotline",
        agents: Callable[[str], Any] | None = None,
        positions: Callable[[str], int] | None = None,
        agent_field: AgentField = "login",
        caller_name: bool = False,
        complete_grace_seconds: float = 2.0,
    ) -> None:
        self._sink = sink
        self.clock = clock
        self.queue = queue
        self._agents = agents
        self._positions = positions
        self.agent_field: AgentField = agent_field
        self.caller_name = caller_name
        self.complete_grace_seconds = complete_grace_seconds
        self._calls: dict[str, _Call] = {}
        self._deciding: dict[str, _Call] = {}  # answered calls whose Dial returned, end not decided yet
        self._started = False  # agent changes before started() (agents loaded at start-up) are in its members
        self.errors = 0  # facts that could not become a line (a bug: each is logged with its uniqueid)

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def calls_open(self) -> int:
        """Callers the emitter still follows (ENTERQUEUE written, their last line not yet)."""
        return len(self._calls)

    # ------------------------------------------------------------------ helpers

    def _write(self, entry: ql.QueueLogEntry) -> None:
        assert self._sink is not None
        self._sink.write(entry)

    def _agent(self, agent_id: str) -> str:
        if self._agents is None:
            return agent_id
        return str(getattr(self._agents(agent_id), self.agent_field))

    def _position_now(self, call: _Call) -> int:
        """The caller's position now (app_queue writes the position when leaving); the original one when
        the distribution no longer knows the call."""
        if self._positions is not None:
            try:
                return max(1, int(self._positions(call.uniqueid)))
            except LookupError:  # UnknownCall: no longer in the queue
                return call.position
        return call.position

    def _cancel_rings(self, call: _Call, now: datetime) -> None:
        """RINGCANCELED for a phone still ringing when the caller leaves (app_queue writes it first)."""
        for ring in call.rings.values():
            if ring.open and ring.started_at is not None:
                self._write(ql.ring_canceled(now, call.uniqueid, call.queue, ring.agent, ring_ms=ring.ring_ms(now)))
            ring.open = False

    # ------------------------------------------------------------------ the distribution and its agents

    @_fact
    def started(self, agents: Iterable[AgentView]) -> None:
        """Our distribution started: QUEUESTART, then every agent logged in after the restart."""
        now = self.clock.now()
        self._started = True
        self._write(ql.queue_start(now))
        for view in agents:
            if view.state is AgentState.LOGGED_OUT:
                continue
            name = self._agent(view.agent_id)
            paused = view.state is AgentState.PAUSED
            self._write(ql.add_member(now, self.queue, name, paused=paused))
            if paused:
                self._write(ql.pause(now, self.queue, name, reason=pause_reason_text(view.pause_reason)))

    @_fact
    def agents_changed(self, changes: Sequence[StateChange]) -> None:
        """Agent transitions (the distributor's history): login, logout, pause, unpause."""
        if not self._started:
            return
        for c in changes:
            if c.event == "login":
                name = self._agent(c.agent_id)
                paused = c.to_state is AgentState.PAUSED
                self._write(ql.add_member(c.at, self.queue, name, paused=paused))
                if paused:
                    self._write(ql.pause(c.at, self.queue, name, reason=pause_reason_text(c.reason)))
            elif c.event == "logout":
                self._write(ql.remove_member(c.at, self.queue, self._agent(c.agent_id)))
            elif c.to_state is AgentState.PAUSED:
                reason = AUTO_PAUSE if c.event == "offer_missed" else pause_reason_text(c.reason)
                self._write(ql.pause(c.at, self.queue, self._agent(c.agent_id), reason=reason))
            elif c.from_state is AgentState.PAUSED:
                self._write(ql.unpause(c.at, self.queue, self._agent(c.agent_id)))

    @_fact
    def tick(self) -> None:
        """Decide who hung up first for answered calls whose AMI events did not come in time."""
        if not self._deciding:
            return
        mono = self.clock.monotonic()
        for call in [c for c in self._deciding.values() if c.decide_by is not None and c.decide_by <= mono]:
            self._complete(call, "caller" if call.caller_gone_seen else "agent")

    @_fact
    def flush(self) -> None:
        """At shutdown: every answered call still waiting for its COMPLETE* line gets it now."""
        for call in list(self._deciding.values()):
            self._complete(call, "caller" if call.caller_gone_seen else "agent")

    # ------------------------------------------------------------------ one call

    @_call_fact
    def entered(self, uniqueid: str, *, caller_number: str, caller_name: str | None = None,
                queue: str | None = None) -> None:
        """The caller joined the queue (after the distributor enqueued it): ENTERQUEUE."""
        now = self.clock.now()
        q = queue or self.queue
        call = _Call(uniqueid, q, now, 1)
        call.position = self._position_now(call)
        entry = ql.enter_queue(now, uniqueid, q, caller_number=caller_number, position=call.position,
                               caller_name=caller_name if self.caller_name else None)
        self._calls[uniqueid] = call
        self._write(entry)

    @_call_fact
    def dialling(self, uniqueid: str, offer_id: str, agent_id: str) -> None:
        """The Dial for an offer is being written (its ring start when AMI reports no DialBegin)."""
        call = self._calls.get(uniqueid)
        if call is not None:
            call.ring(offer_id, self._agent(agent_id)).dialled_at = self.clock.now()

    @_call_fact
    def ringing(self, uniqueid: str, offer_id: str, agent_id: str, *, member_uniqueid: str, at: datetime) -> None:
        """AMI DialBegin: the agent's phone rings from ``at``; ``member_uniqueid`` is the agent leg."""
        call = self._calls.get(uniqueid)
        if call is not None:
            ring = call.ring(offer_id, self._agent(agent_id))
            ring.began_at, ring.member_uniqueid = at, member_uniqueid

    @_call_fact
    def ring_ended(self, uniqueid: str, offer_id: str, *, at: datetime) -> None:
        """AMI DialEnd (any status): the ring's end, for its length in milliseconds."""
        call = self._calls.get(uniqueid)
        ring = call.rings.get(offer_id) if call is not None else None
        if ring is not None and ring.ended_at is None:
            ring.ended_at = at

    @_call_fact
    def unanswered(self, uniqueid: str, offer_id: str) -> None:
        """The ring ended without an answer (rang out, busy, unreachable, taken back from an agent who
        paused or logged out): RINGNOANSWER, once, and only if the phone was dialled."""
        call = self._calls.get(uniqueid)
        ring = call.rings.get(offer_id) if call is not None else None
        if call is None or ring is None or not ring.open:
            return
        ring.open = False
        if ring.started_at is None:
            return
        now = self.clock.now()
        self._write(ql.ring_no_answer(now, uniqueid, call.queue, ring.agent, ring_ms=ring.ring_ms(now)))

    @_call_fact
    def answered(self, uniqueid: str, offer_id: str, agent_id: str, *, at: datetime,
                 member_uniqueid: str | None = None) -> None:
        """The agent answered at ``at``: CONNECT (once per call). Other rings of the call end silently."""
        call = self._calls.get(uniqueid)
        if call is None or call.connected is not None:
            return
        ring = call.ring(offer_id, self._agent(agent_id))
        if member_uniqueid and ring.member_uniqueid is None:
            ring.member_uniqueid = member_uniqueid
        for other in call.rings.values():
            other.open = False
        call.connected, call.answered_at = ring, at
        self._write(ql.connect(
            self.clock.now(), uniqueid, call.queue, ring.agent, hold_seconds=ql.elapsed_seconds(call.entered_at, at),
            member_uniqueid=ring.member_uniqueid, ring_seconds=ql.elapsed_seconds(ring.started_at or at, at),
        ))

    @_call_fact
    def channel_event(self, uniqueid: str, event: str, *, at: datetime) -> None:
        """AMI events on a channel: ``HangupRequest`` / ``SoftHangupRequest`` and ``BridgeLeave`` of the
        caller's channel tell who ended an answered call (see the module docstring)."""
        call = self._calls.get(uniqueid)
        if call is None or call.connected is None or call.ended_by is not None:
            return
        if event in _HANGUP_REQUESTS:
            call.hangup_requested = True
        elif event == "BridgeLeave":
            call.ended_by = "caller" if call.hangup_requested else "agent"
            call.left_bridge_at = at
            if call.dial_returned_at is not None:
                self._complete(call, call.ended_by)

    @_call_fact
    def call_ended(self, uniqueid: str, *, caller_gone: bool) -> None:
        """The caller's Dial returned after the answer; ``caller_gone``: the AGI session has seen HANGUP."""
        call = self._calls.get(uniqueid)
        if call is None or call.connected is None or call.dial_returned_at is not None:
            return
        if call.transferred:
            del self._calls[uniqueid]
            return
        call.dial_returned_at = self.clock.now()
        call.caller_gone_seen = call.caller_gone_seen or caller_gone
        if call.ended_by is not None:
            self._complete(call, call.ended_by)
        else:
            call.decide_by = self.clock.monotonic() + self.complete_grace_seconds
            self._deciding[uniqueid] = call

    @_call_fact
    def leaving(self, uniqueid: str, reason: WithdrawReason) -> None:
        """The caller leaves the queue unanswered (before the distributor withdraws the call, so that its
        position is still known): RINGCANCELED if a phone rang, then ABANDON / EXITWITHTIMEOUT / EXITEMPTY."""
        call = self._calls.get(uniqueid)
        if call is None or call.connected is not None:
            return
        now = self.clock.now()
        position = self._position_now(call)
        self._cancel_rings(call, now)
        del self._calls[uniqueid]
        waited = ql.elapsed_seconds(call.entered_at, now)
        build = {WithdrawReason.ABANDONED: ql.abandon, WithdrawReason.MAX_WAIT: ql.exit_with_timeout}.get(
            WithdrawReason(reason), ql.exit_empty)
        self._write(build(now, uniqueid, call.queue, position=position, original_position=call.position,
                          wait_seconds=waited))

    @_call_fact
    def callback_booked(self, uniqueid: str, *, key: str) -> None:
        """The caller pressed the call-back key and the call-back is booked: EXITWITHKEY. The call-back
        itself (an agent's phone rung later) is not a queue call in app_queue's sense: no line."""
        call = self._calls.pop(uniqueid, None)
        if call is None or call.connected is not None:
            return
        now = self.clock.now()
        self._cancel_rings(call, now)
        self._write(ql.exit_with_key(now, uniqueid, call.queue, key=key, position=self._position_now(call),
                                     original_position=call.position,
                                     wait_seconds=ql.elapsed_seconds(call.entered_at, now)))

    @_call_fact
    def script_ended(self, uniqueid: str, *, caller_gone: bool) -> None:
        """The caller's wait script ended (every call passes here last). An answered call whose end is
        not decided yet keeps waiting for the AMI events until its deadline; anything else is forgotten."""
        call = self._calls.get(uniqueid)
        if call is None:
            return
        if call.transferred:
            self._forget(uniqueid)
            return
        if call.connected is not None and call.decide_by is None:
            # answered, but the Dial's return was never seen (the session broke): end it now
            call.dial_returned_at = self.clock.now()
            self._complete(call, call.ended_by or ("caller" if caller_gone else "agent"))
            return
        if call.decide_by is not None:
            call.caller_gone_seen = call.caller_gone_seen or caller_gone
            return
        del self._calls[uniqueid]
        log.warning("queue_log: caller left without a last line", uniqueid=uniqueid)

    def _complete(self, call: _Call, ended_by: Ended) -> None:
        # only this call's records: a transferred caller may be back in the queue under the same uniqueid
        if self._calls.get(call.uniqueid) is call:
            del self._calls[call.uniqueid]
        if self._deciding.get(call.uniqueid) is call:
            del self._deciding[call.uniqueid]
        call.decide_by = None
        ring, answered_at = call.connected, call.answered_at
        assert ring is not None and answered_at is not None
        end = call.left_bridge_at or call.dial_returned_at or self.clock.now()
        build = ql.complete_caller if ended_by == "caller" else ql.complete_agent
        # told_by: Asterisk's order of AMI events, or (without them) the AGI session's HANGUP
        log.info("queue_log call ended", uniqueid=call.uniqueid, ended_by=ended_by,
                 told_by="ami" if call.left_bridge_at is not None else "agi")
        self._write(build(self.clock.now(), call.uniqueid, call.queue, ring.agent,
                          hold_seconds=ql.elapsed_seconds(call.entered_at, answered_at),
                          talk_seconds=ql.elapsed_seconds(answered_at, end), original_position=call.position))

    # ------------------------------------------------------------------ transfers (feature-transfers calls these)

    @_call_fact
    def blind_transferred(self, uniqueid: str, *, exten: str, context: str) -> None:
        """The answered caller was moved to ``exten@context``: BLINDTRANSFER instead of COMPLETE*.

        Call it as soon as the transfer is done (before the caller's Dial returns); a transfer back into
        our queue then starts with a new ENTERQUEUE under the same uniqueid."""
        self._transferred(uniqueid, lambda call, ring, now, hold, talk: ql.blind_transfer(
            now, uniqueid, call.queue, ring.agent, exten=exten, context=context, hold_seconds=hold,
            talk_seconds=talk, original_position=call.position))

    @_call_fact
    def attended_transferred(self, uniqueid: str, *, method: str = "BRIDGE", data: Sequence[str] = ()) -> None:
        """The agent completed an attended transfer: ATTENDEDTRANSFER instead of COMPLETE*. ``method``
        ``BRIDGE`` with the caller's bridge uniqueid as ``data`` (AMI AttendedTransfer DestType Bridge),
        ``APP`` with the application, or ``LINK`` with the two channels."""
        self._transferred(uniqueid, lambda call, ring, now, hold, talk: ql.attended_transfer(
            now, uniqueid, call.queue, ring.agent, method=method, method_data=tuple(data), hold_seconds=hold,
            talk_seconds=talk, original_position=call.position))

    def _transferred(self, uniqueid: str, build: Callable[..., ql.QueueLogEntry]) -> None:
        call = self._calls.get(uniqueid)
        if call is None or call.connected is None or call.answered_at is None or call.transferred:
            log.warning("queue_log: transfer of a call not connected here (or already ended)", uniqueid=uniqueid)
            return
        now = self.clock.now()
        entry = build(call, call.connected, now, ql.elapsed_seconds(call.entered_at, call.answered_at),
                      ql.elapsed_seconds(call.answered_at, now))
        call.transferred = True
        if call.dial_returned_at is not None:  # waiting only for who hung up: the transfer is its end
            self._forget(uniqueid)
        self._write(entry)

    def _forget(self, uniqueid: str) -> None:
        self._calls.pop(uniqueid, None)
        self._deciding.pop(uniqueid, None)


class TransferLines:
    """The queue_log's lines for our transfers (``distribution.transfers.TransferQueueLog``): BLINDTRANSFER
    to the transfer context's token when the caller is redirected, ATTENDEDTRANSFER when an attended
    transfer completes (our server joins the caller to the target with ``Bridge``: method ``APP``). No
    COMPLETE* line follows for the first agent; a transferred caller queued again starts with a new
    ENTERQUEUE under the same uniqueid."""

    def __init__(self, emitter: QueueLogEmitter, context: str) -> None:
        self._emitter = emitter
        self._context = context

    def transferred(self, transfer: Any, at: datetime) -> None:
        if transfer.kind is TransferKind.BLIND:
            self._emitter.blind_transferred(transfer.uniqueid, exten=transfer.token, context=self._context)
        else:
            self._emitter.attended_transferred(transfer.uniqueid, method="APP", data=("Bridge", transfer.to_channel or ""))
